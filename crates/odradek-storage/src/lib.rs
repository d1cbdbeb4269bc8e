//! Odradek's log storage, modelled on Kafka's: a partition is a [`Log`] of [`LogSegment`]s,
//! each a `<base offset>.log` file of record batches with a sparse [`OffsetIndex`] and
//! [`TimeIndex`] beside it. [`GroupCommit`] makes appends durable with one `fdatasync` per
//! log per round, shared by every producer waiting meanwhile.
//!
//! Record batches are opaque bytes here beyond their header, except in the log cleaner
//! ([`Cleaner`]), which decompresses batches of compacted topics to drop superseded records
//! and recompresses the survivors' bytes verbatim.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod cleaner;
mod disk;
mod error;
mod group_commit;
mod index;
mod leader_epoch;
mod log;
mod producer_state;
mod recovery_point;
mod segment;
mod sync;

pub use cleaner::{CleanStats, Cleaner};
pub use disk::DiskSpace;
pub use error::StorageError;
pub use group_commit::{DurabilityWaiter, GroupCommit, SyncObserver};
pub use index::{OffsetIndex, TimeIndex};
pub use leader_epoch::{EpochEntry, LeaderEpochCache, UNDEFINED_EPOCH_OFFSET};
pub use log::{
    AppendResult, FetchedRecords, Log, LogConfig, OffsetLookup, PreparedRead, ReplicatedAppend,
    TimestampType,
};
pub use producer_state::{AbortedTxn, BATCHES_KEPT, BatchMetadata, ProducerError, ProducerSummary};
pub use segment::{LogSegment, now_ms};
pub use sync::{LockExt, RwLockExt};

/// File name stem of a segment or index: the base offset padded to 20 digits, as Kafka does,
/// so a directory listing sorts segments by offset.
pub fn offset_file_stem(offset: i64) -> String {
    format!("{offset:020}")
}
