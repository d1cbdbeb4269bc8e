//! `odradek perf produce|consume`: load generators that report what Kafka's
//! `kafka-producer-perf-test` and `kafka-consumer-perf-test` report, against Odradek or any
//! Kafka cluster. librdkafka does the work, so figures compare with the wider ecosystem.
//! `odradek perf fetch` reads with bare Fetch requests instead, to show how much of
//! `perf consume`'s time is the client library's. MB means 2^20 bytes, as in Kafka's tools.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use serde_json::json;

use odradek_protocol::batch::complete_batches;

use crate::cli::ClientArgs;
use crate::cli::{EARLIEST, offsets_at, topic_layout};
use crate::consume::{FetchLimits, fetch_round};

/// How often progress goes to stderr, as in Kafka's tools.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const MB: f64 = (1 << 20) as f64;
/// CreateTopics' TOPIC_ALREADY_EXISTS: running twice against one topic is normal.
const TOPIC_ALREADY_EXISTS: i16 = 36;

#[derive(Subcommand)]
pub enum PerfCommand {
    /// Produce records as fast as possible or at a fixed rate; report throughput and latency.
    Produce(ProduceArgs),
    /// Consume records with a consumer group; report throughput and time to the first record.
    Consume(ConsumeArgs),
    /// Read a topic from its earliest offsets with bare Fetch requests, one in flight, and
    /// no work per record: what the brokers' fetch path delivers without a client library's
    /// per-record cost (the ceiling for `perf consume`).
    Fetch(FetchArgs),
}

#[derive(Args)]
pub struct ProduceArgs {
    #[arg(long)]
    topic: String,
    #[arg(long)]
    num_records: u64,
    /// Bytes per record value (records have no key).
    #[arg(long)]
    record_size: usize,
    /// Records per second to aim for; -1: as fast as possible.
    #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
    throughput: f64,
    /// The producer's acks (0, 1, all / -1); librdkafka's default (all) when not given.
    #[arg(long)]
    acks: Option<String>,
    /// librdkafka producer configs, e.g. linger.ms=10 batch.size=1000000.
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE")]
    producer_props: Vec<String>,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long)]
    partitions: Option<i32>,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    /// Records to consume before stopping.
    #[arg(long)]
    messages: u64,
    /// Consumer group; a fresh one (reading from the earliest offset) when not given.
    #[arg(long)]
    group: Option<String>,
    /// Give up when no record arrives for this long.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// librdkafka consumer configs, e.g. fetch.max.bytes=104857600.
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE")]
    consumer_props: Vec<String>,
}

#[derive(Args)]
pub struct FetchArgs {
    #[arg(long)]
    topic: String,
    /// Records to read before stopping.
    #[arg(long)]
    messages: u64,
    /// Bytes asked per partition, as a consumer's `max.partition.fetch.bytes`.
    #[arg(long, default_value_t = 1 << 20)]
    partition_max_bytes: i32,
    /// Bytes asked per fetch, as a consumer's `fetch.max.bytes`.
    #[arg(long, default_value_t = 50 << 20)]
    max_bytes: i32,
    /// Give up when no record arrives for this long.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

pub fn run(command: PerfCommand, client: &ClientArgs) -> anyhow::Result<()> {
    match command {
        PerfCommand::Produce(args) => produce(&args, client),
        PerfCommand::Consume(args) => consume(&args, client),
        PerfCommand::Fetch(args) => fetch(&args, client),
    }
}

/// Sets each KEY=VALUE on `config`, over what is there.
fn apply_props(config: &mut ClientConfig, props: &[String]) -> anyhow::Result<()> {
    for pair in props {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("expected KEY=VALUE, got '{pair}'"))?;
        config.set(k.trim(), v.trim());
    }
    Ok(())
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// Counts over one progress window.
#[derive(Default)]
struct Window {
    records: u64,
    bytes: u64,
    latency_sum_us: u64,
    latency_max_us: u64,
}

impl Window {
    fn add(&mut self, bytes: u64, latency_us: u64) {
        self.records += 1;
        self.bytes += bytes;
        self.latency_sum_us += latency_us;
        self.latency_max_us = self.latency_max_us.max(latency_us);
    }

    fn avg_ms(&self) -> f64 {
        if self.records == 0 {
            return 0.0;
        }
        self.latency_sum_us as f64 / self.records as f64 / 1000.0
    }

    fn line(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        format!(
            "{} records sent, {:.1} records/sec ({:.2} MB/sec), {:.2} ms avg latency, {:.2} ms max latency.",
            self.records,
            self.records as f64 / secs,
            self.bytes as f64 / MB / secs,
            self.avg_ms(),
            self.latency_max_us as f64 / 1000.0,
        )
    }
}

struct ProduceStats {
    total: Window,
    window: Window,
    window_start: Instant,
    /// Send-to-acknowledgement latency in microseconds.
    histogram: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Where a record's latency goes inside librdkafka, from its statistics: the 99th
/// percentile of each one-second window (`statistics.interval.ms`), in microseconds. The
/// send-to-acknowledgement latency is roughly the sum of the three, so they tell the
/// client's share from the broker's.
#[derive(Default)]
struct LibrdkafkaWindows {
    /// From `produce()` until the record leaves the partition queue for a request
    /// (`int_latency`: linger and batching).
    queue: Vec<i64>,
    /// From a request's creation until it is written to the socket (`outbuf_latency`).
    out_buffer: Vec<i64>,
    /// From a request's write until its response is read (`rtt`: network and broker).
    round_trip: Vec<i64>,
}

impl LibrdkafkaWindows {
    fn add(&mut self, statistics: &Statistics) {
        // Bootstrap entries (node -1) carry only the first metadata request.
        for broker in statistics.brokers.values().filter(|b| b.nodeid >= 0) {
            for (window, into) in [
                (&broker.int_latency, &mut self.queue),
                (&broker.outbuf_latency, &mut self.out_buffer),
                (&broker.rtt, &mut self.round_trip),
            ] {
                if let Some(w) = window.as_ref().filter(|w| w.cnt > 0) {
                    into.push(w.p99);
                }
            }
        }
    }

    /// The median and the largest of the windows' p99s, in ms.
    fn median_and_max(p99s: &[i64]) -> Option<(f64, f64)> {
        let mut sorted = p99s.to_vec();
        sorted.sort_unstable();
        let ms = |us: i64| us as f64 / 1000.0;
        Some((ms(*sorted.get(sorted.len() / 2)?), ms(*sorted.last()?)))
    }

    fn parts(&self) -> [(&'static str, &[i64]); 3] {
        [
            ("queue", &self.queue),
            ("out_buffer", &self.out_buffer),
            ("round_trip", &self.round_trip),
        ]
    }

    fn json(&self) -> serde_json::Value {
        let parts = self.parts().map(|(name, p99s)| {
            let summary = Self::median_and_max(p99s);
            let value = json!({
                "median_ms": summary.map(|s| s.0),
                "max_ms": summary.map(|s| s.1),
                "windows": p99s.len(),
            });
            (name.to_string(), value)
        });
        serde_json::Value::Object(parts.into_iter().collect())
    }

    fn line(&self) -> String {
        let parts = self.parts().map(|(name, p99s)| {
            let name = name.replace('_', " ");
            match Self::median_and_max(p99s) {
                Some((median, max)) => format!("{name} {median:.2} / {max:.2} ms"),
                None => format!("{name} -"),
            }
        });
        format!(
            "librdkafka p99 per second (median / max): {}.",
            parts.join(", ")
        )
    }
}

/// Receives librdkafka's delivery reports and statistics; the opaque of each record is the
/// microsecond, counted from `start`, at which it was handed to the producer.
struct PerfContext {
    start: Instant,
    stats: Mutex<ProduceStats>,
    librdkafka: Mutex<LibrdkafkaWindows>,
}

impl PerfContext {
    fn stats(&self) -> std::sync::MutexGuard<'_, ProduceStats> {
        // A poisoned lock only means a reporter panicked; the counts are still usable.
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn librdkafka(&self) -> std::sync::MutexGuard<'_, LibrdkafkaWindows> {
        self.librdkafka.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for PerfContext {
    fn stats(&self, statistics: Statistics) {
        self.librdkafka().add(&statistics);
    }
}

impl ProducerContext for PerfContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_us: usize) {
        let latency_us =
            (self.start.elapsed().as_micros() as u64).saturating_sub(sent_at_us as u64);
        let mut stats = self.stats();
        match result {
            Ok(m) => {
                let bytes = (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64;
                stats.total.add(bytes, latency_us);
                stats.window.add(bytes, latency_us);
                stats.histogram.saturating_record(latency_us);
            }
            Err((e, _)) => {
                stats.errors += 1;
                if stats.first_error.is_none() {
                    stats.first_error = Some(e.to_string());
                }
            }
        }
    }
}

/// Kafka's tool fills the value with random upper-case letters once and sends it every
/// time; so does this (a fixed xorshift seed keeps runs comparable).
fn payload(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'A' + (x % 26) as u8
        })
        .collect()
}

fn ensure_topic(client: &ClientArgs, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let (code, message) = crate::topic::request_create(client, topic, partitions, -1, &[])?;
    if code == TOPIC_ALREADY_EXISTS {
        return Ok(());
    }
    crate::topic::check_with_message(code, message, "CreateTopics")?;
    eprintln!("created topic {topic} with {partitions} partitions");
    Ok(())
}

/// Sleeps so that no more than `per_sec` records have been sent at any time.
struct Throttle {
    per_sec: f64,
    start: Instant,
}

impl Throttle {
    /// Below this a sleep costs more than it evens out.
    const MIN_SLEEP: Duration = Duration::from_millis(1);

    fn wait(&self, sent: u64) {
        if self.per_sec <= 0.0 {
            return;
        }
        let due = Duration::from_secs_f64(sent as f64 / self.per_sec);
        let ahead = due.saturating_sub(self.start.elapsed());
        if ahead >= Self::MIN_SLEEP {
            std::thread::sleep(ahead);
        }
    }
}

fn produce(args: &ProduceArgs, client: &ClientArgs) -> anyhow::Result<()> {
    if let Some(partitions) = args.partitions {
        ensure_topic(client, &args.topic, partitions)?;
    }
    let mut config = client.rdkafka_config();
    // For the latency breakdown (LibrdkafkaWindows); --command-config or the props may
    // change it.
    if config.get("statistics.interval.ms").is_none() {
        config.set("statistics.interval.ms", "1000");
    }
    apply_props(&mut config, &args.producer_props)?;
    if let Some(acks) = &args.acks {
        config.set("acks", acks);
    }
    let start = Instant::now();
    let context = PerfContext {
        start,
        stats: Mutex::new(ProduceStats {
            total: Window::default(),
            window: Window::default(),
            window_start: start,
            // 1 µs to 10 minutes at 3 significant digits; anything slower is counted as 10 minutes.
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3)
                .context("latency histogram")?,
            errors: 0,
            first_error: None,
        }),
        librdkafka: Mutex::new(LibrdkafkaWindows::default()),
    };
    let producer: ThreadedProducer<PerfContext> = config
        .create_with_context(context)
        .context("creating the producer")?;
    let value = payload(args.record_size);
    let throttle = Throttle {
        per_sec: args.throughput,
        start,
    };
    let (done, stop_progress) = mpsc::channel::<()>();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let context = producer.context();
        scope.spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stop_progress.recv_timeout(PROGRESS_EVERY) {
                let mut stats = context.stats();
                let now = Instant::now();
                eprintln!("{}", stats.window.line(now - stats.window_start));
                stats.window = Window::default();
                stats.window_start = now;
            }
        });
        let sent = send_all(&producer, args, &value, &throttle);
        let flushed = producer.flush(Duration::from_secs(300));
        drop(done);
        sent?;
        flushed.context("waiting for outstanding deliveries")
    })?;
    let elapsed = start.elapsed();
    let stats = producer.context().stats();
    report_produce(
        &stats,
        &producer.context().librdkafka(),
        elapsed,
        client.json(),
    )?;
    if stats.errors > 0 {
        bail!(
            "{} records failed, the first with: {}",
            stats.errors,
            stats.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

fn send_all(
    producer: &ThreadedProducer<PerfContext>,
    args: &ProduceArgs,
    value: &[u8],
    throttle: &Throttle,
) -> anyhow::Result<()> {
    let start = producer.context().start;
    for i in 0..args.num_records {
        throttle.wait(i);
        // Latency counts from here, including any wait for room in librdkafka's queue, as
        // Kafka's tool counts the time send() blocks.
        let sent_at = start.elapsed().as_micros() as usize;
        let mut record =
            BaseRecord::<(), [u8], usize>::with_opaque_to(&args.topic, sent_at).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e).context("handing a record to the producer"),
            }
        }
    }
    Ok(())
}

fn report_produce(
    stats: &ProduceStats,
    librdkafka: &LibrdkafkaWindows,
    elapsed: Duration,
    json_output: bool,
) -> anyhow::Result<()> {
    let h = &stats.histogram;
    let ms = |us: u64| us as f64 / 1000.0;
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    let total = &stats.total;
    if json_output {
        let out = json!({
            "records": total.records,
            "errors": stats.errors,
            "bytes": total.bytes,
            "elapsed_s": secs,
            "records_per_sec": total.records as f64 / secs,
            "bytes_per_sec": total.bytes as f64 / secs,
            "mb_per_sec": total.bytes as f64 / MB / secs,
            "latency_ms": {
                "avg": total.avg_ms(),
                "p50": ms(h.value_at_quantile(0.5)),
                "p95": ms(h.value_at_quantile(0.95)),
                "p99": ms(h.value_at_quantile(0.99)),
                "p99_9": ms(h.value_at_quantile(0.999)),
                "max": ms(h.max()),
            },
            "librdkafka_p99": librdkafka.json(),
            "end_unix_ms": unix_ms(),
        });
        println!("{out}");
    } else {
        println!(
            "{} {:.2} ms 50th, {:.2} ms 95th, {:.2} ms 99th, {:.2} ms 99.9th.",
            total.line(elapsed),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.95)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
        );
        println!("{}", librdkafka.line());
    }
    Ok(())
}

fn consume(args: &ConsumeArgs, client: &ClientArgs) -> anyhow::Result<()> {
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("odradek-perf-consumer-{}-{}", std::process::id(), unix_ms()));
    let mut config = client.rdkafka_config();
    config
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest");
    apply_props(&mut config, &args.consumer_props)?;
    let consumer: BaseConsumer = config.create().context("creating the consumer")?;
    consumer
        .subscribe(&[&args.topic])
        .context("subscribing to the topic")?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let start = Instant::now();
    let mut first_at = None;
    // When `records` last changed, as far as the clock was read: reading it for every
    // record was 5% of this process's CPU (and the load generator shares the cores with the
    // broker it measures), so it is read on the first record, every `CLOCK_EVERY` records
    // and when a poll comes back empty.
    const CLOCK_EVERY: u64 = 4096;
    let mut progress_at = (start, 0u64);
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut window = (start, 0u64, 0u64);
    while records < args.messages {
        let polled = consumer.poll(Duration::from_millis(100));
        let read_clock = match &polled {
            Some(Ok(m)) => {
                records += 1;
                bytes += (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64;
                first_at.is_none() || records.is_multiple_of(CLOCK_EVERY)
            }
            // librdkafka retries what it can; a stall still ends in the timeout below.
            Some(Err(e)) => {
                eprintln!("consumer error: {e}");
                true
            }
            None => true,
        };
        if !read_clock {
            continue;
        }
        let now = Instant::now();
        if records > 0 {
            first_at.get_or_insert(now);
        }
        if records != progress_at.1 {
            progress_at = (now, records);
        } else if now - progress_at.0 > timeout {
            bail!(
                "no record for {timeout:?}: consumed {records} of {} records",
                args.messages
            );
        }
        if now - window.0 >= PROGRESS_EVERY {
            let secs = (now - window.0).as_secs_f64();
            eprintln!(
                "{} records consumed, {:.1} records/sec ({:.2} MB/sec).",
                records - window.1,
                (records - window.1) as f64 / secs,
                (bytes - window.2) as f64 / MB / secs
            );
            window = (now, records, bytes);
        }
    }
    let elapsed = start.elapsed();
    let to_first = first_at.map_or(elapsed, |t| t - start);
    // Throughput once records flow, without the group join that precedes the first one.
    let fetching = (elapsed - to_first).as_secs_f64().max(f64::EPSILON);
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    if client.json() {
        let out = json!({
            "records": records,
            "bytes": bytes,
            "group": group,
            "elapsed_s": secs,
            "first_record_ms": to_first.as_secs_f64() * 1000.0,
            "records_per_sec": records as f64 / secs,
            "bytes_per_sec": bytes as f64 / secs,
            "mb_per_sec": bytes as f64 / MB / secs,
            "fetch_records_per_sec": records as f64 / fetching,
            "fetch_bytes_per_sec": bytes as f64 / fetching,
            "end_unix_ms": unix_ms(),
        });
        println!("{out}");
    } else {
        println!(
            "{records} records consumed, {:.2} MB in {secs:.2} s: {:.1} records/sec ({:.2} MB/sec); \
             first record after {:.1} ms, then {:.1} records/sec ({:.2} MB/sec).",
            bytes as f64 / MB,
            records as f64 / secs,
            bytes as f64 / MB / secs,
            to_first.as_secs_f64() * 1000.0,
            records as f64 / fetching,
            bytes as f64 / MB / fetching,
        );
    }
    Ok(())
}

fn fetch(args: &FetchArgs, cluster: &ClientArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut client = cluster.connect(timeout)?;
    let layout = topic_layout(&mut client, &args.topic, false)?;
    let partitions: BTreeSet<(String, i32)> = layout
        .leaders
        .keys()
        .map(|p| (args.topic.clone(), *p))
        .collect();
    let mut positions: BTreeMap<i32, i64> = offsets_at(&mut client, &partitions, EARLIEST)?
        .into_iter()
        .map(|((_, p), offset)| (p, offset))
        .collect();
    let limits = FetchLimits {
        partition_max_bytes: args.partition_max_bytes,
        max_bytes: args.max_bytes,
    };
    let start = Instant::now();
    let mut first_at = None;
    let mut progress_at = start;
    let (mut records, mut bytes, mut fetches) = (0u64, 0u64, 0usize);
    while records < args.messages {
        let asked = positions.clone();
        let before = records;
        fetches += fetch_round(
            &mut client,
            &args.topic,
            &layout,
            &asked,
            limits,
            |p, data| {
                let mut end = None;
                for (header, size) in complete_batches(data) {
                    bytes += size as u64;
                    if !header.is_control() {
                        records += u64::try_from(header.record_count()).unwrap_or(0);
                    }
                    end = Some(header.last_offset() + 1);
                }
                if let (Some(end), Some(position)) = (end, positions.get_mut(&p)) {
                    *position = end;
                }
                Ok(())
            },
        )?;
        let now = Instant::now();
        if records > before {
            first_at.get_or_insert((now, bytes));
            progress_at = now;
        } else if now - progress_at > timeout {
            bail!(
                "no record for {timeout:?}: read {records} of {} records",
                args.messages
            );
        }
    }
    let elapsed = start.elapsed();
    // The rate is timed from the first response with records, as `perf consume` times it
    // from the first record, and leaves that response's bytes out.
    let (to_first, first_bytes) = first_at.map_or((elapsed, bytes), |(t, b)| (t - start, b));
    let fetching = (elapsed - to_first).as_secs_f64().max(f64::EPSILON);
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    if cluster.json() {
        let out = json!({
            "records": records,
            // Whole record batches as served, headers included: `perf consume` counts keys
            // and values only: about 1% less for 1 KiB records, 10% for 100-byte ones.
            "batch_bytes": bytes,
            "fetches": fetches,
            "elapsed_s": secs,
            "fetch_batch_bytes_per_sec": (bytes - first_bytes) as f64 / fetching,
            "end_unix_ms": unix_ms(),
        });
        println!("{out}");
    } else {
        println!(
            "{records} records, {:.2} MB of record batches in {fetches} fetches over {secs:.2} s: \
             {:.2} MB/sec after the first response.",
            bytes as f64 / MB,
            (bytes - first_bytes) as f64 / MB / fetching,
        );
    }
    Ok(())
}
