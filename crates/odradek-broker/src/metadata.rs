//! Cluster metadata as a log of records applied to an in-memory image, after Kafka's KRaft
//! `__cluster_metadata`. Today the log is a local file; in the cluster phase the same records
//! go through consensus, and every broker replays them into the same image.
//!
//! File format: a sequence of `[len: u32][crc32c: u32][JSON record]`. A record is durable
//! once `append` returns (the file is fsync'd). On start-up only a torn tail, the trace of
//! a crash mid-append, is cut off: that record was never acknowledged. Damage with intact
//! records after it is no crash's trace (appends only ever add at the end), so start-up
//! refuses it rather than drop every later record; `odradek repair metadata` drops only the
//! damaged bytes, when asked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

pub use odradek_raft::LogRepair;
use serde::{Deserialize, Serialize};
use tracing::warn;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "metadata log {path} is damaged at byte {position}, and intact records follow at byte \
         {next_intact}: start-up stopped so that no topic is lost. `odradek repair metadata \
         --data-dir {data_dir}` shows what a repair would drop; add --apply to repair"
    )]
    Damaged {
        path: PathBuf,
        position: u64,
        next_intact: u64,
        data_dir: PathBuf,
    },
    #[error(
        "{source}: start-up stopped so that no topic is lost. `odradek repair metadata \
         --data-dir {data_dir}` shows what a repair would drop; add --apply to repair"
    )]
    QuorumLogDamaged {
        source: odradek_raft::StoreError,
        data_dir: PathBuf,
    },
    #[error(transparent)]
    Quorum(#[from] odradek_raft::QuorumError),
    /// The controller's answer could not be had or read.
    #[error("the controller: {0}")]
    Controller(String),
    #[error("metadata log {path}: record at byte {position} cannot be decoded: {reason}")]
    Decode {
        path: PathBuf,
        position: u64,
        reason: String,
    },
}

/// A change to cluster metadata.
///
/// Records that several nodes may propose at once carry what their proposer saw (a
/// topic's name, the partition count, the producer-id block), and the image applies a
/// record only when that still holds. Every node applies the same log the same way, so a
/// lost race is a record that changed nothing; its proposer reads the image to learn so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// Applied only when no topic has the name yet.
    TopicCreated {
        name: String,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
        /// Each partition's replicas, in preference order (the first is the preferred
        /// leader). Empty in records written before the cluster: their partitions live on
        /// the one node there was.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replicas: Vec<Vec<i32>>,
    },
    /// Grows a topic to `partitions`. Applied only when it still has `from` partitions
    /// (when `from` is given): `replicas` places partitions `from..partitions`.
    PartitionsAdded {
        id: Uuid,
        partitions: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<i32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replicas: Vec<Vec<i32>>,
    },
    TopicDeleted {
        id: Uuid,
    },
    /// A topic's config overrides, replaced as a whole.
    TopicConfigsChanged {
        id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// A dynamic broker config layer, replaced as a whole: one broker's (`node`) or the
    /// cluster-wide default (`node` = None).
    BrokerConfigsChanged {
        node: Option<i32>,
        configs: BTreeMap<String, String>,
    },
    /// Producer ids below `next` have been handed out (or reserved in a block), as Kafka's
    /// `ProducerIdsRecord`: ids are never reused across restarts. With `from`, applied only
    /// while `from` is still the first unreserved id, and the block `from..next` is then
    /// `owner`'s.
    ProducerIdsReserved {
        next: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<i32>,
    },
    /// A broker started (Kafka's `RegisterBrokerRecord`): it is unfenced and serves its
    /// partitions. `incarnation` is new on every start.
    BrokerRegistered {
        id: i32,
        incarnation: Uuid,
        host: String,
        port: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rack: Option<String>,
    },
    /// The controller stopped hearing from the broker, or it shut down (`controlled`):
    /// it leads nothing until it registers or heartbeats again.
    BrokerFenced {
        id: i32,
        #[serde(default)]
        controlled: bool,
    },
    /// A fenced broker that heartbeats again with the incarnation it registered.
    BrokerUnfenced {
        id: i32,
        incarnation: Uuid,
    },
    /// The cluster's id, set once by the first controller (later proposals change nothing).
    ClusterIdentified {
        id: String,
    },
    /// A feature finalized at `level` cluster-wide (Kafka's `FeatureLevelRecord`; level 0
    /// removes it): what ApiVersions reports as finalized.
    FeatureLevel {
        name: String,
        level: i16,
    },
    /// A partition's leader changes its in-sync replicas (Kafka's AlterPartition, which
    /// the controller turns into a `PartitionChangeRecord`). Applied only while the leader
    /// still leads at `leader_epoch` and the partition is still at `partition_epoch` (a
    /// compare-and-set: a change proposed from a stale view changes nothing), and only to
    /// an ISR of live replicas that holds the leader; it bumps the partition epoch.
    IsrChanged {
        id: Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// An election asked for (ElectLeaders, or the controller's preferred-leader
    /// rebalancing): `leader` leads from the next leader epoch. Applied only while the
    /// partition is still at `partition_epoch` and `leader` is a live replica in its ISR, or
    /// (`unclean`) a live replica at all while nobody leads: then the ISR is it alone.
    LeaderElected {
        id: Uuid,
        partition: i32,
        partition_epoch: i32,
        leader: i32,
        #[serde(default)]
        unclean: bool,
    },
    /// A partition's leadership and in-sync replicas, stated whole (Kafka's
    /// `PartitionRecord`): what a snapshot keeps of the epochs that broker records moved.
    PartitionChanged {
        id: Uuid,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        elr: Vec<i32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adding: Vec<i32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removing: Vec<i32>,
    },
    /// AlterPartitionReassignments: move a partition to `target` (Kafka's reassignment
    /// through adding and removing replicas), or with `None` cancel the one in progress.
    /// The partition's replicas become the target and the current ones together until
    /// every added replica is in sync.
    ReassignmentRequested {
        id: Uuid,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// Every replica being added is in sync: the replicas being removed go (the leader
    /// moves if it was one of them). Applied only at `partition_epoch`, and only while
    /// that still holds.
    ReassignmentCompleted {
        id: Uuid,
        partition: i32,
        partition_epoch: i32,
    },
}

/// Where a partition lives and who leads it, as KRaft's partition records say.
///
/// Leadership follows the brokers: when its leader is fenced a partition moves to the next
/// live in-sync replica, or has none (`NO_LEADER`); when a fenced or restarted in-sync
/// replica comes back, a partition without a leader takes it. Every change of leader
/// bumps `leader_epoch`, and every change at all bumps `partition_epoch`, so clients and
/// replicas can tell old leadership from new (KIP-320). Applying the same log gives every
/// node the same epochs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlacement {
    /// In preference order; empty for a partition created before the cluster, which lives
    /// on the one node that wrote it.
    pub replicas: Vec<i32>,
    /// The replicas that have everything the leader has acknowledged; empty only while no
    /// member is live (then the last members wait in `elr`).
    pub isr: Vec<i32>,
    /// KIP-966's eligible leader replicas, in preference order: replicas that left the ISR
    /// while it was smaller than `min.insync.replicas`. The high watermark stops advancing
    /// below that size, so each still holds everything acknowledged and may lead cleanly
    /// when no ISR member is live. Empty whenever the ISR is at least `min.insync.replicas`.
    pub elr: Vec<i32>,
    /// [`NO_LEADER`] when no in-sync replica is live.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// A reassignment in progress (Kafka's `addingReplicas` / `removingReplicas`): the
    /// replicas being added catch up, then those being removed go.
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// A partition whose in-sync replicas are all fenced has no leader.
pub const NO_LEADER: i32 = -1;

/// The topic config (or cluster-wide dynamic default) that lets a replica outside the ISR
/// lead when no in-sync replica is live. Only configs in the metadata log count: every
/// node must elect alike, and static configs differ between nodes.
const UNCLEAN_ELECTION: &str = "unclean.leader.election.enable";

/// The topic config (or cluster-wide dynamic default) the eligible leader replicas follow.
/// Only configs in the metadata log count, as for [`UNCLEAN_ELECTION`]; a leader also
/// honours a static default, which can only be higher than 1, so it stops its high
/// watermark at least whenever the image starts keeping eligible replicas.
const MIN_INSYNC: &str = "min.insync.replicas";

impl PartitionPlacement {
    /// A partition written before the cluster: on `node` alone, which leads it at epoch 0.
    pub fn local(node: i32) -> Self {
        Self {
            replicas: vec![node],
            isr: vec![node],
            leader: node,
            leader_epoch: 0,
            partition_epoch: 0,
            elr: Vec::new(),
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// Starts moving to `target` (a new reassignment replaces one in progress, from the
    /// replicas the partition had before it): the target and the current replicas
    /// together, in that order, until the added ones are in sync.
    fn reassign(&mut self, target: &[i32]) {
        self.cancel_reassignment();
        if target.is_empty() || target == self.replicas.as_slice() {
            return;
        }
        let current = self.replicas.clone();
        self.adding = target
            .iter()
            .copied()
            .filter(|r| !current.contains(r))
            .collect();
        self.removing = current
            .iter()
            .copied()
            .filter(|r| !target.contains(r))
            .collect();
        self.replicas = target.to_vec();
        self.replicas.extend(self.removing.iter().copied());
        self.partition_epoch += 1;
    }

    /// Back to the replicas before the reassignment: the added ones leave.
    fn cancel_reassignment(&mut self) {
        if self.adding.is_empty() && self.removing.is_empty() {
            return;
        }
        let adding = std::mem::take(&mut self.adding);
        self.removing.clear();
        self.replicas.retain(|r| !adding.contains(r));
        self.leave_isr(&adding);
        self.partition_epoch += 1;
    }

    /// Every replica being added is in sync.
    pub fn reassignment_caught_up(&self) -> bool {
        (!self.adding.is_empty() || !self.removing.is_empty())
            && self.adding.iter().all(|r| self.isr.contains(r))
    }

    fn complete_reassignment(&mut self) {
        let removing = std::mem::take(&mut self.removing);
        self.adding.clear();
        self.replicas.retain(|r| !removing.contains(r));
        self.leave_isr(&removing);
        self.partition_epoch += 1;
    }

    /// `gone` leave the ISR, unless none would be left (a completed reassignment always
    /// leaves its added replicas, which are in sync); a leader among them loses leadership
    /// at the next `elect`.
    fn leave_isr(&mut self, gone: &[i32]) {
        let kept: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| !gone.contains(r))
            .collect();
        if !kept.is_empty() {
            self.isr = kept;
        }
        self.elr.retain(|r| !gone.contains(r));
    }

    /// The ISR becomes `next`. Replicas leaving it while it is below `min_isr` become
    /// eligible leader replicas; at or above it, none are kept (KIP-966), since the high
    /// watermark moves on without them.
    fn change_isr(&mut self, next: Vec<i32>, min_isr: usize) {
        let leaving: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| !next.contains(r))
            .collect();
        self.isr = next;
        self.settle_elr(&leaving, min_isr);
    }

    /// Keeps the eligible leader replicas true to the ISR's size (the leader caps
    /// `min_isr` at the replication factor, and so does this).
    fn settle_elr(&mut self, leaving: &[i32], min_isr: usize) {
        if self.isr.len() >= min_isr.min(self.replicas.len()).max(1) {
            self.elr.clear();
            return;
        }
        let eligible: Vec<i32> = self
            .replicas
            .iter()
            .copied()
            .filter(|r| (self.elr.contains(r) || leaving.contains(r)) && !self.isr.contains(r))
            .collect();
        self.elr = eligible;
    }

    /// Kafka's unclean election: the first live replica leads with an ISR of itself alone,
    /// and whatever the old ISR had that it lacks is lost.
    fn elect_unclean(&mut self, live: &dyn Fn(i32) -> bool, topic: &str) {
        if let Some(next) = self.replicas.iter().copied().find(|r| live(*r)) {
            warn!(
                topic,
                leader = next,
                "unclean leader election: a replica outside the in-sync replicas leads, and acknowledged writes it lacks are lost"
            );
            self.leader = next;
            self.isr = vec![next];
            self.elr.clear();
            self.leader_epoch += 1;
            self.partition_epoch += 1;
        }
    }

    /// Makes the first live in-sync replica (in preference order) the leader, when the
    /// current one is not live, or else the first live eligible leader replica, which then
    /// is the ISR alone; bumps the epochs when that changes the leader.
    fn elect(&mut self, live: &dyn Fn(i32) -> bool, min_isr: usize) {
        if self.leader != NO_LEADER
            && live(self.leader)
            && self.isr.contains(&self.leader)
            && self.replicas.contains(&self.leader)
        {
            return;
        }
        let first_live = |among: &[i32]| {
            self.replicas
                .iter()
                .copied()
                .find(|r| among.contains(r) && live(*r))
        };
        let next = match (first_live(&self.isr), first_live(&self.elr)) {
            (Some(member), _) => member,
            (None, Some(eligible)) => {
                self.change_isr(vec![eligible], min_isr);
                self.elr.retain(|r| *r != eligible);
                eligible
            }
            (None, None) => NO_LEADER,
        };
        if next != self.leader {
            self.leader = next;
            self.leader_epoch += 1;
            self.partition_epoch += 1;
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// One per partition (shorter for topics written before the cluster).
    pub placement: Vec<PartitionPlacement>,
}

impl TopicImage {
    /// Partition `index`'s replicas; empty when it was created before the cluster.
    pub fn replicas(&self, index: i32) -> &[i32] {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.placement.get(i))
            .map_or(&[], |p| p.replicas.as_slice())
    }

    /// New partitions on `replicas`, each led by its first live replica, at epoch 0.
    fn placed(replicas: &[Vec<i32>], live: &dyn Fn(i32) -> bool) -> Vec<PartitionPlacement> {
        replicas
            .iter()
            .map(|r| PartitionPlacement {
                replicas: r.clone(),
                isr: r.clone(),
                leader: r.iter().copied().find(|b| live(*b)).unwrap_or(NO_LEADER),
                leader_epoch: 0,
                partition_epoch: 0,
                elr: Vec::new(),
                adding: Vec::new(),
                removing: Vec::new(),
            })
            .collect()
    }

    /// Partition `index`'s placement; None for a partition created before the cluster.
    pub fn placement(&self, index: i32) -> Option<&PartitionPlacement> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.placement.get(i))
    }
}

/// A broker as registered in the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerImage {
    pub id: i32,
    pub incarnation: Uuid,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub fenced: bool,
    /// Fenced by its own controlled shutdown: it flushed everything before it stopped.
    pub shut_down_cleanly: bool,
}

/// The state all records so far add up to.
#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    topics: BTreeMap<String, TopicImage>,
    names_by_id: BTreeMap<Uuid, String>,
    /// Dynamic broker configs by node (`None`: cluster-wide default).
    pub broker_configs: BTreeMap<Option<i32>, BTreeMap<String, String>>,
    /// The first producer id not yet reserved.
    pub next_producer_id: i64,
    /// Who reserved the last block of producer ids (None: a record without an owner).
    pub producer_id_block_owner: Option<i32>,
    pub brokers: BTreeMap<i32, BrokerImage>,
    pub cluster_id: Option<String>,
    /// Finalized feature levels, by name.
    pub features: BTreeMap<String, i16>,
}

impl MetadataImage {
    /// Partition `partition` of the topic with id `id`, to change it.
    fn placement_mut(&mut self, id: &Uuid, partition: i32) -> Option<&mut PartitionPlacement> {
        let name = self.names_by_id.get(id)?;
        let topic = self.topics.get_mut(name)?;
        topic.placement.get_mut(usize::try_from(partition).ok()?)
    }

    /// Whether `broker` is registered and not fenced.
    pub fn is_live(&self, broker: i32) -> bool {
        self.brokers.get(&broker).is_some_and(|b| !b.fenced)
    }

    /// The `min.insync.replicas` the eligible leader replicas follow: the topic's, else the
    /// cluster-wide dynamic default, else Kafka's default of 1.
    fn min_isr(&self, configs: &BTreeMap<String, String>) -> usize {
        configs
            .get(MIN_INSYNC)
            .or_else(|| self.broker_configs.get(&None)?.get(MIN_INSYNC))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(1)
            .max(1)
    }

    fn min_isr_of(&self, id: &Uuid) -> usize {
        self.topic_by_id(id)
            .map_or(1, |topic| self.min_isr(&topic.configs))
    }

    /// Re-elects every partition after a broker's state or a config changed. `restarted`
    /// is a broker that registered again while it led: its partitions keep it, at a new
    /// leader epoch, since whatever a client knew of the old run is stale. `unclean` is a
    /// broker that started again without a controlled shutdown: like Kafka, it is no
    /// longer an eligible leader replica (whatever it had not flushed as leader may be
    /// gone), unless it is a partition's last candidate.
    fn reelect(&mut self, restarted: Option<i32>, unclean: Option<i32>) {
        let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
        let is_live = |b: i32| live.contains(&b);
        let cluster_unclean = self
            .broker_configs
            .get(&None)
            .and_then(|c| c.get(UNCLEAN_ELECTION))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let min_isrs: Vec<usize> = self
            .topics
            .values()
            .map(|t| self.min_isr(&t.configs))
            .collect();
        for (topic, min_isr) in self.topics.values_mut().zip(min_isrs) {
            let unclean_election = topic
                .configs
                .get(UNCLEAN_ELECTION)
                .map_or(cluster_unclean, |v| v.trim().eq_ignore_ascii_case("true"));
            for p in &mut topic.placement {
                if restarted.is_some_and(|r| r == p.leader) {
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
                if let Some(b) = unclean
                    && p.elr.contains(&b)
                    && (!p.isr.is_empty() || p.elr.len() > 1)
                {
                    p.elr.retain(|r| *r != b);
                    p.partition_epoch += 1;
                }
                // Fenced brokers leave the ISR; while it is below min.insync.replicas they
                // stay eligible to lead.
                if p.isr.iter().any(|r| !is_live(*r)) {
                    let live_members: Vec<i32> =
                        p.isr.iter().copied().filter(|r| is_live(*r)).collect();
                    p.change_isr(live_members, min_isr);
                    p.partition_epoch += 1;
                } else if !p.elr.is_empty() {
                    // min.insync.replicas may have gone down: the ISR may now be enough.
                    let before = p.elr.len();
                    p.settle_elr(&[], min_isr);
                    if p.elr.len() != before {
                        p.partition_epoch += 1;
                    }
                }
                p.elect(&is_live, min_isr);
                if unclean_election && p.leader == NO_LEADER {
                    p.elect_unclean(&is_live, &topic.name);
                }
            }
        }
    }

    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::TopicCreated {
                name,
                id,
                partitions,
                configs,
                replicas,
            } => {
                if self.topics.contains_key(name) || self.names_by_id.contains_key(id) {
                    return;
                }
                self.names_by_id.insert(*id, name.clone());
                let placement = TopicImage::placed(replicas, &|b| self.is_live(b));
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions: *partitions,
                        configs: configs.clone(),
                        placement,
                    },
                );
            }
            MetadataRecord::PartitionsAdded {
                id,
                partitions,
                from,
                replicas,
            } => {
                let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
                if let Some(t) = self
                    .names_by_id
                    .get(id)
                    .and_then(|n| self.topics.get_mut(n))
                {
                    if from.is_some_and(|from| from != t.partitions) || *partitions <= t.partitions
                    {
                        return;
                    }
                    t.partitions = *partitions;
                    if !replicas.is_empty() {
                        t.placement
                            .extend(TopicImage::placed(replicas, &|b| live.contains(&b)));
                    }
                }
            }
            MetadataRecord::BrokerConfigsChanged { node, configs } => {
                self.broker_configs.insert(*node, configs.clone());
                // Enabling unclean election elects at once where nobody leads.
                self.reelect(None, None);
            }
            MetadataRecord::TopicConfigsChanged { id, configs } => {
                if let Some(t) = self
                    .names_by_id
                    .get(id)
                    .and_then(|n| self.topics.get_mut(n))
                {
                    t.configs = configs.clone();
                }
                self.reelect(None, None);
            }
            MetadataRecord::ProducerIdsReserved { next, from, owner } => {
                if from.is_some_and(|from| from != self.next_producer_id) {
                    return;
                }
                self.next_producer_id = self.next_producer_id.max(*next);
                self.producer_id_block_owner = *owner;
            }
            MetadataRecord::TopicDeleted { id } => {
                if let Some(name) = self.names_by_id.remove(id) {
                    self.topics.remove(&name);
                }
            }
            MetadataRecord::BrokerRegistered {
                id,
                incarnation,
                host,
                port,
                rack,
            } => {
                let previous = self.brokers.insert(
                    *id,
                    BrokerImage {
                        id: *id,
                        incarnation: *incarnation,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        fenced: false,
                        shut_down_cleanly: false,
                    },
                );
                let restarted = previous
                    .as_ref()
                    .is_some_and(|b| !b.fenced && b.incarnation != *incarnation)
                    .then_some(*id);
                let unclean = previous
                    .is_some_and(|b| b.incarnation != *incarnation && !b.shut_down_cleanly)
                    .then_some(*id);
                self.reelect(restarted, unclean);
            }
            MetadataRecord::BrokerFenced { id, controlled } => {
                if let Some(b) = self.brokers.get_mut(id) {
                    b.shut_down_cleanly = *controlled || (b.fenced && b.shut_down_cleanly);
                    b.fenced = true;
                    self.reelect(None, None);
                }
            }
            MetadataRecord::BrokerUnfenced { id, incarnation } => {
                if let Some(b) = self.brokers.get_mut(id)
                    && b.incarnation == *incarnation
                {
                    b.fenced = false;
                    b.shut_down_cleanly = false;
                    self.reelect(None, None);
                }
            }
            MetadataRecord::PartitionChanged {
                id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
                elr,
                adding,
                removing,
            } => {
                if let Some(p) = self.placement_mut(id, *partition) {
                    p.leader = *leader;
                    p.leader_epoch = *leader_epoch;
                    p.partition_epoch = *partition_epoch;
                    p.isr = isr.clone();
                    p.elr = elr.clone();
                    p.adding = adding.clone();
                    p.removing = removing.clone();
                }
            }
            MetadataRecord::ReassignmentRequested {
                id,
                partition,
                target,
            } => {
                let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
                let min_isr = self.min_isr_of(id);
                if let Some(p) = self.placement_mut(id, *partition) {
                    match target {
                        Some(target) => p.reassign(target),
                        None => p.cancel_reassignment(),
                    }
                    p.elect(&|b| live.contains(&b), min_isr);
                }
            }
            MetadataRecord::ReassignmentCompleted {
                id,
                partition,
                partition_epoch,
            } => {
                let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
                let min_isr = self.min_isr_of(id);
                if let Some(p) = self.placement_mut(id, *partition)
                    && p.partition_epoch == *partition_epoch
                    && p.reassignment_caught_up()
                {
                    p.complete_reassignment();
                    p.elect(&|b| live.contains(&b), min_isr);
                }
            }
            MetadataRecord::IsrChanged {
                id,
                partition,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
                let min_isr = self.min_isr_of(id);
                if let Some(p) = self.placement_mut(id, *partition)
                    && p.leader_epoch == *leader_epoch
                    && p.partition_epoch == *partition_epoch
                    && isr.contains(&p.leader)
                    && isr
                        .iter()
                        .all(|r| p.replicas.contains(r) && live.contains(r))
                {
                    let mut isr = isr.clone();
                    isr.sort_unstable();
                    isr.dedup();
                    p.change_isr(isr, min_isr);
                    p.partition_epoch += 1;
                }
            }
            MetadataRecord::LeaderElected {
                id,
                partition,
                partition_epoch,
                leader,
                unclean,
            } => {
                let live = self.is_live(*leader);
                if let Some(p) = self.placement_mut(id, *partition)
                    && p.partition_epoch == *partition_epoch
                    && live
                    && p.replicas.contains(leader)
                    && p.leader != *leader
                {
                    if p.isr.contains(leader) {
                        p.leader = *leader;
                    } else if *unclean && p.leader == NO_LEADER {
                        warn!(
                            leader,
                            "unclean leader election asked for: acknowledged writes the new leader lacks are lost"
                        );
                        p.leader = *leader;
                        p.isr = vec![*leader];
                        p.elr.clear();
                    } else {
                        return;
                    }
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
            }
            MetadataRecord::ClusterIdentified { id } => {
                self.cluster_id.get_or_insert_with(|| id.clone());
            }
            MetadataRecord::FeatureLevel { name, level } => {
                if *level == 0 {
                    self.features.remove(name);
                } else {
                    self.features.insert(name.clone(), *level);
                }
            }
        }
    }

    /// Kafka's auto leader rebalance: for each broker that does not lead more than
    /// `imbalance_pct` percent of the partitions it is the preferred leader of, elections
    /// moving those back to it where it is live and in sync.
    pub fn preferred_elections(&self, imbalance_pct: i64) -> Vec<MetadataRecord> {
        let mut by_preferred: BTreeMap<i32, (usize, Vec<MetadataRecord>)> = BTreeMap::new();
        for topic in self.topics.values() {
            for (index, p) in topic.placement.iter().enumerate() {
                let Some(&preferred) = p.replicas.first() else {
                    continue;
                };
                let entry = by_preferred.entry(preferred).or_default();
                entry.0 += 1;
                if p.leader != preferred && self.is_live(preferred) && p.isr.contains(&preferred) {
                    entry.1.push(MetadataRecord::LeaderElected {
                        id: topic.id,
                        partition: index as i32,
                        partition_epoch: p.partition_epoch,
                        leader: preferred,
                        unclean: false,
                    });
                }
            }
        }
        by_preferred
            .into_values()
            .filter(|(total, movable)| movable.len() * 100 > *total * imbalance_pct.max(0) as usize)
            .flat_map(|(_, movable)| movable)
            .collect()
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    /// The fewest records that rebuild this image from an empty one: what a snapshot
    /// holds, as KRaft's snapshots are records too.
    pub fn as_records(&self) -> Vec<MetadataRecord> {
        let mut records = vec![MetadataRecord::ProducerIdsReserved {
            next: self.next_producer_id,
            from: None,
            owner: self.producer_id_block_owner,
        }];
        records.extend(
            self.cluster_id
                .iter()
                .map(|id| MetadataRecord::ClusterIdentified { id: id.clone() }),
        );
        records.extend(
            self.features
                .iter()
                .map(|(name, level)| MetadataRecord::FeatureLevel {
                    name: name.clone(),
                    level: *level,
                }),
        );
        for b in self.brokers.values() {
            records.push(MetadataRecord::BrokerRegistered {
                id: b.id,
                incarnation: b.incarnation,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
            });
            if b.fenced {
                records.push(MetadataRecord::BrokerFenced {
                    id: b.id,
                    controlled: b.shut_down_cleanly,
                });
            }
        }
        records.extend(self.broker_configs.iter().map(|(node, configs)| {
            MetadataRecord::BrokerConfigsChanged {
                node: *node,
                configs: configs.clone(),
            }
        }));
        for t in self.topics.values() {
            records.push(MetadataRecord::TopicCreated {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partitions,
                configs: t.configs.clone(),
                replicas: t.placement.iter().map(|p| p.replicas.clone()).collect(),
            });
            // Only what creation would not give again.
            let created = TopicImage::placed(
                &t.placement
                    .iter()
                    .map(|p| p.replicas.clone())
                    .collect::<Vec<_>>(),
                &|b| self.is_live(b),
            );
            for (index, (p, fresh)) in t.placement.iter().zip(&created).enumerate() {
                if p != fresh {
                    records.push(MetadataRecord::PartitionChanged {
                        id: t.id,
                        partition: index as i32,
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        isr: p.isr.clone(),
                        elr: p.elr.clone(),
                        adding: p.adding.clone(),
                        removing: p.removing.clone(),
                    });
                }
            }
        }
        records
    }
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.names_by_id.get(id).and_then(|n| self.topics.get(n))
    }
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    /// Registered brokers that are not fenced: the ones that serve.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Partition `index` of `topic`'s replicas: `local` alone for a partition written
    /// before the cluster.
    pub fn replicas(&self, topic: &TopicImage, index: i32, local: i32) -> Vec<i32> {
        match topic.replicas(index) {
            [] => vec![local],
            replicas => replicas.to_vec(),
        }
    }

    /// Who leads partition `index` of `topic`, and at which leader epoch. `local` is this
    /// node, which holds the partitions written before the cluster (at epoch 0). With one
    /// replica per partition (until replication lands), a fenced broker's partitions have
    /// no leader.
    pub fn leader(&self, topic: &TopicImage, index: i32, local: i32) -> Option<(i32, i32)> {
        match topic.placement(index) {
            None => Some((local, 0)),
            Some(p) if p.leader == NO_LEADER => None,
            Some(p) => Some((p.leader, p.leader_epoch)),
        }
    }
}

/// The metadata image as the quorum's state machine: each committed entry's records (JSON,
/// as in the file log) are applied in log order.
#[derive(Debug, Default)]
pub struct ImageMachine {
    pub image: MetadataImage,
}

impl odradek_raft::MetadataStateMachine for ImageMachine {
    fn apply(&mut self, index: u64, records: &[bytes::Bytes]) {
        for record in records {
            match serde_json::from_slice::<MetadataRecord>(record) {
                Ok(record) => self.image.apply(&record),
                // Committed is committed: every node skips it the same way.
                Err(e) => {
                    tracing::error!(index, error = %e, "skipping a metadata record this version cannot read")
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        encode_records_json(&self.image.as_records())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), odradek_raft::RestoreError> {
        let records: Vec<MetadataRecord> = serde_json::from_slice(snapshot)?;
        let mut image = MetadataImage::default();
        for record in &records {
            image.apply(record);
        }
        self.image = image;
        Ok(())
    }
}

/// Where metadata records become durable: the quorum's replicated log, under
/// `<data-dir>/__cluster_metadata-0/` (one voter, this node, until the cluster support
/// lands). A data dir written before keeps its records in `metadata.log`; they move into the
/// quorum's log once, on the first start with it.
pub struct MetadataStore {
    quorum: odradek_raft::MetadataQuorum<ImageMachine>,
}

/// How long a metadata write waits for a leader to commit it (across an election).
const METADATA_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

/// Records per proposal when moving an old log over: well under the quorum's 1 MiB limit.
const MIGRATION_BATCH: usize = 1000;

impl MetadataStore {
    /// Starts the quorum in `dir` and returns it with the image it holds. Must run inside a
    /// tokio runtime.
    pub async fn open(
        dir: &Path,
        node_id: i32,
        spec: &crate::config::QuorumSpec,
    ) -> Result<(Self, MetadataImage), MetadataError> {
        let legacy = MetadataLog::path_in(dir);
        // Checked (and a torn tail cut) before anything else touches the directory.
        let migrating = if legacy.exists() {
            Some(MetadataLog::load(dir)?)
        } else {
            None
        };
        let node = u64::try_from(node_id).unwrap_or_default();
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let config = match spec.listen {
            // Others reach this node: a voter among several, a controller that broker-only
            // nodes observe, or a broker-only node itself.
            Some(listen) if !spec.voters.is_empty() || !spec.bootstrap.is_empty() => {
                let voters = spec
                    .voters
                    .iter()
                    .filter_map(|(id, addr)| Some((u64::try_from(*id).ok()?, *addr)))
                    .collect();
                odradek_raft::QuorumConfig {
                    bootstrap: spec.bootstrap.clone(),
                    ..odradek_raft::QuorumConfig::new(node, listen, voters, dir)
                }
            }
            // This node alone (the default): nobody needs to reach it.
            _ => odradek_raft::QuorumConfig::single(node, loopback, dir),
        };
        let quorum =
            match odradek_raft::MetadataQuorum::start(config, ImageMachine::default()).await {
                Ok(quorum) => quorum,
                Err(odradek_raft::QuorumError::Storage(
                    source @ odradek_raft::StoreError::Corrupt { .. },
                )) => {
                    return Err(MetadataError::QuorumLogDamaged {
                        source,
                        data_dir: dir.parent().unwrap_or(dir).to_path_buf(),
                    });
                }
                Err(e) => return Err(e.into()),
            };
        let store = Self { quorum };
        if let Some(image) = migrating {
            store.migrate(dir, &image).await?;
        }
        let image = store.quorum.with_state(|m| m.image.clone());
        Ok((store, image))
    }

    /// Proposes the old log's image, then renames the old file. Re-running after a crash
    /// part way is harmless: each record states a whole value (a topic, a config layer,
    /// the next producer id), so applying it twice changes nothing.
    async fn migrate(&self, dir: &Path, image: &MetadataImage) -> Result<(), MetadataError> {
        let records = image.as_records();
        for chunk in records.chunks(MIGRATION_BATCH) {
            self.append(chunk).await?;
        }
        let legacy = MetadataLog::path_in(dir);
        let moved = dir.join("metadata.log.migrated");
        let io = |source| MetadataError::Io {
            path: legacy.clone(),
            source,
        };
        fs::rename(&legacy, &moved).map_err(io)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        tracing::info!(
            topics = image.topics().count(),
            "moved the metadata log into the quorum's log"
        );
        Ok(())
    }

    /// Appends records durably from any node (a follower forwards them to the leader, as
    /// Kafka's brokers forward controller requests): they commit together, as one entry of
    /// the quorum's log, and are applied to this node's image when this returns.
    pub async fn append(&self, records: &[MetadataRecord]) -> Result<u64, MetadataError> {
        let encoded = records
            .iter()
            .map(|r| bytes::Bytes::from(encode_record_json(r)))
            .collect();
        Ok(self
            .quorum
            .propose_anywhere(encoded, METADATA_WRITE_TIMEOUT)
            .await?)
    }

    /// The image as applied so far, with the index of the last entry in it.
    pub fn image(&self) -> (u64, MetadataImage) {
        let index = self.quorum.last_applied().unwrap_or(0);
        (index, self.quorum.with_state(|m| m.image.clone()))
    }

    /// Changes whenever the quorum's state does (an entry applied, a new leader).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<impl Sized + Send + Sync + use<>> {
        self.quorum.raft().metrics()
    }

    pub fn is_leader(&self) -> bool {
        self.quorum.is_leader()
    }

    /// The quorum leader's node id, as this node knows it.
    pub fn leader(&self) -> Option<i32> {
        self.quorum.leader().and_then(|id| i32::try_from(id).ok())
    }

    /// See [`odradek_raft::MetadataQuorum::request_leader`].
    pub async fn request_controller(
        &self,
        payload: &[u8],
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, MetadataError> {
        Ok(self.quorum.request_leader(payload, timeout).await?)
    }

    /// See [`odradek_raft::MetadataQuorum::add_voter`] (and `remove_voter`): on the leader.
    pub async fn change_voter(&self, id: i32, add: bool) -> Result<(), MetadataError> {
        let id = u64::try_from(id)
            .map_err(|_| MetadataError::Controller(format!("{id} is not a node id")))?;
        if add {
            Ok(self.quorum.add_voter(id).await?)
        } else {
            Ok(self.quorum.remove_voter(id).await?)
        }
    }

    pub fn set_controller(&self, handler: odradek_raft::RequestHandler) {
        self.quorum.set_request_handler(handler);
    }

    pub async fn shutdown(&self) {
        self.quorum.shutdown().await;
    }

    /// Leader, epoch, commit point and each voter's progress, for DescribeQuorum.
    pub async fn status(&self) -> Result<odradek_raft::QuorumStatus, MetadataError> {
        Ok(self.quorum.status().await?)
    }

    /// Finds damage in the quorum's log in `dir` and, with `apply`, replaces each entry it
    /// cost by a blank one (see [`odradek_raft::repair_log`]). Only while no broker runs.
    pub fn repair(dir: &Path, apply: bool) -> Result<LogRepair, MetadataError> {
        odradek_raft::repair_log(dir, apply).map_err(|source| MetadataError::QuorumLogDamaged {
            source,
            data_dir: dir.parent().unwrap_or(dir).to_path_buf(),
        })
    }
}

/// A record as JSON. Records hold strings, numbers, ids and maps with string keys, which
/// serde_json always encodes.
#[allow(clippy::expect_used)]
fn encode_record_json(record: &MetadataRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a metadata record always encodes as JSON")
}

/// Records as one JSON array (a snapshot); see [`encode_record_json`].
#[allow(clippy::expect_used)]
fn encode_records_json(records: &[MetadataRecord]) -> Vec<u8> {
    serde_json::to_vec(records).expect("metadata records always encode as JSON")
}

/// A frame of the log: `[len: u32][crc32c: u32][JSON record]`.
const RECORD_HEADER: usize = 8;

/// What starts at a byte position of the log.
enum Frame {
    Intact(MetadataRecord, usize),
    /// A whole frame whose CRC matches but whose record this version cannot read (written
    /// by a newer one): no crash makes that, so it is never cut.
    Unreadable(String),
    Damaged,
}

fn frame_at(bytes: &[u8], pos: usize) -> Frame {
    let Some(header) = bytes.get(pos..pos.saturating_add(RECORD_HEADER)) else {
        return Frame::Damaged;
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let start = pos + RECORD_HEADER;
    let Some(body) = bytes.get(start..start.saturating_add(len)) else {
        return Frame::Damaged;
    };
    // Every record is a JSON object: checking the first byte before the CRC keeps the
    // search for the next intact frame after damage cheap.
    if body.first() != Some(&b'{') || crc32c::crc32c(body) != crc {
        return Frame::Damaged;
    }
    match serde_json::from_slice(body) {
        Ok(record) => Frame::Intact(record, RECORD_HEADER + len),
        Err(e) => Frame::Unreadable(e.to_string()),
    }
}

/// The start of the first whole frame with a matching CRC after `from`, if any.
fn next_intact_frame(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&pos| !matches!(frame_at(bytes, pos), Frame::Damaged))
}

/// A stretch of the file that holds no intact record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    pub start: u64,
    pub end: u64,
    /// The damaged bytes as text, shortened: what a person can read of the lost record.
    pub preview: String,
}

/// What the log holds: every intact record with its byte position, and the damaged stretches
/// between and after them.
#[derive(Debug, Default)]
pub struct MetadataScan {
    pub records: Vec<(u64, MetadataRecord)>,
    pub damaged: Vec<DamagedRange>,
    pub len: u64,
}

impl MetadataScan {
    fn of(path: &Path, bytes: &[u8]) -> Result<Self, MetadataError> {
        let mut scan = Self {
            len: bytes.len() as u64,
            ..Self::default()
        };
        let mut pos = 0;
        while pos < bytes.len() {
            match frame_at(bytes, pos) {
                Frame::Intact(record, size) => {
                    scan.records.push((pos as u64, record));
                    pos += size;
                    continue;
                }
                Frame::Unreadable(reason) => {
                    return Err(MetadataError::Decode {
                        path: path.to_path_buf(),
                        position: pos as u64,
                        reason,
                    });
                }
                Frame::Damaged => {}
            }
            let end = next_intact_frame(bytes, pos + 1).unwrap_or(bytes.len());
            let text = String::from_utf8_lossy(&bytes[pos..end]);
            scan.damaged.push(DamagedRange {
                start: pos as u64,
                end: end as u64,
                preview: text.chars().take(200).collect(),
            });
            pos = end;
        }
        Ok(scan)
    }

    /// Damage followed by intact records: cutting it would drop acknowledged metadata.
    pub fn damage_in_the_middle(&self) -> Option<&DamagedRange> {
        self.damaged.iter().find(|d| d.end < self.len)
    }

    /// A torn tail: damage that reaches the end of the file with nothing intact after it,
    /// the trace of a crash during an append that was never acknowledged.
    fn torn_tail(&self) -> Option<&DamagedRange> {
        self.damaged.last().filter(|d| d.end == self.len)
    }
}

/// The file of metadata records that releases before the quorum wrote
/// (`__cluster_metadata-0/metadata.log`): read once to move it into the quorum's log, and
/// repaired by `odradek repair metadata`. Nothing appends to it any more.
#[derive(Debug)]
pub struct MetadataLog;

impl MetadataLog {
    /// The log's file in the metadata directory `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("metadata.log")
    }

    /// Reads the whole log without changing it.
    pub fn scan(dir: &Path) -> Result<MetadataScan, MetadataError> {
        let path = Self::path_in(dir);
        match fs::read(&path) {
            Ok(bytes) => MetadataScan::of(&path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MetadataScan::default()),
            Err(source) => Err(MetadataError::Io { path, source }),
        }
    }

    /// Replays the log in `dir` into an image. A torn tail is cut; damage with intact
    /// records after it stops here with [`MetadataError::Damaged`].
    pub fn load(dir: &Path) -> Result<MetadataImage, MetadataError> {
        let path = Self::path_in(dir);
        let io = |source| MetadataError::Io {
            path: path.clone(),
            source,
        };
        let scan = Self::scan(dir)?;
        if let Some(damage) = scan.damage_in_the_middle() {
            return Err(MetadataError::Damaged {
                path,
                position: damage.start,
                next_intact: damage.end,
                data_dir: dir.parent().unwrap_or(dir).to_path_buf(),
            });
        }
        let mut image = MetadataImage::default();
        for (_, record) in &scan.records {
            image.apply(record);
        }
        if let Some(tail) = scan.torn_tail() {
            warn!(path = %path.display(), valid_bytes = tail.start, cut_bytes = tail.end - tail.start, "cutting torn metadata log tail");
            let file = OpenOptions::new().write(true).open(&path).map_err(io)?;
            file.set_len(tail.start).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok(image)
    }

    /// Rewrites the log in `dir` with its intact records only. The damaged file is kept
    /// beside it as `metadata.log.damaged-<unix seconds>`, so nothing is destroyed.
    /// Returns the path of that copy, or `None` when there was nothing to repair.
    pub fn repair(dir: &Path) -> Result<Option<PathBuf>, MetadataError> {
        let path = Self::path_in(dir);
        let io = |source| MetadataError::Io {
            path: path.clone(),
            source,
        };
        let scan = Self::scan(dir)?;
        if scan.damaged.is_empty() {
            return Ok(None);
        }
        let records: Vec<MetadataRecord> = scan.records.into_iter().map(|(_, r)| r).collect();
        let repaired = dir.join("metadata.log.repaired");
        fs::write(&repaired, encode(&records)).map_err(io)?;
        File::open(&repaired)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let kept = dir.join(format!("metadata.log.damaged-{seconds}"));
        fs::rename(&path, &kept).map_err(io)?;
        fs::rename(&repaired, &path).map_err(io)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(Some(kept))
    }
}

fn encode(records: &[MetadataRecord]) -> Vec<u8> {
    let mut buf = Vec::new();
    for record in records {
        let body = encode_record_json(record);
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        buf.extend_from_slice(&body);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Appends records as the releases before the quorum did.
    fn append(dir: &Path, records: &[MetadataRecord]) {
        fs::create_dir_all(dir).unwrap();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(MetadataLog::path_in(dir))
            .unwrap();
        file.write_all(&encode(records)).unwrap();
    }

    fn created(name: &str) -> MetadataRecord {
        MetadataRecord::TopicCreated {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions: 1,
            configs: BTreeMap::new(),
            replicas: Vec::new(),
        }
    }

    /// A log holding topics a, b and c, one record each; returns the file and the byte
    /// position where each record starts.
    fn three_topics(dir: &Path) -> (PathBuf, Vec<u64>) {
        for name in ["a", "b", "c"] {
            append(dir, &[created(name)]);
        }
        let scan = MetadataLog::scan(dir).unwrap();
        let starts = scan.records.iter().map(|(pos, _)| *pos).collect();
        (MetadataLog::path_in(dir), starts)
    }

    fn flip(path: &Path, at: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[at as usize] ^= 0x40;
        fs::write(path, bytes).unwrap();
    }

    fn names(image: &MetadataImage) -> Vec<&str> {
        image.topics().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn records_replay_into_the_same_image_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        assert_eq!(MetadataLog::load(dir.path()).unwrap().topics().count(), 0);
        append(
            dir.path(),
            &[MetadataRecord::TopicCreated {
                name: "t".into(),
                id,
                partitions: 1,
                configs: BTreeMap::new(),
                replicas: Vec::new(),
            }],
        );
        append(
            dir.path(),
            &[MetadataRecord::PartitionsAdded {
                id,
                partitions: 3,
                from: None,
                replicas: Vec::new(),
            }],
        );
        let path = dir.path().join("metadata.log");
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 50, 1, 2]);
        fs::write(&path, &bytes).unwrap();
        let image = MetadataLog::load(dir.path()).unwrap();
        assert_eq!(image.topic("t").unwrap().partitions, 3);
        assert_eq!(image.topic_by_id(&id).unwrap().name, "t");
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, bytes.len() - 6);
    }

    #[test]
    fn a_damaged_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = three_topics(dir.path());
        flip(&path, starts[2] + 12);
        let image = MetadataLog::load(dir.path()).unwrap();
        assert_eq!(names(&image), ["a", "b"]);
        assert_eq!(fs::metadata(&path).unwrap().len(), starts[2]);
    }

    #[test]
    fn damage_with_intact_records_after_it_stops_start_up_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = three_topics(dir.path());
        // In the body, and then in the length field (the frame then seems to run past the
        // end of the file): both are damage in the middle.
        for at in [starts[1] + 12, starts[1] + 1] {
            let before = fs::read(&path).unwrap();
            flip(&path, at);
            let damaged = fs::read(&path).unwrap();
            match MetadataLog::load(dir.path()) {
                Err(MetadataError::Damaged {
                    path: p,
                    position,
                    next_intact,
                    data_dir,
                }) => {
                    assert_eq!(p, path);
                    assert_eq!(position, starts[1]);
                    assert_eq!(next_intact, starts[2]);
                    assert_eq!(data_dir, dir.path().parent().unwrap());
                }
                other => panic!("expected Damaged, got {other:?}"),
            }
            assert_eq!(fs::read(&path).unwrap(), damaged, "the file is left alone");
            fs::write(&path, before).unwrap();
        }
    }

    #[test]
    fn repair_drops_only_the_damaged_record_and_keeps_the_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = three_topics(dir.path());
        flip(&path, starts[1] + 12);
        let damaged = fs::read(&path).unwrap();
        let scan = MetadataLog::scan(dir.path()).unwrap();
        assert_eq!(scan.records.len(), 2);
        assert_eq!(
            (scan.damaged[0].start, scan.damaged[0].end),
            (starts[1], starts[2])
        );
        let kept = MetadataLog::repair(dir.path()).unwrap().unwrap();
        assert_eq!(fs::read(kept).unwrap(), damaged);
        let image = MetadataLog::load(dir.path()).unwrap();
        assert_eq!(names(&image), ["a", "c"]);
        assert_eq!(MetadataLog::repair(dir.path()).unwrap(), None);
    }

    #[test]
    fn an_intact_record_this_version_cannot_read_is_never_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = three_topics(dir.path());
        let body = br#"{"type":"FromTheFuture"}"#;
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
        bytes.extend_from_slice(body);
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            MetadataLog::load(dir.path()),
            Err(MetadataError::Decode { .. })
        ));
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    fn placed(name: &str, id: Uuid, replicas: &[i32]) -> MetadataRecord {
        MetadataRecord::TopicCreated {
            name: name.into(),
            id,
            partitions: replicas.len() as i32,
            configs: BTreeMap::new(),
            replicas: replicas.iter().map(|r| vec![*r]).collect(),
        }
    }

    fn registered(id: i32) -> MetadataRecord {
        started(id, id as u128)
    }

    /// Broker `id` registering as its run `incarnation`.
    fn started(id: i32, incarnation: u128) -> MetadataRecord {
        MetadataRecord::BrokerRegistered {
            id,
            incarnation: Uuid::from_u128(incarnation),
            host: format!("127.0.0.{id}"),
            port: 9092,
            rack: None,
        }
    }

    /// Brokers 1 to 3 registered and topic `name`, one partition on all three, with
    /// `configs`: the image and the topic's id.
    fn on_three_brokers(name: &str, configs: BTreeMap<String, String>) -> (MetadataImage, Uuid) {
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            image.apply(&registered(id));
        }
        let id = Uuid::new_v4();
        image.apply(&MetadataRecord::TopicCreated {
            name: name.into(),
            id,
            partitions: 1,
            configs,
            replicas: vec![vec![1, 2, 3]],
        });
        (image, id)
    }

    #[test]
    fn of_two_brokers_racing_for_a_name_or_a_block_the_first_record_wins() {
        let mut image = MetadataImage::default();
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        image.apply(&placed("t", first, &[1]));
        image.apply(&placed("t", second, &[2]));
        assert_eq!(image.topic("t").unwrap().id, first);
        assert!(image.topic_by_id(&second).is_none());

        // Both saw 1 partition; the second grow is stale and changes nothing.
        for (owner, to) in [(1, 3), (2, 5)] {
            image.apply(&MetadataRecord::PartitionsAdded {
                id: first,
                partitions: to,
                from: Some(1),
                replicas: vec![vec![owner]; (to - 1) as usize],
            });
        }
        let t = image.topic("t").unwrap();
        assert_eq!((t.partitions, t.replicas(2)), (3, &[1][..]));

        for owner in [1, 2] {
            image.apply(&MetadataRecord::ProducerIdsReserved {
                next: 1000,
                from: Some(0),
                owner: Some(owner),
            });
        }
        assert_eq!(
            (image.next_producer_id, image.producer_id_block_owner),
            (1000, Some(1))
        );
    }

    #[test]
    fn a_fenced_brokers_partitions_have_no_leader_until_it_returns() {
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            image.apply(&registered(id));
        }
        let id = Uuid::new_v4();
        image.apply(&placed("t", id, &[1, 2, 3]));
        // Each partition's (leader, leader epoch).
        let leaders = |image: &MetadataImage| -> Vec<Option<(i32, i32)>> {
            let t = image.topic("t").unwrap();
            (0..3).map(|p| image.leader(t, p, 1)).collect()
        };
        assert_eq!(leaders(&image), [Some((1, 0)), Some((2, 0)), Some((3, 0))]);
        image.apply(&MetadataRecord::BrokerFenced {
            id: 2,
            controlled: false,
        });
        assert_eq!(leaders(&image), [Some((1, 0)), None, Some((3, 0))]);
        assert_eq!(image.live_brokers().count(), 2);
        // Only the incarnation that registered may unfence itself.
        image.apply(&MetadataRecord::BrokerUnfenced {
            id: 2,
            incarnation: Uuid::new_v4(),
        });
        assert_eq!(leaders(&image), [Some((1, 0)), None, Some((3, 0))]);
        image.apply(&MetadataRecord::BrokerUnfenced {
            id: 2,
            incarnation: Uuid::from_u128(2),
        });
        // Leaderless, then led again: two changes of leader, two epochs.
        assert_eq!(leaders(&image), [Some((1, 0)), Some((2, 2)), Some((3, 0))]);
        // A broker that starts again before it was fenced keeps its partitions, at a new
        // epoch: what clients knew of its last run is stale.
        image.apply(&MetadataRecord::BrokerRegistered {
            id: 1,
            incarnation: Uuid::new_v4(),
            host: "h1".into(),
            port: 9092,
            rack: None,
        });
        assert_eq!(leaders(&image), [Some((1, 1)), Some((2, 2)), Some((3, 0))]);
        // A snapshot rebuilds the same image, epochs included.
        image.apply(&MetadataRecord::BrokerFenced {
            id: 3,
            controlled: true,
        });
        let mut rebuilt = MetadataImage::default();
        for record in image.as_records() {
            rebuilt.apply(&record);
        }
        assert_eq!(leaders(&rebuilt), [Some((1, 1)), Some((2, 2)), None]);
        assert_eq!(
            rebuilt.topic("t").unwrap().placement,
            image.topic("t").unwrap().placement
        );
        assert_eq!(rebuilt.brokers, image.brokers);
    }

    #[test]
    fn leadership_moves_to_another_in_sync_replica_and_stays_there() {
        let mut image = MetadataImage::default();
        for id in 1..=2 {
            image.apply(&registered(id));
        }
        image.apply(&MetadataRecord::TopicCreated {
            name: "r".into(),
            id: Uuid::new_v4(),
            partitions: 1,
            configs: BTreeMap::new(),
            replicas: vec![vec![1, 2]],
        });
        let state = |image: &MetadataImage| image.topic("r").unwrap().placement[0].clone();
        assert_eq!((state(&image).leader, state(&image).isr), (1, vec![1, 2]));
        image.apply(&MetadataRecord::BrokerFenced {
            id: 1,
            controlled: false,
        });
        let moved = state(&image);
        assert_eq!((moved.leader, moved.leader_epoch), (2, 1));
        assert_eq!(moved.isr, [2], "a fenced replica leaves the ISR");
        assert_eq!(moved.partition_epoch, 2, "ISR and leader both changed");
        // Back, but not in sync: it must catch up before it may lead (part 2's work).
        image.apply(&MetadataRecord::BrokerUnfenced {
            id: 1,
            incarnation: Uuid::from_u128(1),
        });
        assert_eq!(state(&image), moved);
        // The last in-sync replica leaves the ISR when fenced but stays eligible to lead:
        // only it has everything.
        image.apply(&MetadataRecord::BrokerFenced {
            id: 2,
            controlled: true,
        });
        let stranded = state(&image);
        assert_eq!(
            (
                stranded.leader,
                stranded.isr.as_slice(),
                stranded.elr.as_slice()
            ),
            (NO_LEADER, &[][..], &[2][..])
        );
        assert_eq!(stranded.leader_epoch, 2);
        // 1 is live but never caught up: still no leader.
        image.apply(&MetadataRecord::BrokerUnfenced {
            id: 1,
            incarnation: Uuid::from_u128(1),
        });
        assert_eq!(state(&image).leader, NO_LEADER);
        image.apply(&registered(2));
        let back = state(&image);
        assert_eq!(
            (back.leader, back.isr.as_slice(), back.elr.as_slice()),
            (2, &[2][..], &[][..])
        );
    }

    /// KIP-966 with RF 3 and min.insync.replicas 2: replicas that leave an ISR already
    /// below 2 stay eligible, so a clean election is still possible after the ISR empties;
    /// a broker that left while the ISR was big enough, or that restarted uncleanly, is not.
    #[test]
    fn eligible_leader_replicas_lead_when_the_isr_is_gone() {
        let (mut image, id) = on_three_brokers(
            "e",
            BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]),
        );
        let state = |image: &MetadataImage| {
            let p = image.topic("e").unwrap().placement[0].clone();
            (p.leader, p.isr, p.elr)
        };
        let fence = |id, controlled| MetadataRecord::BrokerFenced { id, controlled };
        image.apply(&fence(3, false));
        assert_eq!(state(&image), (1, vec![1, 2], vec![]), "ISR still at 2");
        image.apply(&fence(1, true));
        assert_eq!(
            state(&image),
            (2, vec![2], vec![1]),
            "below 2: 1 stays eligible"
        );
        image.apply(&fence(2, false));
        assert_eq!(state(&image), (NO_LEADER, vec![], vec![1, 2]));
        image.apply(&started(3, 30));
        assert_eq!(
            state(&image),
            (NO_LEADER, vec![], vec![1, 2]),
            "3 lacks data"
        );
        image.apply(&started(2, 20));
        assert_eq!(
            state(&image),
            (NO_LEADER, vec![], vec![1]),
            "2 stopped uncleanly: no longer eligible while 1 is"
        );
        image.apply(&started(1, 10));
        assert_eq!(state(&image), (1, vec![1], vec![]), "1 shut down cleanly");
        // Once the ISR is back at min.insync.replicas, nobody else is eligible.
        image.apply(&fence(1, true));
        assert_eq!(state(&image), (NO_LEADER, vec![], vec![1]));
        image.apply(&started(1, 11));
        let partition_epoch = image.topic("e").unwrap().placement[0].partition_epoch;
        let leader_epoch = image.topic("e").unwrap().placement[0].leader_epoch;
        image.apply(&MetadataRecord::IsrChanged {
            id,
            partition: 0,
            leader_epoch,
            partition_epoch,
            isr: vec![1, 2],
        });
        assert_eq!(state(&image), (1, vec![1, 2], vec![]));
        // The last candidate stays eligible even after an unclean restart: else the
        // partition could never lead again without an unclean election.
        image.apply(&fence(2, false));
        image.apply(&fence(1, false));
        assert_eq!(state(&image), (NO_LEADER, vec![], vec![1, 2]));
        image.apply(&started(2, 21));
        assert_eq!(state(&image), (NO_LEADER, vec![], vec![1]));
        image.apply(&started(1, 12));
        assert_eq!(state(&image), (1, vec![1], vec![]));
        // Lowering min.insync.replicas to 1 lets the high watermark move with the ISR
        // alone: the eligible replicas go.
        image.apply(&MetadataRecord::TopicConfigsChanged {
            id,
            configs: BTreeMap::from([("min.insync.replicas".to_string(), "1".to_string())]),
        });
        assert_eq!(state(&image), (1, vec![1], vec![]));
    }

    #[test]
    fn isr_changes_and_elections_apply_only_from_the_state_they_were_proposed_in() {
        let (mut image, id) = on_three_brokers("r", BTreeMap::new());
        let state = |image: &MetadataImage| image.topic("r").unwrap().placement[0].clone();
        let shrink = |partition_epoch, isr: Vec<i32>| MetadataRecord::IsrChanged {
            id,
            partition: 0,
            leader_epoch: 0,
            partition_epoch,
            isr,
        };
        image.apply(&shrink(0, vec![1, 3]));
        assert_eq!(
            (state(&image).isr, state(&image).partition_epoch),
            (vec![1, 3], 1)
        );
        // Proposed from a stale partition epoch, without the leader, or with a fenced
        // member: nothing changes.
        for stale in [shrink(0, vec![1]), shrink(1, vec![3]), shrink(7, vec![1])] {
            image.apply(&stale);
            assert_eq!(state(&image).isr, [1, 3], "{stale:?}");
        }
        image.apply(&MetadataRecord::BrokerFenced {
            id: 2,
            controlled: false,
        });
        image.apply(&shrink(1, vec![1, 2, 3]));
        assert_eq!(state(&image).isr, [1, 3], "a fenced broker cannot join");
        // The preferred leader (1) moves away and is elected back by the rebalance.
        image.apply(&MetadataRecord::BrokerFenced {
            id: 1,
            controlled: true,
        });
        assert_eq!(state(&image).leader, 3);
        image.apply(&MetadataRecord::BrokerUnfenced {
            id: 1,
            incarnation: Uuid::from_u128(1),
        });
        assert!(image.preferred_elections(10).is_empty(), "1 is not in sync");
        let epoch = state(&image).partition_epoch;
        image.apply(&MetadataRecord::IsrChanged {
            id,
            partition: 0,
            leader_epoch: state(&image).leader_epoch,
            partition_epoch: epoch,
            isr: vec![1, 3],
        });
        let elections = image.preferred_elections(10);
        assert_eq!(elections.len(), 1);
        let before = state(&image);
        image.apply(&elections[0]);
        let after = state(&image);
        assert_eq!(after.leader, 1);
        assert_eq!(after.leader_epoch, before.leader_epoch + 1);
        // The same election again is stale: nothing moves.
        image.apply(&elections[0]);
        assert_eq!(state(&image), after);
        assert!(image.preferred_elections(10).is_empty());
    }

    /// A deterministic simulation of leadership in the image: sequences of broker events
    /// (fencing, unfencing, restarts, registrations) and topic creations, drawn from a
    /// seeded generator, with what clients and replication rely on checked after every
    /// record: a leader is a live member of the ISR, and a partition has none only when no
    /// ISR member is live; the ISR is a non-empty subset of the replicas; the leader epoch
    /// moves by one exactly when the leader changes (or restarts), and no epoch goes back;
    /// a snapshot rebuilds the same image.
    #[test]
    fn leadership_keeps_its_invariants_under_any_sequence_of_broker_events() {
        const BROKERS: u64 = 5;
        for seed in 1..=40u64 {
            // xorshift64: the same sequences on every run.
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = |below: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % below
            };
            let mut image = MetadataImage::default();
            let mut incarnations: BTreeMap<i32, u128> = BTreeMap::new();
            let mut topics = 0;
            for step in 0..300 {
                let broker = next(BROKERS) as i32 + 1;
                let record = match next(5) {
                    0 => {
                        // A topic of 1 to 3 partitions, each on 1 to 3 distinct brokers.
                        topics += 1;
                        let replicas = (0..=next(3))
                            .map(|_| {
                                let mut r: Vec<i32> = Vec::new();
                                for _ in 0..=next(3) {
                                    let b = next(BROKERS) as i32 + 1;
                                    if !r.contains(&b) {
                                        r.push(b);
                                    }
                                }
                                r
                            })
                            .collect::<Vec<_>>();
                        let min_isr = (1 + next(3)).to_string();
                        MetadataRecord::TopicCreated {
                            name: format!("t{topics}"),
                            id: Uuid::from_u128(topics),
                            partitions: replicas.len() as i32,
                            configs: BTreeMap::from([("min.insync.replicas".into(), min_isr)]),
                            replicas,
                        }
                    }
                    1 => MetadataRecord::BrokerFenced {
                        id: broker,
                        controlled: next(2) == 0,
                    },
                    2 => MetadataRecord::BrokerUnfenced {
                        id: broker,
                        incarnation: Uuid::from_u128(
                            incarnations.get(&broker).copied().unwrap_or_default(),
                        ),
                    },
                    _ => {
                        // A start: a new incarnation, whether or not the old was fenced.
                        let incarnation = u128::from(seed) << 32 | step as u128;
                        incarnations.insert(broker, incarnation);
                        MetadataRecord::BrokerRegistered {
                            id: broker,
                            incarnation: Uuid::from_u128(incarnation),
                            host: format!("127.0.0.{broker}"),
                            port: 9092,
                            rack: None,
                        }
                    }
                };
                let before = image.clone();
                image.apply(&record);
                let restarted = match &record {
                    MetadataRecord::BrokerRegistered { id, .. } => {
                        before.brokers.get(id).filter(|b| !b.fenced).map(|b| b.id)
                    }
                    _ => None,
                };
                let live = |b: i32| image.is_live(b);
                for topic in image.topics() {
                    let old = before.topic(&topic.name).map(|t| &t.placement);
                    for (i, p) in topic.placement.iter().enumerate() {
                        let at = format!(
                            "seed {seed} step {step} {record:?}: {}-{i} {p:?}",
                            topic.name
                        );
                        assert!(
                            !(p.isr.is_empty() && p.elr.is_empty()),
                            "{at}: nobody may lead cleanly"
                        );
                        assert!(
                            p.isr.iter().chain(&p.elr).all(|r| p.replicas.contains(r)),
                            "{at}: ISR or ELR outside the replicas"
                        );
                        assert!(
                            !p.elr.iter().any(|r| p.isr.contains(r)),
                            "{at}: in the ISR and eligible"
                        );
                        let min_isr = topic.configs["min.insync.replicas"]
                            .parse::<usize>()
                            .unwrap();
                        assert!(
                            p.elr.is_empty() || p.isr.len() < min_isr.min(p.replicas.len()),
                            "{at}: eligible replicas beside a big enough ISR"
                        );
                        if p.leader == NO_LEADER {
                            assert!(
                                !p.isr.iter().chain(&p.elr).any(|r| live(*r)),
                                "{at}: a live ISR or ELR member but no leader"
                            );
                        } else {
                            assert!(
                                p.isr.contains(&p.leader) && live(p.leader),
                                "{at}: leader not a live ISR member"
                            );
                        }
                        let Some(was) = old.and_then(|o| o.get(i)) else {
                            continue;
                        };
                        assert!(
                            p.leader_epoch >= was.leader_epoch
                                && p.partition_epoch >= was.partition_epoch,
                            "{at}: an epoch went back"
                        );
                        let bumps = i32::from(p.leader != was.leader)
                            + i32::from(restarted == Some(was.leader) && p.leader == was.leader);
                        assert_eq!(
                            p.leader_epoch - was.leader_epoch,
                            bumps,
                            "{at}: from {was:?}"
                        );
                        assert!(
                            p.partition_epoch - was.partition_epoch >= bumps,
                            "{at}: from {was:?}"
                        );
                    }
                }
            }
            let mut rebuilt = MetadataImage::default();
            for record in image.as_records() {
                rebuilt.apply(&record);
            }
            for topic in image.topics() {
                assert_eq!(
                    rebuilt.topic(&topic.name).map(|t| &t.placement),
                    Some(&topic.placement),
                    "seed {seed}: the snapshot of {}",
                    topic.name
                );
            }
            assert_eq!(rebuilt.brokers, image.brokers, "seed {seed}");
        }
    }

    #[test]
    fn partitions_written_before_the_cluster_are_led_by_the_local_node() {
        let mut image = MetadataImage::default();
        image.apply(&created("old"));
        let t = image.topic("old").unwrap();
        assert_eq!(image.leader(t, 0, 7), Some((7, 0)));
    }
}
