use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("offset {offset} is out of range: log holds [{log_start}, {log_end})")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    /// A previous write or sync failed in a way that left the log's on-disk state uncertain;
    /// it accepts no more writes until the broker restarts and recovers it.
    #[error("log {0} is offline after an earlier I/O error")]
    Offline(PathBuf),
    /// Stored data that cannot be read back as valid batches.
    #[error("corrupt data in {path}: {reason}")]
    Corrupt {
        path: PathBuf,
        reason: String,
        /// The offset after the damaged batch, when its header was intact: where a reader
        /// that can do without the batch (a coordinator replaying its state) goes on.
        resume_at: Option<i64>,
    },
    /// A batch copied from a leader (`Log::append_replicated`) does not start at the log end
    /// offset: the follower fetched from the wrong offset, or the leader's log has a gap.
    #[error("log {dir}: replicated batch starts at offset {found}, the log ends at {expected}")]
    NonContiguous {
        dir: PathBuf,
        expected: i64,
        found: i64,
    },
    #[error("log {0} is shutting down")]
    ShuttingDown(PathBuf),
    /// The producer's batch or transaction marker breaks its idempotence or transaction state.
    #[error(transparent)]
    Producer(#[from] crate::ProducerError),
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
