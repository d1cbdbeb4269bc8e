//! Sparse indexes of a segment, kept in memory and written beside the segment when it is
//! closed or the broker stops cleanly. After a crash the active segment's indexes come from
//! its recovery point (see `recovery_point`) and are rebuilt from the log beyond it, so they
//! never need an fsync on the produce path.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::StorageError;

/// One fixed-size index entry.
pub trait IndexEntry: Copy {
    const SIZE: usize;
    fn write(&self, out: &mut Vec<u8>);
    fn read(bytes: &[u8]) -> Self;
}

/// A sorted, append-only list of entries, persisted as their concatenation.
#[derive(Debug, Clone)]
pub struct SparseIndex<E> {
    entries: Vec<E>,
}

impl<E> Default for SparseIndex<E> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<E: IndexEntry> SparseIndex<E> {
    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub(crate) fn push(&mut self, entry: E) {
        self.entries.push(entry);
    }

    /// The last entry for which `before(entry)` holds, for entries sorted so that `before`
    /// is true on a prefix.
    pub(crate) fn last_where(&self, before: impl Fn(&E) -> bool) -> Option<E> {
        let n = self.entries.partition_point(before);
        n.checked_sub(1).map(|i| self.entries[i])
    }

    /// Writes the index to `path`, into the page cache only: the caller decides when to
    /// sync the returned file.
    pub(crate) fn write_to(&self, path: &Path) -> Result<fs::File, StorageError> {
        let mut bytes = Vec::with_capacity(self.entries.len() * E::SIZE);
        for e in &self.entries {
            e.write(&mut bytes);
        }
        let mut file = fs::File::create(path).map_err(|e| StorageError::io(path, e))?;
        file.write_all(&bytes)
            .map_err(|e| StorageError::io(path, e))?;
        Ok(file)
    }

    /// Loads an index file; `None` if it is missing or not a whole number of entries, in
    /// which case the caller rebuilds it from the segment.
    pub(crate) fn read_from(path: &Path) -> Option<Self> {
        let bytes = fs::read(path).ok()?;
        if bytes.len() % E::SIZE != 0 {
            return None;
        }
        Some(Self {
            entries: bytes.chunks_exact(E::SIZE).map(E::read).collect(),
        })
    }
}

/// Offset index entry: (offset relative to the segment base, byte position of the batch
/// starting at that offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPosition {
    pub relative_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetPosition {
    const SIZE: usize = 8;
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn read(b: &[u8]) -> Self {
        Self {
            relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Time index entry: (largest timestamp seen in the segment up to and including the batch
/// at `relative_offset`, that batch's relative base offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl IndexEntry for TimestampOffset {
    const SIZE: usize = 12;
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn read(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        Self {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

pub type OffsetIndex = SparseIndex<OffsetPosition>;
pub type TimeIndex = SparseIndex<TimestampOffset>;

impl OffsetIndex {
    /// Byte position from which to scan for `relative_offset`: that of the last indexed batch
    /// starting at or before it, or the segment start.
    pub fn position_for(&self, relative_offset: u32) -> u32 {
        self.last_where(|e| e.relative_offset <= relative_offset)
            .map_or(0, |e| e.position)
    }

    /// Whether every entry is sorted and points inside a segment of `segment_size` bytes.
    pub(crate) fn is_consistent(&self, segment_size: u64) -> bool {
        self.entries
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset)
            && self
                .entries
                .iter()
                .all(|e| u64::from(e.position) < segment_size.max(1))
    }
}

impl TimeIndex {
    /// Whether the entries could have been written by this broker: timestamps and offsets
    /// both strictly increasing. An index file a power loss left zero-filled is not.
    pub(crate) fn is_consistent(&self) -> bool {
        self.entries
            .windows(2)
            .all(|w| w[0].timestamp < w[1].timestamp && w[0].relative_offset < w[1].relative_offset)
    }

    /// Relative offset from which every record with a timestamp of at least `target` is
    /// found by scanning forward: the last indexed point whose timestamps are all earlier.
    pub fn scan_start_for(&self, target: i64) -> u32 {
        self.last_where(|e| e.timestamp < target)
            .map_or(0, |e| e.relative_offset)
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|e| e.timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_finds_the_floor_entry_and_round_trips() {
        let mut idx = OffsetIndex::default();
        for (o, p) in [(0, 0), (10, 4096), (20, 8192)] {
            idx.push(OffsetPosition {
                relative_offset: o,
                position: p,
            });
        }
        assert_eq!(idx.position_for(0), 0);
        assert_eq!(idx.position_for(15), 4096);
        assert_eq!(idx.position_for(99), 8192);
        assert!(idx.is_consistent(9000));
        assert!(!idx.is_consistent(8000));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        idx.write_to(&path).unwrap();
        let back = OffsetIndex::read_from(&path).unwrap();
        assert_eq!(back.entries(), idx.entries());
        std::fs::write(&path, [0u8; 7]).unwrap();
        assert!(OffsetIndex::read_from(&path).is_none());
    }

    #[test]
    fn time_index_starts_scans_before_the_first_late_enough_entry() {
        let mut idx = TimeIndex::default();
        for (t, o) in [(100, 0), (200, 10), (300, 20)] {
            idx.push(TimestampOffset {
                timestamp: t,
                relative_offset: o,
            });
        }
        assert_eq!(idx.scan_start_for(50), 0);
        assert_eq!(idx.scan_start_for(200), 0);
        assert_eq!(idx.scan_start_for(201), 10);
        assert_eq!(idx.scan_start_for(1000), 20);
        assert_eq!(idx.max_timestamp(), Some(300));
        assert!(idx.is_consistent());
        let zeroed = TimeIndex {
            entries: vec![TimestampOffset::read(&[0; 12]); 2],
        };
        assert!(!zeroed.is_consistent());
    }
}
