//! `odradek perf produce|consume|fetch` against a real broker: the counts they report are the
//! records that really went through. Timings are not asserted.

mod support;

use support::*;

#[test]
fn perf_produce_then_consume_counts_every_record() {
    // A fresh group would otherwise wait 3 s for more members before its first assignment.
    let broker = BrokerProcess::start_with(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let produced = json(&odradek(
        &broker,
        &[
            "perf",
            "produce",
            "--topic",
            "perf",
            "--partitions",
            "3",
            "--num-records",
            "3000",
            "--record-size",
            "100",
            "--acks",
            "all",
            "--producer-props",
            "linger.ms=2",
            "batch.num.messages=500",
            "--output",
            "json",
        ],
    ));
    assert_eq!(produced["records"], 3000);
    assert_eq!(produced["errors"], 0);
    assert_eq!(produced["bytes"], 300_000);
    let latency = &produced["latency_ms"];
    let (p50, p99, max) = (
        latency["p50"].as_f64().expect("p50"),
        latency["p99"].as_f64().expect("p99"),
        latency["max"].as_f64().expect("max"),
    );
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= max,
        "latency percentiles out of order: {latency}"
    );

    let described = json(&odradek(
        &broker,
        &["topic", "describe", "perf", "--output", "json"],
    ));
    let partitions = described["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3, "--partitions created the topic");
    let stored: i64 = partitions
        .iter()
        .map(|p| p["latest"].as_i64().expect("latest offset"))
        .sum();
    assert_eq!(stored, 3000, "every produced record is in the log");

    let consumed = json(&odradek(
        &broker,
        &[
            "perf",
            "consume",
            "--topic",
            "perf",
            "--messages",
            "3000",
            "--output",
            "json",
        ],
    ));
    assert_eq!(consumed["records"], 3000);
    assert_eq!(consumed["bytes"], 300_000);

    // The bare Fetch loop reads the same records from the earliest offsets, and counts the
    // batches' own bytes: the values plus per-record and per-batch framing.
    let fetched = json(&odradek(
        &broker,
        &[
            "perf",
            "fetch",
            "--topic",
            "perf",
            "--messages",
            "3000",
            "--output",
            "json",
        ],
    ));
    assert_eq!(fetched["records"], 3000);
    let batch_bytes = fetched["batch_bytes"].as_u64().expect("batch_bytes");
    assert!(
        (300_000..360_000).contains(&batch_bytes),
        "3000 records of 100 bytes in {batch_bytes} bytes of batches"
    );

    // Asking for more than the topic holds fails, naming how many arrived.
    for (command, says) in [
        ("consume", "consumed 3000 of 3001"),
        ("fetch", "read 3000 of 3001"),
    ] {
        let short = odradek(
            &broker,
            &[
                "perf",
                command,
                "--topic",
                "perf",
                "--messages",
                "3001",
                "--timeout-ms",
                "3000",
            ],
        );
        assert!(!short.status.success());
        let stderr = String::from_utf8_lossy(&short.stderr);
        assert!(stderr.contains(says), "{command}: {stderr}");
    }
}

#[test]
fn perf_produce_at_a_fixed_rate_prints_kafka_style_figures() {
    let broker = BrokerProcess::start();
    let out = odradek(
        &broker,
        &[
            "perf",
            "produce",
            "--topic",
            "paced",
            "--num-records",
            "800",
            "--record-size",
            "10",
            "--throughput",
            "400",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("800 records sent, "), "{stdout}");
    assert!(stdout.contains("ms 99.9th."), "{stdout}");
    // Two seconds of sending span at least one of librdkafka's one-second statistics
    // windows, so each part of the latency breakdown has a figure.
    let breakdown = stdout
        .lines()
        .find(|l| l.starts_with("librdkafka p99 per second"))
        .unwrap_or_else(|| panic!("no librdkafka breakdown in {stdout}"));
    for part in ["queue", "out buffer", "round trip"] {
        assert!(
            breakdown.contains(&format!("{part} ")) && !breakdown.contains(&format!("{part} -")),
            "{part} has no figure: {breakdown}"
        );
    }
    let described = json(&odradek(
        &broker,
        &["topic", "describe", "paced", "--output", "json"],
    ));
    let stored: i64 = described["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["latest"].as_i64().expect("latest offset"))
        .sum();
    assert_eq!(stored, 800);
}
