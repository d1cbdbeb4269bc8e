use std::collections::{BTreeMap, HashSet};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use uuid::Uuid;

use super::{Refusal, validate_topic_name};
use crate::Broker;
use crate::broker::str_bytes;
use crate::config::{self, TOPIC_CONFIGS};

/// A request-level failure for one topic: Kafka's error code and message.
fn refuse<T>(error: ResponseError, message: impl Into<String>) -> Result<T, Refusal> {
    Err((error, message.into()))
}

/// What a valid CreateTopics entry asks for.
struct TopicPlan {
    partitions: i32,
    configs: BTreeMap<String, String>,
    /// Each partition's replicas as the request assigned them, by partition index.
    assignment: Option<Vec<Vec<i32>>>,
    replication_factor: i16,
}

impl Broker {
    fn check_replication_factor(&self, factor: i16) -> Result<(), Refusal> {
        let live = self.logs.image().live_brokers().count().max(1);
        if factor <= 0 {
            return refuse(
                ResponseError::InvalidReplicationFactor,
                "Replication factor must be larger than 0.",
            );
        }
        if usize::try_from(factor).is_ok_and(|f| f > live) {
            return refuse(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "Unable to replicate the partition {factor} time(s): The target replication factor of {factor} cannot be reached because only {live} broker(s) are registered."
                ),
            );
        }
        Ok(())
    }

    /// A replica list given for `partition`: registered brokers, none twice.
    pub(crate) fn check_assignment(&self, partition: i32, brokers: &[i32]) -> Result<(), Refusal> {
        let image = self.logs.image();
        let known = |id: i32| image.brokers.contains_key(&id) || id == self.node_id;
        crate::placement::check_assignment(&[brokers.to_vec()], known).or_else(|e| {
            refuse(
                ResponseError::InvalidReplicaAssignment,
                format!("Partition {partition}: {e}"),
            )
        })
    }

    fn plan_topic(&self, topic: &CreatableTopic) -> Result<TopicPlan, Refusal> {
        let name = topic.name.as_str();
        if let Err(message) = validate_topic_name(name) {
            return refuse(ResponseError::InvalidTopicException, message);
        }
        if self.logs.topic(name).is_some() {
            return refuse(
                ResponseError::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            );
        }
        let mut assignment = None;
        let replication_factor;
        let partitions = if topic.assignments.is_empty() {
            let partitions = match topic.num_partitions {
                -1 => self.config().num_partitions(),
                n if n <= 0 => {
                    return refuse(
                        ResponseError::InvalidPartitions,
                        "Number of partitions must be larger than 0.",
                    );
                }
                n => n,
            };
            let factor = match topic.replication_factor {
                -1 => self.config().default_replication_factor(),
                n => n,
            };
            self.check_replication_factor(factor)?;
            replication_factor = factor;
            partitions
        } else {
            if topic.num_partitions != -1 || topic.replication_factor != -1 {
                return refuse(
                    ResponseError::InvalidRequest,
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
                );
            }
            let mut indexes: Vec<i32> = topic
                .assignments
                .iter()
                .map(|a| a.partition_index)
                .collect();
            indexes.sort_unstable();
            if indexes.iter().enumerate().any(|(i, &p)| p != i as i32) {
                return refuse(
                    ResponseError::InvalidReplicaAssignment,
                    "Partitions should be a consecutive 0-based integer sequence.",
                );
            }
            let mut by_partition = vec![Vec::new(); topic.assignments.len()];
            for a in &topic.assignments {
                let brokers: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
                self.check_assignment(a.partition_index, &brokers)?;
                by_partition[a.partition_index as usize] = brokers;
            }
            replication_factor = by_partition.first().map_or(1, |r| r.len() as i16);
            assignment = Some(by_partition);
            topic.assignments.len() as i32
        };
        let mut configs = BTreeMap::new();
        for c in &topic.configs {
            let Some(value) = &c.value else {
                return refuse(
                    ResponseError::InvalidConfig,
                    format!(
                        "Null value not supported for topic configs: {}",
                        c.name.as_str()
                    ),
                );
            };
            configs.insert(c.name.to_string(), value.to_string());
        }
        if let Err(e) = config::validate_topic_configs(name, &configs) {
            return refuse(ResponseError::InvalidConfig, e.to_string());
        }
        Ok(TopicPlan {
            partitions,
            configs,
            assignment,
            replication_factor,
        })
    }

    /// The configs CreateTopics v5+ reports for a new topic.
    fn created_topic_configs(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Vec<CreatableTopicConfigs> {
        TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let (value, source) = self.config().resolve_topic(def, overrides);
                CreatableTopicConfigs::default()
                    .with_name(str_bytes(def.def.name))
                    .with_value(value.map(str_bytes))
                    .with_config_source(source as i8)
            })
            .collect()
    }

    pub(crate) async fn create_topics(
        &self,
        request: CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for t in &request.topics {
            *counts.entry(t.name.to_string()).or_default() += 1;
        }
        let mut results = Vec::new();
        for topic in &request.topics {
            let name = topic.name.to_string();
            let mut result = CreatableTopicResult::default().with_name(topic.name.clone());
            let outcome = if counts[&name] > 1 {
                refuse(
                    ResponseError::InvalidRequest,
                    format!("Create topics request from client contains duplicate topic {name}"),
                )
            } else {
                self.plan_topic(topic)
            };
            let created = match outcome {
                Err(refusal) => Err(refusal),
                Ok(plan) if request.validate_only => Ok((plan, Uuid::nil())),
                Ok(plan) => match self
                    .logs
                    .create_topic(
                        &name,
                        plan.partitions,
                        plan.replication_factor,
                        plan.configs.clone(),
                        plan.assignment.clone(),
                    )
                    .await
                {
                    Ok(t) => Ok((plan, t.id)),
                    Err(e) => {
                        tracing::error!(topic = %name, error = %e, "creating topic failed");
                        refuse(e.response_error(), e.to_string())
                    }
                },
            };
            match created {
                Ok((plan, id)) => {
                    if version >= 5 {
                        result.num_partitions = plan.partitions;
                        result.replication_factor = plan.replication_factor;
                        result.configs = Some(self.created_topic_configs(&plan.configs));
                    }
                    if version >= 7 {
                        result.topic_id = id;
                    }
                }
                Err((error, message)) => {
                    tracing::info!(topic = %name, error = ?error, %message, "refused CreateTopics");
                    result.error_code = error.code();
                    result.error_message = Some(str_bytes(message));
                }
            }
            results.push(result);
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    pub(crate) async fn delete_topics(
        &self,
        request: DeleteTopicsRequest,
        version: i16,
    ) -> DeleteTopicsResponse {
        // v6 names topics by name or id; earlier versions by name only.
        let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
            request
                .topics
                .iter()
                .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id))
                .collect()
        } else {
            request
                .topic_names
                .iter()
                .map(|n| (Some(n.to_string()), Uuid::nil()))
                .collect()
        };
        let mut responses = Vec::new();
        let mut done = HashSet::new();
        for (name, id) in targets {
            let topic = match &name {
                Some(n) => self.logs.topic(n),
                None => self.logs.topic_by_id(&id),
            };
            let mut result = DeletableTopicResult::default();
            if version >= 6 {
                result.topic_id = topic.as_ref().map_or(id, |t| t.id);
                result.name = topic
                    .as_ref()
                    .map(|t| TopicName(str_bytes(t.name.clone())))
                    .or(name.clone().map(|n| TopicName(str_bytes(n))));
            } else {
                result.name = name.clone().map(|n| TopicName(str_bytes(n)));
            }
            let outcome = match topic {
                _ if !self.config().delete_topic_enable() => refuse(
                    ResponseError::TopicDeletionDisabled,
                    "Topic deletion is disabled.",
                ),
                None if name.is_none() => refuse(
                    ResponseError::UnknownTopicId,
                    format!("Topic id {id} not found."),
                ),
                None => refuse(
                    ResponseError::UnknownTopicOrPartition,
                    "This server does not host this topic-partition.",
                ),
                Some(t) if !done.insert(t.id) => Ok(()),
                Some(t) => self
                    .logs
                    .delete_topic(t.id)
                    .await
                    .or_else(|e| refuse(e.response_error(), e.to_string())),
            };
            if let Err((error, message)) = outcome {
                result.error_code = error.code();
                if version >= 5 {
                    result.error_message = Some(str_bytes(message));
                }
            }
            responses.push(result);
        }
        DeleteTopicsResponse::default().with_responses(responses)
    }

    pub(crate) async fn create_partitions(
        &self,
        request: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let mut results = Vec::new();
        for entry in &request.topics {
            let name = entry.name.to_string();
            let outcome = async {
                let Some(topic) = self.logs.topic(&name) else {
                    return refuse(ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist."));
                };
                let current = topic.partitions.len() as i32;
                if entry.count < current {
                    return refuse(ResponseError::InvalidPartitions, format!("Topic currently has {current} partitions, which is higher than the requested {}.", entry.count));
                }
                if entry.count == current {
                    return refuse(ResponseError::InvalidPartitions, format!("Topic already has {current} partitions."));
                }
                let mut assignment = None;
                if let Some(assignments) = &entry.assignments {
                    if assignments.len() as i32 != entry.count - current {
                        return refuse(ResponseError::InvalidReplicaAssignment, format!("Increasing the number of partitions by {} but {} assignments provided.", entry.count - current, assignments.len()));
                    }
                    let mut given = Vec::with_capacity(assignments.len());
                    for (i, a) in assignments.iter().enumerate() {
                        let brokers: Vec<i32> = a.broker_ids.iter().map(|b| b.0).collect();
                        self.check_assignment(current + i as i32, &brokers)?;
                        given.push(brokers);
                    }
                    assignment = Some(given);
                }
                if request.validate_only {
                    return Ok(());
                }
                self.logs.add_partitions(&topic, entry.count, assignment).await.or_else(|e| refuse(e.response_error(), e.to_string()))
            }
            .await;
            let mut result = CreatePartitionsTopicResult::default().with_name(entry.name.clone());
            if let Err((error, message)) = outcome {
                result.error_code = error.code();
                result.error_message = Some(str_bytes(message));
            }
            results.push(result);
        }
        CreatePartitionsResponse::default().with_results(results)
    }
}
