//! Odradek's replicated metadata log: a quorum of nodes agreeing, through
//! [openraft](https://docs.rs/openraft/0.9) 0.9, on one log of opaque records.
//!
//! The crate knows nothing of Kafka metadata: a record is bytes, and the caller's
//! [`MetadataStateMachine`] gives them meaning. See the README for the on-disk layout,
//! what is durable when, and why the storage and network take the shape they do.
//!
//! ```no_run
//! # use odradek_raft::*;
//! # struct Image; impl MetadataStateMachine for Image {
//! #   fn apply(&mut self, _: u64, _: &[bytes::Bytes]) {}
//! #   fn snapshot(&self) -> Vec<u8> { vec![] }
//! #   fn restore(&mut self, _: &[u8]) -> Result<(), RestoreError> { Ok(()) } }
//! # async fn f() -> Result<(), QuorumError> {
//! let config = QuorumConfig::single(1, "127.0.0.1:9093".parse().unwrap(), "data/__cluster_metadata-0");
//! let quorum = MetadataQuorum::start(config, Image).await?;
//! let index = quorum.propose(vec![bytes::Bytes::from_static(b"record")]).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
// openraft's storage traits return its `StorageError` (224 bytes) by value; our helpers
// return the same type so `?` works across them. Errors are rare, so the size is moot.
#![allow(clippy::result_large_err)]

mod fsutil;
mod log_store;
mod network;
mod quorum;
mod repair;
mod state_machine;
mod types;

pub use log_store::{DEFAULT_SEGMENT_BYTES, LogStore, StoreError};
pub use network::{MAX_FRAME, RequestHandler};
pub use openraft::ServerState;
pub use quorum::{MAX_PROPOSAL_BYTES, MetadataQuorum, QuorumConfig, QuorumError, QuorumStatus};
pub use repair::{DamagedStretch, LogRepair, repair_log};
pub use state_machine::{MetadataStateMachine, RestoreError};
pub use types::{Batch, TypeConfig};
