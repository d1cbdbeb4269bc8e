//! A partition's log: an ordered set of segments, the last of which takes appends.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use odradek_protocol::batch::{self, BatchHeader, TxnMarker};
use tracing::{info, warn};

use crate::leader_epoch::LeaderEpochCache;
use crate::producer_state::{AbortedTxn, ProducerStateManager, ProducerSummary};
use crate::recovery_point::{RECOVERY_POINT_FILE, RecoveryPoint};
use crate::segment::{OpenMode, now_ms};
use crate::{LogSegment, StorageError};

/// The per-topic settings the log itself enforces, under their Kafka names.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: i64,
    /// `index.interval.bytes`
    pub index_interval_bytes: u64,
    /// `flush.messages`: request a background flush after this many unflushed records.
    pub flush_messages: u64,
    /// `flush.ms`: request a background flush when the last one is this old.
    pub flush_ms: i64,
    /// `message.timestamp.type`
    pub timestamp_type: TimestampType,
    /// `retention.ms`: segments whose newest record is older are deleted; -1 keeps all.
    pub retention_ms: i64,
    /// `retention.bytes`: the oldest segments are deleted while the log is larger; -1: none.
    pub retention_bytes: i64,
    /// `cleanup.policy` includes `delete`: retention applies (a compact-only log keeps
    /// everything until the cleaner compacts it).
    pub delete_retention_enabled: bool,
    /// `cleanup.policy` includes `compact`: the log cleaner keeps the latest record per key.
    pub compact: bool,
    /// `delete.retention.ms`: how long a tombstone survives after the cleaner first passed it.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean when dirty bytes / (clean + dirty bytes) reach this.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: segments holding records newer than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: dirty records older than this are compacted whatever the
    /// ratio, and the active segment of a compacted log rolls at this age.
    pub max_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush_messages: i64::MAX as u64,
            flush_ms: i64::MAX,
            timestamp_type: TimestampType::CreateTime,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            delete_retention_enabled: true,
            compact: false,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp for `LogAppendTime` topics, else -1 (as Kafka reports it).
    pub log_append_time: i64,
    /// `flush.messages` or `flush.ms` says this log should be flushed now.
    pub flush_due: bool,
    /// The batch repeats one the producer already wrote (a retry): nothing was appended and
    /// the offsets are the original ones.
    pub duplicate: bool,
}

/// What [`Log::append_replicated`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicatedAppend {
    /// Batches written (0 when `batches` held only a partial trailing batch or nothing).
    pub batches: usize,
    pub records: u64,
    /// The log end offset after the append.
    pub log_end_offset: i64,
    /// As [`AppendResult::flush_due`]: the flush policy says it is time to sync.
    pub flush_due: bool,
}

/// The answer to a ListOffsets query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetLookup {
    pub offset: i64,
    pub timestamp: i64,
}

/// Records read for a fetch.
#[derive(Debug, Clone)]
pub struct FetchedRecords {
    pub records: Bytes,
    /// Readable batches follow the ones returned, held back by the byte limit or by the
    /// segment's end: waiting cannot make this read any larger. A fetch parked for
    /// `min_bytes` answers at once then, as Kafka's delayed fetch does.
    pub more_waiting: bool,
}

/// A read planned under the partition lock and carried out without it: segment files are
/// append-only and the planned range ends at a batch boundary that was already written.
#[derive(Debug)]
pub struct PreparedRead {
    file: Option<Arc<File>>,
    path: PathBuf,
    start: u64,
    end: u64,
    target_offset: i64,
    /// Batches starting at or after this offset are not returned (the last stable offset,
    /// for read_committed fetches).
    end_offset: i64,
    /// The first offset of the next segment holding data, if any: a read that reaches
    /// this segment's end leaves data there.
    next_segment_offset: Option<i64>,
    max_bytes: usize,
    min_one_batch: bool,
}

/// A file written since the last flush whose bytes still need an fsync, with its path for
/// errors.
pub(crate) type UnsyncedFile = (Arc<File>, PathBuf);

/// What a flush must sync to make everything appended so far durable.
#[derive(Debug)]
pub struct FlushWork {
    pub(crate) files: Vec<UnsyncedFile>,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) up_to: i64,
    /// The log's truncation count when planned: a flush that a truncation overtook proves
    /// nothing about the log as it is now (see [`Log::flush_done`]).
    pub(crate) truncations: u64,
}

#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    pub(crate) segments: BTreeMap<i64, LogSegment>,
    log_start_offset: i64,
    /// Every offset below this is on stable storage.
    flushed_offset: i64,
    unflushed_records: u64,
    last_flush_ms: i64,
    /// Files besides the active segment that the next flush syncs before it counts what was
    /// appended as durable: segments rolled since the last flush, and the aborted-transaction
    /// list after an abort was added to it.
    unsynced_data: Vec<UnsyncedFile>,
    /// Indexes and producer-state snapshots written at rolls since the last recovery-point
    /// checkpoint, which syncs them. They only speed up recovery (one a power loss damaged
    /// is rebuilt from the log), so neither the append that rolls nor an acks=all producer
    /// waits for their fsyncs. Paths, not open files: a log that rolls often would
    /// otherwise hold three descriptors per roll until the checkpoint.
    unsynced_recovery_aids: Vec<PathBuf>,
    /// A segment file was created since the last flush: the directory needs an fsync too.
    dir_unsynced: bool,
    offline: bool,
    producers: ProducerStateManager,
    /// Aborted transactions, by marker offset; persisted in [`ABORTED_TXNS`].
    aborted: Vec<AbortedTxn>,
    /// The (segment, length) of the last recovery point written.
    checkpointed: Option<(i64, u64)>,
    /// Where each leader epoch's writes start; persisted in `leader-epoch-checkpoint`.
    epochs: LeaderEpochCache,
    /// How many truncations (`truncate_to`, `truncate_fully_and_start_at`) this log has had
    /// since it was opened. Work planned under the lock and finished after releasing it (a
    /// flush, a recovery-point checkpoint, a cleaner pass) checks it under the lock before
    /// recording its result: one that a truncation overtook must not describe removed data.
    pub(crate) truncations: u64,
}

impl Log {
    /// Opens or creates the log in `dir`. `clean_shutdown` says the broker stopped cleanly,
    /// so segment indexes can be trusted; otherwise the active segment is recovered by
    /// checking every batch in it and cutting a torn or corrupt tail.
    pub fn open(dir: &Path, config: LogConfig, clean_shutdown: bool) -> Result<Self, StorageError> {
        fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        // A cleaning pass cut short: finish committed swaps, drop uncommitted output.
        crate::cleaner::recover_interrupted_cleaning(dir)?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name
                .strip_suffix(".log")
                .and_then(|s| s.parse::<i64>().ok())
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let last = bases.last().copied();
        for base in bases {
            let mode = if !clean_shutdown && Some(base) == last {
                OpenMode::Recover
            } else {
                OpenMode::Trusted
            };
            let resume = (mode == OpenMode::Recover)
                .then(|| RecoveryPoint::read(dir, base))
                .flatten();
            if let Some(point) = &resume {
                info!(log = %dir.display(), segment = base, checked_from = point.position, "recovering the active segment from its recovery point");
            }
            let (segment, truncated) =
                LogSegment::open(dir, base, mode, config.index_interval_bytes, resume)?;
            if truncated > 0 {
                info!(log = %dir.display(), truncated_bytes = truncated, next_offset = segment.next_offset(), "recovered log");
            }
            segments.insert(base, segment);
        }
        let mut dir_unsynced = false;
        if segments.is_empty() {
            segments.insert(0, LogSegment::create(dir, 0)?);
            dir_unsynced = true;
        }
        // Never empty here: a directory without segments got one at offset 0 just above.
        let first_segment = segments.keys().next().copied().unwrap_or(0);
        let log_end = segments
            .values()
            .next_back()
            .map_or(0, LogSegment::next_offset);
        // DeleteRecords can move the start inside the first segment; that is checkpointed.
        // Never past the end: a crash can cut unflushed records a DeleteRecords had reached,
        // or interrupt a truncation between cutting the data and moving the start.
        let log_start_offset = read_log_start_checkpoint(dir)
            .unwrap_or(first_segment)
            .max(first_segment)
            .min(log_end);
        let mut log = Self {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            flushed_offset: 0,
            unflushed_records: 0,
            last_flush_ms: now_ms(),
            unsynced_data: Vec::new(),
            unsynced_recovery_aids: Vec::new(),
            dir_unsynced,
            offline: false,
            producers: ProducerStateManager::default(),
            aborted: Vec::new(),
            checkpointed: None,
            epochs: LeaderEpochCache::default(),
            truncations: 0,
        };
        // Whatever recovery kept is what the disk holds.
        log.flushed_offset = log.log_end_offset();
        log.load_transaction_state()?;
        log.load_leader_epochs(clean_shutdown)?;
        Ok(log)
    }

    /// Reads the leader epoch checkpoint, or rebuilds it from the batch headers when it is
    /// missing (a log written before there was one) or unreadable; then fits it to the log,
    /// whose tail recovery may have cut. After a crash, the checkpoint may predate the
    /// active segment's last epochs (it is synced with the data, not before it): their
    /// batches say which, as Kafka's recovery re-reads them.
    fn load_leader_epochs(&mut self, clean_shutdown: bool) -> Result<(), StorageError> {
        let (mut epochs, mut rebuilt) = match LeaderEpochCache::read(&self.dir) {
            Some(epochs) => (epochs, false),
            None => (self.scan_leader_epochs(self.log_start_offset)?, true),
        };
        if !clean_shutdown {
            let active_base = self.active().base_offset();
            for e in self.scan_leader_epochs(active_base)?.entries() {
                rebuilt |= epochs.assign(e.epoch, e.start_offset);
            }
        }
        let cut = epochs.truncate_from_end(self.log_end_offset());
        let moved = epochs.truncate_from_start(self.log_start_offset);
        if (rebuilt && !epochs.entries().is_empty()) || cut || moved {
            epochs.write(&self.dir)?;
        }
        self.epochs = epochs;
        Ok(())
    }

    /// The epoch cache the batch headers from `from` on add up to.
    fn scan_leader_epochs(&self, from: i64) -> Result<LeaderEpochCache, StorageError> {
        let mut epochs = LeaderEpochCache::default();
        walk_batch_headers(&self.segments, from, |_, _, header| {
            let h = BatchHeader::from_array(header);
            epochs.assign(h.partition_leader_epoch(), h.base_offset());
            Ok(())
        })?;
        Ok(epochs)
    }

    /// Notes that `epoch` writes at `offset`, before the batch is written: a new epoch
    /// (once per change of leader) rewrites the checkpoint, which the next flush syncs, so
    /// it is durable before any acks=all write of the epoch is acknowledged. A checkpoint
    /// that cannot be written fails the append before anything is.
    fn note_epoch(&mut self, epoch: i32, offset: i64) -> Result<(), StorageError> {
        if self.epochs.assign(epoch, offset) {
            self.write_epochs_unsynced()?;
        }
        Ok(())
    }

    /// Replaces the epoch checkpoint for the next flush to sync (see [`Self::note_epoch`]).
    fn write_epochs_unsynced(&mut self) -> Result<(), StorageError> {
        let (file, path) = self.epochs.write_unsynced(&self.dir)?;
        self.unsynced_data.retain(|(_, p)| *p != path);
        self.unsynced_data.push((Arc::new(file), path));
        self.dir_unsynced = true;
        Ok(())
    }

    /// Records that this replica leads from the log end at `epoch`: a new leader notes its
    /// epoch before it appends, so OffsetForLeaderEpoch answers the new epoch's start even
    /// before a batch is written, as Kafka's `Partition.makeLeader` does. No-op if the
    /// cache's latest epoch is already `epoch` or newer. The checkpoint is rewritten for the
    /// next flush to sync, as for the epoch of an appended batch ([`Self::note_epoch`]).
    /// An epoch that has written nothing does not outlive a restart: opening the log fits
    /// the cache to the log end, dropping entries that start there, as Kafka's loading
    /// does; the broker calls this again whenever it becomes leader.
    pub fn start_leader_epoch(&mut self, epoch: i32) -> Result<(), StorageError> {
        if self.offline {
            return Err(StorageError::Offline(self.dir.clone()));
        }
        if epoch < 0
            || self
                .epochs
                .latest_epoch()
                .is_some_and(|latest| latest >= epoch)
        {
            return Ok(());
        }
        let end = self.log_end_offset();
        self.note_epoch(epoch, end)
    }

    /// The newest epoch in the leader-epoch cache (None when empty): a follower sends it as
    /// Fetch's `last_fetched_epoch`.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// Where `epoch`'s writes end in this log, and the epoch that answer belongs to
    /// (OffsetForLeaderEpoch); `UNDEFINED_EPOCH_OFFSET` for an epoch it does not know.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// The leader epoch cache (for tools and tests).
    pub fn leader_epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// Rebuilds producer state: the newest snapshot the log still covers, then every batch
    /// after it. Aborted transactions beyond the (possibly cut) log end are dropped.
    fn load_transaction_state(&mut self) -> Result<(), StorageError> {
        let log_end = self.log_end_offset();
        let file = read_aborted_txns(&self.dir, log_end);
        let from = if file.damaged {
            // Every abort since the log start is in the log as a marker: replaying it all
            // from an empty producer state finds each one again.
            warn!(log = %self.dir.display(), "damaged aborted-transactions file: rebuilding it from the whole log");
            self.producers = ProducerStateManager::default();
            self.log_start_offset
        } else {
            let (state, from) = ProducerStateManager::load(&self.dir, log_end)?;
            self.producers = state;
            from.unwrap_or(self.log_start_offset)
        };
        let (replayed, replayed_aborts) = self.replay_from(from)?;
        let (mut aborted, mut stale) = if file.damaged {
            (Vec::new(), true)
        } else {
            (file.kept, file.stale)
        };
        // A crash between writing an abort marker and recording it leaves the abort in the
        // log only (the snapshot replay starts from precedes it): readers and the cleaner
        // would take its records for committed ones.
        for txn in replayed_aborts {
            if txn.last_offset >= self.log_start_offset
                && !aborted.iter().any(|t| t.last_offset == txn.last_offset)
            {
                aborted.push(txn);
                stale = true;
            }
        }
        aborted.sort_unstable_by_key(|t| t.last_offset);
        self.aborted = aborted;
        if stale {
            self.write_aborted_txns()?;
        }
        if replayed > 0 {
            info!(log = %self.dir.display(), from, batches = replayed, "rebuilt producer state from the log");
        }
        Ok(())
    }

    /// Replays each batch at or after `from` into the producer state, counting them and
    /// collecting the transactions their markers aborted: the header alone is read for a
    /// data batch, the whole batch for a control batch (whose marker is in the record).
    fn replay_from(&mut self, from: i64) -> Result<(u64, Vec<AbortedTxn>), StorageError> {
        let mut replayed = 0;
        let mut aborts = Vec::new();
        let producers = &mut self.producers;
        walk_batch_headers(&self.segments, from, |segment, pos, header| {
            if BatchHeader::from_array(header).is_control() {
                let whole = read_batch_at(segment.file(), segment.log_path(), pos)?;
                if let Some((txn, false)) = producers.replay(&whole) {
                    aborts.push(txn);
                }
            } else {
                producers.replay(header);
            }
            replayed += 1;
            Ok(())
        })?;
        Ok((replayed, aborts))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }
    /// Offsets below this survive a crash.
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(LogSegment::size).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    // The expects below state the log's invariant: `open` gives a directory without
    // segments one at offset 0, retention and DeleteRecords never delete the last segment
    // (see `delete_oldest_segment`), and the cleaner puts back a segment for every one it
    // takes out and never touches the active one.
    #[allow(clippy::expect_used)]
    fn active(&self) -> &LogSegment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }
    #[allow(clippy::expect_used)]
    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    /// Appends a batch that passed [`batch::validate_produced`], assigning its offsets.
    /// Only its header is copied to be rewritten (unless `LogAppendTime` changes what the
    /// CRC covers); the rest is written from the buffer it arrived in.
    pub fn append(
        &mut self,
        batch: impl Into<Bytes>,
        leader_epoch: i32,
    ) -> Result<AppendResult, StorageError> {
        if self.offline {
            return Err(StorageError::Offline(self.dir.clone()));
        }
        let batch: Bytes = batch.into();
        let header = header_of(&batch, &self.dir)?;
        if header.producer_id() >= 0
            && let Some(original) = self.producers.check(&header)?
        {
            let log_append_time = match self.config.timestamp_type {
                TimestampType::LogAppendTime => original.max_timestamp,
                TimestampType::CreateTime => -1,
            };
            return Ok(AppendResult {
                base_offset: original.first_offset,
                last_offset: original.last_offset,
                log_append_time,
                flush_due: false,
                duplicate: true,
            });
        }
        let record_count = header.record_count().max(0) as u64;
        let base_offset = self.log_end_offset();
        let last_offset = base_offset + i64::from(header.last_offset_delta());
        let now = now_ms();
        self.maybe_roll(last_offset, batch.len() as u64, now)?;
        self.note_epoch(leader_epoch, base_offset)?;
        let log_append_time = match self.config.timestamp_type {
            TimestampType::LogAppendTime => {
                let mut whole = BytesMut::from(&batch[..]);
                batch::assign_offsets(&mut whole, base_offset, leader_epoch);
                batch::set_log_append_time(&mut whole, now);
                self.write_batch(&[&whole], now)?;
                self.producers.replay(&whole);
                now
            }
            TimestampType::CreateTime => {
                let mut head = [0u8; batch::HEADER_LEN];
                head.copy_from_slice(&batch[..batch::HEADER_LEN]);
                batch::assign_offsets(&mut head, base_offset, leader_epoch);
                self.write_batch(&[&head, &batch[batch::HEADER_LEN..]], now)?;
                // Producer state needs only the header of a data batch.
                self.producers.replay(&head);
                -1
            }
        };
        self.unflushed_records += record_count;
        let flush_due = self.unflushed_records >= self.config.flush_messages
            || now.saturating_sub(self.last_flush_ms) >= self.config.flush_ms;
        Ok(AppendResult {
            base_offset,
            last_offset,
            log_append_time,
            flush_due,
            duplicate: false,
        })
    }

    fn write_batch(&mut self, parts: &[&[u8]], now: i64) -> Result<(), StorageError> {
        let interval = self.config.index_interval_bytes;
        match self.active_mut().append(parts, now, interval) {
            Ok(()) => Ok(()),
            Err(e @ StorageError::Offline(_)) => {
                self.offline = true;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes a transaction marker (a control batch) ending `marker.producer_id`'s
    /// transaction in this partition. An abort is appended to the aborted-transaction list,
    /// which the flush the marker waits for syncs with it, so read_committed readers can
    /// always skip it.
    pub fn append_marker(
        &mut self,
        marker: &TxnMarker,
        leader_epoch: i32,
    ) -> Result<AppendResult, StorageError> {
        if self.offline {
            return Err(StorageError::Offline(self.dir.clone()));
        }
        self.producers.check_marker(marker)?;
        let now = now_ms();
        let mut bytes = marker.encode(now);
        let base_offset = self.log_end_offset();
        self.maybe_roll(base_offset, bytes.len() as u64, now)?;
        batch::assign_offsets(&mut bytes, base_offset, leader_epoch);
        self.note_epoch(leader_epoch, base_offset)?;
        self.write_batch(&[&bytes], now)?;
        if let Some((txn, committed)) = self.producers.replay(&bytes)
            && !committed
        {
            self.record_abort(txn)?;
        }
        self.unflushed_records += 1;
        Ok(AppendResult {
            base_offset,
            last_offset: base_offset,
            log_append_time: -1,
            flush_due: true,
            duplicate: false,
        })
    }

    /// Appends batches copied from a leader (a Fetch response's records), verbatim: offsets,
    /// partitionLeaderEpoch, timestamps, producer ids and sequences stay as the leader wrote
    /// them. Each must start at or after the end of what comes before it, the log end for
    /// the first ([`StorageError::NonContiguous`] otherwise): a compacted leader's log has
    /// gaps where the cleaner removed whole batches, which the copy keeps, as Kafka's
    /// followers accept any increasing offsets; every batch's CRC
    /// and framing are checked ([`StorageError::Corrupt`]). All batches are checked before
    /// any is written, so a refused append writes nothing; an I/O error while writing may
    /// leave a prefix of them written (`log_end_offset` tells). A trailing partial batch
    /// (Fetch may cut the last one) is ignored. Each batch's epoch goes to the leader-epoch
    /// cache, producer state is replayed (an abort marker's transaction goes to the aborted
    /// list, as [`Self::append_marker`] records it), segments roll as for [`Self::append`],
    /// and the records count toward the flush policy. Like `append`, nothing is synced:
    /// the caller flushes (group commit) as the policy or its acknowledgements require.
    pub fn append_replicated(&mut self, batches: Bytes) -> Result<ReplicatedAppend, StorageError> {
        if self.offline {
            return Err(StorageError::Offline(self.dir.clone()));
        }
        let start = self.log_end_offset();
        // (position, size) of each whole batch, all checked before the first is written.
        let mut found = Vec::new();
        let mut expected = start;
        let mut pos = 0usize;
        while batches.len() - pos >= batch::HEADER_LEN {
            let rest = &batches[pos..];
            let header = header_of(rest, &self.dir)?;
            let size = header.total_size();
            let corrupt = |reason: String| StorageError::Corrupt {
                path: self.dir.clone(),
                reason: format!(
                    "replicated batch at offset {}: {reason}",
                    header.base_offset()
                ),
                resume_at: None,
            };
            if size < batch::HEADER_LEN || header.magic() != 2 {
                return Err(corrupt(format!(
                    "malformed header (magic {}, size {size})",
                    header.magic()
                )));
            }
            if size > rest.len() {
                // The fetch's byte limit cut this batch: the next fetch brings it whole.
                break;
            }
            if header.base_offset() < expected {
                return Err(StorageError::NonContiguous {
                    dir: self.dir.clone(),
                    expected,
                    found: header.base_offset(),
                });
            }
            if header.last_offset_delta() < 0 {
                return Err(corrupt(format!(
                    "negative lastOffsetDelta {}",
                    header.last_offset_delta()
                )));
            }
            batch::verify_crc(&rest[..size]).map_err(|e| corrupt(e.to_string()))?;
            found.push((pos, size));
            expected = header.last_offset() + 1;
            pos += size;
        }
        let mut records = 0u64;
        let now = now_ms();
        for &(pos, size) in &found {
            let bytes = batches.slice(pos..pos + size);
            let header = header_of(&bytes, &self.dir)?;
            let (base_offset, last_offset) = (header.base_offset(), header.last_offset());
            let (epoch, count) = (header.partition_leader_epoch(), header.record_count());
            debug_assert!(base_offset >= self.log_end_offset(), "checked above");
            self.maybe_roll(last_offset, size as u64, now)?;
            self.note_replicated_epoch(epoch, base_offset)?;
            self.write_batch(&[&bytes], now)?;
            if let Some((txn, committed)) = self.producers.replay(&bytes)
                && !committed
            {
                self.record_abort(txn)?;
            }
            records += count.max(0) as u64;
        }
        self.unflushed_records += records;
        let log_end_offset = self.log_end_offset();
        debug_assert_eq!(
            log_end_offset, expected,
            "the log ends after the last batch"
        );
        Ok(ReplicatedAppend {
            batches: found.len(),
            records,
            log_end_offset,
            flush_due: self.unflushed_records >= self.config.flush_messages
                || now.saturating_sub(self.last_flush_ms) >= self.config.flush_ms,
        })
    }

    /// [`Self::note_epoch`] for a batch copied from a leader at the log end. An entry that
    /// starts at the log end has no batch in this log (a [`Self::start_leader_epoch`] of a
    /// term in which this replica wrote nothing): the leader's history, which this batch
    /// continues, replaces it even when the batch's epoch is older, as Kafka's cache does.
    fn note_replicated_epoch(&mut self, epoch: i32, offset: i64) -> Result<(), StorageError> {
        let dropped = self.epochs.truncate_from_end(offset);
        if self.epochs.assign(epoch, offset) || dropped {
            self.write_epochs_unsynced()?;
        }
        Ok(())
    }

    /// Removes every batch at or after `offset`: a follower whose tail diverged from its
    /// leader's (KIP-101, KIP-279). When `offset` falls inside a batch, that whole batch goes
    /// and the log ends at its base offset, as Kafka's `LogSegment.truncateTo` cuts. No-op
    /// when `offset` is at or past the log end; at or below the first segment's base offset
    /// it is [`Self::truncate_fully_and_start_at`]. Returns the new log end offset.
    ///
    /// Everything derived from the removed data goes with it, durably before this returns:
    /// later segments, the containing segment's tail and its index files, producer-state
    /// snapshots above the new end, the recovery point if it reaches past the cut, the
    /// cleaner checkpoint's offsets past the end, the leader-epoch and aborted-transaction
    /// entries at or after the end; the log start moves down to the end if it was above it.
    /// What was appended before is synced first, then the log is re-opened from disk (as
    /// after a crash, so producer state, indexes and the epoch cache are rebuilt by the
    /// recovery code), and everything it holds is flushed. A failure part way takes the log
    /// offline: every step removes only a suffix of the log, so the restart's recovery finds
    /// a consistent prefix of it.
    ///
    /// Reads planned before ([`PreparedRead`]) may fail with an I/O error if they reach into
    /// the cut bytes; work of the cleaner, a flush or a recovery-point checkpoint that a
    /// truncation overtakes is discarded (see `truncations`).
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64, StorageError> {
        if self.offline {
            return Err(StorageError::Offline(self.dir.clone()));
        }
        let log_end = self.log_end_offset();
        if offset >= log_end {
            // No batch goes, but an epoch this replica started at the log end without
            // writing in it (it led briefly) does, as in Kafka's `truncateTo`: otherwise it
            // stays its latest epoch, and its leader keeps answering that it diverged.
            if self.epochs.truncate_from_end(offset) {
                self.write_epochs_unsynced()?;
            }
            return Ok(log_end);
        }
        let first_base = self.segments.keys().next().copied().unwrap_or(0);
        if offset <= first_base {
            self.truncate_fully_and_start_at(offset)?;
            return Ok(self.log_end_offset());
        }
        let result = self.cut_tail(offset);
        if result.is_err() {
            self.offline = true;
        }
        let new_end = result?;
        debug_assert!(new_end <= offset, "truncation never moves the log end up");
        Ok(new_end)
    }

    fn cut_tail(&mut self, offset: i64) -> Result<i64, StorageError> {
        let old_end = self.log_end_offset();
        let Some((&base, segment)) = self.segments.range(..=offset).next_back() else {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end: old_end,
            });
        };
        let (cut_at, new_end) = match first_batch_reaching(segment, offset)? {
            Some(found) => found,
            // The segment ends before `offset` (compaction can leave its end in a gap).
            None => (segment.size(), segment.next_offset()),
        };
        debug_assert!(new_end <= offset && new_end < old_end);
        info!(log = %self.dir.display(), offset, new_end, old_end, "truncating the log");
        let dir = self.dir.clone();
        // Whatever survives must be durable: the re-opened log takes it all as flushed.
        self.sync_all_pending()?;

        // What would describe removed data goes before the data, so that no crash leaves it
        // to be trusted once the log has grown past the cut again: the recovery point
        // (unless it covers only kept bytes of this segment) and producer snapshots.
        if RecoveryPoint::read(&dir, base).is_none_or(|p| p.position > cut_at) {
            remove_if_exists(&dir.join(RECOVERY_POINT_FILE))?;
        }
        crate::producer_state::delete_snapshots_above(&dir, new_end)?;
        crate::cleaner::truncate_checkpoint(&dir, Some(new_end))?;
        if new_end < self.log_start_offset {
            // Kafka's `logStartOffset = min(targetOffset, logStartOffset)`: moved before the
            // data is cut, so the log never starts past its end.
            write_log_start_checkpoint(&dir, new_end)?;
        }
        sync_dir(&dir)?;

        // The data: later segments newest first, each removal synced, so that a crash
        // leaves a prefix of the log and never a hole; then the containing segment's tail.
        let later: Vec<i64> = self
            .segments
            .range(base + 1..)
            .map(|(&b, _)| b)
            .rev()
            .collect();
        for b in later {
            if let Some(s) = self.segments.get(&b) {
                s.delete_files()?;
                info!(log = %dir.display(), segment = b, "deleted segment (truncation)");
                sync_dir(&dir)?;
            }
        }
        if let Some(s) = self.segments.get(&base) {
            s.cut_file_to(cut_at)?;
        }
        sync_dir(&dir)?;

        // What the re-open would fit to the new end anyway, done explicitly and durably.
        if self.epochs.truncate_from_end(new_end) {
            self.epochs.write(&dir)?;
        }
        self.retain_aborted_transactions(|t| t.last_offset < new_end)?;
        self.reopen()?;
        Ok(self.log_end_offset())
    }

    /// Replaces the in-memory log with the one on disk, as recovery after a crash loads it
    /// (the active segment checked from its recovery point, producer state from the newest
    /// snapshot plus replay, the epoch cache fitted): no in-memory state of the removed data
    /// survives, including files queued for the next flush. Counts a truncation.
    fn reopen(&mut self) -> Result<(), StorageError> {
        let truncations = self.truncations + 1;
        let mut fresh = Log::open(&self.dir, self.config.clone(), false)?;
        fresh.truncations = truncations;
        *self = fresh;
        Ok(())
    }

    /// Empties the log and starts it again at `offset`: a follower whose fetch offset fell
    /// below its leader's log start. Every segment is deleted and one empty segment created
    /// at `offset`; log start = log end = `offset` (checkpointed durably); producer state
    /// and its snapshots, the aborted list, the epoch cache, the recovery point and the
    /// cleaner checkpoint are emptied, files included. Durable when it returns; a failure
    /// part way takes the log offline, and each step leaves a state the restart's recovery
    /// reads as a consistent (possibly empty) log.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), StorageError> {
        if self.offline {
            return Err(StorageError::Offline(self.dir.clone()));
        }
        if offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end: self.log_end_offset(),
            });
        }
        let result = self.start_over_at(offset);
        if result.is_err() {
            self.offline = true;
        }
        result
    }

    fn start_over_at(&mut self, offset: i64) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        info!(log = %dir.display(), offset, old_start = self.log_start_offset, old_end = self.log_end_offset(), "emptying the log to start at a new offset");
        // Derived state first: if a crash stops us, what is left is rebuilt from the data.
        remove_if_exists(&dir.join(RECOVERY_POINT_FILE))?;
        crate::producer_state::delete_snapshots_above(&dir, i64::MIN)?;
        remove_if_exists(&dir.join(crate::leader_epoch::LEADER_EPOCH_CHECKPOINT))?;
        remove_if_exists(&dir.join(ABORTED_TXNS))?;
        crate::cleaner::truncate_checkpoint(&dir, None)?;
        sync_dir(&dir)?;
        // Segments reaching `offset` or beyond, newest first: a crash leaves a prefix.
        let reaching: Vec<i64> = self
            .segments
            .iter()
            .rev()
            .filter(|&(&b, s)| b >= offset || s.next_offset() > offset)
            .map(|(&b, _)| b)
            .collect();
        for b in &reaching {
            if let Some(s) = self.segments.get(b) {
                s.delete_files()?;
                sync_dir(&dir)?;
            }
        }
        // The new segment, above whatever is left: the log now ends at `offset`.
        LogSegment::create(&dir, offset)?;
        sync_dir(&dir)?;
        write_log_start_checkpoint(&dir, offset)?;
        // What is left lies wholly below the new start.
        for (b, s) in &self.segments {
            if !reaching.contains(b) && *b != offset {
                s.delete_files()?;
            }
        }
        sync_dir(&dir)?;
        self.reopen()?;
        debug_assert_eq!(
            (self.log_start_offset, self.log_end_offset()),
            (offset, offset)
        );
        Ok(())
    }

    /// The last stable offset: below it, every transaction has ended (committed or aborted),
    /// so read_committed consumers may read up to here.
    pub fn last_stable_offset(&self) -> i64 {
        let end = self.log_end_offset();
        self.producers
            .first_unstable_offset()
            .map_or(end, |first| first.min(end))
    }

    /// Aborted transactions whose records may lie in `[from, to)`: what a read_committed
    /// fetch returns so the client can drop those records.
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|t| t.last_offset >= from && t.first_offset < to)
            .copied()
            .collect()
    }

    /// Drops the aborted transactions `keep` rejects (the cleaner removed their markers and
    /// every record they held), durably.
    pub(crate) fn retain_aborted_transactions(
        &mut self,
        keep: impl FnMut(&AbortedTxn) -> bool,
    ) -> Result<usize, StorageError> {
        let before = self.aborted.len();
        self.aborted.retain(keep);
        let removed = before - self.aborted.len();
        if removed > 0 {
            self.write_aborted_txns()?;
        }
        Ok(removed)
    }

    /// The producers this partition knows (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerSummary> {
        self.producers.producers().collect()
    }

    /// `producer.id.expiration.ms`: forgets idle producers with no open transaction.
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }

    fn write_aborted_txns(&self) -> Result<(), StorageError> {
        let text: String = self.aborted.iter().map(aborted_txn_line).collect();
        write_file_atomically(&self.dir, ABORTED_TXNS, &text)
    }

    /// Appends `txn` to the list in memory and on disk. The append is one small write and
    /// leaves the file's earlier lines alone, so it needs no fsync of its own under the
    /// log's lock: the next flush syncs it. A crash can tear only the new last line, which
    /// `read_aborted_txns` drops and the replay of the marker puts back.
    fn record_abort(&mut self, txn: AbortedTxn) -> Result<(), StorageError> {
        let path = self.dir.join(ABORTED_TXNS);
        let io = |e| StorageError::io(&path, e);
        let mut file = match File::options().append(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.dir_unsynced = true;
                File::options()
                    .append(true)
                    .create(true)
                    .open(&path)
                    .map_err(io)?
            }
            Err(e) => return Err(io(e)),
        };
        file.write_all(aborted_txn_line(&txn).as_bytes())
            .map_err(io)?;
        self.aborted.push(txn);
        if !self.unsynced_data.iter().any(|(_, p)| *p == path) {
            self.unsynced_data.push((Arc::new(file), path));
        }
        Ok(())
    }

    /// After the log start moved: producers and aborted transactions wholly below it go.
    fn forget_below_start(&mut self) -> Result<(), StorageError> {
        self.producers.evict_below(self.log_start_offset);
        let start = self.log_start_offset;
        self.retain_aborted_transactions(|t| t.last_offset >= start)?;
        if self.epochs.truncate_from_start(start) {
            self.epochs.write(&self.dir)?;
        }
        Ok(())
    }

    fn maybe_roll(&mut self, last_offset: i64, size: u64, now: i64) -> Result<(), StorageError> {
        let active = self.active();
        let full = active.size() + size > self.config.segment_bytes;
        // A compacted log's active segment is never cleaned, so it rolls by
        // max.compaction.lag.ms too (KIP-354).
        let max_age = if self.config.compact {
            self.config
                .segment_ms
                .min(self.config.max_compaction_lag_ms)
        } else {
            self.config.segment_ms
        };
        let old = active
            .first_append_ms()
            .is_some_and(|first| now.saturating_sub(first) >= max_age);
        if active.size() == 0 || !(full || old || !active.fits(last_offset, size)) {
            return Ok(());
        }
        let next = active.next_offset();
        let indexes = active.write_indexes()?;
        let rolled = (active.file().clone(), active.log_path().to_path_buf());
        // Recovery after a crash replays producer state from here, not from the log start.
        let snapshot = self.producers.write_snapshot(&self.dir, next)?;
        self.unsynced_data.push(rolled);
        self.unsynced_recovery_aids
            .extend(indexes.into_iter().chain([snapshot]).map(|(_, path)| path));
        let segment = LogSegment::create(&self.dir, next)?;
        self.segments.insert(next, segment);
        self.dir_unsynced = true;
        Ok(())
    }

    /// Whether `flush.ms` has passed since the last flush with records still unflushed.
    pub fn flush_overdue(&self, now: i64) -> bool {
        self.unflushed_records > 0 && now.saturating_sub(self.last_flush_ms) >= self.config.flush_ms
    }

    pub(crate) fn flush_work(&mut self) -> Result<FlushWork, StorageError> {
        if self.offline {
            return Err(StorageError::Offline(self.dir.clone()));
        }
        let mut files = std::mem::take(&mut self.unsynced_data);
        let active = self.active();
        files.push((active.file().clone(), active.log_path().to_path_buf()));
        let dir = std::mem::take(&mut self.dir_unsynced).then(|| self.dir.clone());
        Ok(FlushWork {
            files,
            dir,
            up_to: self.log_end_offset(),
            truncations: self.truncations,
        })
    }

    /// Records a finished flush. One a truncation overtook synced files of a history the
    /// log no longer has: its `up_to` may be past the new end, or cover records appended
    /// since at the same offsets that it never synced. The truncation made everything it
    /// kept durable itself, so such a flush records nothing.
    pub(crate) fn flush_done(&mut self, work: &FlushWork) {
        if work.truncations != self.truncations {
            return;
        }
        self.flushed_offset = self.flushed_offset.max(work.up_to);
        self.unflushed_records = 0;
        self.last_flush_ms = now_ms();
    }

    /// Syncs everything written so far, in the calling thread: what a flush syncs, and the
    /// recovery aids. A failed fsync takes the log offline (see [`Self::sync_shared`]).
    fn sync_all_pending(&mut self) -> Result<(), StorageError> {
        let work = self.flush_work()?;
        if let Err(e) = work.sync() {
            tracing::error!(log = %self.dir.display(), error = %e, "fsync failed; taking the log offline");
            self.mark_offline();
            return Err(e);
        }
        self.flush_done(&work);
        sync_recovery_aids(&std::mem::take(&mut self.unsynced_recovery_aids))
    }

    /// Makes everything appended so far durable, holding the lock only to plan and to
    /// record, never across the fsyncs. `capture` runs under the lock with the plan;
    /// `after_sync` gets what it captured once the data is on disk. A failed fsync takes the
    /// log offline: the kernel may have dropped the dirty pages, so nothing written since
    /// the last good flush can be trusted.
    pub(crate) fn sync_shared<T>(
        log: &std::sync::Mutex<Log>,
        capture: impl FnOnce(&mut Log) -> T,
        after_sync: impl FnOnce(T) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let (work, captured) = {
            let mut log = Self::lock_shared(log)?;
            let work = log.flush_work()?;
            let captured = capture(&mut log);
            (work, captured)
        };
        if let Err(e) = work.sync() {
            let mut log = Self::lock_shared(log)?;
            tracing::error!(log = %log.dir.display(), error = %e, "fsync failed; taking the log offline");
            log.mark_offline();
            return Err(e);
        }
        after_sync(captured)?;
        Self::lock_shared(log)?.flush_done(&work);
        Ok(())
    }

    /// Locks a shared log for a background task (a sync, a checkpoint). A panic under the
    /// lock elsewhere poisons it; the broker then treats the partition as offline, so the
    /// task answers [`StorageError::Offline`], which its waiters hear as Kafka's
    /// KAFKA_STORAGE_ERROR, instead of dying and leaving them waiting forever.
    pub(crate) fn lock_shared(
        log: &std::sync::Mutex<Log>,
    ) -> Result<std::sync::MutexGuard<'_, Log>, StorageError> {
        log.lock().map_err(|poisoned| {
            let dir = poisoned.into_inner().dir.clone();
            tracing::error!(log = %dir.display(), "a panic poisoned the log's lock; the log is offline");
            StorageError::Offline(dir)
        })
    }

    /// Syncs the log and records its recovery point (see [`crate::recovery_point`]), unless
    /// nothing was written since the last one. The point is written and synced under a
    /// temporary name without the lock, and renamed into place under it only if no
    /// truncation happened since it was taken: a truncation removes or keeps the recovery
    /// point itself, and a stale one installed after it would make a later recovery trust
    /// indexes of removed bytes once the segment has grown past them again.
    pub fn checkpoint_recovery_point(log: &std::sync::Mutex<Log>) -> Result<(), StorageError> {
        let dir = {
            let l = Self::lock_shared(log)?;
            let active = l.active();
            if l.checkpointed == Some((active.base_offset(), active.size())) {
                return Ok(());
            }
            l.dir.clone()
        };
        let mut written = None;
        let mut staged = None;
        Self::sync_shared(
            log,
            |l| {
                let point = l.active().recovery_point();
                written = Some((point.base_offset, point.position));
                let aids = std::mem::take(&mut l.unsynced_recovery_aids);
                (point, aids, l.truncations)
            },
            |(point, aids, truncations)| {
                sync_recovery_aids(&aids)?;
                staged = Some((point.stage(&dir)?, truncations));
                Ok(())
            },
        )?;
        let Some((tmp, truncations)) = staged else {
            return Ok(());
        };
        {
            let mut l = Self::lock_shared(log)?;
            if l.truncations != truncations {
                remove_if_exists(&tmp)?;
                return Ok(());
            }
            install_staged(&tmp, &dir.join(RECOVERY_POINT_FILE))?;
            l.checkpointed = written;
        }
        sync_dir(&dir)
    }

    /// After a failed fsync the kernel may have dropped the dirty pages: nothing written
    /// since the last good flush can be trusted, so the log stops taking writes.
    pub(crate) fn mark_offline(&mut self) {
        self.offline = true;
    }

    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// Deletes whole segments that retention no longer keeps: by age (`retention.ms`, from
    /// the newest timestamp in the segment) and by size (`retention.bytes`), oldest first,
    /// never the active segment. Returns the deleted segments, unlinked but still open:
    /// closing the last handle of an unlinked file frees its blocks, which can take a while
    /// for a large one, so the caller drops them after releasing the log's lock.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<Vec<LogSegment>, StorageError> {
        let mut deleted = Vec::new();
        loop {
            // Never the active segment.
            if self.segments.len() <= 1 {
                break;
            }
            let Some(oldest) = self.segments.values().next() else {
                break;
            };
            let deletes = self.config.delete_retention_enabled;
            let expired = deletes
                && self.config.retention_ms >= 0
                && oldest.size() > 0
                && now_ms.saturating_sub(oldest.max_timestamp()) > self.config.retention_ms;
            let oversized = deletes
                && self.config.retention_bytes >= 0
                && self.size_bytes().saturating_sub(oldest.size())
                    >= self.config.retention_bytes as u64;
            let below_start = oldest.next_offset() <= self.log_start_offset;
            if !(expired || oversized || below_start) {
                break;
            }
            let Some(segment) = self.delete_oldest_segment()? else {
                break;
            };
            deleted.push(segment);
        }
        if !deleted.is_empty() {
            self.forget_below_start()?;
        }
        Ok(deleted)
    }

    /// Deletes the oldest segment, unless it is the only one (the active segment stays):
    /// then `None`.
    fn delete_oldest_segment(&mut self) -> Result<Option<LogSegment>, StorageError> {
        let Some(&next_start) = self.segments.keys().nth(1) else {
            return Ok(None);
        };
        let Some((base, segment)) = self.segments.pop_first() else {
            return Ok(None);
        };
        self.log_start_offset = self.log_start_offset.max(next_start);
        // Readers that already planned a read hold the file open; unlinking is safe for them.
        segment.delete_files()?;
        info!(log = %self.dir.display(), segment = base, log_start_offset = self.log_start_offset, "deleted segment");
        Ok(Some(segment))
    }

    /// DeleteRecords: makes `offset` the log start offset (durably), deleting segments that
    /// end before it. `offset` must lie within [log start, log end]. Returns the new log
    /// start and the deleted segments, to drop without the log's lock (see
    /// [`Self::enforce_retention`]).
    pub fn delete_records_before(
        &mut self,
        offset: i64,
    ) -> Result<(i64, Vec<LogSegment>), StorageError> {
        let log_end = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end {
            if offset < self.log_start_offset && offset >= 0 {
                return Ok((self.log_start_offset, Vec::new()));
            }
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        self.log_start_offset = offset;
        write_log_start_checkpoint(&self.dir, offset)?;
        let mut deleted = Vec::new();
        while self.segments.len() > 1
            && self
                .segments
                .values()
                .next()
                .is_some_and(|s| s.next_offset() <= offset)
        {
            let Some(segment) = self.delete_oldest_segment()? else {
                break;
            };
            deleted.push(segment);
        }
        self.forget_below_start()?;
        Ok((self.log_start_offset, deleted))
    }

    /// Plans a read of batches starting with the one holding `offset`, up to `max_bytes`
    /// (but at least one whole batch when `min_one_batch`).
    pub fn prepare_read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<PreparedRead, StorageError> {
        let log_end = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        let segment = self
            .segments
            .range(..=offset)
            .map(|(_, s)| s)
            .rev()
            .chain(self.segments.range(offset + 1..).map(|(_, s)| s))
            // Compaction leaves gaps and empty segments: the first segment holding a batch at
            // or after `offset` has it.
            .find(|s| offset < s.next_offset() && s.size() > 0);
        let Some(segment) = segment else {
            return Ok(PreparedRead::nothing());
        };
        let relative = u32::try_from(offset.saturating_sub(segment.base_offset())).unwrap_or(0);
        let next_segment_offset = self
            .segments
            .range(segment.base_offset() + 1..)
            .map(|(_, s)| s)
            .find(|s| s.size() > 0)
            .map(|s| s.base_offset());
        Ok(PreparedRead {
            file: Some(segment.file().clone()),
            path: segment.log_path().to_path_buf(),
            start: u64::from(segment.offset_index().position_for(relative)),
            end: segment.size(),
            target_offset: offset,
            end_offset: i64::MAX,
            next_segment_offset,
            max_bytes,
            min_one_batch,
        })
    }

    /// ListOffsets by timestamp: the first record whose timestamp is at least `target`.
    /// The batch that holds it is inflated if compressed, as Kafka does, to find the exact
    /// record; a batch whose records cannot be read resolves to its first offset.
    pub fn offset_for_timestamp(&self, target: i64) -> Result<Option<OffsetLookup>, StorageError> {
        for segment in self.segments.values() {
            if segment.max_timestamp() < target || segment.size() == 0 {
                continue;
            }
            let relative = segment.time_index().scan_start_for(target);
            let mut pos = u64::from(segment.offset_index().position_for(relative));
            while pos < segment.size() {
                let bytes = read_batch_at(segment.file(), segment.log_path(), pos)?;
                let header = header_of(&bytes, segment.log_path())?;
                if header.max_timestamp() >= target && header.base_offset() >= self.log_start_offset
                {
                    let (offset, timestamp) =
                        first_record_where(&bytes, &header, |ts| ts >= target)
                            .unwrap_or((header.base_offset(), header.max_timestamp()));
                    return Ok(Some(OffsetLookup { offset, timestamp }));
                }
                pos += bytes.len() as u64;
            }
        }
        Ok(None)
    }

    /// ListOffsets `MAX_TIMESTAMP` (KIP-734): the first record holding the largest
    /// timestamp. The segments know the batch; that batch is inflated for the record, as
    /// Kafka does since KAFKA-16310 (a batch whose records cannot be read resolves to its
    /// last offset). On a tie the earliest segment wins.
    pub fn max_timestamp_offset(&self) -> Result<Option<OffsetLookup>, StorageError> {
        let mut latest: Option<&LogSegment> = None;
        for segment in self.segments.values().filter(|s| s.size() > 0) {
            if latest.is_none_or(|l| segment.max_timestamp() > l.max_timestamp()) {
                latest = Some(segment);
            }
        }
        let Some(segment) = latest else {
            return Ok(None);
        };
        let (timestamp, batch_last) = (segment.max_timestamp(), segment.offset_of_max_timestamp());
        let relative = u32::try_from(batch_last.saturating_sub(segment.base_offset())).unwrap_or(0);
        let mut pos = u64::from(segment.offset_index().position_for(relative));
        while pos < segment.size() {
            let bytes = read_batch_at(segment.file(), segment.log_path(), pos)?;
            let header = header_of(&bytes, segment.log_path())?;
            if header.last_offset() >= batch_last {
                let offset = first_record_where(&bytes, &header, |ts| ts == timestamp)
                    .map_or(batch_last, |(offset, _)| offset);
                return Ok(Some(OffsetLookup { offset, timestamp }));
            }
            pos += bytes.len() as u64;
        }
        Ok(Some(OffsetLookup {
            offset: batch_last,
            timestamp,
        }))
    }

    /// Syncs the log, then writes and syncs the producer-state snapshot and the active
    /// segment's indexes: called on clean shutdown.
    pub fn close(&mut self) -> Result<(), StorageError> {
        self.sync_all_pending()?;
        let up_to = self.log_end_offset();
        let mut files = vec![self.producers.write_snapshot(&self.dir, up_to)?];
        files.extend(self.active().write_indexes()?);
        FlushWork {
            files,
            dir: Some(self.dir.clone()),
            up_to,
            truncations: self.truncations,
        }
        .sync()
    }
}

impl FlushWork {
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        sync_data(&self.files)?;
        if let Some(dir) = &self.dir {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StorageError::io(dir, e))?;
        }
        Ok(())
    }
}

/// Syncs the files at `paths`; one that is gone (a snapshot pruned by a later roll, a
/// segment deleted by retention) needs no sync.
fn sync_recovery_aids(paths: &[PathBuf]) -> Result<(), StorageError> {
    for path in paths {
        match File::open(path) {
            Ok(file) => file.sync_data().map_err(|e| StorageError::io(path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(path, e)),
        }
    }
    Ok(())
}

pub(crate) fn sync_data(files: &[UnsyncedFile]) -> Result<(), StorageError> {
    for (file, path) in files {
        file.sync_data().map_err(|e| StorageError::io(path, e))?;
    }
    Ok(())
}

const LOG_START_CHECKPOINT: &str = "log-start-offset";
/// Aborted transactions of this log, one `producer_id first_offset last_offset` per line.
const ABORTED_TXNS: &str = "aborted-transactions";

/// A line of a small text file that start-up trusts, ending in the CRC-32C of the rest so
/// that a flipped byte is caught instead of believed.
fn checked_line(payload: &str) -> String {
    format!("{payload} {:08x}\n", crc32c::crc32c(payload.as_bytes()))
}

/// The numbers of a line of `fields` numbers written by [`checked_line`], or of one written
/// before lines had a CRC (`fields` numbers alone); `None` if the line is damaged.
fn read_checked_line(line: &str, fields: usize) -> Option<Vec<i64>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let numbers = |words: &[&str]| words.iter().map(|w| w.parse().ok()).collect();
    if words.len() == fields {
        return numbers(&words);
    }
    let (payload, crc) = line.trim_end().rsplit_once(" ")?;
    if words.len() != fields + 1
        || u32::from_str_radix(crc, 16).ok()? != crc32c::crc32c(payload.as_bytes())
    {
        return None;
    }
    numbers(&words[..fields])
}

fn aborted_txn_line(t: &AbortedTxn) -> String {
    checked_line(&format!(
        "{} {} {}",
        t.producer_id, t.first_offset, t.last_offset
    ))
}

/// What the aborted-transactions file holds.
#[derive(Debug, Default)]
struct AbortedTxnsFile {
    /// The intact entries that end below the log end.
    kept: Vec<AbortedTxn>,
    /// Entries were dropped that a crash explains: beyond a cut log end, or a torn last line
    /// (one without its newline). The file is rewritten.
    stale: bool,
    /// A whole line is damaged: which abort it held is unknown, so the list must be rebuilt
    /// from the log's markers.
    damaged: bool,
}

fn read_aborted_txns(dir: &Path, log_end: i64) -> AbortedTxnsFile {
    let mut file = AbortedTxnsFile::default();
    let Ok(text) = fs::read_to_string(dir.join(ABORTED_TXNS)) else {
        return file;
    };
    let whole_lines = text.matches('\n').count();
    for (at, line) in text.lines().enumerate() {
        match read_checked_line(line, 3).as_deref() {
            Some(&[producer_id, first_offset, last_offset]) if last_offset < log_end => {
                file.kept.push(AbortedTxn {
                    producer_id,
                    first_offset,
                    last_offset,
                })
            }
            Some(_) => file.stale = true,
            None if at >= whole_lines => file.stale = true,
            None => file.damaged = true,
        }
    }
    file
}

/// The log start offset checkpointed by DeleteRecords, if the file holds an intact one.
fn read_log_start_checkpoint(dir: &Path) -> Option<i64> {
    let path = dir.join(LOG_START_CHECKPOINT);
    let text = fs::read_to_string(&path).ok()?;
    let offset = read_checked_line(text.trim_end(), 1).and_then(|n| n.first().copied());
    if offset.is_none() {
        // The segments' base offset is the safe fallback: records DeleteRecords removed may
        // be readable again, but none is hidden or deleted on a damaged file's word.
        warn!(file = %path.display(), "damaged log start checkpoint: starting the log at its first segment");
    }
    offset
}

/// Writes the checkpoint atomically: a temp file, fsync, rename, fsync the directory.
fn write_log_start_checkpoint(dir: &Path, offset: i64) -> Result<(), StorageError> {
    write_file_atomically(dir, LOG_START_CHECKPOINT, checked_line(&offset.to_string()))
}

/// Replaces `dir/name` with `text` atomically and durably: a temp file, fsync, rename,
/// fsync the directory. A crash leaves the old or the new content, never a mix.
/// Writes `name` in `dir` through a temporary file and a rename, so that no reader (nor a
/// restart after `kill -9`) sees it half written, without syncing anything: for files whose
/// loss a power failure may cost (the caller syncs the file and the directory later), and
/// that replace no other file.
pub(crate) fn write_file_unsynced(
    dir: &Path,
    name: &str,
    bytes: impl AsRef<[u8]>,
) -> Result<UnsyncedFile, StorageError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |e| StorageError::io(&path, e);
    let mut file = File::create(&tmp).map_err(io)?;
    file.write_all(bytes.as_ref()).map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    Ok((Arc::new(file), path))
}

/// Calls `visit` with the segment, position and header of every batch that ends at or after
/// `from`, in offset order: what a replay of the log reads when the headers are enough.
fn walk_batch_headers(
    segments: &BTreeMap<i64, LogSegment>,
    from: i64,
    mut visit: impl FnMut(&LogSegment, u64, &[u8; batch::HEADER_LEN]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    for segment in segments.values() {
        if segment.next_offset() <= from || segment.size() == 0 {
            continue;
        }
        let relative = u32::try_from(from.saturating_sub(segment.base_offset())).unwrap_or(0);
        let mut pos = u64::from(segment.offset_index().position_for(relative));
        let mut header = [0u8; batch::HEADER_LEN];
        while pos + batch::HEADER_LEN as u64 <= segment.size() {
            segment
                .file()
                .read_exact_at(&mut header, pos)
                .map_err(|e| StorageError::io(segment.log_path(), e))?;
            let h = BatchHeader::from_array(&header);
            let size = h.total_size() as u64;
            if size < batch::HEADER_LEN as u64 {
                break;
            }
            if h.last_offset() >= from {
                visit(segment, pos, &header)?;
            }
            pos += size;
        }
    }
    Ok(())
}

pub(crate) fn write_file_atomically(
    dir: &Path,
    name: &str,
    text: impl AsRef<[u8]>,
) -> Result<(), StorageError> {
    let tmp = stage_file(dir, name, text)?;
    install_staged(&tmp, &dir.join(name))?;
    sync_dir(dir)
}

/// The first half of [`write_file_atomically`]: writes and syncs `text` to a temporary file
/// beside `dir/name`, and returns its path for [`install_staged`].
pub(crate) fn stage_file(
    dir: &Path,
    name: &str,
    text: impl AsRef<[u8]>,
) -> Result<PathBuf, StorageError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |e| StorageError::io(&tmp, e);
    fs::write(&tmp, text).map_err(io)?;
    File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    Ok(tmp)
}

/// Renames a staged file over `path`; the caller syncs the directory.
pub(crate) fn install_staged(tmp: &Path, path: &Path) -> Result<(), StorageError> {
    fs::rename(tmp, path).map_err(|e| StorageError::io(path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// `pread`s `len` bytes at `pos` into `buf`'s spare capacity, without zeroing it first
/// (zeroing a fetch buffer before overwriting it cost as much as the read itself).
fn read_exact_into_spare(
    file: &File,
    buf: &mut Vec<u8>,
    len: usize,
    mut pos: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    buf.reserve(len);
    let end = buf.len() + len;
    while buf.len() < end {
        let missing = end - buf.len();
        let spare = buf.spare_capacity_mut();
        let want = missing.min(spare.len());
        let at = libc::off_t::try_from(pos)
            .map_err(|_| std::io::Error::other("file position beyond off_t"))?;
        // SAFETY: the kernel writes at most `want` bytes into the spare capacity, which is
        // at least that long; only the bytes it reports written are then marked initialised.
        let read = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast::<libc::c_void>(),
                want,
                at,
            )
        };
        if read < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // SAFETY: `read` bytes past the old length were just written by `pread`.
        unsafe { buf.set_len(buf.len() + read as usize) };
        pos += read as u64;
    }
    Ok(())
}

/// The header of a batch from `path` (a log's directory or a segment file), or
/// [`StorageError::Corrupt`] if the bytes are too few to hold one. Batches this crate reads
/// back are whole (see [`read_batch_at`]); appended ones were validated by the broker.
pub(crate) fn header_of<'a>(bytes: &'a [u8], path: &Path) -> Result<BatchHeader<'a>, StorageError> {
    BatchHeader::parse(bytes).ok_or_else(|| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("{} bytes are too few for a record batch", bytes.len()),
        resume_at: None,
    })
}

/// The position and base offset of the first batch in `segment` that ends at or after
/// `offset`, if any: where a truncation to `offset` cuts it.
fn first_batch_reaching(
    segment: &LogSegment,
    offset: i64,
) -> Result<Option<(u64, i64)>, StorageError> {
    let relative = u32::try_from(offset.saturating_sub(segment.base_offset())).unwrap_or(u32::MAX);
    let mut pos = u64::from(segment.offset_index().position_for(relative));
    let mut header = [0u8; batch::HEADER_LEN];
    while pos + batch::HEADER_LEN as u64 <= segment.size() {
        segment
            .file()
            .read_exact_at(&mut header, pos)
            .map_err(|e| StorageError::io(segment.log_path(), e))?;
        let h = BatchHeader::from_array(&header);
        if h.last_offset() >= offset {
            return Ok(Some((pos, h.base_offset())));
        }
        let size = h.total_size() as u64;
        if size < batch::HEADER_LEN as u64 {
            return Err(StorageError::Corrupt {
                path: segment.log_path().to_path_buf(),
                reason: format!("malformed batch header at position {pos}"),
                resume_at: None,
            });
        }
        pos += size;
    }
    Ok(None)
}

/// The offset and timestamp of the first record of a batch whose timestamp passes `wanted`,
/// inflating a compressed batch; `None` when there is none or the records cannot be read.
fn first_record_where(
    bytes: &[u8],
    header: &BatchHeader<'_>,
    wanted: impl Fn(i64) -> bool,
) -> Option<(i64, i64)> {
    let section = batch::decompressed_records(bytes).ok()?;
    batch::raw_records(&section)
        .map_while(Result::ok)
        .map(|r| batch::record_offset_and_timestamp(header, &r))
        .find(|&(_, ts)| wanted(ts))
}

/// Reads the whole batch starting at `pos`.
pub(crate) fn read_batch_at(file: &File, path: &Path, pos: u64) -> Result<Vec<u8>, StorageError> {
    let mut header = [0u8; batch::HEADER_LEN];
    file.read_exact_at(&mut header, pos)
        .map_err(|e| StorageError::io(path, e))?;
    let size = BatchHeader::from_array(&header).total_size();
    if size < batch::HEADER_LEN {
        return Err(StorageError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad batch at position {pos}"),
            ),
        ));
    }
    let mut bytes = vec![0u8; size];
    file.read_exact_at(&mut bytes, pos)
        .map_err(|e| StorageError::io(path, e))?;
    Ok(bytes)
}

impl PreparedRead {
    fn nothing() -> Self {
        Self {
            file: None,
            path: PathBuf::new(),
            start: 0,
            end: 0,
            target_offset: 0,
            end_offset: i64::MAX,
            next_segment_offset: None,
            max_bytes: 0,
            min_one_batch: false,
        }
    }

    /// Limits the read to batches that start below `offset`.
    pub fn up_to(mut self, offset: i64) -> Self {
        self.end_offset = offset;
        self
    }

    /// Performs the read: headers are walked from the index position to the batch holding
    /// the target offset, then the batches are read with one `pread` and cut at the last
    /// whole batch that fits.
    pub fn read(self) -> Result<FetchedRecords, StorageError> {
        let empty = FetchedRecords {
            records: Bytes::new(),
            more_waiting: false,
        };
        let Some(file) = self.file else {
            return Ok(empty);
        };
        let path = &self.path;
        let io = |e| StorageError::io(path, e);
        let mut pos = self.start;
        let mut header = [0u8; batch::HEADER_LEN];
        let first_size = loop {
            if pos + batch::HEADER_LEN as u64 > self.end {
                return Ok(empty);
            }
            file.read_exact_at(&mut header, pos).map_err(io)?;
            let h = BatchHeader::from_array(&header);
            let size = h.total_size() as u64;
            if size < batch::HEADER_LEN as u64 || pos + size > self.end {
                return Err(StorageError::Corrupt {
                    path: path.clone(),
                    reason: format!("malformed batch header at position {pos}"),
                    resume_at: None,
                });
            }
            if h.base_offset() >= self.end_offset {
                return Ok(empty);
            }
            if h.last_offset() >= self.target_offset {
                break size;
            }
            pos += size;
        };
        let available = self.end - pos;
        let want = if first_size > self.max_bytes as u64 {
            if !self.min_one_batch {
                // The batch is readable (the walk above stops at `end_offset`); it just
                // does not fit.
                return Ok(FetchedRecords {
                    more_waiting: true,
                    ..empty
                });
            }
            first_size
        } else {
            available.min(self.max_bytes as u64)
        };
        let buffers = odradek_protocol::buffers::shared();
        let mut buf = buffers.take(want as usize);
        read_exact_into_spare(&file, &mut buf, want as usize, pos).map_err(io)?;
        let end_offset = self.end_offset;
        // Kafka leaves CRC checks to consumers, but librdkafka skips them by default
        // (`check.crcs=false`): a flipped bit on disk would reach applications unnoticed.
        // CRC-32C runs at memory speed, so every batch served is checked; a fetch stops
        // before a bad batch and fails with it when it is the first.
        let mut good = 0;
        let mut damage = None;
        for (header, size) in
            batch::complete_batches(&buf).take_while(|(h, _)| h.base_offset() < end_offset)
        {
            if let Err(e) = batch::verify_crc(&buf[good..good + size]) {
                damage = Some((
                    format!(
                        "batch at position {} (offsets {}..={}): {e}",
                        pos + good as u64,
                        header.base_offset(),
                        header.last_offset()
                    ),
                    header.last_offset() + 1,
                ));
                break;
            }
            good += size;
        }
        if good == 0
            && let Some((reason, after)) = damage
        {
            return Err(StorageError::Corrupt {
                path: path.clone(),
                reason,
                resume_at: Some(after),
            });
        }
        let more_waiting = if damage.is_some() {
            false
        } else if want < available {
            // The limit cut the read: what follows is readable unless a read_committed
            // fetch stops there anyway (a header cut in two cannot tell, so it counts only
            // for fetches without an end).
            match buf.get(good..good + batch::HEADER_LEN) {
                Some(next) => {
                    BatchHeader::parse(next).is_some_and(|h| h.base_offset() < end_offset)
                }
                None => end_offset == i64::MAX,
            }
        } else {
            self.next_segment_offset
                .is_some_and(|next| next < end_offset)
        };
        buf.truncate(good);
        Ok(FetchedRecords {
            records: buffers.lend(buf),
            more_waiting,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProducerError;
    use crate::index::{IndexEntry, TimestampOffset};
    use odradek_protocol::batch::testing::batch;

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 1000,
            index_interval_bytes: 100,
            ..LogConfig::default()
        }
    }

    fn read_offsets(log: &Log, from: i64, max_bytes: usize) -> Vec<i64> {
        let records = log
            .prepare_read(from, max_bytes, true)
            .unwrap()
            .read()
            .unwrap()
            .records;
        batch::complete_batches(&records)
            .map(|(h, _)| h.base_offset())
            .collect()
    }

    #[test]
    fn a_read_tells_whether_readable_batches_were_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        for i in 0..100 {
            log.append(batch(2, 1000 + i), 0).unwrap();
        }
        let read = |from: i64, max_bytes: usize, min_one: bool, up_to: i64| {
            let r = log
                .prepare_read(from, max_bytes, min_one)
                .unwrap()
                .up_to(up_to)
                .read()
                .unwrap();
            (batch::complete_batches(&r.records).count(), r.more_waiting)
        };
        let one = batch(2, 0).len();
        // Cut by the limit, whether it splits a batch or ends on a boundary.
        assert_eq!(read(0, one + 1, true, i64::MAX), (1, true));
        assert_eq!(read(0, one, true, i64::MAX), (1, true));
        // Nothing fits and nothing is forced: still, a batch is waiting.
        assert_eq!(read(0, 1, false, i64::MAX), (0, true));
        // The end of a segment with more segments after it.
        let (in_first, waiting) = read(0, 1 << 20, true, i64::MAX);
        assert!(in_first > 1 && waiting, "{in_first} {waiting}");
        // The end of the log, and a read_committed end right behind what fits.
        assert_eq!(read(198, 1 << 20, true, i64::MAX), (1, false));
        assert_eq!(read(0, one, true, 2), (1, false));
        assert_eq!(read(0, 1 << 20, true, 2), (1, false));
    }

    #[test]
    fn the_leader_epoch_cache_follows_appends_and_survives_a_stale_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        for epoch in [0, 0, 2, 2, 5] {
            log.append(batch(2, 1000), epoch).unwrap();
        }
        let entries = |log: &Log| -> Vec<(i32, i64)> {
            let cache = log.leader_epochs();
            cache
                .entries()
                .iter()
                .map(|e| (e.epoch, e.start_offset))
                .collect()
        };
        assert_eq!(entries(&log), [(0, 0), (2, 4), (5, 8)]);
        assert_eq!(log.end_offset_for_epoch(2), (2, 8));
        drop(log);
        // A crash after the checkpoint was replaced but before the flush that syncs it:
        // the file on disk knows only the first epoch, the batches know all three.
        std::fs::write(dir.path().join("leader-epoch-checkpoint"), "0\n1\n0 0\n").unwrap();
        let log = Log::open(dir.path(), small_segments(), false).unwrap();
        assert_eq!(entries(&log), [(0, 0), (2, 4), (5, 8)]);
        drop(log);
        // DeleteRecords moves the log start: epochs wholly before it go.
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        log.delete_records_before(6).unwrap();
        assert_eq!(entries(&log), [(2, 6), (5, 8)]);
    }

    #[test]
    fn appends_roll_segments_and_reads_span_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        for i in 0..100 {
            let r = log.append(batch(2, 1000 + i), 0).unwrap();
            assert_eq!((r.base_offset, r.last_offset), (2 * i, 2 * i + 1));
        }
        assert_eq!(log.log_end_offset(), 200);
        assert!(log.segment_count() > 5, "{} segments", log.segment_count());
        // A read inside a batch returns that whole batch first.
        assert_eq!(read_offsets(&log, 51, 1)[0], 50);
        // Reads walk forward segment by segment.
        let mut next = 0;
        while next < 200 {
            let got = read_offsets(&log, next, 300);
            assert_eq!(got[0], next);
            next = *got.last().unwrap() + 2;
        }
        assert!(read_offsets(&log, 200, 300).is_empty());
        assert!(matches!(
            log.prepare_read(201, 10, true),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let found = log.offset_for_timestamp(1050).unwrap().unwrap();
        assert_eq!(
            found,
            OffsetLookup {
                offset: 100,
                timestamp: 1050
            }
        );
        assert_eq!(log.offset_for_timestamp(5000).unwrap(), None);
    }

    #[test]
    fn max_timestamp_is_the_first_record_holding_it_in_a_batch_compressed_or_not() {
        use bytes::BufMut;
        use odradek_protocol::batch::{Compression, build_batch};
        for codec in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
            log.append(batch(2, 1000), 0).unwrap();
            // Offsets 2, 3, 4 at 1010, 1030, 1020: the batch's max is its middle record, and
            // offset 5 has it again (a later record with the same timestamp loses).
            let mut records = bytes::BytesMut::new();
            for (offset_delta, timestamp_delta) in [(0u8, 10u8), (1, 30), (2, 20), (3, 30)] {
                let body = [0u8, timestamp_delta << 1, offset_delta << 1, 1, 1, 0];
                records.put_u8((body.len() as u8) << 1);
                records.put_slice(&body);
            }
            let middle = build_batch(&batch(4, 1000), &records, 4, 1030, codec).unwrap();
            log.append(middle, 0).unwrap();
            log.append(batch(2, 1005), 0).unwrap();
            assert_eq!(
                log.max_timestamp_offset().unwrap(),
                Some(OffsetLookup {
                    offset: 3,
                    timestamp: 1030
                }),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn reopening_after_clean_close_and_after_a_crash_keeps_every_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        for i in 0..50 {
            log.append(batch(1, i), 0).unwrap();
        }
        log.close().unwrap();
        drop(log);
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        assert_eq!(log.log_end_offset(), 50);
        log.append(batch(1, 50), 0).unwrap();
        drop(log); // no close: as after kill -9
        let log = Log::open(dir.path(), small_segments(), false).unwrap();
        assert_eq!(log.log_end_offset(), 51);
        assert_eq!(
            read_offsets(&log, 0, 1 << 20).len() as i64,
            log.segments[&0].next_offset()
        );
    }

    #[test]
    fn a_roll_leaves_its_fsyncs_to_the_next_flush_and_lost_indexes_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        for i in 0..30 {
            log.append(batch(2, 1000 + i), 0).unwrap();
        }
        assert!(log.segment_count() > 2, "{} segments", log.segment_count());
        // The append that rolled synced nothing. The next flush (what an acks=all producer
        // waits for) syncs the rolled segments' data and the directory; the recovery-point
        // checkpoint syncs their indexes and producer-state snapshots.
        let paths = |files: &[UnsyncedFile]| -> Vec<PathBuf> {
            files.iter().map(|(_, path)| path.clone()).collect()
        };
        let stem = crate::offset_file_stem(0);
        let rolled_data = dir.path().join(format!("{stem}.log"));
        let index = dir.path().join(format!("{stem}.index"));
        let time_index = dir.path().join(format!("{stem}.timeindex"));
        let second = *log.segments.keys().nth(1).unwrap();
        let snapshot = dir
            .path()
            .join(format!("{}.snapshot", crate::offset_file_stem(second)));
        let aids = &log.unsynced_recovery_aids;
        for aid in [&index, &time_index, &snapshot] {
            assert!(aids.contains(aid), "{aid:?} not in {aids:?}");
        }
        let work = log.flush_work().unwrap();
        let flushed = paths(&work.files);
        assert!(flushed.contains(&rolled_data), "{flushed:?}");
        assert!(!flushed.contains(&index), "{flushed:?}");
        assert_eq!(work.dir.as_deref(), Some(dir.path()));
        work.sync().unwrap();
        let max_timestamp = log.max_timestamp_offset().unwrap();
        assert_eq!(max_timestamp.map(|m| m.timestamp), Some(1029));
        let shared = std::sync::Mutex::new(log);
        Log::checkpoint_recovery_point(&shared).unwrap();
        let log = shared.into_inner().unwrap();
        assert!(log.unsynced_recovery_aids.is_empty());
        assert!(log.unsynced_data.is_empty());
        drop(log);

        // A power loss before that flush may leave a rolled segment's indexes empty or
        // holding stale bytes: both are rebuilt, so timestamps and lookups stay right.
        let stale = [(9_000_000_i64, 0_u32), (8_000_000, 4)];
        let mut bytes = Vec::new();
        for (timestamp, relative_offset) in stale {
            TimestampOffset {
                timestamp,
                relative_offset,
            }
            .write(&mut bytes);
        }
        fs::write(dir.path().join(format!("{stem}.timeindex")), bytes).unwrap();
        fs::write(dir.path().join(format!("{stem}.index")), []).unwrap();
        let log = Log::open(dir.path(), small_segments(), false).unwrap();
        assert_eq!(log.log_end_offset(), 60);
        assert_eq!(log.max_timestamp_offset().unwrap(), max_timestamp);
        assert_eq!(
            log.offset_for_timestamp(1001).unwrap(),
            Some(OffsetLookup {
                offset: 2,
                timestamp: 1001
            })
        );
        assert_eq!(read_offsets(&log, 3, 1)[0], 2);
    }

    #[test]
    fn recovery_cuts_a_torn_tail_and_a_corrupt_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogConfig::default(), true).unwrap();
        for i in 0..10 {
            log.append(batch(3, i), 0).unwrap();
        }
        drop(log);
        let path = dir
            .path()
            .join(format!("{}.log", crate::offset_file_stem(0)));
        let len = fs::metadata(&path).unwrap().len();
        let one = batch(3, 0).len() as u64;
        // Torn tail: half of the last batch.
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - one / 2)
            .unwrap();
        let log = Log::open(dir.path(), LogConfig::default(), false).unwrap();
        assert_eq!(log.log_end_offset(), 27);
        drop(log);
        // A flipped byte inside batch 5 fails its CRC: batches 5.. are cut.
        let mut bytes = fs::read(&path).unwrap();
        bytes[(5 * one + 70) as usize] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
        let log = Log::open(dir.path(), LogConfig::default(), false).unwrap();
        assert_eq!(log.log_end_offset(), 15);
        assert_eq!(fs::metadata(&path).unwrap().len(), 5 * one);
    }

    /// Found by the `segment_recovery` fuzz target: a batch whose offsets a segment cannot
    /// hold (beyond its 32-bit relative range, or ending before it starts) panicked while
    /// indexing, or left a log whose end was below its start.
    #[test]
    fn recovery_cuts_a_batch_with_offsets_the_segment_cannot_hold() {
        let far = |b: &mut BytesMut| batch::assign_offsets(b, 1 << 40, 0);
        let backwards = |b: &mut BytesMut| {
            batch::assign_offsets(b, 9, 0);
            b[23..27].copy_from_slice(&(-5i32).to_be_bytes());
            // Rewrites a field inside the CRC's coverage and recomputes the CRC.
            batch::set_log_append_time(b, 1000);
        };
        let damages: [&dyn Fn(&mut BytesMut); 2] = [&far, &backwards];
        for damage in damages {
            for clean_shutdown in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let good = batch(3, 0);
                let mut bad = batch(2, 0);
                damage(&mut bad);
                let path = dir
                    .path()
                    .join(format!("{}.log", crate::offset_file_stem(0)));
                fs::write(&path, [&good[..], &bad[..]].concat()).unwrap();
                let log = Log::open(dir.path(), LogConfig::default(), clean_shutdown).unwrap();
                assert_eq!(log.log_end_offset(), 3);
                assert_eq!(fs::metadata(&path).unwrap().len(), good.len() as u64);
            }
        }
    }

    #[test]
    fn retention_deletes_old_and_excess_segments_but_never_the_active_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_bytes: 2500,
            retention_ms: -1,
            ..small_segments()
        };
        let mut log = Log::open(dir.path(), config.clone(), true).unwrap();
        for i in 0..100 {
            log.append(batch(2, 1000 + i), 0).unwrap();
        }
        let before = log.segment_count();
        let deleted = log.enforce_retention(0).unwrap().len();
        assert!(deleted > 0 && log.segment_count() == before - deleted);
        assert!(
            log.size_bytes() < 2500 + 1000,
            "{} bytes kept",
            log.size_bytes()
        );
        let start = log.log_start_offset();
        assert!(start > 0);
        assert!(matches!(
            log.prepare_read(start - 1, 100, true),
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(read_offsets(&log, start, 100)[0], start);

        // By time: everything but the active segment is older than retention.ms.
        log.set_config(LogConfig {
            retention_bytes: -1,
            retention_ms: 10,
            ..config.clone()
        });
        log.enforce_retention(1000 + 100 + 11).unwrap();
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.log_end_offset(), 200);

        // A compact-only log is not trimmed by retention.
        log.set_config(LogConfig {
            delete_retention_enabled: false,
            retention_ms: 0,
            ..config
        });
        for i in 0..20 {
            log.append(batch(2, i), 0).unwrap();
        }
        assert!(log.enforce_retention(i64::MAX).unwrap().is_empty());
    }

    #[test]
    fn delete_records_moves_the_start_durably() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        for i in 0..50 {
            log.append(batch(2, i), 0).unwrap();
        }
        let (start, deleted) = log.delete_records_before(37).unwrap();
        assert_eq!(start, 37);
        assert!(!deleted.is_empty());
        assert!(
            deleted.iter().all(|s| s.next_offset() <= 37),
            "only segments wholly below the start go"
        );
        assert_eq!(
            log.delete_records_before(10).unwrap().0,
            37,
            "moving backwards keeps the start"
        );
        assert!(log.delete_records_before(101).is_err());
        // The batch holding offset 37 starts at 36 and is returned whole.
        assert_eq!(read_offsets(&log, 37, 10)[0], 36);
        drop(log);
        let log = Log::open(dir.path(), small_segments(), false).unwrap();
        assert_eq!(log.log_start_offset(), 37);
    }

    fn producer_batch(pid: i64, seq: i32, count: i32, transactional: bool) -> BytesMut {
        let mut b = batch(count, 1000);
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
        if transactional {
            b[22] |= 0x10;
        }
        // The CRC covers the producer fields and attributes.
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn producer_state_and_aborted_transactions_survive_clean_and_unclean_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        for i in 0..40 {
            log.append(producer_batch(5, i * 2, 2, false), 0).unwrap();
        }
        log.append(producer_batch(6, 0, 3, true), 0).unwrap();
        assert_eq!(log.last_stable_offset(), 80);
        let abort = TxnMarker {
            producer_id: 6,
            producer_epoch: 0,
            coordinator_epoch: 0,
            commit: false,
        };
        assert_eq!(log.append_marker(&abort, 0).unwrap().base_offset, 83);
        assert_eq!(log.last_stable_offset(), 84);
        log.append(producer_batch(6, 3, 1, true), 0).unwrap();
        assert_eq!(
            log.last_stable_offset(),
            84,
            "a new transaction holds the LSO"
        );
        for clean in [true, false] {
            if clean {
                log.close().unwrap();
            }
            drop(log);
            log = Log::open(dir.path(), small_segments(), clean).unwrap();
            // The last batch of producer 5 is a duplicate; the one before it too.
            let retry = log.append(producer_batch(5, 76, 2, false), 0).unwrap();
            assert!(retry.duplicate);
            assert_eq!(retry.base_offset, 76);
            assert!(matches!(
                log.append(producer_batch(5, 90, 1, false), 0),
                Err(StorageError::Producer(ProducerError::OutOfOrder { .. }))
            ));
            assert_eq!(log.last_stable_offset(), 84, "clean: {clean}");
            let aborted = log.aborted_transactions(0, log.log_end_offset());
            assert_eq!(
                aborted,
                vec![AbortedTxn {
                    producer_id: 6,
                    first_offset: 80,
                    last_offset: 83
                }]
            );
        }
    }

    #[test]
    fn an_abort_missing_from_the_list_after_a_crash_is_recovered_from_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        log.append(producer_batch(6, 0, 3, true), 0).unwrap();
        let abort = TxnMarker {
            producer_id: 6,
            producer_epoch: 0,
            coordinator_epoch: 0,
            commit: false,
        };
        log.append_marker(&abort, 0).unwrap();
        // The abort is on the list on disk, and the flush the marker's acknowledgement waits
        // for syncs the list.
        let list = dir.path().join(ABORTED_TXNS);
        assert_eq!(
            fs::read_to_string(&list).unwrap(),
            aborted_txn_line(&AbortedTxn {
                producer_id: 6,
                first_offset: 0,
                last_offset: 3
            })
        );
        let work = log.flush_work().unwrap();
        assert!(work.files.iter().any(|(_, path)| *path == list));
        drop(log); // kill -9 ...
        // ... before the list was written.
        fs::remove_file(dir.path().join(ABORTED_TXNS)).unwrap();
        let log = Log::open(dir.path(), small_segments(), false).unwrap();
        let expected = vec![AbortedTxn {
            producer_id: 6,
            first_offset: 0,
            last_offset: 3,
        }];
        assert_eq!(log.aborted_transactions(0, 4), expected);
        drop(log);
        let durable = read_aborted_txns(dir.path(), 4).kept;
        assert_eq!(durable, expected);
    }

    /// Flips one byte of `path` at `at`, the way a bad disk does.
    fn flip_byte(path: &Path, at: usize) {
        let mut bytes = fs::read(path).unwrap();
        bytes[at] ^= 0x01;
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_damaged_aborted_transactions_list_is_rebuilt_from_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        let mut expected = Vec::new();
        for pid in [6, 7, 8] {
            let first = log
                .append(producer_batch(pid, 0, 3, true), 0)
                .unwrap()
                .base_offset;
            let abort = TxnMarker {
                producer_id: pid,
                producer_epoch: 0,
                coordinator_epoch: 0,
                commit: false,
            };
            let last = log.append_marker(&abort, 0).unwrap().base_offset;
            expected.push(AbortedTxn {
                producer_id: pid,
                first_offset: first,
                last_offset: last,
            });
        }
        log.close().unwrap();
        drop(log);
        let list = dir.path().join(ABORTED_TXNS);
        // The first line's first offset: "6 0 3 <crc>" becomes "6 1 3 <crc>", which parses.
        flip_byte(&list, 2);
        let log = Log::open(dir.path(), small_segments(), true).unwrap();
        assert_eq!(log.aborted_transactions(0, log.log_end_offset()), expected);
        drop(log);
        assert_eq!(read_aborted_txns(dir.path(), i64::MAX).kept, expected);
    }

    #[test]
    fn a_damaged_log_start_checkpoint_hides_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogConfig::default(), true).unwrap();
        for i in 0..10 {
            log.append(batch(1, 1000 + i), 0).unwrap();
        }
        log.delete_records_before(3).unwrap();
        log.close().unwrap();
        drop(log);
        let log = Log::open(dir.path(), LogConfig::default(), true).unwrap();
        assert_eq!(log.log_start_offset(), 3, "an intact checkpoint is kept");
        drop(log);
        // "3 <crc>" becomes "2 <crc>": a log start that parses but was never written.
        flip_byte(&dir.path().join(LOG_START_CHECKPOINT), 0);
        let log = Log::open(dir.path(), LogConfig::default(), true).unwrap();
        assert_eq!(log.log_start_offset(), 0, "fall back to the first segment");
        drop(log);
        fs::write(dir.path().join(LOG_START_CHECKPOINT), "3\n").unwrap();
        let log = Log::open(dir.path(), LogConfig::default(), true).unwrap();
        assert_eq!(
            log.log_start_offset(),
            3,
            "a checkpoint from before the CRC is read"
        );
    }

    #[test]
    fn recovery_from_a_recovery_point_keeps_every_batch_and_cuts_only_the_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            index_interval_bytes: 100,
            ..LogConfig::default()
        };
        let mut log = Log::open(dir.path(), config.clone(), true).unwrap();
        for i in 0..40 {
            log.append(batch(2, 1000 + i), 0).unwrap();
        }
        let shared = std::sync::Mutex::new(log);
        Log::checkpoint_recovery_point(&shared).unwrap();
        let mut log = shared.into_inner().unwrap();
        assert_eq!(log.flushed_offset(), 80);
        for i in 40..60 {
            log.append(batch(2, 1000 + i), 0).unwrap();
        }
        drop(log); // kill -9
        let path = dir
            .path()
            .join(format!("{}.log", crate::offset_file_stem(0)));
        let len = fs::metadata(&path).unwrap().len();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let mut log = Log::open(dir.path(), config.clone(), false).unwrap();
        assert_eq!(log.log_end_offset(), 118, "only the torn last batch is cut");
        for offset in [0, 37, 79, 80, 81, 117] {
            assert_eq!(read_offsets(&log, offset, 1)[0], offset - offset % 2);
        }
        let found = log.offset_for_timestamp(1050).unwrap().unwrap();
        assert_eq!(found.offset, 100);
        log.append(batch(2, 2000), 0).unwrap();
        assert_eq!(log.log_end_offset(), 120);
        // A recovery point of another segment (the log rolled since) is ignored.
        drop(log);
        let log = Log::open(
            dir.path(),
            LogConfig {
                segment_bytes: 200,
                ..config
            },
            false,
        )
        .unwrap();
        assert_eq!(log.log_end_offset(), 120);
    }

    // ---- Replication: append_replicated, truncate_to, truncate_fully_and_start_at ----

    /// Every byte of the log from its start, read the way a follower's fetches read it.
    fn read_all_bytes(log: &Log) -> Vec<u8> {
        let mut out = Vec::new();
        let mut next = log.log_start_offset();
        while next < log.log_end_offset() {
            let records = log
                .prepare_read(next, 1 << 20, true)
                .unwrap()
                .read()
                .unwrap()
                .records;
            let last = batch::complete_batches(&records)
                .last()
                .unwrap()
                .0
                .last_offset();
            out.extend_from_slice(&records);
            next = last + 1;
        }
        out
    }

    /// (base offset, last offset) of each batch in `bytes`.
    fn batch_ranges(bytes: &[u8]) -> Vec<(i64, i64)> {
        batch::complete_batches(bytes)
            .map(|(h, _)| (h.base_offset(), h.last_offset()))
            .collect()
    }

    fn epoch_entries(log: &Log) -> Vec<(i32, i64)> {
        log.leader_epochs()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    /// A batch as a leader stored it: offsets and partitionLeaderEpoch assigned (both
    /// outside the CRC).
    fn stored(mut b: BytesMut, base_offset: i64, leader_epoch: i32) -> Bytes {
        batch::assign_offsets(&mut b, base_offset, leader_epoch);
        b.freeze()
    }

    fn abort(producer_id: i64) -> TxnMarker {
        TxnMarker {
            producer_id,
            producer_epoch: 0,
            coordinator_epoch: 0,
            commit: false,
        }
    }

    /// A leader's log over several segments: producer 5's idempotent batches in epochs 0, 2
    /// and 4, producer 6's transaction aborted at offset 63, two more batches of producer 5,
    /// the last in epoch 6. Offsets 0..68.
    fn leader_log(dir: &Path) -> Log {
        let mut log = Log::open(dir, small_segments(), true).unwrap();
        for i in 0..30 {
            log.append(producer_batch(5, i * 2, 2, false), (i / 10) * 2)
                .unwrap();
        }
        log.append(producer_batch(6, 0, 3, true), 4).unwrap();
        assert_eq!(log.append_marker(&abort(6), 4).unwrap().base_offset, 63);
        log.append(producer_batch(5, 60, 2, false), 4).unwrap();
        log.append(producer_batch(5, 62, 2, false), 6).unwrap();
        assert_eq!(log.log_end_offset(), 68);
        assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
        log
    }

    #[test]
    fn append_replicated_copies_a_leaders_batches_verbatim() {
        let leader_dir = tempfile::tempdir().unwrap();
        let leader = leader_log(leader_dir.path());
        let source = read_all_bytes(&leader);
        let dir = tempfile::tempdir().unwrap();
        let mut follower = Log::open(dir.path(), small_segments(), true).unwrap();
        // In fetch-sized pieces, each cut inside a batch: the partial tail is ignored and
        // comes whole with the next piece.
        let mut from = 0;
        let mut written = 0;
        while from < source.len() {
            let piece = Bytes::copy_from_slice(&source[from..(from + 700).min(source.len())]);
            let r = follower.append_replicated(piece.clone()).unwrap();
            let whole: usize = batch::complete_batches(&piece).map(|(_, size)| size).sum();
            assert_eq!(r.batches, batch::complete_batches(&piece).count());
            assert_eq!(r.log_end_offset, follower.log_end_offset());
            written += r.records;
            from += whole;
        }
        assert_eq!(written, 68);
        assert_eq!(follower.log_end_offset(), 68);
        assert!(follower.segment_count() > 1, "segments roll as for append");
        assert_eq!(read_all_bytes(&follower), source, "byte for byte");
        assert_eq!(
            epoch_entries(&follower),
            [(0, 0), (2, 20), (4, 40), (6, 66)]
        );
        assert_eq!(epoch_entries(&follower), epoch_entries(&leader));
        assert_eq!(follower.latest_epoch(), Some(6));
        assert_eq!(follower.end_offset_for_epoch(4), (4, 66));
        // Failover: the follower leads now, and a retry of producer 5's last batch is the
        // duplicate it is; a retry of producer 6's aborted batch is too old.
        follower.start_leader_epoch(7).unwrap();
        let retry = follower.append(producer_batch(5, 62, 2, false), 7).unwrap();
        assert!(retry.duplicate);
        assert_eq!((retry.base_offset, retry.last_offset), (66, 67));
        assert!(matches!(
            follower.append(producer_batch(5, 70, 2, false), 7),
            Err(StorageError::Producer(ProducerError::OutOfOrder { .. }))
        ));
        let next = follower.append(producer_batch(5, 64, 2, false), 7).unwrap();
        assert!(!next.duplicate);
        assert_eq!(next.base_offset, 68);
        assert_eq!(follower.end_offset_for_epoch(6), (6, 68));
        // The flush policy counts replicated records too.
        let dir = tempfile::tempdir().unwrap();
        let mut follower = Log::open(
            dir.path(),
            LogConfig {
                flush_messages: 5,
                ..small_segments()
            },
            true,
        )
        .unwrap();
        let r = follower
            .append_replicated(stored(batch(3, 1000), 0, 1))
            .unwrap();
        assert!(!r.flush_due);
        let r = follower
            .append_replicated(stored(batch(3, 1000), 3, 1))
            .unwrap();
        assert!(r.flush_due);
    }

    #[test]
    fn append_replicated_refuses_offsets_going_back_and_corrupt_batches_and_ignores_a_partial_tail()
    {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        let first = stored(batch(2, 1000), 0, 1);
        let second = stored(batch(2, 1000), 2, 1);
        let unchanged = |log: &Log| {
            assert_eq!(log.log_end_offset(), 0);
            assert_eq!(log.size_bytes(), 0);
            assert!(log.leader_epochs().entries().is_empty());
        };
        // A batch that starts inside the one before: nothing of the request is written.
        let overlapping = stored(batch(2, 1000), 1, 1);
        let both = Bytes::from([&first[..], &overlapping[..]].concat());
        assert!(matches!(
            log.append_replicated(both),
            Err(StorageError::NonContiguous {
                expected: 2,
                found: 1,
                ..
            })
        ));
        unchanged(&log);
        // A flipped byte in the records fails the CRC.
        let mut bad = BytesMut::from(&second[..]);
        let at = bad.len() - 2;
        bad[at] ^= 0x40;
        let both = Bytes::from([&first[..], &bad[..]].concat());
        assert!(matches!(
            log.append_replicated(both),
            Err(StorageError::Corrupt { .. })
        ));
        unchanged(&log);
        // A trailing partial batch is not an error, and nothing of it is written.
        let r = log
            .append_replicated(first.slice(..first.len() - 5))
            .unwrap();
        assert_eq!(
            r,
            ReplicatedAppend {
                batches: 0,
                records: 0,
                log_end_offset: 0,
                flush_due: false
            }
        );
        assert_eq!(log.append_replicated(Bytes::new()).unwrap().batches, 0);
        unchanged(&log);
        let with_tail = Bytes::from([&first[..], &second[..10]].concat());
        let r = log.append_replicated(with_tail).unwrap();
        assert_eq!((r.batches, r.records, r.log_end_offset), (1, 2, 2));
        assert_eq!(log.size_bytes(), first.len() as u64);
        assert_eq!(log.append_replicated(second).unwrap().log_end_offset, 4);
        assert_eq!(read_offsets(&log, 0, 1 << 20), [0, 2]);
        // A batch below the log end is refused...
        assert!(matches!(
            log.append_replicated(first),
            Err(StorageError::NonContiguous {
                expected: 4,
                found: 0,
                ..
            })
        ));
        // ...and a gap (a compacted leader's log) is kept as the leader has it.
        let after_gap = stored(batch(2, 1000), 9, 1);
        assert_eq!(log.append_replicated(after_gap).unwrap().log_end_offset, 11);
        assert_eq!(read_offsets(&log, 0, 1 << 20), [0, 2, 9]);
    }

    #[test]
    fn replicated_transaction_markers_reach_the_aborted_list_and_the_lso() {
        let leader_dir = tempfile::tempdir().unwrap();
        let mut leader = Log::open(leader_dir.path(), small_segments(), true).unwrap();
        leader.append(producer_batch(6, 0, 3, true), 1).unwrap();
        leader.append_marker(&abort(6), 1).unwrap();
        leader.append(producer_batch(7, 0, 2, true), 1).unwrap();
        leader.append(producer_batch(5, 0, 2, false), 1).unwrap();
        let expected = vec![AbortedTxn {
            producer_id: 6,
            first_offset: 0,
            last_offset: 3,
        }];
        assert_eq!(leader.aborted_transactions(0, i64::MAX), expected);
        assert_eq!(
            leader.last_stable_offset(),
            4,
            "producer 7's open transaction"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut follower = Log::open(dir.path(), small_segments(), true).unwrap();
        follower
            .append_replicated(Bytes::from(read_all_bytes(&leader)))
            .unwrap();
        for clean in [None, Some(true), Some(false)] {
            if let Some(clean) = clean {
                if clean {
                    follower.close().unwrap();
                }
                drop(follower);
                follower = Log::open(dir.path(), small_segments(), clean).unwrap();
            }
            assert_eq!(follower.aborted_transactions(0, i64::MAX), expected);
            assert_eq!(follower.last_stable_offset(), 4);
            assert_eq!(read_aborted_txns(dir.path(), i64::MAX).kept, expected);
        }
        // The commit that ends producer 7's transaction, replicated, moves the LSO on.
        leader
            .append_marker(
                &TxnMarker {
                    commit: true,
                    ..abort(7)
                },
                1,
            )
            .unwrap();
        let tail = leader
            .prepare_read(8, 1 << 20, true)
            .unwrap()
            .read()
            .unwrap();
        follower.append_replicated(tail.records).unwrap();
        assert_eq!(follower.last_stable_offset(), 9);
        assert_eq!(follower.aborted_transactions(0, i64::MAX), expected);
    }

    /// The state `truncate_to(target)` must leave, checked against what the leader's log
    /// held below the new end; then the log must take appends both ways, and all of it must
    /// survive re-opening, clean and unclean.
    fn check_truncation(target: i64) {
        let dir = tempfile::tempdir().unwrap();
        let log = leader_log(dir.path());
        let original = read_all_bytes(&log);
        let ranges = batch_ranges(&original);
        let original_epochs = epoch_entries(&log);
        // A recovery point in the last segment, so that re-opening after the cut relies on
        // its removal.
        let shared = std::sync::Mutex::new(log);
        Log::checkpoint_recovery_point(&shared).unwrap();
        let mut log = shared.into_inner().unwrap();
        // Unsynced appends too: truncation must not trip over the flush state they leave.
        let expected_end = ranges
            .iter()
            .find(|&&(_, last)| last >= target)
            .map_or(68, |&(base, _)| base);
        let new_end = log.truncate_to(target).unwrap();
        assert_eq!(new_end, expected_end, "target {target}");
        let kept = ranges.iter().filter(|&&(_, last)| last < new_end).count();
        let kept_bytes: usize = batch::complete_batches(&original)
            .take(kept)
            .map(|(_, size)| size)
            .sum();
        let check = |log: &Log, extra: &[u8]| {
            let end = new_end + batch_ranges(extra).len() as i64 * 2;
            assert_eq!(log.log_end_offset(), end, "target {target}");
            assert_eq!(log.log_start_offset(), 0);
            let bytes = read_all_bytes(log);
            assert_eq!(&bytes[..kept_bytes], &original[..kept_bytes]);
            assert_eq!(&bytes[kept_bytes..], extra, "target {target}");
            // Epochs: those that started below the end, then the new one.
            let mut epochs: Vec<(i32, i64)> = original_epochs
                .iter()
                .copied()
                .filter(|&(_, start)| start < new_end)
                .collect();
            if !extra.is_empty() {
                epochs.push((9, new_end));
            }
            assert_eq!(epoch_entries(log), epochs, "target {target}");
            for &(epoch, _) in &epochs {
                let (_, end_of) = log.end_offset_for_epoch(epoch);
                assert!(end_of <= end);
            }
            // Producer 6's transaction: aborted if its marker is kept, open if only its
            // batch is.
            let aborted = log.aborted_transactions(0, i64::MAX);
            if new_end > 63 {
                assert_eq!(aborted.len(), 1);
                assert_eq!(log.last_stable_offset(), end);
            } else {
                assert!(aborted.is_empty(), "target {target}: {aborted:?}");
                let lso = if new_end > 60 { 60 } else { end };
                assert_eq!(log.last_stable_offset(), lso, "target {target}");
            }
            assert_eq!(read_aborted_txns(log.dir(), i64::MAX).kept, aborted);
        };
        check(&log, &[]);
        // Producer 5's last kept batch is a duplicate; its next sequence appends.
        let producer5: Vec<(i64, i64)> = ranges
            .iter()
            .copied()
            .filter(|&(base, last)| last < new_end && base != 60 && base != 63)
            .collect();
        if let Some(&(base, last)) = producer5.last() {
            let seq = (producer5.len() as i32 - 1) * 2;
            let retry = log.append(producer_batch(5, seq, 2, false), 9).unwrap();
            assert!(retry.duplicate, "target {target}");
            assert_eq!((retry.base_offset, retry.last_offset), (base, last));
            // A sequence beyond the next one is a gap: producer 5's state ends where the
            // kept log ends, not where the removed tail did.
            let gap = producer_batch(5, producer5.len() as i32 * 2 + 4, 2, false);
            assert!(
                matches!(
                    log.append(gap, 9),
                    Err(StorageError::Producer(ProducerError::OutOfOrder { .. }))
                ),
                "target {target}"
            );
        } else {
            assert!(log.producers().iter().all(|p| p.producer_id != 5));
        }
        // A follower again: its leader's batch at the new end, epoch 9.
        let r = log
            .append_replicated(stored(batch(2, 5000), new_end, 9))
            .unwrap();
        assert_eq!(r.log_end_offset, new_end + 2);
        // A leader again (epoch 9 still): producer 5 continues.
        let next = log
            .append(producer_batch(5, producer5.len() as i32 * 2, 2, false), 9)
            .unwrap();
        assert!(!next.duplicate);
        assert_eq!(next.base_offset, new_end + 2);
        let extra = read_all_bytes(&log)[kept_bytes..].to_vec();
        check(&log, &extra);
        for clean in [true, false] {
            if clean {
                log.close().unwrap();
            }
            drop(log);
            log = Log::open(dir.path(), small_segments(), clean).unwrap();
            check(&log, &extra);
            let retry = log
                .append(producer_batch(5, producer5.len() as i32 * 2, 2, false), 9)
                .unwrap();
            assert!(retry.duplicate, "clean {clean}");
        }
    }

    #[test]
    fn truncate_to_in_the_active_segment_at_a_boundary_inside_a_batch_and_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = leader_log(dir.path());
        let bases: Vec<i64> = log.segments.keys().copied().collect();
        drop(log);
        let active = *bases.last().unwrap();
        let mut targets = vec![
            active + 2,   // inside the active segment, on a batch boundary
            active + 3,   // inside the active segment, inside a batch
            bases[1],     // a segment boundary
            bases[2] + 1, // inside a batch, later segments deleted
            3,            // inside the first segment: every later one goes
            1,            // inside the first batch of the first segment
            61,           // inside producer 6's transactional batch
            63,           // the abort marker
            64,           // just after the marker
            67,           // the last batch
            0,            // the first segment's base: truncate fully
        ];
        targets.dedup();
        for target in targets {
            check_truncation(target);
        }
    }

    #[test]
    fn truncate_to_past_the_end_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = leader_log(dir.path());
        let before = read_all_bytes(&log);
        assert_eq!(log.truncate_to(68).unwrap(), 68);
        assert_eq!(log.truncate_to(1000).unwrap(), 68);
        assert_eq!(read_all_bytes(&log), before);
        assert_eq!(log.truncations, 0);
    }

    #[test]
    fn truncation_lowers_a_log_start_above_the_new_end_and_cuts_the_cleaner_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = leader_log(dir.path());
        log.delete_records_before(50).unwrap();
        let first_base = *log.segments.keys().next().unwrap();
        assert!(first_base < 40, "{first_base}");
        fs::write(
            dir.path().join("cleaner-checkpoint"),
            "first_dirty 50\ntombstones 60 123\ntombstones 20 100\n",
        )
        .unwrap();
        assert_eq!(log.truncate_to(41).unwrap(), 40);
        assert_eq!(log.log_start_offset(), 40);
        assert_eq!(
            fs::read_to_string(dir.path().join("cleaner-checkpoint")).unwrap(),
            "first_dirty 40\ntombstones 40 123\ntombstones 20 100\n"
        );
        drop(log);
        let log = Log::open(dir.path(), small_segments(), false).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 40));
    }

    #[test]
    fn a_flush_or_checkpoint_overtaken_by_a_truncation_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = leader_log(dir.path());
        // A flush planned before the truncation and finished after it.
        let work = log.flush_work().unwrap();
        assert_eq!(work.up_to, 68);
        assert_eq!(log.truncate_to(30).unwrap(), 30);
        log.append(batch(2, 1000), 1).unwrap();
        work.sync().unwrap();
        log.flush_done(&work);
        assert_eq!(log.flushed_offset(), 30, "not the old 68, nor the new 32");
        // The next flush counts again.
        let work = log.flush_work().unwrap();
        work.sync().unwrap();
        log.flush_done(&work);
        assert_eq!(log.flushed_offset(), 32);
    }

    #[test]
    fn truncate_fully_and_start_at_empties_the_log_durably() {
        for offset in [500, 10] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = leader_log(dir.path());
            log.truncate_fully_and_start_at(offset).unwrap();
            let empty = |log: &Log| {
                assert_eq!(log.log_start_offset(), offset);
                assert_eq!(log.segment_count(), 1);
                assert!(log.leader_epochs().entries().is_empty());
                assert!(log.aborted_transactions(0, i64::MAX).is_empty());
                assert!(log.producers().is_empty());
                assert_eq!(log.latest_epoch(), None);
            };
            empty(&log);
            assert_eq!(log.log_end_offset(), offset);
            assert!(read_offsets(&log, offset, 1 << 20).is_empty());
            assert!(matches!(
                log.prepare_read(offset - 1, 10, true),
                Err(StorageError::OffsetOutOfRange { .. })
            ));
            let names: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                !names.iter().any(|n| n.ends_with(".snapshot")
                    || n == ABORTED_TXNS
                    || n == RECOVERY_POINT_FILE),
                "{names:?}"
            );
            for clean in [true, false] {
                drop(log);
                log = Log::open(dir.path(), small_segments(), clean).unwrap();
                empty(&log);
                assert_eq!(log.log_end_offset(), offset);
            }
            // Producer 5's old sequence is news now: its state went with the data.
            let r = log.append(producer_batch(5, 0, 2, false), 3).unwrap();
            assert!(!r.duplicate);
            assert_eq!(r.base_offset, offset);
            drop(log);
            let log = Log::open(dir.path(), small_segments(), false).unwrap();
            assert_eq!(log.log_end_offset(), offset + 2);
            assert_eq!(epoch_entries(&log), [(3, offset)]);
        }
    }

    #[test]
    fn a_new_leader_epoch_is_answered_before_its_first_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_segments(), true).unwrap();
        assert_eq!(log.latest_epoch(), None);
        log.append(batch(5, 1000), 1).unwrap();
        log.append(batch(5, 1000), 1).unwrap();
        log.start_leader_epoch(3).unwrap();
        assert_eq!(log.latest_epoch(), Some(3));
        assert_eq!(log.end_offset_for_epoch(3), (3, 10));
        assert_eq!(log.end_offset_for_epoch(1), (1, 10));
        assert_eq!(log.end_offset_for_epoch(2), (1, 10));
        log.start_leader_epoch(2).unwrap();
        log.start_leader_epoch(3).unwrap();
        assert_eq!(epoch_entries(&log), [(1, 0), (3, 10)]);
        // The next flush syncs the checkpoint.
        let checkpoint = dir
            .path()
            .join(crate::leader_epoch::LEADER_EPOCH_CHECKPOINT);
        let work = log.flush_work().unwrap();
        assert!(work.files.iter().any(|(_, path)| *path == checkpoint));
        assert_eq!(
            fs::read_to_string(&checkpoint).unwrap(),
            "0\n2\n1 0\n3 10\n"
        );
        // A restart forgets an epoch that wrote nothing, as Kafka's loading does; the
        // broker notes it again when it leads again.
        for clean in [true, false] {
            drop(log);
            log = Log::open(dir.path(), small_segments(), clean).unwrap();
            assert_eq!(epoch_entries(&log), [(1, 0)]);
            log.start_leader_epoch(3).unwrap();
            assert_eq!(log.end_offset_for_epoch(3), (3, 10));
        }
        // Epoch 3 wrote nothing here; this replica follows a leader whose log continues in
        // epoch 2 from offset 10: that history replaces the empty epoch.
        log.append_replicated(stored(batch(2, 1000), 10, 2))
            .unwrap();
        assert_eq!(epoch_entries(&log), [(1, 0), (2, 10)]);
        assert_eq!(log.end_offset_for_epoch(2), (2, 12));
        // A leader that says the empty epoch diverged at the log end: truncating there cuts
        // no batch but drops the epoch, so the next fetch names the epoch data was written in.
        log.start_leader_epoch(4).unwrap();
        assert_eq!(log.truncate_to(12).unwrap(), 12);
        assert_eq!(log.latest_epoch(), Some(2));
        assert_eq!(log.log_end_offset(), 12);
    }
}
