//! Prometheus metrics, named after Kafka's where Kafka has one (see `docs/metrics.md`).
//!
//! Counters and histograms are updated on the request path; what describes current state
//! (partitions, groups, the process) is read from the broker when scraped, so it costs
//! nothing between scrapes. Label cardinality is bounded: APIs and error codes are small
//! fixed sets, per-topic series grow with topics, and per-partition and per-group-partition
//! series are emitted only while `metrics.partition.detail.max` allows.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, ResponseKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Broker;

/// Shared rather than owned: each topic holds its label (`Topic::metric_label`), and a
/// family clones it only when the topic's series is first created.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabel {
    pub api: &'static str,
    pub error: String,
}

/// Where a request spent its time, as Kafka's `RequestMetrics` splits it: waiting for
/// `queued.max.request.bytes` room (queue), handled in line (local), waiting for an fsync
/// or data (remote, Kafka's purgatory), and written back (send).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub api: &'static str,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartitionLabel {
    pub group: String,
    pub topic: String,
    pub partition: String,
}

/// Which replication throttle: `leader` or `follower` (KIP-73).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThrottleLabel {
    pub side: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
}

/// An API's name for labels, formatted once per key: labelling a request then allocates
/// nothing on the request path.
fn api_name(api: ApiKey) -> &'static str {
    static NAMES: std::sync::OnceLock<std::collections::HashMap<i16, &'static str>> =
        std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..=i16::from(u8::MAX))
            .filter_map(|k| {
                let key = ApiKey::try_from(k).ok()?;
                Some((k, &*Box::leak(format!("{key:?}").into_boxed_str())))
            })
            .collect()
    });
    names.get(&(api as i16)).copied().unwrap_or("Unknown")
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub bytes_in: Family<TopicLabel, Counter>,
    pub bytes_out: Family<TopicLabel, Counter>,
    pub messages_in: Family<TopicLabel, Counter>,
    pub requests: Family<ApiLabel, Counter>,
    pub request_errors: Family<ApiErrorLabel, Counter>,
    pub request_seconds: Family<PhaseLabel, Histogram, fn() -> Histogram>,
    pub connections: Family<ListenerLabel, Gauge>,
    pub fsync_seconds: Histogram,
    pub group_commit_waiters: Histogram,
    partitions: Gauge,
    offline_partitions: Gauge,
    under_replicated_partitions: Gauge,
    under_min_isr_partitions: Gauge,
    /// ISR changes this broker's leaders had committed, by direction.
    pub isr_shrinks: Counter,
    pub isr_expands: Counter,
    /// Bytes this broker fetched as a follower, and served to its followers.
    pub replication_bytes_in: Counter,
    pub replication_bytes_out: Counter,
    /// Bytes counted against a replication throttle, and partition reads it held back.
    pub replication_throttled_bytes: Family<ThrottleLabel, Counter>,
    pub replication_throttled_holds: Family<ThrottleLabel, Counter>,
    follower_lag: Family<PartitionLabel, Gauge>,
    follower_lag_seconds: Family<PartitionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    high_watermark: Family<PartitionLabel, Gauge>,
    log_size: Family<PartitionLabel, Gauge>,
    log_start: Family<PartitionLabel, Gauge>,
    log_end: Family<PartitionLabel, Gauge>,
    groups: Family<StateLabel, Gauge>,
    group_offset: Family<GroupPartitionLabel, Gauge>,
    group_lag: Family<GroupPartitionLabel, Gauge>,
    resident_memory: Gauge,
    cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    open_fds: Gauge,
    start_time: Gauge,
    detail_max: usize,
    /// Broker-wide totals for the console's charts (Prometheus users sum the per-topic ones).
    pub totals: Totals,
}

#[derive(Debug, Default)]
pub struct Totals {
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub messages_in: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// `detail_max`: most per-partition (and per-group-partition) series a scrape emits.
    pub fn new(detail_max: usize) -> Self {
        let mut registry = Registry::with_prefix("odradek");
        let m = Self {
            registry: Registry::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            messages_in: Family::default(),
            requests: Family::default(),
            request_errors: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            connections: Family::default(),
            fsync_seconds: latency_histogram(),
            group_commit_waiters: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            partitions: Gauge::default(),
            offline_partitions: Gauge::default(),
            under_replicated_partitions: Gauge::default(),
            under_min_isr_partitions: Gauge::default(),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            replication_bytes_in: Counter::default(),
            replication_bytes_out: Counter::default(),
            replication_throttled_bytes: Family::default(),
            replication_throttled_holds: Family::default(),
            follower_lag: Family::default(),
            follower_lag_seconds: Family::default(),
            high_watermark: Family::default(),
            log_size: Family::default(),
            log_start: Family::default(),
            log_end: Family::default(),
            groups: Family::default(),
            group_offset: Family::default(),
            group_lag: Family::default(),
            resident_memory: Gauge::default(),
            cpu_seconds: Gauge::default(),
            open_fds: Gauge::default(),
            start_time: Gauge::default(),
            detail_max,
            totals: Totals::default(),
        };
        let r = &mut registry;
        r.register(
            "bytes_in",
            "Bytes of record batches produced, by topic (Kafka BytesInPerSec)",
            m.bytes_in.clone(),
        );
        r.register(
            "bytes_out",
            "Bytes of record batches fetched, by topic (Kafka BytesOutPerSec)",
            m.bytes_out.clone(),
        );
        r.register(
            "messages_in",
            "Records produced, by topic (Kafka MessagesInPerSec)",
            m.messages_in.clone(),
        );
        r.register(
            "requests",
            "Requests handled, by API (Kafka RequestsPerSec)",
            m.requests.clone(),
        );
        r.register(
            "request_errors",
            "Error codes in responses, by API and error (Kafka ErrorsPerSec)",
            m.request_errors.clone(),
        );
        r.register("request_duration_seconds", "Request time by API and phase: total, queue, local, remote (waiting for fsync or data), send", m.request_seconds.clone());
        r.register(
            "connections",
            "Open client connections, by listener",
            m.connections.clone(),
        );
        r.register(
            "fsync_duration_seconds",
            "Duration of one group-commit fdatasync of a log",
            m.fsync_seconds.clone(),
        );
        r.register(
            "group_commit_waiters",
            "Acknowledgements released by one fsync of a log (group commit batch size)",
            m.group_commit_waiters.clone(),
        );
        r.register(
            "partitions",
            "Partitions hosted by this broker",
            m.partitions.clone(),
        );
        r.register(
            "offline_partitions",
            "Partitions whose log is offline after an I/O error",
            m.offline_partitions.clone(),
        );
        r.register(
            "under_replicated_partitions",
            "Partitions this broker leads with fewer in-sync replicas than replicas",
            m.under_replicated_partitions.clone(),
        );
        r.register(
            "isr_shrinks",
            "ISR shrinks committed for partitions this broker leads",
            m.isr_shrinks.clone(),
        );
        r.register(
            "isr_expands",
            "ISR expansions committed for partitions this broker leads",
            m.isr_expands.clone(),
        );
        r.register(
            "replication_bytes_in",
            "Bytes this broker fetched from leaders as a follower",
            m.replication_bytes_in.clone(),
        );
        r.register(
            "replication_bytes_out",
            "Bytes this broker served to its followers",
            m.replication_bytes_out.clone(),
        );
        r.register(
            "replication_throttled_bytes",
            "Bytes of replicas out of the ISR counted against this broker's leader or follower replication throttle",
            m.replication_throttled_bytes.clone(),
        );
        r.register(
            "replication_throttled_holds",
            "Partitions a replication throttle held back from a fetch (leader: answered without records; follower: left out of the request)",
            m.replication_throttled_holds.clone(),
        );
        r.register(
            "follower_lag_records",
            "For a partition this broker leads: how far its furthest-behind follower is from the log end",
            m.follower_lag.clone(),
        );
        r.register(
            "follower_lag_seconds",
            "For a partition this broker leads: the longest any follower has gone without having everything (dropped from the ISR past replica.lag.time.max.ms)",
            m.follower_lag_seconds.clone(),
        );
        r.register(
            "high_watermark",
            "A partition's high watermark: what consumers may read",
            m.high_watermark.clone(),
        );
        r.register(
            "under_min_isr_partitions",
            "Partitions this broker leads with fewer in-sync replicas than min.insync.replicas: acks=all writes to them fail",
            m.under_min_isr_partitions.clone(),
        );
        r.register(
            "log_size_bytes",
            "Size of a partition's log",
            m.log_size.clone(),
        );
        r.register(
            "log_start_offset",
            "A partition's log start offset",
            m.log_start.clone(),
        );
        r.register(
            "log_end_offset",
            "A partition's log end offset",
            m.log_end.clone(),
        );
        r.register(
            "consumer_groups",
            "Consumer groups, by state",
            m.groups.clone(),
        );
        r.register(
            "consumer_group_committed_offset",
            "A group's committed offset for a partition",
            m.group_offset.clone(),
        );
        r.register(
            "consumer_group_lag",
            "Log end offset minus the group's committed offset",
            m.group_lag.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident set size of the broker process",
            m.resident_memory.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "CPU time (user + system) used by the broker process",
            m.cpu_seconds.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors of the broker process",
            m.open_fds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "Start time of the broker process since the Unix epoch",
            m.start_time.clone(),
        );
        m.start_time.set(odradek_storage::now_ms() / 1000);
        Self { registry, ..m }
    }

    pub fn record_produce(&self, topic: &TopicLabel, bytes: usize, records: u64) {
        self.bytes_in.get_or_create(topic).inc_by(bytes as u64);
        self.messages_in.get_or_create(topic).inc_by(records);
        self.totals.bytes_in.inc_by(bytes as u64);
        self.totals.messages_in.inc_by(records);
    }

    pub fn record_fetch(&self, topic: &TopicLabel, bytes: usize) {
        self.bytes_out.get_or_create(topic).inc_by(bytes as u64);
        self.totals.bytes_out.inc_by(bytes as u64);
    }

    /// Bytes produced to `topic` since the broker started.
    pub fn topic_bytes_in(&self, topic: &str) -> u64 {
        self.bytes_in
            .get(&TopicLabel {
                topic: topic.into(),
            })
            .map_or(0, |c| c.get())
    }

    pub fn api_label(api: ApiKey) -> ApiLabel {
        ApiLabel { api: api_name(api) }
    }

    pub fn observe_phase(&self, api: &ApiLabel, phase: &'static str, elapsed: Duration) {
        self.request_seconds
            .get_or_create(&PhaseLabel {
                api: api.api,
                phase,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a response's non-zero error codes (top level and per partition, for the
    /// APIs whose errors matter to operators).
    pub fn count_errors(&self, api: ApiKey, body: &ResponseKind) {
        let count = |code: i16| {
            if code != 0 {
                let error = kafka_protocol::ResponseError::try_from_code(code)
                    .map_or_else(|| format!("code{code}"), |e| format!("{e:?}"));
                self.request_errors
                    .get_or_create(&ApiErrorLabel {
                        api: api_name(api),
                        error,
                    })
                    .inc();
            }
        };
        match body {
            ResponseKind::Produce(r) => r
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .for_each(|p| count(p.error_code)),
            ResponseKind::Fetch(r) => {
                count(r.error_code);
                r.responses
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .for_each(|p| count(p.error_code));
            }
            ResponseKind::ListOffsets(r) => r
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| count(p.error_code)),
            ResponseKind::Metadata(r) => r.topics.iter().for_each(|t| count(t.error_code)),
            ResponseKind::OffsetCommit(r) => r
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| count(p.error_code)),
            ResponseKind::JoinGroup(r) => count(r.error_code),
            ResponseKind::SyncGroup(r) => count(r.error_code),
            ResponseKind::Heartbeat(r) => count(r.error_code),
            ResponseKind::LeaveGroup(r) => count(r.error_code),
            ResponseKind::FindCoordinator(r) => {
                count(r.error_code);
                r.coordinators.iter().for_each(|c| count(c.error_code));
            }
            ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| count(t.error_code)),
            ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| count(t.error_code)),
            ResponseKind::InitProducerId(r) => count(r.error_code),
            ResponseKind::EndTxn(r) => count(r.error_code),
            ResponseKind::AddOffsetsToTxn(r) => count(r.error_code),
            ResponseKind::ConsumerGroupHeartbeat(r) => count(r.error_code),
            ResponseKind::ApiVersions(r) => count(r.error_code),
            _ => {}
        }
    }

    /// Reads the state-describing metrics from the broker and renders everything in the
    /// Prometheus text format.
    pub fn render(&self, broker: &Broker) -> String {
        self.refresh_partitions(broker);
        self.refresh_groups(broker);
        self.refresh_process();
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    fn refresh_partitions(&self, broker: &Broker) {
        for family in [
            &self.log_size,
            &self.log_start,
            &self.log_end,
            &self.follower_lag,
            &self.high_watermark,
        ] {
            family.clear();
        }
        self.follower_lag_seconds.clear();
        let now = odradek_storage::now_ms();
        let (mut total, mut offline, mut detailed) = (0, 0, 0);
        let (mut under_replicated, mut under_min_isr) = (0, 0);
        for topic in broker.logs.topics() {
            for partition in &topic.partitions {
                total += 1;
                if let Some(replicas) = partition.replica.led_replicas() {
                    let isr = partition.replica.watermark().isr_len;
                    under_replicated += i64::from(isr < replicas.len());
                    under_min_isr += i64::from(isr < topic.settings.min_insync_replicas);
                }
                let Some(log) = partition.lock_log() else {
                    offline += 1;
                    continue;
                };
                if log.is_offline() {
                    offline += 1;
                }
                if detailed < self.detail_max {
                    detailed += 1;
                    let label = PartitionLabel {
                        topic: topic.name.clone(),
                        partition: partition.index.to_string(),
                    };
                    self.log_size
                        .get_or_create(&label)
                        .set(log.size_bytes() as i64);
                    self.log_start
                        .get_or_create(&label)
                        .set(log.log_start_offset());
                    self.log_end.get_or_create(&label).set(log.log_end_offset());
                    let (high_watermark, _) = partition.visible_offsets(&log);
                    self.high_watermark
                        .get_or_create(&label)
                        .set(high_watermark);
                    if let Some(lag) = partition.replica.follower_lag(log.log_end_offset(), now) {
                        self.follower_lag.get_or_create(&label).set(lag.records);
                        self.follower_lag_seconds
                            .get_or_create(&label)
                            .set(lag.time_ms as f64 / 1000.0);
                    }
                }
            }
        }
        self.partitions.set(total);
        self.offline_partitions.set(offline);
        self.under_replicated_partitions.set(under_replicated);
        self.under_min_isr_partitions.set(under_min_isr);
    }

    fn refresh_groups(&self, broker: &Broker) {
        self.groups.clear();
        self.group_offset.clear();
        self.group_lag.clear();
        let mut detailed = 0;
        for summary in broker.group_summaries() {
            self.groups
                .get_or_create(&StateLabel {
                    state: summary.state.clone(),
                })
                .inc();
            for p in summary.partitions {
                if detailed >= self.detail_max {
                    break;
                }
                detailed += 1;
                let label = GroupPartitionLabel {
                    group: summary.group.clone(),
                    topic: p.topic,
                    partition: p.partition.to_string(),
                };
                self.group_offset.get_or_create(&label).set(p.committed);
                self.group_lag.get_or_create(&label).set(p.lag);
            }
        }
    }

    fn refresh_process(&self) {
        let page = 4096;
        if let Some(rss_pages) = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        {
            self.resident_memory.set(rss_pages * page);
        }
        // Fields 14 and 15 of /proc/self/stat: utime and stime in clock ticks (100 Hz).
        if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let after_comm = s.rsplit_once(')')?.1;
                let fields: Vec<&str> = after_comm.split_whitespace().collect();
                Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
            })
        {
            self.cpu_seconds.set(ticks as f64 / 100.0);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
    }
}
