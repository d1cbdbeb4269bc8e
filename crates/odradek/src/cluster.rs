//! `odradek cluster info`: cluster id, controller, brokers and topic counts.

use std::time::Duration;

use kafka_protocol::messages::{DescribeClusterRequest, MetadataRequest};
use odradek_client::Client;
use serde_json::json;

use crate::cli::{check, print_table};

pub fn info(bootstrap: &str, json_output: bool) -> anyhow::Result<()> {
    let mut client = Client::new(bootstrap, Duration::from_secs(10));
    let (_, metadata) = client.send(None, |_| {
        MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false)
    })?;
    let (_, cluster) = client.send(None, |_| {
        DescribeClusterRequest::default().with_endpoint_type(1)
    })?;
    check(cluster.error_code, "DescribeCluster")?;
    let topics = metadata.topics.len();
    let partitions: usize = metadata.topics.iter().map(|t| t.partitions.len()).sum();
    let mut brokers: Vec<_> = cluster
        .brokers
        .iter()
        .map(|b| {
            (
                b.broker_id.0,
                format!("{}:{}", b.host.as_str(), b.port),
                b.rack.as_ref().map(|r| r.to_string()),
            )
        })
        .collect();
    brokers.sort();
    let controller = cluster.controller_id.0;
    if json_output {
        let out = json!({
            "cluster_id": cluster.cluster_id.to_string(),
            "controller": controller,
            "brokers": brokers.iter().map(|(id, addr, rack)| json!({"id": id, "address": addr, "rack": rack})).collect::<Vec<_>>(),
            "topics": topics,
            "partitions": partitions,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "Cluster {} ({topics} topics, {partitions} partitions)",
        cluster.cluster_id.as_str()
    );
    print_table(
        &["BROKER", "ADDRESS", "RACK", "CONTROLLER"],
        brokers
            .iter()
            .map(|(id, addr, rack)| {
                vec![
                    id.to_string(),
                    addr.clone(),
                    rack.clone().unwrap_or_else(|| "-".into()),
                    if *id == controller { "yes" } else { "" }.to_string(),
                ]
            })
            .collect(),
    );
    Ok(())
}
