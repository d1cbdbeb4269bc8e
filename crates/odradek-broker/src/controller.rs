//! What the controller does besides agreeing on the log: it tracks which brokers are
//! alive. Brokers register by writing a `BrokerRegistered` record, then heartbeat to the
//! quorum leader (the controller) over the quorum's transport. A broker the controller has
//! not heard from for `broker.session.timeout.ms` is fenced by a `BrokerFenced` record, as
//! KRaft's controller does; its next heartbeat unfences it. Liveness lives only in the
//! leader's memory: a new leader starts every broker's clock afresh, so a change of
//! controller fences no one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use odradek_storage::LockExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use odradek_raft::QuorumStatus;

use crate::Broker;
use crate::metadata::{MetadataError, MetadataRecord};

/// What a broker asks the controller.
#[derive(Debug, Serialize, Deserialize)]
enum ControllerRequest {
    Heartbeat {
        id: i32,
        incarnation: Uuid,
    },
    /// The quorum as its leader sees it (DescribeQuorum, which only the leader can answer,
    /// sent to any node: Kafka's brokers forward it to the controller the same way).
    DescribeQuorum,
    /// Make a node that joined as an observer a voter (`add`), or remove a voter
    /// (AddRaftVoter and RemoveRaftVoter, KIP-853).
    ChangeVoter {
        id: i32,
        add: bool,
    },
    /// A follower's fetcher found broker `id`'s listener refusing connections: its process
    /// is likely gone. The controller checks for itself and fences it at once instead of
    /// waiting out its session, so its partitions fail over in about a second.
    Unreachable {
        id: i32,
        incarnation: Uuid,
    },
}

/// The controller's answers.
#[derive(Debug, Serialize, Deserialize)]
enum ControllerReply {
    /// To a heartbeat: the broker's session goes on.
    Alive,
    /// To a heartbeat: the controller's image has no registration of this incarnation:
    /// register again.
    Unknown,
    Quorum(Box<QuorumStatus>),
    /// To a voter change: committed.
    Done,
    Failed(String),
}

/// The leader's view of when it last heard from each broker.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    /// By broker: the incarnation last heard from, and when.
    seen: Mutex<HashMap<i32, (Uuid, Instant)>>,
    /// Whether this node led at the last check, to restart the clocks when it starts to.
    leading: Mutex<bool>,
    /// When leadership was last rebalanced to preferred replicas (None: not since this
    /// node began to lead).
    rebalanced: Mutex<Option<Instant>>,
}

/// How often the controller looks for brokers past their session timeout.
const FENCING_CHECK: Duration = Duration::from_millis(250);
/// How long a heartbeat may take before it counts as missed.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

impl Broker {
    /// Writes this broker's registration (its incarnation, where clients reach it, its
    /// rack), retrying until it commits or shutdown begins. Until then its partitions have
    /// no leader in other brokers' eyes if an earlier run was fenced.
    pub async fn register(&self) {
        let (host, port) = self.advertised();
        let record = MetadataRecord::BrokerRegistered {
            id: self.node_id,
            incarnation: self.incarnation,
            host,
            port,
            rack: self.config().rack(),
        };
        let mut attempt = 0u32;
        while !*self.stopping.borrow() {
            // With the registration, so that clients of a new (or upgraded) cluster find
            // the features finalized as soon as a broker serves.
            let mut records = vec![record.clone()];
            records.extend(unfinalized_features(&self.logs.image()));
            match self.logs.commit(&records).await {
                Ok(()) => {
                    info!(node = self.node_id, incarnation = %self.incarnation, "registered with the controller");
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    if attempt % 5 == 1 {
                        warn!(error = %e, attempt, "cannot register with the controller yet; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// A controlled shutdown (SIGTERM): the broker fences itself first, so that clients
    /// stop sending to it before it goes, instead of finding out by timeouts.
    pub async fn controlled_shutdown(&self) {
        // Once: heartbeats stop here, so the controller does not unfence this broker again.
        if self.leaving.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let record = MetadataRecord::BrokerFenced {
            id: self.node_id,
            controlled: true,
        };
        let shutdown = tokio::time::timeout(
            Duration::from_secs(5),
            self.logs.commit(std::slice::from_ref(&record)),
        );
        match shutdown.await {
            Ok(Ok(())) => info!("controlled shutdown: fenced, leading nothing"),
            Ok(Err(e)) => warn!(error = %e, "controlled shutdown: cannot reach the controller"),
            Err(_) => warn!("controlled shutdown: the controller did not answer in 5 s"),
        }
    }

    /// Applies every metadata change the quorum commits (other nodes' included) as it
    /// arrives, until shutdown.
    pub async fn run_metadata_follower(self: Arc<Self>) {
        let mut changes = self.logs.metadata().watch();
        let mut stopping = self.stopping.subscribe();
        loop {
            if let Err(e) = tokio::task::block_in_place(|| self.logs.catch_up()) {
                warn!(error = %e, "cannot apply a metadata change");
            }
            self.reconcile_fetchers();
            self.ownership.changed.notify_one();
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// Heartbeats to the controller every `broker.heartbeat.interval.ms` until shutdown;
    /// registers again when the controller does not know this incarnation.
    pub async fn run_heartbeats(self: Arc<Self>) {
        let interval =
            Duration::from_millis(self.config().int("broker.heartbeat.interval.ms").max(1) as u64);
        let request = ControllerRequest::Heartbeat {
            id: self.node_id,
            incarnation: self.incarnation,
        };
        let Ok(payload) = serde_json::to_vec(&request) else {
            return;
        };
        let mut stopping = self.stopping.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            if self.leaving.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let reply = self
                .logs
                .metadata()
                .request_controller(&payload, HEARTBEAT_TIMEOUT)
                .await;
            match reply.map(|r| serde_json::from_slice::<ControllerReply>(&r)) {
                Ok(Ok(ControllerReply::Alive)) => {}
                Ok(Ok(ControllerReply::Unknown)) => self.register().await,
                Ok(Ok(ControllerReply::Failed(e))) => warn!(error = %e, "heartbeat refused"),
                Ok(Ok(other)) => warn!(reply = ?other, "unexpected heartbeat reply"),
                Ok(Err(e)) => warn!(error = %e, "unreadable heartbeat reply"),
                Err(e) => tracing::debug!(error = %e, "heartbeat not delivered"),
            }
        }
    }

    /// Serves heartbeats while this node leads the quorum, fences brokers that stop
    /// sending them, and names the cluster once.
    pub async fn run_controller(self: Arc<Self>) {
        let weak: Weak<Broker> = Arc::downgrade(&self);
        self.logs
            .metadata()
            .set_controller(Arc::new(move |payload: Vec<u8>| {
                let broker = weak.upgrade();
                Box::pin(async move {
                    let reply = match broker {
                        Some(broker) => broker.answer(&payload).await,
                        None => ControllerReply::Failed("shutting down".into()),
                    };
                    serde_json::to_vec(&reply).unwrap_or_default()
                })
            }));
        let mut stopping = self.stopping.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FENCING_CHECK) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            self.lead().await;
        }
    }

    /// The quorum's state as its leader knows it: this node's own when it leads, else the
    /// leader's, asked for over the quorum's transport.
    pub(crate) async fn quorum_status(&self) -> Result<QuorumStatus, MetadataError> {
        let metadata = self.logs.metadata();
        if metadata.is_leader() {
            return metadata.status().await;
        }
        let payload = serde_json::to_vec(&ControllerRequest::DescribeQuorum)
            .map_err(|e| MetadataError::Controller(e.to_string()))?;
        let reply = metadata
            .request_controller(&payload, HEARTBEAT_TIMEOUT)
            .await?;
        match serde_json::from_slice::<ControllerReply>(&reply) {
            Ok(ControllerReply::Quorum(status)) => Ok(*status),
            Ok(other) => Err(MetadataError::Controller(format!(
                "the controller answered {other:?}"
            ))),
            Err(e) => Err(MetadataError::Controller(e.to_string())),
        }
    }

    /// Adds (`add`) or removes voter `id`, on the leader wherever this node is.
    pub(crate) async fn change_voter(&self, id: i32, add: bool) -> Result<(), MetadataError> {
        let metadata = self.logs.metadata();
        if metadata.is_leader() {
            return metadata.change_voter(id, add).await;
        }
        let payload = serde_json::to_vec(&ControllerRequest::ChangeVoter { id, add })
            .map_err(|e| MetadataError::Controller(e.to_string()))?;
        // A joint-consensus change commits twice: give it more than a heartbeat's time.
        let reply = metadata
            .request_controller(&payload, HEARTBEAT_TIMEOUT * 5)
            .await?;
        match serde_json::from_slice::<ControllerReply>(&reply) {
            Ok(ControllerReply::Done) => Ok(()),
            Ok(ControllerReply::Failed(e)) => Err(MetadataError::Controller(e)),
            Ok(other) => Err(MetadataError::Controller(format!(
                "the controller answered {other:?}"
            ))),
            Err(e) => Err(MetadataError::Controller(e.to_string())),
        }
    }

    async fn answer(&self, payload: &[u8]) -> ControllerReply {
        let (id, incarnation) = match serde_json::from_slice::<ControllerRequest>(payload) {
            Ok(ControllerRequest::Heartbeat { id, incarnation }) => (id, incarnation),
            Ok(ControllerRequest::DescribeQuorum) => {
                return match self.logs.metadata().status().await {
                    Ok(status) => ControllerReply::Quorum(Box::new(status)),
                    Err(e) => ControllerReply::Failed(e.to_string()),
                };
            }
            Ok(ControllerRequest::ChangeVoter { id, add }) => {
                return match self.logs.metadata().change_voter(id, add).await {
                    Ok(()) => ControllerReply::Done,
                    Err(e) => ControllerReply::Failed(e.to_string()),
                };
            }
            Ok(ControllerRequest::Unreachable { id, incarnation }) => {
                return self.fence_if_unreachable(id, incarnation).await;
            }
            Err(_) => return ControllerReply::Failed("unreadable controller request".into()),
        };
        let image = self.logs.image();
        let Some(registered) = image
            .brokers
            .get(&id)
            .filter(|b| b.incarnation == incarnation)
        else {
            return ControllerReply::Unknown;
        };
        self.liveness
            .seen
            .lock_or_recover()
            .insert(id, (incarnation, Instant::now()));
        if registered.fenced {
            let record = MetadataRecord::BrokerUnfenced { id, incarnation };
            if let Err(e) = self.logs.commit(&[record]).await {
                return ControllerReply::Failed(e.to_string());
            }
            info!(node = id, "unfenced a broker that heartbeats again");
        }
        ControllerReply::Alive
    }

    /// Fences broker `id` (still at `incarnation`, and not fenced) when its client listener
    /// refuses a connection from here too. A refusal, not a timeout: a slow or cut-off
    /// broker is left to its session timeout, as in Kafka; only a listener that is gone
    /// (the process died, the port is closed) is taken as proof.
    async fn fence_if_unreachable(&self, id: i32, incarnation: Uuid) -> ControllerReply {
        let image = self.logs.image();
        let Some(broker) = image
            .brokers
            .get(&id)
            .filter(|b| b.incarnation == incarnation && !b.fenced && id != self.node_id)
        else {
            return ControllerReply::Done;
        };
        let addr = format!("{}:{}", broker.host, broker.port);
        let probe = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(&addr),
        )
        .await;
        let refused =
            matches!(&probe, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused);
        if !refused {
            return ControllerReply::Done;
        }
        warn!(node = id, %addr, "the broker's listener refuses connections: fencing it now");
        let record = MetadataRecord::BrokerFenced {
            id,
            controlled: false,
        };
        match self.logs.commit(&[record]).await {
            Ok(()) => ControllerReply::Done,
            Err(e) => ControllerReply::Failed(e.to_string()),
        }
    }

    /// Tells the controller that broker `leader`'s listener refused this broker's fetcher.
    pub(crate) async fn report_unreachable(&self, leader: i32) {
        let Some(incarnation) = self
            .logs
            .image()
            .brokers
            .get(&leader)
            .map(|b| b.incarnation)
        else {
            return;
        };
        let request = ControllerRequest::Unreachable {
            id: leader,
            incarnation,
        };
        let Ok(payload) = serde_json::to_vec(&request) else {
            return;
        };
        if let Err(e) = self
            .logs
            .metadata()
            .request_controller(&payload, HEARTBEAT_TIMEOUT)
            .await
        {
            tracing::debug!(leader, error = %e, "cannot report an unreachable leader");
        }
    }

    /// One round of the leader's duties; nothing on a follower.
    async fn lead(&self) {
        let metadata = self.logs.metadata();
        let leading = metadata.is_leader();
        let started = std::mem::replace(&mut *self.liveness.leading.lock_or_recover(), leading);
        if !leading {
            return;
        }
        let image = self.logs.image();
        {
            // Every broker gets a full session from the moment this node starts to lead,
            // and from its registration (a new incarnation).
            let now = Instant::now();
            let mut seen = self.liveness.seen.lock_or_recover();
            if !started {
                seen.clear();
            }
            for b in image.brokers.values() {
                if seen
                    .get(&b.id)
                    .is_none_or(|(incarnation, _)| *incarnation != b.incarnation)
                {
                    seen.insert(b.id, (b.incarnation, now));
                }
            }
        }
        if image.cluster_id.is_none() {
            let record = MetadataRecord::ClusterIdentified {
                id: self.local_cluster_id.clone(),
            };
            if let Err(e) = self.logs.commit(&[record]).await {
                warn!(error = %e, "cannot record the cluster id");
            }
        }
        // For a cluster of dedicated controllers, where no broker has registered yet.
        let unset = unfinalized_features(&image);
        if !unset.is_empty()
            && let Err(e) = self.logs.commit(&unset).await
        {
            warn!(error = %e, "cannot finalize the features");
        }
        let timeout =
            Duration::from_millis(self.config().int("broker.session.timeout.ms").max(1) as u64);
        let expired: Vec<i32> = {
            let seen = self.liveness.seen.lock_or_recover();
            image
                .live_brokers()
                .filter(|b| b.id != self.node_id)
                .filter(|b| seen.get(&b.id).is_none_or(|(_, t)| t.elapsed() > timeout))
                .map(|b| b.id)
                .collect()
        };
        for id in expired {
            warn!(
                node = id,
                ?timeout,
                "no heartbeat within the session timeout: fencing the broker"
            );
            let record = MetadataRecord::BrokerFenced {
                id,
                controlled: false,
            };
            if let Err(e) = self.logs.commit(&[record]).await {
                warn!(node = id, error = %e, "cannot fence the broker");
            }
        }
        self.complete_reassignments().await;
        self.rebalance_leaders(started).await;
    }

    /// Finishes every reassignment whose added replicas are all in sync: the replicas being
    /// removed go.
    async fn complete_reassignments(&self) {
        let image = self.logs.image();
        let done: Vec<MetadataRecord> = image
            .topics()
            .flat_map(|t| {
                t.placement
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.reassignment_caught_up())
                    .map(|(index, p)| MetadataRecord::ReassignmentCompleted {
                        id: t.id,
                        partition: index as i32,
                        partition_epoch: p.partition_epoch,
                    })
            })
            .collect();
        if done.is_empty() {
            return;
        }
        info!(partitions = done.len(), "completing reassignments");
        if let Err(e) = self.logs.commit(&done).await {
            warn!(error = %e, "cannot complete reassignments");
        }
    }

    /// Kafka's auto leader rebalance (`auto.leader.rebalance.enable`): every
    /// `leader.imbalance.check.interval.seconds`, leadership goes back to preferred replicas
    /// of brokers that lead too few of their preferred partitions (after a restart, say).
    async fn rebalance_leaders(&self, was_leading: bool) {
        let config = self.config();
        if !config.auto_leader_rebalance() {
            return;
        }
        let interval = Duration::from_secs(
            config.int("leader.imbalance.check.interval.seconds").max(1) as u64,
        );
        {
            let mut last = self.liveness.rebalanced.lock_or_recover();
            // The first check comes a full interval after this node began to lead.
            let due = was_leading && last.is_some_and(|at| at.elapsed() >= interval);
            if due || !was_leading || last.is_none() {
                *last = Some(Instant::now());
            }
            if !due {
                return;
            }
        }
        let elections = self
            .logs
            .image()
            .preferred_elections(config.int("leader.imbalance.per.broker.percentage"));
        if elections.is_empty() {
            return;
        }
        info!(
            partitions = elections.len(),
            "moving leadership back to preferred replicas"
        );
        if let Err(e) = self.logs.commit(&elections).await {
            warn!(error = %e, "cannot rebalance leadership");
        }
    }
}

/// Records that finalize the features this release serves and the cluster has not
/// finalized yet, at their default levels: once, when a cluster first starts (Kafka's
/// `kafka-storage format` does it before). Proposed by whichever node gets there first; a
/// second proposal sets the same levels again.
fn unfinalized_features(image: &crate::metadata::MetadataImage) -> Vec<MetadataRecord> {
    crate::handlers::api_versions::FEATURES
        .iter()
        .filter(|f| !image.features.contains_key(f.name))
        .map(|f| MetadataRecord::FeatureLevel {
            name: f.name.to_string(),
            level: f.finalized,
        })
        .collect()
}
