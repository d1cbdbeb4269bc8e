//! The group coordinator: classic consumer groups and their committed offsets.
//!
//! Group state lives in memory ([`group::Group`]); every change that must survive a restart
//! (committed offsets, a group's generation, members and assignments) is appended to the
//! internal compacted topic `__consumer_offsets` in Kafka's record format and replayed into
//! memory on start-up. A group's records go to partition `abs(hash(group)) % partitions`,
//! as in Kafka, so the cluster phase can move groups with their partitions.

pub mod consumer;
pub mod group;
pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use odradek_protocol::batch;
use tracing::{info, warn};

use crate::config::BrokerConfig;
use crate::log_manager::{LogManager, Topic};
use group::{CommittedOffset, Group, GroupLimits};
use records::{RecordKey, StoredGroup, StoredMember};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Topics only the broker writes to; clients see them flagged internal in Metadata.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC
}

/// Kafka's `Utils.abs(String.hashCode())`: the partition of `__consumer_offsets` a group's
/// records live in.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (hash & 0x7fff_ffff) % partitions.max(1)
}

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
}

impl GroupCoordinator {
    pub fn new(config: &BrokerConfig) -> Self {
        let ms = |key: &str, default: i64| {
            Duration::from_millis(config.number_or(key, default).max(0) as u64)
        };
        Self {
            groups: Mutex::new(HashMap::new()),
            limits: GroupLimits {
                min_session_timeout: ms("group.min.session.timeout.ms", 6000),
                max_session_timeout: ms("group.max.session.timeout.ms", 1_800_000),
                max_size: config
                    .number_or("group.max.size", i64::from(i32::MAX))
                    .max(1) as usize,
                initial_rebalance_delay: ms("group.initial.rebalance.delay.ms", 3000),
            },
            offsets_partitions: config.number_or("offsets.topic.num.partitions", 50).max(1) as i32,
            metadata_max_bytes: config.number_or("offset.metadata.max.bytes", 4096).max(0) as usize,
            offsets_segment_bytes: config.number_or("offsets.topic.segment.bytes", 104_857_600),
            consumer_session_timeout: ms("group.consumer.session.timeout.ms", 45_000),
            offsets_retention_ms: config
                .number_or("offsets.retention.minutes", 10080)
                .saturating_mul(60_000),
            retention_check_interval: ms("offsets.retention.check.interval.ms", 600_000),
            last_retention_check: Mutex::new(Instant::now()),
            consumer_heartbeat_interval_ms: config
                .number_or("group.consumer.heartbeat.interval.ms", 5000)
                .clamp(1, i64::from(i32::MAX)) as i32,
        }
    }

    /// Whether `offsets.retention.check.interval.ms` has passed since the last check.
    pub fn retention_check_due(&self) -> bool {
        let mut last = self.last_retention_check.lock().expect("retention clock");
        if last.elapsed() >= self.retention_check_interval {
            *last = Instant::now();
            true
        } else {
            false
        }
    }

    /// The offsets topic, created on first use as Kafka does.
    pub async fn offsets_topic(&self, logs: &LogManager) -> Option<std::sync::Arc<Topic>> {
        if let Some(t) = logs.topic(OFFSETS_TOPIC) {
            return Some(t);
        }
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                self.offsets_segment_bytes.to_string(),
            ),
        ]);
        match logs
            .create_topic(OFFSETS_TOPIC, self.offsets_partitions, configs)
            .await
        {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(error = %e, "cannot create {OFFSETS_TOPIC}");
                None
            }
        }
    }

    /// Rebuilds groups and offsets from `__consumer_offsets`.
    pub fn load(&self, logs: &LogManager) {
        let Some(topic) = logs.topic(OFFSETS_TOPIC) else {
            return;
        };
        let started = Instant::now();
        let mut groups = self.groups.lock().expect("coordinator lock");
        let mut applied = 0usize;
        for partition in &topic.partitions {
            let Some(log) = partition.lock_log() else {
                continue;
            };
            let (mut offset, end) = (log.log_start_offset(), log.log_end_offset());
            drop(log);
            while offset < end {
                let read = partition
                    .lock_log()
                    .map(|l| l.prepare_read(offset, 1 << 20, true));
                let records = match read.map(|r| r.and_then(|p| p.read())) {
                    Some(Ok(r)) if !r.records.is_empty() => r.records,
                    Some(Err(e)) => {
                        warn!(error = %e, "reading {OFFSETS_TOPIC} at {offset}");
                        break;
                    }
                    _ => break,
                };
                for (header, size) in batch::complete_batches(&records) {
                    let _ = size;
                    offset = header.last_offset() + 1;
                }
                let mut pos = 0;
                for (_, size) in batch::complete_batches(&records) {
                    for record in batch::records(&records[pos..pos + size]) {
                        if let Some(key) = record.key.and_then(RecordKey::decode) {
                            apply(&mut groups, key, record.value, Instant::now());
                            applied += 1;
                        }
                    }
                    pos += size;
                }
            }
        }
        info!(groups = groups.len(), records = applied, elapsed = ?started.elapsed(), "loaded consumer groups");
    }

    /// Appends records for `group` to its offsets partition. Returns the partition so the
    /// caller can wait for durability.
    pub fn append(
        &self,
        topic: &Topic,
        group: &str,
        records: &[(RecordKey, Option<Bytes>)],
    ) -> Result<std::sync::Arc<crate::log_manager::Partition>, String> {
        let index = partition_for(group, topic.partitions.len() as i32) as usize;
        let partition = topic
            .partitions
            .get(index)
            .cloned()
            .ok_or("offsets partition missing")?;
        let keys: Vec<_> = records.iter().map(|(k, _)| k.encode()).collect();
        let pairs: Vec<batch::KeyValue<'_>> = keys
            .iter()
            .zip(records)
            .map(|(k, (_, v))| (Some(&k[..]), v.as_deref()))
            .collect();
        let encoded = batch::encode_batch(&pairs, odradek_storage::now_ms());
        let mut log = partition.lock_log().ok_or("offsets partition offline")?;
        log.append(encoded, crate::handlers::LEADER_EPOCH)
            .map_err(|e| e.to_string())?;
        drop(log);
        partition.appended.notify_waiters();
        Ok(partition)
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
fn apply(groups: &mut HashMap<String, Group>, key: RecordKey, value: Option<&[u8]>, now: Instant) {
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => match value.and_then(records::decode_offset) {
            Some(o) => {
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group))
                    .offsets
                    .insert((topic, partition), o);
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
    }
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
}
