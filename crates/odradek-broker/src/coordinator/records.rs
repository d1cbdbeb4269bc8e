//! Kafka's `__consumer_offsets` record formats (non-flexible versions), so the topic's
//! contents mean the same as in Kafka:
//!
//! - offset commit: key v1 `(group, topic, partition)`, value v3
//!   `(offset, leader epoch, metadata, commit timestamp)`;
//! - group metadata: key v2 `(group)`, value v3 `(protocol type, generation, protocol,
//!   leader, state timestamp, members[])`.
//!
//! - KIP-848 consumer groups (flexible values: compact strings and arrays, tagged fields):
//!   group epoch key v3, member metadata key v5, target assignment epoch key v6, a member's
//!   target assignment key v7, a member's current assignment key v8; all values version 0.
//!   Kafka 4.1 no longer writes the partition metadata record (key v4), so neither do we.
//!
//! A null value is a tombstone: the offset, group or member was deleted. Keys of other
//! versions decode to `None` and are skipped by replay.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

use super::consumer::Assignment;
use super::group::CommittedOffset;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;
const CONSUMER_GROUP_KEY_VERSION: i16 = 3;
const CONSUMER_MEMBER_KEY_VERSION: i16 = 5;
const CONSUMER_TARGET_KEY_VERSION: i16 = 6;
const CONSUMER_TARGET_MEMBER_KEY_VERSION: i16 = 7;
const CONSUMER_CURRENT_KEY_VERSION: i16 = 8;
const CONSUMER_VALUE_VERSION: i16 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
    /// A KIP-848 group's epoch.
    ConsumerGroup {
        group: String,
    },
    /// A KIP-848 member's subscription and client details.
    ConsumerMember {
        group: String,
        member: String,
    },
    /// The epoch of a KIP-848 group's target assignment.
    ConsumerTarget {
        group: String,
    },
    /// One member's share of the target assignment.
    ConsumerTargetMember {
        group: String,
        member: String,
    },
    /// What a member currently owns and must still revoke, and its epoch.
    ConsumerCurrent {
        group: String,
        member: String,
    },
}

/// `ConsumerGroupMemberMetadataValue`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberMetadata {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_names: Vec<String>,
    pub subscribed_regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub server_assignor: Option<String>,
}

/// `ConsumerGroupCurrentMemberAssignmentValue`. `state` is Kafka's `MemberState` byte.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentAssignment {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: i8,
    pub assigned: Assignment,
    pub revoking: Assignment,
}

/// Kafka's `MemberState` values.
pub const MEMBER_STABLE: i8 = 0;
pub const MEMBER_UNREVOKED_PARTITIONS: i8 = 1;
pub const MEMBER_UNRELEASED_PARTITIONS: i8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<StoredMember>,
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_i16(s.len().min(i16::MAX as usize) as i16);
    out.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_nullable_str(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

fn put_uvarint(out: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn put_compact_str(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => {
            put_uvarint(out, s.len() as u32 + 1);
            out.put_slice(s.as_bytes());
        }
        None => put_uvarint(out, 0),
    }
}

/// An empty tagged-field section: we write no tagged fields.
fn put_no_tags(out: &mut BytesMut) {
    put_uvarint(out, 0);
}

/// A flexible `[]TopicPartitions` (topic id, `[]int32`, tags).
fn put_partitions(out: &mut BytesMut, a: &Assignment) {
    put_uvarint(out, a.len() as u32 + 1);
    for (topic, partitions) in a {
        out.put_slice(topic.as_bytes());
        put_uvarint(out, partitions.len() as u32 + 1);
        for p in partitions {
            out.put_i32(*p);
        }
        put_no_tags(out);
    }
}

/// A cursor that reports truncation instead of panicking.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn i16(&mut self) -> Option<i16> {
        (self.0.remaining() >= 2).then(|| self.0.get_i16())
    }
    fn i32(&mut self) -> Option<i32> {
        (self.0.remaining() >= 4).then(|| self.0.get_i32())
    }
    fn i64(&mut self) -> Option<i64> {
        (self.0.remaining() >= 8).then(|| self.0.get_i64())
    }
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        (self.0.len() >= n).then(|| {
            let (head, tail) = self.0.split_at(n);
            self.0 = tail;
            head
        })
    }
    fn nullable_str(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        Some(Some(
            String::from_utf8_lossy(self.take(len as usize)?).into_owned(),
        ))
    }
    fn str(&mut self) -> Option<String> {
        self.nullable_str()?.or(Some(String::new()))
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let len = self.i32()?;
        Some(Bytes::copy_from_slice(self.take(len.max(0) as usize)?))
    }
    fn i8(&mut self) -> Option<i8> {
        (self.0.remaining() >= 1).then(|| self.0.get_i8())
    }
    fn uvarint(&mut self) -> Option<u32> {
        let mut v = 0u32;
        for shift in (0..35).step_by(7) {
            let b = self.take(1)?[0];
            v |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// A compact length: `None` inside for null (encoded 0).
    fn compact_len(&mut self) -> Option<Option<usize>> {
        Some((self.uvarint()? as usize).checked_sub(1))
    }
    fn compact_nullable_str(&mut self) -> Option<Option<String>> {
        match self.compact_len()? {
            Some(n) => Some(Some(String::from_utf8_lossy(self.take(n)?).into_owned())),
            None => Some(None),
        }
    }
    fn compact_str(&mut self) -> Option<String> {
        self.compact_nullable_str()?.or(Some(String::new()))
    }
    fn uuid(&mut self) -> Option<Uuid> {
        Uuid::from_slice(self.take(16)?).ok()
    }
    /// Skips a tagged-field section; fields a later Kafka adds are not needed to restore
    /// the group.
    fn skip_tags(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        Some(())
    }
    fn partitions(&mut self) -> Option<Assignment> {
        let mut a = Assignment::new();
        for _ in 0..self.compact_len()?.unwrap_or(0) {
            let topic = self.uuid()?;
            let mut ps = std::collections::BTreeSet::new();
            for _ in 0..self.compact_len()?.unwrap_or(0) {
                ps.insert(self.i32()?);
            }
            self.skip_tags()?;
            a.insert(topic, ps);
        }
        Some(a)
    }
    /// The value version, which must be one we can read.
    fn consumer_version(&mut self) -> Option<()> {
        (self.i16()? == CONSUMER_VALUE_VERSION).then_some(())
    }
}

impl RecordKey {
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::new();
        match self {
            Self::Offset {
                group,
                topic,
                partition,
            } => {
                out.put_i16(OFFSET_KEY_VERSION);
                put_str(&mut out, group);
                put_str(&mut out, topic);
                out.put_i32(*partition);
            }
            Self::Group { group } => {
                out.put_i16(GROUP_KEY_VERSION);
                put_str(&mut out, group);
            }
            Self::ConsumerGroup { group } => {
                out.put_i16(CONSUMER_GROUP_KEY_VERSION);
                put_str(&mut out, group);
            }
            Self::ConsumerTarget { group } => {
                out.put_i16(CONSUMER_TARGET_KEY_VERSION);
                put_str(&mut out, group);
            }
            Self::ConsumerMember { group, member }
            | Self::ConsumerTargetMember { group, member }
            | Self::ConsumerCurrent { group, member } => {
                out.put_i16(match self {
                    Self::ConsumerMember { .. } => CONSUMER_MEMBER_KEY_VERSION,
                    Self::ConsumerTargetMember { .. } => CONSUMER_TARGET_MEMBER_KEY_VERSION,
                    _ => CONSUMER_CURRENT_KEY_VERSION,
                });
                put_str(&mut out, group);
                put_str(&mut out, member);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        match r.i16()? {
            0 | 1 => Some(Self::Offset {
                group: r.str()?,
                topic: r.str()?,
                partition: r.i32()?,
            }),
            2 => Some(Self::Group { group: r.str()? }),
            CONSUMER_GROUP_KEY_VERSION => Some(Self::ConsumerGroup { group: r.str()? }),
            CONSUMER_TARGET_KEY_VERSION => Some(Self::ConsumerTarget { group: r.str()? }),
            CONSUMER_MEMBER_KEY_VERSION => Some(Self::ConsumerMember {
                group: r.str()?,
                member: r.str()?,
            }),
            CONSUMER_TARGET_MEMBER_KEY_VERSION => Some(Self::ConsumerTargetMember {
                group: r.str()?,
                member: r.str()?,
            }),
            CONSUMER_CURRENT_KEY_VERSION => Some(Self::ConsumerCurrent {
                group: r.str()?,
                member: r.str()?,
            }),
            _ => None,
        }
    }
}

pub fn encode_offset(o: &CommittedOffset) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i16(OFFSET_VALUE_VERSION);
    out.put_i64(o.offset);
    out.put_i32(o.leader_epoch);
    put_str(&mut out, &o.metadata);
    out.put_i64(o.commit_timestamp);
    out
}

pub fn decode_offset(bytes: &[u8]) -> Option<CommittedOffset> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp = r.i64()?;
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
        // Set by whoever knows where the record is.
        record_offset: -1,
    })
}

pub fn encode_group(g: &StoredGroup) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i16(GROUP_VALUE_VERSION);
    put_str(&mut out, &g.protocol_type);
    out.put_i32(g.generation);
    put_nullable_str(&mut out, g.protocol.as_deref());
    put_nullable_str(&mut out, g.leader.as_deref());
    out.put_i64(g.state_timestamp);
    out.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_str(&mut out, &m.member_id);
        put_nullable_str(&mut out, m.instance_id.as_deref());
        put_str(&mut out, &m.client_id);
        put_str(&mut out, &m.client_host);
        out.put_i32(m.rebalance_timeout_ms);
        out.put_i32(m.session_timeout_ms);
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out
}

pub fn decode_group(bytes: &[u8]) -> Option<StoredGroup> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol = r.nullable_str()?;
    let leader = r.nullable_str()?;
    let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = r.str()?;
        let instance_id = if version >= 3 {
            r.nullable_str()?
        } else {
            None
        };
        let client_id = r.str()?;
        let client_host = r.str()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { 0 };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(StoredMember {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(StoredGroup {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp,
        members,
    })
}

/// `ConsumerGroupMetadataValue` and `ConsumerGroupTargetAssignmentMetadataValue`: an
/// epoch and tags.
pub fn encode_epoch(epoch: i32) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i16(CONSUMER_VALUE_VERSION);
    out.put_i32(epoch);
    put_no_tags(&mut out);
    out
}

pub fn decode_epoch(bytes: &[u8]) -> Option<i32> {
    let mut r = Reader(bytes);
    r.consumer_version()?;
    let epoch = r.i32()?;
    r.skip_tags()?;
    Some(epoch)
}

pub fn encode_member(m: &MemberMetadata) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i16(CONSUMER_VALUE_VERSION);
    put_compact_str(&mut out, m.instance_id.as_deref());
    put_compact_str(&mut out, m.rack_id.as_deref());
    put_compact_str(&mut out, Some(&m.client_id));
    put_compact_str(&mut out, Some(&m.client_host));
    put_uvarint(&mut out, m.subscribed_names.len() as u32 + 1);
    for name in &m.subscribed_names {
        put_compact_str(&mut out, Some(name));
    }
    put_compact_str(&mut out, m.subscribed_regex.as_deref());
    out.put_i32(m.rebalance_timeout_ms);
    put_compact_str(&mut out, m.server_assignor.as_deref());
    put_no_tags(&mut out);
    out
}

pub fn decode_member(bytes: &[u8]) -> Option<MemberMetadata> {
    let mut r = Reader(bytes);
    r.consumer_version()?;
    let instance_id = r.compact_nullable_str()?;
    let rack_id = r.compact_nullable_str()?;
    let client_id = r.compact_str()?;
    let client_host = r.compact_str()?;
    let mut subscribed_names = Vec::new();
    for _ in 0..r.compact_len()?.unwrap_or(0) {
        subscribed_names.push(r.compact_str()?);
    }
    let m = MemberMetadata {
        instance_id,
        rack_id,
        client_id,
        client_host,
        subscribed_names,
        subscribed_regex: r.compact_nullable_str()?,
        rebalance_timeout_ms: r.i32()?,
        server_assignor: r.compact_nullable_str()?,
    };
    r.skip_tags()?;
    Some(m)
}

/// `ConsumerGroupTargetAssignmentMemberValue`.
pub fn encode_target(a: &Assignment) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i16(CONSUMER_VALUE_VERSION);
    put_partitions(&mut out, a);
    put_no_tags(&mut out);
    out
}

pub fn decode_target(bytes: &[u8]) -> Option<Assignment> {
    let mut r = Reader(bytes);
    r.consumer_version()?;
    let a = r.partitions()?;
    r.skip_tags()?;
    Some(a)
}

pub fn encode_current(c: &CurrentAssignment) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i16(CONSUMER_VALUE_VERSION);
    out.put_i32(c.member_epoch);
    out.put_i32(c.previous_member_epoch);
    out.put_i8(c.state);
    put_partitions(&mut out, &c.assigned);
    put_partitions(&mut out, &c.revoking);
    put_no_tags(&mut out);
    out
}

pub fn decode_current(bytes: &[u8]) -> Option<CurrentAssignment> {
    let mut r = Reader(bytes);
    r.consumer_version()?;
    let c = CurrentAssignment {
        member_epoch: r.i32()?,
        previous_member_epoch: r.i32()?,
        state: r.i8()?,
        assigned: r.partitions()?,
        revoking: r.partitions()?,
    };
    r.skip_tags()?;
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        for key in [
            RecordKey::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
            },
            RecordKey::Group { group: "g".into() },
            RecordKey::ConsumerGroup { group: "g".into() },
            RecordKey::ConsumerTarget { group: "g".into() },
            RecordKey::ConsumerMember {
                group: "g".into(),
                member: "m".into(),
            },
            RecordKey::ConsumerTargetMember {
                group: "g".into(),
                member: "m".into(),
            },
            RecordKey::ConsumerCurrent {
                group: "g".into(),
                member: "m".into(),
            },
        ] {
            assert_eq!(RecordKey::decode(&key.encode()), Some(key));
        }
        let offset = CommittedOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta ü".into(),
            commit_timestamp: 99,
            record_offset: -1,
        };
        assert_eq!(decode_offset(&encode_offset(&offset)), Some(offset));
        let group = StoredGroup {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 1,
            members: vec![StoredMember {
                member_id: "m1".into(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/h".into(),
                rebalance_timeout_ms: 300000,
                session_timeout_ms: 45000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"as"),
            }],
        };
        assert_eq!(decode_group(&encode_group(&group)), Some(group));
        assert_eq!(
            decode_group(&[0, 3, 0]),
            None,
            "truncated values are rejected, not panicked on"
        );
    }

    #[test]
    fn consumer_group_values_round_trip() {
        let topic = Uuid::new_v4();
        let a = Assignment::from([(topic, [0, 3].into()), (Uuid::new_v4(), [1].into())]);
        assert_eq!(decode_epoch(&encode_epoch(7)), Some(7));
        assert_eq!(decode_target(&encode_target(&a)), Some(a.clone()));
        let member = MemberMetadata {
            instance_id: None,
            rack_id: Some("r1".into()),
            client_id: "c".into(),
            client_host: "/h".into(),
            subscribed_names: vec!["t1".into(), "t2".into()],
            subscribed_regex: Some("t.*".into()),
            rebalance_timeout_ms: 300_000,
            server_assignor: Some("uniform".into()),
        };
        assert_eq!(decode_member(&encode_member(&member)), Some(member));
        let current = CurrentAssignment {
            member_epoch: 4,
            previous_member_epoch: 3,
            state: MEMBER_UNREVOKED_PARTITIONS,
            assigned: a,
            revoking: Assignment::from([(topic, [5].into())]),
        };
        assert_eq!(decode_current(&encode_current(&current)), Some(current));
        assert_eq!(decode_current(&[0, 0, 0, 0]), None, "truncated");
        assert_eq!(
            decode_epoch(&[0, 1, 0, 0, 0, 1, 0]),
            None,
            "unknown version"
        );
        assert_eq!(
            RecordKey::decode(&[0, 4, 0, 1, b'g']),
            None,
            "key v4 is skipped"
        );
    }

    #[test]
    fn flexible_values_have_kafkas_layout() {
        let topic = Uuid::from_bytes([0xab; 16]);
        // ConsumerGroupCurrentMemberAssignmentValue v0: MemberEpoch int32 = 5,
        // PreviousMemberEpoch int32 = 4, State int8 = 0, AssignedPartitions = one entry
        // (compact array length 1 + 1), its TopicId (16 bytes), Partitions [0, 2] (length
        // 2 + 1, int32 each), the entry's empty tag section; PartitionsPendingRevocation =
        // empty (0 + 1); the value's empty tag section.
        let mut bytes = vec![0, 0, 0, 0, 0, 5, 0, 0, 0, 4, 0, 2];
        bytes.extend([0xab; 16]);
        bytes.extend([3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0]);
        let expected = CurrentAssignment {
            member_epoch: 5,
            previous_member_epoch: 4,
            state: MEMBER_STABLE,
            assigned: Assignment::from([(topic, [0, 2].into())]),
            revoking: Assignment::new(),
        };
        assert_eq!(decode_current(&bytes), Some(expected.clone()));
        assert_eq!(&encode_current(&expected)[..], &bytes[..]);
        // ConsumerGroupMemberMetadataValue v0 as a classic-protocol member would carry it:
        // null InstanceId (0), RackId "r" (2, 'r'), ClientId "c", ClientHost "h", one
        // subscribed name "t", null regex, RebalanceTimeoutMs 1000, null ServerAssignor,
        // then tag 0 (ClassicMemberMetadata, 3 bytes we skip).
        let bytes = [
            0, 0, 0, 2, b'r', 2, b'c', 2, b'h', 2, 2, b't', 0, 0, 0, 0x03, 0xe8, 0, 1, 0, 3, 1, 2,
            3,
        ];
        assert_eq!(
            decode_member(&bytes),
            Some(MemberMetadata {
                instance_id: None,
                rack_id: Some("r".into()),
                client_id: "c".into(),
                client_host: "h".into(),
                subscribed_names: vec!["t".into()],
                subscribed_regex: None,
                rebalance_timeout_ms: 1000,
                server_assignor: None,
            })
        );
    }
}
