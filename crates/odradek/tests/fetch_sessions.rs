//! Incremental fetch sessions (KIP-227), spoken over raw TCP as the Java consumer speaks them.

mod support;

use std::io::Write;
use std::net::TcpStream;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::FutureRecord;
use support::*;

const VERSION: i16 = 12; // topics by name; v13+ by id behaves the same way

fn partition(index: i32, offset: i64) -> FetchPartition {
    FetchPartition::default()
        .with_partition(index)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(1 << 20)
}

fn fetch(
    stream: &mut TcpStream,
    session_id: i32,
    epoch: i32,
    parts: Vec<(&str, Vec<FetchPartition>)>,
    forget: Vec<(&str, Vec<i32>)>,
) -> FetchResponse {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(16 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(
            parts
                .into_iter()
                .map(|(t, p)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.into())))
                        .with_partitions(p)
                })
                .collect(),
        )
        .with_forgotten_topics_data(
            forget
                .into_iter()
                .map(|(t, p)| {
                    ForgottenTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.into())))
                        .with_partitions(p)
                })
                .collect(),
        );
    stream
        .write_all(&request_frame(&request, VERSION, epoch))
        .expect("send fetch");
    let frame = read_frame(stream).expect("fetch response");
    decode_response::<FetchRequest>(frame, VERSION).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_sessions_send_only_what_changed() {
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "s", 3, &[]).await;
    let client = producer(&broker.addr, &[("acks", "all")]);
    for p in 0..3 {
        delivered(enqueue(
            &client,
            FutureRecord::<(), _>::to("s").partition(p).payload("first"),
        ))
        .await
        .expect("send");
    }
    let mut stream = raw_connect(&broker.addr);

    // Epoch 0 opens a session and answers for every partition.
    let full = fetch(
        &mut stream,
        0,
        0,
        vec![("s", vec![partition(0, 0), partition(1, 0), partition(2, 0)])],
        vec![],
    );
    assert_eq!(full.error_code, 0);
    let session = full.session_id;
    assert_ne!(session, 0, "a session was created");
    assert_eq!(carried(&full).len(), 3);
    assert!(carried(&full).iter().all(|(_, _, bytes)| *bytes > 0));

    // Epoch 1 moves every offset past the data: nothing changed, so nothing is carried.
    let quiet = fetch(
        &mut stream,
        session,
        1,
        vec![("s", vec![partition(0, 1), partition(1, 1), partition(2, 1)])],
        vec![],
    );
    assert_eq!((quiet.error_code, quiet.session_id), (0, session));
    assert_eq!(carried(&quiet), vec![], "unchanged partitions are left out");

    // New data in partition 1 only: the next incremental fetch (no partitions listed) carries just it.
    delivered(enqueue(
        &client,
        FutureRecord::<(), _>::to("s")
            .partition(1)
            .payload("second"),
    ))
    .await
    .expect("send");
    let one = fetch(&mut stream, session, 2, vec![], vec![]);
    let got = carried(&one);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0.as_str(), got[0].1), ("s", 1));
    assert!(got[0].2 > 0);

    // Forgetting partition 1 drops it from the session even though it has unread data.
    let forgot = fetch(&mut stream, session, 3, vec![], vec![("s", vec![1])]);
    assert_eq!(carried(&forgot), vec![]);

    // A stale epoch is refused; an unknown session too.
    let stale = fetch(&mut stream, session, 3, vec![], vec![]);
    assert_eq!(
        stale.error_code,
        ResponseError::InvalidFetchSessionEpoch.code()
    );
    let unknown = fetch(&mut stream, session.wrapping_add(1), 1, vec![], vec![]);
    assert_eq!(
        unknown.error_code,
        ResponseError::FetchSessionIdNotFound.code()
    );

    // Epoch -1 closes the session: later incremental fetches on it are refused.
    let closed = fetch(
        &mut stream,
        session,
        -1,
        vec![("s", vec![partition(0, 0)])],
        vec![],
    );
    assert_eq!((closed.error_code, closed.session_id), (0, 0));
    assert_eq!(
        carried(&closed).len(),
        1,
        "a sessionless fetch answers what it asks"
    );
    let gone = fetch(&mut stream, session, 4, vec![], vec![]);
    assert_eq!(
        gone.error_code,
        ResponseError::FetchSessionIdNotFound.code()
    );
    drop(stream);
}

/// A partition that returned records goes to the back of its session, as in Kafka, so with
/// byte limits smaller than a batch (only the first partition with data may exceed them)
/// the partitions take turns rather than the first one being read to its end first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_take_turns_in_a_session() {
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "turns", 2, &[]).await;
    let client = producer(&broker.addr, &[("acks", "all")]);
    for p in 0..2 {
        for i in 0..3 {
            delivered(enqueue(
                &client,
                FutureRecord::<(), _>::to("turns")
                    .partition(p)
                    .payload(&format!("record {i}")),
            ))
            .await
            .expect("send");
        }
    }
    let tiny = |index, offset| partition(index, offset).with_partition_max_bytes(1);
    let with_records = |response: &FetchResponse| -> Vec<i32> {
        carried(response)
            .into_iter()
            .filter(|(_, _, bytes)| *bytes > 0)
            .map(|(_, p, _)| p)
            .collect()
    };
    let mut stream = raw_connect(&broker.addr);
    let full = fetch(
        &mut stream,
        0,
        0,
        vec![("turns", vec![tiny(0, 0), tiny(1, 0)])],
        vec![],
    );
    let session = full.session_id;
    assert_ne!(session, 0);
    assert_eq!(
        with_records(&full),
        [0],
        "only the first partition's batch fits"
    );
    // Partition 0 moves on by the batch it got; partition 1 is now first in the session.
    let second = fetch(
        &mut stream,
        session,
        1,
        vec![("turns", vec![tiny(0, 1)])],
        vec![],
    );
    assert_eq!(with_records(&second), [1], "partition 1's turn");
    let third = fetch(
        &mut stream,
        session,
        2,
        vec![("turns", vec![tiny(1, 1)])],
        vec![],
    );
    assert_eq!(with_records(&third), [0], "partition 0's turn again");
}
