use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::cluster::{ALL_CLUSTER_OPERATIONS, ALL_TOPIC_OPERATIONS};
use super::validate_topic_name;
use crate::Broker;
use crate::broker::str_bytes;
use crate::log_manager::Topic;

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
            let entry = match &requested.name {
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
            .create_topic(name, partitions, BTreeMap::new(), None)
            .await
        {
            Ok(topic) => self.topic_metadata(&topic, version, with_ops),
            Err(e) => {
                tracing::error!(topic = name, error = %e, "auto-creating topic failed");
                missing(ResponseError::KafkaStorageError)
            }
        }
    }

    fn topic_metadata(&self, topic: &Topic, version: i16, with_ops: bool) -> MetadataResponseTopic {
        let image = self.logs.image();
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let replicas = self.logs.replicas(&topic.name, p.index);
                let placed = image.topic(&topic.name).and_then(|t| t.placement(p.index));
                let leader = self.logs.leader(&topic.name, p.index);
                // Partitions written before the cluster: one replica, this node, epoch 0.
                let (isr, epoch) =
                    placed.map_or((replicas.clone(), 0), |p| (p.isr.clone(), p.leader_epoch));
                let offline: Vec<_> = replicas
                    .iter()
                    .filter(|id| {
                        Some(**id) != leader && image.brokers.get(id).is_some_and(|b| b.fenced)
                    })
                    .map(|id| (*id).into())
                    .collect();
                MetadataResponsePartition::default()
                    .with_error_code(match leader {
                        Some(_) => 0,
                        None => ResponseError::LeaderNotAvailable.code(),
                    })
                    .with_partition_index(p.index)
                    .with_leader_id(leader.unwrap_or(-1).into())
                    .with_leader_epoch(if version >= 7 { epoch } else { -1 })
                    .with_replica_nodes(replicas.iter().map(|id| (*id).into()).collect())
                    .with_isr_nodes(isr.into_iter().map(Into::into).collect())
                    .with_offline_replicas(if version >= 5 { offline } else { Vec::new() })
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
