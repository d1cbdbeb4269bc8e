//! Upgrade: a data dir written by the release before the cluster (commit 87acb5b: one node,
//! its metadata an openraft quorum of one) starts under this release with no new config,
//! and keeps every topic, config, record and committed offset. The fixture is that
//! release's own output (`tests/fixtures/make-upgrade-fixture` says how it was made).

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/upgrade-87acb5b"
);

/// The topic id the old release wrote in partition 0's `partition.metadata`.
fn stored_topic_id(data: &Path, topic: &str) -> String {
    let text = std::fs::read_to_string(data.join(format!("{topic}-0/partition.metadata")))
        .expect("partition.metadata");
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .expect("a topic_id line")
        .trim()
        .to_string()
}

/// `topic`'s records as `odradek consume` prints them: partition, offset, key, value and
/// headers, in partition then offset order.
fn records(broker: &BrokerProcess, topic: &str, count: usize) -> Vec<String> {
    let out = odradek(
        broker,
        &[
            "consume",
            topic,
            "--from-beginning",
            "-n",
            &count.to_string(),
            "-f",
            "%p %o %k %v %h\\n",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort_by_key(|l| {
        let mut f = l.split(' ');
        let p: i32 = f.next().and_then(|p| p.parse().ok()).unwrap_or(-1);
        let o: i64 = f.next().and_then(|o| o.parse().ok()).unwrap_or(-1);
        (p, o)
    });
    lines
}

/// Each partition's committed offset of group `billing`, from `group describe`.
fn billing(described: &serde_json::Value) -> BTreeMap<(String, i64), i64> {
    described["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                (
                    p["topic"].as_str().unwrap().to_string(),
                    p["partition"].as_i64().unwrap(),
                ),
                p["committed"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[test]
fn a_data_dir_of_the_release_before_the_cluster_starts_and_keeps_everything() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let unpacked = Command::new("tar")
        .args(["-xzf", &format!("{FIXTURE}.tar.gz"), "-C"])
        .arg(tmp.path())
        .status()
        .expect("running tar");
    assert!(unpacked.success());
    let data = tmp.path().join("data");
    let ids: BTreeMap<&str, String> = ["orders", "ledger", "audit"]
        .into_iter()
        .map(|t| (t, stored_topic_id(&data, t)))
        .collect();

    // No config but where the data is: the one-node default, as before.
    let mut broker = BrokerProcess::start_in(Some(&data), &[]);
    for round in ["first start", "after a restart"] {
        let listed = json(&odradek(&broker, &["topic", "list", "--output", "json"]));
        let partitions: BTreeMap<String, i64> = listed
            .as_array()
            .expect("topics")
            .iter()
            .map(|t| {
                (
                    t["topic"].as_str().unwrap().to_string(),
                    t["partitions"].as_i64().unwrap(),
                )
            })
            .filter(|(name, _)| !name.starts_with("__"))
            .collect();
        assert_eq!(
            partitions,
            BTreeMap::from([
                ("audit".to_string(), 2),
                ("ledger".to_string(), 1),
                ("orders".to_string(), 3)
            ]),
            "{round}"
        );
        for (topic, id) in &ids {
            let described = json(&odradek(
                &broker,
                &["topic", "describe", topic, "--output", "json"],
            ));
            assert_eq!(
                described["topic_id"].as_str(),
                Some(id.as_str()),
                "{round}: {topic}: {described}"
            );
        }
        let configs = |topic: &str| {
            json(&odradek(
                &broker,
                &["topic", "describe", topic, "--output", "json"],
            ))["configs"]
                .clone()
        };
        assert_eq!(configs("ledger")["cleanup.policy"], "compact", "{round}");
        assert_eq!(configs("audit")["retention.ms"], "86400000", "{round}");

        // Every record, with its key, offset and headers (and, after the restart, the one
        // written under this release).
        let total = if round == "first start" { 30 } else { 31 };
        let orders = records(&broker, "orders", total);
        assert_eq!(orders.len(), total, "{round}: {orders:?}");
        let mut values: Vec<String> = orders
            .iter()
            .map(|l| l.split(' ').nth(3).unwrap_or_default().to_string())
            .collect();
        values.sort();
        let mut expected: Vec<String> = (1..=total).map(|i| format!("order-{i}")).collect();
        expected.sort();
        assert_eq!(values, expected, "{round}");
        for line in &orders {
            let f: Vec<&str> = line.split(' ').collect();
            let i: i32 = f[3].trim_start_matches("order-").parse().unwrap();
            assert_eq!(f[2], format!("customer-{}", i % 7), "{round}: {line}");
        }
        let ledger = records(&broker, "ledger", 6);
        assert_eq!(ledger.len(), 6, "{round}: {ledger:?}");
        let audit = records(&broker, "audit", 10);
        assert_eq!(audit.len(), 10, "{round}");
        assert!(
            audit.iter().all(|l| l.ends_with("source=fixture")),
            "{round}: {audit:?}"
        );

        // The group's committed offsets, exactly as the old release reported them.
        let before: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{FIXTURE}.billing.json")).expect("billing.json"),
        )
        .expect("JSON");
        let now = json(&odradek(
            &broker,
            &["group", "describe", "billing", "--output", "json"],
        ));
        assert_eq!(billing(&now), billing(&before), "{round}");
        let committed: i64 = billing(&now).values().map(|c| (*c).max(0)).sum();
        assert_eq!(committed, 20, "{round}");

        if round == "first start" {
            // A new write goes after the old ones, and survives a restart.
            let mut produce = Command::new(env!("CARGO_BIN_EXE_odradek"))
                .args(["-b", &broker.addr, "produce", "orders", "-K", ":"])
                .stdin(Stdio::piped())
                .spawn()
                .expect("odradek produce");
            produce
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"customer-3:order-31\n")
                .expect("writing the record");
            assert!(produce.wait().expect("odradek produce").success());
            broker.stop();
            broker.restart();
        }
    }
    // The release before had no features; the first controller of this one finalizes them.
    let (features, epoch) = finalized_features(&broker.addr);
    assert_eq!(
        features,
        BTreeMap::from([
            ("group.version".to_string(), 1),
            ("metadata.version".to_string(), 25)
        ])
    );
    assert!(epoch > 0, "the metadata log's index: {epoch}");
    let cluster = json(&odradek(&broker, &["cluster", "info", "--output", "json"]));
    assert_eq!(
        cluster["brokers"].as_array().map(Vec::len),
        Some(1),
        "{cluster}"
    );
    assert_eq!(cluster["quorum"]["voters"][0]["id"], 1, "{cluster}");
}
