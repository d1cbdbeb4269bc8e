//! `odradek cluster info`: cluster id, controller, brokers, topic counts, partition health
//! (under-replicated, under min ISR, offline) and the metadata quorum (leader, epoch, voters);
//! `odradek cluster log-dirs`: where each broker keeps which partitions, and how big they are.

use std::time::Duration;

use std::collections::HashMap;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_log_dirs_response::DescribeLogDirsResult;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::describe_quorum_response;
use kafka_protocol::messages::{
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeLogDirsRequest, DescribeQuorumRequest, MetadataResponse, TopicName,
};
use odradek_client::Client;
use serde_json::json;

use crate::cli::{ClientArgs, check, metadata, print_table, s};
use crate::topic::RESOURCE_TOPIC;

/// The brokers, with the fenced ones too when `include_fenced` (KIP-1073, v2+).
pub fn describe_cluster(
    client: &mut Client,
    include_fenced: bool,
) -> anyhow::Result<DescribeClusterResponse> {
    let (_, cluster) = client.send(None, |version| {
        DescribeClusterRequest::default()
            .with_endpoint_type(1)
            .with_include_fenced_brokers(include_fenced && version >= 2)
    })?;
    check(cluster.error_code, "DescribeCluster")?;
    Ok(cluster)
}

/// The metadata log's partition as DescribeQuorum describes it
/// (`kafka-metadata-quorum.sh describe --status`).
fn describe_quorum(client: &mut Client) -> anyhow::Result<describe_quorum_response::PartitionData> {
    let (_, response) = client.send(None, |_| {
        DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(TopicName(s("__cluster_metadata")))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
        ])
    })?;
    check(response.error_code, "DescribeQuorum")?;
    let partition = response
        .topics
        .into_iter()
        .flat_map(|t| t.partitions)
        .next()
        .ok_or_else(|| anyhow::anyhow!("DescribeQuorum: no partition in the answer"))?;
    check(partition.error_code, "DescribeQuorum")?;
    Ok(partition)
}

pub fn info(args: &ClientArgs) -> anyhow::Result<()> {
    let mut client = args.connect(Duration::from_secs(10))?;
    let metadata = metadata(&mut client, None)?;
    let cluster = describe_cluster(&mut client, true)?;
    let quorum = describe_quorum(&mut client)?;
    let progress = |replicas: &[describe_quorum_response::ReplicaState]| -> Vec<(i32, i64)> {
        replicas
            .iter()
            .map(|v| (v.replica_id.0, v.log_end_offset))
            .collect()
    };
    let voters = progress(&quorum.current_voters);
    let observers = progress(&quorum.observers);
    let topics = metadata.topics.len();
    let partitions: usize = metadata.topics.iter().map(|t| t.partitions.len()).sum();
    let health = partition_health(&mut client, &metadata)?;
    let mut brokers: Vec<_> = cluster
        .brokers
        .iter()
        .map(|b| {
            (
                b.broker_id.0,
                format!("{}:{}", b.host.as_str(), b.port),
                b.rack.as_ref().map(|r| r.to_string()),
                b.is_fenced,
            )
        })
        .collect();
    brokers.sort();
    // The active controller is the quorum leader (a broker, or a dedicated controller that
    // serves no clients); DescribeCluster's controller id is the broker asked (KIP-590).
    let controller = quorum.leader_id.0;
    if args.json() {
        let out = json!({
            "cluster_id": cluster.cluster_id.to_string(),
            "controller": controller,
            "brokers": brokers.iter().map(|(id, addr, rack, fenced)| json!({"id": id, "address": addr, "rack": rack, "fenced": fenced})).collect::<Vec<_>>(),
            "topics": topics,
            "partitions": partitions,
            "under_replicated_partitions": health.under_replicated,
            "under_min_isr_partitions": health.under_min_isr,
            "offline_partitions": health.offline,
            "quorum": {
                "leader": quorum.leader_id.0,
                "epoch": quorum.leader_epoch,
                "high_watermark": quorum.high_watermark,
                "voters": voters.iter().map(|(id, end)| json!({"id": id, "log_end_offset": end})).collect::<Vec<_>>(),
                "observers": observers.iter().map(|(id, end)| json!({"id": id, "log_end_offset": end})).collect::<Vec<_>>(),
            },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "Cluster {} ({topics} topics, {partitions} partitions)",
        cluster.cluster_id.as_str()
    );
    print_table(
        &["BROKER", "ADDRESS", "RACK", "STATE", "CONTROLLER"],
        brokers
            .iter()
            .map(|(id, addr, rack, fenced)| {
                vec![
                    id.to_string(),
                    addr.clone(),
                    rack.clone().unwrap_or_else(|| "-".into()),
                    if *fenced { "fenced" } else { "serving" }.to_string(),
                    if *id == controller { "yes" } else { "" }.to_string(),
                ]
            })
            .collect(),
    );
    let listed = |nodes: &[(i32, i64)]| -> String {
        let listed: Vec<String> = nodes
            .iter()
            .map(|(id, end)| format!("{id} (log end {end})"))
            .collect();
        if listed.is_empty() {
            "none".into()
        } else {
            listed.join(", ")
        }
    };
    println!(
        "Partitions: {} under-replicated, {} under min ISR, {} offline",
        health.under_replicated, health.under_min_isr, health.offline
    );
    println!(
        "Metadata quorum: leader {}, epoch {}, high watermark {}, voters {}, observers {}",
        quorum.leader_id.0,
        quorum.leader_epoch,
        quorum.high_watermark,
        listed(&voters),
        listed(&observers)
    );
    Ok(())
}

/// How many partitions lack replicas in sync, or a leader.
struct PartitionHealth {
    /// Fewer in-sync replicas than replicas.
    under_replicated: usize,
    /// Fewer in-sync replicas than the topic's min.insync.replicas: acks=all writes fail.
    under_min_isr: usize,
    /// No leader: neither reads nor writes are served.
    offline: usize,
}

fn partition_health(
    client: &mut Client,
    metadata: &MetadataResponse,
) -> anyhow::Result<PartitionHealth> {
    let names: Vec<String> = metadata
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    let min_isr = min_insync_replicas(client, &names)?;
    let mut health = PartitionHealth {
        under_replicated: 0,
        under_min_isr: 0,
        offline: 0,
    };
    for t in &metadata.topics {
        let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        let min = min_isr.get(&name).copied().unwrap_or(1);
        for p in &t.partitions {
            let isr = p.isr_nodes.len();
            health.under_replicated += usize::from(isr < p.replica_nodes.len());
            health.under_min_isr += usize::from((isr as i64) < min);
            health.offline += usize::from(p.leader_id.0 < 0);
        }
    }
    Ok(health)
}

/// Each topic's min.insync.replicas, asked in one DescribeConfigs; a topic whose answer is
/// missing or unreadable is left out (its callers take Kafka's default, 1).
fn min_insync_replicas(
    client: &mut Client,
    topics: &[String],
) -> anyhow::Result<HashMap<String, i64>> {
    if topics.is_empty() {
        return Ok(HashMap::new());
    }
    let (_, response) = client.send(None, |_| {
        DescribeConfigsRequest::default().with_resources(
            topics
                .iter()
                .map(|t| {
                    DescribeConfigsResource::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(s(t))
                        .with_configuration_keys(Some(vec![s("min.insync.replicas")]))
                })
                .collect(),
        )
    })?;
    Ok(response
        .results
        .iter()
        .filter(|r| r.error_code == 0)
        .filter_map(|r| {
            let value = r.configs.first()?.value.as_ref()?.parse().ok()?;
            Some((r.resource_name.to_string(), value))
        })
        .collect())
}

/// One broker's log directories (DescribeLogDirs), of the `wanted` partitions (`None`:
/// every one), after checking every error code.
pub fn describe_log_dirs(
    client: &mut Client,
    addr: &str,
    wanted: Option<Vec<DescribableLogDirTopic>>,
) -> anyhow::Result<Vec<DescribeLogDirsResult>> {
    let (_, response) = client.send(Some(addr), |_| {
        DescribeLogDirsRequest::default().with_topics(wanted)
    })?;
    check(response.error_code, "DescribeLogDirs")?;
    for dir in &response.results {
        check(dir.error_code, &format!("log dir {}", dir.log_dir.as_str()))?;
    }
    Ok(response.results)
}

/// Asks every broker for its log directories (DescribeLogDirs), as `kafka-log-dirs.sh
/// --describe` does; `topics` empty means every partition.
pub fn log_dirs(args: &ClientArgs, topics: &[String]) -> anyhow::Result<()> {
    let mut client = args.connect(Duration::from_secs(10))?;
    let cluster = describe_cluster(&mut client, false)?;
    // Every partition of the named topics: DescribeLogDirs takes partition lists, so ask for
    // their numbers first.
    let wanted = if topics.is_empty() {
        None
    } else {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let metadata = metadata(&mut client, Some(&names))?;
        let mut wanted = Vec::new();
        for t in &metadata.topics {
            let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            check(t.error_code, &format!("topic {name}"))?;
            wanted.push(
                DescribableLogDirTopic::default()
                    .with_topic(TopicName(s(&name)))
                    .with_partitions(t.partitions.iter().map(|p| p.partition_index).collect()),
            );
        }
        Some(wanted)
    };
    // (broker, dir, partitions, bytes, total bytes, usable bytes) and
    // (broker, topic, partition, bytes, offset lag).
    let mut dirs: Vec<(i32, String, usize, i64, i64, i64)> = Vec::new();
    let mut partitions: Vec<(i32, String, i32, i64, i64)> = Vec::new();
    let mut brokers: Vec<_> = cluster.brokers.iter().collect();
    brokers.sort_by_key(|b| b.broker_id.0);
    for broker in brokers {
        let id = broker.broker_id.0;
        let addr = format!("{}:{}", broker.host.as_str(), broker.port);
        for dir in describe_log_dirs(&mut client, &addr, wanted.clone())? {
            let path = dir.log_dir.to_string();
            let before = partitions.len();
            for t in &dir.topics {
                for p in &t.partitions {
                    let topic = t.name.to_string();
                    partitions.push((id, topic, p.partition_index, p.partition_size, p.offset_lag));
                }
            }
            partitions[before..].sort();
            let held = &partitions[before..];
            let size = held.iter().map(|p| p.3).sum();
            dirs.push((
                id,
                path,
                held.len(),
                size,
                dir.total_bytes,
                dir.usable_bytes,
            ));
        }
    }
    if args.json() {
        let out = json!({
            "dirs": dirs.iter().map(|(broker, dir, count, size, total, usable)| json!({
                "broker": broker, "dir": dir, "partitions": count, "size_bytes": size,
                // -1: the broker does not know (before DescribeLogDirs v4).
                "total_bytes": total, "usable_bytes": usable,
            })).collect::<Vec<_>>(),
            "partitions": partitions.iter().map(|(broker, topic, partition, size, lag)| json!({
                "broker": broker, "topic": topic, "partition": partition,
                "size_bytes": size, "offset_lag": lag,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let known = |n: i64| {
        if n < 0 {
            "-".to_string()
        } else {
            n.to_string()
        }
    };
    print_table(
        &["BROKER", "DIR", "PARTITIONS", "SIZE", "TOTAL", "USABLE"],
        dirs.iter()
            .map(|(broker, dir, count, size, total, usable)| {
                vec![
                    broker.to_string(),
                    dir.clone(),
                    count.to_string(),
                    size.to_string(),
                    known(*total),
                    known(*usable),
                ]
            })
            .collect(),
    );
    println!();
    print_table(
        &["BROKER", "TOPIC", "PARTITION", "SIZE", "OFFSET LAG"],
        partitions
            .iter()
            .map(|(broker, topic, partition, size, lag)| {
                vec![
                    broker.to_string(),
                    topic.clone(),
                    partition.to_string(),
                    size.to_string(),
                    lag.to_string(),
                ]
            })
            .collect(),
    );
    Ok(())
}

/// Adds (`add`) or removes voter `id` of the metadata quorum through any broker, which
/// forwards it to the quorum leader.
pub fn change_voter(args: &ClientArgs, id: i32, add: bool) -> anyhow::Result<()> {
    // A joint-consensus change takes two commits.
    let mut client = args.connect(Duration::from_secs(30))?;
    let (code, message) = if add {
        let (_, response) = client.send(None, |_| {
            kafka_protocol::messages::AddRaftVoterRequest::default()
                .with_voter_id(id)
                .with_timeout_ms(30_000)
        })?;
        (response.error_code, response.error_message)
    } else {
        let (_, response) = client.send(None, |_| {
            kafka_protocol::messages::RemoveRaftVoterRequest::default().with_voter_id(id)
        })?;
        (response.error_code, response.error_message)
    };
    if code != 0 {
        anyhow::bail!(
            "{} controller {id}: {}",
            if add { "adding" } else { "removing" },
            message.map_or_else(
                || kafka_protocol::ResponseError::try_from_code(code)
                    .map_or(format!("error {code}"), |e| e.to_string()),
                |m| m.to_string()
            )
        );
    }
    println!(
        "{} controller {id}",
        if add { "added voter" } else { "removed voter" }
    );
    Ok(())
}
