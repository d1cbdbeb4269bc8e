use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, BrokerId, DescribeClusterRequest,
    DescribeClusterResponse, DescribeLogDirsRequest, DescribeLogDirsResponse,
    DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use odradek_storage::DiskSpace;
use tracing::warn;

use crate::Broker;
use crate::broker::str_bytes;
use kafka_protocol::protocol::StrBytes;

/// Without an authorizer a client may do every operation Kafka defines on a resource; these
/// are the `AclOperation` bits (CREATE=5, ALTER=7, DESCRIBE=8, CLUSTER_ACTION=9,
/// DESCRIBE_CONFIGS=10, ALTER_CONFIGS=11, IDEMPOTENT_WRITE=12; READ=3, WRITE=4, DELETE=6).
const fn bits(ops: &[u32]) -> i32 {
    let mut out = 0;
    let mut i = 0;
    while i < ops.len() {
        out |= 1 << ops[i];
        i += 1;
    }
    out
}
pub(crate) const ALL_CLUSTER_OPERATIONS: i32 = bits(&[5, 7, 8, 9, 10, 11, 12]);
pub(crate) const ALL_TOPIC_OPERATIONS: i32 = bits(&[3, 4, 5, 6, 7, 8, 10, 11]);
/// A group supports READ, DELETE and DESCRIBE.
pub(crate) const ALL_GROUP_OPERATIONS: i32 = bits(&[3, 6, 8]);

impl Broker {
    pub(crate) fn describe_cluster(
        &self,
        request: DescribeClusterRequest,
    ) -> DescribeClusterResponse {
        // Endpoint type 1 asks for brokers, 2 for controllers; this node is both.
        if !(1..=2).contains(&request.endpoint_type) {
            return DescribeClusterResponse::default()
                .with_error_code(ResponseError::UnsupportedEndpointType.code())
                .with_endpoint_type(request.endpoint_type);
        }
        let broker = |(id, host, port, rack): super::Endpoint| {
            DescribeClusterBroker::default()
                .with_broker_id(id.into())
                .with_host(str_bytes(host))
                .with_port(port)
                .with_rack(rack.map(str_bytes))
        };
        let mut brokers: Vec<DescribeClusterBroker> =
            self.live_endpoints().into_iter().map(broker).collect();
        // KIP-1073 (v2): the fenced ones too, marked, for operators' tools.
        if request.include_fenced_brokers {
            let image = self.logs.image();
            brokers.extend(
                image
                    .brokers
                    .values()
                    .filter(|b| b.fenced && b.id != self.node_id)
                    .map(|b| {
                        broker((b.id, b.host.clone(), b.port, b.rack.clone())).with_is_fenced(true)
                    }),
            );
            brokers.sort_by_key(|b| b.broker_id.0);
        }
        DescribeClusterResponse::default()
            .with_endpoint_type(request.endpoint_type)
            .with_cluster_id(str_bytes(self.cluster_id()))
            .with_controller_id(self.controller_id().into())
            .with_brokers(brokers)
            .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
                ALL_CLUSTER_OPERATIONS
            } else {
                i32::MIN
            })
    }

    /// The one log directory, with the size of each partition in it. Requested topics or
    /// partitions this broker does not have are left out, as Kafka leaves out what is not
    /// in a directory.
    pub(crate) fn describe_log_dirs(
        &self,
        request: DescribeLogDirsRequest,
    ) -> DescribeLogDirsResponse {
        // `None` asks for every partition; the same topic may be listed more than once.
        let wanted: Option<BTreeMap<String, BTreeSet<i32>>> = request.topics.map(|topics| {
            let mut wanted = BTreeMap::<String, BTreeSet<i32>>::new();
            for t in topics {
                wanted
                    .entry(t.topic.to_string())
                    .or_default()
                    .extend(t.partitions);
            }
            wanted
        });
        let mut topics: Vec<DescribeLogDirsTopic> = self
            .logs
            .topics()
            .iter()
            .filter_map(|topic| {
                let partitions: Vec<DescribeLogDirsPartition> = topic
                    .partitions
                    .iter()
                    .filter(|p| match &wanted {
                        Some(w) => w.get(&topic.name).is_some_and(|set| set.contains(&p.index)),
                        None => true,
                    })
                    .filter_map(|p| {
                        let size = p.lock_log()?.size_bytes();
                        Some(
                            DescribeLogDirsPartition::default()
                                .with_partition_index(p.index)
                                .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                                // No replica is moving between directories here.
                                .with_offset_lag(0)
                                .with_is_future_key(false),
                        )
                    })
                    .collect();
                (!partitions.is_empty()).then(|| {
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(str_bytes(topic.name.clone())))
                        .with_partitions(partitions)
                })
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let dir = self.log_dir();
        let space = DiskSpace::of(&dir)
            .map_err(|e| warn!(error = %e, "cannot read the log directory's disk space"))
            .ok();
        // -1 is Kafka's "unknown", sent when the file store cannot be read.
        let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let (total, usable) =
            space.map_or((-1, -1), |s| (bytes(s.total_bytes), bytes(s.usable_bytes)));
        DescribeLogDirsResponse::default().with_results(vec![
            DescribeLogDirsResult::default()
                .with_log_dir(str_bytes(dir.display().to_string()))
                .with_topics(topics)
                .with_total_bytes(total)
                .with_usable_bytes(usable),
        ])
    }

    /// The one log directory, as DescribeLogDirs names it and AlterReplicaLogDirs expects it.
    fn log_dir(&self) -> std::path::PathBuf {
        std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone())
    }

    /// Moving a replica to another log directory, answered as Kafka's `ReplicaManager` answers
    /// on a broker with one directory: a path that is not a configured log dir is
    /// LOG_DIR_NOT_FOUND, a partition this broker does not hold REPLICA_NOT_AVAILABLE, and
    /// a move to the directory the replica is already in succeeds with nothing to do.
    pub(crate) fn alter_replica_log_dirs(
        &self,
        request: AlterReplicaLogDirsRequest,
    ) -> AlterReplicaLogDirsResponse {
        let ours = self.log_dir();
        let mut results: Vec<AlterReplicaLogDirTopicResult> = Vec::new();
        for dir in request.dirs {
            let path = std::path::Path::new(dir.path.as_str());
            let known = path.is_absolute() && path == ours;
            for topic in dir.topics {
                let name = topic.name.to_string();
                let held = self.logs.topic(&name);
                let partitions = topic.partitions.iter().map(|&index| {
                    let error = if name.len() > 249 {
                        ResponseError::InvalidTopicException
                    } else if !known {
                        ResponseError::LogDirNotFound
                    } else if held.as_ref().is_none_or(|t| {
                        usize::try_from(index).map_or(true, |i| i >= t.partitions.len())
                    }) {
                        ResponseError::ReplicaNotAvailable
                    } else {
                        return AlterReplicaLogDirPartitionResult::default()
                            .with_partition_index(index);
                    };
                    AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(error.code())
                });
                let partitions: Vec<_> = partitions.collect();
                match results.iter_mut().find(|r| r.topic_name.as_str() == name) {
                    Some(result) => result.partitions.extend(partitions),
                    None => results.push(
                        AlterReplicaLogDirTopicResult::default()
                            .with_topic_name(topic.name)
                            .with_partitions(partitions),
                    ),
                }
            }
        }
        AlterReplicaLogDirsResponse::default().with_results(results)
    }

    /// The metadata quorum as KRaft's controller describes `__cluster_metadata-0`: leader,
    /// epoch (the raft term), high watermark (one past the last committed entry) and each
    /// voter's log end. Replication times are not tracked: -1, Kafka's "unknown".
    pub(crate) async fn describe_quorum(
        &self,
        request: DescribeQuorumRequest,
        version: i16,
    ) -> DescribeQuorumResponse {
        const METADATA_TOPIC: &str = "__cluster_metadata";
        let asks_for_the_log = request.topics.len() == 1
            && request.topics[0].topic_name.as_str() == METADATA_TOPIC
            && request.topics[0].partitions.len() == 1
            && request.topics[0].partitions[0].partition_index == 0;
        let partition = PartitionData::default().with_partition_index(0);
        // Node listeners and error messages came with v2.
        let answer = |partition: PartitionData, nodes: Vec<Node>| {
            let (partition, nodes) = if version >= 2 {
                (partition, nodes)
            } else {
                (partition.with_error_message(None), Vec::new())
            };
            DescribeQuorumResponse::default()
                .with_topics(vec![
                    TopicData::default()
                        .with_topic_name(TopicName(StrBytes::from_static_str(METADATA_TOPIC)))
                        .with_partitions(vec![partition]),
                ])
                .with_nodes(nodes)
        };
        if !asks_for_the_log {
            return answer(
                partition.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Vec::new(),
            );
        }
        let status = match self.quorum_status().await {
            Ok(status) => status,
            Err(e) => {
                warn!(error = %e, "DescribeQuorum: the quorum did not answer");
                return answer(
                    partition
                        .with_error_code(ResponseError::NotLeaderOrFollower.code())
                        .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                    Vec::new(),
                );
            }
        };
        let Some(matched) = status
            .matched
            .filter(|_| status.leader == Some(status.node_id))
        else {
            // The leader's own status always has its progress; a leader that has just lost
            // its place has not.
            return answer(
                partition.with_error_code(ResponseError::NotLeaderOrFollower.code()),
                Vec::new(),
            );
        };
        let id = |node: u64| BrokerId(i32::try_from(node).unwrap_or(-1));
        let offset =
            |index: Option<u64>| index.map_or(0, |i| i64::try_from(i + 1).unwrap_or(i64::MAX));
        // The leader is fetched from and caught up with itself now, as Kafka reports it;
        // openraft does not time the others' fetches, so theirs stay unknown (-1).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let progress = |nodes: &std::collections::BTreeMap<u64, std::net::SocketAddr>| {
            nodes
                .keys()
                .map(|&node| {
                    let timestamp = if node == status.node_id { now } else { -1 };
                    ReplicaState::default()
                        .with_replica_id(id(node))
                        .with_log_end_offset(offset(matched.get(&node).copied().flatten()))
                        .with_last_fetch_timestamp(timestamp)
                        .with_last_caught_up_timestamp(timestamp)
                })
                .collect()
        };
        let voters = progress(&status.voters);
        // Broker-only nodes: openraft's learners.
        let observers = progress(&status.observers);
        // A lone voter serves no controller listener (it binds none): nothing to list.
        let nodes = status
            .voters
            .iter()
            .filter(|(_, addr)| addr.port() != 0)
            .map(|(&node, addr)| {
                Node::default().with_node_id(id(node)).with_listeners(vec![
                    Listener::default()
                        .with_name(StrBytes::from_static_str("CONTROLLER"))
                        .with_host(StrBytes::from_string(addr.ip().to_string()))
                        .with_port(addr.port()),
                ])
            })
            .collect();
        answer(
            partition
                .with_leader_id(id(status.node_id))
                .with_leader_epoch(i32::try_from(status.term).unwrap_or(i32::MAX))
                .with_high_watermark(offset(status.committed_index))
                .with_current_voters(voters)
                .with_observers(observers),
            nodes,
        )
    }
}

impl Broker {
    /// AddRaftVoter and RemoveRaftVoter (KIP-853), from any node: the leader makes the
    /// change through joint consensus and answers once it is committed. A node is added
    /// after it joined as an observer (started with the voters as its
    /// `controller.quorum.bootstrap.servers`); the listeners in the request are not needed,
    /// the leader already reaches it where it joined from.
    pub(crate) async fn change_raft_voter(
        &self,
        cluster_id: Option<&str>,
        voter: i32,
        add: bool,
    ) -> (i16, Option<StrBytes>) {
        if cluster_id.is_some_and(|id| !id.is_empty() && id != self.cluster_id()) {
            return (
                ResponseError::InconsistentClusterId.code(),
                Some(StrBytes::from_static_str("another cluster's id")),
            );
        }
        match self.change_voter(voter, add).await {
            Ok(()) => {
                tracing::info!(node = voter, add, "changed the metadata quorum's voters");
                (0, None)
            }
            Err(e) => {
                warn!(node = voter, add, error = %e, "cannot change the metadata quorum's voters");
                let code = match e {
                    crate::metadata::MetadataError::Quorum(odradek_raft::QuorumError::Timeout(
                        _,
                    )) => ResponseError::RequestTimedOut,
                    _ => ResponseError::InvalidRequest,
                };
                (code.code(), Some(str_bytes(e.to_string())))
            }
        }
    }
}
