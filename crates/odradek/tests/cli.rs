//! The operator commands (`odradek topic …`) against a real broker.

mod support;

use rdkafka::producer::FutureRecord;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_described_altered_grown_and_deleted_from_the_command_line() {
    let broker = BrokerProcess::start();
    let created = odradek(
        &broker,
        &[
            "topic",
            "create",
            "cli",
            "-p",
            "3",
            "-c",
            "retention.ms=60000",
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let again = odradek(&broker, &["topic", "create", "cli"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("TOPIC_ALREADY_EXISTS"));

    let client = producer(&broker.addr, &[]);
    for _ in 0..4 {
        delivered(enqueue(
            &client,
            FutureRecord::<(), _>::to("cli").partition(1).payload("x"),
        ))
        .await
        .expect("send");
    }
    let listed = json(&odradek(&broker, &["topic", "list", "--output", "json"]));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["topic"] == "cli" && t["partitions"] == 3)
    );

    let described = json(&odradek(
        &broker,
        &["topic", "describe", "cli", "--output", "json"],
    ));
    assert_eq!(
        described["configs"],
        serde_json::json!({"retention.ms": "60000"}),
        "only non-default configs"
    );
    let p1 = &described["partitions"][1];
    assert_eq!(
        (p1["earliest"].as_i64(), p1["latest"].as_i64()),
        (Some(0), Some(4))
    );

    assert!(
        odradek(
            &broker,
            &[
                "topic",
                "alter-config",
                "cli",
                "--set",
                "segment.ms=5000",
                "--delete",
                "retention.ms"
            ]
        )
        .status
        .success()
    );
    let bad = odradek(
        &broker,
        &["topic", "alter-config", "cli", "--set", "segment.ms=soon"],
    );
    assert!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("INVALID_CONFIG")
    );
    assert!(
        odradek(&broker, &["topic", "add-partitions", "cli", "--total", "5"])
            .status
            .success()
    );
    let described = json(&odradek(
        &broker,
        &["topic", "describe", "cli", "--output", "json"],
    ));
    assert_eq!(
        described["configs"],
        serde_json::json!({"segment.ms": "5000"})
    );
    assert_eq!(described["partitions"].as_array().unwrap().len(), 5);

    assert!(
        odradek(&broker, &["topic", "delete", "cli"])
            .status
            .success()
    );
    let gone = odradek(&broker, &["topic", "describe", "cli"]);
    assert!(
        !gone.status.success()
            && String::from_utf8_lossy(&gone.stderr).contains("UNKNOWN_TOPIC_OR_PARTITION")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_dirs_show_each_partitions_size_and_the_disk() {
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "sized", 2, &[]).await;
    create_topic(&broker.addr, "other", 1, &[]).await;
    let client = producer(&broker.addr, &[]);
    for i in 0..5 {
        delivered(enqueue(
            &client,
            FutureRecord::<(), _>::to("sized")
                .partition(1)
                .payload(&format!("record {i}")),
        ))
        .await
        .expect("send");
    }
    let on_disk = |partition: i32| -> i64 {
        files_bytes(&segment_files(&broker.partition_dir("sized", partition))) as i64
    };

    let out = json(&odradek(
        &broker,
        &["cluster", "log-dirs", "-t", "sized", "--output", "json"],
    ));
    let partitions = out["partitions"].as_array().unwrap();
    let listed: Vec<(&str, i64, i64)> = partitions
        .iter()
        .map(|p| {
            (
                p["topic"].as_str().unwrap(),
                p["partition"].as_i64().unwrap(),
                p["size_bytes"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(on_disk(1) > 0);
    assert_eq!(listed, [("sized", 0, on_disk(0)), ("sized", 1, on_disk(1))]);
    let dir = &out["dirs"][0];
    assert_eq!(out["dirs"].as_array().unwrap().len(), 1);
    assert_eq!(
        std::path::Path::new(dir["dir"].as_str().unwrap()),
        std::path::absolute(&broker.data_dir).unwrap()
    );
    assert_eq!(dir["size_bytes"].as_i64(), Some(on_disk(0) + on_disk(1)));
    let (total, usable) = (
        dir["total_bytes"].as_i64().unwrap(),
        dir["usable_bytes"].as_i64().unwrap(),
    );
    assert!(0 < usable && usable <= total, "{dir}");

    // Without a topic: every partition, internal topics included if any.
    let all = json(&odradek(
        &broker,
        &["cluster", "log-dirs", "--output", "json"],
    ));
    assert!(
        all["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["topic"] == "other")
    );

    let unknown = odradek(&broker, &["cluster", "log-dirs", "-t", "no-such-topic"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("UNKNOWN_TOPIC_OR_PARTITION"));
}
