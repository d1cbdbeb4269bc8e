//! Cluster metadata as a log of records applied to an in-memory image, after Kafka's KRaft
//! `__cluster_metadata`. Today the log is a local file; in the cluster phase the same records
//! go through consensus, and every broker replays them into the same image.
//!
//! File format: a sequence of `[len: u32][crc32c: u32][JSON record]`. A record is durable
//! once `append` returns (the file is fsync'd). On start-up a torn or corrupt tail, the
//! trace of a crash mid-append, is cut off: that record was never acknowledged.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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
    #[error("metadata log {path}: record at byte {position} cannot be decoded: {reason}")]
    Decode {
        path: PathBuf,
        position: u64,
        reason: String,
    },
}

/// A change to cluster metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    TopicCreated {
        name: String,
        id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
    },
    PartitionsAdded {
        id: Uuid,
        partitions: i32,
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
    /// `ProducerIdsRecord`: ids are never reused across restarts.
    ProducerIdsReserved {
        next: i64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
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
}

impl MetadataImage {
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::TopicCreated {
                name,
                id,
                partitions,
                configs,
            } => {
                self.names_by_id.insert(*id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions: *partitions,
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::PartitionsAdded { id, partitions } => {
                if let Some(t) = self
                    .names_by_id
                    .get(id)
                    .and_then(|n| self.topics.get_mut(n))
                {
                    t.partitions = *partitions;
                }
            }
            MetadataRecord::BrokerConfigsChanged { node, configs } => {
                self.broker_configs.insert(*node, configs.clone());
            }
            MetadataRecord::TopicConfigsChanged { id, configs } => {
                if let Some(t) = self
                    .names_by_id
                    .get(id)
                    .and_then(|n| self.topics.get_mut(n))
                {
                    t.configs = configs.clone();
                }
            }
            MetadataRecord::ProducerIdsReserved { next } => {
                self.next_producer_id = self.next_producer_id.max(*next);
            }
            MetadataRecord::TopicDeleted { id } => {
                if let Some(name) = self.names_by_id.remove(id) {
                    self.topics.remove(&name);
                }
            }
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.names_by_id.get(id).and_then(|n| self.topics.get(n))
    }
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }
}

/// The append-only file of metadata records.
#[derive(Debug)]
pub struct MetadataLog {
    path: PathBuf,
    file: File,
}

const RECORD_HEADER: usize = 8;

impl MetadataLog {
    /// Opens the log in `dir`, replaying it into an image.
    pub fn open(dir: &Path) -> Result<(Self, MetadataImage), MetadataError> {
        let path = dir.join("metadata.log");
        let io = |source| MetadataError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let mut image = MetadataImage::default();
        let mut pos = 0usize;
        while let Some(header) = bytes.get(pos..pos + RECORD_HEADER) {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            let Some(body) = bytes.get(pos + RECORD_HEADER..pos + RECORD_HEADER + len) else {
                break;
            };
            if crc32c::crc32c(body) != crc {
                break;
            }
            let record: MetadataRecord =
                serde_json::from_slice(body).map_err(|e| MetadataError::Decode {
                    path: path.clone(),
                    position: pos as u64,
                    reason: e.to_string(),
                })?;
            image.apply(&record);
            pos += RECORD_HEADER + len;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        if pos < bytes.len() {
            warn!(path = %path.display(), valid_bytes = pos, cut_bytes = bytes.len() - pos, "cutting torn metadata log tail");
            file.set_len(pos as u64).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok((Self { path, file }, image))
    }

    /// Appends records durably, as one write so a crash keeps all or a prefix of them.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<(), MetadataError> {
        let io = |source| MetadataError::Io {
            path: self.path.clone(),
            source,
        };
        let mut buf = Vec::new();
        for record in records {
            let body = serde_json::to_vec(record).expect("metadata records serialize");
            buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            buf.extend_from_slice(&body);
        }
        self.file.write_all(&buf).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_replay_into_the_same_image_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        {
            let (mut log, image) = MetadataLog::open(dir.path()).unwrap();
            assert_eq!(image.topics().count(), 0);
            log.append(&[MetadataRecord::TopicCreated {
                name: "t".into(),
                id,
                partitions: 1,
                configs: BTreeMap::new(),
            }])
            .unwrap();
            log.append(&[MetadataRecord::PartitionsAdded { id, partitions: 3 }])
                .unwrap();
        }
        let path = dir.path().join("metadata.log");
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 50, 1, 2]);
        fs::write(&path, &bytes).unwrap();
        let (_, image) = MetadataLog::open(dir.path()).unwrap();
        assert_eq!(image.topic("t").unwrap().partitions, 3);
        assert_eq!(image.topic_by_id(&id).unwrap().name, "t");
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, bytes.len() - 6);
    }
}
