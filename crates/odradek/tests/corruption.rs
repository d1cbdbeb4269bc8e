//! A flipped byte on disk: caught by the batch CRC when read (CORRUPT_MESSAGE for that
//! partition, with the file and offsets in the broker's log) or on recovery (loudly), while
//! every other partition keeps being served.

mod support;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use support::*;

const TIMEOUT: Duration = Duration::from_secs(30);
const TOPIC: &str = "corrupt";
const PARTITIONS: i32 = 3;
const RECORDS: i64 = 400;

/// A batch in a segment file: position, size, first and last offset.
#[derive(Debug, Clone, Copy)]
struct StoredBatch {
    position: u64,
    size: u64,
    base_offset: i64,
    last_offset: i64,
}

/// Walks the batch headers of a segment file (baseOffset i64, batchLength i32 at 8,
/// lastOffsetDelta i32 at 23).
fn stored_batches(path: &Path) -> Vec<StoredBatch> {
    let bytes = std::fs::read(path).expect("reading a segment");
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 61 <= bytes.len() {
        let field = |at: usize, len: usize| &bytes[pos + at..pos + at + len];
        let base_offset = i64::from_be_bytes(field(0, 8).try_into().expect("8 bytes"));
        let length = i32::from_be_bytes(field(8, 4).try_into().expect("4 bytes"));
        let delta = i32::from_be_bytes(field(23, 4).try_into().expect("4 bytes"));
        let size = 12 + length as u64;
        out.push(StoredBatch {
            position: pos as u64,
            size,
            base_offset,
            last_offset: base_offset + i64::from(delta),
        });
        pos += size as usize;
    }
    out
}

/// Flips one byte inside the records of the middle batch of `path` (covered by its CRC) and
/// returns that batch.
fn corrupt_middle_batch(path: &Path) -> StoredBatch {
    let batches = stored_batches(path);
    assert!(batches.len() >= 3, "too few batches in {}", path.display());
    corrupt_batch(path, batches[batches.len() / 2])
}

/// Flips one byte inside the records of `victim`, a batch of `path`. Writing through the
/// file reaches a running broker's page cache too.
fn corrupt_batch(path: &Path, victim: StoredBatch) -> StoredBatch {
    let at = victim.position + 61 + (victim.size - 61) / 2;
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .expect("opening the segment");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).expect("reading a byte");
    file.write_all_at(&[byte[0] ^ 0xff], at)
        .expect("writing a byte");
    victim
}

/// Reads a partition from `from` until the broker reports an error or the end `until` is
/// reached. Returns the offsets read and the error code, if any.
fn read_until_error(
    addr: &str,
    partition: i32,
    from: i64,
    until: i64,
) -> (Vec<i64>, Option<RDKafkaErrorCode>) {
    let consumer: BaseConsumer = consumer(addr, &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Offset(from))
        .expect("assignment");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + TIMEOUT;
    let mut offsets = Vec::new();
    while offsets.last().is_none_or(|&o| o + 1 < until) {
        assert!(
            Instant::now() < deadline,
            "partition {partition}: neither the end nor an error after offset {:?}",
            offsets.last()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => offsets.push(m.offset()),
            Some(Err(e)) => return (offsets, e.rdkafka_error_code()),
            None => {}
        }
    }
    (offsets, None)
}

async fn produce_records(addr: &str, from: i64, count: i64) {
    let client = producer(addr, &[("acks", "all"), ("batch.size", "2000")]);
    let value = "v".repeat(150);
    let sends: Vec<_> = (from..from + count)
        .flat_map(|i| (0..PARTITIONS).map(move |p| (i, p)))
        .map(|(i, p)| {
            enqueue(
                &client,
                FutureRecord::<(), _>::to(TOPIC)
                    .partition(p)
                    .payload(&format!("{i}-{value}")),
            )
        })
        .collect();
    for send in sends {
        delivered(send).await.expect("produce");
    }
}

fn first_segment(broker: &BrokerProcess, partition: i32) -> std::path::PathBuf {
    let segments = segment_files(&broker.partition_dir(TOPIC, partition));
    assert!(segments.len() > 2, "expected several segments");
    segments[0].clone()
}

/// Checks a partition holding a corrupt batch: everything before it is read, then
/// CORRUPT_MESSAGE; everything after it is read when fetched from past it; the broker's log
/// names the file and the batch's offsets.
fn assert_corrupt_batch_reported(
    broker: &BrokerProcess,
    partition: i32,
    segment: &Path,
    bad: StoredBatch,
) {
    let (offsets, error) = read_until_error(&broker.addr, partition, 0, RECORDS);
    assert_eq!(
        error,
        Some(RDKafkaErrorCode::InvalidMessage),
        "partition {partition}: a fetch of the corrupt batch fails with CORRUPT_MESSAGE"
    );
    assert_eq!(
        offsets,
        (0..bad.base_offset).collect::<Vec<_>>(),
        "partition {partition}: every record before the corrupt batch is served"
    );
    let (after, error) = read_until_error(&broker.addr, partition, bad.last_offset + 1, RECORDS);
    assert_eq!(error, None);
    assert_eq!(after, (bad.last_offset + 1..RECORDS).collect::<Vec<_>>());
    let log = broker.log();
    let line = log
        .lines()
        .find(|l| l.contains("corrupt data") && l.contains(&segment.display().to_string()))
        .unwrap_or_else(|| panic!("no log line names {}:\n{log}", segment.display()));
    assert!(
        line.contains(&format!(
            "offsets {}..={}",
            bad.base_offset, bad.last_offset
        )),
        "the log line names the batch's offsets: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_reported_on_read_and_on_recovery_and_other_partitions_are_served() {
    let mut broker = BrokerProcess::start();
    create_topic(
        &broker.addr,
        TOPIC,
        PARTITIONS,
        &[("segment.bytes", "8192")],
    )
    .await;
    produce_records(&broker.addr, 0, RECORDS).await;

    // Corrupted while the broker is stopped: a closed segment is not re-read on start-up,
    // so the read finds it.
    broker.stop();
    let segment0 = first_segment(&broker, 0);
    let bad0 = corrupt_middle_batch(&segment0);
    broker.restart();
    assert_corrupt_batch_reported(&broker, 0, &segment0, bad0);

    // Corrupted under a running broker.
    let segment1 = first_segment(&broker, 1);
    let bad1 = corrupt_middle_batch(&segment1);
    assert_corrupt_batch_reported(&broker, 1, &segment1, bad1);

    // The untouched partition is whole, and every partition still takes writes.
    let (offsets, error) = read_until_error(&broker.addr, 2, 0, RECORDS);
    assert_eq!((offsets.len() as i64, error), (RECORDS, None));
    // (Until partition 2's active segment holds a few batches written since the restart:
    // older ones are below the recovery point written at the clean shutdown, which a crash
    // recovery trusts without reading.)
    let mut total = RECORDS;
    let (active, written_since) = loop {
        produce_records(&broker.addr, total, 5).await;
        total += 5;
        let segments = segment_files(&broker.partition_dir(TOPIC, 2));
        let active = segments.last().expect("an active segment").clone();
        let since: Vec<StoredBatch> = stored_batches(&active)
            .into_iter()
            .filter(|b| b.base_offset >= RECORDS)
            .collect();
        if since.len() >= 3 {
            break (active, since);
        }
    };
    let (_, high) = consumer(&broker.addr, &[])
        .fetch_watermarks(TOPIC, 0, TIMEOUT)
        .expect("watermarks");
    assert_eq!(high, total);

    // After a crash the active segment is CRC-checked: the corrupt batch and everything
    // after it are cut, as Kafka does, and the log says so as an error.
    broker.kill9();
    let bad2 = corrupt_batch(&active, written_since[written_since.len() - 2]);
    broker.restart();
    let log = broker.log();
    let line = log
        .lines()
        .find(|l| l.contains("corrupt segment") && l.contains(&active.display().to_string()))
        .unwrap_or_else(|| panic!("recovery did not report {}:\n{log}", active.display()));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!("first_dropped_offset={}", bad2.base_offset)),
        "{line}"
    );
    let (_, high) = consumer(&broker.addr, &[])
        .fetch_watermarks(TOPIC, 2, TIMEOUT)
        .expect("watermarks");
    assert_eq!(high, bad2.base_offset);
    // The other partitions recovered whole.
    let (_, high) = consumer(&broker.addr, &[])
        .fetch_watermarks(TOPIC, 0, TIMEOUT)
        .expect("watermarks");
    assert_eq!(high, total);
}

/// A flipped byte in `__consumer_offsets` costs the commits of the damaged batch, not every
/// commit after it: the coordinator replays past the batch on start-up (and says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_offset_commit_batch_loses_only_its_own_commits() {
    let mut broker = BrokerProcess::start();
    let topic = "committed-past-damage";
    create_topic(&broker.addr, topic, 1, &[]).await;
    let client = consumer(&broker.addr, &[("group.id", "survivor")]);
    for offset in 1..=5 {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
            .expect("offset");
        client
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("commit");
    }
    drop(client);
    broker.stop();
    // The group's partition of __consumer_offsets is the one holding batches.
    let segment = (0..50)
        .map(|p| broker.data_dir.join(format!("__consumer_offsets-{p}")))
        .filter(|dir| dir.is_dir())
        .flat_map(|dir| segment_files(&dir))
        .find(|file| std::fs::metadata(file).is_ok_and(|m| m.len() > 0))
        .expect("a segment of __consumer_offsets with the commits");
    let batches = stored_batches(&segment);
    assert_eq!(batches.len(), 5, "one batch per commit");
    corrupt_batch(&segment, batches[2]);

    broker.restart();
    let client = consumer(&broker.addr, &[("group.id", "survivor")]);
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    let committed = client
        .committed_offsets(wanted, TIMEOUT)
        .expect("committed offsets");
    assert_eq!(
        committed
            .find_partition(topic, 0)
            .expect("the partition")
            .offset(),
        Offset::Offset(5),
        "the last commit survives a damaged earlier one"
    );
    assert!(
        broker
            .log()
            .contains("skipping a damaged batch of an internal topic"),
        "the loss is reported:\n{}",
        broker.log()
    );
}
