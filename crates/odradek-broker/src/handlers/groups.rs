//! Consumer group APIs (classic protocol) on top of the group coordinator.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;

use super::cluster::ALL_GROUP_OPERATIONS;
use crate::Broker;
use crate::broker::{Reply, RequestContext, str_bytes};
use crate::coordinator::group::{
    CommittedOffset, Group, GroupState, JoinRequest, JoinResult, Outcome, SyncResult,
};
use crate::coordinator::records::RecordKey;
use crate::coordinator::{self, OFFSETS_TOPIC};
use crate::log_manager::Topic;

/// The two coordinators a broker may be for a key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CoordinatorKind {
    /// Consumer groups: `__consumer_offsets`.
    Group,
    /// Transactional ids: `__transaction_state`.
    Transaction,
}
use odradek_storage::LockExt;

/// How long a coordinator waits for its records to reach the in-sync replicas (Kafka's
/// `offsets.commit.timeout.ms` default).
const COORDINATOR_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// A partition and its committed offset, if any.
type PartitionOffset = (i32, Option<CommittedOffset>);

fn code(e: Option<ResponseError>) -> i16 {
    e.map_or(0, |e| e.code())
}

fn join_response(r: JoinResult) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code(r.error))
        .with_generation_id(r.generation)
        .with_protocol_type(r.protocol_type.map(str_bytes))
        .with_protocol_name(r.protocol_name.map(str_bytes))
        .with_leader(str_bytes(r.leader))
        .with_skip_assignment(r.skip_assignment)
        .with_member_id(str_bytes(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(instance.map(str_bytes))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

/// JoinGroup v0-v6 have no protocol type/name fields; v0-v4 no nullable protocol name.
fn fit_join_to_version(mut response: JoinGroupResponse, version: i16) -> JoinGroupResponse {
    if version < 7 {
        response.protocol_type = None;
        if response.protocol_name.is_none() {
            response.protocol_name = Some(str_bytes(""));
        }
    }
    if version < 9 {
        response.skip_assignment = false;
    }
    if version < 5 {
        for m in &mut response.members {
            m.group_instance_id = None;
        }
    }
    response
}

fn sync_response(r: SyncResult, version: i16) -> SyncGroupResponse {
    let mut response = SyncGroupResponse::default()
        .with_error_code(code(r.error))
        .with_assignment(r.assignment);
    if version >= 5 {
        response.protocol_type = r.protocol_type.map(str_bytes);
        response.protocol_name = r.protocol_name.map(str_bytes);
    }
    response
}

impl Broker {
    /// Completes once an internal topic's records are on every in-sync replica's disk (a
    /// coordinator that moves to another replica finds them there), as Kafka's
    /// coordinators append with acks=all.
    pub(crate) async fn durable(&self, appended: &coordinator::Appended) -> bool {
        self.acknowledged(
            &appended.partition,
            appended.last_offset,
            appended.leader_epoch,
            appended.min_insync,
            false,
            COORDINATOR_WRITE_TIMEOUT,
        )
        .await
        .is_ok()
    }

    /// Appends a group's metadata (after a rebalance step) and lets it reach disk in the
    /// background: a member learns its assignment from the response, and a lost record
    /// only means members rejoin after a crash.
    fn persist_group(&self, group: &Group) {
        // The next generation's record replaces this one whole, so a failed write needs
        // no retry.
        let _ = self.persist(&group.id, &[coordinator::group_record(group)]);
    }

    /// Appends `records` of `group` and lets them reach disk in the background. Whether
    /// they were appended.
    fn persist(&self, group: &str, records: &[(RecordKey, Option<Bytes>)]) -> bool {
        let Some(topic) = self.logs.topic(OFFSETS_TOPIC) else {
            return false;
        };
        match self.coordinator.append(&topic, group, records) {
            Ok(appended) => {
                self.logs.sync(&appended.partition, None);
                true
            }
            Err(e) => {
                tracing::warn!(%group, error = %e, "cannot persist group metadata");
                false
            }
        }
    }

    pub(crate) fn sweep_groups(&self) {
        let now = Instant::now();
        let mut groups = self.coordinator.groups.lock_or_recover();
        for group in groups.values_mut() {
            if let Some(consumer) = group.consumer.as_mut() {
                let expired = consumer.expire(now, self.coordinator.consumer_session_timeout);
                if !expired.is_empty() {
                    tracing::info!(group = %group.id, members = ?expired, "session timeout: removed consumer-protocol members");
                    let (records, live) =
                        coordinator::unpersisted_consumer_records(&group.id, consumer);
                    if self.persist(&group.id, &records) {
                        consumer.mark_persisted(live);
                    }
                }
                continue;
            }
            let generation = group.generation;
            let expired = group.expire(now, &self.coordinator.limits);
            if !expired.is_empty() {
                tracing::info!(group = %group.id, members = ?expired, "session timeout: removed members");
            }
            if group.generation != generation {
                self.persist_group(group);
            }
        }
        if self.coordinator.retention_check_due() {
            self.expire_offsets(&mut groups);
        }
    }

    /// `offsets.retention.minutes`: the offsets of a group that has been empty that long
    /// (counted from when it became empty or from the last commit, whichever is later) are
    /// deleted, and so is the group once nothing is left of it (KIP-211).
    fn expire_offsets(&self, groups: &mut std::collections::HashMap<String, Group>) {
        let now = odradek_storage::now_ms();
        let retention = self.coordinator.offsets_retention_ms;
        let Some(topic) = self.logs.topic(OFFSETS_TOPIC) else {
            return;
        };
        let mut emptied = Vec::new();
        for group in groups.values_mut().filter(|g| g.is_empty()) {
            let since = group.state_timestamp;
            let expired: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|(_, o)| now.saturating_sub(since.max(o.commit_timestamp)) >= retention)
                .map(|(k, _)| k.clone())
                .collect();
            if expired.is_empty() {
                continue;
            }
            let mut records: Vec<(RecordKey, Option<Bytes>)> = expired
                .iter()
                .map(|(t, p)| {
                    (
                        RecordKey::Offset {
                            group: group.id.clone(),
                            topic: t.clone(),
                            partition: *p,
                        },
                        None,
                    )
                })
                .collect();
            for key in &expired {
                group.offsets.remove(key);
            }
            if group.offsets.is_empty() {
                records.push((
                    RecordKey::Group {
                        group: group.id.clone(),
                    },
                    None,
                ));
                if let Some(c) = &group.consumer {
                    records.extend(coordinator::consumer_records(
                        &group.id,
                        c.persisted(),
                        None,
                    ));
                }
                emptied.push(group.id.clone());
            }
            tracing::info!(group = %group.id, offsets = expired.len(), "expired committed offsets");
            match self.coordinator.append(&topic, &group.id, &records) {
                Ok(appended) => self.logs.sync(&appended.partition, None),
                Err(e) => {
                    tracing::warn!(group = %group.id, error = %e, "cannot write offset expiry")
                }
            }
        }
        for id in emptied {
            groups.remove(&id);
        }
    }

    /// Whether this broker coordinates `key` (a group id, or a transactional id): it leads
    /// the partition of the internal topic the key hashes to, the one FindCoordinator
    /// names. Else NOT_COORDINATOR, which sends the client back to FindCoordinator, or
    /// COORDINATOR_NOT_AVAILABLE while that partition has no leader. Before the internal
    /// topic exists nobody coordinates anything yet, so the request goes on (and creates it).
    pub(crate) fn check_coordinator(
        &self,
        kind: CoordinatorKind,
        key: &str,
    ) -> Result<(), ResponseError> {
        let name = match kind {
            CoordinatorKind::Group => OFFSETS_TOPIC,
            CoordinatorKind::Transaction => coordinator::transactions::TRANSACTION_STATE_TOPIC,
        };
        let Some(topic) = self.logs.topic(name) else {
            return Ok(());
        };
        let partition = coordinator::partition_for(key, topic.partitions.len() as i32);
        match self.logs.leadership(name, partition) {
            Some((leader, epoch)) if leader == self.node_id => {
                if self.ownership.serves(name, partition, epoch) {
                    Ok(())
                } else {
                    Err(ResponseError::CoordinatorLoadInProgress)
                }
            }
            Some(_) => Err(ResponseError::NotCoordinator),
            None => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// The coordinator of `key` in internal `topic`: the leader of the partition the key
    /// hashes to (None while it has none).
    fn coordinator_of(&self, topic: &Topic, key: &str) -> Option<i32> {
        let partition = coordinator::partition_for(key, topic.partitions.len() as i32);
        self.logs.leader(&topic.name, partition)
    }

    pub(crate) async fn find_coordinator(
        &self,
        request: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let keys: Vec<String> = if version >= 4 {
            request
                .coordinator_keys
                .iter()
                .map(|k| k.to_string())
                .collect()
        } else {
            vec![request.key.to_string()]
        };
        let mut coordinators = Vec::new();
        for key in keys {
            let topic = match request.key_type {
                KEY_TYPE_GROUP => self.offsets_topic().await,
                KEY_TYPE_TRANSACTION => self.transaction_topic().await,
                _ => {
                    coordinators.push(
                        Coordinator::default()
                            .with_key(str_bytes(key))
                            .with_node_id((-1).into())
                            .with_port(-1)
                            .with_error_code(ResponseError::InvalidRequest.code()),
                    );
                    continue;
                }
            };
            let endpoint = topic.and_then(|topic| {
                let leader = self.coordinator_of(&topic, &key)?;
                self.endpoints([leader]).pop()
            });
            let mut c = Coordinator::default().with_key(str_bytes(key));
            match endpoint {
                Some((id, host, port, _)) => {
                    c = c
                        .with_node_id(id.into())
                        .with_host(str_bytes(host))
                        .with_port(port);
                }
                None => {
                    let error = ResponseError::CoordinatorNotAvailable;
                    c = c
                        .with_error_code(error.code())
                        .with_node_id((-1).into())
                        .with_port(-1)
                        .with_error_message(Some(str_bytes(error.to_string())));
                }
            }
            coordinators.push(c);
        }
        if version >= 4 {
            return FindCoordinatorResponse::default().with_coordinators(coordinators);
        }
        // Below v4 the request has one key, so there is one coordinator.
        let c = coordinators.pop().unwrap_or_default();
        let mut response = FindCoordinatorResponse::default()
            .with_error_code(c.error_code)
            .with_node_id(c.node_id)
            .with_host(c.host)
            .with_port(c.port);
        if version >= 1 {
            response.error_message = c.error_message;
        }
        response
    }

    pub(crate) async fn join_group(
        &self,
        request: JoinGroupRequest,
        context: &RequestContext,
    ) -> Reply {
        let version = context.version;
        let reply = |r: JoinResult| {
            Reply::now(ResponseKind::JoinGroup(fit_join_to_version(
                join_response(r),
                version,
            )))
        };
        let group_id = request.group_id.to_string();
        let fail = |e: ResponseError| {
            reply(JoinResult {
                error: Some(e),
                generation: -1,
                member_id: request.member_id.to_string(),
                ..JoinResult::default()
            })
        };
        if group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        if self.offsets_topic().await.is_none() {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if let Err(e) = self.check_coordinator(CoordinatorKind::Group, &group_id) {
            return fail(e);
        }
        let session_timeout = Duration::from_millis(request.session_timeout_ms.max(0) as u64);
        let join = JoinRequest {
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id: context.client_id.clone(),
            client_host: context.client_host.clone(),
            session_timeout,
            rebalance_timeout: if version >= 1 {
                Duration::from_millis(request.rebalance_timeout_ms.max(0) as u64)
            } else {
                session_timeout
            },
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            require_known_member_id: version >= 4,
        };
        let now = Instant::now();
        let outcome = {
            let mut groups = self.coordinator.groups.lock_or_recover();
            let group = groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(&group_id));
            let generation = group.generation;
            let outcome = group.join(join, now, &self.coordinator.limits);
            group.try_complete_join(now);
            if group.generation != generation {
                self.persist_group(group);
            }
            outcome
        };
        match outcome {
            Outcome::Now(r) => reply(r),
            Outcome::Wait(rx) => {
                let member_id = request.member_id.to_string();
                Reply::Later(Box::pin(async move {
                    let r = rx.await.unwrap_or_else(|_| JoinResult {
                        error: Some(ResponseError::RebalanceInProgress),
                        generation: -1,
                        member_id,
                        ..JoinResult::default()
                    });
                    ResponseKind::JoinGroup(fit_join_to_version(join_response(r), version))
                }))
            }
        }
    }

    pub(crate) fn sync_group(&self, request: SyncGroupRequest, version: i16) -> Reply {
        let now = Instant::now();
        let outcome = if let Err(e) =
            self.check_coordinator(CoordinatorKind::Group, request.group_id.as_str())
        {
            Outcome::Now(SyncResult {
                error: Some(e),
                ..SyncResult::default()
            })
        } else {
            let mut groups = self.coordinator.groups.lock_or_recover();
            match groups.get_mut(request.group_id.as_str()) {
                None => Outcome::Now(SyncResult {
                    error: Some(ResponseError::UnknownMemberId),
                    ..SyncResult::default()
                }),
                Some(group) => {
                    let assignments = request
                        .assignments
                        .iter()
                        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                        .collect();
                    let (outcome, stable) = group.sync(
                        &request.member_id,
                        request.group_instance_id.as_deref(),
                        request.generation_id,
                        (
                            request.protocol_type.as_deref(),
                            request.protocol_name.as_deref(),
                        ),
                        assignments,
                        now,
                    );
                    if stable {
                        self.persist_group(group);
                    }
                    outcome
                }
            }
        };
        match outcome {
            Outcome::Now(r) => Reply::now(ResponseKind::SyncGroup(sync_response(r, version))),
            Outcome::Wait(rx) => Reply::Later(Box::pin(async move {
                let r = rx.await.unwrap_or_else(|_| SyncResult {
                    error: Some(ResponseError::RebalanceInProgress),
                    ..SyncResult::default()
                });
                ResponseKind::SyncGroup(sync_response(r, version))
            })),
        }
    }

    pub(crate) fn heartbeat(&self, request: HeartbeatRequest) -> HeartbeatResponse {
        if let Err(e) = self.check_coordinator(CoordinatorKind::Group, request.group_id.as_str()) {
            return HeartbeatResponse::default().with_error_code(e.code());
        }
        let mut groups = self.coordinator.groups.lock_or_recover();
        let error = match groups.get_mut(request.group_id.as_str()) {
            None => Some(ResponseError::UnknownMemberId),
            Some(g) => g.heartbeat(
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
                Instant::now(),
            ),
        };
        HeartbeatResponse::default().with_error_code(code(error))
    }

    pub(crate) fn leave_group(
        &self,
        request: LeaveGroupRequest,
        version: i16,
    ) -> LeaveGroupResponse {
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|i| i.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(request.member_id.to_string(), None)]
        };
        if let Err(e) = self.check_coordinator(CoordinatorKind::Group, request.group_id.as_str()) {
            return LeaveGroupResponse::default().with_error_code(e.code());
        }
        let now = Instant::now();
        let mut groups = self.coordinator.groups.lock_or_recover();
        let Some(group) = groups.get_mut(request.group_id.as_str()) else {
            return LeaveGroupResponse::default()
                .with_error_code(ResponseError::UnknownMemberId.code());
        };
        let generation = group.generation;
        let results: Vec<MemberResponse> = leaving
            .into_iter()
            .map(|(member, instance)| {
                let error =
                    group.leave(&member, instance.as_deref(), now, &self.coordinator.limits);
                MemberResponse::default()
                    .with_member_id(str_bytes(member))
                    .with_group_instance_id(instance.map(str_bytes))
                    .with_error_code(code(error))
            })
            .collect();
        if group.generation != generation {
            self.persist_group(group);
        }
        if version >= 3 {
            LeaveGroupResponse::default().with_members(results)
        } else {
            LeaveGroupResponse::default()
                .with_error_code(results.first().map_or(0, |r| r.error_code))
        }
    }

    /// The (topic id, partition) pairs an offset commit names, for KIP-1251's check of
    /// the member's assignment epochs; unknown topics are left out (they fail on their own).
    pub(crate) fn committed_partitions<'a, P: Iterator<Item = i32>>(
        &self,
        topics: impl Iterator<Item = (&'a str, P)>,
    ) -> Vec<(uuid::Uuid, i32)> {
        topics
            .filter_map(|(name, partitions)| Some((self.logs.topic(name)?.id, partitions)))
            .flat_map(|(id, partitions)| partitions.map(move |p| (id, p)))
            .collect()
    }

    pub(crate) async fn offset_commit(&self, request: OffsetCommitRequest) -> Reply {
        let group_id = request.group_id.to_string();
        let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
        let mut accepted: Vec<(usize, usize, String, i32, CommittedOffset)> = Vec::new();
        let group_error = if group_id.is_empty() {
            Some(ResponseError::InvalidGroupId)
        } else if self.offsets_topic().await.is_none() {
            Some(ResponseError::CoordinatorNotAvailable)
        } else if let Err(e) = self.check_coordinator(CoordinatorKind::Group, &group_id) {
            Some(e)
        } else {
            let mut groups = self.coordinator.groups.lock_or_recover();
            let simple = request.generation_id_or_member_epoch < 0 && request.member_id.is_empty();
            match groups.get_mut(&group_id) {
                Some(g) => g.check_commit(
                    &request.member_id,
                    request.group_instance_id.as_deref(),
                    request.generation_id_or_member_epoch,
                    &self.committed_partitions(request.topics.iter().map(|t| {
                        (
                            t.name.as_str(),
                            t.partitions.iter().map(|p| p.partition_index),
                        )
                    })),
                    Instant::now(),
                ),
                None if simple => {
                    groups.insert(group_id.clone(), Group::new(&group_id));
                    None
                }
                None => Some(ResponseError::IllegalGeneration),
            }
        };
        let now = odradek_storage::now_ms();
        for (t, topic) in request.topics.iter().enumerate() {
            let known = self.logs.topic(topic.name.as_str());
            let mut partitions = Vec::new();
            for (p, part) in topic.partitions.iter().enumerate() {
                let metadata = part
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let error = group_error.or_else(|| {
                    let exists = known.as_ref().is_some_and(|k| {
                        part.partition_index >= 0
                            && (part.partition_index as usize) < k.partitions.len()
                    });
                    if !exists {
                        Some(ResponseError::UnknownTopicOrPartition)
                    } else if metadata.len() > self.coordinator.metadata_max_bytes {
                        Some(ResponseError::OffsetMetadataTooLarge)
                    } else {
                        None
                    }
                });
                if error.is_none() {
                    let offset = CommittedOffset {
                        offset: part.committed_offset,
                        leader_epoch: part.committed_leader_epoch,
                        metadata,
                        commit_timestamp: now,
                        // Known once appended, below.
                        record_offset: -1,
                    };
                    accepted.push((t, p, topic.name.to_string(), part.partition_index, offset));
                }
                partitions.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(part.partition_index)
                        .with_error_code(code(error)),
                );
            }
            topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions),
            );
        }
        if accepted.is_empty() {
            return Reply::now(ResponseKind::OffsetCommit(
                OffsetCommitResponse::default().with_topics(topics),
            ));
        }
        let records: Vec<_> = accepted
            .iter()
            .map(|(_, _, t, p, o)| coordinator::offset_record(&group_id, t, *p, o))
            .collect();
        let appended = match self.logs.topic(OFFSETS_TOPIC) {
            Some(topic) => self.coordinator.append(&topic, &group_id, &records),
            None => Err("offsets topic missing".into()),
        };
        let durable = match appended {
            Ok(appended) => {
                // The records are in `accepted`'s order, one per partition.
                for (at, (.., offset)) in (appended.base_offset..).zip(&mut accepted) {
                    offset.record_offset = at;
                }
                Ok(appended)
            }
            Err(e) => Err(e),
        };
        let coordinator_groups = &self.coordinator.groups;
        // The in-memory offsets change only once the records are durable.
        let commit_now = |ok: bool, topics: &mut Vec<OffsetCommitResponseTopic>| {
            if ok {
                let mut groups = coordinator_groups.lock_or_recover();
                let group = groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(&group_id));
                for (_, _, t, p, o) in &accepted {
                    group.commit_offset(t.clone(), *p, o.clone());
                }
            } else {
                for (t, p, ..) in &accepted {
                    topics[*t].partitions[*p].error_code =
                        ResponseError::CoordinatorNotAvailable.code();
                }
            }
        };
        match durable {
            Err(e) => {
                tracing::warn!(group = %group_id, error = %e, "offset commit append failed");
                commit_now(false, &mut topics);
                Reply::now(ResponseKind::OffsetCommit(
                    OffsetCommitResponse::default().with_topics(topics),
                ))
            }
            Ok(appended) => {
                let ok = self.durable(&appended).await;
                commit_now(ok, &mut topics);
                Reply::now(ResponseKind::OffsetCommit(
                    OffsetCommitResponse::default().with_topics(topics),
                ))
            }
        }
    }

    /// Committed offsets of one group: for the requested partitions, or all when `None`.
    fn group_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<(String, Vec<PartitionOffset>)> {
        let groups = self.coordinator.groups.lock_or_recover();
        let group = groups.get(group_id);
        match wanted {
            Some(wanted) => wanted
                .into_iter()
                .map(|(topic, parts)| {
                    let found = parts
                        .into_iter()
                        .map(|p| {
                            (
                                p,
                                group.and_then(|g| g.offsets.get(&(topic.clone(), p)).cloned()),
                            )
                        })
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut by_topic: std::collections::BTreeMap<
                    String,
                    Vec<(i32, Option<CommittedOffset>)>,
                > = Default::default();
                for ((t, p), o) in group.map(|g| g.offsets.iter()).into_iter().flatten() {
                    by_topic
                        .entry(t.clone())
                        .or_default()
                        .push((*p, Some(o.clone())));
                }
                for parts in by_topic.values_mut() {
                    parts.sort_by_key(|(p, _)| *p);
                }
                by_topic.into_iter().collect()
            }
        }
    }

    pub(crate) fn offset_fetch(
        &self,
        request: OffsetFetchRequest,
        version: i16,
    ) -> OffsetFetchResponse {
        // KIP-447: with require_stable, offsets a transaction has not yet committed are
        // answered UNSTABLE_OFFSET_COMMIT (retriable) rather than with the older value.
        let unstable = |group: &str, topic: &str, partition: i32| {
            if request.require_stable
                && self.coordinator.has_pending_offset(group, topic, partition)
            {
                ResponseError::UnstableOffsetCommit.code()
            } else {
                0
            }
        };
        let fill = |o: &Option<CommittedOffset>| match o {
            Some(o) => (o.offset, o.leader_epoch, o.metadata.clone()),
            None => (-1, -1, String::new()),
        };
        if version >= 8 {
            let groups = request
                .groups
                .iter()
                .map(|g| {
                    if let Err(e) =
                        self.check_coordinator(CoordinatorKind::Group, g.group_id.as_str())
                    {
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(e.code());
                    }
                    let wanted = g.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                            .collect()
                    });
                    let topics = self
                        .group_offsets(g.group_id.as_str(), wanted)
                        .into_iter()
                        .map(|(topic, parts)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(str_bytes(topic.clone())))
                                .with_partitions(
                                    parts
                                        .iter()
                                        .map(|(p, o)| {
                                            let (offset, epoch, metadata) = fill(o);
                                            OffsetFetchResponsePartitions::default()
                                                .with_error_code(unstable(
                                                    g.group_id.as_str(),
                                                    &topic,
                                                    *p,
                                                ))
                                                .with_partition_index(*p)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(Some(str_bytes(metadata)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_topics(topics)
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        if let Err(e) = self.check_coordinator(CoordinatorKind::Group, request.group_id.as_str()) {
            // The top-level error code came with v2; v1 has it on each partition asked for.
            if version >= 2 {
                return OffsetFetchResponse::default().with_error_code(e.code());
            }
            let topics = request
                .topics
                .iter()
                .flatten()
                .map(|t| {
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partition_indexes
                                .iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(*p)
                                        .with_committed_offset(-1)
                                        .with_error_code(e.code())
                                })
                                .collect(),
                        )
                })
                .collect();
            return OffsetFetchResponse::default().with_topics(topics);
        }
        let wanted = request.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        let topics = self
            .group_offsets(request.group_id.as_str(), wanted)
            .into_iter()
            .map(|(topic, parts)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(topic.clone())))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|(p, o)| {
                                let (offset, epoch, metadata) = fill(o);
                                let mut partition = OffsetFetchResponsePartition::default()
                                    .with_error_code(unstable(
                                        request.group_id.as_str(),
                                        &topic,
                                        *p,
                                    ))
                                    .with_partition_index(*p)
                                    .with_committed_offset(offset)
                                    .with_metadata(Some(str_bytes(metadata)));
                                if version >= 5 {
                                    partition.committed_leader_epoch = epoch;
                                }
                                partition
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }

    pub(crate) fn list_groups(&self, request: ListGroupsRequest) -> ListGroupsResponse {
        let groups = self.coordinator.groups.lock_or_recover();
        let mut listed: Vec<ListedGroup> = groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .filter(|g| {
                request.states_filter.is_empty()
                    || request
                        .states_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .filter(|_| {
                request.types_filter.is_empty()
                    || request
                        .types_filter
                        .iter()
                        .any(|t| t.eq_ignore_ascii_case("classic"))
            })
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(GroupId(str_bytes(g.id.clone())))
                    .with_protocol_type(str_bytes(g.protocol_type.clone().unwrap_or_default()))
                    .with_group_state(str_bytes(g.state_name()))
                    .with_group_type(str_bytes(g.group_type()))
            })
            .collect();
        listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        ListGroupsResponse::default().with_groups(listed)
    }

    pub(crate) fn describe_groups(
        &self,
        request: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let groups = self.coordinator.groups.lock_or_recover();
        let described = request
            .groups
            .iter()
            .map(|id| {
                let mut d = DescribedGroup::default().with_group_id(id.clone());
                if let Err(e) = self.check_coordinator(CoordinatorKind::Group, id.as_str()) {
                    d.error_code = e.code();
                    return d;
                }
                if version >= 3 {
                    d.authorized_operations = if request.include_authorized_operations {
                        ALL_GROUP_OPERATIONS
                    } else {
                        i32::MIN
                    };
                }
                let Some(g) = groups
                    .get(id.as_str())
                    .filter(|g| g.state != GroupState::Dead)
                else {
                    d.group_state = str_bytes("Dead");
                    if version >= 6 {
                        d.error_code = ResponseError::GroupIdNotFound.code();
                        d.error_message =
                            Some(str_bytes(format!("Group {} not found.", id.as_str())));
                    }
                    return d;
                };
                if g.consumer.is_some() {
                    d.group_state = str_bytes("Dead");
                    if version >= 6 {
                        d.error_code = ResponseError::GroupIdNotFound.code();
                        d.error_message = Some(str_bytes(format!(
                            "Group {} is not a classic group.",
                            id.as_str()
                        )));
                    }
                    return d;
                }
                let stable = g.state == GroupState::Stable;
                let protocol = g.protocol.clone().unwrap_or_default();
                d.group_state = str_bytes(g.state.name());
                d.protocol_type = str_bytes(g.protocol_type.clone().unwrap_or_default());
                d.protocol_data = str_bytes(if stable {
                    protocol.clone()
                } else {
                    String::new()
                });
                d.members = g
                    .members
                    .values()
                    .map(|m| {
                        let mut member = DescribedGroupMember::default()
                            .with_member_id(str_bytes(m.id.clone()))
                            .with_client_id(str_bytes(m.client_id.clone()))
                            .with_client_host(str_bytes(m.client_host.clone()));
                        if version >= 4 {
                            member.group_instance_id = m.instance_id.clone().map(str_bytes);
                        }
                        if stable {
                            member.member_metadata = m
                                .protocols
                                .iter()
                                .find(|(n, _)| *n == protocol)
                                .map(|(_, b)| b.clone())
                                .unwrap_or_default();
                            member.member_assignment = m.assignment.clone();
                        }
                        member
                    })
                    .collect();
                d
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(described)
    }

    /// Writes tombstones for `keys` of `group_id` and waits until they are durable.
    async fn write_tombstones(&self, group_id: &str, keys: Vec<RecordKey>) -> bool {
        let Some(topic) = self.logs.topic(OFFSETS_TOPIC) else {
            return true;
        };
        let records: Vec<(RecordKey, Option<Bytes>)> =
            keys.into_iter().map(|k| (k, None)).collect();
        if records.is_empty() {
            return true;
        }
        match self.coordinator.append(&topic, group_id, &records) {
            Ok(appended) => self.durable(&appended).await,
            Err(_) => false,
        }
    }

    pub(crate) async fn delete_groups(&self, request: DeleteGroupsRequest) -> Reply {
        let mut results = Vec::new();
        for id in &request.groups_names {
            let group_id = id.to_string();
            let keys = {
                let coordinated = self.check_coordinator(CoordinatorKind::Group, &group_id);
                let groups = self.coordinator.groups.lock_or_recover();
                match groups.get(&group_id) {
                    _ if group_id.is_empty() => Err(ResponseError::InvalidGroupId),
                    _ if coordinated.is_err() => coordinated.map(|()| Vec::new()),
                    None => Err(ResponseError::GroupIdNotFound),
                    Some(g) if g.state == GroupState::Dead => Err(ResponseError::GroupIdNotFound),
                    Some(g) if !g.is_empty() => Err(ResponseError::NonEmptyGroup),
                    Some(g) => {
                        let mut keys: Vec<RecordKey> = g
                            .offsets
                            .keys()
                            .map(|(t, p)| RecordKey::Offset {
                                group: group_id.clone(),
                                topic: t.clone(),
                                partition: *p,
                            })
                            .collect();
                        keys.push(RecordKey::Group {
                            group: group_id.clone(),
                        });
                        if let Some(c) = &g.consumer {
                            let all = coordinator::consumer_records(&group_id, c.persisted(), None);
                            keys.extend(all.into_iter().map(|(k, _)| k));
                        }
                        Ok(keys)
                    }
                }
            };
            let error = match keys {
                Err(e) => Some(e),
                Ok(keys) => {
                    if self.write_tombstones(&group_id, keys).await {
                        if let Some(mut g) =
                            self.coordinator.groups.lock_or_recover().remove(&group_id)
                        {
                            g.kill();
                        }
                        None
                    } else {
                        Some(ResponseError::CoordinatorNotAvailable)
                    }
                }
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(id.clone())
                    .with_error_code(code(error)),
            );
        }
        Reply::now(ResponseKind::DeleteGroups(
            DeleteGroupsResponse::default().with_results(results),
        ))
    }

    pub(crate) async fn offset_delete(&self, request: OffsetDeleteRequest) -> Reply {
        let group_id = request.group_id.to_string();
        let mut topics = Vec::new();
        let mut doomed = Vec::new();
        if let Err(e) = self.check_coordinator(CoordinatorKind::Group, &group_id) {
            return Reply::now(ResponseKind::OffsetDelete(
                OffsetDeleteResponse::default().with_error_code(e.code()),
            ));
        }
        {
            let groups = self.coordinator.groups.lock_or_recover();
            let Some(group) = groups
                .get(&group_id)
                .filter(|g| g.state != GroupState::Dead)
            else {
                let code = if group_id.is_empty() {
                    ResponseError::InvalidGroupId
                } else {
                    ResponseError::GroupIdNotFound
                };
                return Reply::now(ResponseKind::OffsetDelete(
                    OffsetDeleteResponse::default().with_error_code(code.code()),
                ));
            };
            for topic in &request.topics {
                let name = topic.name.to_string();
                let subscribed = group.is_subscribed_to(&name);
                let known = self.logs.topic(&name);
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let exists = known.as_ref().is_some_and(|k| {
                            p.partition_index >= 0
                                && (p.partition_index as usize) < k.partitions.len()
                        });
                        let error = if !exists {
                            Some(ResponseError::UnknownTopicOrPartition)
                        } else if subscribed {
                            Some(ResponseError::GroupSubscribedToTopic)
                        } else {
                            if group
                                .offsets
                                .contains_key(&(name.clone(), p.partition_index))
                            {
                                doomed.push((name.clone(), p.partition_index));
                            }
                            None
                        };
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code(error))
                    })
                    .collect();
                topics.push(
                    OffsetDeleteResponseTopic::default()
                        .with_name(topic.name.clone())
                        .with_partitions(partitions),
                );
            }
        }
        let keys = doomed
            .iter()
            .map(|(t, p)| RecordKey::Offset {
                group: group_id.clone(),
                topic: t.clone(),
                partition: *p,
            })
            .collect();
        if !self.write_tombstones(&group_id, keys).await {
            return Reply::now(ResponseKind::OffsetDelete(
                OffsetDeleteResponse::default()
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code()),
            ));
        }
        if let Some(g) = self.coordinator.groups.lock_or_recover().get_mut(&group_id) {
            for key in &doomed {
                g.offsets.remove(key);
            }
        }
        Reply::now(ResponseKind::OffsetDelete(
            OffsetDeleteResponse::default().with_topics(topics),
        ))
    }
}
