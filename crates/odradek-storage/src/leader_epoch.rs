//! The leader epoch cache, Kafka's `LeaderEpochFileCache`: for every leader epoch that wrote
//! to a log, the offset of its first batch. OffsetForLeaderEpoch answers from it where an
//! epoch's writes end, so a reader holding data of an older epoch can tell whether that data
//! is still in the log (KIP-101, KIP-320): a consumer after its partition changed leaders,
//! and a follower before it fetches (replication).
//!
//! File `leader-epoch-checkpoint` in the partition directory, in Kafka's text format (a
//! version line `0`, the entry count, then one `epoch start_offset` line per entry), so
//! Kafka's tools read it, replaced atomically. Missing or unreadable, it is rebuilt from the
//! `partitionLeaderEpoch` of the batch headers.

use std::path::Path;

pub(crate) const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
const VERSION: &str = "0";

/// Kafka's answer for an epoch the log knows nothing of: no epoch, no offset.
pub const UNDEFINED_EPOCH_OFFSET: (i32, i64) = (-1, -1);

/// An epoch and the offset its first batch has in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Epochs in increasing order, with increasing start offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// The epoch whose writes hold `offset`: the latest to start at or before it (for the
    /// log end, the latest epoch). None before the first entry.
    pub fn epoch_at(&self, offset: i64) -> Option<i32> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.start_offset <= offset)
            .map(|e| e.epoch)
    }

    /// Records that `epoch` wrote a batch at `start_offset`. Only a newer epoch is news:
    /// later batches of the latest epoch change nothing. An entry at or after
    /// `start_offset` belonged to a history this write replaces, and goes. Returns whether
    /// the cache changed, so that the caller writes it out.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| latest >= epoch) {
            return false;
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Where `requested`'s writes end, as Kafka's `endOffsetFor` answers: the latest epoch
    /// ends at the log end; an older one where the next epoch starts, reported with the
    /// largest epoch at or below it that wrote here (the requested one itself when it is
    /// older than every entry). An epoch newer than the latest, or none, is undefined.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        if requested < 0 {
            return UNDEFINED_EPOCH_OFFSET;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end);
        }
        let Some(higher) = self.entries.iter().find(|e| e.epoch > requested) else {
            return UNDEFINED_EPOCH_OFFSET;
        };
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            Some(floor) => (floor.epoch, higher.start_offset),
            None => (requested, higher.start_offset),
        }
    }

    /// The log was cut back to end at `log_end`: epochs that started at or after it are
    /// gone with their batches. Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, log_end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < log_end);
        self.entries.len() != before
    }

    /// The log now starts at `log_start`: epochs whose writes all lie before it go, and the
    /// one it falls in is taken to start there. Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, log_start: i64) -> bool {
        let Some(first_kept) = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= log_start)
        else {
            return false;
        };
        let changed = first_kept > 0 || self.entries[0].start_offset < log_start;
        self.entries.drain(..first_kept);
        if let Some(first) = self.entries.first_mut() {
            first.start_offset = log_start;
        }
        changed
    }

    fn encode(&self) -> String {
        let mut out = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out
    }

    /// Parses the file's text; None unless it is whole and in order (a torn or edited
    /// file is rebuilt from the log rather than trusted).
    fn decode(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != VERSION {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut cache = Self::default();
        for _ in 0..count {
            let (epoch, start) = lines.next()?.split_once(' ')?;
            let entry = EpochEntry {
                epoch: epoch.trim().parse().ok()?,
                start_offset: start.trim().parse().ok()?,
            };
            let ordered = cache.entries.last().is_none_or(|last| {
                last.epoch < entry.epoch && last.start_offset <= entry.start_offset
            });
            if !ordered || entry.epoch < 0 || entry.start_offset < 0 {
                return None;
            }
            cache.entries.push(entry);
        }
        lines.next().is_none().then_some(cache)
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<(), crate::StorageError> {
        crate::log::write_file_atomically(dir, LEADER_EPOCH_CHECKPOINT, self.encode())
    }

    /// Replaces the file without syncing it: the caller's next flush syncs the returned
    /// file and the directory. A write on the append path must not wait for the disk
    /// (acks=1 never does), and an acks=all append waits for that flush anyway.
    pub(crate) fn write_unsynced(
        &self,
        dir: &Path,
    ) -> Result<(std::fs::File, std::path::PathBuf), crate::StorageError> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT);
        let tmp = dir.join(format!("{LEADER_EPOCH_CHECKPOINT}.tmp"));
        let io = |e| crate::StorageError::io(&path, e);
        std::fs::write(&tmp, self.encode()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        let file = std::fs::File::open(&path).map_err(io)?;
        Ok((file, path))
    }

    /// The checkpoint in `dir`, if there is a readable one.
    pub(crate) fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(LEADER_EPOCH_CHECKPOINT)).ok()?;
        Self::decode(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(epoch, start) in entries {
            assert!(c.assign(epoch, start));
        }
        c
    }

    #[test]
    fn only_a_newer_epoch_is_recorded() {
        let mut c = cache(&[(0, 0)]);
        assert!(!c.assign(0, 10), "the same epoch writing on");
        assert!(!c.assign(-1, 12), "no epoch");
        assert!(c.assign(2, 15));
        assert!(!c.assign(1, 20), "an older epoch");
        assert_eq!(
            c.entries(),
            [
                EpochEntry {
                    epoch: 0,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 2,
                    start_offset: 15
                }
            ]
        );
        // A new epoch writing where a replaced history had started: that history goes.
        assert!(c.assign(5, 15));
        assert_eq!(c.entries().len(), 2);
        assert_eq!(c.latest_epoch(), Some(5));
    }

    #[test]
    fn end_offsets_are_answered_as_kafka_answers_them() {
        let c = cache(&[(1, 10), (3, 25), (4, 40)]);
        let log_end = 50;
        assert_eq!(c.end_offset_for(4, log_end), (4, 50), "latest: the log end");
        assert_eq!(c.end_offset_for(3, log_end), (3, 40), "ends where 4 starts");
        assert_eq!(
            c.end_offset_for(2, log_end),
            (1, 25),
            "never wrote: its floor"
        );
        assert_eq!(c.end_offset_for(0, log_end), (0, 10), "older than all");
        assert_eq!(c.end_offset_for(5, log_end), UNDEFINED_EPOCH_OFFSET);
        assert_eq!(
            [5, 10, 24, 25, 50].map(|o| c.epoch_at(o)),
            [None, Some(1), Some(1), Some(3), Some(4)]
        );
        assert_eq!(c.end_offset_for(-1, log_end), UNDEFINED_EPOCH_OFFSET);
        assert_eq!(
            LeaderEpochCache::default().end_offset_for(0, log_end),
            UNDEFINED_EPOCH_OFFSET
        );
    }

    #[test]
    fn truncation_keeps_what_the_log_keeps() {
        let mut c = cache(&[(1, 10), (3, 25), (4, 40)]);
        assert!(c.truncate_from_end(40));
        assert_eq!(c.latest_epoch(), Some(3));
        assert!(!c.truncate_from_end(41), "nothing started there");
        assert!(c.truncate_from_start(30));
        assert_eq!(
            c.entries(),
            [EpochEntry {
                epoch: 3,
                start_offset: 30
            }]
        );
        assert!(
            !c.truncate_from_start(5),
            "before the first entry: nothing to drop"
        );
    }

    #[test]
    fn the_file_round_trips_in_kafkas_format_and_damage_is_refused() {
        let c = cache(&[(0, 0), (2, 15)]);
        let text = c.encode();
        assert_eq!(text, "0\n2\n0 0\n2 15\n");
        assert_eq!(LeaderEpochCache::decode(&text), Some(c));
        for damaged in [
            "0\n2\n0 0\n",       // cut short
            "0\n1\n0 0\n2 15\n", // more lines than counted
            "1\n1\n0 0\n",       // another version
            "0\n2\n2 15\n0 0\n", // out of order
            "0\n1\nzero 0\n",    // not a number
        ] {
            assert_eq!(LeaderEpochCache::decode(damaged), None, "{damaged:?}");
        }
    }
}
