//! The operator commands (`odradek topic …`) against a real broker.

mod support;

use std::process::{Command, Output};

use rdkafka::producer::FutureRecord;
use support::*;

/// Runs odradek with exactly `args` (no -b appended, unlike `support::odradek`) and `env`,
/// without any ODRADEK_BROKERS of the test's own environment.
fn odradek_exactly(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args(args)
        .env_remove("ODRADEK_BROKERS")
        .envs(env.iter().copied())
        .output()
        .expect("running odradek")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lists_topic(out: &Output, topic: &str) -> bool {
    json(out)
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["topic"] == topic)
}

#[test]
fn client_options_go_before_or_after_the_subcommand() {
    let broker = BrokerProcess::start();
    let b = broker.addr.as_str();
    let created = odradek_exactly(&["-b", b, "topic", "create", "anywhere", "-p", "2"], &[]);
    assert!(created.status.success(), "{}", stderr(&created));
    for args in [
        &["--output", "json", "-b", b, "topic", "list"][..],
        &["-b", b, "topic", "list", "--output", "json"],
        &["--output", "json", "topic", "list", "--bootstrap-server", b],
        &[
            "--log-format",
            "json",
            "-b",
            b,
            "--output",
            "json",
            "topic",
            "list",
        ],
    ] {
        assert!(
            lists_topic(&odradek_exactly(args, &[]), "anywhere"),
            "{args:?}"
        );
    }
    let described = json(&odradek_exactly(
        &["-b", b, "--output", "json", "topic", "describe", "anywhere"],
        &[],
    ));
    assert_eq!(described["partitions"].as_array().unwrap().len(), 2);
    // ODRADEK_BROKERS still applies, and -b wins over it.
    let info = json(&odradek_exactly(
        &["--output", "json", "cluster", "info"],
        &[("ODRADEK_BROKERS", b)],
    ));
    assert_eq!(info["brokers"][0]["address"], b);
    assert!(lists_topic(
        &odradek_exactly(
            &["-b", b, "--output", "json", "topic", "list"],
            &[("ODRADEK_BROKERS", "127.0.0.1:1")]
        ),
        "anywhere"
    ));
    // Options that would mean nothing where they stand are refused, not ignored.
    let broker_flag = odradek_exactly(
        &["--data-dir", "/nonexistent", "topic", "list", "-b", b],
        &[],
    );
    assert_eq!(
        broker_flag.status.code(),
        Some(2),
        "{}",
        stderr(&broker_flag)
    );
    assert!(
        stderr(&broker_flag).contains("after `odradek broker`"),
        "{}",
        stderr(&broker_flag)
    );
    let offline = odradek_exactly(
        &["-b", b, "repair", "metadata", "--data-dir", "/nonexistent"],
        &[],
    );
    assert_eq!(offline.status.code(), Some(2), "{}", stderr(&offline));
    assert!(
        stderr(&offline).contains("-b/--bootstrap-server is for commands that talk to a cluster")
    );
}

#[test]
fn a_client_properties_file_supplies_bootstrap_servers_and_its_security_settings_are_not_ignored() {
    let broker = BrokerProcess::start();
    let b = broker.addr.as_str();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let plain = file(
        "plain.properties",
        &format!("# as for kafka-topics.sh\nbootstrap.servers={b}\nsecurity.protocol=PLAINTEXT\n"),
    );
    // Neither -b nor ODRADEK_BROKERS: the file's bootstrap.servers.
    let created = odradek_exactly(
        &["topic", "create", "from-file", "--command-config", &plain],
        &[],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    // -b wins over the file; a list is tried in order.
    let elsewhere = file("elsewhere.properties", "bootstrap.servers=127.0.0.1:1\n");
    assert!(lists_topic(
        &odradek_exactly(
            &[
                "--command-config",
                &elsewhere,
                "-b",
                b,
                "--output",
                "json",
                "topic",
                "list"
            ],
            &[]
        ),
        "from-file"
    ));
    let list = file(
        "list.properties",
        &format!("bootstrap.servers=127.0.0.1:1,{b}\n"),
    );
    assert!(lists_topic(
        &odradek_exactly(
            &[
                "--command-config",
                &list,
                "--output",
                "json",
                "topic",
                "list"
            ],
            &[]
        ),
        "from-file"
    ));

    // The built-in client speaks plaintext only: TLS and SASL settings stop the command
    // before it sends anything, and the error never shows a value (it may be a password).
    for (name, text, named) in [
        (
            "sasl.properties",
            "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.jaas.config=org.apache.\
             kafka.common.security.plain.PlainLoginModule required username=\"u\" \
             password=\"s3cret\";\n",
            "security.protocol=SASL_SSL",
        ),
        (
            "sasl-only.properties",
            "sasl.mechanism=PLAIN\nsasl.password=s3cret\n",
            "sasl.mechanism",
        ),
        (
            "ssl.properties",
            "ssl.truststore.location=/etc/kafka/truststore.jks\nssl.truststore.password=s3cret\n",
            "ssl.truststore.location",
        ),
    ] {
        let path = file(name, text);
        let refused = odradek_exactly(
            &[
                "-b",
                b,
                "--command-config",
                &path,
                "topic",
                "create",
                "unprotected",
            ],
            &[],
        );
        let message = stderr(&refused);
        assert!(!refused.status.success(), "{name} was ignored");
        assert!(
            message.contains(named) && message.contains("not supported"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }
    assert!(!lists_topic(
        &odradek_exactly(&["-b", b, "--output", "json", "topic", "list"], &[]),
        "unprotected"
    ));

    // perf produce is librdkafka: every entry of the file goes to it, bootstrap.servers too.
    let rdkafka = file(
        "rdkafka.properties",
        &format!("bootstrap.servers={b}\nclient.id=from-a-file\nlinger.ms=0\n"),
    );
    let perf = |config: &str| {
        odradek_exactly(
            &[
                "perf",
                "produce",
                "--topic",
                "from-file",
                "--num-records",
                "5",
                "--record-size",
                "10",
                "--command-config",
                config,
                "--output",
                "json",
            ],
            &[],
        )
    };
    assert_eq!(json(&perf(&rdkafka))["records"], 5);
    let unknown = file(
        "unknown.properties",
        &format!("bootstrap.servers={b}\nno.such.librdkafka.setting=1\n"),
    );
    let refused = perf(&unknown);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("no.such.librdkafka.setting"),
        "{}",
        stderr(&refused)
    );
}

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
