//! Topic administration through librdkafka's AdminClient and metadata requests against a real
//! broker process, plus how the binary takes its configuration.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{
    AdminOptions, ConfigResource, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication, TopicResult,
};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Awaits an admin future, failing the test if it has not finished within [`TIMEOUT`].
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {TIMEOUT:?}"))
}

fn options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(TIMEOUT))
}

async fn create_topics(
    addr: &str,
    topics: &[NewTopic<'_>],
    opts: &AdminOptions,
) -> Vec<TopicResult> {
    within("CreateTopics", admin(addr).create_topics(topics, opts))
        .await
        .expect("CreateTopics request")
}

/// Creates one topic and returns its per-topic outcome.
async fn create_one(addr: &str, topic: NewTopic<'_>) -> TopicResult {
    let mut results = create_topics(addr, &[topic], &options()).await;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

async fn delete_one(addr: &str, topic: &str) -> TopicResult {
    let mut results = within(
        "DeleteTopics",
        admin(addr).delete_topics(&[topic], &options()),
    )
    .await
    .expect("DeleteTopics request");
    assert_eq!(results.len(), 1);
    results.remove(0)
}

async fn grow_to(addr: &str, topic: &str, count: usize) -> TopicResult {
    let mut results = within(
        "CreatePartitions",
        admin(addr).create_partitions(&[NewPartitions::new(topic, count)], &options()),
    )
    .await
    .expect("CreatePartitions request");
    assert_eq!(results.len(), 1);
    results.remove(0)
}

async fn describe(addr: &str, resource: ResourceSpecifier<'_>) -> ConfigResource {
    let mut results = within(
        "DescribeConfigs",
        admin(addr).describe_configs(&[resource], &options()),
    )
    .await
    .expect("DescribeConfigs request");
    assert_eq!(results.len(), 1);
    results
        .remove(0)
        .unwrap_or_else(|e| panic!("describing {resource:?}: {e}"))
}

fn topic(name: &str, partitions: i32) -> NewTopic<'_> {
    NewTopic::new(name, partitions, TopicReplication::Fixed(1))
}

/// The per-topic error of a refused admin operation.
fn refusal(result: TopicResult, name: &str) -> RDKafkaErrorCode {
    match result {
        Ok(t) => panic!("{name:?}: expected a refusal, but {t:?} succeeded"),
        Err((t, code)) => {
            assert_eq!(t, name);
            code
        }
    }
}

/// Every user topic with its partition count. A request for all topics creates nothing, and
/// the client asking has no consumer group. Internal topics (`__consumer_offsets`, made when
/// any client with a group.id looks for its coordinator) are left out.
fn topics(addr: &str) -> BTreeMap<String, usize> {
    let metadata = admin(addr)
        .inner()
        .fetch_metadata(None, TIMEOUT)
        .expect("Metadata for all topics");
    metadata
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__"))
        .map(|t| {
            assert!(t.error().is_none(), "{}: {:?}", t.name(), t.error());
            (t.name().to_string(), t.partitions().len())
        })
        .collect()
}

/// Asks for one topic's metadata with a producer-type client, which lets the broker
/// auto-create the topic, as a producer's first send does. Returns the topic's error or its
/// partition count.
fn producer_metadata(addr: &str, name: &str) -> Result<usize, RDKafkaErrorCode> {
    let producer = producer(addr, &[]);
    let metadata = producer
        .client()
        .fetch_metadata(Some(name), TIMEOUT)
        .expect("Metadata for one topic");
    let [t] = metadata.topics() else {
        panic!("asked for one topic, got {}", metadata.topics().len());
    };
    assert_eq!(t.name(), name);
    match t.error() {
        Some(e) => Err(e.into()),
        None => Ok(t.partitions().len()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_creates_and_refuses_what_kafka_refuses() {
    let mut broker = BrokerProcess::start();
    let addr = broker.addr.clone();

    assert_eq!(
        create_one(&addr, topic("orders", 3)).await,
        Ok("orders".to_string())
    );
    assert_eq!(topics(&addr).get("orders"), Some(&3));

    let again = create_one(&addr, topic("orders", 5)).await;
    assert_eq!(
        refusal(again, "orders"),
        RDKafkaErrorCode::TopicAlreadyExists
    );
    assert_eq!(topics(&addr).get("orders"), Some(&3), "the original stands");

    let too_long = "x".repeat(250);
    for name in ["bad name", "..", ".", "a/b", too_long.as_str()] {
        let result = create_one(&addr, topic(name, 1)).await;
        assert_eq!(
            refusal(result, name),
            RDKafkaErrorCode::InvalidTopic,
            "{name:?}"
        );
    }
    // The longest legal name is 249 characters.
    let longest = "y".repeat(249);
    assert_eq!(
        create_one(&addr, topic(&longest, 1)).await,
        Ok(longest.clone())
    );

    let result = create_one(
        &addr,
        NewTopic::new("three-replicas", 1, TopicReplication::Fixed(3)),
    )
    .await;
    assert_eq!(
        refusal(result, "three-replicas"),
        RDKafkaErrorCode::InvalidReplicationFactor
    );

    let result = create_one(&addr, topic("no-partitions", 0)).await;
    assert_eq!(
        refusal(result, "no-partitions"),
        RDKafkaErrorCode::InvalidPartitions
    );

    for (key, value) in [
        ("cleanup.policy", "bogus"),
        ("segment.bytes", "abc"),
        ("retention.ms", "-2"),
        ("no.such.config", "1"),
    ] {
        let result = create_one(&addr, topic("bad-config", 1).set(key, value)).await;
        assert_eq!(
            refusal(result, "bad-config"),
            RDKafkaErrorCode::InvalidConfig,
            "{key}={value}"
        );
    }

    // Nothing refused was created, in part or whole.
    let names: Vec<String> = topics(&addr).into_keys().collect();
    assert_eq!(names, vec!["orders".to_string(), longest]);
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_only_checks_everything_but_creates_nothing() {
    let mut broker = BrokerProcess::start();
    let addr = broker.addr.clone();
    let validate = options().validate_only(true);

    let results = create_topics(&addr, &[topic("dry-run", 4)], &validate).await;
    assert_eq!(results, vec![Ok("dry-run".to_string())]);
    let results = create_topics(
        &addr,
        &[topic("dry-run-bad", 1).set("cleanup.policy", "bogus")],
        &validate,
    )
    .await;
    assert_eq!(
        results,
        vec![Err((
            "dry-run-bad".to_string(),
            RDKafkaErrorCode::InvalidConfig
        ))]
    );
    assert!(topics(&addr).is_empty(), "validate_only created a topic");

    // The name is still free, and a real create makes what the dry run described.
    assert_eq!(
        create_one(&addr, topic("dry-run", 4)).await,
        Ok("dry-run".to_string())
    );
    assert_eq!(topics(&addr).get("dry-run"), Some(&4));
    // Validating an existing name reports the conflict.
    let results = create_topics(&addr, &[topic("dry-run", 4)], &validate).await;
    assert_eq!(
        results,
        vec![Err((
            "dry-run".to_string(),
            RDKafkaErrorCode::TopicAlreadyExists
        ))]
    );
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_disappears_and_its_name_comes_back_empty() {
    let mut broker = BrokerProcess::start();
    let addr = broker.addr.clone();
    let name = "short-lived";
    assert_eq!(
        create_one(&addr, topic(name, 1)).await,
        Ok(name.to_string())
    );
    {
        let producer = producer(&addr, &[("linger.ms", "0")]);
        for i in 0..3i64 {
            let delivery = producer
                .send(
                    FutureRecord::<(), _>::to(name)
                        .partition(0)
                        .payload(&format!("old-{i}")),
                    TIMEOUT,
                )
                .await
                .expect("send");
            assert_eq!((delivery.partition, delivery.offset), (0, i));
        }
        // Dropped here: a live producer that knows the topic could auto-create it again
        // when it refreshes its metadata after the delete.
    }
    let watermarks = consumer(&addr, &[])
        .fetch_watermarks(name, 0, TIMEOUT)
        .expect("watermarks before the delete");
    assert_eq!(watermarks, (0, 3));

    assert_eq!(delete_one(&addr, name).await, Ok(name.to_string()));
    assert!(
        !topics(&addr).contains_key(name),
        "deleted topic still in metadata"
    );

    assert_eq!(
        create_one(&addr, topic(name, 1)).await,
        Ok(name.to_string())
    );
    let watermarks = consumer(&addr, &[])
        .fetch_watermarks(name, 0, TIMEOUT)
        .expect("watermarks after re-creating");
    assert_eq!(watermarks, (0, 0), "the re-created topic has old data");
    // New data starts again at offset 0.
    let delivery = producer(&addr, &[("linger.ms", "0")])
        .send(
            FutureRecord::<(), _>::to(name).partition(0).payload("new"),
            TIMEOUT,
        )
        .await
        .expect("send to the re-created topic");
    assert_eq!(delivery.offset, 0);
    let messages = consume(&addr, name, 0, 0, 1, TIMEOUT);
    assert_eq!(payload(&messages[0]), Some(b"new".to_vec()));

    // The delete and the re-create are durable: after a restart the topic holds only the
    // new record.
    broker.stop();
    broker.restart();
    assert_eq!(topics(&broker.addr).get(name), Some(&1));
    let watermarks = consumer(&broker.addr, &[])
        .fetch_watermarks(name, 0, TIMEOUT)
        .expect("watermarks after a restart");
    assert_eq!(watermarks, (0, 1));
    let messages = consume(&broker.addr, name, 0, 0, 1, TIMEOUT);
    assert_eq!(payload(&messages[0]), Some(b"new".to_vec()));
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_unknown_topic_is_unknown_topic_or_partition() {
    let mut broker = BrokerProcess::start();
    let result = delete_one(&broker.addr, "never-existed").await;
    assert_eq!(
        refusal(result, "never-existed"),
        RDKafkaErrorCode::UnknownTopicOrPartition
    );
    assert!(topics(&broker.addr).is_empty());
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_topic_enable_false_refuses_deletes() {
    let mut broker = BrokerProcess::start_with(&["--set", "delete.topic.enable=false"]);
    let addr = broker.addr.clone();
    assert_eq!(create_one(&addr, topic("kept", 2)).await, Ok("kept".into()));
    let result = delete_one(&addr, "kept").await;
    assert_eq!(
        refusal(result, "kept"),
        RDKafkaErrorCode::TopicDeletionDisabled
    );
    assert_eq!(topics(&addr).get("kept"), Some(&2));
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_partitions_grows_a_topic_and_refuses_to_shrink_it() {
    let mut broker = BrokerProcess::start();
    let addr = broker.addr.clone();
    let name = "growing";
    assert_eq!(
        create_one(&addr, topic(name, 1)).await,
        Ok(name.to_string())
    );

    // validate_only checks the request and changes nothing.
    let results = within(
        "CreatePartitions",
        admin(&addr).create_partitions(
            &[NewPartitions::new(name, 4)],
            &options().validate_only(true),
        ),
    )
    .await
    .expect("CreatePartitions request");
    assert_eq!(results, vec![Ok(name.to_string())]);
    assert_eq!(topics(&addr).get(name), Some(&1));

    assert_eq!(grow_to(&addr, name, 4).await, Ok(name.to_string()));
    assert_eq!(topics(&addr).get(name), Some(&4));
    let delivery = producer(&addr, &[("linger.ms", "0")])
        .send(
            FutureRecord::<(), _>::to(name)
                .partition(3)
                .payload("in the new partition"),
            TIMEOUT,
        )
        .await
        .expect("send to partition 3");
    assert_eq!((delivery.partition, delivery.offset), (3, 0));
    let messages = consume(&addr, name, 3, 0, 1, TIMEOUT);
    assert_eq!(
        payload(&messages[0]),
        Some(b"in the new partition".to_vec())
    );

    for count in [2, 4] {
        let result = grow_to(&addr, name, count).await;
        assert_eq!(
            refusal(result, name),
            RDKafkaErrorCode::InvalidPartitions,
            "to {count}"
        );
    }
    let result = grow_to(&addr, "no-such-topic", 2).await;
    assert_eq!(
        refusal(result, "no-such-topic"),
        RDKafkaErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        topics(&addr),
        BTreeMap::from([(name.to_string(), 4)]),
        "refused requests changed nothing"
    );

    // The new partitions survive a restart, data included.
    broker.stop();
    broker.restart();
    assert_eq!(topics(&broker.addr).get(name), Some(&4));
    let messages = consume(&broker.addr, name, 3, 0, 1, TIMEOUT);
    assert_eq!(
        payload(&messages[0]),
        Some(b"in the new partition".to_vec())
    );
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_configs_reports_topic_overrides_and_defaults() {
    let mut broker = BrokerProcess::start();
    let addr = broker.addr.clone();
    let name = "configured";
    let created = create_one(&addr, topic(name, 1).set("retention.ms", "1234")).await;
    assert_eq!(created, Ok(name.to_string()));

    let resource = describe(&addr, ResourceSpecifier::Topic(name)).await;
    let retention = resource.get("retention.ms").expect("retention.ms listed");
    assert_eq!(retention.value.as_deref(), Some("1234"));
    assert_eq!(retention.source, ConfigSource::DynamicTopic);
    assert!(!retention.is_default);
    assert!(!retention.is_sensitive);
    let segment = resource.get("segment.bytes").expect("segment.bytes listed");
    assert_eq!(segment.value.as_deref(), Some("1073741824"));
    assert_eq!(segment.source, ConfigSource::Default);
    assert!(segment.is_default);
    let cleanup = resource
        .get("cleanup.policy")
        .expect("cleanup.policy listed");
    assert_eq!(cleanup.value.as_deref(), Some("delete"));
    assert_eq!(cleanup.source, ConfigSource::Default);

    let node = describe(&addr, ResourceSpecifier::Broker(1)).await;
    let partitions = node.get("num.partitions").expect("num.partitions listed");
    assert_eq!(partitions.value.as_deref(), Some("1"));
    assert_eq!(partitions.source, ConfigSource::Default);

    // Topic overrides are durable.
    broker.stop();
    broker.restart();
    let resource = describe(&broker.addr, ResourceSpecifier::Topic(name)).await;
    let retention = resource.get("retention.ms").expect("retention.ms listed");
    assert_eq!(retention.value.as_deref(), Some("1234"));
    assert_eq!(retention.source, ConfigSource::DynamicTopic);
    broker.stop();
}

/// Kafka 4 removed these, but clients and tools written for 3.x (librdkafka's own tests among
/// them) still set them: accepted with no effect, shown as Kafka 3.9 shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_kafka_4_removed_are_accepted_as_no_ops() {
    let broker = BrokerProcess::start();
    let addr = broker.addr.clone();
    let name = "three-x-tool";
    let created = create_one(
        &addr,
        topic(name, 1)
            .set("message.format.version", "2.8")
            .set("message.downconversion.enable", "false"),
    )
    .await;
    assert_eq!(created, Ok(name.to_string()));
    let resource = describe(&addr, ResourceSpecifier::Topic(name)).await;
    let format = resource
        .get("message.format.version")
        .expect("message.format.version listed");
    assert_eq!(format.value.as_deref(), Some("2.8"));
    assert_eq!(format.source, ConfigSource::DynamicTopic);
    let difference = resource
        .get("message.timestamp.difference.max.ms")
        .expect("message.timestamp.difference.max.ms listed");
    assert_eq!(difference.value.as_deref(), Some("9223372036854775807"));
    assert_eq!(difference.source, ConfigSource::Default);
    assert!(
        broker
            .log()
            .contains("accepting topic configs that Kafka 4 removed"),
        "one warning names them:\n{}",
        broker.log()
    );
    // They change nothing: a record far in the past is still accepted (before.max.ms rules).
    let client = producer(&addr, &[]);
    let old = rdkafka::producer::FutureRecord::<(), _>::to(name)
        .payload("old")
        .timestamp(1_000);
    delivered(enqueue(&client, old)).await.expect("produce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_configs_shows_static_broker_settings_as_the_topic_fallback() {
    let mut broker = BrokerProcess::start_with(&["--set", "log.segment.bytes=2097152"]);
    let addr = broker.addr.clone();
    assert_eq!(
        create_one(&addr, topic("inherits", 1)).await,
        Ok("inherits".into())
    );

    let resource = describe(&addr, ResourceSpecifier::Topic("inherits")).await;
    let segment = resource.get("segment.bytes").expect("segment.bytes listed");
    assert_eq!(segment.value.as_deref(), Some("2097152"));
    assert_eq!(segment.source, ConfigSource::StaticBroker);
    assert!(!segment.is_default);

    let node = describe(&addr, ResourceSpecifier::Broker(1)).await;
    let segment = node
        .get("log.segment.bytes")
        .expect("log.segment.bytes listed");
    assert_eq!(segment.value.as_deref(), Some("2097152"));
    assert_eq!(segment.source, ConfigSource::StaticBroker);
    let partitions = node.get("num.partitions").expect("num.partitions listed");
    assert_eq!(partitions.value.as_deref(), Some("1"));
    assert_eq!(partitions.source, ConfigSource::Default);
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_configs_of_an_unknown_topic_is_an_error() {
    let mut broker = BrokerProcess::start();
    let addr = broker.addr.clone();
    // rdkafka 0.39 drops the per-resource error code; what reaches the application is a
    // resource without a single config entry.
    let resource = describe(&addr, ResourceSpecifier::Topic("missing")).await;
    assert!(
        resource.entries.is_empty(),
        "configs for a topic that does not exist: {:?}",
        resource.entries
    );
    // On the wire the broker says why: UNKNOWN_TOPIC_OR_PARTITION, as Kafka does.
    for version in [1, 4] {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("missing")),
        ]);
        let response = raw_round_trip(&addr, &request, version);
        let [result] = response.results.as_slice() else {
            panic!("one resource asked, {} answered", response.results.len());
        };
        assert_eq!(result.error_code, 3, "v{version}");
        assert!(result.configs.is_empty(), "v{version}");
    }
    assert!(topics(&addr).is_empty(), "describing created the topic");
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_auto_creates_missing_topics_with_num_partitions() {
    let mut broker = BrokerProcess::start_with(&["--set", "num.partitions=3"]);
    let addr = broker.addr.clone();
    assert_eq!(producer_metadata(&addr, "auto-made"), Ok(3));
    assert_eq!(topics(&addr).get("auto-made"), Some(&3));

    // A consumer (allow.auto.create.topics=false by default) tells the broker not to create.
    let metadata = consumer(&addr, &[])
        .fetch_metadata(Some("only-looked-at"), TIMEOUT)
        .expect("Metadata");
    let error = metadata.topics()[0].error().map(RDKafkaErrorCode::from);
    assert_eq!(error, Some(RDKafkaErrorCode::UnknownTopicOrPartition));
    assert!(!topics(&addr).contains_key("only-looked-at"));

    // A name Kafka would never accept is refused, not created.
    assert_eq!(
        producer_metadata(&addr, "bad name"),
        Err(RDKafkaErrorCode::InvalidTopic)
    );
    assert!(!topics(&addr).contains_key("bad name"));

    // A producer's first send auto-creates too, and every partition takes data.
    let producer = producer(&addr, &[("linger.ms", "0")]);
    let delivery = producer
        .send(
            FutureRecord::<(), _>::to("made-by-send")
                .partition(2)
                .payload("x"),
            TIMEOUT,
        )
        .await
        .expect("send to an auto-created topic");
    assert_eq!((delivery.partition, delivery.offset), (2, 0));
    assert_eq!(topics(&addr).get("made-by-send"), Some(&3));
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auto_create_disabled_missing_topics_stay_missing() {
    let mut broker = BrokerProcess::start_with(&["--set", "auto.create.topics.enable=false"]);
    let addr = broker.addr.clone();
    assert_eq!(
        producer_metadata(&addr, "absent"),
        Err(RDKafkaErrorCode::UnknownTopicOrPartition)
    );
    // Without waiting out the propagation grace period, librdkafka fails the send as soon as
    // the broker says the topic does not exist.
    let producer = producer(
        &addr,
        &[
            ("linger.ms", "0"),
            ("topic.metadata.propagation.max.ms", "0"),
        ],
    );
    let (error, _) = producer
        .send(FutureRecord::<(), _>::to("absent").payload("x"), TIMEOUT)
        .await
        .expect_err("producing to a missing topic");
    assert!(
        matches!(
            error,
            KafkaError::MessageProduction(
                RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition
            )
        ),
        "{error:?}"
    );
    assert!(topics(&addr).is_empty(), "a topic was created");
    broker.stop();
}

/// Runs the binary to completion (bounded) and returns its exit status and stderr.
fn run_odradek(args: &[&std::ffi::OsStr]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning odradek");
    let mut stderr = child.stderr.take().expect("stderr pipe");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for odradek") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "odradek {args:?} still running after 20 s:\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().expect("stderr reader"))
}

#[test]
fn an_unknown_config_key_stops_the_broker_from_starting_and_is_named() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let file = tmp.path().join("server.properties");
    std::fs::write(&file, "num.partitions=2\nno.such.key=1\n").expect("writing the config");
    let common = [
        "broker".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ];
    let by_flag = [&common[..], &["--set".as_ref(), "no.such.key=1".as_ref()]].concat();
    let by_file = [&common[..], &["--config".as_ref(), file.as_os_str()]].concat();
    let bad_value = [
        &common[..],
        &["--set".as_ref(), "num.partitions=zero".as_ref()],
    ]
    .concat();
    for (args, named) in [
        (by_flag, "no.such.key"),
        (by_file, "no.such.key"),
        (bad_value, "num.partitions"),
    ] {
        let (status, stderr) = run_odradek(&args);
        assert!(!status.success(), "{args:?} started: {status}\n{stderr}");
        assert!(
            stderr.contains(named),
            "{args:?}: stderr does not name {named}:\n{stderr}"
        );
        assert!(
            !stderr.contains("odradek broker ready"),
            "{args:?}: became ready:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_flags_win_over_the_config_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("server.properties");
    std::fs::write(&file, "# from the file\nnum.partitions=2\n").expect("writing the config");
    let file = file.to_str().expect("utf-8 path");

    let mut from_file = BrokerProcess::start_with(&["--config", file]);
    assert_eq!(producer_metadata(&from_file.addr, "auto"), Ok(2));
    from_file.stop();

    let mut overridden =
        BrokerProcess::start_with(&["--config", file, "--set", "num.partitions=5"]);
    assert_eq!(producer_metadata(&overridden.addr, "auto"), Ok(5));
    let node = describe(&overridden.addr, ResourceSpecifier::Broker(1)).await;
    let partitions = node.get("num.partitions").expect("num.partitions listed");
    assert_eq!(partitions.value.as_deref(), Some("5"));
    assert_eq!(partitions.source, ConfigSource::StaticBroker);
    overridden.stop();
}

/// Bytes of a partition's segment files on disk.
fn segment_bytes_on_disk(broker: &BrokerProcess, topic: &str, partition: i32) -> i64 {
    files_bytes(&segment_files(&broker.partition_dir(topic, partition))) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_log_dirs_reports_each_partitions_size_on_disk() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::{DescribeLogDirsRequest, TopicName};

    let broker = BrokerProcess::start();
    create_topics(
        &broker.addr,
        &[topic("dirs-a", 3), topic("dirs-b", 1)],
        &options(),
    )
    .await;
    let producer = producer(&broker.addr, &[]);
    // Different amounts per partition, so a size reported for the wrong partition shows.
    for (t, p, n) in [("dirs-a", 0, 10), ("dirs-a", 2, 40), ("dirs-b", 0, 25)] {
        for i in 0..n {
            let value = format!("{t}/{p}/{i}").repeat(20);
            within(
                "produce",
                producer.send(
                    FutureRecord::<(), _>::to(t).partition(p).payload(&value),
                    TIMEOUT,
                ),
            )
            .await
            .expect("delivered");
        }
    }
    let expected = |t: &str, p: i32| segment_bytes_on_disk(&broker, t, p);
    let sizes = |response: &kafka_protocol::messages::DescribeLogDirsResponse| {
        assert_eq!(response.error_code, 0);
        assert_eq!(response.results.len(), 1, "one log directory");
        let dir = &response.results[0];
        assert_eq!(dir.error_code, 0);
        assert_eq!(
            std::path::Path::new(dir.log_dir.as_str()),
            std::path::absolute(&broker.data_dir).unwrap()
        );
        dir.topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    assert_eq!((p.offset_lag, p.is_future_key), (0, false));
                    ((t.name.to_string(), p.partition_index), p.partition_size)
                })
            })
            .collect::<BTreeMap<(String, i32), i64>>()
    };

    // A null topic list asks for every partition; test at the oldest and newest versions.
    for version in [1, 4] {
        let all = raw_round_trip(
            &broker.addr,
            &DescribeLogDirsRequest::default().with_topics(None),
            version,
        );
        let reported = sizes(&all);
        for (t, p) in [("dirs-a", 0), ("dirs-a", 1), ("dirs-a", 2), ("dirs-b", 0)] {
            assert_eq!(
                reported.get(&(t.to_string(), p)),
                Some(&expected(t, p)),
                "v{version}: {t}-{p} in {reported:?}"
            );
        }
        assert!(expected("dirs-a", 2) > expected("dirs-a", 0));
        assert_eq!(expected("dirs-a", 1), 0);
        let dir = &all.results[0];
        if version >= 4 {
            assert!(dir.total_bytes > 0 && dir.usable_bytes > 0, "{dir:?}");
            assert!(dir.usable_bytes <= dir.total_bytes, "{dir:?}");
        }
    }

    // An empty list asks for nothing.
    let none = raw_round_trip(
        &broker.addr,
        &DescribeLogDirsRequest::default().with_topics(Some(Vec::new())),
        4,
    );
    assert!(sizes(&none).is_empty());

    // Only what was asked for: unknown topics and partitions are left out.
    let wanted = |name: &str, partitions: Vec<i32>| {
        DescribableLogDirTopic::default()
            .with_topic(TopicName(StrBytes::from_string(name.into())))
            .with_partitions(partitions)
    };
    let some = raw_round_trip(
        &broker.addr,
        &DescribeLogDirsRequest::default().with_topics(Some(vec![
            wanted("dirs-a", vec![2, 7]),
            wanted("no-such-topic", vec![0]),
            wanted("dirs-a", vec![0]),
        ])),
        4,
    );
    let reported = sizes(&some);
    assert_eq!(
        reported.keys().cloned().collect::<Vec<_>>(),
        [("dirs-a".to_string(), 0), ("dirs-a".to_string(), 2)]
    );
    assert_eq!(reported[&("dirs-a".to_string(), 2)], expected("dirs-a", 2));
}

/// kafka-reassign-partitions.sh --reassignment-json-file with "log_dirs" sends this: a
/// one-directory broker answers it as Kafka does instead of closing the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_replica_log_dirs_is_answered_as_a_one_directory_broker() {
    use kafka_protocol::messages::alter_replica_log_dirs_request::{
        AlterReplicaLogDir, AlterReplicaLogDirTopic,
    };
    use kafka_protocol::messages::{AlterReplicaLogDirsRequest, TopicName};
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "moved", 1, &[]).await;
    let ours = std::path::absolute(&broker.data_dir).expect("absolute data dir");
    let topic = |name: &str, partitions: Vec<i32>| {
        AlterReplicaLogDirTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.into())))
            .with_partitions(partitions)
    };
    let dir = |path: String, topics| {
        AlterReplicaLogDir::default()
            .with_path(StrBytes::from_string(path))
            .with_topics(topics)
    };
    let request = AlterReplicaLogDirsRequest::default().with_dirs(vec![
        dir(
            ours.display().to_string(),
            vec![topic("moved", vec![0, 7]), topic("no-such-topic", vec![0])],
        ),
        dir("/elsewhere".into(), vec![topic("moved", vec![0])]),
    ]);
    for version in 1..=2 {
        let response = raw_round_trip(&broker.addr, &request, version);
        let mut codes: Vec<(String, i32, i16)> = response
            .results
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.topic_name.to_string(), p.partition_index, p.error_code))
            })
            .collect();
        codes.sort();
        // NONE, LOG_DIR_NOT_FOUND (57), REPLICA_NOT_AVAILABLE (9).
        assert_eq!(
            codes,
            [
                ("moved".to_string(), 0, 0),
                ("moved".to_string(), 0, 57),
                ("moved".to_string(), 7, 9),
                ("no-such-topic".to_string(), 0, 9),
            ],
            "v{version}"
        );
    }
}

/// `broker.rack` reaches clients: Metadata from v1 (v0 has no rack field and must still
/// encode), as rack-aware clients and tools read it.
#[test]
fn metadata_reports_broker_rack_from_v1() {
    use kafka_protocol::messages::MetadataRequest;
    let broker = BrokerProcess::start_with(&["--set", "broker.rack=rack-7"]);
    for version in [0, 1, 12] {
        let request = MetadataRequest::default().with_topics(Some(Vec::new()));
        let response = raw_round_trip(&broker.addr, &request, version);
        let rack = response.brokers[0].rack.as_ref().map(|r| r.to_string());
        let expected = (version >= 1).then(|| "rack-7".to_string());
        assert_eq!(rack, expected, "v{version}");
    }
}

/// DescribeTopicPartitions (v0) for `topics`, at most `limit` partitions, from `cursor`:
/// each topic's (name, error, partitions as (index, leader, epoch, isr)), and the next
/// cursor.
#[allow(clippy::type_complexity)]
fn describe_topic_partitions(
    addr: &str,
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> (
    Vec<(String, i16, Vec<(i32, i32, i32, Vec<i32>)>)>,
    Option<(String, i32)>,
) {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    use kafka_protocol::messages::{DescribeTopicPartitionsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let name = |n: &str| TopicName(StrBytes::from_string(n.into()));
    let request = DescribeTopicPartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| TopicRequest::default().with_name(name(t)))
                .collect(),
        )
        .with_response_partition_limit(limit)
        .with_cursor(cursor.map(|(t, p)| {
            Cursor::default()
                .with_topic_name(name(t))
                .with_partition_index(p)
        }));
    let response = raw_round_trip(addr, &request, 0);
    let topics = response
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    (
                        p.partition_index,
                        p.leader_id.0,
                        p.leader_epoch,
                        p.isr_nodes.iter().map(|b| b.0).collect(),
                    )
                })
                .collect();
            let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            (name, t.error_code, partitions)
        })
        .collect();
    let next = response
        .next_cursor
        .map(|c| (c.topic_name.to_string(), c.partition_index));
    (topics, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_topic_partitions_pages_through_topics_in_name_order() {
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "dtp-b", 2, &[]).await;
    create_topic(&broker.addr, "dtp-a", 3, &[]).await;
    let led = |indexes: std::ops::Range<i32>| -> Vec<(i32, i32, i32, Vec<i32>)> {
        indexes.map(|p| (p, 1, 0, vec![1])).collect()
    };
    // Sorted by name whatever the order asked; four partitions, then a cursor.
    let (topics, next) =
        describe_topic_partitions(&broker.addr, &["dtp-b", "dtp-a", "dtp-missing"], 4, None);
    assert_eq!(
        topics,
        [
            ("dtp-a".to_string(), 0, led(0..3)),
            ("dtp-b".to_string(), 0, led(0..1)),
        ]
    );
    assert_eq!(next, Some(("dtp-b".to_string(), 1)));
    // The rest, from the cursor; a topic that does not exist says so.
    let (topics, next) = describe_topic_partitions(
        &broker.addr,
        &["dtp-b", "dtp-a", "dtp-missing"],
        4,
        Some(("dtp-b", 1)),
    );
    let unknown = kafka_protocol::ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(
        topics,
        [
            ("dtp-b".to_string(), 0, led(1..2)),
            ("dtp-missing".to_string(), unknown, vec![]),
        ]
    );
    assert_eq!(next, None);
    // No topics named: all of them, internal ones included when they exist.
    let (topics, _) = describe_topic_partitions(&broker.addr, &[], 100, None);
    let names: Vec<&str> = topics.iter().map(|(n, _, _)| n.as_str()).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    assert!(
        names.contains(&"dtp-a") && names.contains(&"dtp-b"),
        "{names:?}"
    );
    // A cursor on a topic that was not asked for is an invalid request, as in Kafka.
    let (topics, _) = describe_topic_partitions(&broker.addr, &["dtp-a"], 10, Some(("dtp-b", 0)));
    let invalid = kafka_protocol::ResponseError::InvalidRequest.code();
    assert_eq!(topics, [("dtp-a".to_string(), invalid, vec![])]);
}
