//! The registry of topics and their partitions' logs, kept in step with the metadata image.
//!
//! Every topic change is first made durable as a metadata record, then applied to disk
//! (partition directories) and to memory. On start-up the image replayed from the metadata
//! log is the truth: directories of topics it does not know are removed, missing ones made.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use odradek_storage::{GroupCommit, LockExt, Log, RwLockExt, StorageError};
use tokio::sync::Notify;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::{BrokerConfig, TopicSettings};
use crate::handlers::validate_topic_name;
use crate::metadata::{
    MetadataError, MetadataImage, MetadataRecord, MetadataStore, PartitionPlacement, TopicImage,
};
use crate::metrics::TopicLabel;
use crate::replication::ReplicaState;

/// One partition of a topic: its log when this broker holds a replica of it.
#[derive(Debug)]
pub struct Partition {
    pub index: i32,
    /// `None` when the partition's replicas are on other brokers.
    log: Option<Arc<Mutex<Log>>>,
    /// Woken after every append, for parked fetches.
    pub appended: Notify,
    /// The leader epoch in the metadata image, stamped on every batch appended here.
    leader_epoch: AtomicI32,
    /// The leader's view of its followers and the high watermark.
    pub replica: ReplicaState,
}

impl Partition {
    fn hosted(index: i32, log: Log, node_id: i32, high_watermark: i64) -> Self {
        Self {
            index,
            log: Some(Arc::new(Mutex::new(log))),
            appended: Notify::new(),
            leader_epoch: AtomicI32::new(0),
            replica: ReplicaState::new(node_id, high_watermark),
        }
    }

    fn elsewhere(index: i32, node_id: i32) -> Self {
        Self {
            index,
            log: None,
            appended: Notify::new(),
            leader_epoch: AtomicI32::new(0),
            replica: ReplicaState::new(node_id, 0),
        }
    }

    /// Takes the partition's placement from the metadata image: the leader epoch it stamps,
    /// and whether it leads or follows. A broker that starts leading notes its epoch in the
    /// log first (Kafka's makeLeader), so OffsetForLeaderEpoch and diverging followers see
    /// where the epoch starts before anything is written in it.
    fn take_placement(&self, placement: &PartitionPlacement, min_insync: usize) {
        self.leader_epoch
            .store(placement.leader_epoch, Ordering::Release);
        let Some(mut log) = self.lock_log() else {
            return;
        };
        let started = self.replica.apply_placement(
            placement,
            min_insync,
            log.log_end_offset(),
            odradek_storage::now_ms(),
        );
        if started {
            debug!(partition = self.index, epoch = placement.leader_epoch, isr = ?placement.isr, "leading");
            if let Err(e) = log.start_leader_epoch(placement.leader_epoch) {
                warn!(partition = self.index, error = %e, "cannot note the new leader epoch");
            }
        }
        drop(log);
        // Parked fetches re-check: a follower's fetch is refused now, a consumer's may see
        // a new high watermark.
        self.appended.notify_waiters();
    }

    /// The high watermark and the last stable offset (never past it) that readers see.
    pub fn visible_offsets(&self, log: &Log) -> (i64, i64) {
        let high_watermark = self.replica.high_watermark(log.log_end_offset());
        (high_watermark, log.last_stable_offset().min(high_watermark))
    }

    /// The leader epoch this broker stamps on what it appends (partitionLeaderEpoch).
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Whether this broker holds the partition's log.
    pub fn is_local(&self) -> bool {
        self.log.is_some()
    }

    /// The shared log (for the group commit, the cleaner, checkpoints), when held here.
    pub fn shared_log(&self) -> Option<&Arc<Mutex<Log>>> {
        self.log.as_ref()
    }

    /// The log, or `None` if it is held on another broker or a panic elsewhere poisoned
    /// its lock (then the partition is treated as offline rather than taking the broker
    /// down).
    pub fn lock_log(&self) -> Option<std::sync::MutexGuard<'_, Log>> {
        self.log.as_ref()?.lock().ok()
    }

    /// The log for serving reads: `None` while it is offline after a failed fsync, when
    /// what it holds past its last good flush cannot be trusted. Kafka answers reads of a
    /// partition on a failed log directory with KAFKA_STORAGE_ERROR.
    pub fn lock_online_log(&self) -> Option<std::sync::MutexGuard<'_, Log>> {
        self.lock_log().filter(|log| !log.is_offline())
    }
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    /// The name as the per-topic metrics' label, made once so that counting a produce or a
    /// fetch allocates nothing.
    pub metric_label: TopicLabel,
    pub id: Uuid,
    pub configs: BTreeMap<String, String>,
    pub settings: TopicSettings,
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    fn of(image: &TopicImage, settings: TopicSettings, partitions: Vec<Arc<Partition>>) -> Self {
        Self {
            name: image.name.clone(),
            metric_label: TopicLabel {
                topic: image.name.as_str().into(),
            },
            id: image.id,
            configs: image.configs.clone(),
            settings,
            partitions,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("topic {0} was committed but is not in the registry")]
    NotApplied(String),
    #[error("too many brokers raced to change the {0}")]
    Contended(&'static str),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl TopicError {
    /// Kafka's error code for a change that failed: a quorum that did not commit in time
    /// is REQUEST_TIMED_OUT (the client may retry), anything else a storage failure.
    pub fn response_error(&self) -> kafka_protocol::ResponseError {
        match self {
            TopicError::Metadata(MetadataError::Quorum(odradek_raft::QuorumError::Timeout(_))) => {
                kafka_protocol::ResponseError::RequestTimedOut
            }
            _ => kafka_protocol::ResponseError::KafkaStorageError,
        }
    }
}

#[derive(Default)]
struct Registry {
    by_name: HashMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

pub struct LogManager {
    data_dir: PathBuf,
    node_id: i32,
    /// Swapped as a whole when a dynamic config changes; readers take a snapshot.
    broker_config: RwLock<Arc<BrokerConfig>>,
    metadata: MetadataStore,
    /// Held while a change is checked against the image and proposed, so that this node's
    /// changes never interleave (other nodes' races are settled by the image's rules).
    writes: tokio::sync::Mutex<()>,
    /// The image this broker serves from, and the quorum index it holds; swapped under
    /// `applying`.
    image: RwLock<(u64, Arc<MetadataImage>)>,
    /// Held while an image is applied, so that images take effect one at a time and in
    /// order.
    applying: Mutex<()>,
    registry: RwLock<Registry>,
    group_commit: GroupCommit,
    /// Producer ids reserved in the metadata log and not yet handed out: [next, end).
    producer_ids: Mutex<(i64, i64)>,
    /// The high watermarks checkpointed by the last run, where partitions opened at
    /// start-up begin.
    checkpointed_high_watermarks: HashMap<(String, i32), i64>,
}

/// Producer ids reserved per metadata record, as Kafka's `ProducerIdManager` does.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Proposals of a conditional record (one that may lose a race with another broker's)
/// before giving up: each lost race means another broker made progress.
const MAX_WRITE_ATTEMPTS: usize = 16;

/// Kafka's partition directory name.
fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// Records which topic a partition directory belongs to, so a directory left behind by a
/// deleted topic is never mistaken for a new topic of the same name.
const TOPIC_ID_FILE: &str = "partition.metadata";

/// The topic and partition a directory named `<topic>-<partition>` holds, if its name has
/// that shape (a valid topic name, a partition number).
fn parse_partition_dir(name: &str) -> Option<(&str, i32)> {
    let (topic, index) = name.rsplit_once('-')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index = index.parse::<i32>().ok()?;
    validate_topic_name(topic).ok()?;
    (!topic.starts_with("__cluster_metadata")).then_some((topic, index))
}

/// `<topic>-<partition>.<topic id>-delete`, the name `delete_topic` renames a partition to.
fn is_deleted_partition_dir(name: &str) -> bool {
    name.strip_suffix("-delete")
        .and_then(|rest| rest.rsplit_once('.'))
        .is_some_and(|(dir, id)| parse_partition_dir(dir).is_some() && Uuid::try_parse(id).is_ok())
}

/// The directories in `data_dir` named like a partition (`<topic>-<partition>`) that no topic
/// of `image` owns: an unknown topic, a partition beyond its count, or another topic id.
pub fn stray_partition_dirs(data_dir: &Path, image: &MetadataImage) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut stray: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            parse_partition_dir(&name).is_some_and(|(topic, index)| {
                !image.topic(topic).is_some_and(|t| {
                    index < t.partitions && read_topic_id(path).is_none_or(|id| id == t.id)
                })
            })
        })
        .collect();
    stray.sort();
    stray
}

fn read_topic_id(dir: &Path) -> Option<Uuid> {
    let text = fs::read_to_string(dir.join(TOPIC_ID_FILE)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
}

impl LogManager {
    /// Opens every partition of every topic in the metadata image.
    pub fn open(
        data_dir: &Path,
        broker_config: BrokerConfig,
        clean_shutdown: bool,
    ) -> Result<Self, TopicError> {
        let metadata_dir = data_dir.join("__cluster_metadata-0");
        let node_id = broker_config.node_id();
        let spec = broker_config.quorum()?;
        let (metadata, _) = tokio::runtime::Handle::current().block_on(MetadataStore::open(
            &metadata_dir,
            node_id,
            &spec,
        ))?;
        let (index, image) = metadata.image();
        let manager = Self {
            data_dir: data_dir.to_path_buf(),
            node_id,
            broker_config: RwLock::new(Arc::new(broker_config)),
            metadata,
            writes: tokio::sync::Mutex::new(()),
            image: RwLock::new((index, Arc::new(image.clone()))),
            applying: Mutex::new(()),
            registry: RwLock::new(Registry::default()),
            group_commit: GroupCommit::try_start().map_err(|source| StorageError::Io {
                path: data_dir.to_path_buf(),
                source,
            })?,
            producer_ids: Mutex::new((image.next_producer_id, image.next_producer_id)),
            checkpointed_high_watermarks: crate::replication::checkpoint::read(data_dir),
        };
        // Dynamic configs from the metadata log apply before any topic is opened.
        manager.apply_dynamic_configs(&image);
        manager.set_aside_stray_directories(&image);
        let mut registry = Registry::default();
        for topic in manager.open_all(&image, clean_shutdown)? {
            let topic = Arc::new(topic);
            registry.by_id.insert(topic.id, topic.clone());
            registry.by_name.insert(topic.name.clone(), topic);
        }
        *manager.registry.write_or_recover() = registry;
        Ok(manager)
    }

    /// Opens every partition of the image on `num.recovery.threads.per.data.dir` threads:
    /// after a crash each log re-checks what its recovery point does not cover, which is
    /// CRC work that spreads over cores.
    fn open_all(&self, image: &MetadataImage, clean: bool) -> Result<Vec<Topic>, TopicError> {
        let topics: Vec<(&TopicImage, TopicSettings)> = image
            .topics()
            .map(|t| (t, TopicSettings::resolve(&self.broker_config(), &t.configs)))
            .collect();
        let work: Vec<(usize, i32)> = topics
            .iter()
            .enumerate()
            .flat_map(|(t, (image, _))| (0..image.partitions).map(move |p| (t, p)))
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let opened = Mutex::new(Vec::with_capacity(work.len()));
        let threads = self.broker_config().recovery_threads().min(work.len());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(t, p)) = work.get(at) else {
                            return;
                        };
                        let (image, settings) = &topics[t];
                        let partition = self.open_partition(image, p, settings, clean);
                        opened.lock_or_recover().push((at, partition));
                    }
                });
            }
        });
        let mut opened = opened
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        opened.sort_by_key(|(at, _)| *at);
        let mut partitions = opened.into_iter().map(|(_, p)| p);
        topics
            .into_iter()
            .map(|(image, settings)| {
                let count = image.partitions.max(0) as usize;
                let opened = partitions.by_ref().take(count).collect::<Result<_, _>>()?;
                Ok(Topic::of(image, settings, opened))
            })
            .collect()
    }

    /// Sets aside partition directories that no topic in the image owns, renaming them
    /// `<topic>-<partition>.<id>-stray` as Kafka does: the metadata may be what is wrong, so
    /// their data is kept for a person to look at. Directories of a delete that a crash
    /// interrupted (`…-delete`, whose deletion is durable in the metadata log) are removed.
    /// Nothing else in the data dir is touched.
    fn set_aside_stray_directories(&self, image: &MetadataImage) {
        let Ok(entries) = fs::read_dir(&self.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && is_deleted_partition_dir(&entry.file_name().to_string_lossy()) {
                info!(dir = %path.display(), "removing the directory of a deleted partition");
                if let Err(e) = fs::remove_dir_all(&path) {
                    warn!(dir = %path.display(), error = %e, "cannot remove a deleted partition");
                }
            }
        }
        for path in stray_partition_dirs(&self.data_dir, image) {
            let id = read_topic_id(&path).unwrap_or_else(Uuid::new_v4);
            let mut aside = path.clone().into_os_string();
            aside.push(format!(".{}-stray", id.simple()));
            let aside = PathBuf::from(aside);
            warn!(dir = %path.display(), renamed_to = %aside.display(), "the metadata has no such partition: setting its directory aside");
            if let Err(e) = fs::rename(&path, &aside) {
                warn!(dir = %path.display(), error = %e, "cannot set a stray partition directory aside");
            }
        }
    }

    /// Partition `index`'s placement; one written before the cluster lives and is led here
    /// alone.
    fn placement_of(&self, topic: &TopicImage, index: i32) -> PartitionPlacement {
        topic
            .placement(index)
            .cloned()
            .unwrap_or_else(|| PartitionPlacement::local(self.node_id))
    }

    /// Whether this broker holds a replica of `topic`'s partition `index`. Partitions
    /// written before the cluster have no replica list and are all here.
    fn hosts(&self, topic: &TopicImage, index: i32) -> bool {
        let replicas = topic.replicas(index);
        replicas.is_empty() || replicas.contains(&self.node_id)
    }

    /// The partition as this broker has it: its log opened (or made) when a replica is
    /// here, else a placeholder that tells the handlers it is served elsewhere.
    fn open_partition(
        &self,
        topic: &TopicImage,
        index: i32,
        settings: &TopicSettings,
        clean: bool,
    ) -> Result<Arc<Partition>, TopicError> {
        if !self.hosts(topic, index) {
            return Ok(Arc::new(Partition::elsewhere(index, self.node_id)));
        }
        let dir = partition_dir(&self.data_dir, &topic.name, index);
        let log = Log::open(&dir, settings.log.clone(), clean)?;
        if read_topic_id(&dir) != Some(topic.id) {
            let meta = dir.join(TOPIC_ID_FILE);
            fs::write(&meta, format!("version: 0\ntopic_id: {}\n", topic.id)).map_err(|e| {
                StorageError::Io {
                    path: meta,
                    source: e,
                }
            })?;
        }
        let high_watermark = self
            .checkpointed_high_watermarks
            .get(&(topic.name.clone(), index))
            .copied()
            .unwrap_or(0)
            .clamp(log.log_start_offset(), log.log_end_offset());
        let partition = Partition::hosted(index, log, self.node_id, high_watermark);
        partition.take_placement(
            &self.placement_of(topic, index),
            settings.min_insync_replicas,
        );
        Ok(Arc::new(partition))
    }

    fn open_topic(
        &self,
        image: &TopicImage,
        existing: usize,
        clean: bool,
    ) -> Result<Topic, TopicError> {
        let settings = TopicSettings::resolve(&self.broker_config(), &image.configs);
        let partitions = (existing as i32..image.partitions)
            .map(|i| self.open_partition(image, i, &settings, clean))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Topic::of(image, settings, partitions))
    }

    pub fn broker_config(&self) -> Arc<BrokerConfig> {
        self.broker_config.read_or_recover().clone()
    }

    /// Replaces a dynamic broker config layer durably; every topic's settings are
    /// re-resolved against it and applied to its logs at once.
    pub async fn alter_broker_configs(
        &self,
        node: Option<i32>,
        configs: BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        let _writing = self.writes.lock().await;
        if self
            .broker_config()
            .with_dynamic(node, configs.clone())
            .is_err()
        {
            // Validated by the caller; a config that no longer validates changes nothing.
            return Ok(());
        }
        self.commit(&[MetadataRecord::BrokerConfigsChanged { node, configs }])
            .await?;
        info!(?node, "altered dynamic broker configs");
        Ok(())
    }

    /// Makes this broker's config and open logs what `image` says: the one place where a
    /// committed metadata change takes effect here. Changes are made from the image, not
    /// from the request that caused them, so a change another node commits (once there is
    /// a cluster) takes the same path. Blocking: it may open logs.
    fn apply_image(&self, image: &MetadataImage) -> Result<(), TopicError> {
        self.apply_dynamic_configs(image);
        let gone: Vec<Arc<Topic>> = self
            .topics()
            .into_iter()
            .filter(|t| image.topic_by_id(&t.id).is_none())
            .collect();
        // Removals first: a topic deleted and created again under its name has a new id.
        for topic in gone {
            self.remove_topic(&topic);
        }
        for wanted in image.topics() {
            let settings = TopicSettings::resolve(&self.broker_config(), &wanted.configs);
            let updated = match self.topic_by_id(&wanted.id) {
                None => {
                    let created = self.open_topic(wanted, 0, true)?;
                    info!(topic = %wanted.name, partitions = wanted.partitions, id = %wanted.id, "created topic");
                    created
                }
                Some(current) => {
                    for p in &current.partitions {
                        p.take_placement(
                            &self.placement_of(wanted, p.index),
                            settings.min_insync_replicas,
                        );
                    }
                    let have = current.partitions.len();
                    let grown = usize::try_from(wanted.partitions).is_ok_and(|n| n > have);
                    let moved: Vec<usize> = current
                        .partitions
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.is_local() != self.hosts(wanted, p.index))
                        .map(|(i, _)| i)
                        .collect();
                    if !grown
                        && moved.is_empty()
                        && current.configs == wanted.configs
                        && current.settings == settings
                    {
                        continue;
                    }
                    let mut partitions = current.partitions.clone();
                    for i in moved {
                        let index = partitions[i].index;
                        let was_here = partitions[i].is_local();
                        partitions[i] = self.open_partition(wanted, index, &settings, true)?;
                        info!(topic = %wanted.name, partition = index, here = partitions[i].is_local(), "partition placement changed");
                        if was_here {
                            // Reassigned away: the replica here is no longer one (Kafka
                            // deletes it too).
                            current.partitions[i].appended.notify_waiters();
                            self.discard_partition_dir(&wanted.name, wanted.id, index);
                        }
                    }
                    if grown {
                        partitions.extend(self.open_topic(wanted, have, true)?.partitions);
                        info!(topic = %wanted.name, partitions = wanted.partitions, "added partitions");
                    }
                    if current.settings != settings {
                        for partition in &current.partitions {
                            if let Some(mut log) = partition.lock_log() {
                                log.set_config(settings.log.clone());
                            }
                        }
                    }
                    Topic::of(wanted, settings, partitions)
                }
            };
            let updated = Arc::new(updated);
            let mut registry = self.registry.write_or_recover();
            registry.by_id.insert(updated.id, updated.clone());
            registry.by_name.insert(updated.name.clone(), updated);
        }
        Ok(())
    }

    /// The dynamic broker config layers of `image` (cluster-wide, and this node's) over the
    /// static config.
    fn apply_dynamic_configs(&self, image: &MetadataImage) {
        let current = self.broker_config();
        let node = current.node_id();
        let mut next = (*current).clone();
        for layer in [None, Some(node)] {
            let wanted = image
                .broker_configs
                .get(&layer)
                .cloned()
                .unwrap_or_default();
            if next.dynamic(layer) == &wanted {
                continue;
            }
            match next.with_dynamic(layer, wanted) {
                Ok(config) => next = config,
                Err(e) => warn!(error = %e, "ignoring a stored dynamic broker config"),
            }
        }
        if next.dynamic(None) != current.dynamic(None)
            || next.dynamic(Some(node)) != current.dynamic(Some(node))
        {
            *self.broker_config.write_or_recover() = Arc::new(next);
        }
    }

    /// Takes a deleted topic out of the registry, renames its directories out of the way
    /// (freeing the name at once) and removes them in the background.
    fn remove_topic(&self, topic: &Topic) {
        {
            let mut registry = self.registry.write_or_recover();
            registry.by_id.remove(&topic.id);
            registry.by_name.remove(&topic.name);
        }
        for partition in &topic.partitions {
            partition.appended.notify_waiters();
            self.discard_partition_dir(&topic.name, topic.id, partition.index);
        }
        info!(topic = %topic.name, id = %topic.id, "deleted topic");
    }

    /// Renames a partition's directory out of the way (`…-delete`, freeing its name at
    /// once; a crash before the removal finishes is cleaned up at start-up) and removes it
    /// in the background. A directory that is not there (a replica held elsewhere) is
    /// nothing to do.
    fn discard_partition_dir(&self, topic: &str, id: Uuid, index: i32) {
        let dir = partition_dir(&self.data_dir, topic, index);
        if !dir.exists() {
            return;
        }
        let doomed = self
            .data_dir
            .join(format!("{topic}-{index}.{}-delete", id.simple()));
        match fs::rename(&dir, &doomed) {
            Ok(()) => {
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = fs::remove_dir_all(&doomed) {
                        warn!(dir = %doomed.display(), error = %e, "cannot remove a discarded partition");
                    }
                });
            }
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot move a discarded partition aside")
            }
        }
    }

    pub fn group_commit(&self) -> &GroupCommit {
        &self.group_commit
    }

    /// Asks the group commit to fsync `partition`'s log (a partition held elsewhere has
    /// nothing here to sync; its waiter is dropped, which its receiver sees as a failure).
    pub fn sync(&self, partition: &Partition, waiter: Option<odradek_storage::DurabilityWaiter>) {
        if let Some(log) = partition.shared_log() {
            self.group_commit.request(log, waiter);
        }
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.registry.read_or_recover().by_name.get(name).cloned()
    }
    pub fn topic_by_id(&self, id: &Uuid) -> Option<Arc<Topic>> {
        self.registry.read_or_recover().by_id.get(id).cloned()
    }
    /// Partition `index` of topic `name`, if both exist.
    pub fn partition(&self, name: &str, index: i32) -> Option<Arc<Partition>> {
        let topic = self.topic(name)?;
        usize::try_from(index)
            .ok()
            .and_then(|i| topic.partitions.get(i).cloned())
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self
            .registry
            .read_or_recover()
            .by_name
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// A producer id never handed out before, not even before a crash, nor by another
    /// broker: each broker reserves blocks of ids in the metadata log.
    pub async fn allocate_producer_id(&self) -> Result<i64, TopicError> {
        let take = |ids: &mut (i64, i64)| {
            ids.0 += 1;
            ids.0 - 1
        };
        {
            let mut ids = self.producer_ids.lock_or_recover();
            if ids.0 < ids.1 {
                return Ok(take(&mut ids));
            }
        }
        // Only the holder of the write lock moves the end of the block.
        let _writing = self.writes.lock().await;
        {
            let mut ids = self.producer_ids.lock_or_recover();
            if ids.0 < ids.1 {
                return Ok(take(&mut ids));
            }
        }
        // Another broker may reserve the same block at once: the image keeps the first
        // reservation, and the loser tries again from the new end.
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let from = self.image().next_producer_id;
            let next = from + PRODUCER_ID_BLOCK;
            self.commit(&[MetadataRecord::ProducerIdsReserved {
                next,
                from: Some(from),
                owner: Some(self.node_id),
            }])
            .await?;
            let image = self.image();
            if image.next_producer_id == next && image.producer_id_block_owner == Some(self.node_id)
            {
                let mut ids = self.producer_ids.lock_or_recover();
                *ids = (from, next);
                return Ok(take(&mut ids));
            }
        }
        Err(TopicError::Contended("producer id block"))
    }

    /// Creates a topic durably. The caller has validated name, count, configs and, when
    /// given, the replica assignment; without one the partitions are spread over the live
    /// brokers.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        assignment: Option<Vec<Vec<i32>>>,
    ) -> Result<Arc<Topic>, TopicError> {
        let _writing = self.writes.lock().await;
        if let Some(existing) = self.topic(name) {
            // Lost a race with another creator of the same name: theirs stands.
            return Ok(existing);
        }
        let id = Uuid::new_v4();
        let replicas = match assignment {
            Some(replicas) => replicas,
            None => self.place(0, partitions, replication_factor),
        };
        let record = MetadataRecord::TopicCreated {
            name: name.to_string(),
            id,
            partitions,
            configs,
            replicas,
        };
        self.commit(&[record]).await?;
        // Another broker's creation of the name may have committed first.
        self.topic(name)
            .ok_or_else(|| TopicError::NotApplied(name.to_string()))
    }

    /// `factor` replicas for each of partitions `from..to` (fewer when fewer brokers are
    /// live), spread round-robin over the live brokers (alternating racks where
    /// `broker.rack` is set): partition p's first replica, its preferred leader, is the
    /// p-th broker from a random start, so that leaders spread too, and its other replicas
    /// the brokers after it.
    fn place(&self, from: i32, to: i32, factor: i16) -> Vec<Vec<i32>> {
        let image = self.image();
        let mut brokers: Vec<(i32, Option<&str>)> = image
            .live_brokers()
            .map(|b| (b.id, b.rack.as_deref()))
            .collect();
        if brokers.is_empty() {
            brokers.push((self.node_id, None));
        }
        let order = crate::placement::rack_alternated(&brokers);
        // Kafka starts each topic at a random broker so that first partitions spread too.
        let start = Uuid::new_v4().as_u128() as usize;
        let factor = usize::try_from(factor).unwrap_or(1).clamp(1, order.len());
        (from..to)
            .map(|p| {
                (0..factor)
                    .map(|k| order[(start + p as usize + k) % order.len()])
                    .collect()
            })
            .collect()
    }

    /// Grows a topic to `count` partitions, placed as `assignment` says (by new partition)
    /// or spread over the live brokers.
    pub async fn add_partitions(
        &self,
        topic: &Topic,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
    ) -> Result<(), TopicError> {
        let _writing = self.writes.lock().await;
        let Some(current) = self.topic_by_id(&topic.id) else {
            return Ok(());
        };
        let from = current.partitions.len() as i32;
        if count <= from {
            return Ok(());
        }
        let record = MetadataRecord::PartitionsAdded {
            id: topic.id,
            partitions: count,
            from: Some(from),
            replicas: assignment.unwrap_or_else(|| {
                let image = self.image();
                let factor = image
                    .topic_by_id(&topic.id)
                    .map_or(1, |t| t.replicas(0).len().max(1));
                self.place(from, count, i16::try_from(factor).unwrap_or(1))
            }),
        };
        self.commit(&[record]).await
    }

    /// Replaces a topic's config overrides durably and applies them to its logs at once.
    pub async fn alter_topic_configs(
        &self,
        id: Uuid,
        configs: BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        let _writing = self.writes.lock().await;
        if self.topic_by_id(&id).is_none() {
            return Ok(());
        }
        self.commit(&[MetadataRecord::TopicConfigsChanged { id, configs }])
            .await
    }

    /// Deletes a topic: durable in the metadata log first, then its directories go.
    pub async fn delete_topic(&self, id: Uuid) -> Result<(), TopicError> {
        let _writing = self.writes.lock().await;
        if self.topic_by_id(&id).is_none() {
            return Ok(());
        }
        self.commit(&[MetadataRecord::TopicDeleted { id }]).await
    }

    /// Makes `records` durable (through the quorum leader, wherever it is) and lets them
    /// take effect here before returning.
    pub(crate) async fn commit(&self, records: &[MetadataRecord]) -> Result<(), TopicError> {
        self.metadata.append(records).await?;
        tokio::task::block_in_place(|| self.catch_up())
    }

    /// Applies what the quorum has applied since the last call: the one way a metadata
    /// change, this node's or another's, takes effect here. Blocking: it may open logs.
    pub fn catch_up(&self) -> Result<(), TopicError> {
        let _applying = self.applying.lock_or_recover();
        let (index, image) = self.metadata.image();
        if index <= self.image.read_or_recover().0 {
            return Ok(());
        }
        let outcome = self.apply_image(&image);
        *self.image.write_or_recover() = (index, Arc::new(image));
        outcome
    }

    /// The metadata image this broker serves from.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read_or_recover().1.clone()
    }

    /// The image with the index of the last metadata log entry in it.
    pub fn image_with_index(&self) -> (u64, Arc<MetadataImage>) {
        let image = self.image.read_or_recover();
        (image.0, image.1.clone())
    }

    /// `topic`'s partition `index`'s replicas (this broker alone for a partition written
    /// before the cluster).
    pub fn replicas(&self, topic: &str, index: i32) -> Vec<i32> {
        let image = self.image();
        image
            .topic(topic)
            .map(|t| image.replicas(t, index, self.node_id))
            .unwrap_or_default()
    }

    /// Who leads `topic`'s partition `index` now (None: nobody, its broker is fenced).
    pub fn leader(&self, topic: &str, index: i32) -> Option<i32> {
        self.leadership(topic, index).map(|(leader, _)| leader)
    }

    /// Who leads `topic`'s partition `index` now, and at which leader epoch.
    pub fn leadership(&self, topic: &str, index: i32) -> Option<(i32, i32)> {
        let image = self.image();
        let topic = image.topic(topic)?;
        image.leader(topic, index, self.node_id)
    }

    /// The metadata quorum, for the controller and for what asks about the quorum.
    pub fn metadata(&self) -> &MetadataStore {
        &self.metadata
    }

    /// Writes every local partition's high watermark to the checkpoint file.
    pub fn checkpoint_high_watermarks(&self) -> Result<(), StorageError> {
        let mut offsets = Vec::new();
        for topic in self.topics() {
            for partition in &topic.partitions {
                if let Some(log) = partition.lock_log() {
                    let (high_watermark, _) = partition.visible_offsets(&log);
                    offsets.push((topic.name.clone(), partition.index, high_watermark));
                }
            }
        }
        crate::replication::checkpoint::write(&self.data_dir, &offsets).map_err(|source| {
            StorageError::Io {
                path: self.data_dir.join(crate::replication::checkpoint::FILE),
                source,
            }
        })
    }

    /// Syncs and closes every log for a clean shutdown.
    pub fn close_all(&self) -> Result<(), StorageError> {
        tokio::runtime::Handle::current().block_on(self.metadata.shutdown());
        self.group_commit.shutdown();
        if let Err(e) = self.checkpoint_high_watermarks() {
            warn!(error = %e, "cannot checkpoint the high watermarks");
        }
        for topic in self.topics() {
            for partition in &topic.partitions {
                if let Some(mut log) = partition.lock_log() {
                    log.close()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_shaped_like_partitions_are_partition_dirs() {
        assert_eq!(parse_partition_dir("orders-0"), Some(("orders", 0)));
        assert_eq!(parse_partition_dir("my-topic-12"), Some(("my-topic", 12)));
        for other in [
            "lost+found",
            "orders",
            "orders-+1",
            "orders-",
            "orders-x",
            "__cluster_metadata-0",
            "orders-0.0123456789abcdef0123456789abcdef-stray",
            "a b-0",
        ] {
            assert_eq!(parse_partition_dir(other), None, "{other}");
        }
        let id = Uuid::new_v4().simple();
        assert!(is_deleted_partition_dir(&format!("orders-0.{id}-delete")));
        assert!(!is_deleted_partition_dir("orders-0-delete"));
        assert!(!is_deleted_partition_dir(&format!("orders-0.{id}-stray")));
    }

    #[test]
    fn directories_the_metadata_does_not_own_are_stray_and_nothing_else_is() {
        let data = tempfile::tempdir().unwrap();
        let mut image = MetadataImage::default();
        let id = Uuid::new_v4();
        image.apply(&MetadataRecord::TopicCreated {
            name: "kept".into(),
            id,
            partitions: 1,
            configs: BTreeMap::new(),
            replicas: Vec::new(),
        });
        for dir in ["kept-0", "kept-1", "gone-0", "lost+found", "notes"] {
            fs::create_dir(data.path().join(dir)).unwrap();
        }
        let reused = data.path().join("kept-0");
        fs::write(
            reused.join(TOPIC_ID_FILE),
            "topic_id: ".to_string() + &id.to_string(),
        )
        .unwrap();
        let stray: Vec<_> = stray_partition_dirs(data.path(), &image)
            .into_iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(stray, ["gone-0", "kept-1"]);
        fs::write(
            reused.join(TOPIC_ID_FILE),
            format!("topic_id: {}\n", Uuid::new_v4()),
        )
        .unwrap();
        assert_eq!(stray_partition_dirs(data.path(), &image).len(), 3);
    }
}
