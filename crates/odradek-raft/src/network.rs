//! openraft's RPCs over plain TCP.
//!
//! One listener per node. A request is `u32 length (BE) | u8 kind | JSON payload`; the
//! reply is `u32 length (BE) | JSON of Result<response, RaftError>`. The length counts
//! what follows it and is at most [`MAX_FRAME`]. A connection carries one request at a
//! time: openraft drives each peer's `RaftNetwork` with `&mut self`, one call after the
//! other, so there is nothing to multiplex.

use std::io;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::types::{Batch, Raft, TypeConfig};

/// The largest frame either side accepts. Entries are bounded far below it (see
/// `MAX_PROPOSAL_BYTES` and `max_payload_entries`), snapshots travel in chunks.
pub const MAX_FRAME: usize = 64 << 20;

const APPEND_ENTRIES: u8 = 1;
const VOTE: u8 = 2;
const INSTALL_SNAPSHOT: u8 = 3;
/// A proposal a follower forwards to the leader (Kafka's brokers forward controller
/// requests the same way): payload a [`Batch`], reply a [`ForwardedWrite`].
const FORWARDED_WRITE: u8 = 4;
/// A request for the application on the leader (brokers' heartbeats, registration and
/// shutdown): payload and reply are opaque bytes that [`RequestHandler`] interprets.
const CONTROLLER_REQUEST: u8 = 5;
/// A node outside the voters (a broker-only node) asks the leader to replicate the log to
/// it as an openraft learner: payload a [`JoinRequest`], reply a [`Joined`].
const JOIN_AS_OBSERVER: u8 = 6;

/// An observer's request to receive the log.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct JoinRequest {
    pub id: u64,
    /// Where the leader reaches the observer's quorum listener.
    pub addr: String,
}

/// What a voter answers a [`JoinRequest`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) enum Joined {
    /// The leader replicates to the observer; its log was committed up to this index when
    /// it answered, so the observer has caught up once it has applied that far.
    Replicating { committed: Option<u64> },
    /// This node does not lead; the leader it knows of, with its address.
    NotLeader(Option<(u64, String)>),
    /// Not now (another membership change is under way): ask again.
    Failed(String),
    /// Never: the node is a voter.
    Refused(String),
}

/// Answers [`CONTROLLER_REQUEST`]s: the application's controller logic, set once it runs.
pub type RequestHandler = std::sync::Arc<
    dyn Fn(Vec<u8>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send>>
        + Send
        + Sync,
>;

/// Where the serving side finds the handler: set after the quorum starts, because the
/// handler needs the quorum.
pub(crate) type HandlerSlot = std::sync::Arc<std::sync::OnceLock<RequestHandler>>;

/// What the leader answers a forwarded proposal.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) enum ForwardedWrite {
    /// Committed at this log index (and applied on the leader).
    Committed(u64),
    /// This node no longer leads; the leader it knows of, if any.
    NotLeader(Option<u64>),
    Failed(String),
}

/// Sends `batch` to the node at `addr` (the leader, as far as the caller knows) and returns
/// its answer. One connection per call: metadata writes are rare.
pub(crate) async fn forward_write(
    addr: &str,
    batch: &Batch,
    ttl: Duration,
) -> io::Result<ForwardedWrite> {
    let payload = serde_json::to_vec(batch).map_err(io::Error::other)?;
    from_json(&exchange(addr, FORWARDED_WRITE, &payload, ttl).await?)
}

/// Sends an application request to the node at `addr` and returns its reply.
pub(crate) async fn controller_request(
    addr: &str,
    payload: &[u8],
    ttl: Duration,
) -> io::Result<Vec<u8>> {
    exchange(addr, CONTROLLER_REQUEST, payload, ttl).await
}

/// Asks the node at `addr` (a voter) to replicate the log to this observer.
pub(crate) async fn join(addr: &str, request: &JoinRequest, ttl: Duration) -> io::Result<Joined> {
    from_json(&exchange(addr, JOIN_AS_OBSERVER, &to_json(request)?, ttl).await?)
}

/// One request of `kind` on a connection of its own, and its reply, within `ttl`.
async fn exchange(addr: &str, kind: u8, payload: &[u8], ttl: Duration) -> io::Result<Vec<u8>> {
    let exchange = async {
        let mut conn = TcpStream::connect(addr).await?;
        conn.set_nodelay(true)?;
        write_frame(&mut conn, &[&[kind], payload]).await?;
        read_frame(&mut conn).await
    };
    tokio::time::timeout(ttl, exchange).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from {addr} in {ttl:?}"),
        )
    })?
}

/// Reads one length-prefixed frame. The buffer grows with the bytes that actually
/// arrive, so a peer announcing a large frame and sending nothing costs nothing.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let len = r.read_u32().await? as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes (limit {MAX_FRAME})"),
        ));
    }
    let mut buf = Vec::with_capacity(len.min(64 << 10));
    let got = r.take(len as u64).read_to_end(&mut buf).await?;
    if got != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame cut at {got} of {len} bytes"),
        ));
    }
    Ok(buf)
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
        ));
    }
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    w.write_all(&out).await?;
    w.flush().await
}

/// Creates a [`TcpNetwork`] per peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct TcpNetworkFactory {
    unreachable: Unreachables,
}

/// The peers the last call could not connect to: a peer that is down is reported once
/// when it goes and once when it is back, not at every retry.
type Unreachables = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<u64>>>;

impl RaftNetworkFactory<TypeConfig> for TcpNetworkFactory {
    type Network = TcpNetwork;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> TcpNetwork {
        TcpNetwork {
            target,
            addr: node.addr.clone(),
            conn: None,
            unreachable: self.unreachable.clone(),
        }
    }
}

/// The client side of one peer. Connects lazily and again after any failure.
#[derive(Debug)]
pub(crate) struct TcpNetwork {
    target: u64,
    addr: String,
    conn: Option<TcpStream>,
    unreachable: Unreachables,
}

/// Why a call failed: before reaching the peer, or on the way.
enum CallError {
    Connect(io::Error),
    Io(io::Error),
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<u64, BasicNode, E> {
        match self {
            // openraft backs off from an unreachable peer before retrying.
            CallError::Connect(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Io(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

impl TcpNetwork {
    async fn call<Req, Resp>(
        &mut self,
        kind: u8,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let payload = serde_json::to_vec(req).map_err(|e| CallError::Io(io::Error::other(e)))?;
        // The connection is taken out for the call and put back only after a full reply:
        // a call abandoned half way (openraft's timeout drops the future) then drops the
        // connection too, and no stale reply is ever read as the next one's.
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let c = tokio::time::timeout(ttl, TcpStream::connect(&self.addr))
                    .await
                    .map_err(|_| {
                        CallError::Connect(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("connect to {} timed out", self.addr),
                        ))
                    })?
                    .map_err(CallError::Connect)?;
                c.set_nodelay(true).map_err(CallError::Connect)?;
                c
            }
        };
        let exchange = async {
            write_frame(&mut conn, &[&[kind], &payload]).await?;
            read_frame(&mut conn).await
        };
        let reply = tokio::time::timeout(ttl, exchange)
            .await
            .map_err(|_| {
                CallError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply from node {} in {ttl:?}", self.target),
                ))
            })?
            .map_err(CallError::Io)?;
        let resp = serde_json::from_slice(&reply)
            .map_err(|e| CallError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        self.conn = Some(conn);
        Ok(resp)
    }

    async fn rpc<Req, Resp, E>(
        &mut self,
        kind: u8,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let outcome = self.call(kind, req, option.hard_ttl()).await;
        let reachable = !matches!(outcome, Err(CallError::Connect(_)));
        let changed = {
            let mut unreachable = self
                .unreachable
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if reachable {
                unreachable.remove(&self.target)
            } else {
                unreachable.insert(self.target)
            }
        };
        match (&outcome, changed) {
            (Err(CallError::Connect(e)), true) => {
                tracing::warn!(node = self.target, addr = %self.addr, error = %e, "cannot reach a metadata quorum peer; retrying quietly")
            }
            (_, true) => {
                tracing::info!(node = self.target, addr = %self.addr, "reached the metadata quorum peer again")
            }
            _ => {}
        }
        let reply: Result<Resp, RaftError<u64, E>> = outcome.map_err(|e| {
            tracing::debug!(target_node = self.target, addr = %self.addr, "raft rpc failed");
            e.into_rpc()
        })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for TcpNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(APPEND_ENTRIES, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc(INSTALL_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc(VOTE, &rpc, &option).await
    }
}

/// Accepts peers' connections and hands their requests to `raft` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    raft: Raft,
    handler: HandlerSlot,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let raft = raft.clone();
                    let handler = handler.clone();
                    conns.spawn(async move {
                        if let Err(e) = serve_conn(stream, raft, handler).await
                            && e.kind() != io::ErrorKind::UnexpectedEof
                        {
                            tracing::debug!(%peer, error = %e, "raft connection closed");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "raft listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn serve_conn(mut stream: TcpStream, raft: Raft, handler: HandlerSlot) -> io::Result<()> {
    loop {
        let frame = read_frame(&mut stream).await?;
        let (kind, payload) = frame
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "empty frame"))?;
        let reply = match *kind {
            APPEND_ENTRIES => to_json(&raft.append_entries(from_json(payload)?).await)?,
            VOTE => to_json(&raft.vote(from_json(payload)?).await)?,
            INSTALL_SNAPSHOT => to_json(&raft.install_snapshot(from_json(payload)?).await)?,
            FORWARDED_WRITE => {
                let batch: Batch = from_json(payload)?;
                let answer = match raft.client_write(batch).await {
                    Ok(written) => ForwardedWrite::Committed(written.log_id.index),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                        ForwardedWrite::NotLeader(f.leader_id)
                    }
                    Err(e) => ForwardedWrite::Failed(e.to_string()),
                };
                to_json(&answer)?
            }
            JOIN_AS_OBSERVER => to_json(&admit_observer(&raft, from_json(payload)?).await)?,
            CONTROLLER_REQUEST => match handler.get() {
                Some(handle) => handle(payload.to_vec()).await,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "controller request before the controller runs",
                    ));
                }
            },
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown raft request kind {other}"),
                ));
            }
        };
        write_frame(&mut stream, &[&reply]).await?;
    }
}

/// On the leader: makes `join.id` a learner at `join.addr` (or moves it there, when it
/// comes back on another address), so that openraft replicates the log to it.
async fn admit_observer(raft: &Raft, join: JoinRequest) -> Joined {
    let (me, leader, membership) = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        (
            metrics.id,
            metrics.current_leader,
            metrics.membership_config.membership().clone(),
        )
    };
    if leader != Some(me) {
        let known = leader.and_then(|id| Some((id, membership.get_node(&id)?.addr.clone())));
        return Joined::NotLeader(known);
    }
    if membership.voter_ids().any(|v| v == join.id) {
        return Joined::Refused(format!(
            "node {} is a voter of the metadata quorum, not an observer",
            join.id
        ));
    }
    let node = BasicNode::new(join.addr.clone());
    let change = match membership.get_node(&join.id) {
        Some(known) if *known == node => Ok(()),
        Some(_) => raft
            .change_membership(
                openraft::ChangeMembers::SetNodes(std::collections::BTreeMap::from([(
                    join.id, node,
                )])),
                true,
            )
            .await
            .map(drop),
        None => raft.add_learner(join.id, node, false).await.map(drop),
    };
    if let Err(e) = change {
        return Joined::Failed(e.to_string());
    }
    tracing::info!(node = join.id, addr = %join.addr, "replicating the metadata log to an observer");
    match raft
        .with_raft_state(|st| st.committed.map(|l| l.index))
        .await
    {
        Ok(committed) => Joined::Replicating { committed },
        Err(e) => Joined::Failed(e.to_string()),
    }
}

fn from_json<T: DeserializeOwned>(payload: &[u8]) -> io::Result<T> {
    serde_json::from_slice(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn to_json<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_frames_are_refused_before_allocation() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        let err = read_frame(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let big = vec![0u8; MAX_FRAME + 1];
        let err = write_frame(&mut a, &[&big]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &[&[7], b"hello"]).await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap(), b"\x07hello");
        drop(a);
        assert_eq!(
            read_frame(&mut b).await.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
