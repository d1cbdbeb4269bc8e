//! Leader epochs on one broker: a restart is a new leader epoch, stamped on what the broker
//! appends, kept in `leader-epoch-checkpoint`, and answered by OffsetForLeaderEpoch, so a
//! consumer can check that what it read of an older epoch is still in the log (KIP-320).

mod support;

use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::OffsetForLeaderEpochRequest;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::FutureRecord;
use support::*;

/// OffsetForLeaderEpoch (v4, as a consumer) for partition 0 of `topic`: error, epoch and
/// end offset.
fn end_of_epoch(addr: &str, topic: &str, current: i32, epoch: i32) -> (i16, i32, i64) {
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(current)
                        .with_leader_epoch(epoch),
                ]),
        ]);
    let response = raw_round_trip(addr, &request, 4);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

/// Partition 0's leader epoch in Metadata v12.
fn leader_epoch(addr: &str, topic: &str) -> i32 {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.into())))),
    ]));
    raw_round_trip(addr, &request, 12).topics[0].partitions[0].leader_epoch
}

/// ListOffsets (v7) of partition 0 at `timestamp` (-1 latest, -2 earliest): the offset and
/// the leader epoch reported with it.
fn list_offset(addr: &str, topic: &str, timestamp: i64) -> (i64, i32) {
    use kafka_protocol::messages::ListOffsetsRequest;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(timestamp),
                ]),
        ]);
    let response = raw_round_trip(addr, &request, 7);
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{response:?}");
    (p.offset, p.leader_epoch)
}

async fn produce(addr: &str, topic: &str, values: &[&str]) {
    let producer = producer(addr, &[("acks", "all")]);
    for value in values {
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(*value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_restart_is_a_new_epoch_and_offset_for_leader_epoch_says_where_each_ended() {
    let mut broker = BrokerProcess::start();
    let topic = unique_topic("epochs");
    create_topic(&broker.addr, &topic, 1, &[]).await;
    assert_eq!(leader_epoch(&broker.addr, &topic), 0);
    produce(&broker.addr, &topic, &["a", "b", "c"]).await;

    // A crash and a restart: the broker registers a new incarnation, which is a new epoch.
    broker.kill9();
    broker.restart();
    assert_eq!(leader_epoch(&broker.addr, &topic), 1);
    produce(&broker.addr, &topic, &["d", "e"]).await;

    assert_eq!(
        end_of_epoch(&broker.addr, &topic, 1, 0),
        (0, 0, 3),
        "epoch 0 ended at 3"
    );
    assert_eq!(
        end_of_epoch(&broker.addr, &topic, 1, 1),
        (0, 1, 5),
        "the latest: the log end"
    );
    assert_eq!(
        end_of_epoch(&broker.addr, &topic, -1, 7),
        (0, -1, -1),
        "unknown epoch"
    );
    assert_eq!(
        end_of_epoch(&broker.addr, &topic, 0, 0).0,
        ResponseError::FencedLeaderEpoch.code(),
        "a client that believes in epoch 0 is fenced"
    );
    // ListOffsets (v4+) reports the epoch that wrote each offset it names.
    assert_eq!(
        list_offset(&broker.addr, &topic, -2),
        (0, 0),
        "earliest: epoch 0"
    );
    assert_eq!(
        list_offset(&broker.addr, &topic, -1),
        (5, 1),
        "latest: epoch 1"
    );
    let checkpoint = broker
        .data_dir
        .join(format!("{topic}-0/leader-epoch-checkpoint"));
    assert_eq!(
        std::fs::read_to_string(&checkpoint).expect("the checkpoint"),
        "0\n2\n0 0\n1 3\n",
        "Kafka's format: version, count, then epoch and start offset"
    );

    // Without its checkpoint (a log from before there was one), the cache is rebuilt from
    // the batches, which carry their epoch.
    broker.stop();
    std::fs::remove_file(&checkpoint).expect("removing the checkpoint");
    broker.restart();
    assert_eq!(end_of_epoch(&broker.addr, &topic, -1, 0), (0, 0, 3));
    // Rebuilt from the batches (epochs 0 and 1), then the epoch this start leads at (the
    // controlled shutdown left it leaderless at 2, registering made it 3) noted at the log
    // end before anything is written in it, as Kafka's makeLeader does.
    assert_eq!(
        std::fs::read_to_string(&checkpoint).expect("the rebuilt checkpoint"),
        "0\n3\n0 0\n1 3\n3 5\n"
    );

    // librdkafka, which validates its position with OffsetForLeaderEpoch after an epoch
    // change, reads all five records in order.
    let read: Vec<Vec<u8>> = consume(&broker.addr, &topic, 0, 0, 5, Duration::from_secs(20))
        .iter()
        .filter_map(payload)
        .collect();
    assert_eq!(read, [b"a", b"b", b"c", b"d", b"e"].map(|v| v.to_vec()));
}
