//! [`MetadataQuorum`]: one node of the metadata quorum.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::log_store::{DEFAULT_SEGMENT_BYTES, LogStore, StoreError};
use crate::network::{ForwardedWrite, HandlerSlot, RequestHandler, TcpNetworkFactory, serve};
use crate::state_machine::{MetadataStateMachine, SmState, SmStore};
use crate::types::{Batch, Raft};

/// The largest `propose` accepted, in record bytes. Metadata records are small; the bound
/// keeps every AppendEntries request (at most `MAX_PAYLOAD_ENTRIES` entries, hex-encoded)
/// well below the network's frame limit.
pub const MAX_PROPOSAL_BYTES: usize = 1 << 20;
/// Entries per AppendEntries request. See [`MAX_PROPOSAL_BYTES`].
const MAX_PAYLOAD_ENTRIES: u64 = 16;

/// How one node of the quorum runs.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    pub node_id: u64,
    /// Where this node listens for its peers.
    pub listen: SocketAddr,
    /// Whether to listen at all: a lone voter that nobody reaches needs no listener.
    pub serve_peers: bool,
    /// Every voter, with the address its peers reach it on. A node that is not among them
    /// is an observer: an openraft learner that receives the log and never votes (Kafka's
    /// broker-only node).
    pub voters: BTreeMap<u64, SocketAddr>,
    /// Where an observer without a voter list asks to join (Kafka's
    /// `controller.quorum.bootstrap.servers`): any voters' addresses.
    pub bootstrap: Vec<SocketAddr>,
    /// Where the log, vote and snapshots live (`<data-dir>/__cluster_metadata-0/`).
    pub dir: PathBuf,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How often the leader sends heartbeats. openraft also uses it as the timeout of
    /// every AppendEntries call, so it must cover a round trip under load: about a third
    /// of `election_timeout_min` is a good value.
    pub heartbeat_interval: Duration,
    /// Entries applied since the last snapshot before a new one is built (and the log
    /// purged up to it).
    pub snapshot_every_n_entries: u64,
    /// Size at which a log segment file is rolled.
    pub log_segment_bytes: u64,
}

impl QuorumConfig {
    /// A config with defaults close to KRaft's (1 s election timeout).
    pub fn new(
        node_id: u64,
        listen: SocketAddr,
        voters: BTreeMap<u64, SocketAddr>,
        dir: impl Into<PathBuf>,
    ) -> QuorumConfig {
        QuorumConfig {
            node_id,
            listen,
            serve_peers: true,
            voters,
            bootstrap: Vec::new(),
            dir: dir.into(),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            // openraft also uses the heartbeat interval as the AppendEntries timeout:
            // keep it well above a loaded round trip.
            heartbeat_interval: Duration::from_millis(300),
            snapshot_every_n_entries: 10_000,
            log_segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }

    /// A single voter that nobody else reaches: this node alone, leader at once.
    pub fn single(node_id: u64, listen: SocketAddr, dir: impl Into<PathBuf>) -> QuorumConfig {
        QuorumConfig {
            serve_peers: false,
            ..QuorumConfig::new(node_id, listen, BTreeMap::from([(node_id, listen)]), dir)
        }
    }

    /// Whether this node only receives the log (it is not a voter).
    pub fn is_observer(&self) -> bool {
        !self.voters.contains_key(&self.node_id)
    }

    fn raft_config(&self) -> Result<Config, QuorumError> {
        if self.voters.is_empty() && self.bootstrap.is_empty() {
            return Err(QuorumError::Config(
                "neither voters nor bootstrap servers: nowhere to find the quorum".into(),
            ));
        }
        if self.is_observer() && !self.serve_peers {
            return Err(QuorumError::Config(format!(
                "node {} is an observer: the leader must reach it, so it needs a listener",
                self.node_id
            )));
        }
        let config = Config {
            cluster_name: "odradek-metadata".to_string(),
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every_n_entries.max(1)),
            // Purge the log right up to each snapshot: a follower further behind gets the
            // snapshot instead.
            max_in_snapshot_log_to_keep: 0,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| QuorumError::Config(e.to_string()))
    }
}

/// What can go wrong with the quorum.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// Only the leader writes. `leader` is who it is, when known, with the address its
    /// peers reach it on.
    #[error("not the metadata quorum leader; the leader is {leader:?}")]
    NotLeader { leader: Option<(u64, SocketAddr)> },
    #[error("invalid quorum config: {0}")]
    Config(String),
    #[error("metadata quorum storage: {0}")]
    Storage(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("a proposal of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the metadata quorum has stopped: {0}")]
    Stopped(String),
    #[error("the metadata quorum: {0}")]
    Raft(String),
    /// Not committed in time: no leader, or a leader without a quorum. The proposal may
    /// still commit later.
    #[error("the metadata quorum: {0}")]
    Timeout(String),
}

/// A snapshot of the quorum's state, as DescribeQuorum needs it. Serializable, so that a
/// node can ask the leader for its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumStatus {
    pub node_id: u64,
    /// The raft term: KRaft's leader epoch.
    pub term: u64,
    pub leader: Option<u64>,
    pub state: ServerState,
    /// The voters of the effective membership, with their addresses.
    pub voters: BTreeMap<u64, SocketAddr>,
    /// The learners of the effective membership (broker-only nodes), with their addresses.
    pub observers: BTreeMap<u64, SocketAddr>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// On the leader: each voter's and observer's last replicated index (None: nothing
    /// matched yet). None on a follower.
    pub matched: Option<BTreeMap<u64, Option<u64>>>,
}

/// One running node of the metadata quorum.
pub struct MetadataQuorum<S> {
    node_id: u64,
    raft: Raft,
    state: Arc<Mutex<SmState<S>>>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
    handler: HandlerSlot,
}

impl<S> Drop for MetadataQuorum<S> {
    /// Stops the listener, whose task holds a raft handle: once every handle is gone,
    /// openraft's core stops too. `shutdown` is the orderly way; this is the fallback.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn parse_addr(node: &BasicNode) -> Option<SocketAddr> {
    node.addr.parse().ok()
}

impl<S: MetadataStateMachine> MetadataQuorum<S> {
    /// Opens the storage under `config.dir`, restores `state_machine` from the snapshot,
    /// binds `config.listen` and joins the quorum. A single voter is leader when this
    /// returns; without `serve_peers` it binds nothing. An observer returns once it has
    /// applied the log as far as the leader had committed it when it joined.
    pub async fn start(
        config: QuorumConfig,
        state_machine: S,
    ) -> Result<MetadataQuorum<S>, QuorumError> {
        if !config.serve_peers {
            return Self::start_serving(config, None, state_machine).await;
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| QuorumError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Self::start_serving(config, Some(listener), state_machine).await
    }

    /// As [`start`](Self::start), on a listener the caller bound (tests bind port 0 first
    /// to learn every node's address).
    pub async fn start_with_listener(
        config: QuorumConfig,
        listener: TcpListener,
        state_machine: S,
    ) -> Result<MetadataQuorum<S>, QuorumError> {
        Self::start_serving(config, Some(listener), state_machine).await
    }

    async fn start_serving(
        config: QuorumConfig,
        listener: Option<TcpListener>,
        state_machine: S,
    ) -> Result<MetadataQuorum<S>, QuorumError> {
        let raft_config = Arc::new(config.raft_config()?);
        let local_addr = match &listener {
            Some(listener) => listener
                .local_addr()
                .map_err(|source| QuorumError::Listen {
                    addr: config.listen,
                    source,
                })?,
            None => config.listen,
        };
        let dir = config.dir.clone();
        let segment_bytes = config.log_segment_bytes;
        let (log, sm) = tokio::task::spawn_blocking(move || {
            let log = LogStore::open(&dir, segment_bytes)?;
            let sm = SmStore::open(&dir, state_machine)?;
            Ok::<_, StoreError>((log, sm))
        })
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))??;
        let state = sm.state.clone();

        let raft = Raft::new(
            config.node_id,
            raft_config,
            TcpNetworkFactory::default(),
            log,
            sm,
        )
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let (stop, stop_rx) = watch::channel(false);
        let handler = HandlerSlot::default();
        let server = listener
            .map(|listener| tokio::spawn(serve(listener, raft.clone(), handler.clone(), stop_rx)));
        let quorum = MetadataQuorum {
            node_id: config.node_id,
            raft,
            state,
            local_addr,
            stop,
            server: Mutex::new(server),
            handler,
        };
        // A node that joined as an observer and was made a voter since starts as the voter
        // its log says it is, whatever its config says.
        // (Asked of openraft's core, which has loaded it: its metrics may not have yet.)
        let node_id = config.node_id;
        let promoted = quorum
            .raft
            .with_raft_state(move |st| {
                st.membership_state
                    .effective()
                    .membership()
                    .voter_ids()
                    .any(|id| id == node_id)
            })
            .await
            .map_err(|e| QuorumError::Stopped(e.to_string()))?;
        let joined = match (config.is_observer(), promoted) {
            (true, false) => quorum.join_as_observer(&config).await,
            (true, true) => Ok(()),
            (false, _) => quorum.initialize(&config).await,
        };
        if let Err(e) = joined {
            quorum.shutdown().await;
            return Err(e);
        }
        Ok(quorum)
    }

    /// Initializes the cluster once. The lowest voter id does it; the others wait for its
    /// vote requests. A node that has a vote or any log (any earlier start did either) is
    /// initialized already and skips this, so restarts never re-initialize.
    async fn initialize(&self, config: &QuorumConfig) -> Result<(), QuorumError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| QuorumError::Stopped(e.to_string()))?;
        let lowest = config.voters.keys().next().copied();
        if !initialized && lowest == Some(config.node_id) {
            let members: BTreeMap<u64, BasicNode> = config
                .voters
                .iter()
                .map(|(&id, addr)| (id, BasicNode::new(addr.to_string())))
                .collect();
            tracing::info!(voters = ?config.voters, "initializing the metadata quorum");
            match self.raft.initialize(members).await {
                Ok(()) => {}
                // Another start got there first (a vote arrived meanwhile): fine.
                Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                    tracing::info!(reason = %e, "metadata quorum already initialized");
                }
                Err(e) => return Err(QuorumError::Raft(e.to_string())),
            }
        } else if !initialized {
            tracing::info!(
                initializer = ?lowest,
                "waiting for the lowest voter to initialize the metadata quorum"
            );
        } else {
            let metrics = self.raft.metrics().borrow().clone();
            let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
            let configured: Vec<u64> = config.voters.keys().copied().collect();
            if voters != configured {
                // Membership changes are not supported yet; the log's membership wins.
                tracing::warn!(
                    ?voters,
                    ?configured,
                    "configured voters differ from the quorum's membership; using the quorum's"
                );
            }
        }
        if config.voters.len() == 1 {
            // A lone voter elects itself without a network round trip; after a restart it
            // need not sit out an election timeout first.
            if initialized {
                self.raft
                    .trigger()
                    .elect()
                    .await
                    .map_err(|e| QuorumError::Stopped(e.to_string()))?;
            }
            self.raft
                .wait(Some(
                    config.election_timeout_max * 10 + Duration::from_secs(5),
                ))
                .state(ServerState::Leader, "single voter becomes leader")
                .await
                .map_err(|e| QuorumError::Raft(e.to_string()))?;
        }
        Ok(())
    }

    /// Asks the voters, the leader first once it is known, to replicate the log to this
    /// node, and waits until it has applied what was committed when the leader agreed.
    /// Retries until a leader agrees: an observer has nothing to serve before that.
    async fn join_as_observer(&self, config: &QuorumConfig) -> Result<(), QuorumError> {
        let request = crate::network::JoinRequest {
            id: config.node_id,
            addr: self.local_addr.to_string(),
        };
        let voters: Vec<String> = if config.voters.is_empty() {
            config.bootstrap.iter().map(|a| a.to_string()).collect()
        } else {
            config.voters.values().map(|a| a.to_string()).collect()
        };
        let mut next: Option<String> = None;
        let mut attempt = 0usize;
        loop {
            let addr = next
                .take()
                .unwrap_or_else(|| voters[attempt % voters.len()].clone());
            attempt += 1;
            let ttl = config.election_timeout_max * 2;
            match crate::network::join(&addr, &request, ttl).await {
                Ok(crate::network::Joined::Replicating { committed }) => {
                    tracing::info!(via = %addr, ?committed, "observing the metadata quorum");
                    self.raft
                        .wait(None)
                        .applied_index_at_least(committed, "an observer catching up")
                        .await
                        .map_err(|e| QuorumError::Raft(e.to_string()))?;
                    return Ok(());
                }
                Ok(crate::network::Joined::NotLeader(leader)) => {
                    next = leader.map(|(_, addr)| addr);
                    // Two nodes that each name the other during an election must not
                    // bounce the request between them at full speed.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(crate::network::Joined::Refused(e)) => {
                    return Err(QuorumError::Config(format!(
                        "the metadata quorum refused this observer: {e}"
                    )));
                }
                Ok(crate::network::Joined::Failed(e)) => {
                    tracing::info!(voter = %addr, error = %e, "the metadata quorum cannot take this observer yet; retrying");
                }
                Err(e) => {
                    // Once, then every 20th try: a quorum that is not up yet is normal at
                    // a cluster's first start.
                    if attempt % 20 == 1 {
                        tracing::warn!(voter = %addr, error = %e, attempt, "cannot reach the metadata quorum yet; retrying");
                    }
                }
            }
            if next.is_none() {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }

    /// Appends `records` as one entry, and returns its log index once it is committed
    /// and applied to the local state machine. Fails with `NotLeader` off the leader.
    ///
    /// As in any Raft, an error after the leader accepted the entry (it lost leadership,
    /// or stopped) does not mean the entry is lost: a later leader may still commit it.
    /// Callers must read the outcome from the applied log, not from the error.
    pub async fn propose(&self, records: Vec<Bytes>) -> Result<u64, QuorumError> {
        let batch = Batch { records };
        let size = batch.data_len();
        if size > MAX_PROPOSAL_BYTES {
            return Err(QuorumError::TooLarge {
                size,
                limit: MAX_PROPOSAL_BYTES,
            });
        }
        match self.raft.client_write(batch).await {
            Ok(resp) => Ok(resp.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_id.and_then(|id| {
                    f.leader_node
                        .as_ref()
                        .and_then(parse_addr)
                        .or_else(|| self.voter_addr(id))
                        .map(|addr| (id, addr))
                });
                Err(QuorumError::NotLeader { leader })
            }
            Err(RaftError::APIError(e)) => Err(QuorumError::Raft(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(QuorumError::Stopped(e.to_string())),
        }
    }

    /// Proposes `records` from any node: on the leader as [`propose`](Self::propose), on a
    /// follower by forwarding them to the leader, retrying across an election until
    /// `timeout`. Returns once the entry is committed and applied on this node too, so a
    /// read of the local state afterwards sees it.
    pub async fn propose_anywhere(
        &self,
        records: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<u64, QuorumError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let batch = Batch { records };
        if batch.data_len() > MAX_PROPOSAL_BYTES {
            return Err(QuorumError::TooLarge {
                size: batch.data_len(),
                limit: MAX_PROPOSAL_BYTES,
            });
        }
        let mut last_error = String::from("no leader is known");
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(QuorumError::Timeout(format!(
                    "no leader took the proposal within {timeout:?}: {last_error}"
                )));
            }
            let index = if self.is_leader() {
                // A leader cut off from its quorum still takes the entry, but never commits
                // it: only the deadline ends the wait.
                match tokio::time::timeout(left, self.propose(batch.records.clone())).await {
                    Ok(Ok(index)) => return Ok(index),
                    Ok(Err(QuorumError::NotLeader { .. })) => None,
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        return Err(QuorumError::Timeout(format!(
                            "not committed within {timeout:?}: this node leads but no quorum \
                             of voters acknowledges it"
                        )));
                    }
                }
            } else if let Some((leader, addr)) = self.leader_with_addr() {
                match crate::network::forward_write(&addr.to_string(), &batch, left).await {
                    Ok(ForwardedWrite::Committed(index)) => Some(index),
                    Ok(ForwardedWrite::NotLeader(_)) => {
                        last_error = format!("node {leader} no longer leads");
                        None
                    }
                    Ok(ForwardedWrite::Failed(e)) => return Err(QuorumError::Raft(e)),
                    Err(e) => {
                        last_error = format!("forwarding to node {leader} at {addr}: {e}");
                        None
                    }
                }
            } else {
                None
            };
            if let Some(index) = index {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.raft
                    .wait(Some(left))
                    .applied_index_at_least(Some(index), "a forwarded write applied here")
                    .await
                    .map_err(|e| QuorumError::Raft(e.to_string()))?;
                return Ok(index);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes observer `id` a voter (KIP-853's AddRaftVoter), on the leader: the node must
    /// have joined (it is a learner, caught up by the leader's replication), and the
    /// change commits through openraft's joint consensus before this returns.
    pub async fn add_voter(&self, id: u64) -> Result<(), QuorumError> {
        let membership = self.membership_if_leading()?;
        if membership.voter_ids().any(|v| v == id) {
            return Ok(());
        }
        if membership.get_node(&id).is_none() {
            return Err(QuorumError::Config(format!(
                "node {id} has not joined the quorum: start it (with the voters as its \
                 bootstrap servers) before making it a voter"
            )));
        }
        self.change_voters(openraft::ChangeMembers::AddVoterIds([id].into()))
            .await
    }

    /// Removes voter `id` (KIP-853's RemoveRaftVoter), on the leader. The node leaves the
    /// membership altogether. The last voter cannot go.
    pub async fn remove_voter(&self, id: u64) -> Result<(), QuorumError> {
        let membership = self.membership_if_leading()?;
        if !membership.voter_ids().any(|v| v == id) {
            return Err(QuorumError::Config(format!("node {id} is not a voter")));
        }
        if membership.voter_ids().count() == 1 {
            return Err(QuorumError::Config(format!(
                "node {id} is the last voter: the quorum cannot go on without one"
            )));
        }
        self.change_voters(openraft::ChangeMembers::RemoveVoters([id].into()))
            .await
    }

    fn membership_if_leading(&self) -> Result<openraft::Membership<u64, BasicNode>, QuorumError> {
        if !self.is_leader() {
            return Err(QuorumError::NotLeader {
                leader: self.leader_with_addr(),
            });
        }
        Ok(self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone())
    }

    async fn change_voters(
        &self,
        change: openraft::ChangeMembers<u64, BasicNode>,
    ) -> Result<(), QuorumError> {
        match self.raft.change_membership(change, false).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(QuorumError::NotLeader {
                    leader: self.leader_with_addr(),
                })
            }
            Err(RaftError::APIError(e)) => Err(QuorumError::Config(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(QuorumError::Stopped(e.to_string())),
        }
    }

    /// Sets what answers [`request_leader`](Self::request_leader) calls on this node
    /// while it leads. Set once; a second call is ignored.
    pub fn set_request_handler(&self, handler: RequestHandler) {
        let _ = self.handler.set(handler);
    }

    /// Sends `payload` to the application's handler on the leader (this node's own, when
    /// it leads) and returns the reply. Fails when no leader is known or it does not answer
    /// within `timeout`; the caller retries (heartbeats are periodic anyway).
    pub async fn request_leader(
        &self,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, QuorumError> {
        if self.is_leader() {
            let handler = self
                .handler
                .get()
                .ok_or_else(|| QuorumError::Raft("no controller handler is set".into()))?;
            return Ok(handler(payload.to_vec()).await);
        }
        let (leader, addr) = self
            .leader_with_addr()
            .ok_or(QuorumError::NotLeader { leader: None })?;
        crate::network::controller_request(&addr.to_string(), payload, timeout)
            .await
            .map_err(|e| {
                QuorumError::Raft(format!(
                    "controller request to node {leader} at {addr}: {e}"
                ))
            })
    }

    fn voter_addr(&self, id: u64) -> Option<SocketAddr> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .and_then(parse_addr)
    }

    /// The leader's id, as this node knows it.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// The leader's id and the address its peers reach it on.
    pub fn leader_with_addr(&self) -> Option<(u64, SocketAddr)> {
        let id = self.leader()?;
        Some((id, self.voter_addr(id)?))
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The address the listener is bound to (the port chosen when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Reads the state machine. Holds the lock openraft applies under: keep it short.
    pub fn with_state<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&state.sm)
    }

    /// Index of the last entry applied to the state machine.
    pub fn last_applied(&self) -> Option<u64> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_applied
            .map(|l| l.index)
    }

    /// Term, leader, voters, log positions and, on the leader, each voter's progress.
    pub async fn status(&self) -> Result<QuorumStatus, QuorumError> {
        let committed = self
            .raft
            .with_raft_state(|st| st.committed.map(|l| l.index))
            .await
            .map_err(|e| QuorumError::Stopped(e.to_string()))?;
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let addresses = |ids: &mut dyn Iterator<Item = u64>| {
            ids.filter_map(|id| Some((id, parse_addr(membership.get_node(&id)?)?)))
                .collect()
        };
        let voters = addresses(&mut membership.voter_ids());
        let observers = addresses(&mut membership.learner_ids());
        Ok(QuorumStatus {
            node_id: self.node_id,
            term: m.current_term,
            leader: m.current_leader,
            state: m.state,
            voters,
            observers,
            last_log_index: m.last_log_index,
            committed_index: committed,
            last_applied_index: m.last_applied.map(|l| l.index),
            matched: m.replication.as_ref().map(|r| {
                r.iter()
                    .map(|(id, matched)| (*id, matched.map(|l| l.index)))
                    .collect()
            }),
        })
    }

    /// Asks for a snapshot now (tests; an operator command later).
    pub async fn trigger_snapshot(&self) -> Result<(), QuorumError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| QuorumError::Stopped(e.to_string()))
    }

    /// The openraft handle, for what this API does not cover (metrics, waits).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Stops raft and the listener. Everything acknowledged is already on disk.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum shutdown");
        }
        let _ = self.stop.send(true);
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            let _ = server.await;
        }
    }
}
