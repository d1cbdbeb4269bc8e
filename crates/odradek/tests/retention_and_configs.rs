//! Data lifecycle: size and time retention, DeleteRecords, and changing topic configs live.

mod support;

use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    DescribeConfigsRequest, describe_configs_request::DescribeConfigsResource,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::Message;
use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use support::*;

const TIMEOUT: Duration = Duration::from_secs(30);
const FAST_RETENTION: [&str; 2] = ["--set", "log.retention.check.interval.ms=200"];

fn dir_size(path: &std::path::Path) -> u64 {
    // Retention deletes segments while this runs: a file listed may be gone a moment later.
    std::fs::read_dir(path)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn earliest(addr: &str, topic: &str) -> i64 {
    consumer(addr, &[])
        .fetch_watermarks(topic, 0, TIMEOUT)
        .expect("watermarks")
        .0
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_retention_bounds_the_log_and_consumers_reset_to_the_new_start() {
    let broker = BrokerProcess::start_with(&FAST_RETENTION);
    let topic = "bounded";
    create_topic(
        &broker.addr,
        topic,
        1,
        &[("segment.bytes", "1048576"), ("retention.bytes", "3145728")],
    )
    .await;
    let client = producer(&broker.addr, &[("acks", "all"), ("batch.size", "65536")]);
    let value = vec![b's'; 10_000];
    let sends: Vec<_> = (0..2000)
        .map(|_| enqueue(&client, FutureRecord::<(), _>::to(topic).payload(&value)))
        .collect();
    for s in sends {
        delivered(s).await.expect("send");
    }
    let dir = broker.partition_dir(topic, 0);
    wait_until("retention to trim the log", || dir_size(&dir) < 5 << 20);
    let start = earliest(&broker.addr, topic);
    assert!(start > 1000, "earliest offset advanced to {start}");
    // A consumer asking for offset 0 is out of range and resets to the earliest offset.
    let reset = consumer(&broker.addr, &[("auto.offset.reset", "earliest")]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0))
        .unwrap();
    reset.assign(&tpl).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let first = loop {
        if let Some(m) = reset.poll(Duration::from_millis(200)) {
            break m.expect("message after reset").offset();
        }
        assert!(
            Instant::now() < deadline,
            "the consumer never resumed after the reset"
        );
    };
    assert!(
        first >= start && first < start + 200,
        "consumer resumed at {first}, log starts at {start}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_retention_deletes_segments_whose_records_are_old() {
    let broker = BrokerProcess::start_with(&FAST_RETENTION);
    let topic = "aged";
    create_topic(
        &broker.addr,
        topic,
        1,
        &[("retention.ms", "60000"), ("segment.ms", "100")],
    )
    .await;
    let client = producer(&broker.addr, &[("linger.ms", "0")]);
    let old = rdkafka::util::millis_to_epoch(std::time::SystemTime::now()) - 3_600_000;
    for i in 0..3 {
        delivered(enqueue(
            &client,
            FutureRecord::<(), _>::to(topic)
                .payload(&format!("old{i}"))
                .timestamp(old),
        ))
        .await
        .expect("send");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // A fresh record rolls a new active segment; the three old ones are past retention.ms.
    delivered(enqueue(
        &client,
        FutureRecord::<(), _>::to(topic).payload("new"),
    ))
    .await
    .expect("send");
    wait_until("old segments to be deleted", || {
        earliest(&broker.addr, topic) == 3
    });
    let m = &consume(&broker.addr, topic, 0, 3, 1, TIMEOUT)[0];
    assert_eq!(m.payload(), Some(b"new".as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_earliest_offset_and_survives_a_restart() {
    let mut broker = BrokerProcess::start();
    let topic = "trimmed";
    create_topic(&broker.addr, topic, 2, &[]).await;
    let client = producer(&broker.addr, &[("acks", "all")]);
    for i in 0..100 {
        delivered(enqueue(
            &client,
            FutureRecord::<(), _>::to(topic)
                .partition(i % 2)
                .payload(&format!("{i}")),
        ))
        .await
        .expect("send");
    }
    let admin = admin(&broker.addr);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(30))
        .unwrap();
    tpl.add_partition_offset(topic, 1, Offset::End).unwrap();
    let result = admin
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .expect("DeleteRecords");
    assert_eq!(
        result.find_partition(topic, 0).unwrap().offset(),
        Offset::Offset(30)
    );
    assert_eq!(
        result.find_partition(topic, 1).unwrap().offset(),
        Offset::Offset(50)
    );
    let mut too_far = TopicPartitionList::new();
    too_far
        .add_partition_offset(topic, 0, Offset::Offset(51))
        .unwrap();
    let refused = admin
        .delete_records(&too_far, &AdminOptions::new())
        .await
        .expect("DeleteRecords");
    assert!(
        refused.find_partition(topic, 0).unwrap().error().is_err(),
        "beyond the high watermark"
    );
    broker.kill9();
    broker.restart();
    let c = consumer(&broker.addr, &[]);
    assert_eq!(c.fetch_watermarks(topic, 0, TIMEOUT).unwrap(), (30, 50));
    assert_eq!(c.fetch_watermarks(topic, 1, TIMEOUT).unwrap(), (50, 50));
    let m = &consume(&broker.addr, topic, 0, 30, 1, TIMEOUT)[0];
    assert_eq!((m.offset(), m.payload()), (30, Some(b"60".as_slice())));
}

fn describe_topic_config(addr: &str, topic: &str, key: &str) -> Option<String> {
    topic_config_source(addr, topic, key).0
}

fn incremental(
    addr: &str,
    topic: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, Option<String>) {
    alter(addr, 2, topic, ops, validate_only)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_change_live_and_durably() {
    let mut broker = BrokerProcess::start();
    let topic = "tunable";
    create_topic(&broker.addr, topic, 1, &[("retention.ms", "1000000")]).await;

    // IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on a list config.
    assert_eq!(
        incremental(
            &broker.addr,
            topic,
            &[("max.message.bytes", 0, Some("2000"))],
            false
        )
        .0,
        0
    );
    assert_eq!(
        incremental(&broker.addr, topic, &[("retention.ms", 1, None)], false).0,
        0
    );
    assert_eq!(
        incremental(
            &broker.addr,
            topic,
            &[("cleanup.policy", 2, Some("compact"))],
            false
        )
        .0,
        0
    );
    assert_eq!(
        describe_topic_config(&broker.addr, topic, "cleanup.policy").as_deref(),
        Some("delete,compact")
    );
    assert_eq!(
        incremental(
            &broker.addr,
            topic,
            &[("cleanup.policy", 3, Some("delete"))],
            false
        )
        .0,
        0
    );
    assert_eq!(
        describe_topic_config(&broker.addr, topic, "cleanup.policy").as_deref(),
        Some("compact")
    );
    assert_eq!(
        describe_topic_config(&broker.addr, topic, "retention.ms").as_deref(),
        Some("604800000"),
        "deleted → default"
    );
    // Validation names the problem; validate_only changes nothing.
    let (code, message) = incremental(
        &broker.addr,
        topic,
        &[("segment.bytes", 0, Some("abc"))],
        false,
    );
    assert_eq!(code, kafka_protocol::ResponseError::InvalidConfig.code());
    assert!(message.unwrap().contains("segment.bytes"));
    assert_eq!(
        incremental(
            &broker.addr,
            topic,
            &[("no.such.config", 0, Some("1"))],
            false
        )
        .0,
        kafka_protocol::ResponseError::InvalidConfig.code()
    );
    assert_eq!(
        incremental(
            &broker.addr,
            topic,
            &[("max.message.bytes", 2, Some("5"))],
            false
        )
        .0,
        kafka_protocol::ResponseError::InvalidConfig.code()
    );
    assert_eq!(
        incremental(
            &broker.addr,
            topic,
            &[("segment.ms", 0, Some("5000"))],
            true
        )
        .0,
        0
    );
    assert_eq!(
        describe_topic_config(&broker.addr, topic, "segment.ms").as_deref(),
        Some("604800000")
    );

    // The new max.message.bytes applies at once.
    let client = producer(&broker.addr, &[("retries", "0"), ("linger.ms", "0")]);
    let big = vec![b'x'; 3000];
    let err = delivered(enqueue(
        &client,
        FutureRecord::<(), _>::to(topic).payload(&big),
    ))
    .await
    .expect_err("over the new limit");
    assert_eq!(
        err,
        rdkafka::error::KafkaError::MessageProduction(
            rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge
        )
    );

    // The legacy AlterConfigs (librdkafka) replaces all overrides.
    let admin = admin(&broker.addr);
    let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("retention.ms", "5555");
    let results = admin
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .expect("AlterConfigs");
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert_eq!(
        describe_topic_config(&broker.addr, topic, "retention.ms").as_deref(),
        Some("5555")
    );
    assert_eq!(
        describe_topic_config(&broker.addr, topic, "max.message.bytes").as_deref(),
        Some("1048588"),
        "replaced"
    );

    broker.kill9();
    broker.restart();
    assert_eq!(
        describe_topic_config(&broker.addr, topic, "retention.ms").as_deref(),
        Some("5555"),
        "durable"
    );
}

fn alter_broker(addr: &str, name: &str, ops: &[(&str, i8, Option<&str>)]) -> i16 {
    alter(addr, 4, name, ops, false).0
}

/// (value, source) of a topic config as DescribeConfigs reports it.
fn topic_config_source(addr: &str, topic: &str, key: &str) -> (Option<String>, i8) {
    config_source(addr, 2, topic, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_broker_configs_apply_to_topics_live_and_persist() {
    let mut broker = BrokerProcess::start();
    create_topic(&broker.addr, "inherits", 1, &[]).await;
    // Cluster-wide default, then this broker's own value, which wins.
    assert_eq!(
        alter_broker(&broker.addr, "", &[("log.retention.ms", 0, Some("1234"))]),
        0
    );
    assert_eq!(
        topic_config_source(&broker.addr, "inherits", "retention.ms"),
        (Some("1234".into()), 3)
    );
    assert_eq!(
        alter_broker(&broker.addr, "1", &[("log.retention.ms", 0, Some("999"))]),
        0
    );
    assert_eq!(
        topic_config_source(&broker.addr, "inherits", "retention.ms"),
        (Some("999".into()), 2)
    );
    // Not every config is dynamic, and values are validated.
    assert_eq!(
        alter_broker(&broker.addr, "1", &[("num.partitions", 0, Some("3"))]),
        kafka_protocol::ResponseError::InvalidRequest.code()
    );
    assert_eq!(
        alter_broker(&broker.addr, "1", &[("log.segment.bytes", 0, Some("tiny"))]),
        kafka_protocol::ResponseError::InvalidConfig.code()
    );
    // A dynamic message.max.bytes applies to produce at once.
    assert_eq!(
        alter_broker(&broker.addr, "", &[("message.max.bytes", 0, Some("2000"))]),
        0
    );
    let client = producer(&broker.addr, &[("retries", "0"), ("linger.ms", "0")]);
    let err = delivered(enqueue(
        &client,
        FutureRecord::<(), _>::to("inherits").payload(&vec![b'm'; 3000]),
    ))
    .await
    .expect_err("over the dynamic limit");
    assert_eq!(
        err,
        rdkafka::error::KafkaError::MessageProduction(
            rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge
        )
    );
    // The cluster default resource lists exactly its dynamic values.
    let r = raw_round_trip(
        &broker.addr,
        &DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("")),
        ]),
        4,
    );
    let mut listed: Vec<(String, Option<String>)> = r.results[0]
        .configs
        .iter()
        .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("log.retention.ms".into(), Some("1234".into())),
            ("message.max.bytes".into(), Some("2000".into()))
        ]
    );
    broker.kill9();
    broker.restart();
    assert_eq!(
        topic_config_source(&broker.addr, "inherits", "retention.ms"),
        (Some("999".into()), 2),
        "durable"
    );
    // Deleting the broker's value falls back to the cluster default.
    assert_eq!(
        alter_broker(&broker.addr, "1", &[("log.retention.ms", 1, None)]),
        0
    );
    assert_eq!(
        topic_config_source(&broker.addr, "inherits", "retention.ms"),
        (Some("1234".into()), 3)
    );
}

/// `advertised.listeners` is a per-broker dynamic config in Kafka: changing it moves clients
/// to the new address at once and for good, while a cluster-wide default of it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertised_listeners_changes_per_broker_without_a_restart() {
    let mut broker = BrokerProcess::start();
    let port = broker
        .addr
        .rsplit_once(':')
        .expect("host:port")
        .1
        .to_string();
    let moved = format!("PLAINTEXT://localhost:{port}");
    let advertised_host = |addr: &str| {
        let metadata = consumer(addr, &[])
            .fetch_metadata(None, TIMEOUT)
            .expect("metadata");
        metadata.brokers()[0].host().to_string()
    };
    assert_eq!(advertised_host(&broker.addr), "127.0.0.1");

    let (code, message) = alter(
        &broker.addr,
        4,
        "",
        &[("advertised.listeners", 0, Some(&moved))],
        false,
    );
    assert_eq!(
        code, 40,
        "a cluster-wide default is INVALID_CONFIG: {message:?}"
    );
    let (code, message) = alter(
        &broker.addr,
        4,
        "1",
        &[("advertised.listeners", 0, Some("SSL://localhost:1"))],
        false,
    );
    assert_eq!(
        code, 40,
        "a listener name not in listeners is refused: {message:?}"
    );

    let (code, message) = alter(
        &broker.addr,
        4,
        "1",
        &[("advertised.listeners", 0, Some(&moved))],
        false,
    );
    assert_eq!(code, 0, "{message:?}");
    assert_eq!(advertised_host(&broker.addr), "localhost");
    let described = raw_round_trip(
        &broker.addr,
        &DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("1"))
                .with_configuration_keys(Some(vec![StrBytes::from_static_str(
                    "advertised.listeners",
                )])),
        ]),
        4,
    );
    let entry = &described.results[0].configs[0];
    assert_eq!(entry.value.as_deref(), Some(moved.as_str()));
    assert!(!entry.read_only);
    assert_eq!(entry.config_source, 2, "DYNAMIC_BROKER_CONFIG");

    broker.stop();
    broker.restart();
    assert_eq!(
        advertised_host(&broker.addr),
        "localhost",
        "the change is durable"
    );
}
