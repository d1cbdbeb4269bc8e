//! Requests one broker sends another: follower fetches (over a connection each fetcher
//! keeps), and a transaction coordinator's markers and a partition leader's verification
//! of a transactional write (over a connection per exchange: they come once per
//! transaction and partition).

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::protocol::{Encodable, HeaderVersion, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Broker;

const CLIENT_ID: &str = "odradek-broker";
/// Kafka's `replica.socket.timeout.ms` / `request.timeout.ms` default: a broker that
/// answers nothing this long is given up on.
pub(crate) const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// A response larger than this is a broken peer.
const MAX_RESPONSE: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum InterBrokerError {
    #[error("broker {0} is not registered or is fenced")]
    Unknown(i32),
    #[error("cannot reach broker {broker} at {addr}: {source}")]
    Io {
        broker: i32,
        addr: String,
        source: std::io::Error,
    },
    #[error("broker {0} did not answer within the socket timeout")]
    Timeout(i32),
    #[error(transparent)]
    Frame(#[from] odradek_protocol::codec::ClientFrameError),
    #[error("implausible response size {0}")]
    Size(i32),
}

impl InterBrokerError {
    /// The broker's listener refused the connection: nothing listens there.
    pub(crate) fn refused(&self) -> bool {
        matches!(self, InterBrokerError::Io { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// A connection to another broker.
pub(crate) struct BrokerConnection {
    broker: i32,
    addr: String,
    stream: TcpStream,
    next_correlation_id: i32,
}

impl BrokerConnection {
    pub(crate) async fn open(broker: i32, addr: String) -> Result<Self, InterBrokerError> {
        let io = |source| InterBrokerError::Io {
            broker,
            addr: addr.clone(),
            source,
        };
        let stream = tokio::time::timeout(SOCKET_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| InterBrokerError::Timeout(broker))?
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        Ok(Self {
            broker,
            addr,
            stream,
            next_correlation_id: 0,
        })
    }

    /// Sends `request` at `version` and reads its response (record sets in it are slices
    /// of the one buffer the response was read into).
    pub(crate) async fn send<R: Request + Encodable + HeaderVersion>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, InterBrokerError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = odradek_protocol::codec::encode_request_frame(
            request,
            version,
            correlation_id,
            CLIENT_ID,
        )?;
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let size = self.stream.read_i32().await?;
            if size < 0 || size as usize > MAX_RESPONSE {
                return Ok(Err(InterBrokerError::Size(size)));
            }
            let mut body = vec![0u8; size as usize];
            self.stream.read_exact(&mut body).await?;
            Ok(Ok(Bytes::from(body)))
        };
        let body = tokio::time::timeout(SOCKET_TIMEOUT, exchange)
            .await
            .map_err(|_| InterBrokerError::Timeout(self.broker))?
            .map_err(|source| InterBrokerError::Io {
                broker: self.broker,
                addr: self.addr.clone(),
                source,
            })??;
        Ok(odradek_protocol::codec::decode_response_frame::<R>(
            body,
            version,
            correlation_id,
        )?)
    }
}

impl Broker {
    /// Where `broker` serves clients, as it registered (None: unknown or fenced).
    pub(crate) fn broker_address(&self, broker: i32) -> Option<String> {
        let image = self.logs.image();
        let b = image.brokers.get(&broker).filter(|b| !b.fenced)?;
        Some(format!("{}:{}", b.host, b.port))
    }

    /// One request to `broker` over a connection of its own.
    pub(crate) async fn call_broker<R: Request + Encodable + HeaderVersion>(
        &self,
        broker: i32,
        request: &R,
        version: i16,
    ) -> Result<R::Response, InterBrokerError> {
        let addr = self
            .broker_address(broker)
            .ok_or(InterBrokerError::Unknown(broker))?;
        BrokerConnection::open(broker, addr)
            .await?
            .send(request, version)
            .await
    }
}
