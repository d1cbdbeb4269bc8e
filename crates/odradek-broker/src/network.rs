//! The socket server: accepts connections and runs each as a reader that decodes and
//! dispatches requests in order, and a writer that sends responses in the same order.
//! Between them sits a bounded queue of pending responses, so a connection can have a few
//! requests in flight (a produce waiting for its fsync) without unbounded buffering.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use odradek_protocol::frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::broker::{Broker, PendingResponse};

/// Responses a connection may have pending before its reader stops reading.
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;
const READ_BUFFER: usize = 64 * 1024;
/// How long a shutdown waits for connections to finish their in-flight requests (a client
/// that stops reading its responses must not hold the broker up forever).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves clients until `shutdown` turns true, then stops accepting, lets every connection
/// finish the requests it has read, and returns.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, peer, broker.clone(), shutdown.clone()));
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

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    debug!(%peer, "connection opened");
    let (mut reader, mut writer) = stream.into_split();
    let (queue, mut pending) = mpsc::channel::<PendingResponse>(MAX_IN_FLIGHT_PER_CONNECTION);
    let write_task = tokio::spawn(async move {
        while let Some(response) = pending.recv().await {
            let Some(bytes) = response.await else { return };
            if bytes.is_empty() {
                continue;
            }
            if let Err(e) = writer.write_all(&bytes).await {
                debug!(%peer, error = %e, "write failed; closing");
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let max_frame = broker.config().socket_request_max_bytes();
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    'connection: loop {
        loop {
            match frame::take_frame(&mut buf, max_frame) {
                Ok(Some(request)) => match broker.dispatch(request, peer).await {
                    Ok(response) => {
                        if queue.send(response).await.is_err() {
                            break 'connection;
                        }
                    }
                    Err(e) => {
                        warn!(%peer, error = %e, "closing connection");
                        break 'connection;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    warn!(%peer, error = %e, "closing connection");
                    break 'connection;
                }
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_BUFFER);
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    debug!(%peer, error = %e, "read failed; closing");
                    break;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(queue);
    let _ = write_task.await;
    debug!(%peer, "connection closed");
}
