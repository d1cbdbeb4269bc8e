//! Replica placement and leadership, through the metadata log: ElectLeaders (preferred and
//! unclean elections), AlterPartitionReassignments (moving a partition's replicas: the new
//! ones catch up as followers, then the old ones go) and ListPartitionReassignments.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ElectLeadersRequest,
    ElectLeadersResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{BrokerId, TopicName};

use super::Refusal;
use crate::Broker;
use crate::broker::str_bytes;
use crate::metadata::{MetadataRecord, NO_LEADER};

impl Broker {
    fn check_partition(&self, topic: &str, partition: i32) -> Result<(), Refusal> {
        let Some(found) = self.logs.topic(topic) else {
            return Err((
                ResponseError::UnknownTopicOrPartition,
                format!("No such topic as {topic}"),
            ));
        };
        if usize::try_from(partition).map_or(true, |p| p >= found.partitions.len()) {
            return Err((
                ResponseError::UnknownTopicOrPartition,
                format!("No such partition as {topic}-{partition}"),
            ));
        }
        Ok(())
    }

    /// ElectLeaders: a preferred election moves leadership to the first replica when it is
    /// live and in sync; an unclean one elects a live replica outside the ISR where nobody
    /// leads. Each is a `LeaderElected` record, checked again by the image when applied.
    pub(crate) async fn elect_leaders(&self, request: ElectLeadersRequest) -> ElectLeadersResponse {
        let unclean = request.election_type == 1;
        let every = request.topic_partitions.is_none();
        let asked: Vec<(TopicName, Vec<i32>)> = match request.topic_partitions {
            Some(asked) => asked.into_iter().map(|t| (t.topic, t.partitions)).collect(),
            None => self
                .logs
                .topics()
                .iter()
                .map(|t| {
                    let partitions = (0..t.partitions.len() as i32).collect();
                    (TopicName(str_bytes(t.name.clone())), partitions)
                })
                .collect(),
        };
        let mut results = Vec::new();
        for (topic, partitions) in asked {
            let mut outcomes = Vec::new();
            for partition in partitions {
                let outcome = self.elect(&topic, partition, unclean).await;
                // Asked for every partition, Kafka leaves out those that need no election.
                if every && matches!(&outcome, Err((ResponseError::ElectionNotNeeded, _))) {
                    continue;
                }
                let (code, message) = match outcome {
                    Ok(()) => (0, None),
                    Err((e, message)) => (e.code(), Some(str_bytes(message))),
                };
                outcomes.push(
                    PartitionResult::default()
                        .with_partition_id(partition)
                        .with_error_code(code)
                        .with_error_message(message),
                );
            }
            if !outcomes.is_empty() {
                results.push(
                    ReplicaElectionResult::default()
                        .with_topic(topic)
                        .with_partition_result(outcomes),
                );
            }
        }
        ElectLeadersResponse::default().with_replica_election_results(results)
    }

    async fn elect(&self, topic: &str, partition: i32, unclean: bool) -> Result<(), Refusal> {
        self.check_partition(topic, partition)?;
        let not_needed = || {
            Err((
                ResponseError::ElectionNotNeeded,
                format!("{topic}-{partition} needs no election"),
            ))
        };
        let image = self.logs.image();
        let Some((id, placement)) = image
            .topic(topic)
            .and_then(|t| Some((t.id, t.placement(partition)?.clone())))
        else {
            // Written before the cluster: its one replica leads.
            return not_needed();
        };
        let leader = if unclean {
            if placement.leader != NO_LEADER {
                return not_needed();
            }
            match placement
                .replicas
                .iter()
                .copied()
                .find(|r| image.is_live(*r))
            {
                Some(r) => r,
                None => {
                    return Err((
                        ResponseError::EligibleLeadersNotAvailable,
                        format!("no replica of {topic}-{partition} is live"),
                    ));
                }
            }
        } else {
            let Some(&preferred) = placement.replicas.first() else {
                return not_needed();
            };
            if placement.leader == preferred {
                return not_needed();
            }
            if !image.is_live(preferred) || !placement.isr.contains(&preferred) {
                return Err((
                    ResponseError::PreferredLeaderNotAvailable,
                    format!(
                        "the preferred leader {preferred} of {topic}-{partition} is not live and in sync"
                    ),
                ));
            }
            preferred
        };
        let record = MetadataRecord::LeaderElected {
            id,
            partition,
            partition_epoch: placement.partition_epoch,
            leader,
            unclean,
        };
        self.logs
            .commit(std::slice::from_ref(&record))
            .await
            .map_err(|e| (e.response_error(), e.to_string()))?;
        match self.logs.leader(topic, partition) {
            Some(now) if now == leader => Ok(()),
            _ => Err((
                ResponseError::PreferredLeaderNotAvailable,
                format!("{topic}-{partition} changed while {leader} was being elected"),
            )),
        }
    }

    pub(crate) async fn alter_partition_reassignments(
        &self,
        request: AlterPartitionReassignmentsRequest,
    ) -> AlterPartitionReassignmentsResponse {
        let mut responses = Vec::new();
        for t in request.topics {
            let mut partitions = Vec::new();
            for p in &t.partitions {
                let target = p
                    .replicas
                    .as_ref()
                    .map(|r| r.iter().map(|b| b.0).collect::<Vec<i32>>());
                let outcome = self.reassign(&t.name, p.partition_index, target).await;
                let (code, message) = match outcome {
                    Ok(()) => (0, None),
                    Err((e, message)) => (e.code(), Some(str_bytes(message))),
                };
                partitions.push(
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_error_message(message),
                );
            }
            responses.push(
                ReassignableTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(request.allow_replication_factor_change)
            .with_responses(responses)
    }

    /// Starts moving `topic`'s `partition` to `target` (a `ReassignmentRequested` record),
    /// or with `None` cancels the move in progress. The replicas being added catch up as
    /// followers; the controller completes the move once they are in sync.
    async fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> Result<(), Refusal> {
        self.check_partition(topic, partition)?;
        let image = self.logs.image();
        let Some((id, placement)) = image
            .topic(topic)
            .and_then(|t| Some((t.id, t.placement(partition)?.clone())))
        else {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!("{topic}-{partition} was created before the cluster: it cannot move"),
            ));
        };
        let in_progress = !placement.adding.is_empty() || !placement.removing.is_empty();
        match &target {
            None if !in_progress => {
                return Err((
                    ResponseError::NoReassignmentInProgress,
                    format!(
                        "Unable to cancel reassignment for partition {topic}-{partition}: no reassignment is in progress."
                    ),
                ));
            }
            None => {}
            Some(brokers) => {
                self.check_assignment(partition, brokers)?;
                if brokers.is_empty() {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!("{topic}-{partition}: an empty replica list"),
                    ));
                }
                if !in_progress && *brokers == placement.replicas {
                    // Already there: done at once, as Kafka completes it.
                    return Ok(());
                }
            }
        }
        let record = MetadataRecord::ReassignmentRequested {
            id,
            partition,
            target,
        };
        self.logs
            .commit(std::slice::from_ref(&record))
            .await
            .map_err(|e| (e.response_error(), e.to_string()))
    }

    /// The reassignments in progress, with their added and removed replicas; Kafka lists
    /// only ongoing ones and skips unknown topics.
    pub(crate) fn list_partition_reassignments(
        &self,
        request: ListPartitionReassignmentsRequest,
    ) -> ListPartitionReassignmentsResponse {
        let image = self.logs.image();
        let wanted: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| (t.name.to_string(), t.partition_indexes))
                .collect()
        });
        let mut topics = Vec::new();
        for topic in image.topics() {
            let asked = match &wanted {
                None => None,
                Some(w) => match w.iter().find(|(name, _)| *name == topic.name) {
                    Some((_, partitions)) => Some(partitions),
                    None => continue,
                },
            };
            let partitions: Vec<OngoingPartitionReassignment> = topic
                .placement
                .iter()
                .enumerate()
                .filter(|(index, p)| {
                    (!p.adding.is_empty() || !p.removing.is_empty())
                        && asked.is_none_or(|a| a.contains(&(*index as i32)))
                })
                .map(|(index, p)| {
                    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect();
                    OngoingPartitionReassignment::default()
                        .with_partition_index(index as i32)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding))
                        .with_removing_replicas(ids(&p.removing))
                })
                .collect();
            if !partitions.is_empty() {
                topics.push(
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(str_bytes(topic.name.clone())))
                        .with_partitions(partitions),
                );
            }
        }
        ListPartitionReassignmentsResponse::default().with_topics(topics)
    }
}
