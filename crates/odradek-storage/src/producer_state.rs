//! What a partition knows about the producers writing to it (KIP-98), modelled on Kafka's
//! `ProducerStateManager`: per producer id, its epoch, the sequence ranges and offsets of its
//! last [`BATCHES_KEPT`] batches (so a retried batch is answered with its original offsets
//! instead of being written twice), and the first offset of its open transaction (which
//! holds back the last stable offset).
//!
//! The state is rebuilt from the log: snapshots (`<offset>.snapshot`) record it at a given
//! offset, and batches after the snapshot are replayed through [`ProducerStateManager::replay`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, BytesMut};
use odradek_protocol::batch::{BatchHeader, TxnMarker, increment_sequence};

use crate::StorageError;
use crate::log::UnsyncedFile;

/// Batches remembered per producer for duplicate detection: as many as a producer may have
/// in flight (`max.in.flight.requests.per.connection` ≤ 5 with idempotence).
pub const BATCHES_KEPT: usize = 5;

const NO_EPOCH: i16 = -1;

/// Why a producer's batch or marker was refused; each is a Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// `INVALID_PRODUCER_EPOCH`: a fenced (older) epoch.
    #[error(
        "epoch {epoch} of producer {producer_id} is smaller than the last seen epoch {current}"
    )]
    InvalidEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER`: a gap or reordering in the producer's sequence.
    #[error(
        "out of order sequence number for producer {producer_id}: {sequence} (incoming), {expected} (expected)"
    )]
    OutOfOrder {
        producer_id: i64,
        sequence: i32,
        expected: i32,
    },
    /// `INVALID_TXN_STATE`: a non-transactional write while the producer's transaction is open.
    #[error("producer {producer_id} sent a non-transactional batch while its transaction is open")]
    NonTransactionalInTransaction { producer_id: i64 },
    /// `TRANSACTION_COORDINATOR_FENCED`: a marker from an older coordinator.
    #[error(
        "marker for producer {producer_id} has coordinator epoch {epoch}, older than {current}"
    )]
    CoordinatorFenced {
        producer_id: i64,
        epoch: i32,
        current: i32,
    },
}

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    batches: VecDeque<BatchMetadata>,
    pub coordinator_epoch: i32,
    /// Timestamp of the producer's last batch or marker: what expiry measures from.
    pub last_timestamp: i64,
    /// First offset of the open transaction in this partition.
    pub current_txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn new(epoch: i16) -> Self {
        Self {
            epoch,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            last_timestamp: -1,
            current_txn_first_offset: None,
        }
    }
    pub fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_sequence)
    }
    pub fn last_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }
    fn add_batch(&mut self, epoch: i16, batch: BatchMetadata) {
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
        if self.batches.len() == BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_timestamp = batch.max_timestamp;
    }
}

/// A transaction that ended in this partition with an abort: readers in read_committed mode
/// skip the producer's records in `[first_offset, last_offset]` (the marker's offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// A producer currently known to the partition (DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    pub current_txn_first_offset: Option<i64>,
}

#[derive(Debug, Default)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions by first offset: the smallest bounds the last stable offset.
    ongoing: BTreeMap<i64, i64>,
}

impl ProducerStateManager {
    /// Checks a client's data batch (not yet in the log) against the producer's state.
    /// `Ok(Some(batch))` means it duplicates a batch already written, answered with its
    /// original offsets; `Ok(None)` means append it.
    pub fn check(&self, h: &BatchHeader<'_>) -> Result<Option<BatchMetadata>, ProducerError> {
        let producer_id = h.producer_id();
        let epoch = h.producer_epoch();
        let Some(entry) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or its state expired or was retained away): any
            // sequence is accepted, as Kafka does since KIP-360.
            return Ok(None);
        };
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidEpoch {
                producer_id,
                epoch,
                current: entry.epoch,
            });
        }
        let first = h.base_sequence();
        if first < 0 {
            // The broker's own transactional writes (offset commits) carry no sequence.
            return Ok(None);
        }
        if epoch == entry.epoch
            && let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_sequence == first && b.last_sequence == h.last_sequence())
        {
            return Ok(Some(*dup));
        }
        if epoch != entry.epoch {
            if first != 0 && entry.epoch != NO_EPOCH {
                return Err(ProducerError::OutOfOrder {
                    producer_id,
                    sequence: first,
                    expected: 0,
                });
            }
        } else if entry.epoch != NO_EPOCH && first != increment_sequence(entry.last_sequence(), 1) {
            return Err(ProducerError::OutOfOrder {
                producer_id,
                sequence: first,
                expected: increment_sequence(entry.last_sequence(), 1),
            });
        }
        if entry.current_txn_first_offset.is_some() && !h.is_transactional() {
            return Err(ProducerError::NonTransactionalInTransaction { producer_id });
        }
        Ok(None)
    }

    /// Checks a transaction marker about to be written for `marker.producer_id`.
    pub fn check_marker(&self, marker: &TxnMarker) -> Result<(), ProducerError> {
        let Some(entry) = self.producers.get(&marker.producer_id) else {
            return Ok(());
        };
        if marker.producer_epoch < entry.epoch {
            return Err(ProducerError::InvalidEpoch {
                producer_id: marker.producer_id,
                epoch: marker.producer_epoch,
                current: entry.epoch,
            });
        }
        if marker.coordinator_epoch < entry.coordinator_epoch {
            return Err(ProducerError::CoordinatorFenced {
                producer_id: marker.producer_id,
                epoch: marker.coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records a batch now in the log (offsets assigned). Returns the transaction it ended,
    /// if it is a marker that closes one in this partition.
    pub fn replay(&mut self, batch: &[u8]) -> Option<(AbortedTxn, bool)> {
        let h = BatchHeader::parse(batch)?;
        if h.producer_id() < 0 {
            return None;
        }
        if h.is_control() {
            let marker = TxnMarker::decode(batch)?;
            return self.record_marker(&marker, h.base_offset(), h.max_timestamp());
        }
        let producer_id = h.producer_id();
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(h.producer_epoch()));
        if h.base_sequence() < 0 {
            entry.epoch = entry.epoch.max(h.producer_epoch());
            entry.last_timestamp = h.max_timestamp();
        } else {
            entry.add_batch(
                h.producer_epoch(),
                BatchMetadata {
                    first_sequence: h.base_sequence(),
                    last_sequence: h.last_sequence(),
                    first_offset: h.base_offset(),
                    last_offset: h.last_offset(),
                    max_timestamp: h.max_timestamp(),
                },
            );
        }
        if h.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(h.base_offset());
            self.ongoing.insert(h.base_offset(), producer_id);
        }
        None
    }

    fn record_marker(
        &mut self,
        marker: &TxnMarker,
        offset: i64,
        timestamp: i64,
    ) -> Option<(AbortedTxn, bool)> {
        let entry = self
            .producers
            .entry(marker.producer_id)
            .or_insert_with(|| ProducerEntry::new(marker.producer_epoch));
        if marker.producer_epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = marker.producer_epoch;
        }
        entry.coordinator_epoch = marker.coordinator_epoch;
        entry.last_timestamp = timestamp;
        let first_offset = entry.current_txn_first_offset.take()?;
        self.ongoing.remove(&first_offset);
        Some((
            AbortedTxn {
                producer_id: marker.producer_id,
                first_offset,
                last_offset: offset,
            },
            marker.commit,
        ))
    }

    /// The first offset of the oldest open transaction: the last stable offset's bound.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    pub fn producers(&self) -> impl Iterator<Item = ProducerSummary> + '_ {
        self.producers
            .iter()
            .map(|(&producer_id, e)| ProducerSummary {
                producer_id,
                epoch: e.epoch,
                last_sequence: e.last_sequence(),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_first_offset: e.current_txn_first_offset,
            })
    }

    /// Forgets producers idle for `producer.id.expiration.ms` that have no open transaction.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Forgets producers whose every batch lies below the new log start (retention,
    /// DeleteRecords): their records are gone, so there is nothing to deduplicate against.
    pub fn evict_below(&mut self, log_start_offset: i64) {
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || e.batches.is_empty()
                || e.last_offset() >= log_start_offset
        });
    }

    fn encode(&self) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_u32(self.producers.len() as u32);
        for (&id, e) in &self.producers {
            body.put_i64(id);
            body.put_i16(e.epoch);
            body.put_i32(e.coordinator_epoch);
            body.put_i64(e.last_timestamp);
            body.put_i64(e.current_txn_first_offset.unwrap_or(-1));
            body.put_u8(e.batches.len() as u8);
            for b in &e.batches {
                body.put_i32(b.first_sequence);
                body.put_i32(b.last_sequence);
                body.put_i64(b.first_offset);
                body.put_i64(b.last_offset);
                body.put_i64(b.max_timestamp);
            }
        }
        let mut out = BytesMut::with_capacity(body.len() + 6);
        out.put_u16(SNAPSHOT_VERSION);
        out.put_u32(crc32c::crc32c(&body));
        out.extend_from_slice(&body);
        out
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        if bytes.remaining() < 6 || bytes.get_u16() != SNAPSHOT_VERSION {
            return None;
        }
        let crc = bytes.get_u32();
        if crc32c::crc32c(bytes) != crc {
            return None;
        }
        let mut state = Self::default();
        let count = need(&mut bytes, 4)?.get_u32();
        for _ in 0..count {
            let mut fixed = need(&mut bytes, 31)?;
            let id = fixed.get_i64();
            let mut entry = ProducerEntry::new(fixed.get_i16());
            entry.coordinator_epoch = fixed.get_i32();
            entry.last_timestamp = fixed.get_i64();
            let txn = fixed.get_i64();
            let batches = fixed.get_u8();
            for _ in 0..batches {
                let mut b = need(&mut bytes, 32)?;
                entry.batches.push_back(BatchMetadata {
                    first_sequence: b.get_i32(),
                    last_sequence: b.get_i32(),
                    first_offset: b.get_i64(),
                    last_offset: b.get_i64(),
                    max_timestamp: b.get_i64(),
                });
            }
            if txn >= 0 {
                entry.current_txn_first_offset = Some(txn);
                state.ongoing.insert(txn, id);
            }
            state.producers.insert(id, entry);
        }
        Some(state)
    }

    /// Writes the state as of `offset` (the log end) to `<offset>.snapshot`, whole or not at
    /// all, and deletes all but the two newest snapshots. The caller syncs the returned file
    /// and the directory; a snapshot a power loss left unreadable fails its CRC on load, and
    /// an older one (or the log itself) is replayed instead.
    pub(crate) fn write_snapshot(
        &self,
        dir: &Path,
        offset: i64,
    ) -> Result<UnsyncedFile, StorageError> {
        let written = crate::log::write_file_unsynced(dir, &snapshot_name(offset), self.encode())?;
        let snapshots = list_snapshots(dir)?;
        for (_, path) in snapshots.iter().rev().skip(2) {
            fs::remove_file(path).map_err(|e| StorageError::io(path, e))?;
        }
        Ok(written)
    }

    /// Loads the newest readable snapshot at or below `log_end`, deleting newer ones (they
    /// describe data a crash cut off). Returns the state and the offset to replay from.
    pub(crate) fn load(dir: &Path, log_end: i64) -> Result<(Self, Option<i64>), StorageError> {
        for (offset, path) in list_snapshots(dir)?.into_iter().rev() {
            if offset > log_end {
                fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| StorageError::io(&path, e))?;
            match Self::decode(&bytes) {
                Some(state) => return Ok((state, Some(offset))),
                None => {
                    tracing::warn!(snapshot = %path.display(), "ignoring unreadable producer state snapshot");
                }
            }
        }
        Ok((Self::default(), None))
    }
}

/// Deletes the snapshots taken at offsets above `offset` (a truncation removed the batches
/// they describe; one at `offset` itself describes only what is kept). The caller syncs the
/// directory: a snapshot of a removed history must not come back after a crash and then be
/// trusted once the log has grown past it again.
pub(crate) fn delete_snapshots_above(dir: &Path, offset: i64) -> Result<(), StorageError> {
    for (at, path) in list_snapshots(dir)? {
        if at > offset {
            fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
        }
    }
    Ok(())
}

const SNAPSHOT_VERSION: u16 = 1;

fn need<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Some(head)
}

fn snapshot_name(offset: i64) -> String {
    format!("{}.snapshot", crate::offset_file_stem(offset))
}

fn list_snapshots(dir: &Path) -> Result<Vec<(i64, PathBuf)>, StorageError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name();
        if let Some(offset) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".snapshot"))
            .and_then(|n| n.parse::<i64>().ok())
        {
            found.push((offset, entry.path()));
        }
    }
    found.sort_unstable();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use odradek_protocol::batch::testing::batch;

    fn producer_batch(
        pid: i64,
        epoch: i16,
        seq: i32,
        count: i32,
        offset: i64,
        txn: bool,
    ) -> BytesMut {
        let mut b = batch(count, 1000);
        b[0..8].copy_from_slice(&offset.to_be_bytes());
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        if txn {
            b[22] |= 0x10;
        }
        b
    }

    fn header(b: &[u8]) -> BatchHeader<'_> {
        BatchHeader::parse(b).unwrap()
    }

    #[test]
    fn duplicates_gaps_and_fenced_epochs() {
        let mut state = ProducerStateManager::default();
        for (seq, offset) in [(0, 0), (3, 3), (6, 6)] {
            let b = producer_batch(7, 0, seq, 3, offset, false);
            assert_eq!(state.check(&header(&b)), Ok(None));
            state.replay(&b);
        }
        // A retry of the second batch is answered with its original offsets.
        let retry = producer_batch(7, 0, 3, 3, 99, false);
        assert_eq!(
            state
                .check(&header(&retry))
                .unwrap()
                .map(|b| b.first_offset),
            Some(3)
        );
        // A gap is refused.
        let gap = producer_batch(7, 0, 10, 1, 99, false);
        assert!(matches!(
            state.check(&header(&gap)),
            Err(ProducerError::OutOfOrder { expected: 9, .. })
        ));
        // A new epoch must start at sequence 0; an older epoch is fenced.
        let bumped = producer_batch(7, 1, 5, 1, 99, false);
        assert!(matches!(
            state.check(&header(&bumped)),
            Err(ProducerError::OutOfOrder { .. })
        ));
        state.replay(&producer_batch(7, 1, 0, 1, 9, false));
        let old = producer_batch(7, 0, 9, 1, 99, false);
        assert!(matches!(
            state.check(&header(&old)),
            Err(ProducerError::InvalidEpoch { .. })
        ));
        // An unknown producer may start anywhere (its state may have expired).
        let unknown = producer_batch(8, 0, 42, 1, 99, false);
        assert_eq!(state.check(&header(&unknown)), Ok(None));
        // Only BATCHES_KEPT batches are remembered.
        for i in 1..=BATCHES_KEPT as i32 {
            state.replay(&producer_batch(7, 1, i, 1, 9 + i64::from(i), false));
        }
        let evicted = producer_batch(7, 1, 0, 1, 99, false);
        assert!(state.check(&header(&evicted)).is_err());
    }

    #[test]
    fn transactions_bound_the_stable_offset_and_markers_close_them() {
        let mut state = ProducerStateManager::default();
        state.replay(&producer_batch(1, 0, 0, 2, 10, true));
        state.replay(&producer_batch(2, 0, 0, 2, 12, true));
        state.replay(&producer_batch(1, 0, 2, 2, 14, true));
        assert_eq!(state.first_unstable_offset(), Some(10));
        let plain = producer_batch(1, 0, 4, 1, 99, false);
        assert!(matches!(
            state.check(&header(&plain)),
            Err(ProducerError::NonTransactionalInTransaction { .. })
        ));
        let abort = TxnMarker {
            producer_id: 1,
            producer_epoch: 0,
            coordinator_epoch: 0,
            commit: false,
        };
        let mut marker = abort.encode(2000);
        marker[0..8].copy_from_slice(&16i64.to_be_bytes());
        let (txn, committed) = state.replay(&marker).unwrap();
        assert!(!committed);
        assert_eq!((txn.first_offset, txn.last_offset), (10, 16));
        assert_eq!(state.first_unstable_offset(), Some(12));

        // The snapshot round-trips, open transactions included.
        let restored = ProducerStateManager::decode(&state.encode()).unwrap();
        assert_eq!(restored.first_unstable_offset(), Some(12));
        assert_eq!(restored.producers, state.producers);
        let mut corrupt = state.encode();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(ProducerStateManager::decode(&corrupt).is_none());
    }

    #[test]
    fn idle_producers_expire_and_those_below_the_log_start_are_forgotten() {
        let mut state = ProducerStateManager::default();
        state.replay(&producer_batch(1, 0, 0, 1, 0, false)); // timestamp 1000
        state.replay(&producer_batch(2, 0, 0, 1, 1, true)); // open transaction
        state.replay(&producer_batch(3, 0, 0, 1, 50, false));
        assert_eq!(state.expire(1500, 1000), 0);
        assert_eq!(
            state.expire(2500, 1000),
            2,
            "idle producers without a transaction go"
        );
        assert_eq!(state.producers().count(), 1);
        state.replay(&producer_batch(4, 0, 0, 1, 60, false));
        state.replay(&producer_batch(5, 0, 0, 1, 70, false));
        state.evict_below(65);
        let left: Vec<i64> = {
            let mut ids: Vec<i64> = state.producers().map(|p| p.producer_id).collect();
            ids.sort();
            ids
        };
        assert_eq!(left, [2, 5]);
    }
}
