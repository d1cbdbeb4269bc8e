//! The caller's state machine behind openraft's [`RaftStateMachine`], and snapshots.
//!
//! A snapshot file `snapshot-<last index, 20 digits>.snap` holds
//! `magic "ODRSNAP1" | u32 meta length (BE) | u32 CRC-32C of meta+data (BE) | meta JSON | data`,
//! where meta is openraft's `SnapshotMeta` (last log id, membership) and data is what
//! [`MetadataStateMachine::snapshot`] returned. It is written atomically; only the newest
//! is kept.

use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
    StoredMembership,
};

use crate::fsutil::{sync_dir, write_atomic};
use crate::log_store::StoreError;
use crate::types::{Entry, LogId, StorageError, TypeConfig};

const MAGIC: &[u8; 8] = b"ODRSNAP1";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";

/// The error a state machine returns when it cannot restore a snapshot.
pub type RestoreError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The caller's state, fed with committed records in log order.
///
/// `apply` cannot fail: a committed record is in the log for good, so a record the state
/// machine does not understand must be skipped (and logged) the same way on every node.
/// Calls come from openraft's state machine task with a lock held; keep them short.
pub trait MetadataStateMachine: Send + Sync + 'static {
    /// Applies the records of one committed entry, in order. `index` is the raft log
    /// index of the entry; all records of one `propose` share it.
    fn apply(&mut self, index: u64, records: &[Bytes]);
    /// Serializes the whole state (everything applied so far).
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot made by `snapshot` (here or on another
    /// node).
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;
}

pub(crate) struct SmState<S> {
    pub(crate) sm: S,
    pub(crate) last_applied: Option<LogId>,
    membership: StoredMembership<u64, BasicNode>,
}

/// openraft's state machine store (and snapshot builder: clones share the state).
pub(crate) struct SmStore<S> {
    pub(crate) state: Arc<Mutex<SmState<S>>>,
    dir: PathBuf,
    seq: Arc<AtomicU64>,
    /// One snapshot write at a time: openraft may build one while it installs another
    /// (for the same index even, hence the same file name).
    persist_lock: Arc<Mutex<()>>,
}

impl<S> Clone for SmStore<S> {
    fn clone(&self) -> Self {
        SmStore {
            state: self.state.clone(),
            dir: self.dir.clone(),
            seq: self.seq.clone(),
            persist_lock: self.persist_lock.clone(),
        }
    }
}

fn snapshot_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{SNAPSHOT_PREFIX}{index:020}{SNAPSHOT_SUFFIX}"))
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn encode_snapshot(
    meta: &SnapshotMeta<u64, BasicNode>,
    data: &[u8],
) -> Result<Vec<u8>, serde_json::Error> {
    let meta = serde_json::to_vec(meta)?;
    let mut out = Vec::with_capacity(16 + meta.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    let mut crc = crc32c::crc32c(&meta);
    crc = crc32c::crc32c_append(crc, data);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(data);
    Ok(out)
}

/// Reads a snapshot file: its meta and its state machine data.
pub(crate) fn read_snapshot(
    path: &Path,
) -> Result<(SnapshotMeta<u64, BasicNode>, Vec<u8>), StoreError> {
    let mut file = fs::read(path).map_err(io_at(path))?;
    if file.len() < 16 || &file[..8] != MAGIC {
        return Err(corrupt(path, 0, "not a snapshot file"));
    }
    let meta_len = u32::from_be_bytes([file[8], file[9], file[10], file[11]]) as usize;
    let crc = u32::from_be_bytes([file[12], file[13], file[14], file[15]]);
    if file.len() - 16 < meta_len {
        return Err(corrupt(path, 8, "meta runs past the end of the file"));
    }
    if crc32c::crc32c(&file[16..]) != crc {
        return Err(corrupt(path, 12, "CRC mismatch"));
    }
    let meta = serde_json::from_slice(&file[16..16 + meta_len])
        .map_err(|e| corrupt(path, 16, format!("undecodable meta: {e}")))?;
    let data = file.split_off(16 + meta_len);
    Ok((meta, data))
}

/// Snapshot files under `dir`, oldest first. `clean` removes temporary files of writes
/// that crashed before their rename: only at open, when no write can be under way.
fn snapshot_files(dir: &Path, clean: bool) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for dirent in fs::read_dir(dir).map_err(io_at(dir))? {
        let dirent = dirent.map_err(io_at(dir))?;
        let name = dirent.file_name();
        let name = name.to_string_lossy();
        if let Some(index) = name
            .strip_prefix(SNAPSHOT_PREFIX)
            .and_then(|n| n.strip_suffix(SNAPSHOT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        {
            found.push((index, dirent.path()));
        } else if clean && name.starts_with(SNAPSHOT_PREFIX) && name.ends_with(".tmp") {
            let _ = fs::remove_file(dirent.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Removes snapshot files older than `keep`. A newer one (written by a concurrent
/// install while a build was running) stays.
fn remove_other_snapshots(dir: &Path, keep: &Path) -> Result<(), StoreError> {
    let mut removed = false;
    for (_, path) in snapshot_files(dir, false)? {
        if path.as_path() < keep {
            fs::remove_file(&path).map_err(io_at(&path))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir).map_err(io_at(dir))?;
    }
    Ok(())
}

fn sm_error(e: StoreError) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

fn snapshot_error(e: StoreError) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

impl<S: MetadataStateMachine> SmStore<S> {
    /// Restores `sm` from the newest snapshot under `dir`, if any.
    pub(crate) fn open(dir: &Path, sm: S) -> Result<SmStore<S>, StoreError> {
        let mut state = SmState {
            sm,
            last_applied: None,
            membership: StoredMembership::default(),
        };
        if let Some((_, path)) = snapshot_files(dir, true)?.pop() {
            let (meta, data) = read_snapshot(&path)?;
            state
                .sm
                .restore(&data)
                .map_err(|e| corrupt(&path, 16, format!("the state machine refused it: {e}")))?;
            tracing::info!(path = %path.display(), last = ?meta.last_log_id, "restored the metadata snapshot");
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership;
            remove_other_snapshots(dir, &path)?;
        }
        Ok(SmStore {
            state: Arc::new(Mutex::new(state)),
            dir: dir.to_path_buf(),
            seq: Arc::new(AtomicU64::new(0)),
            persist_lock: Arc::new(Mutex::new(())),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, SmState<S>>, StorageError> {
        self.state
            .lock()
            .map_err(|_| sm_error(StoreError::Poisoned))
    }

    /// Writes a snapshot file durably and drops the older ones.
    async fn persist(
        &self,
        meta: SnapshotMeta<u64, BasicNode>,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, StorageError> {
        let dir = self.dir.clone();
        let persist_lock = self.persist_lock.clone();
        tokio::task::spawn_blocking(move || {
            let _one_writer = persist_lock.lock().map_err(|_| StoreError::Poisoned)?;
            let index = meta.last_log_id.map_or(0, |l| l.index);
            let path = snapshot_path(&dir, index);
            let bytes =
                encode_snapshot(&meta, &data).map_err(|e| corrupt(&path, 0, e.to_string()))?;
            write_atomic(&path, &bytes).map_err(io_at(&path))?;
            remove_other_snapshots(&dir, &path)?;
            Ok::<_, StoreError>(data)
        })
        .await
        .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, AnyError::new(&e))))?
        .map_err(snapshot_error)
    }
}

impl<S: MetadataStateMachine> RaftSnapshotBuilder<TypeConfig> for SmStore<S> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = {
            let state = self.lock()?;
            let data = state.sm.snapshot();
            let last = state.last_applied;
            // Unique across restarts too (the counter restarts at 0): openraft tells
            // snapshot transfers apart by this id.
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let snapshot_id = match last {
                Some(l) => format!(
                    "{}-{}-{}-{millis}-{seq}",
                    l.leader_id.term, l.leader_id.node_id, l.index
                ),
                None => format!("none-{millis}-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: state.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        let data = self.persist(meta.clone(), data).await?;
        tracing::info!(last = ?meta.last_log_id, bytes = data.len(), "built a metadata snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<S: MetadataStateMachine> RaftStateMachine<TypeConfig> for SmStore<S> {
    type SnapshotBuilder = SmStore<S>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        let state = self.lock()?;
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.lock()?;
        let mut replies = Vec::new();
        for entry in entries {
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => state.sm.apply(entry.log_id.index, &batch.records),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            state.last_applied = Some(entry.log_id);
            replies.push(());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        {
            // Restore first: a snapshot the state machine refuses never replaces a good
            // file. If the write below fails, openraft stops the node, and a restart
            // rebuilds from the old snapshot and the log, which openraft has not purged
            // yet.
            let mut state = self.lock()?;
            state.sm.restore(&data).map_err(|e| {
                sm_error(corrupt(
                    &self.dir,
                    0,
                    format!("received snapshot refused: {e}"),
                ))
            })?;
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
        }
        self.persist(meta.clone(), data).await?;
        tracing::info!(last = ?meta.last_log_id, "installed a metadata snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // The newest file on disk is the current snapshot: older ones are removed after a
        // newer one is in place, never the other way round. Reading under the write lock
        // keeps a concurrent write from removing the file being read.
        let dir = self.dir.clone();
        let persist_lock = self.persist_lock.clone();
        let found = tokio::task::spawn_blocking(move || {
            let _no_writer = persist_lock.lock().map_err(|_| StoreError::Poisoned)?;
            match snapshot_files(&dir, false)?.pop() {
                Some((_, path)) => read_snapshot(&path).map(Some),
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e))))?
        .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, AnyError::new(&e))))?;
        Ok(found.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Blob(Vec<u8>);

    impl MetadataStateMachine for Blob {
        fn apply(&mut self, _index: u64, records: &[Bytes]) {
            for r in records {
                self.0.extend_from_slice(r);
            }
        }
        fn snapshot(&self) -> Vec<u8> {
            self.0.clone()
        }
        fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
            self.0 = snapshot.to_vec();
            Ok(())
        }
    }

    #[tokio::test]
    async fn snapshots_are_restored_on_open_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SmStore::open(dir.path(), Blob::default()).unwrap();
        store.state.lock().unwrap().sm.0 = b"state".to_vec();
        let built = store.build_snapshot().await.unwrap();
        assert_eq!(built.snapshot.into_inner(), b"state");

        let reopened = SmStore::open(dir.path(), Blob::default()).unwrap();
        assert_eq!(reopened.state.lock().unwrap().sm.0, b"state");

        let (_, path) = snapshot_files(dir.path(), false).unwrap().pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = SmStore::open(dir.path(), Blob::default()).err().unwrap();
        assert!(
            matches!(&err, StoreError::Corrupt { path: p, .. } if *p == path),
            "{err}"
        );
    }
}
