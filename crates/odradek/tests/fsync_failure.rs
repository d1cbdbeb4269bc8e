//! A failed fsync: the partition whose file failed goes offline (produce, fetch and
//! ListOffsets answer KAFKA_STORAGE_ERROR), every other partition keeps working, and what
//! was acknowledged before the failure is there after a restart. The failure is injected
//! into the real broker process by a preloaded shim (`support/fail_fsync.c`, built with the
//! C compiler the rdkafka crate already needs) that fails fsync and fdatasync with EIO for
//! one partition's files while a trigger file exists.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(30);
const KAFKA_STORAGE_ERROR: i16 = 56;

/// Produces one record with acks=all; the partition's error code and base offset.
fn produce(addr: &str, topic: &str, value: &str) -> (i16, i64) {
    produce_with_acks(addr, topic, value, -1)
}

fn produce_with_acks(addr: &str, topic: &str, value: &str, acks: i16) -> (i16, i64) {
    let request = one_record_produce(topic, value, NO_PRODUCER, None).with_acks(acks);
    let response = raw_round_trip(addr, &request, 9);
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

/// A broker whose fsyncs fail for files whose path contains `failing` while the returned
/// trigger file exists; the returned temp dir holds the shim and the trigger.
fn start_with_failing_fsync(failing: &str) -> (BrokerProcess, PathBuf, tempfile::TempDir) {
    let shim_dir = tempfile::tempdir().expect("temp dir");
    let shim = build_fsync_shim(shim_dir.path());
    let trigger = shim_dir.path().join("fail-now");
    let broker = BrokerProcess::start_with_env(
        None,
        &[],
        &[
            ("LD_PRELOAD", shim.to_str().unwrap()),
            ("ODRADEK_FAIL_FSYNC_MATCH", failing),
            ("ODRADEK_FAIL_FSYNC_TRIGGER", trigger.to_str().unwrap()),
        ],
    );
    (broker, trigger, shim_dir)
}

/// Fetches partition 0 of `topic` from offset 0: its error code and record bytes.
fn fetch(addr: &str, topic: &str) -> (i16, usize) {
    let response = raw_round_trip(addr, &fetch_request(topic, 0, 0, -1), 11);
    let partition = &response.responses[0].partitions[0];
    (
        partition.error_code,
        partition.records.as_ref().map_or(0, |r| r.len()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_takes_only_its_partition_offline_and_loses_nothing_acknowledged() {
    let (mut broker, trigger, _shim_dir) = start_with_failing_fsync("/doomed-0/");
    create_topic(&broker.addr, "doomed", 1, &[]).await;
    create_topic(&broker.addr, "healthy", 1, &[]).await;
    for i in 0..3 {
        assert_eq!(
            produce(&broker.addr, "doomed", &format!("acknowledged-{i}")),
            (0, i)
        );
    }
    assert_eq!(produce(&broker.addr, "healthy", "before").0, 0);

    std::fs::write(&trigger, b"").expect("arming the shim");
    assert_eq!(
        produce(&broker.addr, "doomed", "during").0,
        KAFKA_STORAGE_ERROR,
        "the write whose fsync failed is not acknowledged"
    );
    assert!(
        broker
            .log()
            .contains("fsync failed; taking the log offline"),
        "the failure is logged"
    );
    assert_eq!(
        produce(&broker.addr, "doomed", "after").0,
        KAFKA_STORAGE_ERROR,
        "an offline log takes no more writes"
    );
    assert_eq!(
        fetch(&broker.addr, "doomed").0,
        KAFKA_STORAGE_ERROR,
        "an offline log serves no reads"
    );
    assert!(
        consumer(&broker.addr, &[])
            .fetch_watermarks("doomed", 0, Duration::from_secs(5))
            .is_err(),
        "ListOffsets of an offline log fails"
    );
    // Everything else is served as before.
    assert_eq!(
        produce(&broker.addr, "healthy", "while-doomed-is-offline"),
        (0, 1)
    );
    let (error, bytes) = fetch(&broker.addr, "healthy");
    assert_eq!(error, 0);
    assert!(bytes > 0);

    // The disk is back: after a crash and restart the acknowledged records are all there.
    std::fs::remove_file(&trigger).expect("disarming the shim");
    broker.kill9();
    broker.restart();
    let recovered: Vec<Option<Vec<u8>>> = consume(&broker.addr, "doomed", 0, 0, 3, TIMEOUT)
        .iter()
        .map(payload)
        .collect();
    assert_eq!(
        recovered,
        (0..3)
            .map(|i| Some(format!("acknowledged-{i}").into_bytes()))
            .collect::<Vec<_>>()
    );
    let (error, offset) = produce(&broker.addr, "doomed", "after-restart");
    assert_eq!(error, 0);
    assert!(offset >= 3, "appends resume after the acknowledged records");
    broker.stop();
}

/// An acks=1 write waits for no fsync, not even the one that rolls a segment: the closed
/// segment's indexes and producer-state snapshot are synced later, off the request path
/// (before, the roll synced them under the partition's lock, so a slow disk stalled the
/// producer and, here, the failing fsync refused the write). The failure still takes the
/// log offline at its next flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_1_writes_that_roll_segments_wait_for_no_fsync() {
    let (mut broker, trigger, _shim_dir) = start_with_failing_fsync("/rolling-0/");
    // Each one-record batch is about 80 bytes: every second write rolls.
    create_topic(&broker.addr, "rolling", 1, &[("segment.bytes", "100")]).await;
    std::fs::write(&trigger, b"").expect("arming the shim");
    for i in 0..6 {
        assert_eq!(
            produce_with_acks(&broker.addr, "rolling", &format!("unsynced-{i}"), 1),
            (0, i),
            "acks=1 write {i}"
        );
    }
    let partition_dir = broker.data_dir.join("rolling-0");
    let segments = std::fs::read_dir(&partition_dir)
        .expect("partition directory")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count();
    assert!(segments >= 3, "{segments} segments: the writes rolled");
    assert_eq!(
        produce(&broker.addr, "rolling", "synced").0,
        KAFKA_STORAGE_ERROR,
        "the flush an acks=all write waits for still meets the failing fsync"
    );
    // A clean stop with an offline log exits with an error, as it should; this test is done.
    broker.kill9();
}
