//! The metadata quorum as Kafka's tools see it (`kafka-metadata-quorum.sh describe --status`
//! sends DescribeQuorum). Today it is one voter, the broker itself.

mod support;

use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{DescribeQuorumRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use support::*;

fn describe_quorum(topic: &str) -> DescribeQuorumRequest {
    DescribeQuorumRequest::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_quorum_reports_the_leader_its_epoch_and_the_committed_log() {
    let mut broker = BrokerProcess::start();
    let before = raw_round_trip(&broker.addr, &describe_quorum("__cluster_metadata"), 2);
    let hw_before = before.topics[0].partitions[0].high_watermark;
    create_topic(&broker.addr, "quorum-a", 1, &[]).await;
    create_topic(&broker.addr, "quorum-b", 1, &[]).await;
    for version in 0..=2 {
        let response = raw_round_trip(
            &broker.addr,
            &describe_quorum("__cluster_metadata"),
            version,
        );
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.error_code, 0, "v{version}");
        assert_eq!(partition.leader_id.0, 1, "v{version}: node 1 leads");
        assert!(partition.leader_epoch >= 1, "v{version}");
        assert_eq!(
            partition.high_watermark,
            hw_before + 2,
            "v{version}: each topic creation is one committed entry"
        );
        let voters: Vec<(i32, i64)> = partition
            .current_voters
            .iter()
            .map(|v| (v.replica_id.0, v.log_end_offset))
            .collect();
        assert_eq!(voters, [(1, partition.high_watermark)], "v{version}");
        if version >= 1 {
            // v1+ carry the timestamps: the leader's own are now, as in Kafka
            // (kafka-metadata-quorum shows them).
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let leader = &partition.current_voters[0];
            for (what, at) in [
                ("last fetch", leader.last_fetch_timestamp),
                ("last caught up", leader.last_caught_up_timestamp),
            ] {
                assert!(
                    (now - 60_000..=now).contains(&at),
                    "v{version}: {what} {at}, now {now}"
                );
            }
        }
        assert!(
            response.nodes.is_empty(),
            "v{version}: a lone voter has no controller listener to list"
        );
    }
    let other = raw_round_trip(&broker.addr, &describe_quorum("quorum-a"), 2);
    assert_eq!(
        other.topics[0].partitions[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION for any other log"
    );
    // The committed log survives a restart; the epoch does not go back.
    let epoch = raw_round_trip(&broker.addr, &describe_quorum("__cluster_metadata"), 2).topics[0]
        .partitions[0]
        .leader_epoch;
    broker.stop();
    broker.restart();
    let after = raw_round_trip(&broker.addr, &describe_quorum("__cluster_metadata"), 2);
    let partition = &after.topics[0].partitions[0];
    assert!(partition.leader_epoch >= epoch);
    assert!(partition.high_watermark >= hw_before + 2);
}
