//! The raft log and the vote on disk: openraft's [`RaftLogStorage`].
//!
//! Layout under the quorum's directory:
//! - `vote`: the last vote, JSON, replaced atomically (tmp, fsync, rename, dir fsync).
//! - `raft-log/<first index, 20 digits>.log`: log segments. Each entry is one frame:
//!   `u32 length (BE) | u32 CRC-32C of the body (BE) | body`, the body being the entry's
//!   JSON. A segment is rolled once it passes `segment_bytes`.
//! - `raft-log/purged`: the last purged log id, JSON, replaced atomically. Entries at or
//!   below it are ignored on open even if their segment was not removed yet.
//! - `raft-log/committed`: the last committed log id known here, a hint without fsync (see
//!   `save_committed`).
//!
//! Every entry not yet purged is also held in memory: the metadata log is small and
//! bounded by snapshots, and it spares the readers a file read per replication batch.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};

use crate::fsutil::{create_dir_durable, sync_dir, write_atomic};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Frame header: length and CRC-32C.
const HEADER: usize = 8;
/// The largest entry frame accepted on open. A larger length is damage, not an entry:
/// proposals are far smaller (see `MAX_PROPOSAL_BYTES`).
pub(crate) const MAX_ENTRY_FRAME: usize = 64 << 20;
/// Default segment size before a roll.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;

pub(crate) const LOG_DIR: &str = "raft-log";
const VOTE_FILE: &str = "vote";
const PURGED_FILE: &str = "purged";
const COMMITTED_FILE: &str = "committed";

/// An error of the on-disk log, snapshot or vote.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// Damage that cannot be a torn write: refusing to start beats forgetting
    /// acknowledged entries.
    #[error("{} is corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the storage lock was poisoned by a panic")]
    Poisoned,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
struct Stored {
    entry: Entry,
    /// First index of the segment holding the entry.
    segment: u64,
    /// Byte offset of the entry's frame in that segment.
    offset: u64,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Bytes in the file.
    len: u64,
    /// Index the next entry in this segment would have.
    next: u64,
}

#[derive(Debug)]
pub(crate) struct LogInner {
    dir: PathBuf,
    log_dir: PathBuf,
    segment_bytes: u64,
    vote: Option<Vote>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Stored>,
    /// Segment files by first index.
    segments: BTreeMap<u64, Segment>,
    /// The open last segment, where appends go.
    active: Option<(u64, File)>,
}

/// openraft's log storage (and log reader: a clone shares the same state).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

pub(crate) fn segment_path(log_dir: &Path, base: u64) -> PathBuf {
    log_dir.join(format!("{base:020}.log"))
}

fn to_storage(e: StoreError) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

/// Encodes one entry as a frame.
pub(crate) fn encode(entry: &Entry, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    serde_json::to_writer(&mut *out, entry)?;
    let body = &out[start + HEADER..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Parses the frame at `pos`, or says why it is not one.
pub(crate) fn parse_frame(data: &[u8], pos: usize) -> Result<(Entry, usize), String> {
    let rest = &data[pos..];
    if rest.len() < HEADER {
        return Err(format!(
            "{} bytes left, less than a frame header",
            rest.len()
        ));
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len == 0 || len > MAX_ENTRY_FRAME {
        return Err(format!("frame length {len} out of range"));
    }
    if rest.len() - HEADER < len {
        return Err(format!(
            "frame of {len} bytes runs past the end of the file"
        ));
    }
    let body = &rest[HEADER..HEADER + len];
    if crc32c::crc32c(body) != crc {
        return Err("CRC mismatch".to_string());
    }
    let entry: Entry =
        serde_json::from_slice(body).map_err(|e| format!("undecodable entry: {e}"))?;
    Ok((entry, HEADER + len))
}

/// Whether any valid frame starts after `pos`: if one does, the bad bytes at `pos` are
/// damage in the middle of the log, not a torn tail.
pub(crate) fn valid_frame_after(data: &[u8], pos: usize) -> Option<usize> {
    (pos + 1..data.len().saturating_sub(HEADER - 1)).find(|&p| parse_frame(data, p).is_ok())
}

impl LogStore {
    /// Opens (or creates) the log under `dir`, cutting a torn tail and refusing damage.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<LogStore, StoreError> {
        let log_dir = dir.join(LOG_DIR);
        create_dir_durable(dir).map_err(io_at(dir))?;
        create_dir_durable(&log_dir).map_err(io_at(&log_dir))?;

        let vote_path = dir.join(VOTE_FILE);
        let vote = read_json::<Vote>(&vote_path)?;
        let purged = read_json::<LogId>(&log_dir.join(PURGED_FILE))?;

        let mut bases = Vec::new();
        for dirent in fs::read_dir(&log_dir).map_err(io_at(&log_dir))? {
            let dirent = dirent.map_err(io_at(&log_dir))?;
            let name = dirent.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name
                .strip_suffix(".log")
                .and_then(|s| s.parse::<u64>().ok())
            {
                bases.push(base);
            } else if name.ends_with(".tmp") {
                // A replacement that crashed before its rename: the old file is intact.
                let _ = fs::remove_file(dirent.path());
            }
        }
        bases.sort_unstable();

        let mut inner = LogInner {
            dir: dir.to_path_buf(),
            log_dir: log_dir.clone(),
            segment_bytes: segment_bytes.max(1),
            vote,
            purged,
            entries: BTreeMap::new(),
            segments: BTreeMap::new(),
            active: None,
        };
        let first_kept = purged.map_or(0, |p| p.index + 1);
        let mut expected: Option<u64> = None;
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let path = segment_path(&log_dir, base);
            let data = fs::read(&path).map_err(io_at(&path))?;
            let mut pos = 0usize;
            let mut next = base;
            while pos < data.len() {
                match parse_frame(&data, pos) {
                    Ok((entry, size)) => {
                        if entry.log_id.index != next {
                            return Err(StoreError::Corrupt {
                                path,
                                offset: pos as u64,
                                reason: format!(
                                    "entry index {} where {next} was expected",
                                    entry.log_id.index
                                ),
                            });
                        }
                        if entry.log_id.index >= first_kept {
                            if let Some(exp) = expected
                                && exp != entry.log_id.index
                            {
                                return Err(StoreError::Corrupt {
                                    path,
                                    offset: pos as u64,
                                    reason: format!(
                                        "entry index {} where {exp} was expected (gap between segments)",
                                        entry.log_id.index
                                    ),
                                });
                            }
                            if expected.is_none() && entry.log_id.index != first_kept {
                                return Err(StoreError::Corrupt {
                                    path,
                                    offset: pos as u64,
                                    reason: format!(
                                        "first entry {} after purged index {:?}: entries are missing",
                                        entry.log_id.index,
                                        purged.map(|p| p.index)
                                    ),
                                });
                            }
                            expected = Some(entry.log_id.index + 1);
                            inner.entries.insert(
                                entry.log_id.index,
                                Stored {
                                    entry,
                                    segment: base,
                                    offset: pos as u64,
                                },
                            );
                        }
                        next += 1;
                        pos += size;
                    }
                    Err(reason) => {
                        if !last {
                            return Err(StoreError::Corrupt {
                                path,
                                offset: pos as u64,
                                reason: format!("{reason}, and later segments follow"),
                            });
                        }
                        if let Some(valid) = valid_frame_after(&data, pos) {
                            return Err(StoreError::Corrupt {
                                path,
                                offset: pos as u64,
                                reason: format!(
                                    "{reason}, and a valid frame follows at byte {valid}"
                                ),
                            });
                        }
                        // A write that never completed: it was never acknowledged, since
                        // an append counts only after its fsync.
                        tracing::warn!(
                            path = %path.display(),
                            offset = pos,
                            cut = data.len() - pos,
                            %reason,
                            "cutting the torn tail of the raft log"
                        );
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_at(&path))?;
                        f.set_len(pos as u64).map_err(io_at(&path))?;
                        f.sync_all().map_err(io_at(&path))?;
                        break;
                    }
                }
            }
            inner.segments.insert(
                base,
                Segment {
                    len: pos as u64,
                    next,
                },
            );
        }
        // Finish a purge that crashed before it removed its segments.
        inner.remove_purged_segments().map_err(io_at(&log_dir))?;
        inner.open_active()?;
        tracing::info!(
            dir = %dir.display(),
            entries = inner.entries.len(),
            segments = inner.segments.len(),
            purged = ?inner.purged,
            vote = ?inner.vote,
            "opened the raft log"
        );
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, LogInner>, StorageError> {
        self.inner
            .lock()
            .map_err(|_| to_storage(StoreError::Poisoned))
    }

    /// Runs blocking file work off the async threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut LogInner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().map_err(|_| StoreError::Poisoned)?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StorageError::from(StorageIOError::write_logs(AnyError::new(&e))))?
        .map_err(to_storage)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                offset: e.column() as u64,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

impl LogInner {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .last_key_value()
            .map(|(_, s)| s.entry.log_id)
            .or(self.purged)
    }

    fn next_index(&self) -> u64 {
        self.last_log_id().map_or(0, |l| l.index + 1)
    }

    /// Opens the last segment for appends.
    fn open_active(&mut self) -> Result<(), StoreError> {
        self.active = None;
        if let Some((&base, _)) = self.segments.last_key_value() {
            let path = segment_path(&self.log_dir, base);
            let f = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_at(&path))?;
            self.active = Some((base, f));
        }
        Ok(())
    }

    /// Removes segments whose entries are all purged.
    fn remove_purged_segments(&mut self) -> io::Result<()> {
        let Some(purged) = self.purged else {
            return Ok(());
        };
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, s)| s.next <= purged.index + 1)
            .map(|(&b, _)| b)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        for base in doomed {
            if self.active.as_ref().is_some_and(|(b, _)| *b == base) {
                self.active = None;
            }
            fs::remove_file(segment_path(&self.log_dir, base))?;
            self.segments.remove(&base);
        }
        sync_dir(&self.log_dir)
    }

    fn append(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        let mut i = 0;
        while i < entries.len() {
            let index = entries[i].log_id.index;
            if index != self.next_index() {
                return Err(StoreError::Corrupt {
                    path: self.log_dir.clone(),
                    offset: 0,
                    reason: format!(
                        "append of entry {index} where {} was expected",
                        self.next_index()
                    ),
                });
            }
            // Roll when there is no segment, it is full, or it does not end right before
            // this entry (after a purge past the end of the log).
            let roll = match &self.active {
                None => true,
                Some((base, _)) => self
                    .segments
                    .get(base)
                    .is_none_or(|seg| seg.len >= self.segment_bytes || seg.next != index),
            };
            if roll {
                let path = segment_path(&self.log_dir, index);
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_at(&path))?;
                // An untracked file of that name can only hold entries that were cut
                // from the log: start empty.
                f.set_len(0).map_err(io_at(&path))?;
                sync_dir(&self.log_dir).map_err(io_at(&self.log_dir))?;
                self.segments.insert(
                    index,
                    Segment {
                        len: 0,
                        next: index,
                    },
                );
                self.active = Some((index, f));
            }
            let (Some((base, file)), segments) = (self.active.as_mut(), &mut self.segments) else {
                return Err(StoreError::Corrupt {
                    path: self.log_dir.clone(),
                    offset: 0,
                    reason: "no active segment after a roll".to_string(),
                });
            };
            let base = *base;
            let seg = segments.get_mut(&base).ok_or_else(|| StoreError::Corrupt {
                path: self.log_dir.clone(),
                offset: 0,
                reason: format!("active segment {base} is not tracked"),
            })?;
            // Fill this segment up to its size, then write and sync it in one go.
            buf.clear();
            let start_len = seg.len;
            let mut batch = Vec::new();
            while i < entries.len()
                && (buf.is_empty() || seg.len + (buf.len() as u64) < self.segment_bytes)
            {
                let entry = &entries[i];
                if entry.log_id.index != seg.next + batch.len() as u64 {
                    break;
                }
                let offset = start_len + buf.len() as u64;
                encode(entry, &mut buf).map_err(|e| StoreError::Corrupt {
                    path: self.log_dir.clone(),
                    offset: 0,
                    reason: format!("cannot encode entry: {e}"),
                })?;
                batch.push((entry.clone(), offset));
                i += 1;
            }
            let path = segment_path(&self.log_dir, base);
            // An append counts only once it is on disk: fdatasync covers the new length.
            if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
                // openraft stops on a storage error. Best effort: do not leave half a
                // frame for the next start to judge (it would be a torn tail anyway).
                let _ = file.set_len(start_len);
                return Err(StoreError::Io { path, source: e });
            }
            seg.len += buf.len() as u64;
            seg.next += batch.len() as u64;
            for (entry, offset) in batch {
                self.entries.insert(
                    entry.log_id.index,
                    Stored {
                        entry,
                        segment: base,
                        offset,
                    },
                );
            }
        }
        Ok(())
    }

    /// Removes every entry at or after `index`.
    fn truncate(&mut self, index: u64) -> Result<(), StoreError> {
        // Later segments first, so a crash part way leaves a contiguous prefix.
        let doomed: Vec<u64> = self
            .segments
            .range(index..)
            .map(|(&b, _)| b)
            .rev()
            .collect();
        for base in &doomed {
            if self.active.as_ref().is_some_and(|(b, _)| b == base) {
                self.active = None;
            }
            let path = segment_path(&self.log_dir, *base);
            fs::remove_file(&path).map_err(io_at(&path))?;
            self.segments.remove(base);
        }
        if let Some(stored) = self.entries.get(&index) {
            let (base, offset) = (stored.segment, stored.offset);
            let path = segment_path(&self.log_dir, base);
            if let Some(seg) = self.segments.get_mut(&base) {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_at(&path))?;
                f.set_len(offset).map_err(io_at(&path))?;
                f.sync_all().map_err(io_at(&path))?;
                seg.len = offset;
                seg.next = index;
            }
        }
        if !doomed.is_empty() {
            sync_dir(&self.log_dir).map_err(io_at(&self.log_dir))?;
        }
        self.entries.split_off(&index);
        self.open_active()
    }

    fn purge(&mut self, log_id: LogId) -> Result<(), StoreError> {
        let path = self.log_dir.join(PURGED_FILE);
        let json = serde_json::to_vec(&log_id).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: e.to_string(),
        })?;
        // Record the purge point first: segments removed after it are then never needed.
        write_atomic(&path, &json).map_err(io_at(&path))?;
        self.purged = Some(log_id);
        let kept = self.entries.split_off(&(log_id.index + 1));
        self.entries = kept;
        self.remove_purged_segments().map_err(io_at(&self.log_dir))
    }

    fn save_vote(&mut self, vote: &Vote) -> Result<(), StoreError> {
        let path = self.dir.join(VOTE_FILE);
        let json = serde_json::to_vec(vote).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: e.to_string(),
        })?;
        write_atomic(&path, &json).map_err(io_at(&path))?;
        self.vote = Some(*vote);
        Ok(())
    }

    /// Replaced by rename but not fsync'd: it is a hint. After a crash it may be older
    /// than the truth (entries up to an older commit are committed all the same) or
    /// unreadable (ignored); `read_committed` checks it against the log.
    fn save_committed(&mut self, committed: Option<LogId>) {
        let path = self.log_dir.join(COMMITTED_FILE);
        let tmp = self.log_dir.join("committed.tmp");
        let res = serde_json::to_vec(&committed)
            .map_err(io::Error::other)
            .and_then(|json| fs::write(&tmp, json))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = res {
            tracing::warn!(path = %path.display(), error = %e, "cannot note the committed index");
        }
    }

    /// The committed log id saved last, if the log holds exactly that entry (or purged
    /// past it): only then is everything up to it known committed, and openraft replays
    /// it into the state machine at startup without waiting for a leader.
    fn read_committed(&self) -> Option<LogId> {
        let path = self.log_dir.join(COMMITTED_FILE);
        let committed = match read_json::<Option<LogId>>(&path) {
            Ok(c) => c.flatten()?,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the committed index hint");
                return None;
            }
        };
        let known = self.purged.is_some_and(|p| p.index >= committed.index)
            || self
                .entries
                .get(&committed.index)
                .is_some_and(|s| s.entry.log_id == committed);
        known.then_some(committed)
    }

    fn read<RB: RangeBounds<u64>>(&self, range: RB) -> Vec<Entry> {
        self.entries
            .range(range)
            .map(|(_, s)| s.entry.clone())
            .collect()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.lock()?.read(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock()?;
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |inner| inner.save_vote(&vote))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock()?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A small write without fsync: cheap enough for the raft core's own task.
        self.lock()?.save_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock()?.read_committed())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let res = self.blocking(move |inner| inner.append(entries)).await;
        // openraft counts the entries as persisted only now, after the fsync above.
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the raft log");
        self.blocking(move |inner| inner.truncate(log_id.index))
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the raft log");
        self.blocking(move |inner| inner.purge(log_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Batch;
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64, data: &str) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Batch {
                records: vec![Bytes::copy_from_slice(data.as_bytes())],
            }),
        }
    }

    fn open(dir: &Path) -> LogStore {
        LogStore::open(dir, DEFAULT_SEGMENT_BYTES).unwrap()
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store
            .inner
            .lock()
            .unwrap()
            .entries
            .keys()
            .copied()
            .collect()
    }

    fn append(store: &LogStore, entries: Vec<Entry>) {
        store.inner.lock().unwrap().append(entries).unwrap();
    }

    fn only_segment(dir: &Path) -> PathBuf {
        segment_path(&dir.join(LOG_DIR), 0)
    }

    #[test]
    fn entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        append(&store, (0..5).map(|i| entry(1, i, "x")).collect());
        drop(store);
        let store = open(dir.path());
        assert_eq!(indexes(&store), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            store.inner.lock().unwrap().read(3..),
            vec![entry(1, 3, "x"), entry(1, 4, "x")]
        );
    }

    #[test]
    fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        append(&store, (0..3).map(|i| entry(1, i, "abc")).collect());
        drop(store);
        let path = only_segment(dir.path());
        let full = fs::read(&path).unwrap();

        // A frame running past the end of the file: the last write was cut short.
        fs::write(&path, &full[..full.len() - 5]).unwrap();
        let store = open(dir.path());
        assert_eq!(indexes(&store), vec![0, 1]);
        // The file was cut back to the last whole frame, and appends continue from there.
        append(&store, vec![entry(2, 2, "new")]);
        drop(store);
        let store = open(dir.path());
        assert_eq!(indexes(&store), vec![0, 1, 2]);
        assert_eq!(
            store.inner.lock().unwrap().read(2..),
            vec![entry(2, 2, "new")]
        );
        drop(store);

        // A last frame with a bad CRC and nothing valid after it: also a torn tail.
        let full = fs::read(&path).unwrap();
        let mut damaged = full.clone();
        let n = damaged.len();
        damaged[n - 2] ^= 0xff;
        fs::write(&path, &damaged).unwrap();
        let store = open(dir.path());
        assert_eq!(indexes(&store), vec![0, 1]);
        drop(store);

        // A few bytes of a header alone.
        let mut partial = fs::read(&path).unwrap();
        partial.extend_from_slice(&[0, 0, 1]);
        fs::write(&path, &partial).unwrap();
        assert_eq!(indexes(&open(dir.path())), vec![0, 1]);
    }

    #[test]
    fn corruption_in_the_middle_is_refused_with_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        append(&store, (0..3).map(|i| entry(1, i, "payload")).collect());
        let second = store.inner.lock().unwrap().entries[&1].offset;
        drop(store);
        let path = only_segment(dir.path());
        let mut data = fs::read(&path).unwrap();
        // Damage the body of entry 1; entry 2 stays valid after it.
        data[second as usize + HEADER + 3] ^= 0x55;
        fs::write(&path, &data).unwrap();
        let err = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, StoreError::Corrupt { path: p, offset, .. } if *p == path && *offset == second),
            "{msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("byte {second}")), "{msg}");

        // A damaged length field, which makes the frame look as if it ran past the end,
        // is refused too when a valid frame follows.
        let mut data = fs::read(&path).unwrap();
        data[second as usize + HEADER + 3] ^= 0x55; // undo
        data[second as usize] = 0x7f;
        fs::write(&path, &data).unwrap();
        let err = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { offset, .. } if *offset == second),
            "{err}"
        );
    }

    #[test]
    fn committed_hint_is_checked_against_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        append(&store, (0..3).map(|i| entry(2, i, "x")).collect());
        let at = |term, index| LogId::new(CommittedLeaderId::new(term, 1), index);
        store.inner.lock().unwrap().save_committed(Some(at(2, 1)));
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.inner.lock().unwrap().read_committed(), Some(at(2, 1)));
        // An entry of another term at that index: not the committed one, so no hint.
        store.inner.lock().unwrap().save_committed(Some(at(1, 1)));
        assert_eq!(store.inner.lock().unwrap().read_committed(), None);
        // Past the end of the log (cut as a torn tail, say): no hint either.
        store.inner.lock().unwrap().save_committed(Some(at(2, 9)));
        assert_eq!(store.inner.lock().unwrap().read_committed(), None);
        fs::write(dir.path().join(LOG_DIR).join(COMMITTED_FILE), b"{garb").unwrap();
        assert_eq!(store.inner.lock().unwrap().read_committed(), None);
    }

    #[test]
    fn vote_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(store.inner.lock().unwrap().vote, None);
        let vote = Vote::new(7, 3);
        store.inner.lock().unwrap().save_vote(&vote).unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.inner.lock().unwrap().vote, Some(vote));
        assert!(!dir.path().join("vote.tmp").exists());
    }

    #[test]
    fn truncate_and_purge_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        // Tiny segments: one or two entries each.
        let store = LogStore::open(dir.path(), 100).unwrap();
        for i in 0..10 {
            append(&store, vec![entry(1, i, "0123456789")]);
        }
        let segments = store.inner.lock().unwrap().segments.len();
        assert!(segments > 3, "{segments}");

        store.inner.lock().unwrap().truncate(6).unwrap();
        assert_eq!(indexes(&store), (0..6).collect::<Vec<_>>());
        append(&store, vec![entry(2, 6, "again")]);

        let purge_at = store.inner.lock().unwrap().entries[&3].entry.log_id;
        store.inner.lock().unwrap().purge(purge_at).unwrap();
        assert_eq!(indexes(&store), vec![4, 5, 6]);
        drop(store);

        let store = LogStore::open(dir.path(), 100).unwrap();
        assert_eq!(indexes(&store), vec![4, 5, 6]);
        let inner = store.inner.lock().unwrap();
        assert_eq!(inner.purged, Some(purge_at));
        assert_eq!(inner.read(6..), vec![entry(2, 6, "again")]);
        // Segments entirely below the purge point are gone from disk.
        assert!(inner.segments.values().all(|s| s.next > 4));
        drop(inner);

        // A purge past the end of the log (after installing a snapshot) restarts the log
        // at the next index.
        let far = LogId::new(CommittedLeaderId::new(3, 1), 20);
        store.inner.lock().unwrap().purge(far).unwrap();
        assert!(indexes(&store).is_empty());
        append(&store, vec![entry(3, 21, "after snapshot")]);
        drop(store);
        let store = LogStore::open(dir.path(), 100).unwrap();
        assert_eq!(indexes(&store), vec![21]);
    }
}
