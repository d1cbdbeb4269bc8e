//! `odradek config get|set`: broker and topic configs, against Odradek or any Kafka cluster.

use std::time::Duration;

use kafka_protocol::messages::MetadataRequest;
use serde_json::json;

use crate::cli::{ClientArgs, print_table};
use crate::topic::{RESOURCE_BROKER, RESOURCE_TOPIC, alter_configs, describe_configs};

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Show configs (value, source) of a broker (default: the controller) or a topic.
    Get {
        /// A broker by node id.
        #[arg(long, conflicts_with = "topic")]
        broker: Option<i32>,
        #[arg(long)]
        topic: Option<String>,
        /// The cluster-wide dynamic defaults every broker falls back to.
        #[arg(long, conflicts_with_all = ["broker", "topic"])]
        cluster_default: bool,
        /// Only this config.
        key: Option<String>,
    },
    /// Set or remove dynamic broker configs, for one broker or as cluster-wide defaults.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["broker", "cluster_default"]))]
    Set {
        #[arg(long)]
        broker: Option<i32>,
        /// Change the cluster-wide default every broker falls back to.
        #[arg(long)]
        cluster_default: bool,
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

/// Kafka's names for DescribeConfigs sources.
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

pub fn run(command: ConfigCommand, client: &ClientArgs) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Get {
            broker,
            topic,
            cluster_default,
            key,
        } => {
            let mut c = client.connect(Duration::from_secs(10))?;
            let (resource_type, name) = match (topic, broker) {
                // The empty broker name is Kafka's cluster-wide default.
                _ if cluster_default => (RESOURCE_BROKER, String::new()),
                (Some(t), _) => (RESOURCE_TOPIC, t),
                (None, Some(b)) => (RESOURCE_BROKER, b.to_string()),
                (None, None) => {
                    let (_, m) = c.send(None, |_| {
                        MetadataRequest::default().with_topics(Some(vec![]))
                    })?;
                    (RESOURCE_BROKER, m.controller_id.0.to_string())
                }
            };
            let result = describe_configs(&mut c, resource_type, &name, key.map(|k| vec![k]))?;
            let rows: Vec<(String, Option<String>, &str, bool)> = result
                .configs
                .iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.value.as_ref().map(|v| v.to_string()),
                        source_name(c.config_source),
                        c.read_only,
                    )
                })
                .collect();
            if client.json() {
                let out: Vec<_> = rows
                    .iter()
                    .map(|(n, v, s, ro)| json!({"name": n, "value": v, "source": s, "read_only": ro}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_table(
                    &["NAME", "VALUE", "SOURCE"],
                    rows.into_iter()
                        .map(|(n, v, s, _)| vec![n, v.unwrap_or_else(|| "null".into()), s.into()])
                        .collect(),
                );
            }
            Ok(())
        }
        ConfigCommand::Set {
            broker,
            cluster_default: _,
            set,
            delete,
        } => {
            // The empty broker name is Kafka's cluster-wide default.
            let name = broker.map(|b| b.to_string()).unwrap_or_default();
            alter_configs(client, RESOURCE_BROKER, &name, &set, &delete)?;
            eprintln!(
                "altered {}",
                broker.map_or_else(
                    || "the cluster-wide broker defaults".to_string(),
                    |b| format!("broker {b}")
                )
            );
            Ok(())
        }
    }
}
