//! Replica placement and leadership: ElectLeaders (preferred and unclean elections, through
//! the metadata log), AlterPartitionReassignments and ListPartitionReassignments (replica
//! movement is not built yet: a reassignment to where a partition already is completes at
//! once, any other is refused with a message that says so).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ElectLeadersRequest,
    ElectLeadersResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use kafka_protocol::messages::TopicName;

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
        let live = |b: i32| image.brokers.get(&b).is_some_and(|b| !b.fenced);
        let leader = if unclean {
            if placement.leader != NO_LEADER {
                return not_needed();
            }
            match placement.replicas.iter().copied().find(|r| live(*r)) {
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
            if !live(preferred) || !placement.isr.contains(&preferred) {
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

    pub(crate) fn alter_partition_reassignments(
        &self,
        request: AlterPartitionReassignmentsRequest,
    ) -> AlterPartitionReassignmentsResponse {
        let responses = request
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let outcome = self.check_partition(&t.name, p.partition_index).and_then(
                            |()| match &p.replicas {
                                None => Err((
                                    ResponseError::NoReassignmentInProgress,
                                    format!(
                                        "Unable to cancel reassignment for partition {}-{}: no reassignment is in progress.",
                                        t.name.as_str(),
                                        p.partition_index
                                    ),
                                )),
                                // The only valid target is where the partition already is:
                                // done at once, as Kafka completes a reassignment to the
                                // current replicas.
                                Some(replicas) => {
                                    let brokers: Vec<i32> =
                                        replicas.iter().map(|b| b.0).collect();
                                    self.check_assignment(p.partition_index, &brokers)?;
                                    let current = self.logs.replicas(&t.name, p.partition_index);
                                    if brokers == current {
                                        Ok(())
                                    } else {
                                        Err((
                                            ResponseError::InvalidReplicaAssignment,
                                            format!(
                                                "Partition {}-{} is on {current:?}: moving it to {brokers:?} needs replica movement, which this Odradek release does not have yet.",
                                                t.name.as_str(),
                                                p.partition_index
                                            ),
                                        ))
                                    }
                                }
                            },
                        );
                        let (code, message) = match outcome {
                            Ok(()) => (0, None),
                            Err((e, message)) => (e.code(), Some(str_bytes(message))),
                        };
                        ReassignablePartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                            .with_error_message(message)
                    })
                    .collect();
                ReassignableTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
        AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(request.allow_replication_factor_change)
            .with_responses(responses)
    }

    /// Nothing is ever being reassigned; Kafka lists only ongoing reassignments and skips
    /// unknown topics, so the answer is always empty.
    pub(crate) fn list_partition_reassignments(
        &self,
        _request: ListPartitionReassignmentsRequest,
    ) -> ListPartitionReassignmentsResponse {
        ListPartitionReassignmentsResponse::default()
    }
}
