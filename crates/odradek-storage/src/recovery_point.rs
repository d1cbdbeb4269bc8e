//! The recovery point of a log: how far its active segment is known to be on stable storage,
//! with the segment's indexes up to there. Kafka keeps a recovery-point offset too, but
//! still rebuilds the whole active segment after a crash; keeping the indexes lets recovery
//! check only the bytes written after the checkpoint, so restart time after `kill -9` is
//! bounded by the writes of one checkpoint interval (`log.flush.offset.checkpoint.interval.ms`)
//! rather than by `segment.bytes` per partition.
//!
//! File `recovery-point` in the partition directory, replaced atomically: version, CRC-32C of
//! the rest, then the fields and both indexes.

use std::path::Path;

use bytes::{Buf, BufMut, BytesMut};

use crate::index::{IndexEntry, OffsetPosition, TimestampOffset};
use crate::{OffsetIndex, StorageError, TimeIndex};

pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";
const VERSION: u16 = 1;

#[derive(Debug, Clone, Default)]
pub(crate) struct RecoveryPoint {
    pub base_offset: i64,
    /// Bytes of the segment synced to disk; a batch boundary.
    pub position: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    /// Index entries of batches starting below `position`.
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
}

impl RecoveryPoint {
    fn encode(&self) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_i64(self.base_offset);
        body.put_u64(self.position);
        body.put_i64(self.next_offset);
        body.put_i64(self.max_timestamp);
        body.put_i64(self.offset_of_max_timestamp);
        let mut entries = Vec::new();
        for e in self.offset_index.entries() {
            e.write(&mut entries);
        }
        body.put_u32(self.offset_index.entries().len() as u32);
        body.put_slice(&entries);
        entries.clear();
        for e in self.time_index.entries() {
            e.write(&mut entries);
        }
        body.put_u32(self.time_index.entries().len() as u32);
        body.put_slice(&entries);
        let mut out = BytesMut::with_capacity(body.len() + 6);
        out.put_u16(VERSION);
        out.put_u32(crc32c::crc32c(&body));
        out.put_slice(&body);
        out
    }

    fn decode(mut b: &[u8]) -> Option<Self> {
        if b.remaining() < 6 || b.get_u16() != VERSION {
            return None;
        }
        let crc = b.get_u32();
        if crc32c::crc32c(b) != crc || b.remaining() < 40 {
            return None;
        }
        let mut point = Self {
            base_offset: b.get_i64(),
            position: b.get_u64(),
            next_offset: b.get_i64(),
            max_timestamp: b.get_i64(),
            offset_of_max_timestamp: b.get_i64(),
            ..Self::default()
        };
        point.offset_index = read_entries::<OffsetPosition>(&mut b)?;
        point.time_index = read_entries::<TimestampOffset>(&mut b)?;
        Some(point)
    }

    /// Writes and syncs the checkpoint under a temporary name, returning it: the caller
    /// renames it into place ([`crate::log::install_staged`]) under the log's lock, only if
    /// no truncation happened since the point was taken, then syncs the directory.
    pub(crate) fn stage(&self, dir: &Path) -> Result<std::path::PathBuf, StorageError> {
        crate::log::stage_file(dir, RECOVERY_POINT_FILE, self.encode())
    }

    /// The checkpoint for the segment at `base_offset`, if the file holds a readable one.
    pub(crate) fn read(dir: &Path, base_offset: i64) -> Option<Self> {
        let bytes = std::fs::read(dir.join(RECOVERY_POINT_FILE)).ok()?;
        Self::decode(&bytes).filter(|p| p.base_offset == base_offset)
    }
}

fn read_entries<E: IndexEntry>(b: &mut &[u8]) -> Option<crate::index::SparseIndex<E>> {
    if b.remaining() < 4 {
        return None;
    }
    let count = b.get_u32() as usize;
    let len = count.checked_mul(E::SIZE)?;
    if b.remaining() < len {
        return None;
    }
    let mut index = crate::index::SparseIndex::default();
    for chunk in b[..len].chunks_exact(E::SIZE) {
        index.push(E::read(chunk));
    }
    b.advance(len);
    Some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let mut point = RecoveryPoint {
            base_offset: 100,
            position: 8192,
            next_offset: 180,
            max_timestamp: 5000,
            offset_of_max_timestamp: 179,
            ..RecoveryPoint::default()
        };
        point.offset_index.push(OffsetPosition {
            relative_offset: 0,
            position: 0,
        });
        point.offset_index.push(OffsetPosition {
            relative_offset: 40,
            position: 4096,
        });
        point.time_index.push(TimestampOffset {
            timestamp: 4000,
            relative_offset: 40,
        });
        let bytes = point.encode();
        let back = RecoveryPoint::decode(&bytes).unwrap();
        assert_eq!(back.position, 8192);
        assert_eq!(back.offset_index.entries(), point.offset_index.entries());
        assert_eq!(back.time_index.entries(), point.time_index.entries());
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        assert!(RecoveryPoint::decode(&damaged).is_none());
    }
}
