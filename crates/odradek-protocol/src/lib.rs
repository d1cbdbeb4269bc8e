//! The Kafka wire protocol as Odradek speaks it.
//!
//! The generated message types come from the `kafka-protocol` crate; this crate wraps them so
//! the rest of Odradek sees one small surface: length-prefixed [`frame`]s, request decoding and
//! response encoding in [`codec`], and zero-copy [`batch`] validation of record batches.
//! Record batches stay raw `Bytes` end to end: they are never decoded into records and
//! re-encoded, so what a producer sent is byte-for-byte what a consumer receives.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod batch;
pub mod buffers;
pub mod codec;
pub mod frame;
pub mod response;

pub use kafka_protocol as messages_crate;
pub use kafka_protocol::ResponseError;
pub use kafka_protocol::messages;
pub use kafka_protocol::protocol::StrBytes;
