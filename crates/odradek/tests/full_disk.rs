//! A full disk: produce fails with KAFKA_STORAGE_ERROR, nothing unacknowledged becomes
//! visible, acknowledged data stays readable, and producing resumes once space is freed.
//! Runs on a small tmpfs the test mounts, so it needs root (CI runs as root).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(30);
const PARTITIONS: i32 = 2;

/// A size-limited tmpfs, unmounted on drop (after the broker using it, declared later, died).
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let parent = tempfile::tempdir().expect("temp dir");
        let dir = parent.path().join("fs");
        std::fs::create_dir(&dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("running mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Self {
            dir,
            _parent: parent,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.dir).status();
        if !status.is_ok_and(|s| s.success()) {
            // Still busy (a broker that failed to die): detach it so the temp dir can go.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Acknowledged records per partition: offset → payload.
type Acked = BTreeMap<i32, BTreeMap<i64, String>>;

/// Sends `count` ~1 KiB records spread over the partitions and waits for every report.
/// Returns how many failed; every failure must be KAFKA_STORAGE_ERROR.
async fn produce_wave(
    addr: &str,
    topic: &str,
    first: usize,
    count: usize,
    acked: &mut Acked,
) -> usize {
    let client = producer(
        addr,
        &[
            ("acks", "all"),
            // Report the broker's error instead of retrying until the timeout.
            ("retries", "0"),
            ("linger.ms", "0"),
        ],
    );
    let filler = "x".repeat(1000);
    let sends: Vec<_> = (first..first + count)
        .map(|i| {
            let value = format!("r{i}-{filler}");
            let partition = (i % PARTITIONS as usize) as i32;
            let future = enqueue(
                &client,
                FutureRecord::<(), _>::to(topic)
                    .partition(partition)
                    .payload(&value),
            );
            (value, future)
        })
        .collect();
    let mut failed = 0;
    for (value, future) in sends {
        match delivered(future).await {
            Ok(d) => {
                let previous = acked
                    .entry(d.partition)
                    .or_default()
                    .insert(d.offset, value);
                assert!(previous.is_none(), "offset {} acknowledged twice", d.offset);
            }
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError)) => failed += 1,
            Err(e) => panic!("produce failed with {e}, not KAFKA_STORAGE_ERROR"),
        }
    }
    failed
}

/// Every acknowledged record is readable at its offset, exactly once, and the log holds
/// nothing else.
fn assert_log_is_exactly(addr: &str, topic: &str, acked: &Acked) {
    for p in 0..PARTITIONS {
        let expected = acked.get(&p).cloned().unwrap_or_default();
        let (low, high) = consumer(addr, &[])
            .fetch_watermarks(topic, p, TIMEOUT)
            .expect("watermarks");
        assert_eq!(low, 0);
        assert_eq!(
            high,
            expected.len() as i64,
            "partition {p}: the log end must be the number of acknowledged records"
        );
        let got: BTreeMap<i64, String> = consume(addr, topic, p, 0, expected.len(), TIMEOUT)
            .iter()
            .map(|m| {
                let value = payload(m).expect("value");
                (
                    rdkafka::Message::offset(m),
                    String::from_utf8(value).expect("utf8"),
                )
            })
            .collect();
        assert!(
            got == expected,
            "partition {p}: the log differs from what was acknowledged"
        );
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn fill(path: &Path, bytes: usize) {
    std::fs::write(path, vec![0u8; bytes]).expect("writing the filler file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_produce_cleanly_and_recovers_when_space_is_freed() {
    assert!(
        is_root(),
        "mounting a tmpfs needs root: run this test as root (scripts/test in CI does)"
    );
    let fs = Tmpfs::mount("4m");
    let filler = fs.dir.join("filler");
    fill(&filler, 1 << 20);
    let data_dir = fs.dir.join("data");
    // Small segments, so that rolls (new files, index writes) also meet the full disk.
    let mut broker = BrokerProcess::start_in(Some(&data_dir), &[]);
    let topic = "full";
    create_topic(
        &broker.addr,
        topic,
        PARTITIONS,
        &[("segment.bytes", "262144")],
    )
    .await;

    let mut acked = Acked::new();
    let mut next = 0;
    let mut failures = 0;
    // 4 MiB cannot take more than ~4000 of these records; a wave that fails entirely means
    // the disk is full for every partition.
    for _ in 0..100 {
        let failed = produce_wave(&broker.addr, topic, next, 100, &mut acked).await;
        next += 100;
        failures += failed;
        if failed == 100 {
            break;
        }
    }
    assert!(failures > 0, "the disk never filled up");
    eprintln!(
        "disk full after {} acknowledged records; {failures} failed with KAFKA_STORAGE_ERROR",
        acked.values().map(BTreeMap::len).sum::<usize>()
    );
    assert!(
        acked.values().map(BTreeMap::len).sum::<usize>() > 1000,
        "too little was accepted before the disk filled: {acked:?}"
    );
    broker.assert_alive();
    assert!(
        broker.log().contains("No space left on device"),
        "the broker logs the cause"
    );

    // Acknowledged data stays readable; nothing that failed became visible.
    assert_log_is_exactly(&broker.addr, topic, &acked);

    // Free space: producing resumes on every partition without a restart.
    std::fs::remove_file(&filler).expect("removing the filler");
    let failed = produce_wave(&broker.addr, topic, next, 100, &mut acked).await;
    next += 100;
    assert_eq!(failed, 0, "producing resumes once space is freed");
    assert_log_is_exactly(&broker.addr, topic, &acked);

    // A crash now recovers cleanly: no torn batch to cut, the same records, and it writes.
    broker.kill9();
    broker.restart();
    assert!(
        !broker.log().contains("truncating segment tail"),
        "recovery found a partial batch:\n{}",
        broker.log()
    );
    assert_log_is_exactly(&broker.addr, topic, &acked);
    assert_eq!(
        produce_wave(&broker.addr, topic, next, 10, &mut acked).await,
        0
    );
    assert_log_is_exactly(&broker.addr, topic, &acked);
}
