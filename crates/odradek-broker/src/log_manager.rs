//! The registry of topics and their partitions' logs, kept in step with the metadata image.
//!
//! Every topic change is first made durable as a metadata record, then applied to disk
//! (partition directories) and to memory. On start-up the image replayed from the metadata
//! log is the truth: directories of topics it does not know are removed, missing ones made.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use odradek_storage::{GroupCommit, Log, StorageError};
use tokio::sync::Notify;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::{BrokerConfig, TopicSettings};
use crate::handlers::validate_topic_name;
use crate::metadata::{MetadataError, MetadataImage, MetadataRecord, MetadataStore, TopicImage};
use crate::metrics::TopicLabel;

/// One partition this broker leads (all of them, on a single node).
#[derive(Debug)]
pub struct Partition {
    pub index: i32,
    pub log: Arc<Mutex<Log>>,
    /// Woken after every append, for parked fetches.
    pub appended: Notify,
}

impl Partition {
    /// The log, or `None` if a panic elsewhere poisoned its lock (then the partition is
    /// treated as offline rather than taking the broker down).
    pub fn lock_log(&self) -> Option<std::sync::MutexGuard<'_, Log>> {
        self.log.lock().ok()
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

    /// The same topic and partitions under new configs.
    fn reconfigured(&self, configs: BTreeMap<String, String>, settings: TopicSettings) -> Self {
        Self {
            name: self.name.clone(),
            metric_label: self.metric_label.clone(),
            id: self.id,
            configs,
            settings,
            partitions: self.partitions.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Default)]
struct Registry {
    by_name: HashMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

pub struct LogManager {
    data_dir: PathBuf,
    /// Swapped as a whole when a dynamic config changes; readers take a snapshot.
    broker_config: RwLock<Arc<BrokerConfig>>,
    /// Held while a change is checked against the registry and made durable, so that two
    /// changes never interleave.
    metadata_log: tokio::sync::Mutex<MetadataStore>,
    registry: RwLock<Registry>,
    group_commit: GroupCommit,
    /// Producer ids reserved in the metadata log and not yet handed out: [next, end).
    producer_ids: Mutex<(i64, i64)>,
}

/// Producer ids reserved per metadata record, as Kafka's `ProducerIdManager` does.
const PRODUCER_ID_BLOCK: i64 = 1000;

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
        let (metadata_log, image) = tokio::runtime::Handle::current()
            .block_on(MetadataStore::open(&metadata_dir, broker_config.node_id()))?;
        let manager = Self {
            data_dir: data_dir.to_path_buf(),
            broker_config: RwLock::new(Arc::new(broker_config)),
            metadata_log: tokio::sync::Mutex::new(metadata_log),
            registry: RwLock::new(Registry::default()),
            group_commit: GroupCommit::start(),
            producer_ids: Mutex::new((image.next_producer_id, image.next_producer_id)),
        };
        // Dynamic configs from the metadata log apply before any topic is opened.
        for (node, configs) in &image.broker_configs {
            if node.is_none() || *node == Some(manager.broker_config().node_id()) {
                match manager.broker_config().with_dynamic(*node, configs.clone()) {
                    Ok(config) => {
                        *manager.broker_config.write().expect("config lock") = Arc::new(config)
                    }
                    Err(e) => warn!(error = %e, "ignoring a stored dynamic broker config"),
                }
            }
        }
        manager.set_aside_stray_directories(&image);
        let mut registry = Registry::default();
        for topic in manager.open_all(&image, clean_shutdown)? {
            let topic = Arc::new(topic);
            registry.by_id.insert(topic.id, topic.clone());
            registry.by_name.insert(topic.name.clone(), topic);
        }
        *manager.registry.write().expect("registry lock") = registry;
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
                        opened
                            .lock()
                            .expect("opened partitions")
                            .push((at, partition));
                    }
                });
            }
        });
        let mut opened = opened.into_inner().expect("opened partitions");
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

    fn open_partition(
        &self,
        topic: &TopicImage,
        index: i32,
        settings: &TopicSettings,
        clean: bool,
    ) -> Result<Arc<Partition>, TopicError> {
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
        Ok(Arc::new(Partition {
            index,
            log: Arc::new(Mutex::new(log)),
            appended: Notify::new(),
        }))
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
        self.broker_config.read().expect("config lock").clone()
    }

    /// Replaces a dynamic broker config layer durably; every topic's settings are
    /// re-resolved against it and applied to its logs at once.
    pub async fn alter_broker_configs(
        &self,
        node: Option<i32>,
        configs: BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        let metadata_log = self.metadata_log.lock().await;
        let Ok(next) = self.broker_config().with_dynamic(node, configs.clone()) else {
            // Validated by the caller; a config that no longer validates changes nothing.
            return Ok(());
        };
        let record = MetadataRecord::BrokerConfigsChanged { node, configs };
        metadata_log.append(std::slice::from_ref(&record)).await?;
        *self.broker_config.write().expect("config lock") = Arc::new(next);
        for topic in self.topics() {
            let settings = TopicSettings::resolve(&self.broker_config(), &topic.configs);
            if settings == topic.settings {
                continue;
            }
            for partition in &topic.partitions {
                if let Some(mut log) = partition.lock_log() {
                    log.set_config(settings.log.clone());
                }
            }
            let updated = Arc::new(topic.reconfigured(topic.configs.clone(), settings));
            let mut registry = self.registry.write().expect("registry lock");
            registry.by_id.insert(updated.id, updated.clone());
            registry.by_name.insert(updated.name.clone(), updated);
        }
        info!(?node, "altered dynamic broker configs");
        Ok(())
    }
    pub fn group_commit(&self) -> &GroupCommit {
        &self.group_commit
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.registry
            .read()
            .expect("registry lock")
            .by_name
            .get(name)
            .cloned()
    }
    pub fn topic_by_id(&self, id: &Uuid) -> Option<Arc<Topic>> {
        self.registry
            .read()
            .expect("registry lock")
            .by_id
            .get(id)
            .cloned()
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
            .read()
            .expect("registry lock")
            .by_name
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Creates a topic durably. The caller has validated name, count and configs.
    /// A producer id never handed out before, not even before a crash.
    pub async fn allocate_producer_id(&self) -> Result<i64, TopicError> {
        let take = |ids: &mut (i64, i64)| {
            ids.0 += 1;
            ids.0 - 1
        };
        {
            let mut ids = self.producer_ids.lock().expect("producer id lock");
            if ids.0 < ids.1 {
                return Ok(take(&mut ids));
            }
        }
        // Only the holder of the metadata lock moves the end of the block.
        let metadata_log = self.metadata_log.lock().await;
        let end = {
            let mut ids = self.producer_ids.lock().expect("producer id lock");
            if ids.0 < ids.1 {
                return Ok(take(&mut ids));
            }
            ids.1
        };
        let record = MetadataRecord::ProducerIdsReserved {
            next: end + PRODUCER_ID_BLOCK,
        };
        metadata_log.append(std::slice::from_ref(&record)).await?;
        let mut ids = self.producer_ids.lock().expect("producer id lock");
        ids.1 = end + PRODUCER_ID_BLOCK;
        Ok(take(&mut ids))
    }

    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let metadata_log = self.metadata_log.lock().await;
        if let Some(existing) = self.topic(name) {
            // Lost a race with another creator of the same name: theirs stands.
            return Ok(existing);
        }
        let image = TopicImage {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs,
        };
        let record = MetadataRecord::TopicCreated {
            name: image.name.clone(),
            id: image.id,
            partitions,
            configs: image.configs.clone(),
        };
        metadata_log.append(std::slice::from_ref(&record)).await?;
        let topic = Arc::new(tokio::task::block_in_place(|| {
            self.open_topic(&image, 0, true)
        })?);
        let mut registry = self.registry.write().expect("registry lock");
        registry.by_id.insert(topic.id, topic.clone());
        registry.by_name.insert(topic.name.clone(), topic.clone());
        info!(topic = name, partitions, id = %topic.id, "created topic");
        Ok(topic)
    }

    /// Grows a topic to `count` partitions.
    pub async fn add_partitions(&self, topic: &Topic, count: i32) -> Result<(), TopicError> {
        let metadata_log = self.metadata_log.lock().await;
        let Some(current) = self.topic_by_id(&topic.id) else {
            return Ok(());
        };
        if count <= current.partitions.len() as i32 {
            return Ok(());
        }
        let record = MetadataRecord::PartitionsAdded {
            id: topic.id,
            partitions: count,
        };
        metadata_log.append(std::slice::from_ref(&record)).await?;
        let image = TopicImage {
            name: current.name.clone(),
            id: current.id,
            partitions: count,
            configs: current.configs.clone(),
        };
        let added = tokio::task::block_in_place(|| {
            self.open_topic(&image, current.partitions.len(), true)
        })?;
        let mut partitions = current.partitions.clone();
        partitions.extend(added.partitions);
        let grown = Arc::new(Topic {
            partitions,
            ..added
        });
        let mut registry = self.registry.write().expect("registry lock");
        registry.by_id.insert(grown.id, grown.clone());
        registry.by_name.insert(grown.name.clone(), grown);
        info!(topic = %current.name, partitions = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config overrides durably and applies them to its logs at once.
    pub async fn alter_topic_configs(
        &self,
        id: Uuid,
        configs: BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        let metadata_log = self.metadata_log.lock().await;
        let Some(current) = self.topic_by_id(&id) else {
            return Ok(());
        };
        let record = MetadataRecord::TopicConfigsChanged {
            id,
            configs: configs.clone(),
        };
        metadata_log.append(std::slice::from_ref(&record)).await?;
        let settings = TopicSettings::resolve(&self.broker_config(), &configs);
        for partition in &current.partitions {
            if let Some(mut log) = partition.lock_log() {
                log.set_config(settings.log.clone());
            }
        }
        let altered = Arc::new(current.reconfigured(configs, settings));
        let mut registry = self.registry.write().expect("registry lock");
        registry.by_id.insert(id, altered.clone());
        registry.by_name.insert(altered.name.clone(), altered);
        info!(topic = %current.name, "altered topic configs");
        Ok(())
    }

    /// Deletes a topic: durable in the metadata log first, then its directories are renamed
    /// out of the way (freeing the name at once) and removed in the background.
    pub async fn delete_topic(&self, id: Uuid) -> Result<(), TopicError> {
        let metadata_log = self.metadata_log.lock().await;
        let Some(topic) = self.topic_by_id(&id) else {
            return Ok(());
        };
        metadata_log
            .append(&[MetadataRecord::TopicDeleted { id }])
            .await?;
        {
            let mut registry = self.registry.write().expect("registry lock");
            registry.by_id.remove(&id);
            registry.by_name.remove(&topic.name);
        }
        for partition in &topic.partitions {
            partition.appended.notify_waiters();
            let dir = partition_dir(&self.data_dir, &topic.name, partition.index);
            let doomed = self.data_dir.join(format!(
                "{}-{}.{}-delete",
                topic.name,
                partition.index,
                id.simple()
            ));
            match fs::rename(&dir, &doomed) {
                Ok(()) => {
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = fs::remove_dir_all(&doomed) {
                            warn!(dir = %doomed.display(), error = %e, "cannot remove deleted partition");
                        }
                    });
                }
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot move deleted partition aside")
                }
            }
        }
        info!(topic = %topic.name, %id, "deleted topic");
        Ok(())
    }

    /// The metadata quorum's state (DescribeQuorum).
    pub async fn quorum_status(&self) -> Result<odradek_raft::QuorumStatus, MetadataError> {
        self.metadata_log.lock().await.status().await
    }

    /// Syncs and closes every log for a clean shutdown.
    pub fn close_all(&self) -> Result<(), StorageError> {
        tokio::runtime::Handle::current().block_on(async {
            self.metadata_log.lock().await.shutdown().await;
        });
        self.group_commit.shutdown();
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
