//! What the operator commands share: the client options, talking to a cluster, naming
//! Kafka errors, printing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use odradek_broker::config::parse_properties;
use odradek_client::Client;

/// Where no -b, `ODRADEK_BROKERS` or `bootstrap.servers` says otherwise.
const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// The options of every command that talks to a cluster. They are global, so they go
/// anywhere on the command line (`odradek -b H:P topic list` or `odradek topic list -b H:P`),
/// as with Kafka's tools and rpk.
#[derive(clap::Args)]
#[command(next_help_heading = "Client options")]
pub struct ClientArgs {
    /// A broker of the cluster to talk to (a comma-separated list is tried in order).
    /// Default: bootstrap.servers from --command-config, else 127.0.0.1:9092.
    #[arg(
        short = 'b',
        long = "bootstrap-server",
        env = "ODRADEK_BROKERS",
        global = true,
        value_name = "HOST:PORT"
    )]
    bootstrap: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// A Kafka client properties file, as Kafka's tools take. Commands built on librdkafka
    /// (perf produce, perf consume) pass every entry to it; the others refuse settings they
    /// cannot honour (TLS and SASL among them). Its bootstrap.servers applies when neither
    /// -b nor ODRADEK_BROKERS is given.
    #[arg(long, global = true, value_name = "FILE")]
    command_config: Option<PathBuf>,
    /// The entries of --command-config, read by [`ClientArgs::load`].
    #[arg(skip)]
    properties: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Settings of a client properties file that the built-in client honours.
const BUILT_IN_CLIENT_SETTINGS: &[&str] = &[
    "bootstrap.servers",
    "security.protocol",
    "request.timeout.ms",
];

impl ClientArgs {
    /// Each option's clap id (to ask whether it was typed) and its flag (to name it).
    pub const FLAGS: [(&str, &str); 3] = [
        ("bootstrap", "-b/--bootstrap-server"),
        ("output", "--output"),
        ("command_config", "--command-config"),
    ];

    /// Reads --command-config, once, before any command uses these options.
    pub fn load(&mut self) -> anyhow::Result<()> {
        if let Some(path) = &self.command_config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            self.properties =
                parse_properties(&text).with_context(|| format!("parsing {}", path.display()))?;
        }
        Ok(())
    }

    fn property(&self, key: &str) -> Option<&str> {
        // A later line wins, as in java.util.Properties.
        self.properties
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// -b or `ODRADEK_BROKERS`, else the file's bootstrap.servers, else 127.0.0.1:9092.
    pub fn bootstrap(&self) -> &str {
        self.bootstrap
            .as_deref()
            .or_else(|| self.property("bootstrap.servers"))
            .unwrap_or(DEFAULT_BOOTSTRAP)
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// The built-in client, after checking that it can honour every setting of
    /// --command-config: it speaks plaintext only, so a TLS or SASL setting is an error
    /// rather than a connection made without the protection the file asks for.
    /// `timeout` applies unless the file sets request.timeout.ms.
    pub fn connect(&self, timeout: Duration) -> anyhow::Result<Client> {
        let file = || {
            self.command_config
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string())
        };
        // The protocol first: it says most plainly why a TLS or SASL file cannot be used.
        if let Some(protocol) = self.property("security.protocol")
            && !protocol.eq_ignore_ascii_case("PLAINTEXT")
        {
            bail!(
                "security.protocol={protocol} (in {}) is not supported by this command: it \
                 speaks only PLAINTEXT (no TLS or SASL yet)",
                file()
            );
        }
        // Values are not shown: they may be passwords.
        if let Some((key, _)) = self
            .properties
            .iter()
            .find(|(k, _)| !BUILT_IN_CLIENT_SETTINGS.contains(&k.as_str()))
        {
            bail!(
                "{key} (in {}) is not supported by this command, which speaks plaintext \
                 Kafka without authentication and honours only {} from a client properties \
                 file (perf produce and perf consume pass every setting to librdkafka)",
                file(),
                BUILT_IN_CLIENT_SETTINGS.join(", ")
            );
        }
        let timeout = match self.property("request.timeout.ms") {
            Some(ms) => Duration::from_millis(ms.parse().with_context(|| {
                format!("request.timeout.ms (in {}) must be milliseconds", file())
            })?),
            None => timeout,
        };
        Ok(Client::new(
            &first_reachable(self.bootstrap(), timeout),
            timeout,
        ))
    }

    /// A librdkafka config with every --command-config entry, and the bootstrap servers.
    pub fn rdkafka_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config.set("bootstrap.servers", self.bootstrap());
        config
    }
}

/// The first address of a comma-separated list that accepts a connection, or the first one
/// when none does (connecting to it then reports the error). The built-in client talks to
/// one bootstrap broker, so a list as Kafka's tools take is tried in order.
fn first_reachable(list: &str, timeout: Duration) -> String {
    let addrs: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if addrs.len() > 1 {
        for addr in &addrs {
            let reachable = std::net::ToSocketAddrs::to_socket_addrs(addr)
                .ok()
                .and_then(|mut a| a.next())
                .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, timeout).is_ok());
            if reachable {
                return addr.to_string();
            }
        }
    }
    addrs.first().map_or(list, |a| a).to_string()
}

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
