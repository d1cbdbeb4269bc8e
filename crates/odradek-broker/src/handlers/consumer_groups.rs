//! KIP-848 consumer group APIs: ConsumerGroupHeartbeat and ConsumerGroupDescribe.

use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member,
    TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, TopicName,
};

use super::cluster::ALL_GROUP_OPERATIONS;
use crate::Broker;
use crate::broker::{RequestContext, str_bytes};
use crate::coordinator::consumer::{self, ConsumerState, HeartbeatRequest, TopicInfo};
use crate::coordinator::group::Group;
use crate::coordinator::{self, is_internal};
use crate::handlers::groups::CoordinatorKind;
use odradek_storage::LockExt;

impl Broker {
    /// Every client-visible topic, as assignors see them.
    fn assignable_topics(&self) -> Vec<TopicInfo> {
        self.logs
            .topics()
            .iter()
            .filter(|t| !is_internal(&t.name))
            .map(|t| TopicInfo {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partitions.len() as i32,
            })
            .collect()
    }

    pub(crate) async fn consumer_group_heartbeat(
        &self,
        request: ConsumerGroupHeartbeatRequest,
        context: &RequestContext,
    ) -> ConsumerGroupHeartbeatResponse {
        let fail = |e: ResponseError, message: String| {
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(message)))
                .with_member_id(Some(request.member_id.clone()))
                .with_member_epoch(request.member_epoch)
        };
        let group_id = request.group_id.to_string();
        if group_id.is_empty() {
            return fail(
                ResponseError::InvalidGroupId,
                "The group id must not be empty.".into(),
            );
        }
        let Some(offsets_topic) = self.offsets_topic().await else {
            return fail(
                ResponseError::CoordinatorNotAvailable,
                "The coordinator is not available.".into(),
            );
        };
        if let Err(e) = self.check_coordinator(CoordinatorKind::Group, &group_id) {
            return fail(
                e,
                format!("This broker does not coordinate group {group_id}."),
            );
        }
        let topics = self.assignable_topics();
        let owned = request.topic_partitions.as_ref().map(|tps| {
            tps.iter()
                .map(|tp| (tp.topic_id, tp.partitions.iter().copied().collect()))
                .collect::<consumer::Assignment>()
        });
        let heartbeat = HeartbeatRequest {
            member_id: request.member_id.to_string(),
            member_epoch: request.member_epoch,
            instance_id: request.instance_id.as_ref().map(|s| s.to_string()),
            rack_id: request.rack_id.as_ref().map(|s| s.to_string()),
            rebalance_timeout: Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64),
            subscribed_names: request
                .subscribed_topic_names
                .as_ref()
                .map(|n| n.iter().map(|t| t.to_string()).collect()),
            subscribed_regex: request
                .subscribed_topic_regex
                .as_ref()
                .map(|r| r.to_string())
                .filter(|r| !r.is_empty()),
            server_assignor: request.server_assignor.as_ref().map(|s| s.to_string()),
            owned,
            client_id: context.client_id.clone(),
            client_host: context.client_host.clone(),
        };
        let (result, appended) = {
            let mut groups = self.coordinator.groups.lock_or_recover();
            let group = groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(&group_id));
            if group.consumer.is_none() {
                if !group.members.is_empty() {
                    return fail(
                        ResponseError::GroupIdNotFound,
                        format!("Group {group_id} is not a consumer group."),
                    );
                }
                group.protocol_type = Some("consumer".into());
            }
            let state = group
                .consumer
                .get_or_insert_with(|| ConsumerState::new(consumer::ASSIGNORS[0]));
            let result = state.heartbeat(heartbeat, &topics, Instant::now());
            let (records, live) = coordinator::unpersisted_consumer_records(&group_id, state);
            // Appended under the lock so the records are in the log in the order the
            // changes happened.
            let appended = (!records.is_empty()).then(|| {
                let appended = self.coordinator.append(&offsets_topic, &group_id, &records);
                if appended.is_ok() {
                    state.mark_persisted(live);
                }
                appended
            });
            (result, appended)
        };
        // As in Kafka, the response that reveals the new state waits for its records.
        if let Some(appended) = appended {
            let durable = match appended {
                Ok(a) => self.durable(&a).await,
                Err(e) => {
                    tracing::warn!(group = %group_id, error = %e, "cannot persist consumer group");
                    false
                }
            };
            if !durable {
                return fail(
                    ResponseError::CoordinatorNotAvailable,
                    "The group's state could not be written.".into(),
                );
            }
        }
        if let Some((error, message)) = result.error {
            return fail(error, message);
        }
        let assignment = result.assignment.map(|a| {
            Assignment::default().with_topic_partitions(
                a.into_iter()
                    .map(|(topic_id, ps)| {
                        TopicPartitions::default()
                            .with_topic_id(topic_id)
                            .with_partitions(ps.into_iter().collect())
                    })
                    .collect(),
            )
        });
        ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(str_bytes(result.member_id)))
            .with_member_epoch(result.member_epoch)
            .with_heartbeat_interval_ms(self.coordinator.consumer_heartbeat_interval_ms)
            .with_assignment(assignment)
    }

    pub(crate) fn consumer_group_describe(
        &self,
        request: ConsumerGroupDescribeRequest,
    ) -> ConsumerGroupDescribeResponse {
        let names: std::collections::HashMap<uuid::Uuid, String> = self
            .logs
            .topics()
            .iter()
            .map(|t| (t.id, t.name.clone()))
            .collect();
        let describe = |a: &consumer::Assignment| {
            DescribedAssignment::default().with_topic_partitions(
                a.iter()
                    .map(|(id, ps)| {
                        DescribedTopicPartitions::default()
                            .with_topic_id(*id)
                            .with_topic_name(TopicName(str_bytes(
                                names.get(id).cloned().unwrap_or_default(),
                            )))
                            .with_partitions(ps.iter().copied().collect())
                    })
                    .collect(),
            )
        };
        let groups = self.coordinator.groups.lock_or_recover();
        let described = request
            .group_ids
            .iter()
            .map(|id| {
                let mut d = DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_authorized_operations(if request.include_authorized_operations {
                        ALL_GROUP_OPERATIONS
                    } else {
                        i32::MIN
                    });
                if let Err(e) = self.check_coordinator(CoordinatorKind::Group, id.as_str()) {
                    return d.with_error_code(e.code());
                }
                let Some(state) = groups.get(id.as_str()).and_then(|g| g.consumer.as_ref()) else {
                    return d
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(str_bytes(format!(
                            "Group {} not found.",
                            id.as_str()
                        ))));
                };
                d.group_state = str_bytes(state.state_name());
                d.group_epoch = state.group_epoch;
                d.assignment_epoch = state.assignment_epoch;
                d.assignor_name = str_bytes(state.assignor.clone());
                d.members = state
                    .members
                    .values()
                    .map(|m| {
                        Member::default()
                            .with_member_id(str_bytes(m.id.clone()))
                            .with_instance_id(m.instance_id.clone().map(str_bytes))
                            .with_rack_id(m.rack_id.clone().map(str_bytes))
                            .with_member_epoch(m.epoch)
                            .with_client_id(str_bytes(m.client_id.clone()))
                            .with_client_host(str_bytes(m.client_host.clone()))
                            .with_subscribed_topic_names(
                                m.subscribed_names
                                    .iter()
                                    .map(|n| TopicName(str_bytes(n.clone())))
                                    .collect(),
                            )
                            .with_subscribed_topic_regex(m.subscribed_regex.clone().map(str_bytes))
                            .with_assignment(describe(&m.assigned))
                            .with_target_assignment(describe(
                                state
                                    .target
                                    .get(&m.id)
                                    .unwrap_or(&consumer::Assignment::new()),
                            ))
                    })
                    .collect();
                d
            })
            .collect();
        ConsumerGroupDescribeResponse::default().with_groups(described)
    }
}
