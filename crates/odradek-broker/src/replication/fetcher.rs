//! Follower fetchers: one task per leader broker fetches every partition this broker
//! follows there, with Kafka's Fetch (`replica_id`, `last_fetched_epoch`), as Kafka's
//! `ReplicaFetcherThread` does.
//!
//! Each round appends what the leader sent at the leader's offsets, byte for byte, and
//! fsyncs it before the next fetch: the fetch offset a follower sends is what the leader
//! counts as replicated, so only data on stable storage here is ever counted. A leader that
//! answers with a diverging epoch (KIP-595's path of KIP-101/KIP-279) makes the follower
//! cut its tail back to where the two logs agree before it fetches again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use odradek_storage::{LockExt, StorageError};
use tokio::sync::{Notify, oneshot};
use tracing::{debug, info, warn};

use crate::Broker;
use crate::broker::str_bytes;
use crate::inter_broker::{BrokerConnection, InterBrokerError};
use crate::log_manager::Partition;
use crate::replication::throttle::Throttle;

/// Fetch v12: the first with `last_fetched_epoch` and diverging epochs, and the last that
/// names topics (the fetcher has the names at hand) with `replica_id` in the request body.
const FETCH_VERSION: i16 = 12;
/// Kafka's `replica.fetch.wait.max.ms`, `replica.fetch.max.bytes` and
/// `replica.fetch.response.max.bytes` defaults.
const FETCH_WAIT_MS: i32 = 500;
const PARTITION_MAX_BYTES: i32 = 1 << 20;
/// How soon a fetch is retried when the leader could serve none of its partitions.
const RETRY_SOON: Duration = Duration::from_millis(50);
const RESPONSE_MAX_BYTES: i32 = 10 << 20;
/// Bounds on how long a follower whose throttle holds everything back waits before it
/// looks again: no busy rounds while the debt is nearly paid, and a raised or removed rate
/// (or a replica that joined the ISR) is noticed within a second.
const THROTTLE_WAIT_MIN: Duration = Duration::from_millis(10);
const THROTTLE_WAIT_MAX: Duration = Duration::from_secs(1);

/// A partition this broker follows, as its fetcher has it.
#[derive(Clone)]
struct Followed {
    topic: String,
    partition: Arc<Partition>,
}

/// The partitions followed at one leader, and a wake-up for when they change.
#[derive(Default)]
struct Fetcher {
    partitions: Mutex<BTreeMap<(String, i32), Followed>>,
    changed: Notify,
}

/// Every follower fetcher of this broker, by leader.
#[derive(Default)]
pub struct ReplicaFetchers {
    by_leader: Mutex<HashMap<i32, Arc<Fetcher>>>,
}

/// What a round did to a partition.
enum Outcome {
    /// Appended `bytes`: sync before the next fetch (a `write.caching` topic only when its
    /// flush policy says so, and without waiting).
    Appended {
        bytes: usize,
        flush_due: bool,
    },
    Idle,
    /// The leader cannot serve it now (it has not caught up with the metadata, or lost
    /// leadership): wait for a metadata change or the backoff.
    Backoff,
}

/// What one fetch round came to.
enum Round {
    Progressed,
    /// Nothing could be fetched (back off).
    Nothing,
    /// The follower throttle held back every partition, for about this long.
    Throttled(Duration),
}

impl Broker {
    /// Makes the fetchers follow what the metadata image says: each local partition led by
    /// another broker is fetched from that broker, and nothing else is fetched.
    pub(crate) fn reconcile_fetchers(self: &Arc<Self>) {
        let image = self.logs.image();
        let mut wanted: HashMap<i32, BTreeMap<(String, i32), Followed>> = HashMap::new();
        for topic in self.logs.topics() {
            let Some(placed) = image.topic(&topic.name) else {
                continue;
            };
            for partition in topic.partitions.iter().filter(|p| p.is_local()) {
                let Some(placement) = placed.placement(partition.index) else {
                    continue;
                };
                let leader = placement.leader;
                if leader == self.node_id || leader == crate::metadata::NO_LEADER {
                    continue;
                }
                wanted.entry(leader).or_default().insert(
                    (topic.name.clone(), partition.index),
                    Followed {
                        topic: topic.name.clone(),
                        partition: partition.clone(),
                    },
                );
            }
        }
        let mut fetchers = self.fetchers.by_leader.lock_or_recover();
        for (leader, fetcher) in fetchers.iter() {
            let next = wanted.remove(leader).unwrap_or_default();
            let mut current = fetcher.partitions.lock_or_recover();
            let same = current.len() == next.len()
                && current
                    .iter()
                    .zip(&next)
                    .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(&x.partition, &y.partition));
            if !same {
                *current = next;
                fetcher.changed.notify_one();
            }
        }
        for (leader, partitions) in wanted {
            info!(
                leader,
                partitions = partitions.len(),
                "starting a replica fetcher"
            );
            let fetcher = Arc::new(Fetcher {
                partitions: Mutex::new(partitions),
                changed: Notify::new(),
            });
            fetchers.insert(leader, fetcher.clone());
            tokio::spawn(self.clone().run_fetcher(leader, fetcher));
        }
    }

    async fn run_fetcher(self: Arc<Self>, leader: i32, fetcher: Arc<Fetcher>) {
        let mut stopping = self.stopping.subscribe();
        let backoff =
            Duration::from_millis(self.config().int("replica.fetch.backoff.ms").max(1) as u64);
        let mut connection: Option<BrokerConnection> = None;
        let mut failures = 0u32;
        loop {
            if *stopping.borrow() {
                return;
            }
            let followed: Vec<Followed> = fetcher
                .partitions
                .lock_or_recover()
                .values()
                .cloned()
                .collect();
            let wait = if followed.is_empty() {
                connection = None;
                Some(Duration::from_secs(3600))
            } else {
                match self.fetch_round(leader, &mut connection, &followed).await {
                    Ok(Round::Progressed) => {
                        failures = 0;
                        None
                    }
                    // The leader has not yet applied the metadata that made it leader (or
                    // lost leadership, which the metadata will say): soon, not a full backoff.
                    Ok(Round::Nothing) => Some(RETRY_SOON),
                    Ok(Round::Throttled(wait)) => {
                        Some(wait.clamp(THROTTLE_WAIT_MIN, THROTTLE_WAIT_MAX))
                    }
                    Err(e) => {
                        let had_connection = connection.take().is_some();
                        failures += 1;
                        if failures == 1 || failures.is_multiple_of(20) {
                            warn!(leader, error = %e, failures, "replica fetch failed");
                        }
                        if e.refused() {
                            self.report_unreachable(leader).await;
                        }
                        // A connection that broke is tried again at once: a dead leader then
                        // refuses it, which the controller hears about now.
                        (!had_connection || failures > 1).then_some(backoff)
                    }
                }
            };
            if let Some(wait) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = fetcher.changed.notified() => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        }
    }

    /// One Fetch to the leader and what follows from its answer.
    async fn fetch_round(
        &self,
        leader: i32,
        connection: &mut Option<BrokerConnection>,
        followed: &[Followed],
    ) -> Result<Round, InterBrokerError> {
        if connection.is_none() {
            let addr = self
                .broker_address(leader)
                .ok_or(InterBrokerError::Unknown(leader))?;
            *connection = Some(BrokerConnection::open(leader, addr).await?);
        }
        let Some(conn) = connection.as_mut() else {
            return Ok(Round::Nothing);
        };
        // Kafka's `shouldFollowerThrottle`: while the follower throttle is in debt,
        // throttled partitions out of the ISR are left out of the request.
        let config = self.config();
        let quota = &self.replication_quotas.follower;
        let throttles: Vec<Throttle> = followed
            .iter()
            .map(|f| self.follower_throttle(&f.topic, f.partition.index))
            .collect();
        let hold = throttles
            .contains(&Throttle::Holdable)
            .then(|| quota.exceeded(&config))
            .flatten();
        let fetched = followed
            .iter()
            .zip(&throttles)
            .filter(|(_, t)| hold.is_none() || **t != Throttle::Holdable)
            .map(|(f, _)| f);
        // Back for the held-back partitions once the rate allows them, not a full wait later.
        let max_wait = hold.map_or(FETCH_WAIT_MS, |wait| {
            let ms = wait.clamp(THROTTLE_WAIT_MIN, THROTTLE_WAIT_MAX).as_millis();
            i32::try_from(ms).map_or(FETCH_WAIT_MS, |ms| ms.min(FETCH_WAIT_MS))
        });
        let request = self.replica_fetch_request(fetched, max_wait);
        if let Some(wait) = hold {
            let held = throttles.iter().filter(|t| **t == Throttle::Holdable);
            held.for_each(|_| quota.held_back(&self.metrics));
            if request.topics.is_empty() {
                return Ok(Round::Throttled(wait));
            }
        }
        if request.topics.is_empty() {
            return Ok(Round::Nothing);
        }
        let response = conn.send(&request, FETCH_VERSION).await?;
        if response.error_code != 0 {
            debug!(leader, error = response.error_code, "replica fetch refused");
            return Ok(Round::Nothing);
        }
        let mut appended = Vec::new();
        let mut progressed = false;
        for topic in response.responses {
            for data in topic.partitions {
                let Some(at) = followed.iter().position(|f| {
                    f.topic == topic.topic.as_str() && f.partition.index == data.partition_index
                }) else {
                    continue;
                };
                let f = &followed[at];
                match self.apply_fetched(leader, f, data) {
                    Outcome::Appended { bytes, flush_due } => {
                        progressed = true;
                        if throttles[at] != Throttle::Off {
                            quota.record(&config, &self.metrics, bytes);
                        }
                        let caching = self
                            .logs
                            .topic(&f.topic)
                            .is_some_and(|t| t.settings.write_caching);
                        if !caching {
                            appended.push(f.partition.clone());
                        } else if flush_due {
                            self.logs.sync(&f.partition, None);
                        }
                    }
                    Outcome::Idle => progressed = true,
                    Outcome::Backoff => {}
                }
            }
        }
        // Durable before the next fetch tells the leader these offsets are replicated
        // (unless the topic asked for Kafka's page-cache semantics, `write.caching`).
        for partition in appended {
            let (tx, rx) = oneshot::channel();
            self.logs.sync(
                &partition,
                Some(Box::new(move |r| {
                    let _ = tx.send(r);
                })),
            );
            if let Ok(Err(e)) = rx.await {
                warn!(partition = partition.index, error = %e, "cannot sync replicated data");
            }
        }
        Ok(if progressed {
            Round::Progressed
        } else {
            Round::Nothing
        })
    }

    fn replica_fetch_request<'a>(
        &self,
        followed: impl Iterator<Item = &'a Followed>,
        max_wait_ms: i32,
    ) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for f in followed {
            let Some(log) = f.partition.lock_online_log() else {
                continue;
            };
            let part = FetchPartition::default()
                .with_partition(f.partition.index)
                .with_current_leader_epoch(f.partition.leader_epoch())
                .with_fetch_offset(log.log_end_offset())
                .with_last_fetched_epoch(log.latest_epoch().unwrap_or(-1))
                .with_log_start_offset(log.log_start_offset())
                .with_partition_max_bytes(PARTITION_MAX_BYTES);
            drop(log);
            match topics.iter_mut().find(|t| t.topic.as_str() == f.topic) {
                Some(t) => t.partitions.push(part),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic(TopicName(str_bytes(f.topic.clone())))
                        .with_partitions(vec![part]),
                ),
            }
        }
        FetchRequest::default()
            .with_replica_id(BrokerId(self.node_id))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(RESPONSE_MAX_BYTES)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics)
    }

    /// Applies one partition's part of a fetch response under its log lock: truncation to
    /// where the logs agree, the leader's batches, the leader's log start and high
    /// watermark.
    fn apply_fetched(&self, leader: i32, f: &Followed, data: PartitionData) -> Outcome {
        let partition = &f.partition;
        let index = partition.index;
        let Some(mut log) = partition.lock_online_log() else {
            return Outcome::Backoff;
        };
        // Leadership moved while the fetch was out: what it brought is not ours to take.
        if self.logs.leader(&f.topic, index) != Some(leader) {
            return Outcome::Backoff;
        }
        let result: Result<Outcome, StorageError> = (|| match ResponseError::try_from_code(
            data.error_code,
        ) {
            None => {
                if data.diverging_epoch.epoch >= 0 {
                    let (epoch, end) = log.end_offset_for_epoch(data.diverging_epoch.epoch);
                    let target = if epoch < 0 {
                        data.diverging_epoch.end_offset
                    } else {
                        end.min(data.diverging_epoch.end_offset)
                    };
                    let before = log.log_end_offset();
                    let now = log.truncate_to(target.max(0))?;
                    warn!(topic = %f.topic, partition = index, leader, from = before, to = now, diverging_epoch = data.diverging_epoch.epoch, "truncated a diverged log tail to the leader's");
                    return Ok(Outcome::Idle);
                }
                let records = data.records.unwrap_or_default();
                let outcome = if records.is_empty() {
                    Outcome::Idle
                } else {
                    let bytes = records.len();
                    self.metrics.replication_bytes_in.inc_by(bytes as u64);
                    let appended = log.append_replicated(records)?;
                    Outcome::Appended {
                        bytes,
                        flush_due: appended.flush_due,
                    }
                };
                if data.log_start_offset > log.log_start_offset()
                    && data.log_start_offset <= log.log_end_offset()
                {
                    let (_, freed) = log.delete_records_before(data.log_start_offset)?;
                    if !freed.is_empty() {
                        // Closing unlinked segments frees their blocks: off the runtime.
                        tokio::task::spawn_blocking(move || drop(freed));
                    }
                }
                partition
                    .replica
                    .set_follower_high_watermark(data.high_watermark.min(log.log_end_offset()));
                Ok(outcome)
            }
            Some(ResponseError::OffsetOutOfRange) => {
                let end = log.log_end_offset();
                if data.log_start_offset > end {
                    info!(topic = %f.topic, partition = index, leader, start = data.log_start_offset, "behind the leader's log start: starting over there");
                    log.truncate_fully_and_start_at(data.log_start_offset)?;
                } else if data.high_watermark >= 0 && data.high_watermark < end {
                    log.truncate_to(data.high_watermark)?;
                }
                Ok(Outcome::Idle)
            }
            Some(e) => {
                debug!(topic = %f.topic, partition = index, leader, error = ?e, "the leader cannot serve this partition now");
                Ok(Outcome::Backoff)
            }
        })();
        drop(log);
        match result {
            Ok(appended @ Outcome::Appended { .. }) => {
                partition.appended.notify_waiters();
                appended
            }
            Ok(outcome) => outcome,
            Err(e) => {
                warn!(topic = %f.topic, partition = index, leader, error = %e, "cannot apply replicated data");
                Outcome::Backoff
            }
        }
    }
}
