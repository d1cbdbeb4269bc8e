//! The Odradek broker: configuration, cluster metadata, the log registry, the handlers of
//! each Kafka API, and the socket server that feeds them.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod broker;
pub mod config;
mod controller;
mod coordinator;
mod handlers;
mod inter_broker;
mod log_manager;
pub mod metadata;
pub mod metrics;
mod network;
mod placement;
mod replication;
pub mod views;

pub use broker::{Broker, CloseConnection, SUPPORTED_APIS, StartError, lock_data_dir};
pub use log_manager::stray_partition_dirs;
pub use network::serve;
