//! Log compaction (`cleanup.policy=compact`) seen by real librdkafka clients: the cleaner
//! keeps the latest value of every key, removes tombstones after `delete.retention.ms`, keeps
//! records and headers byte for byte through any codec, survives kill -9 mid-pass, compacts
//! transactional histories (aborted records and, later, markers removed), and producers
//! cannot write keyless records to a compacted topic.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use support::*;

const TIMEOUT: Duration = Duration::from_secs(60);
const FAST_CLEANER: [&str; 2] = ["--set", "log.cleaner.backoff.ms=200"];
const KEYS: usize = 100;
const VERSIONS: usize = 200;
const TOMBSTONED: usize = 10;
/// Written last under one key, so every record above lands in closed (cleanable) segments.
const FILLER_KEY: &str = "~filler";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Read {
    offset: i64,
    key: String,
    value: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
}

fn value_of(key: usize, version: usize) -> String {
    format!("key-{key}-version-{version}-{}", "x".repeat(40))
}

fn duplicate_headers() -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: "h",
            value: Some("first"),
        })
        .insert(Header {
            key: "h",
            value: Some("second"),
        })
}

/// Produces KEYS × VERSIONS values (each with two headers named `h`), then tombstones for the
/// first TOMBSTONED keys, then ~200 KB under FILLER_KEY. Returns the latest value per key.
async fn produce_history(addr: &str, topic: &str, codec: &str) -> BTreeMap<String, Option<String>> {
    let client = producer(
        addr,
        &[
            ("acks", "all"),
            ("compression.type", codec),
            ("batch.size", "16384"),
        ],
    );
    let mut latest = BTreeMap::new();
    let mut sends = Vec::new();
    for version in 0..VERSIONS {
        for key in 0..KEYS {
            let (k, v) = (format!("key-{key}"), value_of(key, version));
            sends.push(enqueue(
                &client,
                FutureRecord::to(topic)
                    .key(&k)
                    .payload(&v)
                    .headers(duplicate_headers()),
            ));
            latest.insert(k, Some(v));
        }
    }
    for key in 0..TOMBSTONED {
        let k = format!("key-{key}");
        sends.push(enqueue(
            &client,
            FutureRecord::<_, ()>::to(topic)
                .key(&k)
                .headers(duplicate_headers()),
        ));
        latest.insert(k, None);
    }
    for s in sends {
        delivered(s).await.expect("send");
    }
    produce_filler(&client, topic).await;
    latest
}

/// ~200 KB under FILLER_KEY, incompressible so that it fills segments whatever the codec.
async fn produce_filler(client: &FutureProducer, topic: &str) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut sends = Vec::new();
    for _ in 0..200 {
        let filler: String = (0..1000)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                char::from(b'a' + ((state >> 59) as u8 % 26))
            })
            .collect();
        sends.push(enqueue(
            client,
            FutureRecord::to(topic).key(FILLER_KEY).payload(&filler),
        ));
    }
    for s in sends {
        delivered(s).await.expect("send");
    }
}

/// Every record from the log start to the high watermark, at `isolation.level` `isolation`.
fn read_all(addr: &str, topic: &str, isolation: &str) -> Vec<Read> {
    let consumer = consumer(
        addr,
        &[
            ("fetch.max.bytes", "1048576"),
            ("isolation.level", isolation),
        ],
    );
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, TIMEOUT)
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("assignment");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + TIMEOUT;
    let mut out: Vec<Read> = Vec::new();
    // The last record (a filler in the active segment) is never cleaned away.
    while out.last().is_none_or(|r| r.offset < high - 1) {
        assert!(
            Instant::now() < deadline,
            "read only up to {:?} of {high}",
            out.last().map(|r| r.offset)
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Read {
                offset: m.offset(),
                key: String::from_utf8(m.key().expect("keyed").to_vec()).expect("utf-8"),
                value: m
                    .payload()
                    .map(|p| String::from_utf8(p.to_vec()).expect("utf-8")),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

/// Checks what holds at every moment, cleaned or not: offsets increase, every key's last
/// record is its latest value, and no record of a key comes after its latest one.
fn assert_consistent(reads: &[Read], latest: &BTreeMap<String, Option<String>>) {
    assert!(
        reads.windows(2).all(|w| w[0].offset < w[1].offset),
        "offsets increase"
    );
    let mut last: BTreeMap<&str, &Option<String>> = BTreeMap::new();
    for r in reads {
        last.insert(&r.key, &r.value);
    }
    for (key, value) in latest {
        if let Some(seen) = last.get(key.as_str()) {
            assert_eq!(*seen, value, "last record of {key}");
        } else {
            // Only a tombstone may be gone entirely.
            assert_eq!(value, &None, "{key} lost its latest value");
        }
    }
}

/// Whether the log is fully compacted: one record per key (none for tombstoned keys when
/// `tombstones_gone`), in offset order, each the latest value, headers intact.
fn fully_compacted(
    reads: &[Read],
    latest: &BTreeMap<String, Option<String>>,
    tombstones_gone: bool,
) -> bool {
    let data: Vec<&Read> = reads.iter().filter(|r| r.key != FILLER_KEY).collect();
    let expected: BTreeMap<&String, &Option<String>> = latest
        .iter()
        .filter(|(_, v)| !(tombstones_gone && v.is_none()))
        .collect();
    if data.len() != expected.len() {
        return false;
    }
    data.iter().all(|r| {
        expected.get(&r.key) == Some(&&r.value)
            && r.headers
                == [
                    ("h".to_string(), b"first".to_vec()),
                    ("h".to_string(), b"second".to_vec()),
                ]
    })
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

async fn compaction_keeps_latest_values(codec: &str) {
    let mut broker = BrokerProcess::start_with(&FAST_CLEANER);
    let topic = format!("compacted-{codec}");
    create_topic(
        &broker.addr,
        &topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "65536"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "3000"),
        ],
    )
    .await;
    let latest = produce_history(&broker.addr, &topic, codec).await;
    let produced = (KEYS * VERSIONS + TOMBSTONED) as i64;
    let mut reads = Vec::new();
    wait_for(
        "the cleaner to drop superseded values and expired tombstones",
        || {
            reads = read_all(&broker.addr, &topic, "read_uncommitted");
            assert_consistent(&reads, &latest);
            fully_compacted(&reads, &latest, true)
        },
    );
    let live: Vec<&String> = reads
        .iter()
        .filter(|r| r.key != FILLER_KEY)
        .map(|r| &r.key)
        .collect();
    assert_eq!(live.len(), KEYS - TOMBSTONED);
    // The survivors keep their original offsets: the latest versions were written last, in
    // key order, just before the tombstones.
    let first_latest = ((VERSIONS - 1) * KEYS) as i64;
    for r in reads.iter().filter(|r| r.key != FILLER_KEY) {
        let key: i64 = r
            .key
            .trim_start_matches("key-")
            .parse()
            .expect("key number");
        assert_eq!(r.offset, first_latest + key, "offset of {}", r.key);
    }
    assert!(
        reads
            .iter()
            .all(|r| r.offset < produced || r.key == FILLER_KEY)
    );
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_history_compacts_to_the_latest_value_per_key() {
    compaction_keeps_latest_values("none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_history_compacts_to_the_latest_value_per_key() {
    compaction_keeps_latest_values("zstd").await;
}

/// kill -9 at several moments while the cleaner works: after every restart the log is
/// consistent, and in the end fully compacted with tombstones kept (delete.retention.ms
/// is a day by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_cleaning_loses_nothing() {
    let mut broker = BrokerProcess::start_with(&FAST_CLEANER);
    let topic = "compacted-kill";
    create_topic(
        &broker.addr,
        topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "32768"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    )
    .await;
    let latest = produce_history(&broker.addr, topic, "lz4").await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.subsec_nanos());
    for round in 0..5u32 {
        // A different moment each round, 0-600 ms into the cleaner's work.
        let delay = (seed.wrapping_mul(2_654_435_761).wrapping_add(round * 7919)) % 600;
        std::thread::sleep(Duration::from_millis(u64::from(delay)));
        broker.kill9();
        broker.restart();
        let reads = read_all(&broker.addr, topic, "read_uncommitted");
        assert_consistent(&reads, &latest);
    }
    wait_for("compaction after the restarts", || {
        let reads = read_all(&broker.addr, topic, "read_uncommitted");
        assert_consistent(&reads, &latest);
        fully_compacted(&reads, &latest, false)
    });
    let tombstones = read_all(&broker.addr, topic, "read_uncommitted")
        .into_iter()
        .filter(|r| r.value.is_none())
        .count();
    assert_eq!(
        tombstones, TOMBSTONED,
        "tombstones stay for delete.retention.ms"
    );
    broker.stop();
}

/// A compacted topic written only by a transactional producer, as a Kafka Streams
/// exactly-once changelog: the cleaner compacts committed records, drops aborted ones (also
/// those written after a key's last committed value), removes the markers and their
/// aborted-transaction entries after delete.retention.ms, and the log shrinks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_history_compacts_to_the_latest_committed_values() {
    const ROUNDS: usize = 30;
    let mut broker = BrokerProcess::start_with(&FAST_CLEANER);
    let topic = "compacted-txn";
    create_topic(
        &broker.addr,
        topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "16384"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "2000"),
        ],
    )
    .await;
    let txn = producer(
        &broker.addr,
        &[
            ("transactional.id", "changelog-writer"),
            ("enable.idempotence", "true"),
        ],
    );
    txn.init_transactions(Timeout::After(TIMEOUT))
        .expect("init_transactions");
    let mut latest = BTreeMap::new();
    let mut aborted = HashSet::new();
    for round in 0..ROUNDS {
        // Every third round aborts, the last one included; aborted rounds also write a key
        // that no transaction ever commits.
        let commit = round % 3 != 2;
        txn.begin_transaction().expect("begin");
        let mut writes: Vec<(String, String)> = (0..KEYS)
            .map(|key| (format!("key-{key}"), value_of(key, round)))
            .collect();
        if !commit {
            writes.push(("aborted-only".to_string(), value_of(KEYS, round)));
        }
        let sends: Vec<_> = writes
            .iter()
            .map(|(k, v)| enqueue(&txn, FutureRecord::to(topic).key(k).payload(v)))
            .collect();
        for s in sends {
            delivered(s).await.expect("send");
        }
        if commit {
            txn.commit_transaction(Timeout::After(TIMEOUT))
                .expect("commit");
            latest.extend(writes.into_iter().map(|(k, v)| (k, Some(v))));
        } else {
            txn.abort_transaction(Timeout::After(TIMEOUT))
                .expect("abort");
            aborted.extend(writes.into_iter().map(|(_, v)| v));
        }
    }
    let dir = broker.partition_dir(topic, 0);
    let aborted_entries =
        || std::fs::read_to_string(dir.join("aborted-transactions")).expect("aborts were written");
    // The last abort's marker is in the active segment, which no pass cleans.
    assert!(!aborted_entries().is_empty());
    // Non-transactional filler after the last marker, so all of the above is cleanable.
    produce_filler(&producer(&broker.addr, &[("acks", "all")]), topic).await;
    // The active segment is never cleaned, and may hold one large filler batch.
    let closed_segment_bytes = || -> u64 {
        let files = segment_files(&dir);
        files_bytes(&files[..files.len() - 1])
    };
    wait_for(
        "the cleaner to drop superseded and aborted values and the abort markers",
        || {
            let compacted = ["read_committed", "read_uncommitted"]
                .iter()
                .all(|isolation| {
                    let reads = read_all(&broker.addr, topic, isolation);
                    let data: Vec<&Read> = reads.iter().filter(|r| r.key != FILLER_KEY).collect();
                    let no_aborted = data
                        .iter()
                        .all(|r| r.value.as_ref().is_some_and(|v| !aborted.contains(v)));
                    // Before, during and after cleaning.
                    assert!(
                        no_aborted || *isolation == "read_uncommitted",
                        "read_committed read an aborted value"
                    );
                    let seen: BTreeMap<String, Option<String>> = data
                        .iter()
                        .map(|r| (r.key.clone(), r.value.clone()))
                        .collect();
                    no_aborted && seen == latest && data.len() == KEYS
                });
            // ~230 KB of transactional records and most of 200 KB of filler shrink to one
            // record per key (~9 KB).
            compacted && aborted_entries().trim().is_empty() && closed_segment_bytes() < 16 * 1024
        },
    );
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_are_refused_by_compacted_topics() {
    let broker = BrokerProcess::start();
    let topic = "compacted-keys";
    create_topic(&broker.addr, topic, 1, &[("cleanup.policy", "compact")]).await;
    for codec in ["none", "lz4"] {
        let client = producer(
            &broker.addr,
            &[("compression.type", codec), ("linger.ms", "0")],
        );
        let err = delivered(enqueue(
            &client,
            FutureRecord::<(), _>::to(topic).payload("no key"),
        ))
        .await
        .expect_err("a keyless record must be refused");
        assert_eq!(
            err.rdkafka_error_code(),
            Some(RDKafkaErrorCode::InvalidRecord),
            "{codec}: {err}"
        );
        delivered(enqueue(
            &client,
            FutureRecord::to(topic).key("k").payload("keyed"),
        ))
        .await
        .expect("a keyed record is accepted");
    }
    // A delete-policy topic takes keyless records as before.
    create_topic(&broker.addr, "plain-keys", 1, &[]).await;
    let client = producer(&broker.addr, &[]);
    delivered(enqueue(
        &client,
        FutureRecord::<(), _>::to("plain-keys").payload("no key"),
    ))
    .await
    .expect("keyless records are fine without compaction");
}

/// `__consumer_offsets` is compacted too, and the coordinator's replay on start-up (from
/// the log start, through the gaps compaction leaves) still restores the latest commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_consumer_offsets_replay_to_the_latest_commits() {
    let mut broker = BrokerProcess::start_with(&[
        "--set",
        "log.cleaner.backoff.ms=200",
        "--set",
        "log.cleaner.min.cleanable.ratio=0.01",
        "--set",
        "offsets.topic.num.partitions=1",
        "--set",
        "offsets.topic.segment.bytes=4096",
    ]);
    let topic = "tracked";
    create_topic(&broker.addr, topic, 2, &[]).await;
    let group = [("group.id", "compacted-group")];
    let committer = consumer(&broker.addr, &group);
    for i in 0..300i64 {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(i))
            .unwrap();
        tpl.add_partition_offset(topic, 1, Offset::Offset(1000 + i))
            .unwrap();
        committer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("commit");
    }
    drop(committer);
    let dir = broker.partition_dir("__consumer_offsets", 0);
    let log_bytes = || -> u64 {
        segment_files(&dir)
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    };
    // 600 commit records (~60 KB) shrink to the latest two plus what the active segment
    // holds; the cleaner may already be at work while the commits go in.
    wait_for("__consumer_offsets to be compacted", || {
        log_bytes() < 4096 + 1024
            && broker
                .log()
                .lines()
                .any(|l| l.contains("cleaned log") && l.contains("__consumer_offsets-0"))
    });
    let committed = |addr: &str| -> Vec<(i32, i64)> {
        let c = consumer(addr, &group);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        tpl.add_partition(topic, 1);
        let got = c.committed_offsets(tpl, TIMEOUT).expect("OffsetFetch");
        got.elements()
            .iter()
            .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
            .collect()
    };
    let want = vec![(0, 299), (1, 1299)];
    assert_eq!(committed(&broker.addr), want);
    broker.kill9();
    broker.restart();
    assert_eq!(committed(&broker.addr), want, "replayed after kill -9");
    broker.stop();
    broker.restart();
    assert_eq!(
        committed(&broker.addr),
        want,
        "replayed after a clean restart"
    );
    broker.stop();
}
