//! What the operator commands share: talking to a cluster, naming Kafka errors, printing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, bail};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use odradek_client::Client;

/// Kafka's name for an error code, e.g. `GROUP_ID_NOT_FOUND`.
pub fn error_name(code: i16) -> String {
    let Some(e) = ResponseError::try_from_code(code) else {
        return format!("UNKNOWN_ERROR({code})");
    };
    let camel = format!("{e:?}");
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

pub fn check(code: i16, what: &str) -> anyhow::Result<()> {
    if code != 0 {
        bail!("{what} failed: {}", error_name(code));
    }
    Ok(())
}

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// ListOffsets sentinels.
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

/// Each broker's `host:port` by node id, as a Metadata response lists them.
fn broker_addresses(metadata: &MetadataResponse) -> HashMap<i32, String> {
    metadata
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect()
}

/// Offsets at `timestamp` (LATEST, EARLIEST, or a time), asked of each partition's leader.
pub fn offsets_at(
    client: &mut Client,
    partitions: &BTreeSet<(String, i32)>,
    timestamp: i64,
) -> anyhow::Result<HashMap<(String, i32), i64>> {
    let topics: BTreeSet<&String> = partitions.iter().map(|(t, _)| t).collect();
    let (_, metadata) = client.send(None, |_| {
        MetadataRequest::default().with_topics(Some(
            topics
                .iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(s(t)))))
                .collect(),
        ))
    })?;
    let brokers = broker_addresses(&metadata);
    let mut by_leader: BTreeMap<String, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
    for t in &metadata.topics {
        let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        for p in &t.partitions {
            if partitions.contains(&(name.clone(), p.partition_index))
                && let Some(addr) = brokers.get(&p.leader_id.0)
            {
                by_leader
                    .entry(addr.clone())
                    .or_default()
                    .entry(name.clone())
                    .or_default()
                    .push(p.partition_index);
            }
        }
    }
    let mut out = HashMap::new();
    for (leader, topics) in by_leader {
        let (_, r) = client.send(Some(&leader), |_| {
            ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_topics(
                    topics
                        .iter()
                        .map(|(t, ps)| {
                            ListOffsetsTopic::default()
                                .with_name(TopicName(s(t)))
                                .with_partitions(
                                    ps.iter()
                                        .map(|p| {
                                            ListOffsetsPartition::default()
                                                .with_partition_index(*p)
                                                .with_timestamp(timestamp)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
        })?;
        for t in r.topics {
            for p in t.partitions {
                if p.error_code == 0 {
                    out.insert((t.name.to_string(), p.partition_index), p.offset);
                }
            }
        }
    }
    Ok(out)
}

/// Metadata of `topics` (`None`: every topic), never creating one.
pub fn metadata(client: &mut Client, topics: Option<&[&str]>) -> anyhow::Result<MetadataResponse> {
    let (_, r) = client.send(None, |_| {
        MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(s(t)))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false)
    })?;
    Ok(r)
}

pub fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

/// A topic's id and each partition's leader address, from Metadata.
pub struct TopicLayout {
    pub topic_id: uuid::Uuid,
    pub leaders: BTreeMap<i32, String>,
}

/// `auto_create` lets the broker create a missing topic, as a producer's Metadata does.
pub fn topic_layout(
    client: &mut Client,
    topic: &str,
    auto_create: bool,
) -> anyhow::Result<TopicLayout> {
    let (_, metadata) = client.send(None, |_| {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(s(topic)))),
            ]))
            .with_allow_auto_topic_creation(auto_create)
    })?;
    let brokers = broker_addresses(&metadata);
    let t = metadata
        .topics
        .first()
        .with_context(|| format!("no topic {topic} in the metadata response"))?;
    check(t.error_code, &format!("Metadata for topic {topic}"))?;
    let mut leaders = BTreeMap::new();
    for p in &t.partitions {
        let leader = brokers.get(&p.leader_id.0).with_context(|| {
            format!(
                "partition {} of {topic} has no known leader ({})",
                p.partition_index,
                error_name(p.error_code)
            )
        })?;
        leaders.insert(p.partition_index, leader.clone());
    }
    Ok(TopicLayout {
        topic_id: t.topic_id,
        leaders,
    })
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
