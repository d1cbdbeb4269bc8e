//! The broker: decodes each request, checks its version against what is supported, and
//! routes it to its handler. Handlers live in `handlers/`, one module per API family.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use odradek_protocol::codec::{self, DecodeError};
use odradek_protocol::response::ResponseFrame;
use tracing::{debug, warn};

use crate::config::BrokerConfig;
use crate::coordinator::GroupCoordinator;
use crate::coordinator::transactions::TransactionCoordinator;
use crate::handlers::fetch::FetchSessions;
use crate::log_manager::{LogManager, Partition, Topic, TopicError};

/// API keys and the version ranges Odradek implements; ApiVersions advertises exactly these.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    // Kafka 4 serves v2+ (KIP-896 removed the older ones).
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::AddRaftVoter, 0, 0),
    (ApiKey::RemoveRaftVoter, 0, 0),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::InitProducerId, 0, 5),
    // v4+ are the broker-to-broker (KIP-890) form; clients use v3 and below.
    (ApiKey::AddPartitionsToTxn, 0, 4),
    // The next versions of these three are transaction version 2 (KIP-890 part 2), which
    // clients use only when the broker advertises the `transaction.version` feature.
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
    // No authorizer yet: answered with SECURITY_DISABLED, as Kafka does without one.
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
];

pub fn supported_range(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == api_key)
        .map(|&(_, min, max)| (min, max))
}

/// Who sent a request, for handlers that record it (group members).
pub(crate) struct RequestContext {
    pub version: i16,
    pub client_id: String,
    pub client_host: String,
}

/// A response still being produced: a produce waiting for its fsync, a parked fetch.
/// It yields the encoded frame (empty when Kafka sends nothing back), or `None` when the
/// response cannot be encoded and the connection must close rather than leave the client
/// waiting forever.
pub type PendingResponse = Pin<Box<dyn Future<Output = Option<ResponseFrame>> + Send>>;

/// What a handler returns.
pub enum Reply {
    Now(Box<ResponseKind>),
    Later(Pin<Box<dyn Future<Output = ResponseKind> + Send>>),
    /// acks=0 produce: Kafka sends nothing back.
    Nothing,
}

impl Reply {
    pub(crate) fn now(body: ResponseKind) -> Self {
        Self::Now(Box::new(body))
    }
}

/// Why a connection must be closed instead of answered, as Kafka closes it.
#[derive(Debug, thiserror::Error)]
pub enum CloseConnection {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{api_key:?} v{version} is not supported (supported: {range})")]
    UnsupportedVersion {
        api_key: ApiKey,
        version: i16,
        range: String,
    },
    #[error("{0:?} is advertised but has no handler")]
    NoHandler(ApiKey),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadMetaProperties { path: PathBuf, reason: String },
    #[error(
        "{path} is locked: another process (a running broker or repair) uses this data directory"
    )]
    DataDirInUse { path: PathBuf },
}

/// Kafka's `.lock`: held for as long as a process uses the data directory, so that two
/// brokers, or a broker and `odradek repair`, never change it at once. The OS releases it
/// when the process dies, so a `kill -9` leaves nothing to clean up.
pub fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StartError> {
    let path = data_dir.join(".lock");
    let io = |source| StartError::Io {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::DataDirInUse { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

pub struct Broker {
    pub(crate) node_id: i32,
    /// New on every start: tells the controller this run from an earlier one.
    pub(crate) incarnation: uuid::Uuid,
    pub(crate) liveness: crate::controller::Liveness,
    /// Set by a controlled shutdown: this broker is leaving and heartbeats no more.
    pub(crate) leaving: std::sync::atomic::AtomicBool,
    /// The cluster id in this data dir's `meta.properties`.
    pub(crate) local_cluster_id: String,
    /// Where the client listener is bound: what clients are told unless
    /// `advertised.listeners` (a per-broker dynamic config) says otherwise.
    bound: std::sync::OnceLock<std::net::SocketAddr>,
    pub(crate) logs: LogManager,
    pub(crate) fetch_sessions: FetchSessions,
    pub(crate) fetchers: crate::replication::fetcher::ReplicaFetchers,
    pub(crate) replication_quotas: crate::replication::throttle::ReplicationQuotas,
    /// ISR changes asked for by follower fetches, and their receiver until
    /// `run_replication` takes it.
    pub(crate) isr_changes: crate::replication::isr::IsrChanges,
    isr_changes_rx: std::sync::Mutex<
        Option<tokio::sync::mpsc::UnboundedReceiver<crate::replication::isr::IsrChange>>,
    >,
    /// `fetch.max.bytes`: a static config every fetch consults, so read once.
    pub(crate) fetch_max_bytes: usize,
    pub(crate) coordinator: GroupCoordinator,
    /// The coordinator partitions loaded here.
    pub(crate) ownership: crate::coordinator::ownership::Ownership,
    pub(crate) txn: TransactionCoordinator,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub(crate) started: std::time::Instant,
    /// Set once shutdown begins; parked fetches return at once instead of waiting out
    /// `max_wait_ms`.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    pub(crate) data_dir: PathBuf,
    _data_dir_lock: std::fs::File,
}

/// Marks a data directory whose logs were all synced and closed: recovery can trust it.
const CLEAN_SHUTDOWN_FILE: &str = ".odradek_cleanshutdown";

impl Broker {
    /// Opens the data directory, recovering it if the last run did not stop cleanly.
    pub fn open(config: BrokerConfig) -> Result<Self, StartError> {
        let data_dir = config.data_dir();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StartError::Io { path, source }
        };
        std::fs::create_dir_all(&data_dir).map_err(io(&data_dir))?;
        let data_dir_lock = lock_data_dir(&data_dir)?;
        let node_id = config.node_id();
        let cluster_id = load_or_create_meta_properties(&data_dir, node_id)?;
        let marker = data_dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        if !clean {
            debug!(dir = %data_dir.display(), "no clean-shutdown marker: recovering logs");
        }
        let coordinator = GroupCoordinator::new(&config);
        let txn = TransactionCoordinator::new(&config);
        let fetch_max_bytes = config.fetch_max_bytes();
        let metrics = Arc::new(crate::metrics::Metrics::new(
            config.int("metrics.partition.detail.max").max(0) as usize,
        ));
        let logs = LogManager::open(&data_dir, config, clean)?;
        let observed = metrics.clone();
        logs.group_commit().observe(Box::new(move |took, waiters| {
            observed.fsync_seconds.observe(took.as_secs_f64());
            observed.group_commit_waiters.observe(waiters as f64);
        }));
        // From here on the logs change; a crash must trigger recovery next time.
        if clean {
            std::fs::remove_file(&marker).map_err(io(&marker))?;
            sync_dir(&data_dir).map_err(io(&data_dir))?;
        }
        let (isr_changes, isr_changes_rx) = tokio::sync::mpsc::unbounded_channel();
        let broker = Self {
            node_id,
            local_cluster_id: cluster_id,
            incarnation: uuid::Uuid::new_v4(),
            liveness: crate::controller::Liveness::default(),
            leaving: std::sync::atomic::AtomicBool::new(false),
            bound: std::sync::OnceLock::new(),
            logs,
            fetch_sessions: FetchSessions::default(),
            fetchers: Default::default(),
            replication_quotas: Default::default(),
            isr_changes,
            isr_changes_rx: std::sync::Mutex::new(Some(isr_changes_rx)),
            fetch_max_bytes,
            coordinator,
            ownership: Default::default(),
            txn,
            metrics,
            started: std::time::Instant::now(),
            stopping: tokio::sync::watch::Sender::new(false),
            data_dir,
            _data_dir_lock: data_dir_lock,
        };
        Ok(broker)
    }

    /// A snapshot of the broker's configuration (dynamic changes swap it).
    pub fn config(&self) -> Arc<BrokerConfig> {
        self.logs.broker_config()
    }

    /// Tells the broker where its listener is bound. Unless `advertised.listeners` says
    /// otherwise, clients are sent to this address (which matters for port 0).
    pub fn set_bound_address(&self, bound: std::net::SocketAddr) {
        let _ = self.bound.set(bound);
    }

    /// The host and port clients are told to connect to: `advertised.listeners` as it is now
    /// (it can change at run time), else the bound listener.
    pub(crate) fn advertised(&self) -> (String, i32) {
        let config = self.config();
        if config.advertised_listeners_set()
            && let Ok(advertised) = config.advertised_addr()
        {
            return advertised;
        }
        let bound = self
            .bound
            .get()
            .copied()
            .or_else(|| config.listen_addr().ok())
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9092)));
        (bound.ip().to_string(), i32::from(bound.port()))
    }

    /// The leader's side of replication until shutdown: ISR changes that followers' fetches
    /// ask for, the expiry of followers that fell behind, the handoff of partitions whose
    /// log went offline, and the coordinator partitions that follow leadership.
    pub async fn run_replication(self: Arc<Self>) {
        let Some(changes) = odradek_storage::LockExt::lock_or_recover(&self.isr_changes_rx).take()
        else {
            return;
        };
        tokio::join!(
            self.clone().run_isr_changes(changes),
            self.clone().run_isr_expiration(),
            self.clone().run_offline_handoff(),
            self.clone().run_coordinator_ownership()
        );
    }

    /// Starts a shutdown: parked requests complete now.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Requests a background flush of every log whose `flush.ms` has passed. Kafka's
    /// `log.flush.scheduler.interval.ms` paces this loop, checked at least once a second.
    pub async fn run_flush_scheduler(self: Arc<Self>) {
        let configured = self.config().flush_scheduler_interval_ms();
        let period = std::time::Duration::from_millis(configured.clamp(1, 1000) as u64);
        self.every(period, || {
            let now = odradek_storage::now_ms();
            for topic in self.logs.topics() {
                for partition in &topic.partitions {
                    let overdue = partition
                        .lock_log()
                        .is_some_and(|log| log.flush_overdue(now));
                    if overdue {
                        self.logs.sync(partition, None);
                    }
                }
            }
            std::future::ready(())
        })
        .await;
    }

    /// Writes every log's recovery point every `log.flush.offset.checkpoint.interval.ms`
    /// (Kafka's interval for its recovery-point checkpoint), on the blocking pool.
    pub async fn run_recovery_checkpoints(self: Arc<Self>) {
        let interval = self.config().int("log.flush.offset.checkpoint.interval.ms");
        if interval <= 0 {
            return;
        }
        let period = std::time::Duration::from_millis(interval as u64);
        self.every(period, || async {
            self.on_every_partition_blocking(|topic, partition| {
                let Some(log) = partition.shared_log() else {
                    return;
                };
                if let Err(e) = odradek_storage::Log::checkpoint_recovery_point(log) {
                    warn!(topic = %topic.name, partition = partition.index, error = %e, "cannot write the recovery point");
                }
            })
            .await;
            if let Err(e) = tokio::task::block_in_place(|| self.logs.checkpoint_high_watermarks()) {
                warn!(error = %e, "cannot checkpoint the high watermarks");
            }
        })
        .await;
    }

    /// Runs `work` on every partition, on the blocking pool: for file I/O (fsyncs, freeing
    /// deleted segments) that must not stall the runtime's workers and every connection on
    /// them.
    async fn on_every_partition_blocking(
        self: &Arc<Self>,
        work: impl Fn(&Topic, &Partition) + Send + 'static,
    ) {
        let broker = self.clone();
        let round = tokio::task::spawn_blocking(move || {
            for topic in broker.logs.topics() {
                for partition in &topic.partitions {
                    work(&topic, partition);
                }
            }
        });
        let _ = round.await;
    }

    /// Calls `task` every `period` until shutdown begins.
    pub(crate) async fn every<F: Future<Output = ()>>(
        &self,
        period: std::time::Duration,
        mut task: impl FnMut() -> F,
    ) {
        let mut stopping = self.stopping.subscribe();
        let mut ticks = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            task().await;
        }
    }

    /// Deletes segments past `retention.ms` / `retention.bytes` every
    /// `log.retention.check.interval.ms`, as Kafka's log manager does.
    pub async fn run_retention(self: Arc<Self>) {
        let period = std::time::Duration::from_millis(
            self.config().retention_check_interval_ms().max(1) as u64,
        );
        self.every(period, || {
            let now = odradek_storage::now_ms();
            self.on_every_partition_blocking(move |topic, partition| {
                let Some(mut log) = partition.lock_log() else { return };
                let deleted = log.enforce_retention(now);
                drop(log);
                if let Err(e) = deleted {
                    tracing::warn!(topic = %topic.name, partition = partition.index, error = %e, "retention failed");
                }
            })
        })
        .await;
    }

    /// Runs the log cleaner over every compacted log, pausing `log.cleaner.backoff.ms`
    /// between passes, as Kafka's cleaner thread does. Cleaning is blocking file I/O, so each
    /// round runs on the blocking pool; shutdown stops a pass between batches (its output is
    /// discarded, never half-applied).
    pub async fn run_cleaner(self: Arc<Self>) {
        if !self.config().cleaner_enabled() {
            return;
        }
        let backoff =
            std::time::Duration::from_millis(self.config().cleaner_backoff_ms().max(1) as u64);
        let mut stopping = self.stopping.subscribe();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut cleaner = Some(odradek_storage::Cleaner::new(
            self.config().cleaner_dedupe_buffer_size(),
        ));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let Some(mut c) = cleaner.take() else { return };
            let (broker, flag) = (self.clone(), stop.clone());
            let round = tokio::task::spawn_blocking(move || {
                broker.clean_round(&mut c, &flag);
                c
            });
            tokio::select! {
                done = round => match done {
                    Ok(c) => cleaner = Some(c),
                    Err(e) => {
                        warn!(error = %e, "log cleaner stopped");
                        return;
                    }
                },
                _ = stopping.wait_for(|s| *s) => {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    fn clean_round(
        &self,
        cleaner: &mut odradek_storage::Cleaner,
        stop: &std::sync::atomic::AtomicBool,
    ) {
        for topic in self.logs.topics() {
            if !topic.settings.log.compact {
                continue;
            }
            for partition in &topic.partitions {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let now = odradek_storage::now_ms();
                let Some(log) = partition.shared_log() else {
                    continue;
                };
                if let Err(e) = cleaner.clean(log, now, stop) {
                    warn!(topic = %topic.name, partition = partition.index, error = %e, "log cleaning failed");
                }
            }
        }
    }

    /// Expires group members whose session timed out and completes rebalances whose
    /// deadline passed. Kafka keeps these timers in a purgatory; a 100 ms sweep is as
    /// precise as session timeouts need.
    pub async fn run_group_sweeper(self: Arc<Self>) {
        self.every(std::time::Duration::from_millis(100), || {
            self.sweep_groups();
            std::future::ready(())
        })
        .await;
    }

    /// Runs the transaction coordinator's timers (see `sweep_transactions`); the first
    /// round, at start-up, finishes transactions a crash left half-ended.
    pub async fn run_transaction_sweeper(self: Arc<Self>) {
        let period = std::time::Duration::from_millis(self.txn.limits.abort_interval_ms as u64);
        self.every(period, || self.sweep_transactions()).await;
    }

    /// Flushes and closes all logs, then writes the clean-shutdown marker.
    pub fn shutdown(&self) -> Result<(), StartError> {
        self.logs.close_all().map_err(TopicError::from)?;
        let marker = self.data_dir.join(CLEAN_SHUTDOWN_FILE);
        let io = |source| StartError::Io {
            path: marker.clone(),
            source,
        };
        std::fs::write(&marker, b"").map_err(io)?;
        sync_dir(&self.data_dir).map_err(io)?;
        Ok(())
    }

    /// Handles one request frame. The in-order part of the work (appends, metadata changes)
    /// is done before this returns; what is left (waiting for fsync or for data) is the
    /// returned future, so a connection can keep reading while responses wait their turn.
    pub async fn dispatch(
        self: &Arc<Self>,
        frame: Bytes,
        peer: std::net::SocketAddr,
    ) -> Result<PendingResponse, CloseConnection> {
        let request = codec::decode_header(frame)?;
        let api_key = request.api_key;
        let version = request.header.request_api_version;
        let correlation_id = request.header.correlation_id;
        let reply = match supported_range(api_key) {
            Some((min, max)) if (min..=max).contains(&version) => {
                let body = codec::decode_body(&request)?;
                let context = RequestContext {
                    version,
                    client_id: request
                        .header
                        .client_id
                        .as_ref()
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    client_host: format!("/{}", peer.ip()),
                };
                self.handle(body, &context)
                    .await
                    .ok_or(CloseConnection::NoHandler(api_key))?
            }
            // Kafka answers an ApiVersions it cannot parse with its own range at v0 so the
            // client can downgrade; any other unsupported version closes the connection.
            _ if api_key == ApiKey::ApiVersions => {
                let response = self.api_versions_response(
                    kafka_protocol::ResponseError::UnsupportedVersion.code(),
                );
                return Ok(encoded(
                    api_key,
                    0,
                    correlation_id,
                    ResponseKind::ApiVersions(response),
                ));
            }
            range => {
                return Err(CloseConnection::UnsupportedVersion {
                    api_key,
                    version,
                    range: range.map_or("none".into(), |(a, b)| format!("{a}-{b}")),
                });
            }
        };
        let metrics = self.metrics.clone();
        Ok(match reply {
            Reply::Now(body) => {
                metrics.count_errors(api_key, &body);
                encoded(api_key, version, correlation_id, *body)
            }
            Reply::Later(future) => Box::pin(async move {
                let body = future.await;
                metrics.count_errors(api_key, &body);
                encode_or_log(api_key, version, correlation_id, &body)
            }),
            Reply::Nothing => Box::pin(async { Some(ResponseFrame::default()) }),
        })
    }

    /// Routes a decoded request; `None` for a request type without a handler.
    async fn handle(
        self: &Arc<Self>,
        body: RequestKind,
        context: &RequestContext,
    ) -> Option<Reply> {
        let version = context.version;
        Some(match body {
            RequestKind::ApiVersions(r) => {
                Reply::now(ResponseKind::ApiVersions(self.api_versions(&r, version)))
            }
            RequestKind::Metadata(r) => {
                Reply::now(ResponseKind::Metadata(self.metadata(r, version).await))
            }
            RequestKind::Produce(r) => {
                self.verify_with_coordinator(&r).await;
                self.produce(r, version)
            }
            RequestKind::Fetch(r) => self.fetch(r, version),
            RequestKind::ListOffsets(r) => {
                Reply::now(ResponseKind::ListOffsets(self.list_offsets(r, version)))
            }
            RequestKind::OffsetForLeaderEpoch(r) => Reply::now(ResponseKind::OffsetForLeaderEpoch(
                self.offset_for_leader_epoch(r),
            )),
            RequestKind::CreateTopics(r) => Reply::now(ResponseKind::CreateTopics(
                self.create_topics(r, version).await,
            )),
            RequestKind::DeleteTopics(r) => Reply::now(ResponseKind::DeleteTopics(
                self.delete_topics(r, version).await,
            )),
            RequestKind::CreatePartitions(r) => Reply::now(ResponseKind::CreatePartitions(
                self.create_partitions(r).await,
            )),
            RequestKind::DescribeConfigs(r) => Reply::now(ResponseKind::DescribeConfigs(
                self.describe_configs(r, version),
            )),
            RequestKind::DescribeLogDirs(r) => {
                Reply::now(ResponseKind::DescribeLogDirs(self.describe_log_dirs(r)))
            }
            RequestKind::AlterReplicaLogDirs(r) => Reply::now(ResponseKind::AlterReplicaLogDirs(
                self.alter_replica_log_dirs(r),
            )),
            RequestKind::DescribeQuorum(r) => Reply::now(ResponseKind::DescribeQuorum(
                self.describe_quorum(r, version).await,
            )),
            RequestKind::AddRaftVoter(r) => {
                let (code, message) = self
                    .change_raft_voter(r.cluster_id.as_deref(), r.voter_id, true)
                    .await;
                Reply::now(ResponseKind::AddRaftVoter(
                    kafka_protocol::messages::AddRaftVoterResponse::default()
                        .with_error_code(code)
                        .with_error_message(message),
                ))
            }
            RequestKind::RemoveRaftVoter(r) => {
                let (code, message) = self
                    .change_raft_voter(r.cluster_id.as_deref(), r.voter_id, false)
                    .await;
                Reply::now(ResponseKind::RemoveRaftVoter(
                    kafka_protocol::messages::RemoveRaftVoterResponse::default()
                        .with_error_code(code)
                        .with_error_message(message),
                ))
            }
            RequestKind::DescribeCluster(r) => {
                Reply::now(ResponseKind::DescribeCluster(self.describe_cluster(r)))
            }
            RequestKind::DescribeTopicPartitions(r) => Reply::now(
                ResponseKind::DescribeTopicPartitions(self.describe_topic_partitions(r)),
            ),
            RequestKind::FindCoordinator(r) => Reply::now(ResponseKind::FindCoordinator(
                self.find_coordinator(r, version).await,
            )),
            RequestKind::JoinGroup(r) => self.join_group(r, context).await,
            RequestKind::SyncGroup(r) => self.sync_group(r, version),
            RequestKind::Heartbeat(r) => Reply::now(ResponseKind::Heartbeat(self.heartbeat(r))),
            RequestKind::LeaveGroup(r) => {
                Reply::now(ResponseKind::LeaveGroup(self.leave_group(r, version)))
            }
            RequestKind::OffsetCommit(r) => self.offset_commit(r).await,
            RequestKind::OffsetFetch(r) => {
                Reply::now(ResponseKind::OffsetFetch(self.offset_fetch(r, version)))
            }
            RequestKind::ListGroups(r) => Reply::now(ResponseKind::ListGroups(self.list_groups(r))),
            RequestKind::DescribeGroups(r) => Reply::now(ResponseKind::DescribeGroups(
                self.describe_groups(r, version),
            )),
            RequestKind::DeleteGroups(r) => self.delete_groups(r).await,
            RequestKind::OffsetDelete(r) => self.offset_delete(r).await,
            // Moving the log start is written durably (two fsyncs per partition) before
            // the answer: the worker's other tasks move elsewhere meanwhile.
            RequestKind::DeleteRecords(r) => Reply::now(ResponseKind::DeleteRecords(
                tokio::task::block_in_place(|| self.delete_records(r)),
            )),
            RequestKind::AlterConfigs(r) => {
                Reply::now(ResponseKind::AlterConfigs(self.alter_configs(r).await))
            }
            RequestKind::IncrementalAlterConfigs(r) => Reply::now(
                ResponseKind::IncrementalAlterConfigs(self.incremental_alter_configs(r).await),
            ),
            RequestKind::ConsumerGroupHeartbeat(r) => {
                Reply::now(ResponseKind::ConsumerGroupHeartbeat(
                    self.consumer_group_heartbeat(r, context).await,
                ))
            }
            RequestKind::ConsumerGroupDescribe(r) => Reply::now(
                ResponseKind::ConsumerGroupDescribe(self.consumer_group_describe(r)),
            ),
            RequestKind::InitProducerId(r) => {
                Reply::now(ResponseKind::InitProducerId(self.init_producer_id(r).await))
            }
            RequestKind::AddPartitionsToTxn(r) => Reply::now(ResponseKind::AddPartitionsToTxn(
                self.add_partitions_to_txn(r, version).await,
            )),
            RequestKind::AddOffsetsToTxn(r) => Reply::now(ResponseKind::AddOffsetsToTxn(
                self.add_offsets_to_txn(r).await,
            )),
            RequestKind::EndTxn(r) => Reply::now(ResponseKind::EndTxn(self.end_txn(r).await)),
            RequestKind::TxnOffsetCommit(r) => Reply::now(ResponseKind::TxnOffsetCommit(
                self.txn_offset_commit(r, version).await,
            )),
            RequestKind::WriteTxnMarkers(r) => Reply::now(ResponseKind::WriteTxnMarkers(
                self.write_txn_markers(r).await,
            )),
            RequestKind::DescribeTransactions(r) => Reply::now(ResponseKind::DescribeTransactions(
                self.describe_transactions(r).await,
            )),
            RequestKind::ListTransactions(r) => Reply::now(ResponseKind::ListTransactions(
                self.list_transactions(r).await,
            )),
            RequestKind::DescribeAcls(r) => {
                Reply::now(ResponseKind::DescribeAcls(self.describe_acls(r)))
            }
            RequestKind::CreateAcls(r) => Reply::now(ResponseKind::CreateAcls(self.create_acls(r))),
            RequestKind::DeleteAcls(r) => Reply::now(ResponseKind::DeleteAcls(self.delete_acls(r))),
            RequestKind::ElectLeaders(r) => {
                Reply::now(ResponseKind::ElectLeaders(self.elect_leaders(r).await))
            }
            RequestKind::AlterPartitionReassignments(r) => {
                Reply::now(ResponseKind::AlterPartitionReassignments(
                    self.alter_partition_reassignments(r).await,
                ))
            }
            RequestKind::ListPartitionReassignments(r) => Reply::now(
                ResponseKind::ListPartitionReassignments(self.list_partition_reassignments(r)),
            ),
            RequestKind::DescribeProducers(r) => {
                Reply::now(ResponseKind::DescribeProducers(self.describe_producers(r)))
            }
            // Unreachable while SUPPORTED_APIS and this match agree.
            _ => return None,
        })
    }
}

fn encode_or_log(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Option<ResponseFrame> {
    match codec::encode_response(api_key, version, correlation_id, body) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            warn!(error = %e, correlation_id, "cannot encode response; closing the connection");
            None
        }
    }
}

fn encoded(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: ResponseKind,
) -> PendingResponse {
    let bytes = encode_or_log(api_key, version, correlation_id, &body);
    Box::pin(async move { bytes })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the cluster id from Kafka's `meta.properties`, creating the file on first start.
fn load_or_create_meta_properties(data_dir: &Path, node_id: i32) -> Result<String, StartError> {
    let path = data_dir.join("meta.properties");
    let bad = |reason: String| StartError::BadMetaProperties {
        path: path.clone(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let props = crate::config::parse_properties(&text).map_err(|e| bad(e.to_string()))?;
            let get = |k: &str| {
                props
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            if let Some(stored) = get("node.id").and_then(|v| v.parse::<i32>().ok())
                && stored != node_id
            {
                return Err(bad(format!(
                    "data directory belongs to node {stored}, not node {node_id}"
                )));
            }
            get("cluster.id").ok_or_else(|| bad("no cluster.id".into()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cluster_id = new_cluster_id();
            let text = format!(
                "# Written by Odradek on first start.\nversion=1\nnode.id={node_id}\ncluster.id={cluster_id}\n"
            );
            let tmp = data_dir.join("meta.properties.tmp");
            let io = |source| StartError::Io {
                path: path.clone(),
                source,
            };
            std::fs::write(&tmp, text).map_err(io)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            sync_dir(data_dir).map_err(io)?;
            Ok(cluster_id)
        }
        Err(source) => Err(StartError::Io { path, source }),
    }
}

/// A Kafka-style cluster id: a random UUID in URL-safe base64 without padding.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = String::new();
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}
