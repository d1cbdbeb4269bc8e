//! Read-only views of the broker's state for operators: what the metrics endpoint and the
//! web console show. They read the broker in process (no Kafka requests), briefly taking the
//! same locks the request path takes.

use odradek_protocol::batch::{self, BatchHeader};
use odradek_storage::LockExt;
use serde::Serialize;

use crate::Broker;
use crate::coordinator::is_internal;
use crate::metadata::{MetadataImage, PartitionPlacement};

#[derive(Debug, Clone, Serialize)]
pub struct PartitionSummary {
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub last_stable_offset: i64,
    pub size_bytes: u64,
    pub segments: usize,
    /// No log here: it is offline, or held on other brokers only.
    pub offline: bool,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// KIP-966's eligible leader replicas.
    pub elr: Vec<i32>,
    /// -1: no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    /// A reassignment in progress: the replicas being added and removed.
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// A broker as the metadata image registers it.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerSummary {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub fenced: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicSummary {
    pub name: String,
    pub id: String,
    pub internal: bool,
    /// Topic config overrides (what differs from the broker's defaults).
    pub configs: std::collections::BTreeMap<String, String>,
    pub partitions: Vec<PartitionSummary>,
}

impl TopicSummary {
    pub fn size_bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.size_bytes).sum()
    }
    pub fn records(&self) -> i64 {
        self.partitions
            .iter()
            .map(|p| p.log_end_offset - p.log_start_offset)
            .sum()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupPartition {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub log_end_offset: i64,
    pub lag: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupMember {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSummary {
    pub group: String,
    pub state: String,
    /// `classic` or `consumer` (KIP-848).
    pub group_type: String,
    pub members: Vec<GroupMember>,
    pub partitions: Vec<GroupPartition>,
}

impl GroupSummary {
    pub fn total_lag(&self) -> i64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// One record as the console's message browser shows it. Keys, values and header values
/// are raw bytes; the page decides how to display them.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Broker {
    /// The cluster's id: the one the first controller wrote into the metadata, or until
    /// then this node's own (from `meta.properties`).
    pub fn cluster_id(&self) -> String {
        self.logs
            .image()
            .cluster_id
            .clone()
            .unwrap_or_else(|| self.local_cluster_id.clone())
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Every registered broker, by id, and the metadata quorum's leader as this node knows
    /// it (None during an election).
    pub fn broker_summaries(&self) -> (Vec<BrokerSummary>, Option<i32>) {
        let brokers = self
            .logs
            .image()
            .brokers
            .values()
            .map(|b| BrokerSummary {
                id: b.id,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
                fenced: b.fenced,
            })
            .collect();
        (brokers, self.logs.metadata().leader())
    }

    fn placement(&self, image: &MetadataImage, topic: &str, index: i32) -> PartitionPlacement {
        image
            .topic(topic)
            .and_then(|t| t.placement(index))
            .cloned()
            .unwrap_or_else(|| PartitionPlacement::local(self.node_id))
    }

    pub fn topic_summaries(&self) -> Vec<TopicSummary> {
        let image = self.logs.image();
        let mut topics: Vec<TopicSummary> = self
            .logs
            .topics()
            .iter()
            .map(|t| TopicSummary {
                name: t.name.clone(),
                id: t.id.to_string(),
                internal: is_internal(&t.name),
                configs: t.configs.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let place = self.placement(&image, &t.name, p.index);
                        let log = p.lock_log();
                        PartitionSummary {
                            partition: p.index,
                            log_start_offset: log.as_ref().map_or(-1, |l| l.log_start_offset()),
                            log_end_offset: log.as_ref().map_or(-1, |l| l.log_end_offset()),
                            last_stable_offset: log.as_ref().map_or(-1, |l| l.last_stable_offset()),
                            size_bytes: log.as_ref().map_or(0, |l| l.size_bytes()),
                            segments: log.as_ref().map_or(0, |l| l.segment_count()),
                            offline: log.as_ref().is_none_or(|l| l.is_offline()),
                            replicas: place.replicas,
                            isr: place.isr,
                            elr: place.elr,
                            leader: place.leader,
                            leader_epoch: place.leader_epoch,
                            adding: place.adding,
                            removing: place.removing,
                        }
                    })
                    .collect(),
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// Every group with its committed offsets and lag (log end offset − committed).
    pub fn group_summaries(&self) -> Vec<GroupSummary> {
        let snapshot: Vec<_> = {
            let groups = self.coordinator.groups.lock_or_recover();
            groups
                .values()
                .map(|g| {
                    let members = match &g.consumer {
                        Some(c) => c
                            .members
                            .iter()
                            .map(|(id, m)| GroupMember {
                                member_id: id.clone(),
                                client_id: m.client_id.clone(),
                                client_host: m.client_host.clone(),
                            })
                            .collect(),
                        None => g
                            .members
                            .values()
                            .map(|m| GroupMember {
                                member_id: m.id.clone(),
                                client_id: m.client_id.clone(),
                                client_host: m.client_host.clone(),
                            })
                            .collect(),
                    };
                    let mut offsets: Vec<_> = g
                        .offsets
                        .iter()
                        .map(|((t, p), o)| (t.clone(), *p, o.offset))
                        .collect();
                    offsets.sort();
                    (
                        g.id.clone(),
                        g.state_name().to_string(),
                        g.group_type().to_string(),
                        members,
                        offsets,
                    )
                })
                .collect()
        };
        let mut summaries: Vec<GroupSummary> = snapshot
            .into_iter()
            .map(
                |(group, state, group_type, members, offsets)| GroupSummary {
                    group,
                    state,
                    group_type,
                    members,
                    partitions: offsets
                        .into_iter()
                        .map(|(topic, partition, committed)| {
                            let end = self
                                .logs
                                .partition(&topic, partition)
                                .and_then(|p| p.lock_log().map(|l| l.log_end_offset()))
                                .unwrap_or(-1);
                            GroupPartition {
                                lag: if end >= 0 && committed >= 0 {
                                    (end - committed).max(0)
                                } else {
                                    0
                                },
                                topic,
                                partition,
                                committed,
                                log_end_offset: end,
                            }
                        })
                        .collect(),
                },
            )
            .collect();
        summaries.sort_by(|a, b| a.group.cmp(&b.group));
        summaries
    }

    /// Up to `limit` records of `topic`-`partition` from `offset` (records before it in
    /// the first batch are skipped), decompressing batches as needed.
    pub fn read_messages(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        limit: usize,
    ) -> Result<Vec<MessageView>, String> {
        let partition = self
            .logs
            .partition(topic, partition)
            .ok_or("no such topic or partition")?;
        let mut out = Vec::new();
        let mut next = offset;
        while out.len() < limit {
            let prepared = partition
                .lock_log()
                .ok_or("partition offline")?
                .prepare_read(next, 1 << 20, true)
                .map_err(|e| e.to_string())?;
            let records = prepared.read().map_err(|e| e.to_string())?.records;
            if records.is_empty() {
                break;
            }
            let mut pos = 0;
            for (header, size) in batch::complete_batches(&records) {
                let bytes = &records[pos..pos + size];
                pos += size;
                next = header.last_offset() + 1;
                if header.is_control() {
                    continue;
                }
                out.extend(batch_messages(&header, bytes, offset));
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

fn batch_messages(header: &BatchHeader<'_>, bytes: &[u8], from: i64) -> Vec<MessageView> {
    let Ok(section) = batch::decompressed_records(bytes) else {
        return Vec::new();
    };
    batch::raw_records(&section)
        .map_while(Result::ok)
        .filter_map(|r| {
            let (offset, timestamp) = batch::record_offset_and_timestamp(header, &r);
            (offset >= from).then(|| MessageView {
                offset,
                timestamp,
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.map(<[u8]>::to_vec),
                headers: batch::record_headers(&r)
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            v.map(<[u8]>::to_vec),
                        )
                    })
                    .collect(),
            })
        })
        .collect()
}
