//! A small blocking Kafka client on the `kafka-protocol` messages, for the `odradek` CLI.
//!
//! It negotiates API versions per broker (ApiVersions), routes requests to a given node
//! (found through Metadata or FindCoordinator), and decodes responses. It is deliberately
//! minimal: one request in flight per connection, no retries beyond what the CLI asks for.
//! The cluster phase will grow it into the internal client that replication and mirroring
//! need.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Message, Request, StrBytes};
use odradek_protocol::buffers;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} does not support {api:?} in any version this client speaks")]
    Unsupported { addr: String, api: ApiKey },
    #[error("protocol error talking to {addr}: {reason}")]
    Protocol { addr: String, reason: String },
}

struct Connection {
    addr: String,
    stream: TcpStream,
    versions: HashMap<i16, (i16, i16)>,
    next_correlation_id: i32,
}

const CLIENT_ID: &str = "odradek-cli";
const MAX_RESPONSE: usize = 256 << 20;

impl Connection {
    fn open(addr: &str, timeout: Duration) -> Result<Self, ClientError> {
        let connect_err = |source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        };
        let target = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| {
                connect_err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no address",
                ))
            })?;
        let stream = TcpStream::connect_timeout(&target, timeout).map_err(connect_err)?;
        let io = |source| ClientError::Io {
            addr: addr.to_string(),
            source,
        };
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let _ = stream.set_nodelay(true);
        let mut conn = Self {
            addr: addr.to_string(),
            stream,
            versions: HashMap::new(),
            next_correlation_id: 1,
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("odradek"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response: ApiVersionsResponse = conn.exchange(&request, 3)?;
        conn.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    fn version_for<R: Request>(&self) -> Result<i16, ClientError> {
        let (broker_min, broker_max) = self.versions.get(&R::KEY).copied().unwrap_or((-1, -1));
        let (ours_min, ours_max) = (R::VERSIONS.min, R::VERSIONS.max);
        let version = broker_max.min(ours_max);
        if version < broker_min.max(ours_min) {
            let api = ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions);
            return Err(ClientError::Unsupported {
                addr: self.addr.clone(),
                api,
            });
        }
        Ok(version)
    }

    fn exchange<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let correlation_id = self.write_request(request, version)?;
        self.read_response::<R>(correlation_id, version)
    }

    /// Sends a request frame; returns its correlation id.
    fn write_request<R: Request>(&mut self, request: &R, version: i16) -> Result<i32, ClientError> {
        let protocol = |reason: String| ClientError::Protocol {
            addr: self.addr.clone(),
            reason,
        };
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let frame = odradek_protocol::codec::encode_request_frame(
            request,
            version,
            correlation_id,
            CLIENT_ID,
        )
        .map_err(|e| protocol(e.to_string()))?;
        let io = |source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        };
        self.stream.write_all(&frame).map_err(io)?;
        Ok(correlation_id)
    }

    fn read_response<R: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let protocol = |reason: String| ClientError::Protocol {
            addr: self.addr.clone(),
            reason,
        };
        let io = |source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        };
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(io)?;
        let size = i32::from_be_bytes(size);
        if size < 0 || size as usize > MAX_RESPONSE {
            return Err(protocol(format!("implausible response size {size}")));
        }
        // Fetch responses are megabytes: reading into a pooled buffer (returned once the
        // response's `Bytes` are dropped) spares a fresh allocation's page faults per response,
        // and `read_to_end` fills it without zeroing it first.
        let pool = buffers::shared();
        let mut body = pool.take(size as usize);
        (&mut self.stream)
            .take(size as u64)
            .read_to_end(&mut body)
            .map_err(io)?;
        if body.len() != size as usize {
            return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let body = pool.lend(body);
        odradek_protocol::codec::decode_response_frame::<R>(body, version, correlation_id)
            .map_err(|e| protocol(e.to_string()))
    }
}

/// Connections to a cluster's brokers, opened on demand.
pub struct Client {
    bootstrap: String,
    timeout: Duration,
    connections: HashMap<String, Connection>,
}

impl Client {
    pub fn new(bootstrap: &str, timeout: Duration) -> Self {
        Self {
            bootstrap: bootstrap.to_string(),
            timeout,
            connections: HashMap::new(),
        }
    }

    /// Sends a request to the broker at `addr` (the bootstrap broker when `None`) in the
    /// highest version both sides speak; `build` makes the request for that version.
    /// Returns the version with the response.
    pub fn send<R: Request + Message>(
        &mut self,
        addr: Option<&str>,
        build: impl FnOnce(i16) -> R,
    ) -> Result<(i16, R::Response), ClientError> {
        self.with_connection(addr, |conn| {
            let version = conn.version_for::<R>()?;
            Ok((version, conn.exchange(&build(version), version)?))
        })
    }

    /// Sends a request the broker does not answer (a Produce with acks=0).
    pub fn send_unanswered<R: Request + Message>(
        &mut self,
        addr: Option<&str>,
        build: impl FnOnce(i16) -> R,
    ) -> Result<(), ClientError> {
        self.with_connection(addr, |conn| {
            let version = conn.version_for::<R>()?;
            conn.write_request(&build(version), version).map(drop)
        })
    }

    fn with_connection<T>(
        &mut self,
        addr: Option<&str>,
        run: impl FnOnce(&mut Connection) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let addr = addr.unwrap_or(&self.bootstrap).to_string();
        let conn = match self.connections.entry(addr.clone()) {
            std::collections::hash_map::Entry::Occupied(open) => open.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(Connection::open(&addr, self.timeout)?)
            }
        };
        match run(conn) {
            Ok(r) => Ok(r),
            Err(e) => {
                // The connection's state is unknown after a failure: start afresh next time.
                self.connections.remove(&addr);
                Err(e)
            }
        }
    }
}
