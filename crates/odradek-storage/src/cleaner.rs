//! The log cleaner (Kafka's log compaction) for logs with `cleanup.policy=compact`.
//!
//! A pass over one log:
//!
//! 1. **Plan** (under the log's lock): snapshot the closed segments, the last stable offset
//!    and the aborted transactions, and read the cleaner checkpoint (the first dirty offset).
//!    The dirty range is [first dirty, first uncleanable), where the first uncleanable offset
//!    is the base of the active segment, of the segment holding the last stable offset (so
//!    every transaction the pass reads has ended), or of the first segment holding records
//!    newer than `min.compaction.lag.ms`, whichever is lowest. The log is cleaned when
//!    dirty bytes / (clean + dirty bytes) ≥ `min.cleanable.dirty.ratio`, when the oldest dirty
//!    record is older than `max.compaction.lag.ms`, or when tombstones are due for removal.
//! 2. **Map** (no lock; closed segments are immutable): an [`OffsetMap`] of key hash → latest
//!    offset over the dirty range, bounded by `log.cleaner.dedupe.buffer.size`. If it fills,
//!    the pass cleans only up to the last offset it covered. Committed transactional records
//!    are indexed like any other; records of aborted transactions and control batches are
//!    not (an aborted value must not shadow the committed one before it).
//! 3. **Copy** (no lock): every closed segment below that end is rewritten, from the first
//!    segment on, into groups of consecutive segments (each group within `segment.bytes` and
//!    the 32-bit index limits) as `<base>.log.cleaned` with its indexes, keeping a record
//!    only if it has a key, no later offset for its key is in the map, and it is not an
//!    expired tombstone. Surviving records keep their offsets and their bytes; a batch keeps
//!    its base offset, lastOffsetDelta, codec, headers and producer fields (transactional
//!    flag, producer id and epoch, base sequence); record count, max timestamp and CRC are
//!    recomputed; a batch with no survivors is dropped. A batch of an aborted transaction is
//!    dropped whole. A transaction marker stays while any record of its transaction does,
//!    and goes like a tombstone once none is left.
//! 4. **Swap** (under the lock): the crash-safe protocol of [`recover_interrupted_cleaning`];
//!    then the aborted transactions whose markers are gone leave the log's list.
//! 5. **Checkpoint**: the new first dirty offset, written atomically after the swap, still
//!    under the lock.
//!
//! Truncation (`Log::truncate_to`, `Log::truncate_fully_and_start_at`, for replication) runs
//! under the log's lock and may fall between the plan and the swap. It re-opens the log from
//! disk, so every segment gets a new file handle, and it counts itself in the log's
//! truncation count: the swap checks both and discards the pass, so a pass that read removed
//! data can never put it back (nor delete segments written after the truncation, which its
//! replaced range would cover). The checkpoint is written under the same lock as the swap, so
//! a truncation either sees it and cuts it back to the new log end ([`truncate_checkpoint`])
//! or comes before the swap and the pass writes none.
//!
//! Tombstones: a tombstone is removed once `delete.retention.ms` has passed since the pass
//! that first cleaned it (moved the first dirty offset past it). The checkpoint keeps, for
//! passes that kept new tombstones, `(end offset of the pass, time of the pass)`; tombstones
//! below the end of a pass whose time + `delete.retention.ms` has passed are dropped by the
//! next pass (and such a pass runs even without dirty data). Transaction markers share this
//! horizon: a marker goes once a pass finds no record of its transaction left and it lies
//! below the horizon; a pass that keeps a marker whose records are all gone is recorded like
//! one that keeps a new tombstone, so at the latest a pass `delete.retention.ms` later
//! removes it (earlier if an older recorded pass already covers it). Kafka stamps the
//! horizon into the marker's batch instead (KIP-534); this keeps batches as they are.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::Hasher;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use odradek_protocol::batch::{self, BatchHeader, TxnMarker};
use tracing::{info, warn};

use crate::log::{header_of, remove_if_exists, sync_dir, write_file_atomically};
use crate::producer_state::AbortedTxn;
use crate::{Log, LogSegment, StorageError, offset_file_stem};

/// Per partition: `first_dirty <offset>` and `tombstones <end offset> <cleaned at ms>` lines.
const CHECKPOINT: &str = "cleaner-checkpoint";
/// Bytes read per `pread` while walking a segment.
const READ_CHUNK: usize = 1 << 20;
/// Kafka's `log.cleaner.io.buffer.load.factor`: the map is full at 90% of its slots.
const MAP_LOAD_FACTOR: f64 = 0.9;
/// Bytes per map slot: a 128-bit key hash and an offset, as Kafka's `SkimpyOffsetMap`.
const SLOT_BYTES: u64 = 24;
/// Pending tombstone passes remembered in the checkpoint; older ones are merged (which only
/// keeps tombstones longer).
const MAX_TOMBSTONE_PASSES: usize = 32;

/// What one pass did, for logging and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_in: usize,
    pub segments_out: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub records_removed: u64,
    /// The first dirty offset after the pass.
    pub cleaned_up_to: i64,
}

/// The cleaner: one per broker, run on one thread; its offset map is reused across logs.
#[derive(Debug)]
pub struct Cleaner {
    map: OffsetMap,
}

impl Cleaner {
    /// `dedupe_buffer_size` is `log.cleaner.dedupe.buffer.size`: the most memory the offset
    /// map may use (a rehash while it grows briefly holds the half-size table too).
    pub fn new(dedupe_buffer_size: u64) -> Self {
        Self {
            map: OffsetMap::new(dedupe_buffer_size),
        }
    }

    /// Cleans `log` if it is compacted and needs it. `stop` aborts a pass between batches
    /// (its output is discarded). Returns `None` when nothing was done.
    pub fn clean(
        &mut self,
        log: &Mutex<Log>,
        now: i64,
        stop: &AtomicBool,
    ) -> Result<Option<CleanStats>, StorageError> {
        let plan = {
            let Ok(guard) = log.lock() else {
                return Ok(None);
            };
            match Plan::make(&guard, now)? {
                Some(p) => p,
                None => return Ok(None),
            }
        };
        let dir = plan.dir.clone();
        let outcome = self.run(plan, log, now, stop);
        if !matches!(outcome, Ok(Some(_))) {
            remove_with_suffix(&dir, ".cleaned");
        }
        outcome
    }

    fn run(
        &mut self,
        plan: Plan,
        log: &Mutex<Log>,
        now: i64,
        stop: &AtomicBool,
    ) -> Result<Option<CleanStats>, StorageError> {
        // 2. The offset map over the dirty range.
        self.map.clear();
        let mut end = plan.first_dirty;
        let mut full = false;
        if plan.first_uncleanable > plan.first_dirty {
            for seg in plan
                .segments
                .iter()
                .filter(|s| s.next_offset > plan.first_dirty && s.base < plan.first_uncleanable)
            {
                let mut visit = |bytes: &[u8]| -> Result<bool, StorageError> {
                    let h = header_of(bytes, &seg.path)?;
                    // Aborted records must not shadow older committed values of their keys.
                    if h.is_control()
                        || h.last_offset() < plan.first_dirty
                        || plan.aborted.holds(&h)
                    {
                        return Ok(true);
                    }
                    let section =
                        batch::decompressed_records(bytes).map_err(|e| corrupt(&seg.path, e))?;
                    for record in batch::raw_records(&section) {
                        let record = record.map_err(|e| corrupt(&seg.path, e))?;
                        let (offset, _) = batch::record_offset_and_timestamp(&h, &record);
                        if offset < plan.first_dirty || offset >= plan.first_uncleanable {
                            continue;
                        }
                        let Some(key) = record.key else { continue };
                        if !self.map.put(key, offset) {
                            full = true;
                            return Ok(false);
                        }
                        end = offset + 1;
                    }
                    Ok(!stop.load(Ordering::Relaxed))
                };
                walk_batches(&seg.file, &seg.path, seg.size, &mut visit)?;
                if full || stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if !full {
                end = plan.first_uncleanable;
            }
        }
        let horizon = plan.tombstone_horizon(now);

        // 3. Rewrite every closed segment below `end`, in groups.
        let cleanable: Vec<&SegmentSnapshot> = plan
            .segments
            .iter()
            .filter(|s| s.base < end.max(horizon))
            .collect();
        if cleanable.is_empty() {
            return Ok(None);
        }
        let mut groups: Vec<Vec<&SegmentSnapshot>> = Vec::new();
        for (i, seg) in cleanable.iter().enumerate() {
            let group_end = plan.end_after(seg.base);
            let fits = |g: &Vec<&SegmentSnapshot>| {
                let bytes: u64 = g.iter().map(|s| s.size).sum::<u64>() + seg.size;
                bytes <= plan.config_segment_bytes.min(u64::from(u32::MAX))
                    && group_end - 1 - g[0].base <= i64::from(u32::MAX)
            };
            match groups.last_mut() {
                Some(g) if i > 0 && fits(g) => g.push(seg),
                _ => groups.push(vec![seg]),
            }
        }
        let mut stats = CleanStats {
            segments_in: cleanable.len(),
            segments_out: groups.len(),
            cleaned_up_to: end,
            ..CleanStats::default()
        };
        let mut awaits_horizon = false;
        let mut open_txns = OpenTxns::default();
        let mut kept_abort_markers = Vec::new();
        let mut outputs = Vec::with_capacity(groups.len());
        for group in &groups {
            let base = group[0].base;
            let replaced_end = plan.end_after(group[group.len() - 1].base);
            let mut out =
                LogSegment::create_at(swap_path(&plan.dir, base, "log", "cleaned"), base)?;
            for seg in group {
                stats.bytes_in += seg.size;
                let mut visit = |bytes: &[u8]| -> Result<bool, StorageError> {
                    let bounds = (end, horizon);
                    let filtered =
                        self.filter_batch(bytes, &plan, bounds, &mut open_txns, &seg.path)?;
                    stats.records_removed += filtered.removed;
                    awaits_horizon |= filtered.awaits_horizon;
                    kept_abort_markers.extend(filtered.kept_abort_marker);
                    let written = match &filtered.rewritten {
                        Rewrite::Keep => Some(bytes),
                        Rewrite::Drop => None,
                        Rewrite::New(b) => Some(&b[..]),
                    };
                    if let Some(b) = written {
                        out.append(&[b], now, plan.index_interval_bytes)?;
                    }
                    Ok(!stop.load(Ordering::Relaxed))
                };
                walk_batches(&seg.file, &seg.path, seg.size, &mut visit)?;
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
            }
            stats.bytes_out += out.size();
            out.file()
                .sync_all()
                .map_err(|e| StorageError::io(out.log_path(), e))?;
            crate::log::sync_data(&out.write_indexes_to(
                swap_path(&plan.dir, base, "index", "cleaned"),
                swap_path(&plan.dir, base, "timeindex", "cleaned"),
            )?)?;
            let range = swap_path(&plan.dir, base, "replaces", "cleaned");
            fs::write(&range, format!("{replaced_end}\n"))
                .and_then(|()| File::open(&range)?.sync_all())
                .map_err(|e| StorageError::io(&range, e))?;
            outputs.push((
                group.iter().map(|s| s.base).collect::<Vec<_>>(),
                replaced_end,
                out,
            ));
        }

        // The checkpoint's tombstone passes, written with the swap (step 5).
        let mut passes: Vec<(i64, i64)> = plan
            .tombstone_passes
            .iter()
            .copied()
            .filter(|&(e, _)| e > horizon)
            .collect();
        if awaits_horizon {
            passes.push((end, now));
        }
        while passes.len() > MAX_TOMBSTONE_PASSES {
            // Merge the oldest pass into the next: its tombstones then wait for the later
            // (longer) deadline.
            passes.remove(0);
        }

        // 4. Swap under the lock, if the log still holds exactly the segments we read and
        // was not truncated meanwhile.
        {
            let Ok(mut guard) = log.lock() else {
                return Ok(None);
            };
            let unchanged = plan
                .segments
                .iter()
                .filter(|s| s.base < end.max(horizon))
                .all(|s| {
                    guard
                        .segments
                        .get(&s.base)
                        .is_some_and(|live| Arc::ptr_eq(live.file(), &s.file))
                })
                && guard.truncations == plan.truncations
                && !guard.is_offline();
            if !unchanged {
                info!(log = %plan.dir.display(), "log changed during cleaning; discarding the pass");
                return Ok(None);
            }
            let walked_end = outputs.last().map_or(i64::MIN, |(_, end, _)| *end);
            // An abort marker is dropped only with the last of its records, so the entry goes
            // with it: read_committed readers must not skip records for a marker they will
            // never see. Entries whose marker a crash-interrupted earlier pass removed go too.
            let swapped = commit(&plan.dir, &mut guard, outputs)
                .and_then(|()| crash_point(4))
                .and_then(|()| {
                    guard.retain_aborted_transactions(|t| {
                        t.last_offset >= walked_end
                            || kept_abort_markers.binary_search(&t.last_offset).is_ok()
                    })
                });
            if let Err(e) = swapped {
                // The disk holds a committed or rolled-back swap that memory may not match:
                // stop writes until a restart recovers it.
                guard.mark_offline();
                return Err(e);
            }
            // 5. The checkpoint, after the swap: if we crash before it, the next pass redoes
            // the same work from the old first dirty offset. Under the lock, so that a
            // truncation cannot fall between the swap and it and leave a first dirty offset
            // beyond the truncated log's end (see the module documentation).
            write_checkpoint(&plan.dir, end.max(plan.first_dirty), &passes)?;
        }
        info!(
            log = %plan.dir.display(),
            segments_in = stats.segments_in,
            segments_out = stats.segments_out,
            bytes_in = stats.bytes_in,
            bytes_out = stats.bytes_out,
            records_removed = stats.records_removed,
            first_dirty = stats.cleaned_up_to,
            "cleaned log"
        );
        Ok(Some(stats))
    }

    /// Decides which records of one batch survive. `bounds` is the end of the pass's dirty
    /// range and the tombstone horizon; batches must come in offset order from the first
    /// segment, so that `open_txns` sees every transaction's records before its marker.
    fn filter_batch(
        &self,
        bytes: &[u8],
        plan: &Plan,
        (end, horizon): (i64, i64),
        open_txns: &mut OpenTxns,
        path: &Path,
    ) -> Result<Filtered, StorageError> {
        let h = header_of(bytes, path)?;
        let mut result = Filtered::keep();
        if h.is_control() {
            return Ok(filter_marker(bytes, &h, plan, (end, horizon), open_txns));
        }
        // Past the last stable offset a transaction may still abort or commit: untouched.
        if h.base_offset() >= plan.last_stable {
            open_txns.saw(&h, true);
            return Ok(result);
        }
        if plan.aborted.holds(&h) {
            open_txns.saw(&h, false);
            result.removed = u64::try_from(h.record_count()).unwrap_or(0);
            result.rewritten = Rewrite::Drop;
            return Ok(result);
        }
        let codec = h.compression().ok_or_else(|| {
            corrupt(
                path,
                format!("unknown codec in batch at {}", h.base_offset()),
            )
        })?;
        let section = batch::decompressed_records(bytes).map_err(|e| corrupt(path, e))?;
        let mut kept = Vec::with_capacity(section.len());
        let (mut count, mut total, mut max_ts) = (0i32, 0u64, -1i64);
        for record in batch::raw_records(&section) {
            let record = record.map_err(|e| corrupt(path, e))?;
            total += 1;
            let (offset, ts) = batch::record_offset_and_timestamp(&h, &record);
            let keep = record.key.is_some_and(|key| {
                let latest = offset >= self.map.get(key).unwrap_or(-1);
                let tombstone = record.value.is_none();
                latest && !(tombstone && offset < horizon)
            });
            if keep {
                if record.value.is_none() && offset >= plan.first_dirty {
                    result.awaits_horizon = true;
                }
                kept.extend_from_slice(record.bytes);
                count += 1;
                max_ts = max_ts.max(ts);
            }
        }
        result.removed = total - count as u64;
        open_txns.saw(&h, count > 0);
        // Kafka keeps each producer's last batch, even emptied, for its sequence and epoch.
        // Here producer state is restored from the snapshot taken when the active segment
        // rolled (cleaning never reaches that segment) plus a replay of the active segment,
        // so replay reads a cleaned segment only when the snapshots after it are gone; a
        // producer it then misses may start at any sequence (KIP-360), as after expiry.
        result.rewritten = if count == 0 {
            Rewrite::Drop
        } else if result.removed == 0 {
            Rewrite::Keep
        } else {
            let max_ts = if h.is_log_append_time() {
                h.max_timestamp()
            } else {
                max_ts
            };
            let rebuilt = batch::build_batch(bytes, &kept, count, max_ts, codec)
                .map_err(|e| corrupt(path, e))?;
            Rewrite::New(rebuilt.to_vec())
        };
        Ok(result)
    }
}

enum Rewrite {
    Keep,
    Drop,
    New(Vec<u8>),
}

struct Filtered {
    rewritten: Rewrite,
    removed: u64,
    /// A kept tombstone or transaction marker waits for `delete.retention.ms`: the pass
    /// goes into the checkpoint so that a later one removes it.
    awaits_horizon: bool,
    /// The offset of a kept abort marker.
    kept_abort_marker: Option<i64>,
}

impl Filtered {
    fn keep() -> Self {
        Self {
            rewritten: Rewrite::Keep,
            removed: 0,
            awaits_horizon: false,
            kept_abort_marker: None,
        }
    }
}

/// Decides whether a control batch survives. A transaction marker stays while any record of
/// its transaction does (Kafka's `CleanedTransactionMetadata`: also through the pass that
/// removes the last of them), then goes once the tombstone horizon has passed it; until
/// then the pass counts as one that keeps a tombstone, so a later pass comes to remove it.
fn filter_marker(
    bytes: &[u8],
    h: &BatchHeader<'_>,
    plan: &Plan,
    (end, horizon): (i64, i64),
    open_txns: &mut OpenTxns,
) -> Filtered {
    let mut result = Filtered::keep();
    // Another kind of control record is not ours to judge.
    let Some(marker) = TxnMarker::decode(bytes) else {
        return result;
    };
    let offset = h.base_offset();
    match open_txns.end(marker.producer_id) {
        _ if offset >= plan.last_stable => {}
        Some(true) => {}
        None if offset < horizon => {
            result.rewritten = Rewrite::Drop;
            result.removed = 1;
            return result;
        }
        // No record of its transaction is left (or none survives this pass).
        _ => result.awaits_horizon = offset < end,
    }
    if !marker.commit {
        result.kept_abort_marker = Some(offset);
    }
    result
}

/// While a pass walks the log in offset order: per producer with a transaction not yet
/// ended by a marker, whether any of the records seen for it survive the pass.
#[derive(Debug, Default)]
struct OpenTxns(HashMap<i64, bool>);

impl OpenTxns {
    fn saw(&mut self, h: &BatchHeader<'_>, survives: bool) {
        if h.is_transactional() {
            *self.0.entry(h.producer_id()).or_default() |= survives;
        }
    }

    /// `producer_id`'s marker: `None` if no record of its transaction was seen.
    fn end(&mut self, producer_id: i64) -> Option<bool> {
        self.0.remove(&producer_id)
    }
}

/// The log's aborted transactions by producer, as `(first offset, marker offset)` sorted:
/// a producer's transactions never overlap, so a transactional batch was aborted when its
/// base offset lies in one of its producer's ranges.
#[derive(Debug, Default)]
struct AbortedRanges(HashMap<i64, Vec<(i64, i64)>>);

impl AbortedRanges {
    fn new(txns: &[AbortedTxn]) -> Self {
        let mut ranges: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for t in txns {
            ranges
                .entry(t.producer_id)
                .or_default()
                .push((t.first_offset, t.last_offset));
        }
        for r in ranges.values_mut() {
            r.sort_unstable();
        }
        Self(ranges)
    }

    /// Whether `h` is a data batch of an aborted transaction.
    fn holds(&self, h: &BatchHeader<'_>) -> bool {
        if !h.is_transactional() || h.is_control() {
            return false;
        }
        let Some(ranges) = self.0.get(&h.producer_id()) else {
            return false;
        };
        let at = ranges.partition_point(|&(first, _)| first <= h.base_offset());
        at > 0 && h.base_offset() <= ranges[at - 1].1
    }
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
        resume_at: None,
    }
}

/// A closed segment as the plan saw it.
#[derive(Debug)]
struct SegmentSnapshot {
    base: i64,
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    next_offset: i64,
}

#[derive(Debug)]
struct Plan {
    dir: PathBuf,
    segments: Vec<SegmentSnapshot>,
    active_base: i64,
    first_dirty: i64,
    first_uncleanable: i64,
    /// The log's last stable offset: the cleaner reads nothing at or past it into the map
    /// and rewrites nothing there.
    last_stable: i64,
    aborted: AbortedRanges,
    tombstone_passes: Vec<(i64, i64)>,
    delete_retention_ms: i64,
    config_segment_bytes: u64,
    index_interval_bytes: u64,
    /// The log's truncation count when planned: a pass across a truncation is discarded.
    truncations: u64,
}

impl Plan {
    fn make(log: &Log, now: i64) -> Result<Option<Self>, StorageError> {
        let config = log.config();
        if !config.compact || log.is_offline() || log.segments.len() < 2 {
            return Ok(None);
        }
        let Some(&active_base) = log.segments.keys().next_back() else {
            return Ok(None);
        };
        let segments: Vec<SegmentSnapshot> = log
            .segments
            .values()
            .filter(|s| s.base_offset() != active_base)
            .map(|s| SegmentSnapshot {
                base: s.base_offset(),
                file: s.file().clone(),
                path: s.log_path().to_path_buf(),
                size: s.size(),
                next_offset: s.next_offset(),
            })
            .collect();
        let checkpoint = read_checkpoint(log.dir());
        let first_dirty = checkpoint
            .first_dirty
            .unwrap_or(0)
            .max(log.log_start_offset())
            .min(active_base);
        // As in Kafka, the segment holding the last stable offset is not cleaned either, so
        // every transaction a pass reads has ended.
        let last_stable = log.last_stable_offset();
        let stable_segment = log
            .segments
            .range(..=last_stable)
            .next_back()
            .map_or(active_base, |(&base, _)| base);
        let mut first_uncleanable = active_base.min(stable_segment).max(first_dirty);
        if config.min_compaction_lag_ms > 0 {
            let newest_allowed = now.saturating_sub(config.min_compaction_lag_ms);
            if let Some(s) = log
                .segments
                .values()
                .find(|s| s.next_offset() > first_dirty && s.max_timestamp() > newest_allowed)
            {
                first_uncleanable = first_uncleanable.min(s.base_offset().max(first_dirty));
            }
        }
        let dirty: Vec<&SegmentSnapshot> = segments
            .iter()
            .filter(|s| s.next_offset > first_dirty && s.base < first_uncleanable)
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size).sum();
        let clean_bytes: u64 = segments
            .iter()
            .filter(|s| s.next_offset <= first_dirty)
            .map(|s| s.size)
            .sum();
        let ratio = if dirty_bytes == 0 {
            0.0
        } else {
            dirty_bytes as f64 / (dirty_bytes + clean_bytes) as f64
        };
        // max.compaction.lag.ms: the oldest dirty record is taken from the first dirty
        // segment's first batch, as Kafka does.
        let overdue = match dirty.iter().find(|s| s.size > 0) {
            Some(s) if config.max_compaction_lag_ms < i64::MAX => {
                let first = crate::log::read_batch_at(&s.file, &s.path, 0)?;
                let ts = header_of(&first, &s.path)?.max_timestamp();
                now.saturating_sub(ts) > config.max_compaction_lag_ms
            }
            _ => false,
        };
        let mut plan = Self {
            dir: log.dir().to_path_buf(),
            segments,
            active_base,
            first_dirty,
            first_uncleanable,
            last_stable,
            aborted: AbortedRanges::new(&log.aborted_transactions(i64::MIN, i64::MAX)),
            tombstone_passes: checkpoint.tombstone_passes,
            delete_retention_ms: config.delete_retention_ms,
            config_segment_bytes: config.segment_bytes.max(1),
            index_interval_bytes: config.index_interval_bytes,
            truncations: log.truncations,
        };
        let dirty_due = first_uncleanable > first_dirty
            && dirty_bytes > 0
            && (ratio >= config.min_cleanable_dirty_ratio || overdue);
        let tombstones_due = plan.tombstone_horizon(now) > log.log_start_offset();
        if !(dirty_due || tombstones_due) {
            return Ok(None);
        }
        if !dirty_due {
            // Only expired tombstones to drop: no dirty range to index.
            plan.first_uncleanable = plan.first_dirty;
        }
        Ok(Some(plan))
    }

    /// Tombstones below this offset have outlived `delete.retention.ms` since they were
    /// first cleaned.
    fn tombstone_horizon(&self, now: i64) -> i64 {
        self.tombstone_passes
            .iter()
            .filter(|&&(_, at)| at.saturating_add(self.delete_retention_ms) <= now)
            .map(|&(end, _)| end)
            .max()
            .unwrap_or(i64::MIN)
    }

    /// The base offset of the segment after the one at `base` (the active one if none).
    fn end_after(&self, base: i64) -> i64 {
        self.segments
            .iter()
            .map(|s| s.base)
            .find(|&b| b > base)
            .unwrap_or(self.active_base)
    }
}

/// Calls `visit` with each whole batch of the first `size` bytes of a segment file, until it
/// returns false.
fn walk_batches(
    file: &File,
    path: &Path,
    size: u64,
    visit: &mut dyn FnMut(&[u8]) -> Result<bool, StorageError>,
) -> Result<(), StorageError> {
    let mut pos = 0u64;
    let mut buf = Vec::new();
    let mut need = READ_CHUNK;
    while pos < size {
        let want = usize::try_from(size - pos).unwrap_or(usize::MAX).min(need);
        buf.resize(want, 0);
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| StorageError::io(path, e))?;
        let mut consumed = 0usize;
        need = READ_CHUNK;
        while let Some(h) = BatchHeader::parse(&buf[consumed..]) {
            let len = h.total_size();
            if len < batch::HEADER_LEN {
                return Err(corrupt(
                    path,
                    format!("bad batch at position {}", pos + consumed as u64),
                ));
            }
            if consumed + len > buf.len() {
                need = need.max(len);
                break;
            }
            if !visit(&buf[consumed..consumed + len])? {
                return Ok(());
            }
            consumed += len;
        }
        if consumed == 0 && (need <= buf.len() || pos + need as u64 > size) {
            return Err(corrupt(path, format!("truncated batch at position {pos}")));
        }
        pos += consumed as u64;
    }
    Ok(())
}

/// Key hash → latest offset, in a fixed budget of memory (Kafka's `SkimpyOffsetMap`).
/// Keys are identified by a 128-bit hash, so distinct keys colliding is negligible.
#[derive(Debug)]
struct OffsetMap {
    slots: Vec<Slot>,
    used: usize,
    max_slots: usize,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: [u64; 2],
    /// -1: empty.
    offset: i64,
}

const EMPTY: Slot = Slot {
    hash: [0, 0],
    offset: -1,
};

impl OffsetMap {
    fn new(buffer_bytes: u64) -> Self {
        let max_slots = usize::try_from(buffer_bytes / SLOT_BYTES)
            .unwrap_or(usize::MAX)
            .max(2);
        Self {
            slots: Vec::new(),
            used: 0,
            max_slots,
        }
    }

    fn clear(&mut self) {
        self.slots.clear();
        self.slots.shrink_to(self.max_slots.min(1 << 16));
        self.used = 0;
    }

    fn limit(slots: usize) -> usize {
        ((slots as f64 * MAP_LOAD_FACTOR) as usize).clamp(1, slots.saturating_sub(1).max(1))
    }

    fn hash(key: &[u8]) -> [u64; 2] {
        let mut a = DefaultHasher::new();
        a.write(key);
        let mut b = DefaultHasher::new();
        b.write_u8(0x5a);
        b.write(key);
        [a.finish(), b.finish()]
    }

    fn find(&self, hash: [u64; 2]) -> usize {
        let n = self.slots.len();
        let mut i = (hash[0] as usize) % n;
        loop {
            let s = self.slots[i];
            if s.offset < 0 || s.hash == hash {
                return i;
            }
            i = (i + 1) % n;
        }
    }

    /// Records `offset` as the latest for `key`. False when the map is full and `key` is new.
    fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let hash = Self::hash(key);
        if self.slots.is_empty() {
            self.slots = vec![EMPTY; self.max_slots.min(1024)];
        }
        let i = self.find(hash);
        if self.slots[i].offset >= 0 {
            self.slots[i].offset = offset;
            return true;
        }
        if self.used >= Self::limit(self.slots.len()) {
            if self.slots.len() >= self.max_slots {
                return false;
            }
            self.grow();
            return self.put(key, offset);
        }
        self.slots[i] = Slot { hash, offset };
        self.used += 1;
        true
    }

    fn grow(&mut self) {
        let bigger = (self.slots.len() * 2).min(self.max_slots);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; bigger]);
        for s in old.into_iter().filter(|s| s.offset >= 0) {
            let i = self.find(s.hash);
            self.slots[i] = s;
        }
    }

    fn get(&self, key: &[u8]) -> Option<i64> {
        if self.slots.is_empty() {
            return None;
        }
        let s = self.slots[self.find(Self::hash(key))];
        (s.offset >= 0).then_some(s.offset)
    }
}

#[derive(Debug, Default)]
struct Checkpoint {
    first_dirty: Option<i64>,
    tombstone_passes: Vec<(i64, i64)>,
}

fn read_checkpoint(dir: &Path) -> Checkpoint {
    let mut cp = Checkpoint::default();
    let Ok(text) = fs::read_to_string(dir.join(CHECKPOINT)) else {
        return cp;
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("first_dirty"), Some(o), None) => cp.first_dirty = o.parse().ok(),
            (Some("tombstones"), Some(end), Some(at)) => {
                if let (Ok(end), Ok(at)) = (end.parse(), at.parse()) {
                    cp.tombstone_passes.push((end, at));
                }
            }
            _ => {}
        }
    }
    cp
}

fn write_checkpoint(
    dir: &Path,
    first_dirty: i64,
    passes: &[(i64, i64)],
) -> Result<(), StorageError> {
    let mut text = format!("first_dirty {first_dirty}\n");
    for (end, at) in passes {
        text.push_str(&format!("tombstones {end} {at}\n"));
    }
    write_file_atomically(dir, CHECKPOINT, &text)
}

/// A truncation cut the log back to end at `log_end`: records from there on are new, so
/// neither the first dirty offset nor a tombstone pass may claim to have cleaned them
/// (Kafka's `maybeTruncateCheckpoint`). `log_end` None: the log was emptied, and the
/// checkpoint goes. Durable before it returns.
pub(crate) fn truncate_checkpoint(dir: &Path, log_end: Option<i64>) -> Result<(), StorageError> {
    let Some(log_end) = log_end else {
        remove_if_exists(&dir.join(CHECKPOINT))?;
        return sync_dir(dir);
    };
    let cp = read_checkpoint(dir);
    let first_dirty = cp.first_dirty.map(|o| o.min(log_end));
    let passes: Vec<(i64, i64)> = cp
        .tombstone_passes
        .iter()
        .map(|&(end, at)| (end.min(log_end), at))
        .collect();
    if first_dirty == cp.first_dirty && passes == cp.tombstone_passes {
        return Ok(());
    }
    write_checkpoint(dir, first_dirty.unwrap_or(0), &passes)
}

/// `<base>.<kind>.<state>`, e.g. `00000000000000000000.log.swap`.
fn swap_path(dir: &Path, base: i64, kind: &str, state: &str) -> PathBuf {
    dir.join(format!("{}.{kind}.{state}", offset_file_stem(base)))
}

fn final_path(dir: &Path, base: i64, kind: &str) -> PathBuf {
    dir.join(format!("{}.{kind}", offset_file_stem(base)))
}

fn rename(from: &Path, to: &Path) -> Result<(), StorageError> {
    fs::rename(from, to).map_err(|e| StorageError::io(from, e))
}

/// Best effort: removes every file in `dir` whose name ends with `suffix`.
fn remove_with_suffix(dir: &Path, suffix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(suffix)
            && let Err(e) = fs::remove_file(entry.path())
        {
            warn!(file = %entry.path().display(), error = %e, "cannot remove cleaner leftover");
        }
    }
}

/// Commits cleaned groups: each `(old segment bases, end of the replaced range, new segment)`.
///
/// 1. `<base>.{index,timeindex,replaces}.cleaned` → `.swap`; fsync the directory.
/// 2. `<base>.log.cleaned` → `<base>.log.swap`; fsync the directory. **The commit point**: from
///    here on recovery completes the swap; before it, recovery deletes the output.
/// 3. [`complete_swap`] for each group; fsync the directory.
fn commit(
    dir: &Path,
    log: &mut Log,
    outputs: Vec<(Vec<i64>, i64, LogSegment)>,
) -> Result<(), StorageError> {
    for (_, _, seg) in &outputs {
        let base = seg.base_offset();
        for kind in ["index", "timeindex", "replaces"] {
            rename(
                &swap_path(dir, base, kind, "cleaned"),
                &swap_path(dir, base, kind, "swap"),
            )?;
        }
    }
    sync_dir(dir)?;
    crash_point(1)?;
    for (_, _, seg) in &outputs {
        let base = seg.base_offset();
        rename(
            &swap_path(dir, base, "log", "cleaned"),
            &swap_path(dir, base, "log", "swap"),
        )?;
    }
    sync_dir(dir)?;
    crash_point(2)?;
    for (i, (old, end, mut seg)) in outputs.into_iter().enumerate() {
        if i > 0 {
            crash_point(3)?;
        }
        let base = seg.base_offset();
        complete_swap(dir, base, end)?;
        for b in old {
            log.segments.remove(&b);
        }
        seg.set_log_path(final_path(dir, base, "log"));
        log.segments.insert(base, seg);
    }
    sync_dir(dir)
}

#[cfg(test)]
thread_local! {
    /// Tests stop a commit at a numbered step, as a crash would.
    static CRASH_AT: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
fn crash_point(step: u8) -> Result<(), StorageError> {
    if CRASH_AT.with(|c| c.get()) == step {
        return Err(StorageError::Offline(PathBuf::from("simulated crash")));
    }
    Ok(())
}

#[cfg(not(test))]
fn crash_point(_step: u8) -> Result<(), StorageError> {
    Ok(())
}

/// Puts a committed swap in place: deletes the old segments with base offsets in
/// (base, end), then the old indexes of `base` (so a crash never pairs new data with old
/// indexes), renames `<base>.log.swap` over `<base>.log`, then the index swaps. Each step is
/// idempotent, so recovery can repeat it after a crash at any point.
fn complete_swap(dir: &Path, base: i64, end: i64) -> Result<(), StorageError> {
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some((stem, kind)) = name.split_once('.') else {
            continue;
        };
        if !["log", "index", "timeindex"].contains(&kind) {
            continue;
        }
        if let Ok(b) = stem.parse::<i64>()
            && b > base
            && b < end
        {
            remove_if_exists(&entry.path())?;
        }
    }
    remove_if_exists(&final_path(dir, base, "index"))?;
    remove_if_exists(&final_path(dir, base, "timeindex"))?;
    rename(
        &swap_path(dir, base, "log", "swap"),
        &final_path(dir, base, "log"),
    )?;
    for kind in ["index", "timeindex"] {
        let swap = swap_path(dir, base, kind, "swap");
        if swap.exists() {
            rename(&swap, &final_path(dir, base, kind))?;
        }
    }
    remove_if_exists(&swap_path(dir, base, "replaces", "swap"))
}

/// Called by `Log::open` before segments are loaded: finishes what a crash interrupted.
/// `.cleaned` files are uncommitted output and are deleted. A `<base>.log.swap` was committed:
/// the old segments of its range (read from `<base>.replaces.swap`) are deleted and it takes
/// their place. Any other `.swap` file (indexes of a swap that never committed, or already
/// completed) is deleted; a segment left without indexes has them rebuilt from its data.
pub(crate) fn recover_interrupted_cleaning(dir: &Path) -> Result<(), StorageError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut swaps = Vec::new();
    let mut any = false;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cleaned") {
            remove_if_exists(&entry.path())?;
            any = true;
        } else if name.ends_with(".swap") {
            any = true;
        }
        if let Some(stem) = name.strip_suffix(".log.swap")
            && let Ok(base) = stem.parse::<i64>()
        {
            swaps.push(base);
        }
    }
    swaps.sort_unstable();
    for base in swaps {
        any = true;
        let range = swap_path(dir, base, "replaces", "swap");
        let end = fs::read_to_string(&range)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok());
        match end {
            Some(end) => {
                info!(log = %dir.display(), segment = base, replaces_up_to = end, "completing an interrupted cleaner swap");
                complete_swap(dir, base, end)?;
            }
            None => {
                // The range is written and synced before the commit, so this is damage from
                // outside; keeping the old segments loses nothing.
                warn!(log = %dir.display(), segment = base, "cleaner swap without its range; discarding it");
                remove_if_exists(&swap_path(dir, base, "log", "swap"))?;
            }
        }
    }
    if any {
        remove_with_suffix(dir, ".swap");
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogConfig;
    use bytes::BytesMut;
    use odradek_protocol::batch::{Compression, KeyValue};

    fn compact_config() -> LogConfig {
        LogConfig {
            segment_bytes: 700,
            index_interval_bytes: 100,
            compact: true,
            delete_retention_enabled: false,
            delete_retention_ms: 1000,
            min_cleanable_dirty_ratio: 0.0,
            ..LogConfig::default()
        }
    }

    /// Appends one batch of `(key, value)` records, lz4-compressed when `compress`.
    fn append(log: &mut Log, records: &[(&str, Option<&str>)], compress: bool) {
        let kv: Vec<KeyValue<'_>> = records
            .iter()
            .map(|(k, v)| (Some(k.as_bytes()), v.map(str::as_bytes)))
            .collect();
        let plain = batch::encode_batch(&kv, 1000);
        let bytes = if compress {
            let max = BatchHeader::parse(&plain).unwrap().max_timestamp();
            batch::build_batch(
                &plain,
                &plain[batch::HEADER_LEN..],
                kv.len() as i32,
                max,
                Compression::Lz4,
            )
            .unwrap()
        } else {
            plain
        };
        log.append(BytesMut::from(&bytes[..]), 0).unwrap();
    }

    /// Every batch in the log from its start, checking each one's CRC.
    fn read_batches(log: &Log) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut next = log.log_start_offset();
        while next < log.log_end_offset() {
            let got = log
                .prepare_read(next, 1 << 20, true)
                .unwrap()
                .read()
                .unwrap()
                .records;
            if got.is_empty() {
                break;
            }
            let mut pos = 0;
            for (h, size) in batch::complete_batches(&got) {
                let bytes = &got[pos..pos + size];
                batch::verify_crc(bytes).unwrap();
                next = h.last_offset() + 1;
                out.push(bytes.to_vec());
                pos += size;
            }
        }
        out
    }

    /// Every data record in the log: (offset, key, value).
    fn read_all(log: &Log) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        for bytes in read_batches(log) {
            let h = BatchHeader::parse(&bytes).unwrap();
            if h.is_control() {
                continue;
            }
            let section = batch::decompressed_records(&bytes).unwrap();
            for r in batch::raw_records(&section) {
                let r = r.unwrap();
                let (offset, _) = batch::record_offset_and_timestamp(&h, &r);
                if offset >= log.log_start_offset() {
                    out.push((
                        offset,
                        String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                        r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                    ));
                }
            }
        }
        out
    }

    /// 10 keys × 6 versions, alternately compressed, then tombstones for k0 and k1 and one
    /// more version of k2, then filler so everything above is in closed segments.
    fn fill(log: &mut Log) {
        for version in 0..6 {
            for pair in 0..5 {
                let (a, b) = (format!("k{}", 2 * pair), format!("k{}", 2 * pair + 1));
                let (va, vb) = (format!("v{version}-{a}"), format!("v{version}-{b}"));
                append(log, &[(&a, Some(&va)), (&b, Some(&vb))], pair % 2 == 0);
            }
        }
        append(
            log,
            &[("k0", None), ("k1", None), ("k2", Some("last"))],
            true,
        );
        for i in 0..12 {
            append(log, &[(&format!("filler{i}"), Some("x"))], false);
        }
    }

    fn latest(
        records: &[(i64, String, Option<String>)],
    ) -> std::collections::BTreeMap<String, (i64, Option<String>)> {
        records
            .iter()
            .map(|(o, k, v)| (k.clone(), (*o, v.clone())))
            .collect()
    }

    #[test]
    fn cleaning_keeps_the_latest_record_per_key_and_expires_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), compact_config(), true).unwrap();
        fill(&mut log);
        let before = read_all(&log);
        let expected = latest(&before);
        let log = Mutex::new(log);
        let stop = AtomicBool::new(false);
        let mut cleaner = Cleaner::new(1 << 20);
        let stats = cleaner
            .clean(&log, 10_000, &stop)
            .unwrap()
            .expect("a pass ran");
        assert!(stats.records_removed >= 50, "{stats:?}");
        let guard = log.lock().unwrap();
        let after = read_all(&guard);
        assert_eq!(
            latest(&after),
            expected,
            "every key keeps its latest record and offset"
        );
        let active = *guard.segments.keys().next_back().unwrap();
        let closed: Vec<_> = after.iter().filter(|r| r.0 < active).collect();
        let mut keys: Vec<_> = closed.iter().map(|r| &r.1).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            closed.len(),
            "one record per key below the active segment"
        );
        assert_eq!(
            expected["k0"].1, None,
            "tombstone kept right after its first cleaning"
        );
        drop(guard);

        // Nothing dirty and tombstones not yet due: no pass.
        assert_eq!(cleaner.clean(&log, 10_500, &stop).unwrap(), None);
        // delete.retention.ms after the pass that first cleaned them, tombstones go.
        cleaner
            .clean(&log, 11_000, &stop)
            .unwrap()
            .expect("a purge pass ran");
        let guard = log.lock().unwrap();
        let purged = latest(&read_all(&guard));
        assert!(!purged.contains_key("k0") && !purged.contains_key("k1"));
        assert_eq!(purged["k2"], expected["k2"]);
        assert_eq!(purged.len(), expected.len() - 2);
        drop(guard);

        // Reopening (after a crash) reads the cleaned segments back.
        drop(log);
        let log = Log::open(dir.path(), compact_config(), false).unwrap();
        assert_eq!(latest(&read_all(&log)), purged);
    }

    #[test]
    fn a_full_offset_map_cleans_up_to_what_it_covered() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), compact_config(), true).unwrap();
        fill(&mut log);
        let expected = latest(&read_all(&log));
        let log = Mutex::new(log);
        let stop = AtomicBool::new(false);
        // Room for three keys: each pass covers a little and moves the checkpoint.
        let mut cleaner = Cleaner::new(3 * SLOT_BYTES + 8);
        let mut last = -1;
        for _ in 0..100 {
            match cleaner.clean(&log, 10_000, &stop).unwrap() {
                Some(stats) => {
                    assert!(stats.cleaned_up_to > last, "progress");
                    last = stats.cleaned_up_to;
                }
                None => break,
            }
            assert_eq!(latest(&read_all(&log.lock().unwrap())), expected);
        }
        assert_eq!(read_checkpoint(dir.path()).first_dirty, Some(last));
        let guard = log.lock().unwrap();
        assert_eq!(last, *guard.segments.keys().next_back().unwrap());
    }

    #[test]
    fn min_ratio_and_compaction_lag_hold_cleaning_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            min_cleanable_dirty_ratio: 0.5,
            ..compact_config()
        };
        let mut log = Log::open(dir.path(), config.clone(), true).unwrap();
        fill(&mut log);
        let log = Mutex::new(log);
        let stop = AtomicBool::new(false);
        let mut cleaner = Cleaner::new(1 << 20);
        // Records are stamped 1000: with a lag of 10 s they are too new at 5000.
        log.lock().unwrap().set_config(LogConfig {
            min_compaction_lag_ms: 10_000,
            ..config.clone()
        });
        assert_eq!(cleaner.clean(&log, 5000, &stop).unwrap(), None);
        log.lock().unwrap().set_config(config.clone());
        cleaner
            .clean(&log, 20_000, &stop)
            .unwrap()
            .expect("all dirty");
        // A little new dirty data is below the ratio ...
        {
            let mut guard = log.lock().unwrap();
            for i in 0..12 {
                append(
                    &mut guard,
                    &[(&format!("k{}", i % 10), Some("again"))],
                    false,
                );
            }
        }
        assert_eq!(cleaner.clean(&log, 20_000, &stop).unwrap(), None);
        // ... unless it is older than max.compaction.lag.ms.
        log.lock().unwrap().set_config(LogConfig {
            max_compaction_lag_ms: 5000,
            ..config
        });
        assert!(cleaner.clean(&log, 20_000, &stop).unwrap().is_some());
    }

    /// Appends one transactional batch of `producer_id` (without sequence numbers, as the
    /// broker's own transactional writes) and returns its base offset.
    fn append_txn(log: &mut Log, producer_id: i64, records: &[(&str, Option<&str>)]) -> i64 {
        let kv: Vec<KeyValue<'_>> = records
            .iter()
            .map(|(k, v)| (Some(k.as_bytes()), v.map(str::as_bytes)))
            .collect();
        let owner = batch::BatchOwner {
            producer_id,
            producer_epoch: 0,
            transactional: true,
            control: false,
        };
        let bytes = batch::encode_owned_batch(&kv, 1000, owner);
        log.append(bytes, 0).unwrap().base_offset
    }

    fn end_txn(log: &mut Log, producer_id: i64, commit: bool) -> i64 {
        let marker = TxnMarker {
            producer_id,
            producer_epoch: 0,
            coordinator_epoch: 0,
            commit,
        };
        log.append_marker(&marker, 0).unwrap().base_offset
    }

    /// The base offsets of the log's control batches.
    fn markers(log: &Log) -> Vec<i64> {
        read_batches(log)
            .iter()
            .map(|b| BatchHeader::parse(b).unwrap())
            .filter(|h| h.is_control())
            .map(|h| h.base_offset())
            .collect()
    }

    fn values_of<'a>(records: &'a [(i64, String, Option<String>)], key: &str) -> Vec<&'a str> {
        records
            .iter()
            .filter(|r| r.1 == key)
            .map(|r| r.2.as_deref().unwrap_or("<null>"))
            .collect()
    }

    #[test]
    fn transactions_are_compacted_aborted_records_dropped_and_markers_expire_after_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), compact_config(), true).unwrap();
        let (committer, aborter, open) = (7, 8, 9);
        let committed_batch = append_txn(
            &mut log,
            committer,
            &[("k0", Some("c0")), ("k1", Some("c1"))],
        );
        let commit_marker = end_txn(&mut log, committer, true);
        // Later than the committed values, but aborted: they must neither survive nor shadow.
        append_txn(&mut log, aborter, &[("k0", Some("a0")), ("k2", Some("a2"))]);
        let abort_marker = end_txn(&mut log, aborter, false);
        append(&mut log, &[("k1", Some("v1"))], false);
        for i in 0..12 {
            append(&mut log, &[(&format!("filler{i}"), Some("x"))], false);
        }
        // An open transaction holds the last stable offset: nothing from its segment on is
        // cleaned, not even a superseded value.
        let open_batch = append_txn(&mut log, open, &[("k0", Some("o0"))]);
        append(&mut log, &[("k1", Some("after-lso"))], false);
        append(&mut log, &[("k1", Some("after-lso-2"))], false);
        for i in 12..24 {
            append(&mut log, &[(&format!("filler{i}"), Some("x"))], false);
        }
        assert_eq!(log.last_stable_offset(), open_batch);
        assert_eq!(
            log.aborted_transactions(0, i64::MAX),
            vec![AbortedTxn {
                producer_id: aborter,
                first_offset: abort_marker - 2,
                last_offset: abort_marker,
            }]
        );
        let stable_segment = *log.segments.range(..=open_batch).next_back().unwrap().0;
        assert!(
            stable_segment > abort_marker,
            "the test needs closed segments to clean"
        );
        let untouched: Vec<Vec<u8>> = read_batches(&log)
            .into_iter()
            .filter(|b| BatchHeader::parse(b).unwrap().base_offset() >= stable_segment)
            .collect();

        let log = Mutex::new(log);
        let stop = AtomicBool::new(false);
        let mut cleaner = Cleaner::new(1 << 20);
        let stats = cleaner
            .clean(&log, 10_000, &stop)
            .unwrap()
            .expect("a pass ran");
        assert_eq!(stats.cleaned_up_to, stable_segment);
        {
            let guard = log.lock().unwrap();
            let records = read_all(&guard);
            assert_eq!(values_of(&records, "k0"), ["c0", "o0"]);
            assert_eq!(
                values_of(&records, "k1"),
                ["v1", "after-lso", "after-lso-2"]
            );
            assert!(
                values_of(&records, "k2").is_empty(),
                "aborted records are dropped"
            );
            // The committed batch was rebuilt around its survivor and is still transactional.
            let rebuilt = read_batches(&guard)
                .into_iter()
                .find(|b| BatchHeader::parse(b).unwrap().base_offset() == committed_batch)
                .unwrap();
            let h = BatchHeader::parse(&rebuilt).unwrap();
            assert!(h.is_transactional() && h.producer_id() == committer);
            assert_eq!(
                (h.record_count(), h.last_offset()),
                (1, committed_batch + 1)
            );
            let after: Vec<Vec<u8>> = read_batches(&guard)
                .into_iter()
                .filter(|b| BatchHeader::parse(b).unwrap().base_offset() >= stable_segment)
                .collect();
            assert_eq!(
                after, untouched,
                "nothing from the last stable segment on changes"
            );
            // The abort marker outlives its records' pass, and so does its list entry.
            assert_eq!(markers(&guard), [commit_marker, abort_marker]);
            assert_eq!(guard.aborted_transactions(0, i64::MAX).len(), 1);
        }

        // Before delete.retention.ms: the marker stays.
        assert_eq!(cleaner.clean(&log, 10_500, &stop).unwrap(), None);
        cleaner
            .clean(&log, 11_000, &stop)
            .unwrap()
            .expect("a purge pass");
        {
            let guard = log.lock().unwrap();
            assert_eq!(
                markers(&guard),
                [commit_marker],
                "the abort marker goes; the commit marker's transaction still has c0"
            );
            assert_eq!(guard.aborted_transactions(0, i64::MAX), vec![]);
            assert_eq!(values_of(&read_all(&guard), "k0"), ["c0", "o0"]);
        }

        // The open transaction commits and k0 moves on: c0 and o0 go, their markers later.
        let open_marker = {
            let mut guard = log.lock().unwrap();
            let marker = end_txn(&mut guard, open, true);
            append(&mut guard, &[("k0", Some("v0"))], false);
            for i in 24..36 {
                append(&mut guard, &[(&format!("filler{i}"), Some("x"))], false);
            }
            marker
        };
        cleaner
            .clean(&log, 20_000, &stop)
            .unwrap()
            .expect("a pass ran");
        {
            let guard = log.lock().unwrap();
            assert_eq!(values_of(&read_all(&guard), "k0"), ["v0"]);
            assert_eq!(markers(&guard), [commit_marker, open_marker]);
        }
        cleaner.clean(&log, 20_999, &stop).unwrap();
        assert_eq!(markers(&log.lock().unwrap()), [commit_marker, open_marker]);
        cleaner
            .clean(&log, 21_000, &stop)
            .unwrap()
            .expect("a purge pass");
        let guard = log.lock().unwrap();
        assert_eq!(markers(&guard), Vec::<i64>::new());
        let records = read_all(&guard);
        assert_eq!(values_of(&records, "k0"), ["v0"]);
        assert_eq!(values_of(&records, "k1"), ["after-lso-2"]);
        drop(guard);

        // A restart rebuilds the same state: no transaction is left open.
        drop(log);
        let log = Log::open(dir.path(), compact_config(), false).unwrap();
        assert_eq!(log.last_stable_offset(), log.log_end_offset());
        assert_eq!(log.aborted_transactions(0, i64::MAX), vec![]);
        assert_eq!(read_all(&log), records);
    }

    #[test]
    fn an_abort_entry_left_by_a_crash_after_the_swap_goes_at_the_next_pass() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), compact_config(), true).unwrap();
        let first = append_txn(&mut log, 8, &[("k0", Some("a0"))]);
        let marker = end_txn(&mut log, 8, false);
        for i in 0..12 {
            append(&mut log, &[(&format!("filler{i}"), Some("x"))], false);
        }
        let log = Mutex::new(log);
        let stop = AtomicBool::new(false);
        let mut cleaner = Cleaner::new(1 << 20);
        cleaner
            .clean(&log, 10_000, &stop)
            .unwrap()
            .expect("a pass ran");
        assert_eq!(markers(&log.lock().unwrap()), [marker]);
        // The pass that removes the marker dies after its swap, before the list is written.
        CRASH_AT.with(|c| c.set(4));
        let outcome = cleaner.clean(&log, 11_000, &stop);
        CRASH_AT.with(|c| c.set(0));
        assert!(outcome.is_err());
        drop(log);
        let log = Log::open(dir.path(), compact_config(), false).unwrap();
        assert_eq!(markers(&log), Vec::<i64>::new());
        let stale = AbortedTxn {
            producer_id: 8,
            first_offset: first,
            last_offset: marker,
        };
        assert_eq!(log.aborted_transactions(0, i64::MAX), vec![stale]);
        // The checkpoint was not written either: the purge pass runs again and finds the
        // entry without its marker.
        let log = Mutex::new(log);
        cleaner
            .clean(&log, 11_000, &stop)
            .unwrap()
            .expect("a pass ran");
        assert_eq!(
            log.lock().unwrap().aborted_transactions(0, i64::MAX),
            vec![]
        );
        drop(log);
        let log = Log::open(dir.path(), compact_config(), false).unwrap();
        assert_eq!(log.aborted_transactions(0, i64::MAX), vec![], "durably");
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
            .collect()
    }

    #[test]
    fn a_crash_at_any_step_of_the_swap_leaves_the_old_or_the_new_segments() {
        for step in 1..=3u8 {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), compact_config(), true).unwrap();
            fill(&mut log);
            let before = read_all(&log);
            let expected = latest(&before);
            let log = Mutex::new(log);
            CRASH_AT.with(|c| c.set(step));
            let outcome = Cleaner::new(1 << 20).clean(&log, 10_000, &AtomicBool::new(false));
            CRASH_AT.with(|c| c.set(0));
            assert!(outcome.is_err(), "step {step}");
            assert!(
                log.lock().unwrap().is_offline(),
                "memory no longer matches the disk"
            );
            drop(log);
            if step >= 2 {
                assert!(!leftovers(dir.path()).is_empty());
            }
            let log = Log::open(dir.path(), compact_config(), false).unwrap();
            assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "step {step}");
            let after = read_all(&log);
            assert_eq!(latest(&after), expected, "step {step}");
            if step == 1 {
                assert_eq!(after, before, "not committed: the old segments");
            } else {
                assert!(after.len() < before.len(), "committed: the new segments");
            }
            // The offsets of the remaining segments do not overlap.
            let mut last = -1;
            for seg in log.segments.values() {
                assert!(seg.base_offset() >= last, "step {step}");
                last = seg.next_offset().max(seg.base_offset());
            }
        }
    }

    #[test]
    fn uncommitted_output_is_deleted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), compact_config(), true).unwrap();
        fill(&mut log);
        let before = read_all(&log);
        drop(log);
        for kind in ["log", "index", "timeindex", "replaces"] {
            fs::write(swap_path(dir.path(), 0, kind, "cleaned"), b"partial").unwrap();
        }
        fs::write(swap_path(dir.path(), 0, "index", "swap"), b"12345678").unwrap();
        let log = Log::open(dir.path(), compact_config(), false).unwrap();
        assert!(leftovers(dir.path()).is_empty());
        assert_eq!(read_all(&log), before);
    }

    #[test]
    fn the_offset_map_is_bounded_and_grows_to_its_budget() {
        let mut map = OffsetMap::new(100 * SLOT_BYTES);
        let mut inserted = 0;
        for i in 0..1000 {
            if !map.put(format!("key{i}").as_bytes(), i) {
                break;
            }
            inserted += 1;
        }
        assert_eq!(inserted, 90);
        assert!(map.put(b"key5", 500), "an existing key always fits");
        assert_eq!(map.get(b"key5"), Some(500));
        assert_eq!(map.get(b"key89"), Some(89));
        assert_eq!(map.get(b"nope"), None);
        assert!(map.slots.len() <= 100);
    }
}
