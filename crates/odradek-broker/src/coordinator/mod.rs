//! The group coordinator: classic consumer groups and their committed offsets.
//!
//! Group state lives in memory ([`group::Group`]); every change that must survive a restart
//! (committed offsets, a group's generation, members and assignments) is appended to the
//! internal compacted topic `__consumer_offsets` in Kafka's record format and replayed into
//! memory on start-up. A group's records go to partition `abs(hash(group)) % partitions`,
//! as in Kafka, so the cluster phase can move groups with their partitions.

pub mod consumer;
pub mod group;
pub mod ownership;
pub mod records;
pub mod transactions;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use odradek_protocol::batch::{self, BatchHeader, BatchOwner, TxnMarker};
use odradek_storage::{LockExt, StorageError};
use tracing::{error, info, warn};

use crate::config::BrokerConfig;
use crate::log_manager::{LogManager, Partition, Topic};
use group::{CommittedOffset, Group, GroupLimits};
use records::{RecordKey, StoredGroup, StoredMember};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Topics only the broker writes to; clients see them flagged internal in Metadata.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == transactions::TRANSACTION_STATE_TOPIC
}

/// An internal compacted topic, created on first use as Kafka does.
pub async fn internal_topic(
    logs: &LogManager,
    name: &str,
    partitions: i32,
    segment_bytes: i64,
) -> Option<std::sync::Arc<Topic>> {
    if let Some(t) = logs.topic(name) {
        return Some(t);
    }
    let mut configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), segment_bytes.to_string()),
    ]);
    // Replicated so that its coordinators survive the loss of a broker; a cluster with
    // fewer live brokers gets fewer replicas rather than no coordinator.
    let config = logs.broker_config();
    let (factor_key, min_isr_key) = if name == OFFSETS_TOPIC {
        ("offsets.topic.replication.factor", None)
    } else {
        (
            "transaction.state.log.replication.factor",
            Some("transaction.state.log.min.isr"),
        )
    };
    let wanted = config.int(factor_key).clamp(1, i64::from(i16::MAX));
    let live = logs.image().live_brokers().count().max(1) as i64;
    let factor = wanted.min(live);
    if factor < wanted {
        warn!(
            topic = name,
            wanted,
            live,
            "fewer live brokers than {factor_key}: creating the topic with fewer replicas"
        );
    }
    if let Some(key) = min_isr_key {
        let min_isr = config.int(key).clamp(1, factor);
        configs.insert("min.insync.replicas".to_string(), min_isr.to_string());
    }
    match logs
        .create_topic(name, partitions, factor as i16, configs, None)
        .await
    {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(error = %e, "cannot create {name}");
            None
        }
    }
}

/// Where a batch of records went: the partition and what an acknowledgement waits for
/// (its last offset, the leader epoch it was written at, the topic's
/// `min.insync.replicas`), and the offset of its first record (the others follow it).
pub struct Appended {
    pub partition: std::sync::Arc<Partition>,
    pub base_offset: i64,
    pub last_offset: i64,
    pub leader_epoch: i32,
    pub min_insync: usize,
}

/// Appends one batch of key/value records, written by `owner`, to `topic`-`index`.
pub fn append_records(
    topic: &Topic,
    index: i32,
    records: &[batch::KeyValue<'_>],
    owner: BatchOwner,
) -> Result<Appended, String> {
    let partition = usize::try_from(index)
        .ok()
        .and_then(|i| topic.partitions.get(i))
        .cloned()
        .ok_or("internal topic partition missing")?;
    let encoded = batch::encode_owned_batch(records, odradek_storage::now_ms(), owner);
    let mut log = partition
        .lock_log()
        .ok_or("internal topic partition offline")?;
    let leader_epoch = partition.leader_epoch();
    let appended = log
        .append(encoded, leader_epoch)
        .map_err(|e| e.to_string())?;
    drop(log);
    partition.appended.notify_waiters();
    Ok(Appended {
        partition,
        base_offset: appended.base_offset,
        last_offset: appended.last_offset,
        leader_epoch,
        min_insync: topic.settings.min_insync_replicas,
    })
}

/// Reads a partition from its start, calling `visit(batch, offset, key, value)` for each
/// record of each data batch, and once with no key or value for each control batch.
pub fn replay_records(
    partition: &Partition,
    mut visit: impl FnMut(&[u8], i64, Option<&[u8]>, Option<&[u8]>),
) {
    let Some(log) = partition.lock_log() else {
        return;
    };
    let (mut offset, end) = (log.log_start_offset(), log.log_end_offset());
    drop(log);
    while offset < end {
        let read = partition
            .lock_log()
            .map(|l| l.prepare_read(offset, 1 << 20, true));
        let records = match read.map(|r| r.and_then(|p| p.read())) {
            Some(Ok(r)) if !r.records.is_empty() => r.records,
            Some(Err(
                e @ StorageError::Corrupt {
                    resume_at: Some(after),
                    ..
                },
            )) => {
                // The state in that batch is lost, but not the state after it: replaying on
                // keeps every later commit (a consumer re-reads from an older offset at
                // worst), where stopping here would forget them all.
                error!(error = %e, partition = partition.index, "skipping a damaged batch of an internal topic; the commits in it are lost");
                offset = after;
                continue;
            }
            Some(Err(e)) => {
                error!(error = %e, offset, partition = partition.index, "cannot replay an internal topic partition past this offset");
                return;
            }
            _ => return,
        };
        let mut pos = 0;
        for (header, size) in batch::complete_batches(&records) {
            offset = header.last_offset() + 1;
            let bytes = &records[pos..pos + size];
            if header.is_control() {
                visit(bytes, header.base_offset(), None, None);
            } else {
                for record in batch::records(bytes) {
                    visit(bytes, record.offset, record.key, record.value);
                }
            }
            pos += size;
        }
    }
}

/// An offset committed by a transaction, applied only when the transaction commits.
#[derive(Debug, Clone)]
pub struct PendingOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: CommittedOffset,
}

/// Kafka's `Utils.abs(String.hashCode())`: the partition of `__consumer_offsets` a group's
/// records live in.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (hash & 0x7fff_ffff) % partitions.max(1)
}

/// Its locks recover from poisoning ([`LockExt`]). `last_retention_check` and
/// `pending_txn_offsets` change by whole replacements and single map inserts and removes.
/// `groups` can be left with one group part-way through a change, but the group state
/// machine is driven by its members' next requests and by the session sweep, which bring
/// such a group back to a rebalance; refusing every group on the broker instead would turn
/// one handler's panic into an outage. Kafka's coordinator, likewise, keeps serving a group
/// after an exception in one of its handlers.
pub struct GroupCoordinator {
    pub groups: Mutex<HashMap<String, Group>>,
    pub limits: GroupLimits,
    pub offsets_partitions: i32,
    pub metadata_max_bytes: usize,
    offsets_segment_bytes: i64,
    /// KIP-848 group settings.
    pub consumer_session_timeout: Duration,
    pub consumer_heartbeat_interval_ms: i32,
    pub offsets_retention_ms: i64,
    retention_check_interval: Duration,
    last_retention_check: Mutex<Instant>,
    /// Offsets from TxnOffsetCommit by producer id, waiting for their transaction's end.
    pending_txn_offsets: Mutex<HashMap<i64, Vec<PendingOffset>>>,
}

impl GroupCoordinator {
    pub fn new(config: &BrokerConfig) -> Self {
        let ms = |key: &str| Duration::from_millis(config.int(key).max(0) as u64);
        Self {
            groups: Mutex::new(HashMap::new()),
            limits: GroupLimits {
                min_session_timeout: ms("group.min.session.timeout.ms"),
                max_session_timeout: ms("group.max.session.timeout.ms"),
                max_size: config.int("group.max.size").max(1) as usize,
                initial_rebalance_delay: ms("group.initial.rebalance.delay.ms"),
            },
            offsets_partitions: config.int("offsets.topic.num.partitions").max(1) as i32,
            metadata_max_bytes: config.int("offset.metadata.max.bytes").max(0) as usize,
            offsets_segment_bytes: config.int("offsets.topic.segment.bytes"),
            consumer_session_timeout: ms("group.consumer.session.timeout.ms"),
            offsets_retention_ms: config
                .int("offsets.retention.minutes")
                .saturating_mul(60_000),
            retention_check_interval: ms("offsets.retention.check.interval.ms"),
            last_retention_check: Mutex::new(Instant::now()),
            pending_txn_offsets: Mutex::new(HashMap::new()),
            consumer_heartbeat_interval_ms: config
                .int("group.consumer.heartbeat.interval.ms")
                .clamp(1, i64::from(i32::MAX)) as i32,
        }
    }

    /// Whether `offsets.retention.check.interval.ms` has passed since the last check.
    pub fn retention_check_due(&self) -> bool {
        let mut last = self.last_retention_check.lock_or_recover();
        if last.elapsed() >= self.retention_check_interval {
            *last = Instant::now();
            true
        } else {
            false
        }
    }

    /// The offsets topic, created on first use as Kafka does.
    pub async fn offsets_topic(&self, logs: &LogManager) -> Option<std::sync::Arc<Topic>> {
        internal_topic(
            logs,
            OFFSETS_TOPIC,
            self.offsets_partitions,
            self.offsets_segment_bytes,
        )
        .await
    }

    /// Forgets the groups whose records live in `partitions` of the offsets topic (of
    /// `count` partitions): this broker no longer coordinates them.
    pub fn unload_partitions(&self, count: i32, partitions: &[i32]) {
        let mine = |group: &str| partitions.contains(&partition_for(group, count));
        let mut groups = self.groups.lock_or_recover();
        let before = groups.len();
        groups.retain(|id, _| !mine(id));
        let mut pending = self.pending_txn_offsets.lock_or_recover();
        for offsets in pending.values_mut() {
            offsets.retain(|p| !mine(&p.group));
        }
        pending.retain(|_, offsets| !offsets.is_empty());
        info!(
            ?partitions,
            groups = before - groups.len(),
            "unloaded consumer groups"
        );
    }

    /// Rebuilds the groups and offsets of `partitions` of `__consumer_offsets` from their
    /// records, replacing what was held of them: when this broker starts to coordinate
    /// them (at start-up, or when it becomes their leader). Offsets a transaction wrote
    /// apply when its commit marker is replayed; an open transaction's stay pending.
    pub fn load_partitions(&self, topic: &Topic, partitions: &[i32]) {
        let count = topic.partitions.len() as i32;
        self.unload_partitions(count, partitions);
        let started = Instant::now();
        let mut groups = self.groups.lock_or_recover();
        let mut pending: HashMap<i64, Vec<PendingOffset>> = HashMap::new();
        let mut applied = 0usize;
        let loaded_before = groups.len();
        for partition in topic
            .partitions
            .iter()
            .filter(|p| partitions.contains(&p.index))
        {
            replay_records(partition, |bytes, record_offset, key, value| {
                let Some(header) = BatchHeader::parse(bytes) else {
                    return;
                };
                if header.is_control() {
                    if let Some(marker) = TxnMarker::decode(bytes)
                        && let Some(offsets) = pending.remove(&marker.producer_id)
                        && marker.commit
                    {
                        settle(&mut groups, offsets);
                    }
                    return;
                }
                let Some(key) = key.and_then(RecordKey::decode) else {
                    return;
                };
                applied += 1;
                if header.is_transactional() {
                    if let RecordKey::Offset {
                        group,
                        topic,
                        partition,
                    } = key
                        && let Some(mut offset) = value.and_then(records::decode_offset)
                    {
                        offset.record_offset = record_offset;
                        pending
                            .entry(header.producer_id())
                            .or_default()
                            .push(PendingOffset {
                                group,
                                topic,
                                partition,
                                offset,
                            });
                    }
                    return;
                }
                apply(&mut groups, key, value, record_offset, Instant::now());
            });
        }
        let loaded_here = |id: &str| partitions.contains(&partition_for(id, count));
        for (_, group) in groups.iter_mut().filter(|(id, _)| loaded_here(id)) {
            if let Some(consumer) = group.consumer.as_mut() {
                let replayed = consumer.snapshot();
                consumer.mark_persisted(replayed);
            }
        }
        let loaded = groups.len() - loaded_before;
        drop(groups);
        let mut held = self.pending_txn_offsets.lock_or_recover();
        for (producer, offsets) in pending {
            held.entry(producer).or_default().extend(offsets);
        }
        info!(?partitions, groups = loaded, records = applied, elapsed = ?started.elapsed(), "loaded consumer groups");
    }

    /// Appends records for `group` to its offsets partition. Returns the partition so the
    /// caller can wait for durability.
    pub fn append(
        &self,
        topic: &Topic,
        group: &str,
        records: &[(RecordKey, Option<Bytes>)],
    ) -> Result<Appended, String> {
        let keys: Vec<_> = records.iter().map(|(k, _)| k.encode()).collect();
        let pairs: Vec<batch::KeyValue<'_>> = keys
            .iter()
            .zip(records)
            .map(|(k, (_, v))| (Some(&k[..]), v.as_deref()))
            .collect();
        let index = partition_for(group, topic.partitions.len() as i32);
        append_records(topic, index, &pairs, BatchOwner::BROKER)
    }

    /// Writes a transaction's offset commits as a transactional batch of `owner`: replay
    /// applies them only once the commit marker follows.
    pub fn append_txn_offsets(
        &self,
        topic: &Topic,
        group: &str,
        offsets: &[PendingOffset],
        owner: BatchOwner,
    ) -> Result<Appended, String> {
        let records: Vec<_> = offsets
            .iter()
            .map(|p| offset_record(group, &p.topic, p.partition, &p.offset))
            .collect();
        let keys: Vec<_> = records.iter().map(|(k, _)| k.encode()).collect();
        let pairs: Vec<batch::KeyValue<'_>> = keys
            .iter()
            .zip(&records)
            .map(|(k, (_, v))| (Some(&k[..]), v.as_deref()))
            .collect();
        let index = partition_for(group, topic.partitions.len() as i32);
        append_records(topic, index, &pairs, owner)
    }

    pub fn add_pending_txn_offsets(&self, producer_id: i64, offsets: Vec<PendingOffset>) {
        self.pending_txn_offsets
            .lock_or_recover()
            .entry(producer_id)
            .or_default()
            .extend(offsets);
    }

    /// A transaction marker reached offsets partition `index`: the producer's pending
    /// offsets of groups stored there are applied (commit) or dropped (abort).
    pub fn settle_txn_offsets(&self, producer_id: i64, index: i32, commit: bool) {
        let mut pending = self.pending_txn_offsets.lock_or_recover();
        let Some(all) = pending.remove(&producer_id) else {
            return;
        };
        let (here, elsewhere): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|p| partition_for(&p.group, self.offsets_partitions) == index);
        if !elsewhere.is_empty() {
            pending.insert(producer_id, elsewhere);
        }
        drop(pending);
        if commit {
            settle(&mut self.groups.lock_or_recover(), here);
        }
    }

    /// Whether a transaction has offsets pending for this group and partition: OffsetFetch
    /// with `require_stable` answers UNSTABLE_OFFSET_COMMIT until it ends (KIP-447).
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending_txn_offsets
            .lock_or_recover()
            .values()
            .flatten()
            .any(|p| p.group == group && p.topic == topic && p.partition == partition)
    }
}

/// Applies a committed transaction's offsets. When plain and transactional commits of the
/// same partition mix, the one whose record is later in the log wins, as in Kafka: a plain
/// commit written while the transaction was open stays, and replay after compaction (which
/// may keep either record) ends where the live state did.
fn settle(groups: &mut HashMap<String, Group>, offsets: Vec<PendingOffset>) {
    for p in offsets {
        groups
            .entry(p.group.clone())
            .or_insert_with(|| Group::new(&p.group))
            .commit_offset(p.topic, p.partition, p.offset);
    }
}

/// The persisted form of a group's membership.
pub fn stored_group(g: &Group) -> StoredGroup {
    let protocol = g.protocol.clone().unwrap_or_default();
    StoredGroup {
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        generation: g.generation,
        protocol: g.protocol.clone(),
        leader: g.leader.clone(),
        state_timestamp: g.state_timestamp,
        members: g
            .members
            .values()
            .map(|m| StoredMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                session_timeout_ms: m.session_timeout.as_millis() as i32,
                subscription: m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

/// Applies one replayed record to the in-memory groups.
fn apply(
    groups: &mut HashMap<String, Group>,
    key: RecordKey,
    value: Option<&[u8]>,
    record_offset: i64,
    now: Instant,
) {
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => match value.and_then(records::decode_offset) {
            Some(mut o) => {
                o.record_offset = record_offset;
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group))
                    .commit_offset(topic, partition, o);
            }
            None => {
                if let Some(g) = groups.get_mut(&group) {
                    g.offsets.remove(&(topic, partition));
                }
            }
        },
        RecordKey::Group { group } => match value.and_then(records::decode_group) {
            Some(stored) => {
                let g = groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group));
                g.generation = stored.generation;
                g.protocol_type = Some(stored.protocol_type).filter(|t| !t.is_empty());
                g.protocol = stored.protocol;
                g.leader = stored.leader;
                g.members.clear();
                for m in stored.members {
                    g.restore_member(
                        m.member_id,
                        m.instance_id,
                        m.client_id,
                        m.client_host,
                        Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                        Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                        m.subscription,
                        m.assignment,
                        now,
                    );
                }
                g.state = if g.members.is_empty() {
                    group::GroupState::Empty
                } else {
                    group::GroupState::Stable
                };
            }
            None => {
                // Tombstone: the group was deleted; its offsets were deleted with it.
                groups.remove(&group);
            }
        },
        RecordKey::ConsumerGroup { group } => match value.and_then(records::decode_epoch) {
            Some(epoch) => consumer_group(groups, &group).group_epoch = epoch,
            None => {
                if let Some(g) = groups.get_mut(&group) {
                    g.consumer = None;
                }
            }
        },
        RecordKey::ConsumerTarget { group } => {
            if let Some(epoch) = value.and_then(records::decode_epoch) {
                consumer_group(groups, &group).assignment_epoch = epoch;
            }
        }
        RecordKey::ConsumerMember { group, member } => {
            let metadata = value.and_then(records::decode_member);
            if metadata.is_some() || groups.contains_key(&group) {
                consumer_group(groups, &group).restore_member(&member, metadata, now);
            }
        }
        RecordKey::ConsumerTargetMember { group, member } => {
            match value.and_then(records::decode_target) {
                Some(target) => {
                    consumer_group(groups, &group).target.insert(member, target);
                }
                None => {
                    if let Some(c) = groups.get_mut(&group).and_then(|g| g.consumer.as_mut()) {
                        c.target.remove(&member);
                    }
                }
            }
        }
        RecordKey::ConsumerCurrent { group, member } => {
            // Its tombstone comes with the member metadata's, which removes the member.
            if let Some(current) = value.and_then(records::decode_current) {
                consumer_group(groups, &group).restore_current(&member, current, now);
            }
        }
    }
}

/// The KIP-848 state of `group`, created (with the default assignor) if replay has not
/// seen it yet.
fn consumer_group<'a>(
    groups: &'a mut HashMap<String, Group>,
    group: &str,
) -> &'a mut consumer::ConsumerState {
    let g = groups
        .entry(group.to_string())
        .or_insert_with(|| Group::new(group));
    g.protocol_type = Some("consumer".into());
    g.consumer
        .get_or_insert_with(|| consumer::ConsumerState::new(consumer::ASSIGNORS[0]))
}

/// The records that bring the log's view of `group`'s consumer state up to the live one,
/// with the snapshot to mark persisted once they are appended.
pub fn unpersisted_consumer_records(
    group: &str,
    state: &consumer::ConsumerState,
) -> (Vec<(RecordKey, Option<Bytes>)>, consumer::Snapshot) {
    let live = state.snapshot();
    (
        consumer_records(group, state.persisted(), Some(&live)),
        live,
    )
}

/// The records that take a KIP-848 group's stored state from `before` to `after` (`None`:
/// the group is deleted). Only what changed is written, in the order Kafka writes it: a
/// member's metadata before the group epoch it bumps, the target before its epoch, and a
/// leaving member's assignments before its metadata.
pub fn consumer_records(
    group: &str,
    before: &consumer::Snapshot,
    after: Option<&consumer::Snapshot>,
) -> Vec<(RecordKey, Option<Bytes>)> {
    let empty = consumer::Snapshot::default();
    let now = after.unwrap_or(&empty);
    let g = || group.to_string();
    let mut out = Vec::new();
    for id in before
        .members
        .keys()
        .filter(|id| !now.members.contains_key(*id))
    {
        let member = || id.clone();
        out.push((
            RecordKey::ConsumerCurrent {
                group: g(),
                member: member(),
            },
            None,
        ));
        out.push((
            RecordKey::ConsumerTargetMember {
                group: g(),
                member: member(),
            },
            None,
        ));
        out.push((
            RecordKey::ConsumerMember {
                group: g(),
                member: member(),
            },
            None,
        ));
    }
    for (id, (metadata, _)) in &now.members {
        if before.members.get(id).map(|m| &m.0) != Some(metadata) {
            let key = RecordKey::ConsumerMember {
                group: g(),
                member: id.clone(),
            };
            out.push((key, Some(records::encode_member(metadata).freeze())));
        }
    }
    if after.is_some() && before.group_epoch != now.group_epoch {
        let value = records::encode_epoch(now.group_epoch).freeze();
        out.push((RecordKey::ConsumerGroup { group: g() }, Some(value)));
    }
    for (id, target) in &now.target {
        if before.target.get(id) != Some(target) {
            let key = RecordKey::ConsumerTargetMember {
                group: g(),
                member: id.clone(),
            };
            out.push((key, Some(records::encode_target(target).freeze())));
        }
    }
    for id in before.target.keys() {
        if !now.target.contains_key(id) && now.members.contains_key(id) {
            let key = RecordKey::ConsumerTargetMember {
                group: g(),
                member: id.clone(),
            };
            out.push((key, None));
        }
    }
    if after.is_some() && before.assignment_epoch != now.assignment_epoch {
        let value = records::encode_epoch(now.assignment_epoch).freeze();
        out.push((RecordKey::ConsumerTarget { group: g() }, Some(value)));
    }
    for (id, (_, current)) in &now.members {
        if before.members.get(id).map(|m| &m.1) != Some(current) {
            let key = RecordKey::ConsumerCurrent {
                group: g(),
                member: id.clone(),
            };
            out.push((key, Some(records::encode_current(current).freeze())));
        }
    }
    if after.is_none() {
        out.push((RecordKey::ConsumerTarget { group: g() }, None));
        out.push((RecordKey::ConsumerGroup { group: g() }, None));
    }
    out
}

/// The offset commit record for one partition.
pub fn offset_record(
    group: &str,
    topic: &str,
    partition: i32,
    offset: &CommittedOffset,
) -> (RecordKey, Option<Bytes>) {
    let key = RecordKey::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    };
    (key, Some(records::encode_offset(offset).freeze()))
}

pub fn group_record(group: &Group) -> (RecordKey, Option<Bytes>) {
    let key = RecordKey::Group {
        group: group.id.clone(),
    };
    (
        key,
        Some(records::encode_group(&stored_group(group)).freeze()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_map_to_partitions_as_in_kafka() {
        // Values computed with Java's (s.hashCode() & 0x7fffffff) % 50.
        assert_eq!(partition_for("test-group", 50), 12);
        assert_eq!(partition_for("my-app", 50), 48);
        assert_eq!(partition_for("ü-group", 50), 12);
    }

    fn replay(records: &[(RecordKey, Option<Bytes>)], groups: &mut HashMap<String, Group>) {
        for (i, (key, value)) in records.iter().enumerate() {
            // Through the encoded form, as load reads them.
            let key = RecordKey::decode(&key.encode()).expect("known key");
            apply(groups, key, value.as_deref(), i as i64, Instant::now());
        }
    }

    fn one_topic() -> Vec<consumer::TopicInfo> {
        vec![consumer::TopicInfo {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            partitions: 4,
        }]
    }

    fn join(id: &str) -> consumer::HeartbeatRequest {
        consumer::HeartbeatRequest {
            member_id: id.into(),
            member_epoch: 0,
            instance_id: None,
            rack_id: Some("r".into()),
            rebalance_timeout: Duration::from_secs(30),
            subscribed_names: Some(vec!["t".into()]),
            subscribed_regex: None,
            server_assignor: Some("range".into()),
            owned: None,
            client_id: "c".into(),
            client_host: "/h".into(),
        }
    }

    #[test]
    fn a_change_whose_write_failed_is_written_with_the_next() {
        let topics = one_topic();
        let mut live = consumer::ConsumerState::new("uniform");
        let mut log = Vec::new();
        // Each step writes what the log lacks; `written` says whether the append worked.
        let mut step = |live: &mut consumer::ConsumerState, req, written: bool| {
            live.heartbeat(req, &topics, Instant::now());
            let (records, snapshot) = unpersisted_consumer_records("g", live);
            if written {
                log.extend(records);
                live.mark_persisted(snapshot);
            }
        };
        step(&mut live, join("a"), true);
        // b's join is lost to a failed write; a's next heartbeat changes nothing of its own.
        step(&mut live, join("b"), false);
        let mut a = join("a");
        a.member_epoch = live.members["a"].epoch;
        a.subscribed_names = None;
        step(&mut live, a, true);
        let mut groups = HashMap::new();
        replay(&log, &mut groups);
        let restored = groups["g"].consumer.as_ref().expect("consumer group");
        assert!(
            restored.members.contains_key("b"),
            "b's join was written later"
        );
        assert_eq!(restored.snapshot(), live.snapshot());
        assert_eq!(live.persisted(), &live.snapshot());
    }

    #[test]
    fn a_consumer_group_is_rebuilt_from_its_records() {
        let topics = one_topic();
        let mut live = consumer::ConsumerState::new("uniform");
        let mut log = Vec::new();
        let mut step = |live: &mut consumer::ConsumerState, req| {
            let before = live.snapshot();
            live.heartbeat(req, &topics, Instant::now());
            let records = consumer_records("g", &before, Some(&live.snapshot()));
            log.extend(records.clone());
            records
        };
        step(&mut live, join("a"));
        let b = step(&mut live, join("b"));
        // b joined while a owns everything: a is left with partitions to revoke.
        let mut a = join("a");
        a.member_epoch = live.members["a"].epoch;
        a.subscribed_names = None;
        step(&mut live, a);
        assert!(!live.members["a"].revoking.is_empty());
        assert!(
            b.iter().all(
                |(k, _)| !matches!(k, RecordKey::ConsumerMember { member, .. } if member == "a")
            ),
            "only what changed is written"
        );
        let mut groups = HashMap::new();
        replay(&log, &mut groups);
        let restored = groups["g"].consumer.as_ref().expect("consumer group");
        assert_eq!(restored.snapshot(), live.snapshot());
        assert_eq!(restored.assignor, "range");
        assert_eq!(
            restored.members["a"].rebalance_timeout,
            Duration::from_secs(30)
        );

        // a leaves: its three records are tombstoned and replay forgets it.
        let before = live.snapshot();
        live.remove_member("a");
        let leave = consumer_records("g", &before, Some(&live.snapshot()));
        assert_eq!(leave.iter().filter(|(_, v)| v.is_none()).count(), 3);
        replay(&leave, &mut groups);
        let restored = groups["g"].consumer.as_ref().expect("consumer group");
        assert!(!restored.members.contains_key("a"));
        assert_eq!(restored.snapshot(), live.snapshot());
        // Deleting the group drops its KIP-848 state.
        replay(&consumer_records("g", &live.snapshot(), None), &mut groups);
        assert!(groups["g"].consumer.is_none());
    }
}
