//! The socket server: accepts connections and runs each as a reader that decodes and
//! dispatches requests in order, and a writer that sends responses in the same order.
//! Between them sits a bounded queue of pending responses, so a connection can have a few
//! requests in flight (a produce waiting for its fsync) without unbounded buffering.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use odradek_protocol::{buffers, frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use odradek_storage::LockExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::broker::{Broker, PendingResponse};
use crate::config::ConnectionLimits;
use crate::metrics::{ApiLabel, ListenerLabel, Metrics};

/// A response on its way back, with what its metrics need.
struct Outgoing {
    response: PendingResponse,
    api: ApiLabel,
    received: tokio::time::Instant,
}

/// The API named by a request frame's first two bytes, for metric labels.
fn api_of(frame: &[u8]) -> ApiLabel {
    let key = frame
        .get(..2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .and_then(|k| kafka_protocol::messages::ApiKey::try_from(k).ok());
    match key {
        Some(k) => Metrics::api_label(k),
        None => ApiLabel { api: "Unknown" },
    }
}

/// How long a client has to finish its TLS handshake: a connection that opens and says
/// nothing must not hold its slot (or a task) for longer.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for room in `queued.max.request.bytes` for a request of `size` bytes. While it
/// waits, this connection reads nothing more: that is the backpressure.
async fn admit_request(context: &ConnectionContext, size: usize) -> Option<OwnedSemaphorePermit> {
    let (semaphore, capacity) = context.queued.as_ref()?;
    // A request larger than the whole budget waits for all of it rather than forever.
    let want = size.clamp(1, *capacity) as u32;
    semaphore.clone().acquire_many_owned(want).await.ok()
}

/// Responses a connection may have pending before its reader stops reading. High enough
/// that a client pipelining small acks=all produces (librdkafka with `linger.ms=0`) keeps
/// feeding the next group-commit round while the current one syncs; the bytes these
/// requests hold are bounded by `queued.max.request.bytes`.
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 256;
const READ_BUFFER: usize = 64 * 1024;
/// Frames from this size up to FRAME_RESERVE are read into pooled buffers.
const POOLED_FRAME: usize = READ_BUFFER;
/// The most a size prefix makes a connection set aside at once: a produce request of
/// librdkafka's default `message.max.bytes` (1 MB) fits.
const FRAME_RESERVE: usize = 2 << 20;
/// How long a shutdown waits for connections to finish their in-flight requests (a client
/// that stops reading its responses must not hold the broker up forever).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves clients until `shutdown` turns true, then stops accepting, lets every connection
/// finish the requests it has read, and returns.
///
/// With `tls`, every connection is a TLS session (an SSL listener); its handshake runs in
/// the connection's own task, so a slow client delays only itself.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let label = ListenerLabel {
        listener: if tls.is_some() { "SSL" } else { "PLAINTEXT" },
    };
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut connections = JoinSet::new();
    let limits = broker.config().connection_limits();
    let counts = Arc::new(ConnectionCounts::default());
    let queued = limits
        .queued_max_request_bytes
        .map(|n| (Arc::new(Semaphore::new(n)), n));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = counts.admit(peer.ip(), &limits) else {
                        warn!(%peer, "connection refused: max.connections or max.connections.per.ip reached");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let context = ConnectionContext { idle_timeout: limits.idle_timeout, queued: queued.clone(), label: label.clone(), _slot: slot };
                    let (broker, shutdown) = (broker.clone(), shutdown.clone());
                    match tls.clone() {
                        None => connections.spawn(connection(stream.into_split(), peer, broker, shutdown, context)),
                        Some(acceptor) => connections.spawn(async move {
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => connection(tokio::io::split(stream), peer, broker, shutdown, context).await,
                                // A plaintext client on a TLS port lands here too.
                                Ok(Err(e)) => info!(%peer, error = %e, "TLS handshake failed; closing"),
                                Err(_) => info!(%peer, timeout = ?TLS_HANDSHAKE_TIMEOUT, "TLS handshake not finished in time; closing"),
                            }
                        }),
                    };
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    broker.begin_shutdown();
    info!(
        connections = connections.len(),
        "stopped accepting; finishing in-flight requests"
    );
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!(grace = ?SHUTDOWN_GRACE, "connections still busy after the grace period; closing them");
        connections.abort_all();
    }
}

/// Open connections, in total and per client address. Each change is one counter's
/// increment or decrement, so the lock recovers from poisoning ([`LockExt`]).
#[derive(Default)]
struct ConnectionCounts {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds a connection's place in [`ConnectionCounts`] until dropped.
struct Slot {
    counts: Arc<ConnectionCounts>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_ip = self.counts.by_ip.lock_or_recover();
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

impl ConnectionCounts {
    /// Counts a new connection in, unless a limit says no (Kafka closes it at once).
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ConnectionLimits) -> Option<Slot> {
        let mut by_ip = self.by_ip.lock_or_recover();
        let total: usize = by_ip.values().sum();
        let per_ip = limits
            .per_ip_overrides
            .get(&ip)
            .copied()
            .unwrap_or(limits.max_per_ip);
        if total >= limits.max_connections || by_ip.get(&ip).copied().unwrap_or(0) >= per_ip {
            return None;
        }
        *by_ip.entry(ip).or_default() += 1;
        Some(Slot {
            counts: self.clone(),
            ip,
        })
    }
}

struct ConnectionContext {
    idle_timeout: std::time::Duration,
    /// The listener's security protocol, for metrics.
    label: ListenerLabel,
    /// `queued.max.request.bytes`: the shared budget and its size.
    queued: Option<(Arc<Semaphore>, usize)>,
    _slot: Slot,
}

/// Cuts a connection's byte stream into request frames. Small frames are split off one
/// buffer; a frame of `POOLED_FRAME` bytes or more (a produce request, typically) is read
/// into a buffer of its own from the shared pool, so it costs neither a copy when the
/// buffer grows nor fresh pages to fault in.
struct FrameReader {
    /// Taken only while there are bytes to read and released whenever it is drained, so an
    /// idle connection holds no buffer (10,000 idle clients must not pin 10,000 ×
    /// READ_BUFFER).
    buf: BytesMut,
    pooled: Option<PooledFrame>,
    max_frame: usize,
}

/// A frame being read into a pooled buffer: the bytes so far, size prefix included, and
/// the length they will have when it is complete.
struct PooledFrame {
    bytes: Vec<u8>,
    len: usize,
}

impl FrameReader {
    fn new(max_frame: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            pooled: None,
            max_frame,
        }
    }

    fn next_frame(&mut self) -> Result<Option<Bytes>, frame::FrameError> {
        if let Some(pooled) = self.pooled.take_if(|p| p.bytes.len() == p.len) {
            return Ok(Some(buffers::shared().lend(pooled.bytes).slice(4..)));
        }
        if self.pooled.is_some() {
            return Ok(None);
        }
        let frame = frame::take_frame(&mut self.buf, self.max_frame)?;
        // take_frame has checked the size prefix of an incomplete frame against the limit.
        if frame.is_none()
            && let Some(missing) = frame::missing(&self.buf)
            && (POOLED_FRAME..=FRAME_RESERVE).contains(&(self.buf.len() + missing))
        {
            let len = self.buf.len() + missing;
            let mut bytes = buffers::shared().take(len);
            bytes.extend_from_slice(&self.buf);
            self.buf.clear();
            self.pooled = Some(PooledFrame { bytes, len });
        }
        Ok(frame)
    }

    /// Where the next bytes go: into the pooled frame up to its end, else into the buffer.
    fn target(&mut self) -> ReadTarget<'_> {
        if let Some(pooled) = &mut self.pooled {
            let rest = pooled.len - pooled.bytes.len();
            return ReadTarget::Pooled((&mut pooled.bytes).limit(rest));
        }
        // Room for the rest of a frame whose size is known, so a frame too large for the pool
        // lands in as few allocations as possible. Kafka allocates the whole frame on its
        // size prefix; this reserves at most FRAME_RESERVE at a time, so a size prefix alone
        // sets aside no more than that (and the pages only become memory as bytes arrive).
        let spare = self.buf.capacity() - self.buf.len();
        match frame::missing(&self.buf) {
            Some(missing) if spare < missing.min(FRAME_RESERVE) => {
                self.buf.reserve(missing.clamp(READ_BUFFER, FRAME_RESERVE));
            }
            None if spare < 1024 => self.buf.reserve(READ_BUFFER),
            _ => {}
        }
        ReadTarget::Buffer(&mut self.buf)
    }

    fn release_if_drained(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Bytes of a frame not yet complete.
    fn partial_len(&self) -> usize {
        self.buf.len() + self.pooled.as_ref().map_or(0, |p| p.bytes.len())
    }
}

enum ReadTarget<'a> {
    Pooled(bytes::buf::Limit<&'a mut Vec<u8>>),
    Buffer(&'a mut BytesMut),
}

/// A connection's read side, filling a [`FrameReader`]. Cancel-safe: a fill that is
/// cancelled (by the idle deadline or shutdown) has read nothing.
trait FrameSource: Send {
    fn fill(
        &mut self,
        frames: &mut FrameReader,
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send;
}

/// Plain TCP waits for readability before it takes a buffer, so an idle connection holds
/// none.
impl FrameSource for OwnedReadHalf {
    async fn fill(&mut self, frames: &mut FrameReader) -> std::io::Result<usize> {
        loop {
            self.readable().await?;
            let read = match frames.target() {
                ReadTarget::Pooled(mut rest) => self.try_read_buf(&mut rest),
                ReadTarget::Buffer(buf) => self.try_read_buf(buf),
            };
            match read {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                read => return read,
            }
        }
    }
}

/// TLS reads through rustls, which holds its own record buffers for the session anyway,
/// so the buffer is taken before the bytes arrive.
impl<S: AsyncRead + Send> FrameSource for ReadHalf<S> {
    async fn fill(&mut self, frames: &mut FrameReader) -> std::io::Result<usize> {
        match frames.target() {
            ReadTarget::Pooled(mut rest) => self.read_buf(&mut rest).await,
            ReadTarget::Buffer(buf) => self.read_buf(buf).await,
        }
    }
}

/// Serves one client connection, plain TCP or a TLS session over it, given its two halves.
async fn connection(
    (mut reader, mut writer): (impl FrameSource, impl AsyncWrite + Send + Unpin + 'static),
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    context: ConnectionContext,
) {
    debug!(%peer, "connection opened");
    let metrics = broker.metrics.clone();
    metrics.connections.get_or_create(&context.label).inc();
    // Boxed entries keep the channel's preallocated block small on idle connections.
    let (queue, mut pending) = mpsc::channel::<Box<Outgoing>>(MAX_IN_FLIGHT_PER_CONNECTION);
    let writer_metrics = metrics.clone();
    let write_task = tokio::spawn(async move {
        while let Some(out) = pending.recv().await {
            let Some(mut frame) = out.response.await else {
                return;
            };
            writer_metrics.requests.get_or_create(&out.api).inc();
            if frame.is_empty() {
                continue;
            }
            let sending = tokio::time::Instant::now();
            // The flush matters for TLS: rustls may keep the tail of a response encrypted
            // in its buffer when the socket was full, and only a flush (or a later write)
            // sends it; the client would wait for it forever. On plain TCP it does nothing.
            let written = match writer.write_all_buf(&mut frame).await {
                Ok(()) => writer.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                debug!(%peer, error = %e, "write failed; closing");
                return;
            }
            writer_metrics.observe_phase(&out.api, "send", sending.elapsed());
            writer_metrics.observe_phase(&out.api, "total", out.received.elapsed());
        }
        let _ = writer.shutdown().await;
    });
    let mut frames = FrameReader::new(broker.config().socket_request_max_bytes());
    // Idle means no complete request: a client trickling a frame byte by byte (slowloris)
    // is as idle as a silent one.
    let mut idle_deadline = tokio::time::Instant::now() + context.idle_timeout;
    'connection: loop {
        loop {
            match frames.next_frame() {
                Ok(Some(request)) => {
                    let received = tokio::time::Instant::now();
                    let api = api_of(&request);
                    let permit = admit_request(&context, request.len()).await;
                    let dispatched = tokio::time::Instant::now();
                    metrics.observe_phase(&api, "queue", dispatched - received);
                    // Boxed: handler futures are large, and an idle connection should not
                    // carry their space while it waits.
                    match Box::pin(broker.dispatch(request, peer)).await {
                        Ok(response) => {
                            let handled = tokio::time::Instant::now();
                            metrics.observe_phase(&api, "local", handled - dispatched);
                            idle_deadline = handled + context.idle_timeout;
                            let (remote_metrics, remote_api) = (metrics.clone(), api.clone());
                            // The request's bytes stay counted until its response is written.
                            let response: PendingResponse = Box::pin(async move {
                                let bytes = response.await;
                                remote_metrics.observe_phase(
                                    &remote_api,
                                    "remote",
                                    handled.elapsed(),
                                );
                                drop(permit);
                                bytes
                            });
                            let out = Box::new(Outgoing {
                                response,
                                api,
                                received,
                            });
                            if queue.send(out).await.is_err() {
                                break 'connection;
                            }
                        }
                        Err(e) => {
                            warn!(%peer, error = %e, "closing connection");
                            break 'connection;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(%peer, error = %e, "closing connection");
                    break 'connection;
                }
            }
        }
        frames.release_if_drained();
        tokio::select! {
            read = reader.fill(&mut frames) => match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    debug!(%peer, error = %e, "read failed; closing");
                    break;
                }
            },
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep_until(idle_deadline) => {
                info!(%peer, idle = ?context.idle_timeout, partial_bytes = frames.partial_len(), "closing idle connection (connections.max.idle.ms)");
                break;
            }
        }
    }
    drop(queue);
    let _ = write_task.await;
    metrics.connections.get_or_create(&context.label).dec();
    debug!(%peer, "connection closed");
}
