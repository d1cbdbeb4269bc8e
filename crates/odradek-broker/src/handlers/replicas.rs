//! Replica placement and leadership: ElectLeaders, AlterPartitionReassignments and
//! ListPartitionReassignments. On one node every partition has one replica, this node, which
//! is its leader and preferred leader, so there is never an election to hold nor a
//! reassignment in progress. The answers are Kafka's for that state, so
//! `kafka-leader-election.sh`, `kafka-reassign-partitions.sh` and admin consoles work
//! unchanged and are told so.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ElectLeadersRequest,
    ElectLeadersResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::Refusal;
use crate::Broker;
use crate::broker::str_bytes;

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

    pub(crate) fn elect_leaders(&self, request: ElectLeadersRequest) -> ElectLeadersResponse {
        // Whichever election is asked for (preferred or unclean), this node already leads.
        let result = |topic: &str, partition: i32| {
            let (code, message) = match self.check_partition(topic, partition) {
                Ok(()) => (ResponseError::ElectionNotNeeded.code(), None),
                Err((e, message)) => (e.code(), Some(str_bytes(message))),
            };
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(code)
                .with_error_message(message)
        };
        let results = match request.topic_partitions {
            // For every partition Kafka leaves out those that need no election: all of them.
            None => Vec::new(),
            Some(asked) => asked
                .into_iter()
                .map(|t| {
                    let partitions = t.partitions.iter().map(|&p| result(&t.topic, p)).collect();
                    ReplicaElectionResult::default()
                        .with_topic(t.topic)
                        .with_partition_result(partitions)
                })
                .collect(),
        };
        ElectLeadersResponse::default().with_replica_election_results(results)
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
