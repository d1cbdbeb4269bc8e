//! The transaction coordinator's state (KIP-98): one [`TxnMetadata`] per `transactional.id`,
//! persisted in the internal compacted topic `__transaction_state` in Kafka's record format
//! (`TransactionLogKey` / `TransactionLogValue` v0), and the set of partitions each open
//! transaction may write to, which the produce path checks (KIP-890's server-side defence).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use odradek_storage::LockExt;

use crate::config::BrokerConfig;

pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Kafka's `TransactionState`, with its persisted ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    fn id(self) -> i8 {
        match self {
            Self::Empty => 0,
            Self::Ongoing => 1,
            Self::PrepareCommit => 2,
            Self::PrepareAbort => 3,
            Self::CompleteCommit => 4,
            Self::CompleteAbort => 5,
            Self::Dead => 6,
            Self::PrepareEpochFence => 7,
        }
    }
    fn from_id(id: i8) -> Option<Self> {
        Some(match id {
            0 => Self::Empty,
            1 => Self::Ongoing,
            2 => Self::PrepareCommit,
            3 => Self::PrepareAbort,
            4 => Self::CompleteCommit,
            5 => Self::CompleteAbort,
            6 => Self::Dead,
            7 => Self::PrepareEpochFence,
            _ => return None,
        })
    }
    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
            Self::Dead => "Dead",
            Self::PrepareEpochFence => "PrepareEpochFence",
        }
    }
    pub fn from_name(name: &str) -> Option<Self> {
        (0..=7).filter_map(Self::from_id).find(|s| s.name() == name)
    }
}

pub type TopicPartition = (String, i32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// `__transaction_state` key, v0: `version, transactional_id`.
pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    put_string(&mut b, transactional_id);
    b.freeze()
}

pub fn decode_key(mut b: &[u8]) -> Option<String> {
    if b.remaining() < 2 || b.get_i16() != 0 {
        return None;
    }
    get_string(&mut b)
}

/// `__transaction_state` value, v0 (Kafka's `TransactionLogValue`).
pub fn encode_value(m: &TxnMetadata) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i64(m.producer_id);
    b.put_i16(m.epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state.id());
    let mut by_topic: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in &m.partitions {
        match by_topic.last_mut() {
            Some((t, ps)) if *t == topic => ps.push(*partition),
            _ => by_topic.push((topic, vec![*partition])),
        }
    }
    b.put_i32(by_topic.len() as i32);
    for (topic, partitions) in by_topic {
        put_string(&mut b, topic);
        b.put_i32(partitions.len() as i32);
        for p in partitions {
            b.put_i32(p);
        }
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    b.freeze()
}

pub fn decode_value(mut b: &[u8]) -> Option<TxnMetadata> {
    if b.remaining() < 2 + 8 + 2 + 4 + 1 + 4 || b.get_i16() != 0 {
        return None;
    }
    let producer_id = b.get_i64();
    let epoch = b.get_i16();
    let timeout_ms = b.get_i32();
    let state = TxnState::from_id(b.get_i8())?;
    let topics = b.get_i32();
    let mut partitions = BTreeSet::new();
    for _ in 0..topics.max(0) {
        let topic = get_string(&mut b)?;
        if b.remaining() < 4 {
            return None;
        }
        let count = b.get_i32();
        for _ in 0..count.max(0) {
            if b.remaining() < 4 {
                return None;
            }
            partitions.insert((topic.clone(), b.get_i32()));
        }
    }
    if b.remaining() < 16 {
        return None;
    }
    let last_update_ms = b.get_i64();
    let start_ms = b.get_i64();
    Some(TxnMetadata {
        producer_id,
        epoch,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
    })
}

fn put_string(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn get_string(b: &mut &[u8]) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let len = usize::try_from(b.get_i16()).ok()?;
    if b.remaining() < len {
        return None;
    }
    let s = std::str::from_utf8(&b[..len]).ok()?.to_string();
    b.advance(len);
    Some(s)
}

/// Which partitions each producer's open transaction was added to: what a transactional
/// produce must match. Kept apart from the coordinator's async state so the produce path
/// can check it under the partition lock without waiting.
///
/// Changed only by single map inserts and removes, so its lock recovers from poisoning
/// ([`LockExt`]).
#[derive(Debug, Default)]
pub struct OpenTransactions {
    by_producer: Mutex<HashMap<i64, (i16, BTreeSet<TopicPartition>)>>,
}

impl OpenTransactions {
    pub fn open(&self, producer_id: i64, epoch: i16, partitions: &BTreeSet<TopicPartition>) {
        self.by_producer
            .lock_or_recover()
            .insert(producer_id, (epoch, partitions.clone()));
    }
    /// A partition leader learnt from `producer_id`'s coordinator (on another broker) that
    /// `partition` is in its transaction at `epoch`.
    pub fn admit(&self, producer_id: i64, epoch: i16, partition: TopicPartition) {
        let mut open = self.by_producer.lock_or_recover();
        let entry = open
            .entry(producer_id)
            .or_insert_with(|| (epoch, BTreeSet::new()));
        if entry.0 != epoch {
            *entry = (epoch, BTreeSet::new());
        }
        entry.1.insert(partition);
    }
    pub fn close(&self, producer_id: i64) {
        self.by_producer.lock_or_recover().remove(&producer_id);
    }
    /// Whether `producer_id` at `epoch` may write transactionally to `topic`-`partition`.
    pub fn allows(&self, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> bool {
        self.by_producer
            .lock_or_recover()
            .get(&producer_id)
            .is_some_and(|(e, parts)| {
                *e == epoch && parts.contains(&(topic.to_string(), partition))
            })
    }
}

/// Transaction coordinator settings, under Kafka's names.
#[derive(Debug, Clone, Copy)]
pub struct TxnLimits {
    /// `transaction.max.timeout.ms`
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`
    pub id_expiration_ms: i64,
    /// `transaction.state.log.num.partitions`
    pub partitions: i32,
    /// `transaction.state.log.segment.bytes`
    pub segment_bytes: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`
    pub abort_interval_ms: i64,
    /// `producer.id.expiration.ms`
    pub producer_id_expiration_ms: i64,
}

impl TxnLimits {
    pub fn new(config: &BrokerConfig) -> Self {
        Self {
            max_timeout_ms: config
                .int("transaction.max.timeout.ms")
                .clamp(1, i64::from(i32::MAX)) as i32,
            id_expiration_ms: config.int("transactional.id.expiration.ms"),
            partitions: config
                .int("transaction.state.log.num.partitions")
                .clamp(1, 10_000) as i32,
            segment_bytes: config.int("transaction.state.log.segment.bytes"),
            abort_interval_ms: config
                .int("transaction.abort.timed.out.transaction.cleanup.interval.ms")
                .max(1),
            producer_id_expiration_ms: config.int("producer.id.expiration.ms"),
        }
    }
}

/// The coordinator's state: transactional ids, serialised by one async lock because each
/// change is persisted (and markers written) before the next may look at it.
pub struct TransactionCoordinator {
    pub txns: tokio::sync::Mutex<HashMap<String, TxnMetadata>>,
    pub open: OpenTransactions,
    pub limits: TxnLimits,
}

impl TransactionCoordinator {
    pub fn new(config: &BrokerConfig) -> Self {
        Self {
            txns: tokio::sync::Mutex::new(HashMap::new()),
            open: OpenTransactions::default(),
            limits: TxnLimits::new(config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let m = TxnMetadata {
            producer_id: 42,
            epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            start_ms: 100,
            last_update_ms: 200,
        };
        assert_eq!(decode_value(&encode_value(&m)), Some(m));
        assert_eq!(decode_key(&encode_key("txn-1")).as_deref(), Some("txn-1"));
        assert_eq!(
            TxnState::from_name("PrepareAbort"),
            Some(TxnState::PrepareAbort)
        );
    }
}
