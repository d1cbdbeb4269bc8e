//! Who a client is and what it may do. Today: TLS for client listeners ([`tls`]). SASL,
//! principal mapping, the authorizer and quotas join it (issue #20); this crate knows
//! nothing of request handlers, so the broker asks it and the handlers stay protocol-only.

pub mod tls;

pub use tls::{ClientAuth, PemInput, PemSource, TlsError, TlsSettings};
