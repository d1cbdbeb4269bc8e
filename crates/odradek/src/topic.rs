//! `odradek topic create|list|describe|delete|alter-config|add-partitions`, against Odradek
//! or any Kafka cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::*;
use odradek_client::Client;
use serde_json::json;

use crate::cli::{ClientArgs, EARLIEST, LATEST, check, metadata, offsets_at, print_table, s};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

struct PartitionRow {
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// KIP-966's eligible leader replicas; `None` from a cluster without
    /// DescribeTopicPartitions.
    elr: Option<Vec<i32>>,
    earliest: Option<i64>,
    latest: Option<i64>,
}
/// DescribeConfigs source of a value nobody set.
const DEFAULT_CONFIG: i8 = 5;

/// CreateTopics and DeleteTopics wait up to 30 s on the broker, so the client waits as long.
const TIMEOUT: Duration = Duration::from_secs(30);

fn parse_pairs(pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .with_context(|| format!("expected KEY=VALUE, got '{p}'"))
        })
        .collect()
}

pub fn create(
    args: &ClientArgs,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[String],
) -> anyhow::Result<()> {
    let (code, message) = request_create(args, name, partitions, replication_factor, configs)?;
    check_with_message(code, message, "CreateTopics")?;
    println!("created topic {name}");
    Ok(())
}

/// Creates a topic and returns the broker's error code and message for it, so callers can
/// decide whether an existing topic is an error.
pub fn request_create(
    args: &ClientArgs,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[String],
) -> anyhow::Result<(i16, Option<String>)> {
    let configs = parse_pairs(configs)?;
    let (_, r) = args.connect(TIMEOUT)?.send(None, |_| {
        CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication_factor)
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                CreatableTopicConfig::default()
                                    .with_name(s(k))
                                    .with_value(Some(s(v)))
                            })
                            .collect(),
                    ),
            ])
    })?;
    let t = r.topics.first().context("no topic in the response")?;
    Ok((
        t.error_code,
        t.error_message.as_deref().map(|m| m.to_string()),
    ))
}

/// Like [`check`], adding the broker's error message when it sent one.
pub fn check_with_message(code: i16, message: Option<String>, what: &str) -> anyhow::Result<()> {
    match message.filter(|m| !m.is_empty()) {
        Some(m) if code != 0 => {
            anyhow::bail!("{what} failed: {}: {m}", crate::cli::error_name(code))
        }
        _ => check(code, what),
    }
}

pub fn list(args: &ClientArgs) -> anyhow::Result<()> {
    let r = metadata(&mut args.connect(TIMEOUT)?, None)?;
    let mut topics: Vec<_> = r
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                t.partitions.len(),
                t.is_internal,
            )
        })
        .collect();
    topics.sort();
    if args.json() {
        let rows: Vec<_> = topics
            .iter()
            .map(|(n, p, i)| json!({"topic": n, "partitions": p, "internal": i}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(
            &["TOPIC", "PARTITIONS", "INTERNAL"],
            topics
                .iter()
                .map(|(n, p, i)| vec![n.clone(), p.to_string(), i.to_string()])
                .collect(),
        );
    }
    Ok(())
}

/// Where to send a config request: a broker's own configs are known to that broker only
/// (Kafka's admin client routes them the same way); anything else goes to any broker.
fn config_route(
    client: &mut Client,
    resource_type: i8,
    name: &str,
) -> anyhow::Result<Option<String>> {
    if resource_type != RESOURCE_BROKER || name.is_empty() {
        return Ok(None);
    }
    let r = metadata(client, Some(&[]))?;
    let broker = r
        .brokers
        .iter()
        .find(|b| b.node_id.0.to_string() == name)
        .with_context(|| {
            let ids: Vec<String> = r.brokers.iter().map(|b| b.node_id.0.to_string()).collect();
            format!(
                "no broker {name} in the cluster (brokers: {})",
                ids.join(", ")
            )
        })?;
    Ok(Some(format!("{}:{}", broker.host.as_str(), broker.port)))
}

/// The configs of one resource (a topic, a broker by id, or "" for cluster defaults);
/// `keys` narrows them.
pub fn describe_configs(
    client: &mut Client,
    resource_type: i8,
    name: &str,
    keys: Option<Vec<String>>,
) -> anyhow::Result<describe_configs_response::DescribeConfigsResult> {
    let addr = config_route(client, resource_type, name)?;
    let (_, configs) = client.send(addr.as_deref(), |_| {
        DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configuration_keys(keys.map(|k| k.iter().map(|k| s(k)).collect())),
        ])
    })?;
    let result = configs
        .results
        .into_iter()
        .next()
        .context("no configs in the response")?;
    check_with_message(
        result.error_code,
        result.error_message.as_deref().map(|m| m.to_string()),
        "DescribeConfigs",
    )?;
    Ok(result)
}

pub fn describe(args: &ClientArgs, name: &str) -> anyhow::Result<()> {
    let mut client = args.connect(TIMEOUT)?;
    let r = metadata(&mut client, Some(&[name]))?;
    let t = r.topics.first().context("no topic in the response")?;
    check(t.error_code, "Metadata")?;
    let partitions: BTreeSet<(String, i32)> = t
        .partitions
        .iter()
        .map(|p| (name.to_string(), p.partition_index))
        .collect();
    let elr = eligible_leaders(&mut client, name)?;
    let earliest = offsets_at(&mut client, &partitions, EARLIEST)?;
    let latest = offsets_at(&mut client, &partitions, LATEST)?;
    let result = describe_configs(&mut client, RESOURCE_TOPIC, name, None)?;
    let overrides: Vec<(String, String)> = result
        .configs
        .iter()
        .filter(|c| c.config_source != DEFAULT_CONFIG)
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    let rows: Vec<PartitionRow> = t
        .partitions
        .iter()
        .map(|p| {
            let key = (name.to_string(), p.partition_index);
            PartitionRow {
                partition: p.partition_index,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                elr: elr
                    .as_ref()
                    .and_then(|e| e.get(&p.partition_index).cloned()),
                earliest: earliest.get(&key).copied(),
                latest: latest.get(&key).copied(),
            }
        })
        .collect();
    if args.json() {
        let out = json!({
            "topic": name,
            "topic_id": t.topic_id.to_string(),
            "internal": t.is_internal,
            "partitions": rows.iter().map(|r| json!({"partition": r.partition, "leader": r.leader, "leader_epoch": r.leader_epoch, "replicas": r.replicas, "isr": r.isr, "elr": r.elr, "earliest": r.earliest, "latest": r.latest})).collect::<Vec<_>>(),
            "configs": overrides.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "Topic {name} (id {}, {} partitions{})",
        t.topic_id,
        t.partitions.len(),
        if t.is_internal { ", internal" } else { "" }
    );
    let dash = || "-".to_string();
    print_table(
        &[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "ELR",
            "EARLIEST",
            "LATEST",
        ],
        rows.iter()
            .map(|r| {
                let list =
                    |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
                vec![
                    r.partition.to_string(),
                    r.leader.to_string(),
                    r.leader_epoch.to_string(),
                    list(&r.replicas),
                    list(&r.isr),
                    // Unknown (an older cluster) and none alike: the JSON tells them apart.
                    r.elr
                        .as_deref()
                        .filter(|e| !e.is_empty())
                        .map_or_else(dash, list),
                    r.earliest.map_or_else(dash, |v| v.to_string()),
                    r.latest.map_or_else(dash, |v| v.to_string()),
                ]
            })
            .collect(),
    );
    if !overrides.is_empty() {
        println!();
        print_table(
            &["CONFIG", "VALUE"],
            overrides.into_iter().map(|(k, v)| vec![k, v]).collect(),
        );
    }
    Ok(())
}

/// Each partition's eligible leader replicas (KIP-966) from DescribeTopicPartitions, which
/// pages through a large topic with a cursor; `None` when the broker does not speak it.
fn eligible_leaders(
    client: &mut Client,
    name: &str,
) -> anyhow::Result<Option<BTreeMap<i32, Vec<i32>>>> {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    let mut out = BTreeMap::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let answer = client.send(None, |_| {
            DescribeTopicPartitionsRequest::default()
                .with_topics(vec![TopicRequest::default().with_name(TopicName(s(name)))])
                .with_response_partition_limit(2000)
                .with_cursor(cursor.clone())
        });
        let response = match answer {
            Ok((_, r)) => r,
            Err(odradek_client::ClientError::Unsupported { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        for t in &response.topics {
            check(t.error_code, "DescribeTopicPartitions")?;
            for p in &t.partitions {
                let elr = p.eligible_leader_replicas.as_deref().unwrap_or_default();
                out.insert(p.partition_index, elr.iter().map(|b| b.0).collect());
            }
        }
        cursor = match response.next_cursor {
            Some(next) if next.topic_name.as_str() == name => Some(
                Cursor::default()
                    .with_topic_name(next.topic_name)
                    .with_partition_index(next.partition_index),
            ),
            _ => return Ok(Some(out)),
        };
    }
}

pub fn delete(args: &ClientArgs, name: &str) -> anyhow::Result<()> {
    let (_, r) = args.connect(TIMEOUT)?.send(None, |v| {
        let r = DeleteTopicsRequest::default().with_timeout_ms(30_000);
        if v >= 6 {
            r.with_topics(vec![
                DeleteTopicState::default().with_name(Some(TopicName(s(name)))),
            ])
        } else {
            r.with_topic_names(vec![TopicName(s(name))])
        }
    })?;
    let t = r.responses.first().context("no topic in the response")?;
    check_with_message(
        t.error_code,
        t.error_message.as_deref().map(|m| m.to_string()),
        "DeleteTopics",
    )?;
    println!("deleted topic {name}");
    Ok(())
}

/// IncrementalAlterConfigs operations.
const SET: i8 = 0;
const DELETE: i8 = 1;

pub fn alter_config(
    args: &ClientArgs,
    name: &str,
    set: &[String],
    delete: &[String],
) -> anyhow::Result<()> {
    alter_configs(args, RESOURCE_TOPIC, name, set, delete)?;
    println!("altered configs of topic {name}");
    Ok(())
}

/// Sets and deletes configs of one resource with IncrementalAlterConfigs.
pub fn alter_configs(
    args: &ClientArgs,
    resource_type: i8,
    name: &str,
    set: &[String],
    delete: &[String],
) -> anyhow::Result<()> {
    let set = parse_pairs(set)?;
    let mut changes: Vec<AlterableConfig> = set
        .iter()
        .map(|(k, v)| {
            AlterableConfig::default()
                .with_name(s(k))
                .with_config_operation(SET)
                .with_value(Some(s(v)))
        })
        .collect();
    changes.extend(delete.iter().map(|k| {
        AlterableConfig::default()
            .with_name(s(k))
            .with_config_operation(DELETE)
            .with_value(None)
    }));
    anyhow::ensure!(
        !changes.is_empty(),
        "nothing to change: give --set KEY=VALUE or --delete KEY"
    );
    let mut client = args.connect(TIMEOUT)?;
    let addr = config_route(&mut client, resource_type, name)?;
    let (_, r) = client.send(addr.as_deref(), |_| {
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configs(changes),
        ])
    })?;
    let result = r.responses.first().context("no result in the response")?;
    check_with_message(
        result.error_code,
        result.error_message.as_deref().map(|m| m.to_string()),
        "IncrementalAlterConfigs",
    )
}

pub fn add_partitions(args: &ClientArgs, name: &str, total: i32) -> anyhow::Result<()> {
    let (_, r) = args.connect(TIMEOUT)?.send(None, |_| {
        CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_count(total)
                    .with_assignments(None),
            ])
    })?;
    let result = r.results.first().context("no result in the response")?;
    check_with_message(
        result.error_code,
        result.error_message.as_deref().map(|m| m.to_string()),
        "CreatePartitions",
    )?;
    println!("topic {name} now has {total} partitions");
    Ok(())
}
