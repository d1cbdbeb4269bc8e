//! `odradek cluster reassign plan|execute|watch|cancel` and `odradek cluster decommission`:
//! moving partitions' replicas between brokers with AlterPartitionReassignments, as
//! kafka-reassign-partitions.sh does, in its reassignment JSON format.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest,
    MetadataResponse, TopicName,
};
use odradek_client::Client;
use serde::{Deserialize, Serialize};

use crate::cli::{ClientArgs, check, error_name, metadata, print_table, s};
use crate::cluster::{describe_cluster, describe_log_dirs};
use crate::topic::{RESOURCE_BROKER, RESOURCE_TOPIC, alter_configs, describe_configs};

/// AlterPartitionReassignments commits to the metadata log, which may wait on an election.
const TIMEOUT: Duration = Duration::from_secs(30);

/// How often `watch` asks for progress.
const POLL: Duration = Duration::from_millis(500);

/// The broker configs that cap replication traffic, and the topic configs that say which
/// replicas they apply to (Kafka's names).
const RATE_CONFIGS: [&str; 2] = [
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
];
const REPLICA_CONFIGS: [&str; 2] = [
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
];

/// DescribeConfigs sources of a value set on the topic or on the broker itself.
const TOPIC_CONFIG: i8 = 1;
const DYNAMIC_BROKER_CONFIG: i8 = 2;

#[derive(clap::Subcommand)]
pub enum ReassignCommand {
    /// Print a plan (Kafka's reassignment JSON) that spreads the topics' replicas over the
    /// given brokers, keeping each partition's replication factor and the replicas already
    /// on one of them.
    Plan {
        /// Comma-separated topic names.
        #[arg(long, value_delimiter = ',', required = true)]
        topics: Vec<String>,
        /// Comma-separated broker ids to place replicas on.
        #[arg(long, value_delimiter = ',', required = true)]
        brokers: Vec<i32>,
    },
    /// Start the moves of a plan (AlterPartitionReassignments).
    Execute {
        /// A plan in Kafka's reassignment JSON format (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        #[command(flatten)]
        throttle: Throttle,
    },
    /// Show the moves in progress until none is left, then remove the throttles (as
    /// kafka-reassign-partitions.sh --verify does).
    Watch {
        /// Only the partitions of this plan, and check that they ended where it says.
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
    },
    /// Cancel moves in progress (the added replicas leave), and remove the throttles.
    Cancel {
        /// Only the partitions of this plan; every move in progress when not given.
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct Throttle {
    /// Cap replication traffic of the moves at this many bytes per second per broker (sets
    /// leader/follower.replication.throttled.rate on the brokers involved, and
    /// leader/follower.replication.throttled.replicas on the topics).
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub throttle: Option<u64>,
}

/// Kafka's reassignment JSON: `{"version":1,"partitions":[{"topic","partition","replicas"}]}`
/// (its optional `log_dirs` are ignored: every replica goes to the broker's log dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub version: i32,
    pub partitions: Vec<Move>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
}

impl Plan {
    fn new(partitions: Vec<Move>) -> Self {
        Plan {
            version: 1,
            partitions,
        }
    }

    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin()).context("reading the plan from stdin")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        let plan: Plan = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a reassignment plan ({{\"version\":1,\"partitions\":[...]}})",
                path.display()
            )
        })?;
        if plan.version != 1 {
            bail!("plan version {} is not supported (only 1)", plan.version);
        }
        let mut seen = BTreeSet::new();
        for m in &plan.partitions {
            if !seen.insert((&m.topic, m.partition)) {
                bail!("the plan moves {}-{} twice", m.topic, m.partition);
            }
            let distinct: BTreeSet<i32> = m.replicas.iter().copied().collect();
            if m.replicas.is_empty() || distinct.len() != m.replicas.len() {
                bail!(
                    "{}-{}: replicas {:?} must be distinct and not empty",
                    m.topic,
                    m.partition,
                    m.replicas
                );
            }
        }
        Ok(plan)
    }

    fn topics(&self) -> BTreeSet<&str> {
        self.partitions.iter().map(|m| m.topic.as_str()).collect()
    }
}

/// Each partition's replicas, by (topic, partition), from a Metadata response; an error
/// names a topic the cluster does not know.
fn assignment(metadata: &MetadataResponse) -> anyhow::Result<BTreeMap<(String, i32), Vec<i32>>> {
    let mut out = BTreeMap::new();
    for t in &metadata.topics {
        let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        check(t.error_code, &format!("Metadata for topic {name}"))?;
        for p in &t.partitions {
            out.insert(
                (name.clone(), p.partition_index),
                p.replica_nodes.iter().map(|b| b.0).collect(),
            );
        }
    }
    Ok(out)
}

/// The moves that put every partition's replicas on `brokers` or `keep` only: replicas
/// already on one of them stay (in their order, so a kept leader stays preferred), and each
/// missing one goes to the least loaded of `brokers`, ties broken round-robin. Partitions
/// already placed so are left out.
fn spread(
    current: &BTreeMap<(String, i32), Vec<i32>>,
    brokers: &[i32],
    keep: &BTreeSet<i32>,
) -> anyhow::Result<Vec<Move>> {
    let allowed: Vec<i32> = brokers
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if allowed.is_empty() {
        bail!("no brokers to place replicas on");
    }
    let stays = |r: &&i32| allowed.contains(r) || keep.contains(r);
    let too_big: BTreeSet<String> = current
        .iter()
        .filter(|(_, replicas)| {
            let kept = replicas.iter().filter(stays).count();
            let free = allowed.iter().filter(|b| !replicas.contains(b)).count();
            replicas.len() - kept > free
        })
        .map(|((topic, _), replicas)| format!("{topic} (replication factor {})", replicas.len()))
        .collect();
    if !too_big.is_empty() {
        bail!(
            "{} broker(s) ({}) cannot hold every replica of {}",
            allowed.len(),
            ids(&allowed),
            too_big.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    // Kept replicas count first, so new ones fill the emptiest brokers.
    let mut load: HashMap<i32, usize> = allowed.iter().map(|b| (*b, 0)).collect();
    for replicas in current.values() {
        for r in replicas {
            if let Some(n) = load.get_mut(r) {
                *n += 1;
            }
        }
    }
    let mut next = 0;
    let mut moves = Vec::new();
    for ((topic, partition), replicas) in current {
        let mut target: Vec<i32> = replicas.iter().filter(stays).copied().collect();
        while target.len() < replicas.len() {
            let pick = (0..allowed.len())
                .map(|i| allowed[(next + i) % allowed.len()])
                .filter(|b| !target.contains(b))
                .min_by_key(|b| load.get(b).copied().unwrap_or(0))
                .context("no broker left for a replica")?;
            next = allowed.iter().position(|b| *b == pick).unwrap_or(0) + 1;
            *load.entry(pick).or_default() += 1;
            target.push(pick);
        }
        if target != *replicas {
            moves.push(Move {
                topic: topic.clone(),
                partition: *partition,
                replicas: target,
            });
        }
    }
    Ok(moves)
}

fn ids(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

pub fn run(command: ReassignCommand, args: &ClientArgs) -> anyhow::Result<()> {
    match command {
        ReassignCommand::Plan { topics, brokers } => plan(args, &topics, &brokers),
        ReassignCommand::Execute { plan, throttle } => {
            execute(args, &Plan::read(&plan)?, throttle.throttle)
        }
        ReassignCommand::Watch { plan } => {
            let plan = plan.as_deref().map(Plan::read).transpose()?;
            watch(args, plan.as_ref())
        }
        ReassignCommand::Cancel { plan } => {
            let plan = plan.as_deref().map(Plan::read).transpose()?;
            cancel(args, plan.as_ref())
        }
    }
}

fn plan(args: &ClientArgs, topics: &[String], brokers: &[i32]) -> anyhow::Result<()> {
    let mut client = args.connect(TIMEOUT)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let metadata = metadata(&mut client, Some(&names))?;
    let known: BTreeSet<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    let unknown: Vec<i32> = brokers
        .iter()
        .copied()
        .filter(|b| !known.contains(b))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "no live broker {} in the cluster (live brokers: {})",
            ids(&unknown),
            ids(&known.into_iter().collect::<Vec<_>>())
        );
    }
    let current = assignment(&metadata)?;
    let moves = spread(&current, brokers, &BTreeSet::new())?;
    eprintln!("{} of {} partitions move", moves.len(), current.len());
    println!("{}", serde_json::to_string_pretty(&Plan::new(moves))?);
    Ok(())
}

/// Starts the plan's moves; with `throttle`, first caps their replication traffic.
pub fn execute(args: &ClientArgs, plan: &Plan, throttle: Option<u64>) -> anyhow::Result<()> {
    let mut client = args.connect(TIMEOUT)?;
    let topics: Vec<&str> = plan.topics().into_iter().collect();
    let current = assignment(&metadata(&mut client, Some(&topics))?)?;
    let mut before = Vec::new();
    for m in &plan.partitions {
        let replicas = current
            .get(&(m.topic.clone(), m.partition))
            .with_context(|| format!("no partition {}-{} in the cluster", m.topic, m.partition))?;
        before.push(Move {
            replicas: replicas.clone(),
            ..m.clone()
        });
    }
    if let Some(rate) = throttle {
        set_throttles(args, &throttles(&before, plan), rate)?;
    }
    let targets: Vec<_> = plan
        .partitions
        .iter()
        .map(|m| (m.topic.as_str(), m.partition, Some(m.replicas.as_slice())))
        .collect();
    let outcomes = alter_reassignments(&mut client, &targets)?;
    print_table(
        &["TOPIC", "PARTITION", "FROM", "TO", "RESULT"],
        before
            .iter()
            .zip(&plan.partitions)
            .map(|(from, to)| {
                vec![
                    to.topic.clone(),
                    to.partition.to_string(),
                    ids(&from.replicas),
                    ids(&to.replicas),
                    outcome_text(&outcomes, &to.topic, to.partition),
                ]
            })
            .collect(),
    );
    // Kafka's tool prints the current assignment for the same reason: it is the plan that
    // undoes this one.
    eprintln!(
        "To roll back, execute this plan:\n{}",
        serde_json::to_string(&Plan::new(before))?
    );
    failed_moves(&outcomes, "started")
}

/// Sends AlterPartitionReassignments: each (topic, partition) to its target replicas, or
/// with `None` back to where it was before its move (a cancel).
fn alter_reassignments(
    client: &mut Client,
    targets: &[(&str, i32, Option<&[i32]>)],
) -> anyhow::Result<Outcomes> {
    let mut by_topic: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
    for (topic, partition, replicas) in targets {
        by_topic.entry(topic).or_default().push(
            ReassignablePartition::default()
                .with_partition_index(*partition)
                .with_replicas(replicas.map(|r| r.iter().map(|b| BrokerId(*b)).collect())),
        );
    }
    let (_, response) = client.send(None, |_| {
        AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(TIMEOUT.as_millis() as i32)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(topic, partitions)| {
                        ReassignableTopic::default()
                            .with_name(TopicName(s(topic)))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
    })?;
    reassignment_outcomes(&response)
}

/// Each partition's result in an AlterPartitionReassignments response: `None` when done,
/// else the error's name and message.
type Outcomes = BTreeMap<(String, i32), Option<String>>;

fn reassignment_outcomes(
    response: &kafka_protocol::messages::AlterPartitionReassignmentsResponse,
) -> anyhow::Result<Outcomes> {
    if response.error_code != 0 {
        bail!(
            "AlterPartitionReassignments failed: {}{}",
            error_name(response.error_code),
            response
                .error_message
                .as_ref()
                .map_or_else(String::new, |m| format!(": {}", m.as_str()))
        );
    }
    Ok(response
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let error = (p.error_code != 0).then(|| {
                    let message = p.error_message.as_ref().map_or("", |m| m.as_str());
                    if message.is_empty() {
                        error_name(p.error_code)
                    } else {
                        format!("{}: {message}", error_name(p.error_code))
                    }
                });
                ((t.name.to_string(), p.partition_index), error)
            })
        })
        .collect())
}

fn outcome_text(outcomes: &Outcomes, topic: &str, partition: i32) -> String {
    match outcomes.get(&(topic.to_string(), partition)) {
        Some(None) => "ok".into(),
        Some(Some(error)) => error.clone(),
        None => "no answer".into(),
    }
}

fn failed_moves(outcomes: &Outcomes, what: &str) -> anyhow::Result<()> {
    let failed = outcomes.values().filter(|o| o.is_some()).count();
    if failed > 0 {
        bail!("{failed} of {} moves not {what}", outcomes.len());
    }
    Ok(())
}

/// Kafka's throttles for a reassignment.
#[derive(Debug, PartialEq, Eq)]
struct Throttles {
    /// Every broker a moved partition is or will be on: they get the rates.
    brokers: BTreeSet<i32>,
    /// Per topic, the values of [`REPLICA_CONFIGS`]: the leader throttle on the replicas
    /// the moved partitions have now (they send the data), the follower throttle on the ones
    /// being added (they fetch it), each as `partition:broker,…`.
    replicas: BTreeMap<String, [String; 2]>,
}

fn throttles(before: &[Move], plan: &Plan) -> Throttles {
    let mut brokers = BTreeSet::new();
    let mut lists: BTreeMap<String, [Vec<String>; 2]> = BTreeMap::new();
    for (from, to) in before.iter().zip(&plan.partitions) {
        if from.replicas == to.replicas {
            continue;
        }
        brokers.extend(from.replicas.iter().chain(&to.replicas).copied());
        let pair = |b: &i32| format!("{}:{b}", to.partition);
        let [leaders, followers] = lists.entry(to.topic.clone()).or_default();
        leaders.extend(from.replicas.iter().map(pair));
        followers.extend(
            to.replicas
                .iter()
                .filter(|b| !from.replicas.contains(b))
                .map(pair),
        );
    }
    Throttles {
        brokers,
        replicas: lists
            .into_iter()
            .map(|(topic, lists)| (topic, lists.map(|l| l.join(","))))
            .collect(),
    }
}

fn set_throttles(args: &ClientArgs, throttles: &Throttles, rate: u64) -> anyhow::Result<()> {
    let rates: Vec<String> = RATE_CONFIGS.iter().map(|k| format!("{k}={rate}")).collect();
    for broker in &throttles.brokers {
        alter_configs(args, RESOURCE_BROKER, &broker.to_string(), &rates, &[])
            .with_context(|| format!("throttling broker {broker}"))?;
    }
    for (topic, values) in &throttles.replicas {
        let set: Vec<String> = REPLICA_CONFIGS
            .iter()
            .zip(values)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        alter_configs(args, RESOURCE_TOPIC, topic, &set, &[])
            .with_context(|| format!("throttling the replicas of {topic}"))?;
    }
    println!(
        "Throttled replication to {rate} B/s on brokers {} for {}",
        ids(&throttles.brokers.iter().copied().collect::<Vec<_>>()),
        throttles
            .replicas
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Removes the throttle configs set on the brokers and on `topics` (every topic when
/// `None`), as kafka-reassign-partitions.sh --verify does once the moves are over. Only
/// values actually set are deleted, so a cluster whose brokers lack a config is fine.
fn clear_throttles(args: &ClientArgs, topics: Option<BTreeSet<&str>>) -> anyhow::Result<()> {
    let mut client = args.connect(TIMEOUT)?;
    let metadata = metadata(&mut client, None)?;
    let all: BTreeSet<String> = metadata
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    let topics: Vec<String> = match topics {
        Some(wanted) => wanted
            .into_iter()
            .filter(|t| all.contains(*t))
            .map(str::to_string)
            .collect(),
        None => all.into_iter().collect(),
    };
    let mut cleared = Vec::new();
    let targets = metadata
        .brokers
        .iter()
        .map(|b| {
            (
                RESOURCE_BROKER,
                b.node_id.0.to_string(),
                &RATE_CONFIGS,
                DYNAMIC_BROKER_CONFIG,
            )
        })
        .chain(
            topics
                .into_iter()
                .map(|t| (RESOURCE_TOPIC, t, &REPLICA_CONFIGS, TOPIC_CONFIG)),
        );
    for (resource, name, keys, source) in targets {
        let keys = keys.iter().map(|k| k.to_string()).collect();
        let set: Vec<String> = describe_configs(&mut client, resource, &name, Some(keys))?
            .configs
            .iter()
            .filter(|c| c.config_source == source)
            .map(|c| c.name.to_string())
            .collect();
        if !set.is_empty() {
            alter_configs(args, resource, &name, &[], &set)?;
            let kind = if resource == RESOURCE_BROKER {
                "broker"
            } else {
                "topic"
            };
            cleared.push(format!("{kind} {name}"));
        }
    }
    if !cleared.is_empty() {
        println!(
            "Removed the replication throttles of {}",
            cleared.join(", ")
        );
    }
    Ok(())
}

/// A move in progress, as ListPartitionReassignments lists it.
struct Ongoing {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
    adding: Vec<i32>,
    removing: Vec<i32>,
}

/// The moves in progress, of `plan`'s partitions only when given.
fn ongoing(client: &mut Client, plan: Option<&Plan>) -> anyhow::Result<Vec<Ongoing>> {
    let wanted = plan.map(|p| {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for m in &p.partitions {
            by_topic.entry(&m.topic).or_default().push(m.partition);
        }
        by_topic
    });
    let (_, response) = client.send(None, |_| {
        ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(TIMEOUT.as_millis() as i32)
            .with_topics(wanted.as_ref().map(|w| {
                w.iter()
                    .map(|(topic, partitions)| {
                        ListPartitionReassignmentsTopics::default()
                            .with_name(TopicName(s(topic)))
                            .with_partition_indexes(partitions.clone())
                    })
                    .collect()
            }))
    })?;
    check(response.error_code, "ListPartitionReassignments")?;
    let list = |v: &[BrokerId]| v.iter().map(|b| b.0).collect();
    Ok(response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| Ongoing {
                topic: t.name.to_string(),
                partition: p.partition_index,
                replicas: list(&p.replicas),
                adding: list(&p.adding_replicas),
                removing: list(&p.removing_replicas),
            })
        })
        .collect())
}

/// How many bytes each added replica lacks: its log's size against its leader's, from
/// DescribeLogDirs of the brokers involved (a cheap question: no data is read).
fn catch_up(
    client: &mut Client,
    moves: &[Ongoing],
) -> anyhow::Result<BTreeMap<(String, i32, i32), i64>> {
    let topics: Vec<&str> = moves
        .iter()
        .map(|m| m.topic.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let metadata = metadata(client, Some(&topics))?;
    let leaders: HashMap<(String, i32), i32> = metadata
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            t.partitions
                .iter()
                .map(move |p| ((name.clone(), p.partition_index), p.leader_id.0))
        })
        .collect();
    let addresses: HashMap<i32, String> = metadata
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    // (broker, topic, partition) → bytes, asking each broker about its partitions only.
    let mut asked: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
    for m in moves {
        let leader = leaders.get(&(m.topic.clone(), m.partition)).copied();
        for broker in m.adding.iter().copied().chain(leader) {
            asked
                .entry(broker)
                .or_default()
                .entry(&m.topic)
                .or_default()
                .push(m.partition);
        }
    }
    let mut sizes: HashMap<(i32, String, i32), i64> = HashMap::new();
    for (broker, topics) in &asked {
        // A broker that is not serving (fenced, or still starting) has no size to show.
        let Some(addr) = addresses.get(broker) else {
            continue;
        };
        let wanted = topics
            .iter()
            .map(|(t, ps)| {
                DescribableLogDirTopic::default()
                    .with_topic(TopicName(s(t)))
                    .with_partitions(ps.clone())
            })
            .collect();
        for dir in describe_log_dirs(client, addr, Some(wanted))? {
            for t in &dir.topics {
                for p in &t.partitions {
                    sizes.insert(
                        (*broker, t.name.to_string(), p.partition_index),
                        p.partition_size,
                    );
                }
            }
        }
    }
    let mut behind = BTreeMap::new();
    for m in moves {
        let Some(leader) = leaders.get(&(m.topic.clone(), m.partition)) else {
            continue;
        };
        let Some(full) = sizes.get(&(*leader, m.topic.clone(), m.partition)) else {
            continue;
        };
        for added in &m.adding {
            let have = sizes
                .get(&(*added, m.topic.clone(), m.partition))
                .copied()
                .unwrap_or(0);
            behind.insert((m.topic.clone(), m.partition, *added), (full - have).max(0));
        }
    }
    Ok(behind)
}

/// Shows the moves in progress until none is left; then checks that `plan`'s partitions
/// ended where it says, and removes the throttles.
pub fn watch(args: &ClientArgs, plan: Option<&Plan>) -> anyhow::Result<()> {
    let mut client = args.connect(TIMEOUT)?;
    let mut shown = String::new();
    loop {
        let moves = ongoing(&mut client, plan)?;
        if moves.is_empty() {
            break;
        }
        let behind = catch_up(&mut client, &moves)?;
        let rows: Vec<Vec<String>> = moves
            .iter()
            .map(|m| {
                let lag: Vec<String> = m
                    .adding
                    .iter()
                    .map(|b| match behind.get(&(m.topic.clone(), m.partition, *b)) {
                        Some(0) => format!("{b}: caught up"),
                        Some(bytes) => format!("{b}: {bytes} bytes behind"),
                        None => format!("{b}: ?"),
                    })
                    .collect();
                vec![
                    m.topic.clone(),
                    m.partition.to_string(),
                    ids(&m.replicas),
                    ids(&m.adding),
                    ids(&m.removing),
                    lag.join(", "),
                ]
            })
            .collect();
        let text = format!("{rows:?}");
        if text != shown {
            println!("{} move(s) in progress:", moves.len());
            print_table(
                &[
                    "TOPIC",
                    "PARTITION",
                    "REPLICAS",
                    "ADDING",
                    "REMOVING",
                    "CATCH-UP",
                ],
                rows,
            );
            shown = text;
        }
        std::thread::sleep(POLL);
    }
    let mut wrong = Vec::new();
    if let Some(plan) = plan {
        let topics: Vec<&str> = plan.topics().into_iter().collect();
        let now = assignment(&metadata(&mut client, Some(&topics))?)?;
        for m in &plan.partitions {
            let there = now.get(&(m.topic.clone(), m.partition));
            let wanted: BTreeSet<&i32> = m.replicas.iter().collect();
            if there.map(|r| r.iter().collect::<BTreeSet<_>>()) != Some(wanted) {
                wrong.push(format!(
                    "{}-{} is on {} instead of {}",
                    m.topic,
                    m.partition,
                    there.map_or_else(|| "nothing".to_string(), |r| ids(r)),
                    ids(&m.replicas)
                ));
            }
        }
    }
    clear_throttles(args, plan.map(Plan::topics))?;
    if !wrong.is_empty() {
        bail!("moves did not complete as planned: {}", wrong.join("; "));
    }
    println!("No reassignment in progress.");
    Ok(())
}

/// Cancels the moves of `plan` (every move in progress when `None`).
fn cancel(args: &ClientArgs, plan: Option<&Plan>) -> anyhow::Result<()> {
    let mut client = args.connect(TIMEOUT)?;
    let targets: Vec<(String, i32)> = match plan {
        Some(p) => p
            .partitions
            .iter()
            .map(|m| (m.topic.clone(), m.partition))
            .collect(),
        None => ongoing(&mut client, None)?
            .into_iter()
            .map(|m| (m.topic, m.partition))
            .collect(),
    };
    if targets.is_empty() {
        println!("No reassignment in progress.");
        return Ok(());
    }
    let cancels: Vec<_> = targets
        .iter()
        .map(|(t, p)| (t.as_str(), *p, None))
        .collect();
    let outcomes = alter_reassignments(&mut client, &cancels)?;
    print_table(
        &["TOPIC", "PARTITION", "RESULT"],
        targets
            .iter()
            .map(|(topic, partition)| {
                let result = match outcome_text(&outcomes, topic, *partition).as_str() {
                    "ok" => "cancelled".to_string(),
                    other => other.to_string(),
                };
                vec![topic.clone(), partition.to_string(), result]
            })
            .collect(),
    );
    clear_throttles(args, plan.map(Plan::topics))?;
    failed_moves(&outcomes, "cancelled")
}

/// Moves every replica off broker `id` onto the other live brokers, and (unless `no_wait`)
/// waits until it holds none, so it can be stopped.
pub fn decommission(
    args: &ClientArgs,
    id: i32,
    throttle: Option<u64>,
    no_wait: bool,
) -> anyhow::Result<()> {
    let mut client = args.connect(TIMEOUT)?;
    let cluster = describe_cluster(&mut client, true)?;
    if !cluster.brokers.iter().any(|b| b.broker_id.0 == id) {
        bail!("no broker {id} in the cluster");
    }
    let remaining: Vec<i32> = cluster
        .brokers
        .iter()
        .filter(|b| b.broker_id.0 != id && !b.is_fenced)
        .map(|b| b.broker_id.0)
        .collect();
    // Replicas on a fenced broker (perhaps restarting) stay: only broker `id` is drained.
    let fenced: BTreeSet<i32> = cluster
        .brokers
        .iter()
        .filter(|b| b.broker_id.0 != id && b.is_fenced)
        .map(|b| b.broker_id.0)
        .collect();
    let current: BTreeMap<(String, i32), Vec<i32>> = assignment(&metadata(&mut client, None)?)?
        .into_iter()
        .filter(|(_, replicas)| replicas.contains(&id))
        .collect();
    if current.is_empty() {
        println!("Broker {id} holds no replicas: it can be stopped.");
        return Ok(());
    }
    let moves = spread(&current, &remaining, &fenced).with_context(|| {
        format!(
            "cannot drain broker {id}: the other live brokers are too few (add brokers or \
             lower the replication factor first)"
        )
    })?;
    println!(
        "Moving {} partition(s) off broker {id} onto brokers {}",
        moves.len(),
        ids(&remaining)
    );
    let plan = Plan::new(moves);
    execute(args, &plan, throttle)?;
    if no_wait {
        println!(
            "Not waiting: `odradek cluster reassign watch` shows the progress and removes the \
             throttles."
        );
        return Ok(());
    }
    watch(args, Some(&plan))?;
    println!("Broker {id} holds no replicas: it can be stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(partitions: &[(&str, i32, &[i32])]) -> BTreeMap<(String, i32), Vec<i32>> {
        partitions
            .iter()
            .map(|(t, p, r)| ((t.to_string(), *p), r.to_vec()))
            .collect()
    }

    #[test]
    fn spreading_keeps_allowed_replicas_and_balances_new_ones() {
        // Six single-replica partitions on broker 1, spread over 1, 2 and 3: two stay and
        // the others go two to each of 2 and 3.
        let current = layout(&[
            ("a", 0, &[1]),
            ("a", 1, &[1]),
            ("a", 2, &[1]),
            ("b", 0, &[1, 2]),
        ]);
        let none = BTreeSet::new();
        let moves = spread(&current, &[1, 2, 3], &none).unwrap();
        assert!(
            moves.is_empty(),
            "everything is on an allowed broker: {moves:?}"
        );
        let moves = spread(&current, &[2, 3], &none).unwrap();
        let targets: Vec<(&str, i32, &[i32])> = moves
            .iter()
            .map(|m| (m.topic.as_str(), m.partition, m.replicas.as_slice()))
            .collect();
        // b-0 keeps 2; the replication factor stays; 2 and 3 take turns.
        assert_eq!(
            targets,
            vec![
                ("a", 0, &[3][..]),
                ("a", 1, &[2][..]),
                ("a", 2, &[3][..]),
                ("b", 0, &[2, 3][..])
            ]
        );
    }

    #[test]
    fn spreading_refuses_a_replication_factor_the_brokers_cannot_hold() {
        let current = layout(&[("a", 0, &[1, 2, 3])]);
        let none = BTreeSet::new();
        let error = spread(&current, &[1, 2], &none).unwrap_err().to_string();
        assert!(error.contains("a (replication factor 3)"), "{error}");
        assert!(spread(&current, &[], &none).is_err());
    }

    #[test]
    fn spreading_keeps_replicas_on_brokers_to_keep() {
        // Draining 3 while 2 is fenced: 2's replica stays, 3's goes to 1.
        let current = layout(&[("a", 0, &[3, 2])]);
        let moves = spread(&current, &[1], &BTreeSet::from([2])).unwrap();
        assert_eq!(moves[0].replicas, vec![2, 1]);
    }

    #[test]
    fn throttles_are_kafkas_leader_and_follower_replica_lists() {
        let at = |topic: &str, partition, replicas: &[i32]| Move {
            topic: topic.into(),
            partition,
            replicas: replicas.to_vec(),
        };
        let before = [at("a", 0, &[1, 2]), at("a", 1, &[2, 3]), at("b", 0, &[1])];
        let plan = Plan::new(vec![
            at("a", 0, &[2, 4]),
            at("a", 1, &[2, 3]),
            at("b", 0, &[3]),
        ]);
        let t = throttles(&before, &plan);
        // a-1 does not move, so broker-wise only 1, 2, 4 (a-0) and 1, 3 (b-0) take part.
        assert_eq!(t.brokers, BTreeSet::from([1, 2, 3, 4]));
        assert_eq!(
            t.replicas,
            BTreeMap::from([
                ("a".to_string(), ["0:1,0:2".to_string(), "0:4".to_string()]),
                ("b".to_string(), ["0:1".to_string(), "0:3".to_string()]),
            ])
        );
    }

    #[test]
    fn plans_read_kafka_format_and_refuse_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        std::fs::write(
            &path,
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,2],"log_dirs":["any","any"]}]}"#,
        )
        .unwrap();
        let plan = Plan::read(&path).unwrap();
        assert_eq!(plan.partitions[0].replicas, vec![1, 2]);
        std::fs::write(
            &path,
            r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,1]}]}"#,
        )
        .unwrap();
        assert!(Plan::read(&path).is_err());
    }
}
