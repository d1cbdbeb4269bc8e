//! Produce and fetch through librdkafka against a real broker process.

mod support;

use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use support::*;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_codec_round_trips() {
    let broker = BrokerProcess::start();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        let producer = producer(
            &broker.addr,
            &[("compression.codec", codec), ("acks", "all")],
        );
        let sends: Vec<_> = (0..500)
            .map(|i| {
                let key = format!("key-{i}");
                let value = format!("value-{i}-{}", "x".repeat(i % 50));
                enqueue(
                    &producer,
                    FutureRecord::to(&topic).key(&key).payload(&value),
                )
            })
            .collect();
        for (i, send) in sends.into_iter().enumerate() {
            let d = delivered(send)
                .await
                .unwrap_or_else(|e| panic!("{codec}: send {i}: {e}"));
            assert_eq!((d.partition, d.offset), (0, i as i64), "{codec}");
        }
        let messages = consume(&broker.addr, &topic, 0, 0, 500, TIMEOUT);
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(m.offset(), i as i64, "{codec}");
            assert_eq!(m.key(), Some(format!("key-{i}").as_bytes()), "{codec}");
            assert_eq!(
                payload(m),
                Some(format!("value-{i}-{}", "x".repeat(i % 50)).into_bytes()),
                "{codec}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_with_duplicate_keys_and_null_keys_and_values_survive() {
    let broker = BrokerProcess::start();
    let topic = "headers";
    let producer = producer(&broker.addr, &[]);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "dup",
            value: Some(b"first".as_slice()),
        })
        .insert(Header {
            key: "dup",
            value: Some(b"second".as_slice()),
        })
        .insert(Header {
            key: "bin",
            value: Some([0u8, 255, 1, 0].as_slice()),
        })
        .insert(Header {
            key: "null",
            value: None::<&[u8]>,
        });
    producer
        .send(
            FutureRecord::to(topic)
                .key("k")
                .payload("v")
                .headers(headers),
            TIMEOUT,
        )
        .await
        .expect("send with headers");
    producer
        .send(FutureRecord::<(), ()>::to(topic), TIMEOUT)
        .await
        .expect("send null key and value");
    let messages = consume(&broker.addr, topic, 0, 0, 2, TIMEOUT);
    let got: Vec<(String, Option<Vec<u8>>)> = messages[0]
        .headers()
        .expect("headers present")
        .iter()
        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("dup".to_string(), Some(b"first".to_vec())),
            ("dup".to_string(), Some(b"second".to_vec())),
            ("bin".to_string(), Some(vec![0, 255, 1, 0])),
            ("null".to_string(), None),
        ]
    );
    assert_eq!(messages[1].key(), None);
    assert_eq!(messages[1].payload(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_at_max_message_bytes_is_accepted_and_one_byte_more_is_rejected() {
    let broker = BrokerProcess::start();
    // One uncompressed record of V value bytes, no key, no headers, makes a batch of
    // 61 (batch header) + 2 (record length varint) + 7 (attributes, timestamp delta,
    // offset delta, key length, value length (2 bytes), header count) + V bytes.
    let value_len = 1000;
    let limit = 61 + 2 + 7 + value_len;
    let topic = "max-message-bytes";
    create_topic(
        &broker.addr,
        topic,
        1,
        &[("max.message.bytes", &limit.to_string())],
    )
    .await;
    let producer = producer(&broker.addr, &[("linger.ms", "0"), ("retries", "0")]);
    let fits = vec![b'a'; value_len];
    producer
        .send(FutureRecord::<(), _>::to(topic).payload(&fits), TIMEOUT)
        .await
        .expect("batch at the limit is accepted");
    let too_big = vec![b'b'; value_len + 1];
    let err = producer
        .send(FutureRecord::<(), _>::to(topic).payload(&too_big), TIMEOUT)
        .await
        .expect_err("one byte over");
    assert_eq!(
        err.0,
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    );
    let messages = consume(&broker.addr, topic, 0, 0, 1, TIMEOUT);
    assert_eq!(payload(&messages[0]), Some(fits));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_partitions_each_keep_their_own_order() {
    let broker = BrokerProcess::start();
    let topic = "hundred";
    create_topic(&broker.addr, topic, 100, &[]).await;
    let producer = producer(&broker.addr, &[("acks", "all")]);
    let mut sends = Vec::new();
    for round in 0..5 {
        for p in 0..100 {
            let value = format!("{p}:{round}");
            sends.push(enqueue(
                &producer,
                FutureRecord::<(), _>::to(topic)
                    .partition(p)
                    .payload(&value),
            ));
        }
    }
    for send in sends {
        delivered(send).await.expect("send");
    }
    for p in 0..100 {
        let messages = consume(&broker.addr, topic, p, 0, 5, TIMEOUT);
        let values: Vec<String> = messages
            .iter()
            .map(|m| String::from_utf8(payload(m).unwrap()).unwrap())
            .collect();
        assert_eq!(
            values,
            (0..5).map(|r| format!("{p}:{r}")).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_fetch_wakes_when_data_arrives_not_when_it_times_out() {
    let broker = BrokerProcess::start();
    let topic = "long-poll";
    create_topic(&broker.addr, topic, 1, &[]).await;
    // The consumer parks each fetch for up to 20 s; a wake-up driven by a timer or by the
    // timeout would take that long.
    let consumer = consumer(
        &broker.addr,
        &[("fetch.wait.max.ms", "20000"), ("fetch.min.bytes", "1")],
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    // Let the consumer reach the parked state on the empty partition.
    for _ in 0..10 {
        assert!(consumer.poll(Duration::from_millis(100)).is_none());
    }
    let producer = producer(&broker.addr, &[("linger.ms", "0")]);
    let sent = Instant::now();
    producer
        .send(FutureRecord::<(), _>::to(topic).payload("wake up"), TIMEOUT)
        .await
        .expect("send");
    let message = loop {
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            break m.expect("message");
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "parked fetch was not woken by the append"
        );
    };
    let waited = sent.elapsed();
    assert_eq!(message.payload(), Some(b"wake up".as_slice()));
    assert!(
        waited < Duration::from_secs(5),
        "fetch took {waited:?} to return new data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_finds_offsets_by_timestamp() {
    let broker = BrokerProcess::start();
    let base = 1_700_000_000_000i64;
    // One record per batch, and all records in one lz4 batch the broker must inflate to
    // find the exact record.
    for (topic, extra) in [
        (
            "by-time",
            [("linger.ms", "0"), ("compression.codec", "none")],
        ),
        (
            "by-time-lz4",
            [("linger.ms", "200"), ("compression.codec", "lz4")],
        ),
    ] {
        create_topic(&broker.addr, topic, 1, &[]).await;
        let producer = producer(&broker.addr, &extra);
        let sends: Vec<_> = (0..20i64)
            .map(|i| {
                enqueue(
                    &producer,
                    FutureRecord::<(), _>::to(topic)
                        .payload("x")
                        .timestamp(base + i * 1000),
                )
            })
            .collect();
        for send in sends {
            delivered(send).await.expect("send");
        }
        let consumer = consumer(&broker.addr, &[]);
        for (ts, expected) in [
            (base, 0),
            (base + 5000, 5),
            (base + 5500, 6),
            (base + 19_000, 19),
            (base + 60_000, -1),
        ] {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, 0, Offset::Offset(ts))
                .unwrap();
            let found = consumer
                .offsets_for_times(tpl, TIMEOUT)
                .expect("ListOffsets");
            let offset = found.find_partition(topic, 0).unwrap().offset();
            let want = if expected < 0 {
                Offset::End
            } else {
                Offset::Offset(expected)
            };
            assert_eq!(offset, want, "{topic}: timestamp {ts}");
        }
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, TIMEOUT)
            .expect("watermarks");
        assert_eq!((low, high), (0, 20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_segments_roll_and_reads_cross_them() {
    let broker = BrokerProcess::start();
    let topic = "rolling";
    create_topic(&broker.addr, topic, 1, &[("segment.bytes", "1048576")]).await;
    let producer = producer(&broker.addr, &[("acks", "all"), ("batch.size", "65536")]);
    let value = vec![b'r'; 4000];
    let count = 1500; // ~6 MB
    let sends: Vec<_> = (0..count)
        .map(|i| {
            enqueue(
                &producer,
                FutureRecord::to(topic).key(&format!("{i}")).payload(&value),
            )
        })
        .collect();
    for send in sends {
        delivered(send).await.expect("send");
    }
    let segments = segment_files(&broker.partition_dir(topic, 0));
    assert!(
        segments.len() >= 5,
        "expected several segments, found {segments:?}"
    );
    let messages = consume(&broker.addr, topic, 0, 0, count, TIMEOUT);
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.offset(), i as i64);
        assert_eq!(m.key(), Some(format!("{i}").as_bytes()));
    }
    // Reading from the middle of a later segment works too.
    let tail = consume(&broker.addr, topic, 0, 1234, 10, TIMEOUT);
    assert_eq!(tail[0].offset(), 1234);
}
