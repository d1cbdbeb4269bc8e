use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
use uuid::Uuid;

use super::cluster::{ALL_CLUSTER_OPERATIONS, ALL_TOPIC_OPERATIONS};
use super::validate_topic_name;
use crate::Broker;
use crate::broker::str_bytes;
use crate::log_manager::Topic;
use crate::metadata::MetadataImage;

impl Broker {
    pub(crate) async fn metadata(
        &self,
        request: MetadataRequest,
        version: i16,
    ) -> MetadataResponse {
        let brokers = self
            .live_endpoints()
            .into_iter()
            .map(|(id, host, port, rack)| {
                MetadataResponseBroker::default()
                    .with_node_id(id.into())
                    .with_host(str_bytes(host))
                    .with_port(port)
                    // The rack came with v1.
                    .with_rack(rack.filter(|_| version >= 1).map(str_bytes))
            })
            .collect();
        let mut response = MetadataResponse::default()
            .with_brokers(brokers)
            .with_controller_id(self.controller_id().into());
        if version >= 2 {
            response.cluster_id = Some(str_bytes(self.cluster_id()));
        }
        if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
            response.cluster_authorized_operations = ALL_CLUSTER_OPERATIONS;
        }
        let with_ops = version >= 8 && request.include_topic_authorized_operations;
        // v0 asks for all topics with an empty list; v1+ with a null one.
        let wanted = match request.topics {
            None => None,
            Some(t) if t.is_empty() && version == 0 => None,
            Some(t) => Some(t),
        };
        let Some(wanted) = wanted else {
            response.topics = self
                .logs
                .topics()
                .iter()
                .map(|t| self.topic_metadata(t, version, with_ops))
                .collect();
            return response;
        };
        // Kafka v4+ lets the client say whether a missing topic may be auto-created.
        let may_create = (version < 4 || request.allow_auto_topic_creation)
            && self.config().auto_create_topics();
        let mut seen = BTreeMap::new();
        for requested in wanted {
            // A topic id wins over the name, as in Kafka: the Java client sends an id with
            // an empty (not null) name.
            let by_name = requested
                .name
                .as_ref()
                .filter(|_| requested.topic_id.is_nil());
            let entry = match by_name {
                Some(name) => {
                    let name = name.to_string();
                    if seen.insert(name.clone(), ()).is_some() {
                        continue;
                    }
                    self.topic_for_metadata(&name, may_create, version, with_ops)
                        .await
                }
                None => match self.logs.topic_by_id(&requested.topic_id) {
                    Some(t) => self.topic_metadata(&t, version, with_ops),
                    None => MetadataResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_name(None)
                        .with_topic_id(requested.topic_id),
                },
            };
            response.topics.push(entry);
        }
        response
    }

    async fn topic_for_metadata(
        &self,
        name: &str,
        may_create: bool,
        version: i16,
        with_ops: bool,
    ) -> MetadataResponseTopic {
        let missing = |error: ResponseError| {
            MetadataResponseTopic::default()
                .with_error_code(error.code())
                .with_name(Some(TopicName(str_bytes(name))))
        };
        if let Some(topic) = self.logs.topic(name) {
            return self.topic_metadata(&topic, version, with_ops);
        }
        if validate_topic_name(name).is_err() {
            return missing(ResponseError::InvalidTopicException);
        }
        if !may_create {
            return missing(ResponseError::UnknownTopicOrPartition);
        }
        let partitions = self.config().num_partitions();
        match self
            .logs
            .create_topic(
                name,
                partitions,
                self.config().default_replication_factor(),
                BTreeMap::new(),
                None,
            )
            .await
        {
            Ok(topic) => self.topic_metadata(&topic, version, with_ops),
            Err(e) => {
                tracing::error!(topic = name, error = %e, "auto-creating topic failed");
                missing(ResponseError::KafkaStorageError)
            }
        }
    }

    /// Partition `index` of `topic` as Metadata and DescribeTopicPartitions describe it.
    fn partition_view(&self, image: &MetadataImage, topic: &Topic, index: i32) -> PartitionView {
        // From the one image the caller read, not a fresh read per field and partition.
        let placed_topic = image.topic(&topic.name);
        let replicas = placed_topic
            .map(|t| image.replicas(t, index, self.node_id))
            .unwrap_or_default();
        let placed = placed_topic.and_then(|t| t.placement(index));
        let leadership = placed_topic.and_then(|t| image.leader(t, index, self.node_id));
        // Partitions written before the cluster: one replica, this node, epoch 0.
        let (isr, elr, leader_epoch) = placed.map_or((replicas.clone(), Vec::new(), 0), |p| {
            (p.isr.clone(), p.elr.clone(), p.leader_epoch)
        });
        let leader = leadership.map(|(leader, _)| leader);
        let offline = replicas
            .iter()
            .copied()
            .filter(|id| Some(*id) != leader && image.brokers.get(id).is_some_and(|b| b.fenced))
            .collect();
        PartitionView {
            leader,
            leader_epoch,
            replicas,
            isr,
            elr,
            offline,
        }
    }

    fn topic_metadata(&self, topic: &Topic, version: i16, with_ops: bool) -> MetadataResponseTopic {
        let image = self.logs.image();
        let ids = |ids: Vec<i32>| ids.into_iter().map(Into::into).collect();
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let view = self.partition_view(&image, topic, p.index);
                MetadataResponsePartition::default()
                    .with_error_code(match view.leader {
                        Some(_) => 0,
                        None => ResponseError::LeaderNotAvailable.code(),
                    })
                    .with_partition_index(p.index)
                    .with_leader_id(view.leader.unwrap_or(-1).into())
                    .with_leader_epoch(if version >= 7 { view.leader_epoch } else { -1 })
                    .with_replica_nodes(ids(view.replicas))
                    .with_isr_nodes(ids(view.isr))
                    .with_offline_replicas(if version >= 5 {
                        ids(view.offline)
                    } else {
                        Vec::new()
                    })
            })
            .collect();
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
            .with_topic_id(if version >= 10 { topic.id } else { Uuid::nil() })
            .with_is_internal(version >= 1 && crate::coordinator::is_internal(&topic.name))
            .with_partitions(partitions)
            .with_topic_authorized_operations(if with_ops {
                ALL_TOPIC_OPERATIONS
            } else {
                i32::MIN
            })
    }
}

/// A partition's leadership and replicas, as the metadata image has them.
struct PartitionView {
    leader: Option<i32>,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// KIP-966's eligible leader replicas.
    elr: Vec<i32>,
    /// Replicas on fenced brokers.
    offline: Vec<i32>,
}

/// Kafka's `max.request.partition.size.limit`: the most partitions one
/// DescribeTopicPartitions response holds, whatever the client asks.
const MAX_PARTITIONS_PER_DESCRIBE: usize = 2000;

impl Broker {
    /// DescribeTopicPartitions (KIP-966): the named topics, or all of them, sorted by name,
    /// at most `response_partition_limit` partitions per response, continued from `cursor`
    /// and pointing at the next partition with `next_cursor`. As Kafka does, a cursor on a
    /// topic not asked for, or on a negative partition, is INVALID_REQUEST.
    pub(crate) fn describe_topic_partitions(
        &self,
        request: DescribeTopicPartitionsRequest,
    ) -> DescribeTopicPartitionsResponse {
        let asked: BTreeSet<String> = request.topics.iter().map(|t| t.name.to_string()).collect();
        let all = asked.is_empty();
        let cursor = request
            .cursor
            .as_ref()
            .map(|c| (c.topic_name.to_string(), c.partition_index));
        let invalid = cursor
            .as_ref()
            .is_some_and(|(topic, index)| *index < 0 || (!all && !asked.contains(topic)));
        if invalid {
            let topics = asked
                .iter()
                .map(|name| {
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_name(Some(TopicName(str_bytes(name.clone()))))
                })
                .collect();
            return DescribeTopicPartitionsResponse::default().with_topics(topics);
        }
        let names: Vec<String> = if all {
            self.logs.topics().iter().map(|t| t.name.clone()).collect()
        } else {
            asked.into_iter().collect()
        };
        let (from_topic, from_partition) = cursor.unwrap_or_default();
        let mut left = usize::try_from(request.response_partition_limit)
            .unwrap_or(0)
            .clamp(1, MAX_PARTITIONS_PER_DESCRIBE);
        let image = self.logs.image();
        let ids = |ids: Vec<i32>| ids.into_iter().map(Into::into).collect::<Vec<_>>();
        let mut response = DescribeTopicPartitionsResponse::default();
        let mut sorted = names;
        sorted.sort();
        for name in sorted.into_iter().filter(|n| *n >= from_topic) {
            let Some(topic) = self.logs.topic(&name) else {
                response.topics.push(
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_name(Some(TopicName(str_bytes(name)))),
                );
                continue;
            };
            let start = if name == from_topic {
                from_partition
            } else {
                0
            };
            if left == 0 {
                response.next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(TopicName(str_bytes(name)))
                        .with_partition_index(start),
                );
                break;
            }
            let mut partitions = Vec::new();
            for p in topic.partitions.iter().filter(|p| p.index >= start) {
                if left == 0 {
                    response.next_cursor = Some(
                        Cursor::default()
                            .with_topic_name(TopicName(str_bytes(name.clone())))
                            .with_partition_index(p.index),
                    );
                    break;
                }
                left -= 1;
                let view = self.partition_view(&image, &topic, p.index);
                partitions.push(
                    DescribeTopicPartitionsResponsePartition::default()
                        .with_error_code(match view.leader {
                            Some(_) => 0,
                            None => ResponseError::LeaderNotAvailable.code(),
                        })
                        .with_partition_index(p.index)
                        .with_leader_id(view.leader.unwrap_or(-1).into())
                        .with_leader_epoch(view.leader_epoch)
                        .with_replica_nodes(ids(view.replicas))
                        .with_isr_nodes(ids(view.isr))
                        .with_eligible_leader_replicas(Some(ids(view.elr)))
                        // Kafka keeps the last eligible replicas here once none is left; the
                        // metadata image never lets the last candidate go, so none is.
                        .with_last_known_elr(Some(Vec::new()))
                        .with_offline_replicas(ids(view.offline)),
                );
            }
            response.topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(TopicName(str_bytes(name))))
                    .with_topic_id(topic.id)
                    .with_is_internal(crate::coordinator::is_internal(&topic.name))
                    .with_partitions(partitions)
                    .with_topic_authorized_operations(ALL_TOPIC_OPERATIONS),
            );
            if response.next_cursor.is_some() {
                break;
            }
        }
        response
    }
}
