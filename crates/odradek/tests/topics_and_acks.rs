//! Topic-level behaviours: acks=0, LogAppendTime, segment.ms rolling, flush.messages, topic
//! deletion by id, DescribeCluster.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{DeleteTopicsRequest, DescribeClusterRequest, MetadataRequest};
use rdkafka::Message;
use rdkafka::message::Timestamp;
use rdkafka::producer::FutureRecord;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_writes_arrive_without_responses() {
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "fire-and-forget", 1, &[]).await;
    let client = producer(&broker.addr, &[("acks", "0")]);
    let sends: Vec<_> = (0..200)
        .map(|i| {
            enqueue(
                &client,
                FutureRecord::<(), _>::to("fire-and-forget").payload(&format!("f{i}")),
            )
        })
        .collect();
    for s in sends {
        // librdkafka reports acks=0 deliveries as soon as they are sent, with no offset.
        delivered(s).await.expect("sent");
    }
    let messages = consume(&broker.addr, "fire-and-forget", 0, 0, 200, TIMEOUT);
    let values: Vec<Vec<u8>> = messages.iter().map(|m| payload(m).unwrap()).collect();
    assert_eq!(
        values,
        (0..200)
            .map(|i| format!("f{i}").into_bytes())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_topics_stamp_records_with_the_broker_clock() {
    let broker = BrokerProcess::start();
    create_topic(
        &broker.addr,
        "stamped",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )
    .await;
    let client = producer(&broker.addr, &[]);
    let before = now_ms();
    let d = delivered(enqueue(
        &client,
        FutureRecord::<(), _>::to("stamped")
            .payload("x")
            .timestamp(1_000_000),
    ))
    .await
    .expect("send");
    let after = now_ms();
    // The produce response carries the append time.
    assert!(
        matches!(d.timestamp, Timestamp::LogAppendTime(t) if (before..=after).contains(&t)),
        "{:?}",
        d.timestamp
    );
    let m = &consume(&broker.addr, "stamped", 0, 0, 1, TIMEOUT)[0];
    match m.timestamp() {
        Timestamp::LogAppendTime(t) => assert!(
            (before..=after).contains(&t),
            "{t} not in [{before}, {after}]"
        ),
        other => panic!("expected LogAppendTime, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_ms_rolls_a_segment_by_age() {
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "aging", 1, &[("segment.ms", "200")]).await;
    let client = producer(&broker.addr, &[("linger.ms", "0")]);
    for i in 0..3 {
        delivered(enqueue(
            &client,
            FutureRecord::<(), _>::to("aging").payload(&format!("{i}")),
        ))
        .await
        .expect("send");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let segments = segment_files(&broker.partition_dir("aging", 0));
    assert_eq!(
        segments.len(),
        3,
        "one segment per 200 ms of age: {segments:?}"
    );
    assert_eq!(consume(&broker.addr, "aging", 0, 0, 3, TIMEOUT).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_can_be_described_and_deleted_by_id_and_the_cluster_describes_itself() {
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "by-id", 2, &[]).await;
    let metadata = raw_round_trip(
        &broker.addr,
        &MetadataRequest::default().with_topics(None),
        12,
    );
    let topic = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "by-id"))
        .expect("topic");
    let id = topic.topic_id;
    assert!(!id.is_nil());
    // The Java client's describeTopics by id sends the id with an empty name, not null.
    let by_id = |id| {
        raw_round_trip(
            &broker.addr,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_topic_id(id)
                    .with_name(Some(kafka_protocol::messages::TopicName("".into()))),
            ])),
            12,
        )
        .topics
    };
    let described = by_id(id);
    assert_eq!(described.len(), 1);
    assert_eq!(described[0].error_code, 0);
    assert_eq!(
        described[0].name.as_ref().map(|n| n.to_string()),
        Some("by-id".into())
    );
    assert_eq!(described[0].partitions.len(), 2);
    let deleted = raw_round_trip(
        &broker.addr,
        &DeleteTopicsRequest::default()
            .with_topics(vec![
                DeleteTopicState::default()
                    .with_name(None)
                    .with_topic_id(id),
            ])
            .with_timeout_ms(5000),
        6,
    );
    assert_eq!(deleted.responses[0].error_code, 0);
    assert_eq!(
        deleted.responses[0].name.as_ref().map(|n| n.to_string()),
        Some("by-id".into())
    );
    let again = raw_round_trip(
        &broker.addr,
        &DeleteTopicsRequest::default()
            .with_topics(vec![
                DeleteTopicState::default()
                    .with_name(None)
                    .with_topic_id(id),
            ])
            .with_timeout_ms(5000),
        6,
    );
    assert_eq!(
        again.responses[0].error_code,
        kafka_protocol::ResponseError::UnknownTopicId.code()
    );
    let gone = by_id(id);
    assert_eq!(
        (gone[0].error_code, gone[0].topic_id, gone[0].name.is_none()),
        (
            kafka_protocol::ResponseError::UnknownTopicId.code(),
            id,
            true
        )
    );

    let cluster = raw_round_trip(&broker.addr, &DescribeClusterRequest::default(), 1);
    assert_eq!(cluster.error_code, 0);
    assert_eq!(cluster.brokers.len(), 1);
    assert_eq!(
        format!(
            "{}:{}",
            cluster.brokers[0].host.as_str(),
            cluster.brokers[0].port
        ),
        broker.addr
    );
    assert_eq!(cluster.controller_id.0, cluster.brokers[0].broker_id.0);
    assert_eq!(
        Some(cluster.cluster_id.to_string()),
        metadata.cluster_id.map(|c| c.to_string())
    );
}

/// The codec bits of the first batch's attributes in a partition's first segment.
fn stored_codec(broker: &BrokerProcess, topic: &str) -> u8 {
    let segment = &segment_files(&broker.partition_dir(topic, 0))[0];
    let bytes = std::fs::read(segment).unwrap();
    bytes[22] & 0x07
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_compression_type_makes_the_broker_recompress() {
    use rdkafka::message::{Header, Headers, OwnedHeaders};
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "to-zstd", 1, &[("compression.type", "zstd")]).await;
    create_topic(
        &broker.addr,
        "to-plain",
        1,
        &[("compression.type", "uncompressed")],
    )
    .await;
    create_topic(&broker.addr, "as-sent", 1, &[]).await;
    // librdkafka sends a batch uncompressed when compressing would not shrink it, so every
    // value is compressible even alone: the first stored batch then shows the codec.
    let value = |i: usize| format!("v{i}-{}", "x".repeat(200));
    for (topic, codec) in [
        ("to-zstd", "none"),
        ("to-plain", "lz4"),
        ("as-sent", "gzip"),
    ] {
        let client = producer(&broker.addr, &[("compression.codec", codec)]);
        let sends: Vec<_> = (0..50)
            .map(|i| {
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "h",
                        value: Some(b"1".as_slice()),
                    })
                    .insert(Header {
                        key: "h",
                        value: Some(b"2".as_slice()),
                    });
                enqueue(
                    &client,
                    FutureRecord::to(topic)
                        .key(&format!("k{i}"))
                        .payload(&value(i))
                        .headers(headers),
                )
            })
            .collect();
        for s in sends {
            delivered(s).await.expect("send");
        }
        let messages = consume(&broker.addr, topic, 0, 0, 50, TIMEOUT);
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(m.payload(), Some(value(i).as_bytes()), "{topic}");
            let headers: Vec<_> = m
                .headers()
                .unwrap()
                .iter()
                .map(|h| h.value.unwrap().to_vec())
                .collect();
            assert_eq!(
                headers,
                vec![b"1".to_vec(), b"2".to_vec()],
                "{topic}: duplicate header keys kept"
            );
        }
    }
    assert_eq!(stored_codec(&broker, "to-zstd"), 4, "stored with zstd");
    assert_eq!(stored_codec(&broker, "to-plain"), 0, "stored uncompressed");
    assert_eq!(stored_codec(&broker, "as-sent"), 1, "producer's gzip kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_time_outside_the_allowed_window_is_rejected_with_invalid_timestamp() {
    let broker = BrokerProcess::start();
    create_topic(
        &broker.addr,
        "timely",
        1,
        &[
            ("message.timestamp.before.max.ms", "3600000"),
            ("message.timestamp.after.max.ms", "60000"),
        ],
    )
    .await;
    let client = producer(&broker.addr, &[("retries", "0"), ("linger.ms", "0")]);
    let now = now_ms();
    let invalid = rdkafka::error::KafkaError::MessageProduction(
        rdkafka::types::RDKafkaErrorCode::InvalidTimestamp,
    );
    for ts in [now - 7_200_000, now + 600_000] {
        let err = delivered(enqueue(
            &client,
            FutureRecord::<(), _>::to("timely")
                .payload("x")
                .timestamp(ts),
        ))
        .await
        .expect_err("outside the window");
        assert_eq!(err, invalid, "timestamp {ts}");
    }
    let ok = delivered(enqueue(
        &client,
        FutureRecord::<(), _>::to("timely")
            .payload("x")
            .timestamp(now - 1000),
    ))
    .await;
    assert_eq!(ok.expect("inside the window").offset, 0);
}
