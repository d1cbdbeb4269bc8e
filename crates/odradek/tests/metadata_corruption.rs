//! A damaged metadata log must never cost a topic its data: only a torn tail is cut, damage
//! in the middle stops start-up with the way out, and `odradek repair metadata` drops only
//! the damaged entry. Partition directories the metadata does not know are set aside
//! (`-stray`), never deleted. A data dir from before the metadata quorum keeps every topic.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(30);

fn repair(data_dir: &Path, apply: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_odradek"));
    command
        .args(["repair", "metadata", "--data-dir"])
        .arg(data_dir);
    if apply {
        command.arg("--apply");
    }
    let out = command.output().expect("running odradek repair");
    assert!(
        out.status.success(),
        "repair failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every directory under `data_dir` whose name starts with `topic-`.
fn dirs_of(data_dir: &Path, topic: &str) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir)
        .expect("data dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{topic}-")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_metadata_log_loses_no_topic() {
    let mut broker = BrokerProcess::start();
    let topics = ["meta-a", "meta-b", "meta-c"];
    let client = producer(&broker.addr, &[("acks", "all")]);
    for topic in topics {
        create_topic(&broker.addr, topic, 1, &[]).await;
        let send = enqueue(
            &client,
            FutureRecord::<(), _>::to(topic).payload(&format!("value of {topic}")),
        );
        delivered(send).await.expect("produce");
    }
    drop(client);
    broker.stop();
    let lost_found = broker.data_dir.join("lost+found");
    std::fs::create_dir(&lost_found).expect("lost+found");

    let log = broker
        .data_dir
        .join("__cluster_metadata-0/raft-log/00000000000000000000.log");
    let mut bytes = std::fs::read(&log).expect("metadata log");
    // Inside meta-b's creation record (records are hex inside the log's JSON entries), so
    // that the damage costs a topic: the worst one damaged record can do.
    let name: String = "\"meta-b\"".bytes().map(|b| format!("{b:02x}")).collect();
    let at = bytes
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .expect("meta-b's record in the log");
    bytes[at] ^= 0x40;
    std::fs::write(&log, &bytes).expect("flipping a byte");

    let refused = broker.start_expecting_exit();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "start-up must refuse: {stderr}");
    for needed in [
        log.display().to_string(),
        "at byte".into(),
        "odradek repair metadata".into(),
    ] {
        assert!(
            stderr.contains(&needed),
            "the error must name {needed:?}:\n{stderr}"
        );
    }
    for topic in topics {
        assert!(
            broker.partition_dir(topic, 0).is_dir(),
            "{topic}'s data must be untouched by a refused start:\n{stderr}"
        );
    }

    let dry_run = repair(&broker.data_dir, false);
    let shown = String::from_utf8_lossy(&dry_run.stdout);
    assert!(shown.contains("dropped: bytes"), "{shown}");
    assert_eq!(
        std::fs::read(&log).expect("metadata log"),
        bytes,
        "a repair without --apply changes nothing"
    );

    repair(&broker.data_dir, true);
    broker.restart();
    let consumer = consumer(&broker.addr, &[]);
    let mut served = 0;
    for topic in topics {
        let dirs = dirs_of(&broker.data_dir, topic);
        assert_eq!(dirs.len(), 1, "{topic}: {dirs:?}");
        let name = dirs[0]
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name == format!("{topic}-0") {
            let got = consume(&broker.addr, topic, 0, 0, 1, TIMEOUT);
            assert_eq!(
                payload(&got[0]).as_deref(),
                Some(format!("value of {topic}").as_bytes())
            );
            served += 1;
        } else {
            assert!(name.ends_with("-stray"), "{name}");
            assert!(
                files_bytes(&segment_files(&dirs[0])) > 0,
                "the set-aside directory keeps {topic}'s records"
            );
        }
    }
    drop(consumer);
    assert_eq!(
        served, 2,
        "one damaged record costs at most one topic's metadata"
    );
    assert!(
        lost_found.is_dir(),
        "nothing but partition directories is touched"
    );
    let segment_name = log
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let kept_damaged = std::fs::read_dir(log.parent().expect("metadata dir"))
        .expect("metadata dir")
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{segment_name}.damaged-"))
        });
    assert!(
        kept_damaged,
        "the damaged file is kept: {:?}",
        std::fs::read_dir(log.parent().expect("metadata dir"))
            .expect("metadata dir")
            .map(|e| e.expect("entry").file_name())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_second_process_cannot_open_a_data_dir_in_use() {
    let broker = BrokerProcess::start();
    let out = Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args(["repair", "metadata", "--data-dir"])
        .arg(&broker.data_dir)
        .output()
        .expect("running odradek repair");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A data dir written before the metadata quorum: its records in `metadata.log`, one frame
/// `[len: u32][crc32c: u32][JSON]` per record.
fn write_file_log(path: &Path, records: &[serde_json::Value]) {
    let mut bytes = Vec::new();
    for record in records {
        let body = serde_json::to_vec(record).expect("JSON");
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
    }
    std::fs::write(path, bytes).expect("writing metadata.log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_from_before_the_quorum_keeps_its_topics_and_offsets() {
    let mut broker = BrokerProcess::start();
    let client = producer(&broker.addr, &[("acks", "all")]);
    create_topic(&broker.addr, "upgraded", 2, &[("retention.ms", "86400000")]).await;
    for i in 0..10 {
        let send = enqueue(
            &client,
            FutureRecord::<(), _>::to("upgraded")
                .partition(i % 2)
                .payload(&format!("v{i}")),
        );
        delivered(send).await.expect("produce");
    }
    drop(client);
    broker.stop();
    // Back to the layout of the release before the quorum: the same partition directories,
    // and the topic only in metadata.log.
    let metadata = broker.data_dir.join("__cluster_metadata-0");
    let id = std::fs::read_to_string(
        broker
            .partition_dir("upgraded", 0)
            .join("partition.metadata"),
    )
    .expect("partition.metadata")
    .lines()
    .find_map(|l| l.strip_prefix("topic_id: ").map(str::to_string))
    .expect("topic id");
    std::fs::remove_dir_all(&metadata).expect("removing the quorum's log");
    std::fs::create_dir(&metadata).expect("metadata dir");
    write_file_log(
        &metadata.join("metadata.log"),
        &[
            serde_json::json!({"type": "TopicCreated", "name": "upgraded", "id": id,
                "partitions": 2, "configs": {"retention.ms": "86400000"}}),
            serde_json::json!({"type": "ProducerIdsReserved", "next": 5000}),
        ],
    );
    for round in 0..2 {
        broker.restart();
        assert!(!metadata.join("metadata.log").exists(), "round {round}");
        assert!(
            metadata.join("metadata.log.migrated").exists(),
            "round {round}"
        );
        for p in 0..2 {
            let got = consume(&broker.addr, "upgraded", p, 0, 5, TIMEOUT);
            assert_eq!(got.len(), 5, "partition {p}, round {round}");
        }
        let client = producer(&broker.addr, &[("acks", "all")]);
        let next = enqueue(
            &client,
            FutureRecord::<(), _>::to("upgraded")
                .partition(0)
                .payload("next"),
        );
        let delivered = delivered(next).await.expect("produce after the upgrade");
        assert_eq!(delivered.offset, 5 + round, "offsets continue");
        drop(client);
        broker.stop();
    }
    assert!(
        !broker.log().contains("-stray"),
        "nothing was set aside:\n{}",
        broker.log()
    );
}
