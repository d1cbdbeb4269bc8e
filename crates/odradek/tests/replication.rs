//! Partition replication (Kafka's ISR protocol) through real processes and real clients:
//! followers fetch from the leader, the high watermark is the lowest log end over the ISR,
//! an acks=all write is answered once every ISR member has it, `min.insync.replicas`
//! refuses acks=all writes to a shrunken ISR, and a fenced leader's partitions move to an
//! in-sync follower. Operators move replicas with `odradek cluster reassign` and drain a
//! broker with `odradek cluster decommission`, and the web console shows each partition's
//! replicas and ISR and each broker's health.
//!
//! `acknowledged_writes_survive_leader_failures` runs a seeded fault schedule on three
//! hosts (network namespaces, so a node can be cut off; needs root). The normal run does
//! five faults, one of each kind (about a minute). The long form:
//! `ODRADEK_REPLICATION_STEPS=100 cargo nextest run -p odradek --test replication`, and
//! `ODRADEK_REPLICATION_SEED=<seed printed by a failed run>` replays a schedule.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use support::cluster::{Cluster, ClusterNode, Launcher, Role, eventually};
use support::netns::Network;
use support::*;

/// A dead or frozen broker is fenced within 3 s (heartbeats every 500 ms), so its
/// partitions move, and its ISR places are given up, within a test's patience.
const FAST_FENCING: &[&str] = &[
    "--set",
    "broker.session.timeout.ms=3000",
    "--set",
    "broker.heartbeat.interval.ms=500",
];

/// How long a cluster gets to recover from a fault (fencing, election, catch-up).
const RECOVERY: Duration = Duration::from_secs(40);

/// xorshift64*: the schedule only needs to be varied and replayable.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Any seed, 0 too, gives a live generator.
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15).max(1))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

/// Creates `name` with replication factor 3 through `bootstrap`, retrying across an
/// election. A refusal of the request itself (the replication factor, the configs) fails
/// at once: retrying cannot change it.
async fn create_replicated(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(3));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let outcome = admin(bootstrap)
            .create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .map(|mut results| results.remove(0));
        let error = match outcome {
            Ok(Ok(_)) | Ok(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => return,
            Ok(Err((
                _,
                code @ (RDKafkaErrorCode::InvalidReplicationFactor
                | RDKafkaErrorCode::InvalidReplicaAssignment
                | RDKafkaErrorCode::InvalidConfig
                | RDKafkaErrorCode::PolicyViolation),
            ))) => {
                panic!("CreateTopics {name} (replication factor 3, {configs:?}) refused: {code:?}")
            }
            Ok(Err((_, code))) => format!("{code:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{name} not created within 20 s: {error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `topic` with one partition per entry of `placement`, on those brokers.
async fn create_placed(bootstrap: &str, topic: &str, placement: &[&[i32]]) {
    let created = admin(bootstrap)
        .create_topics(
            &[NewTopic::new(
                topic,
                placement.len() as i32,
                TopicReplication::Variable(placement),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("create");
    assert!(created[0].is_ok(), "{created:?}");
}

/// One partition as Metadata shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionView {
    /// -1: none.
    leader: i32,
    replicas: BTreeSet<i32>,
    isr: BTreeSet<i32>,
}

impl PartitionView {
    /// Led, and every replica in sync.
    fn healthy(&self) -> bool {
        self.leader >= 0 && self.replicas.len() == 3 && self.isr == self.replicas
    }
}

/// `topic`'s partitions, by index, as librdkafka's Metadata reads them through `bootstrap`
/// (None while the topic is unknown there or no broker answers).
fn partitions(bootstrap: &str, topic: &str) -> Option<Vec<PartitionView>> {
    let consumer = consumer(bootstrap, &[]);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = metadata.topics().iter().find(|t| t.name() == topic)?;
    if t.error().is_some() || t.partitions().is_empty() {
        return None;
    }
    let mut views: Vec<(i32, PartitionView)> = t
        .partitions()
        .iter()
        .map(|p| {
            (
                p.id(),
                PartitionView {
                    leader: p.leader(),
                    replicas: p.replicas().iter().copied().collect(),
                    isr: p.isr().iter().copied().collect(),
                },
            )
        })
        .collect();
    views.sort_by_key(|(id, _)| *id);
    Some(views.into_iter().map(|(_, v)| v).collect())
}

/// The metadata quorum's leader (the active controller), as DescribeQuorum reports it
/// through `addr`, if it answers without an error.
fn quorum_leader(addr: &str) -> Option<i32> {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    use kafka_protocol::messages::{DescribeQuorumRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let request = DescribeQuorumRequest::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
    ]);
    let response = std::panic::catch_unwind(|| raw_round_trip(addr, &request, 2)).ok()?;
    let partition = response
        .topics
        .into_iter()
        .next()?
        .partitions
        .into_iter()
        .next()?;
    let ok = response.error_code == 0 && partition.error_code == 0;
    (ok && partition.leader_id.0 >= 0).then_some(partition.leader_id.0)
}

/// Partition 0 of `topic` once it is led with every replica in sync.
fn partition_0_in_sync(bootstrap: &str, topic: &str) -> PartitionView {
    eventually(RECOVERY, "partition 0 led, three replicas in sync", || {
        partitions(bootstrap, topic)
            .and_then(|v| v.into_iter().next().filter(PartitionView::healthy))
    })
}

/// Creates `topic` with one partition on nodes 1-3 and waits until node 1 leads it with
/// all three in sync.
async fn create_led_by_node_1(bootstrap: &str, topic: &str) {
    create_placed(bootstrap, topic, &[&[1, 2, 3]]).await;
    eventually(
        RECOVERY,
        "led by node 1 with three replicas in sync",
        || {
            partitions(bootstrap, topic)?
                .into_iter()
                .next()
                .filter(|v| v.healthy() && v.leader == 1)
        },
    );
}

/// The bytes of every `.log` segment of `topic`-`partition` in `data_dir`, in offset order
/// (empty if the directory is missing): replicas must agree on them whatever their segment
/// boundaries.
fn log_bytes(data_dir: &std::path::Path, topic: &str, partition: i32) -> Vec<u8> {
    let dir = data_dir.join(format!("{topic}-{partition}"));
    if !dir.is_dir() {
        return Vec::new();
    }
    segment_files(&dir)
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap_or_default())
        .collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every record of `topic`/`partition` below `high`, offset → payload, read with a fresh
/// consumer from the beginning (transient errors are retried until `timeout`).
fn read_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    high: i64,
    timeout: Duration,
) -> BTreeMap<i64, String> {
    let consumer = consumer(bootstrap, &[("auto.offset.reset", "earliest")]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("assignment");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = BTreeMap::new();
    let mut last = -1;
    while last + 1 < high {
        assert!(
            Instant::now() < deadline,
            "{topic}/{partition}: read to offset {last} of high watermark {high}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if m.offset() >= high => break,
            Some(Ok(m)) => {
                assert!(
                    m.offset() > last,
                    "{topic}/{partition}: offset {} after {last}",
                    m.offset()
                );
                last = m.offset();
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                out.insert(m.offset(), value);
            }
            Some(Err(e)) => eprintln!("{topic}/{partition}: reading: {e}"),
            None => {}
        }
    }
    out
}

/// The high watermark of `topic`/`partition` through `bootstrap`.
fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    let probe = consumer(bootstrap, &[]);
    eventually(RECOVERY, "the high watermark", || {
        probe
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
            .ok()
            .map(|(_, high)| high)
    })
}

/// Sends `payload` to `topic`/`partition` and waits for its delivery report.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    payload: &str,
) -> Result<i64, KafkaError> {
    producer
        .send(
            FutureRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map(|d| d.offset)
        .map_err(|(e, _)| e)
}

// ---------------------------------------------------------------------------------------
// The fault schedule.

const TOPIC: &str = "replicated";
const PARTITIONS: i32 = 3;
const IDEMPOTENT: &str = "idem";
const PLAIN: &str = "plain";

/// (partition, offset) → payload of every record whose delivery report succeeded.
type Acked = Arc<Mutex<BTreeMap<(i32, i64), String>>>;
/// What went wrong while the schedule ran, found by the clients' threads.
type Violations = Arc<Mutex<Vec<String>>>;

/// Writes `{name}-{seq:08}` to partition `seq % PARTITIONS` in windows of 20, every
/// delivery report awaited, until told to stop. Failures (during faults) are expected and
/// counted; the producer is returned for its fatal-error state.
async fn run_producer(
    bootstrap: String,
    name: &'static str,
    idempotent: bool,
    stop: Arc<AtomicBool>,
    acked: Acked,
    violations: Violations,
    failed: Arc<AtomicU64>,
) -> FutureProducer {
    let client = producer(
        &bootstrap,
        &[
            ("acks", "all"),
            (
                "enable.idempotence",
                if idempotent { "true" } else { "false" },
            ),
            ("message.timeout.ms", "10000"),
            ("reconnect.backoff.max.ms", "200"),
            ("compression.type", "none"),
        ],
    );
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let sends: Vec<_> = (seq..seq + 20)
            .map(|s| {
                let value = format!("{name}-{s:08}");
                let record = FutureRecord::<(), _>::to(TOPIC)
                    .partition((s % PARTITIONS as u64) as i32)
                    .payload(&value);
                let future = enqueue(&client, record);
                (value, future)
            })
            .collect();
        seq += 20;
        let mut failures = 0;
        for (value, future) in sends {
            match delivered(future).await {
                Ok(d) => {
                    let previous = acked
                        .lock()
                        .expect("acked")
                        .insert((d.partition, d.offset), value.clone());
                    if let Some(previous) = previous {
                        violations.lock().expect("violations").push(format!(
                            "{}/{} acknowledged twice: for {previous} and for {value}",
                            d.partition, d.offset
                        ));
                    }
                }
                Err(e) => {
                    if failures == 0 {
                        eprintln!("replication producer {name}: {value} failed: {e}");
                    }
                    failures += 1;
                }
            }
        }
        failed.fetch_add(failures, Ordering::Relaxed);
        let pause = if failures > 0 { 100 } else { 10 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    client
}

/// Reads every partition from the beginning for the whole run, keeping (partition,
/// offset) → payload of everything it was ever served; a different payload served at an
/// offset already read is a violation. Offset resets go back to the beginning, which
/// re-reads (and re-checks) what was read before.
fn run_watcher(
    bootstrap: String,
    stop: Arc<AtomicBool>,
    seen: Acked,
    violations: Violations,
) -> u64 {
    let consumer = consumer(
        &bootstrap,
        &[
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "100"),
            ("reconnect.backoff.max.ms", "200"),
        ],
    );
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&tpl).expect("assign");
    let mut errors = 0;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                let previous = seen
                    .lock()
                    .expect("seen")
                    .insert((m.partition(), m.offset()), value.clone());
                if let Some(previous) = previous.filter(|p| *p != value) {
                    violations.lock().expect("violations").push(format!(
                        "the consumer was served {previous} at {}/{}, and later {value}",
                        m.partition(),
                        m.offset()
                    ));
                }
            }
            Some(Err(_)) => errors += 1,
            None => {}
        }
    }
    errors
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// kill -9 a partition's leader, and restart it.
    KillLeader,
    /// kill -9 the active controller (the metadata quorum's leader), and restart it.
    KillController,
    /// kill -9 a partition's leader and the controller: at once when one node is both,
    /// else one after the other, the first back before the second dies (two of three
    /// voters down would stop the quorum).
    KillLeaderAndController,
    /// SIGSTOP a partition's leader (a hung machine, sockets open) for 1-5 s.
    PauseLeader,
    /// Cut a partition's leader off the network (from its peers and from every client)
    /// until another replica leads, then heal: the deposed leader, still running and
    /// perhaps holding records nobody else has, must give up and catch up.
    IsolateLeader,
}

const FAULTS: [Fault; 5] = [
    Fault::KillLeader,
    Fault::KillController,
    Fault::KillLeaderAndController,
    Fault::PauseLeader,
    Fault::IsolateLeader,
];

/// Drives the faults against a cluster, waiting after each for it to serve again.
struct Schedule {
    cluster: Cluster,
    /// Node `i` runs on host `i - 1`. Declared after `cluster` so that the brokers stop
    /// before their namespaces go.
    network: Arc<Network>,
    rng: Rng,
    seed: u64,
    rt: tokio::runtime::Runtime,
    probe: FutureProducer,
    probes: u64,
    /// Leadership moved off a killed leader (each `KillLeader` step waits for one).
    failovers: u64,
    events: Vec<String>,
}

impl Schedule {
    /// Client addresses of every running node (none is frozen while this is asked).
    fn live(&self) -> String {
        self.cluster.bootstrap()
    }

    fn note(&mut self, event: String) {
        eprintln!("replication schedule: {event}");
        self.events.push(event);
    }

    /// Panics with everything needed to replay and diagnose the run.
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\nODRADEK_REPLICATION_SEED={}\nschedule so far:\n  {}\n{}",
            self.seed,
            self.events.join("\n  "),
            self.cluster.logs()
        )
    }

    fn wait_until<T>(&self, what: &str, mut check: impl FnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + RECOVERY;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            if Instant::now() > deadline {
                self.fail(&format!("not within {RECOVERY:?}: {what}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn dwell(&mut self, min_ms: u64, spread_ms: u64) -> Duration {
        let d = Duration::from_millis(min_ms + self.rng.below(spread_ms));
        std::thread::sleep(d);
        d
    }

    /// The leader of a partition picked at random (a random node if it has none now).
    fn some_leader(&mut self) -> (i32, i32) {
        let p = self.rng.below(PARTITIONS as u64) as i32;
        let leader = partitions(&self.live(), TOPIC)
            .map(|v| v[p as usize].leader)
            .filter(|l| *l > 0);
        let leader = leader.unwrap_or_else(|| 1 + self.rng.below(3) as i32);
        (p, leader)
    }

    /// The active controller (a random node if no node names one now).
    fn controller(&mut self) -> i32 {
        let named = self
            .cluster
            .nodes
            .iter()
            .filter(|n| self.cluster.is_running(n.id))
            .find_map(|n| quorum_leader(&n.addr.to_string()));
        named.unwrap_or_else(|| 1 + self.rng.below(3) as i32)
    }

    fn kill_and_restart(&mut self, node: i32, role: &str) {
        self.cluster.kill9(node);
        let down = self.dwell(0, 4000);
        self.cluster.restart(node);
        self.note(format!(
            "killed node {node} ({role}), restarted after {down:?}"
        ));
    }

    /// Waits, after `node` (the leader of partition `p`) was killed or cut off, until
    /// another replica leads `p` (its session timed out and the controller moved
    /// leadership): a failover every schedule goes through, however short its other dwell
    /// times. Returns the new leader and how long the move took.
    fn failover_from(&mut self, node: i32, p: i32) -> (i32, Duration) {
        let lost = Instant::now();
        let others = self
            .cluster
            .nodes
            .iter()
            .filter(|n| n.id != node)
            .map(|n| n.addr.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let next = self.wait_until("another replica leads the partition", |_| {
            partitions(&others, TOPIC)
                .map(|v| v[p as usize].leader)
                .filter(|l| *l > 0 && *l != node)
        });
        self.failovers += 1;
        (next, lost.elapsed())
    }

    fn kill_until_failover(&mut self, node: i32, p: i32) {
        self.cluster.kill9(node);
        let (next, failover) = self.failover_from(node, p);
        let down = failover + self.dwell(0, 1500);
        self.cluster.restart(node);
        self.note(format!(
            "killed node {node} (leader of partition {p}): node {next} led after {failover:?}; restarted after {down:?}"
        ));
    }

    fn isolate_until_failover(&mut self, node: i32, p: i32) {
        let host = (node - 1) as usize;
        self.network.isolate(host);
        let (next, failover) = self.failover_from(node, p);
        let apart = failover + self.dwell(0, 1500);
        self.network.heal(host);
        self.note(format!(
            "cut node {node} (leader of partition {p}) off: node {next} led after {failover:?}; healed after {apart:?}"
        ));
    }

    fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::KillLeader => {
                let (p, leader) = self.some_leader();
                self.kill_until_failover(leader, p);
            }
            Fault::KillController => {
                let controller = self.controller();
                self.kill_and_restart(controller, "controller");
            }
            Fault::KillLeaderAndController => {
                let (p, leader) = self.some_leader();
                if self.controller() == leader {
                    self.kill_and_restart(
                        leader,
                        &format!("leader of partition {p} and controller"),
                    );
                } else {
                    self.kill_and_restart(leader, &format!("leader of partition {p}"));
                    // Whoever leads the quorum now, the moment the first is back.
                    let controller = self.controller();
                    self.kill_and_restart(controller, "controller, right after");
                }
            }
            Fault::PauseLeader => {
                let (p, leader) = self.some_leader();
                self.cluster.pause(leader);
                let frozen = self.dwell(1000, 4000);
                self.cluster.resume(leader);
                self.note(format!(
                    "froze node {leader} (leader of partition {p}) for {frozen:?}"
                ));
            }
            Fault::IsolateLeader => {
                let (p, leader) = self.some_leader();
                self.isolate_until_failover(leader, p);
            }
        }
    }

    /// Whether every partition takes an acks=all write now.
    fn serves_writes(&mut self) -> bool {
        let base = self.probes;
        self.probes += PARTITIONS as u64;
        let probe = &self.probe;
        self.rt.block_on(async {
            for p in 0..PARTITIONS {
                let value = format!("probe-{}", base + p as u64);
                if send(probe, TOPIC, p, &value).await.is_err() {
                    return false;
                }
            }
            true
        })
    }

    /// Waits until every partition takes acks=all writes and has every replica in sync
    /// again, so that the next fault meets a fully replicated cluster.
    fn recover(&mut self) {
        let started = Instant::now();
        let deadline = started + RECOVERY;
        while !self.serves_writes() {
            if Instant::now() > deadline {
                self.fail(&format!("acks=all writes not served within {RECOVERY:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let serving = started.elapsed();
        self.wait_until("every partition led with its three replicas in sync", |s| {
            partitions(&s.live(), TOPIC).filter(|v| v.iter().all(PartitionView::healthy))
        });
        self.note(format!(
            "writes served after {serving:?}, all replicas in sync after {:?}",
            started.elapsed()
        ));
    }
}

#[test]
fn acknowledged_writes_survive_leader_failures() {
    let steps = env_number("ODRADEK_REPLICATION_STEPS").unwrap_or(FAULTS.len() as u64);
    let seed = env_number("ODRADEK_REPLICATION_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64
    });
    eprintln!("replication schedule: {steps} faults, ODRADEK_REPLICATION_SEED={seed}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Each node on a host of its own, so that one can be cut off the network.
    let network = Arc::new(Network::create(3));
    let hosts = (0..3)
        .map(|i| {
            let on = network.clone();
            let launcher: Launcher = Box::new(move || on.command(i, env!("CARGO_BIN_EXE_odradek")));
            (network.addr(i), launcher)
        })
        .collect();
    let cluster = Cluster::start_on(hosts, FAST_FENCING);
    let bootstrap = cluster.bootstrap();
    rt.block_on(create_replicated(
        &bootstrap,
        TOPIC,
        PARTITIONS,
        &[("min.insync.replicas", "2")],
    ));
    let probe = producer(
        &bootstrap,
        &[
            ("acks", "all"),
            ("message.timeout.ms", "5000"),
            ("reconnect.backoff.max.ms", "200"),
        ],
    );
    let mut schedule = Schedule {
        cluster,
        network,
        rng: Rng::new(seed),
        seed,
        rt,
        probe,
        probes: 0,
        failovers: 0,
        events: Vec::new(),
    };
    schedule.wait_until("the topic led with its three replicas in sync", |s| {
        partitions(&s.live(), TOPIC)
            .filter(|v| v.len() == PARTITIONS as usize && v.iter().all(PartitionView::healthy))
    });

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Acked::default();
    let seen = Acked::default();
    let violations = Violations::default();
    let failed = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = [(IDEMPOTENT, true), (PLAIN, false)]
        .into_iter()
        .map(|(name, idempotent)| {
            schedule.rt.spawn(run_producer(
                bootstrap.clone(),
                name,
                idempotent,
                stop.clone(),
                acked.clone(),
                violations.clone(),
                failed.clone(),
            ))
        })
        .collect();
    let watcher = {
        let (bootstrap, stop, seen, violations) = (
            bootstrap.clone(),
            stop.clone(),
            seen.clone(),
            violations.clone(),
        );
        std::thread::spawn(move || run_watcher(bootstrap, stop, seen, violations))
    };

    // Each run of five faults has one of each kind, in a seeded order.
    let mut order = FAULTS;
    for step in 0..steps as usize {
        if step % FAULTS.len() == 0 {
            for i in (1..order.len()).rev() {
                let j = schedule.rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
        }
        let calm = schedule.dwell(300, 1200);
        let fault = order[step % FAULTS.len()];
        schedule.note(format!("step {}: {fault:?} after {calm:?}", step + 1));
        schedule.inject(fault);
        schedule.recover();
    }

    // Every delivery report in, then the final state read whole.
    stop.store(true, Ordering::Relaxed);
    let producers: Vec<FutureProducer> = producers
        .into_iter()
        .map(|p| schedule.rt.block_on(p).expect("producer task"))
        .collect();
    let watcher_errors = watcher.join().expect("watcher");
    let idempotent_fatal = producers[0].client().fatal_error();
    for p in &producers {
        let _ = p.flush(Duration::from_secs(10));
    }
    let acked = acked.lock().expect("acked").clone();
    let seen = seen.lock().expect("seen").clone();
    let mut problems = violations.lock().expect("violations").clone();
    let bootstrap = schedule.live();
    let log: Vec<BTreeMap<i64, String>> = (0..PARTITIONS)
        .map(|p| {
            let high = high_watermark(&bootstrap, TOPIC, p);
            read_partition(&bootstrap, TOPIC, p, high, RECOVERY)
        })
        .collect();
    let stored: usize = log.iter().map(BTreeMap::len).sum();

    // An idempotent producer's retries never duplicate: each of its payloads at most once.
    if let Some((code, reason)) = idempotent_fatal {
        problems.push(format!(
            "the idempotent producer hit a fatal error: {code:?} {reason}"
        ));
    }
    let mut stored_at: HashMap<&str, (i32, i64)> = HashMap::new();
    for (p, records) in log.iter().enumerate() {
        let mut last_seq: Option<u64> = None;
        for (&offset, value) in records {
            let Some(seq) = value
                .strip_prefix(IDEMPOTENT)
                .and_then(|s| s.strip_prefix('-'))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(other) = stored_at.insert(value, (p as i32, offset)) {
                problems.push(format!(
                    "{value} is stored twice: at {other:?} and at ({p}, {offset})"
                ));
            }
            // One partition's records from one idempotent producer keep its order.
            if last_seq.is_some_and(|last| seq <= last) {
                problems.push(format!(
                    "partition {p}: {value} at offset {offset} after sequence {last_seq:?}"
                ));
            }
            last_seq = Some(seq);
        }
    }
    // Every acknowledged record is where its delivery report said.
    let mut acked_by = BTreeMap::<&str, usize>::new();
    for (&(p, offset), value) in &acked {
        let producer = value.split('-').next().unwrap_or_default();
        *acked_by.entry(producer).or_default() += 1;
        let found = log.get(p as usize).and_then(|records| records.get(&offset));
        if found != Some(value) {
            problems.push(format!(
                "acknowledged {value} at {p}/{offset}; the log holds {found:?} there"
            ));
        }
    }
    // Nothing a consumer was ever served vanished or changed afterwards.
    for (&(p, offset), value) in &seen {
        let found = log.get(p as usize).and_then(|records| records.get(&offset));
        if found != Some(value) {
            problems.push(format!(
                "a consumer was served {value} at {p}/{offset}; the log now holds {found:?} there"
            ));
        }
    }
    let summary = format!(
        "{} acknowledged ({acked_by:?}), {} failed sends, {stored} stored, {} read by the \
         consumer (with {watcher_errors} errors), {} probes, {} failovers",
        acked.len(),
        failed.load(Ordering::Relaxed),
        seen.len(),
        schedule.probes,
        schedule.failovers
    );
    eprintln!("replication schedule: {summary}");
    if !problems.is_empty() {
        let shown = problems.len().min(50);
        schedule.fail(&format!(
            "{} violations ({summary}); the first {shown}:\n  {}",
            problems.len(),
            problems[..shown].join("\n  ")
        ));
    }
    let enough = |name| acked_by.get(name).copied().unwrap_or(0) >= 100;
    // A full round of faults holds a KillLeader and an IsolateLeader, which wait for a
    // failover each.
    let failovers_expected = steps >= FAULTS.len() as u64;
    if !(enough(IDEMPOTENT) && enough(PLAIN) && seen.len() >= 100)
        || (failovers_expected && schedule.failovers < 2)
    {
        schedule.fail(&format!("too little traffic to mean anything: {summary}"));
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_leader_truncates_to_the_new_leaders_log() {
    let mut cluster = Cluster::start_with(3, FAST_FENCING);
    let topic = unique_topic("diverged");
    let all = cluster.bootstrap();
    create_replicated(&all, &topic, 1, &[("min.insync.replicas", "2")]).await;
    let start = partition_0_in_sync(&all, &topic);
    let old = start.leader;
    let followers: Vec<i32> = start
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != old)
        .collect();
    let plain = [
        ("compression.type", "none"),
        ("message.timeout.ms", "15000"),
    ];

    // Written everywhere first.
    let strict = producer(&all, &[&plain[..], &[("acks", "all")]].concat());
    let mut committed = Vec::new();
    for i in 0..5 {
        let value = format!("committed-{i}");
        let offset = send(&strict, &topic, 0, &value)
            .await
            .unwrap_or_else(|e| panic!("{value}: {e}\n{}", cluster.logs()));
        committed.push((value, offset));
    }
    assert_eq!(
        committed.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );

    // The followers freeze. They had no fetch in flight that could still carry what is
    // written next: a follower's fetch waits at most a fraction of a second for data, so
    // after 2 s any such wait has been answered (empty) into the frozen socket. The first
    // record after that is a decoy, not checked, in case a fetch was queued all the same.
    for f in &followers {
        cluster.pause(*f);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let old_addr = cluster.node(old).addr.to_string();
    let lone = producer(&old_addr, &[&plain[..], &[("acks", "1")]].concat());
    send(&lone, &topic, 0, "decoy")
        .await
        .unwrap_or_else(|e| panic!("decoy to the isolated leader {old}: {e}"));
    let mut orphans = Vec::new();
    for i in 0..5 {
        let value = format!("orphan-{i}");
        send(&lone, &topic, 0, &value).await.unwrap_or_else(|e| {
            panic!(
                "acks=1 write of {value} to the leader {old} while its followers are frozen: {e}"
            )
        });
        orphans.push(value);
    }
    drop(lone);
    cluster.kill9(old);
    let on_old = log_bytes(&cluster.node(old).data_dir, &topic, 0);
    for value in &orphans {
        assert!(
            contains(&on_old, value),
            "{value} was acknowledged (acks=1) but is not in node {old}'s log files: the \
             scenario did not diverge"
        );
    }

    // The followers come back; one of them takes over and takes acks=all writes.
    for f in &followers {
        cluster.resume(*f);
    }
    let survivors = cluster.bootstrap();
    let new = eventually(RECOVERY, "a follower leads partition 0", || {
        partitions(&survivors, &topic)
            .map(|v| v[0].leader)
            .filter(|l| followers.contains(l))
    });
    let strict = producer(&survivors, &[&plain[..], &[("acks", "all")]].concat());
    let mut written = Vec::new();
    for i in 0..5 {
        let value = format!("new-{i}");
        let offset = send(&strict, &topic, 0, &value)
            .await
            .unwrap_or_else(|e| panic!("{value} to the new leader {new}: {e}\n{}", cluster.logs()));
        written.push((value, offset));
    }

    // The old leader returns as a follower: it must drop its orphans and take the new
    // leader's records at the same offsets before it counts as in sync.
    cluster.restart(old);
    let all = cluster.bootstrap();
    eventually(RECOVERY, "the old leader back in the ISR", || {
        partitions(&all, &topic).filter(|v| v[0].healthy())
    });
    let dirs: Vec<(i32, std::path::PathBuf)> = cluster
        .nodes
        .iter()
        .map(|n| (n.id, n.data_dir.clone()))
        .collect();
    let logs = eventually(
        RECOVERY,
        "the three replicas' log files byte-identical",
        || {
            let logs: Vec<(i32, Vec<u8>)> = dirs
                .iter()
                .map(|(id, dir)| (*id, log_bytes(dir, &topic, 0)))
                .collect();
            logs.windows(2).all(|w| w[0].1 == w[1].1).then_some(logs)
        },
    );
    for (id, bytes) in &logs {
        for (value, _) in committed.iter().chain(&written) {
            assert!(contains(bytes, value), "node {id}'s log lacks {value}");
        }
        for value in &orphans {
            assert!(
                !contains(bytes, value),
                "node {id}'s log still holds {value}, written only to the old leader"
            );
        }
    }

    // What consumers are served: everything acknowledged by the ISR at its offset, none of
    // the orphans.
    let high = high_watermark(&all, &topic, 0);
    let read = read_partition(&all, &topic, 0, high, RECOVERY);
    for (value, offset) in committed.iter().chain(&written) {
        assert_eq!(
            read.get(offset),
            Some(value),
            "offset {offset}: {read:?}\n{}",
            cluster.logs()
        );
    }
    let served: BTreeSet<&str> = read.values().map(String::as_str).collect();
    for value in &orphans {
        assert!(!served.contains(value.as_str()), "{value} served: {read:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_needs_min_insync_replicas() {
    use Role::{Broker, Controller};
    // A dedicated controller: two brokers can die and the quorum still fences them.
    let mut cluster =
        Cluster::start_roles_with(&[Controller, Broker, Broker, Broker], FAST_FENCING);
    let topic = unique_topic("min-isr");
    let all = cluster.bootstrap();
    create_replicated(&all, &topic, 1, &[("min.insync.replicas", "2")]).await;
    let start = partition_0_in_sync(&all, &topic);
    assert_eq!(
        start.replicas,
        BTreeSet::from([2, 3, 4]),
        "replicas on the brokers"
    );
    let leader = start.leader;
    let followers: Vec<i32> = start
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != leader)
        .collect();
    let leader_addr = cluster.node(leader).addr.to_string();
    let strict = producer(
        &leader_addr,
        &[
            ("acks", "all"),
            ("retries", "0"),
            ("message.timeout.ms", "15000"),
        ],
    );
    let loose = producer(
        &leader_addr,
        &[("acks", "1"), ("message.timeout.ms", "15000")],
    );
    assert_eq!(send(&strict, &topic, 0, "before").await.ok(), Some(0));

    // Both followers die; the controller fences them and the ISR shrinks to the leader.
    for f in &followers {
        cluster.kill9(*f);
    }
    eventually(RECOVERY, "the ISR shrunk to the leader alone", || {
        partitions(&leader_addr, &topic)
            .filter(|v| v[0].leader == leader && v[0].isr == BTreeSet::from([leader]))
    });
    // One in-sync replica is fewer than min.insync.replicas=2: acks=all is refused...
    let refused = send(&strict, &topic, 0, "refused").await;
    assert!(
        matches!(
            refused,
            Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::NotEnoughReplicas
            ))
        ),
        "acks=all with one in-sync replica of min.insync.replicas=2: {refused:?}"
    );
    // ...acks=1 is not.
    let alone = send(&loose, &topic, 0, "acks-1").await;
    assert_eq!(alone.as_ref().ok(), Some(&1), "acks=1: {alone:?}");

    // One follower returns; once it has caught up and is in the ISR, acks=all works again.
    let back = followers[0];
    cluster.restart(back);
    eventually(RECOVERY, "the restarted follower back in the ISR", || {
        partitions(&leader_addr, &topic)
            .filter(|v| v[0].leader == leader && v[0].isr == BTreeSet::from([leader, back]))
    });
    let after = send(&strict, &topic, 0, "after").await;
    assert_eq!(
        after.as_ref().ok(),
        Some(&2),
        "acks=all with two in sync: {after:?}"
    );

    // The refused record was never appended: consumers see exactly the three others.
    let read = read_partition(&cluster.bootstrap(), &topic, 0, 3, RECOVERY);
    let expected: BTreeMap<i64, String> = [(0, "before"), (1, "acks-1"), (2, "after")]
        .into_iter()
        .map(|(o, v)| (o, v.to_string()))
        .collect();
    assert_eq!(read, expected);
    assert_eq!(high_watermark(&cluster.bootstrap(), &topic, 0), 3);
}

/// A disk that fails or stalls fsync, on every node of a three-node cluster: the shim
/// (`support/fail_fsync.c`) preloaded into each, acting on paths that contain a pattern
/// while that node's trigger file exists.
struct BadDisk {
    dir: tempfile::TempDir,
}

impl BadDisk {
    /// Fsyncs of paths containing `matching` fail with EIO, or with `stall` wait until the
    /// node is disarmed.
    fn cluster(matching: &str, stall: bool) -> (Cluster, BadDisk) {
        let dir = tempfile::tempdir().expect("temp dir");
        let shim = build_fsync_shim(dir.path());
        let trigger = format!("{}/armed-{{id}}", dir.path().display());
        let mut env = vec![
            ("LD_PRELOAD", shim.to_str().expect("utf-8 path")),
            ("ODRADEK_FAIL_FSYNC_MATCH", matching),
            ("ODRADEK_FAIL_FSYNC_TRIGGER", trigger.as_str()),
        ];
        if stall {
            env.push(("ODRADEK_FAIL_FSYNC_HANG", "1"));
        }
        let cluster = Cluster::start_with_env(3, &[], &env);
        (cluster, BadDisk { dir })
    }

    fn trigger(&self, id: i32) -> std::path::PathBuf {
        self.dir.path().join(format!("armed-{id}"))
    }

    fn arm(&self, ids: &[i32]) {
        for id in ids {
            std::fs::write(self.trigger(*id), b"").expect("arming the shim");
        }
    }

    fn disarm(&self, ids: &[i32]) {
        for id in ids {
            std::fs::remove_file(self.trigger(*id)).expect("disarming the shim");
        }
    }
}

/// `write.caching=true` (Kafka's page-cache semantics) answers acks=all once every in-sync
/// replica has the batch, synced or not; switched off, acks=all waits for the fsyncs again.
/// Every node's fsyncs of the topic's files stall (a preloaded shim) while a trigger exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_caching_answers_acks_all_before_any_replica_syncs() {
    let topic = unique_topic("cached");
    let (cluster, disk) = BadDisk::cluster(&format!("/{topic}-0/"), true);
    let all = cluster.bootstrap();
    create_replicated(
        &all,
        &topic,
        1,
        &[("min.insync.replicas", "2"), ("write.caching", "true")],
    )
    .await;
    let healthy = partition_0_in_sync(&all, &topic);
    let strict = producer(&all, &[("acks", "all"), ("message.timeout.ms", "20000")]);

    // No replica can sync the partition, yet every acks=all write is answered, with all
    // three replicas still in sync.
    disk.arm(&[1, 2, 3]);
    let mut acked = BTreeMap::new();
    for i in 0..20 {
        let value = format!("cached-{i}");
        let sent = send(&strict, &topic, 0, &value).await;
        let offset = sent.unwrap_or_else(|e| panic!("{value}: {e}\n{}", cluster.logs()));
        acked.insert((0, offset), value);
    }
    assert_eq!(
        partitions(&all, &topic).map(|v| v[0].isr.clone()),
        Some(healthy.isr.clone()),
        "the ISR after acks=all writes with stalled fsyncs"
    );

    // Switched off, acks=all waits for the fsyncs: not answered while they stall...
    let (code, message) = alter(
        &cluster.node(1).addr.to_string(),
        TOPIC_RESOURCE,
        &topic,
        &[("write.caching", SET, Some("false"))],
        false,
    );
    assert_eq!(code, 0, "{message:?}");
    for node in &cluster.nodes {
        eventually(RECOVERY, "every broker has write.caching=false", || {
            let addr = node.addr.to_string();
            let (value, _) = config_source(&addr, TOPIC_RESOURCE, &topic, "write.caching");
            (value.as_deref() == Some("false")).then_some(())
        });
    }
    let mut synced = Box::pin(send(&strict, &topic, 0, "synced"));
    let early = tokio::time::timeout(Duration::from_secs(3), &mut synced).await;
    assert!(
        early.is_err(),
        "acks=all answered while no replica could sync: {early:?}"
    );
    // ...and answered once they can.
    disk.disarm(&[1, 2, 3]);
    let offset = synced
        .await
        .unwrap_or_else(|e| panic!("the synced write failed once fsync worked: {e}"));
    acked.insert((0, offset), "synced".to_string());
    assert_all_readable(&all, &topic, &acked);
}

/// A `write.caching` topic still flushes when its flush policy says so (`flush.messages`),
/// on the leader and on the followers, and without one never syncs. Each node's fsyncs of
/// the topics' files fail (the shim) while that node's trigger exists, so a flush shows as
/// the log taken offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_caching_topics_flush_by_their_flush_policy_only() {
    let prefix = unique_topic("flushing");
    let (cluster, disk) = BadDisk::cluster(&format!("/{prefix}-"), false);
    let all = cluster.bootstrap();
    let [never, leader_flushes, followers_flush] =
        ["never", "leader", "followers"].map(|t| format!("{prefix}-{t}"));
    for topic in [&never, &leader_flushes, &followers_flush] {
        create_led_by_node_1(&all, topic).await;
        let mut configs = vec![("write.caching", SET, Some("true"))];
        if *topic != never {
            configs.push(("flush.messages", SET, Some("1")));
        }
        let (code, message) = alter(
            &cluster.node(1).addr.to_string(),
            TOPIC_RESOURCE,
            topic,
            &configs,
            false,
        );
        assert_eq!(code, 0, "{message:?}");
    }
    for node in &cluster.nodes {
        eventually(RECOVERY, "every broker has the configs", || {
            let addr = node.addr.to_string();
            [&never, &leader_flushes, &followers_flush]
                .iter()
                .all(|t| {
                    config_source(&addr, TOPIC_RESOURCE, t, "write.caching")
                        .0
                        .as_deref()
                        == Some("true")
                })
                .then_some(())
        });
    }
    let strict = producer(
        &all,
        &[
            ("acks", "all"),
            ("retries", "0"),
            ("message.timeout.ms", "20000"),
        ],
    );
    let flushed = |id: i32, topic: &str| {
        cluster.log(id).lines().any(|l| {
            l.contains("fsync failed; taking the log offline") && l.contains(&format!("/{topic}-0"))
        })
    };

    // Every fsync fails, yet without a flush policy nothing is synced: all is answered.
    disk.arm(&[1, 2, 3]);
    for i in 0..20 {
        let sent = send(&strict, &never, 0, &format!("never-{i}")).await;
        assert!(sent.is_ok(), "{sent:?}\n{}", cluster.logs());
    }
    assert!(
        (1..=3).all(|id| !flushed(id, &never)),
        "a write.caching topic without a flush policy was synced:\n{}",
        cluster.logs()
    );

    // flush.messages=1: the leader flushes each acks=all write. Its answer does not matter
    // here, so it is not awaited; each write has a producer (a connection) of its own, since
    // a broker reads a connection's next request only once it has answered the one before.
    let enqueue = |topic: &str| {
        let writer = producer(&all, &[("acks", "all"), ("message.timeout.ms", "5000")]);
        let record = FutureRecord::<(), _>::to(topic)
            .partition(0)
            .payload("flushed");
        drop(writer.send_result(record).expect("enqueued"));
        writer
    };
    let _leader_write = enqueue(&leader_flushes);
    eventually(RECOVERY, "the leader flushed", || {
        flushed(1, &leader_flushes).then_some(())
    });

    // And so do the followers, once they have it (the leader's own fsyncs work now).
    disk.disarm(&[1]);
    let _followers_write = enqueue(&followers_flush);
    for id in [2, 3] {
        eventually(RECOVERY, &format!("follower {id} flushed"), || {
            flushed(id, &followers_flush).then_some(())
        });
    }
    assert!(!flushed(1, &followers_flush));
}

/// Fails node `failing`'s disk under partition 0 of a new topic on nodes 1-3 that node 1
/// leads, right before an acks=all write, which must then be answered (the producer
/// retries within 10 s: far less than `replica.lag.time.max.ms`); checks that every
/// acknowledged write, before and after, is readable. Returns the partition as it was just
/// after that write.
async fn a_disk_fails(failing: i32, topic: &str) -> (PartitionView, Cluster, BadDisk) {
    let (cluster, disk) = BadDisk::cluster(&format!("/{topic}-0/"), false);
    let all = cluster.bootstrap();
    create_led_by_node_1(&all, topic).await;
    let mut acked = write_acked(&all, topic, 1, 10).await;
    disk.arm(&[failing]);
    let strict = producer(&all, &[("acks", "all"), ("message.timeout.ms", "10000")]);
    let offset = send(&strict, topic, 0, "during")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    acked.insert((0, offset), "during".to_string());
    let after = partitions(&all, topic).expect("metadata")[0].clone();
    acked.extend(write_acked(&all, topic, 1, 10).await);
    assert_all_readable(&all, topic, &acked);
    (after, cluster, disk)
}

/// A leader whose log goes offline (its fsync fails: a failing disk) hands the partition
/// to an in-sync replica and leaves the ISR: the producer's retry lands there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_log_fails_hands_the_partition_to_an_in_sync_replica() {
    let (after, cluster, _disk) = a_disk_fails(1, &unique_topic("failing-leader")).await;
    assert!(
        [2, 3].contains(&after.leader) && after.isr == BTreeSet::from([2, 3]),
        "{after:?}"
    );
    let log = cluster.log(1);
    assert!(
        log.contains("the log is offline: handing leadership to an in-sync replica"),
        "{log}"
    );
}

/// A follower whose log goes offline leaves the ISR at once, rather than holding back
/// every acks=all write until `replica.lag.time.max.ms` (30 s) drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_log_fails_leaves_the_isr_at_once() {
    let (after, cluster, _disk) = a_disk_fails(2, &unique_topic("failing-follower")).await;
    assert_eq!(
        (after.leader, after.isr.clone()),
        (1, BTreeSet::from([1, 3]))
    );
    let log = cluster.log(2);
    assert!(
        log.contains("the log is offline: leaving the in-sync replicas"),
        "{log}"
    );
}

/// Partition 0 of `topic` as DescribeTopicPartitions (KIP-966) reports it through `addr`:
/// leader, ISR and eligible leader replicas, when that broker answers.
fn eligibility(addr: &str, topic: &str) -> Option<(i32, BTreeSet<i32>, BTreeSet<i32>)> {
    use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
    use kafka_protocol::messages::{DescribeTopicPartitionsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let request = DescribeTopicPartitionsRequest::default()
        .with_topics(vec![
            TopicRequest::default().with_name(TopicName(StrBytes::from_string(topic.into()))),
        ])
        .with_response_partition_limit(10);
    let response = std::panic::catch_unwind(|| raw_round_trip(addr, &request, 0)).ok()?;
    let p = response.topics.first()?.partitions.first()?.clone();
    let ids = |v: &[kafka_protocol::messages::BrokerId]| v.iter().map(|b| b.0).collect();
    Some((
        p.leader_id.0,
        ids(&p.isr_nodes),
        ids(p.eligible_leader_replicas.as_deref().unwrap_or_default()),
    ))
}

/// KIP-966: with min.insync.replicas=2, a replica that leaves an ISR already down to one
/// member stays eligible to lead, and the high watermark waits while the ISR is that
/// small. So when the last in-sync replica dies too, the partition comes back cleanly on
/// whichever eligible replica returns first, with every acknowledged write; a replica that
/// left while the ISR was big enough lacks writes and must not lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eligible_leader_replica_leads_cleanly_once_the_isr_is_gone() {
    use Role::{Broker, Controller};
    let mut cluster =
        Cluster::start_roles_with(&[Controller, Broker, Broker, Broker], FAST_FENCING);
    let topic = unique_topic("elr");
    let all = cluster.bootstrap();
    create_replicated(&all, &topic, 1, &[("min.insync.replicas", "2")]).await;
    let start = partition_0_in_sync(&all, &topic);
    let leader = start.leader;
    let others: Vec<i32> = start
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != leader)
        .collect();
    let (behind, last) = (others[0], others[1]);
    let acks_all = producer(
        &all,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "30000"),
        ],
    );
    let mut acked = BTreeMap::new();
    for value in (0..5).map(|i| format!("w{i}")) {
        acked.insert(
            send(&acks_all, &topic, 0, &value).await.expect("acks=all"),
            value,
        );
    }

    // `behind` dies while two remain in sync: it is not eligible, and misses what follows.
    cluster.kill9(behind);
    let leader_addr = cluster.node(leader).addr.to_string();
    eventually(RECOVERY, "the ISR down to two, nobody eligible", || {
        eligibility(&leader_addr, &topic).filter(|(l, isr, elr)| {
            *l == leader && *isr == BTreeSet::from([leader, last]) && elr.is_empty()
        })
    });
    for value in (5..10).map(|i| format!("w{i}")) {
        acked.insert(
            send(&acks_all, &topic, 0, &value).await.expect("acks=all"),
            value,
        );
    }
    // The leader shuts down cleanly: `last` leads alone, and the leader stays eligible.
    cluster.stop(leader);
    let last_addr = cluster.node(last).addr.to_string();
    eventually(
        RECOVERY,
        "the last in-sync replica leading, the old leader eligible",
        || {
            eligibility(&last_addr, &topic).filter(|(l, isr, elr)| {
                *l == last && *isr == BTreeSet::from([last]) && *elr == BTreeSet::from([leader])
            })
        },
    );
    // Then the last in-sync replica dies too.
    cluster.kill9(last);
    // The replica that missed writes comes back: it must not lead.
    cluster.restart(behind);
    let behind_addr = cluster.node(behind).addr.to_string();
    let offline = eventually(
        RECOVERY,
        "no leader, both stopped replicas eligible",
        || {
            eligibility(&behind_addr, &topic)
                .filter(|(l, isr, elr)| *l == -1 && isr.is_empty() && !elr.is_empty())
        },
    );
    assert_eq!(offline.2, BTreeSet::from([leader, last]), "{offline:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        eligibility(&behind_addr, &topic).map(|(l, ..)| l),
        Some(-1),
        "a replica without every acknowledged write took over"
    );
    // The cleanly stopped old leader returns and leads: nothing acknowledged is lost.
    cluster.restart(leader);
    eventually(RECOVERY, "the eligible replica leading", || {
        eligibility(&behind_addr, &topic).filter(|(l, ..)| *l == leader)
    });
    let high = high_watermark(&cluster.bootstrap(), &topic, 0);
    assert_eq!(
        high, 10,
        "the high watermark covers every acknowledged write"
    );
    let read = read_partition(&cluster.bootstrap(), &topic, 0, high, RECOVERY);
    assert_eq!(read, acked);
    // `behind` catches up: the ISR is back at two and nobody else need be eligible.
    eventually(RECOVERY, "the ISR back at min.insync.replicas", || {
        eligibility(&behind_addr, &topic).filter(|(l, isr, elr)| {
            *l == leader && *isr == BTreeSet::from([leader, behind]) && elr.is_empty()
        })
    });
    assert_eq!(
        send(&acks_all, &topic, 0, "after").await.ok(),
        Some(10),
        "acks=all works again"
    );
}

// ---------------------------------------------------------------------------------------

/// Kafka's `Utils.abs(group.hashCode()) % partitions`: where a group's coordinator lives.
fn offsets_partition(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (hash & 0x7fff_ffff) % partitions
}

/// What `group` has committed for `topic` partition 0, asked of its coordinator by a new
/// member (None while no coordinator answers).
fn committed(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let consumer = consumer(bootstrap, &[("group.id", group)]);
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    let found = consumer
        .committed_offsets(wanted, Duration::from_secs(5))
        .ok()?;
    match found.find_partition(topic, 0)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

fn commit(bootstrap: &str, group: &str, topic: &str, offset: i64) -> bool {
    let consumer = consumer(bootstrap, &[("group.id", group)]);
    let mut offsets = TopicPartitionList::new();
    if offsets
        .add_partition_offset(topic, 0, Offset::Offset(offset))
        .is_err()
    {
        return false;
    }
    consumer
        .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_the_loss_of_their_coordinator() {
    let mut cluster = Cluster::start_with(3, FAST_FENCING);
    let bootstrap = cluster.bootstrap();
    let topic = unique_topic("coordinated");
    create_replicated(&bootstrap, &topic, 1, &[("min.insync.replicas", "2")]).await;
    let group = unique_topic("group");
    eventually(RECOVERY, "a first commit", || {
        commit(&bootstrap, &group, &topic, 5).then_some(())
    });
    // The offsets topic was created on first use with three replicas.
    let offsets = eventually(RECOVERY, "__consumer_offsets fully in sync", || {
        partitions(&bootstrap, "__consumer_offsets")
            .filter(|v| !v.is_empty() && v.iter().all(PartitionView::healthy))
    });
    let at = offsets_partition(&group, offsets.len() as i32) as usize;
    for (round, offset) in [(1, 8), (2, 13)] {
        let coordinator =
            partitions(&bootstrap, "__consumer_offsets").expect("metadata")[at].leader;
        cluster.kill9(coordinator);
        let live = cluster.bootstrap();
        let next = eventually(RECOVERY, "another broker coordinates the group", || {
            partitions(&live, "__consumer_offsets")
                .map(|v| v[at].leader)
                .filter(|l| *l > 0 && *l != coordinator)
        });
        // The new coordinator loaded the group: the acknowledged commit is there.
        let expected = if round == 1 { 5 } else { 8 };
        let found = eventually(RECOVERY, "the commit, from the new coordinator", || {
            committed(&live, &group, &topic)
        });
        assert_eq!(
            found,
            expected,
            "round {round}: coordinator {coordinator} killed, {next} took over\n{}",
            cluster.logs()
        );
        eventually(RECOVERY, "a commit to the new coordinator", || {
            commit(&live, &group, &topic, offset).then_some(())
        });
        cluster.restart(coordinator);
        eventually(RECOVERY, "__consumer_offsets back in sync", || {
            partitions(&cluster.bootstrap(), "__consumer_offsets").filter(|v| v[at].healthy())
        });
    }
    assert_eq!(committed(&cluster.bootstrap(), &group, &topic), Some(13));
}

#[test]
fn a_rolling_restart_loses_no_acknowledged_write_and_fails_no_send() {
    let mut cluster = Cluster::start_with(3, FAST_FENCING);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bootstrap = cluster.bootstrap();
    rt.block_on(create_replicated(
        &bootstrap,
        TOPIC,
        PARTITIONS,
        &[("min.insync.replicas", "2")],
    ));
    let in_sync = |bootstrap: &str| {
        partitions(bootstrap, TOPIC)
            .filter(|v| v.len() == PARTITIONS as usize && v.iter().all(PartitionView::healthy))
    };
    eventually(RECOVERY, "the topic in sync", || in_sync(&bootstrap));
    let stop = Arc::new(AtomicBool::new(false));
    let (acked, violations) = (Acked::default(), Violations::default());
    let failed = Arc::new(AtomicU64::new(0));
    let producer = rt.spawn(run_producer(
        bootstrap.clone(),
        IDEMPOTENT,
        true,
        stop.clone(),
        acked.clone(),
        violations.clone(),
        failed.clone(),
    ));
    // Each broker in turn: a controlled shutdown (SIGTERM) hands its leadership over, and
    // it comes back and catches up before the next one goes.
    for node in 1..=3 {
        let before = acked.lock().expect("acked").len();
        eventually(RECOVERY, "writes acknowledged", || {
            (acked.lock().expect("acked").len() > before + 50).then_some(())
        });
        cluster.stop(node);
        cluster.restart(node);
        eventually(RECOVERY, "every replica back in sync", || {
            in_sync(&cluster.bootstrap())
        });
    }
    stop.store(true, Ordering::Relaxed);
    let producer = rt.block_on(producer).expect("producer task");
    let bootstrap = cluster.bootstrap();
    let acked = acked.lock().expect("acked").clone();
    let mut problems = violations.lock().expect("violations").clone();
    if let Some((code, reason)) = producer.client().fatal_error() {
        problems.push(format!("fatal producer error: {code:?} {reason}"));
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        problems.push(format!("{failed} sends failed during a rolling restart"));
    }
    let mut stored = BTreeSet::new();
    for p in 0..PARTITIONS {
        let high = high_watermark(&bootstrap, TOPIC, p);
        for (offset, value) in read_partition(&bootstrap, TOPIC, p, high, RECOVERY) {
            if !stored.insert(value.clone()) {
                problems.push(format!("{value} stored twice (again at {p}/{offset})"));
            }
            if let Some(acked) = acked.get(&(p, offset))
                && *acked != value
            {
                problems.push(format!("{p}/{offset} holds {value}, acknowledged {acked}"));
            }
        }
    }
    for ((p, offset), value) in &acked {
        if !stored.contains(value) {
            problems.push(format!("acknowledged {value} at {p}/{offset} is gone"));
        }
    }
    assert!(
        problems.is_empty() && acked.len() > 150,
        "{} acknowledged; problems: {problems:#?}\n{}",
        acked.len(),
        cluster.logs()
    );
}

/// Every record of `topic` (all `partitions`) a read_committed consumer reads from the
/// beginning until it has been idle for two seconds.
fn read_committed(bootstrap: &str, topic: &str, partitions: i32) -> Vec<String> {
    let consumer = consumer(
        bootstrap,
        &[
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
        ],
    );
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut read = Vec::new();
    let mut idle_since = Instant::now();
    let deadline = Instant::now() + RECOVERY;
    while idle_since.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            read.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            idle_since = Instant::now();
        }
    }
    read
}

/// One transaction over every partition: `txn-{n}-{p}`; committed, or aborted when
/// `abort`. A transaction the cluster could not complete is aborted and reported.
async fn transaction(producer: &FutureProducer, topic: &str, n: u32, abort: bool) -> bool {
    use rdkafka::util::Timeout;
    let timeout = Timeout::After(Duration::from_secs(30));
    if producer.begin_transaction().is_err() {
        return false;
    }
    let sends: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            let value = format!("txn-{n}-{p}");
            enqueue(
                producer,
                FutureRecord::<(), _>::to(topic)
                    .partition(p)
                    .payload(&value),
            )
        })
        .collect();
    let mut sent = true;
    for f in sends {
        sent &= delivered(f).await.is_ok();
    }
    if sent && !abort && producer.commit_transaction(timeout).is_ok() {
        return true;
    }
    producer
        .abort_transaction(timeout)
        .unwrap_or_else(|e| panic!("transaction {n} could not be aborted: {e}"));
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_span_brokers_and_survive_the_loss_of_their_coordinator() {
    use rdkafka::util::Timeout;
    let mut cluster = Cluster::start_with(3, FAST_FENCING);
    let bootstrap = cluster.bootstrap();
    let topic = unique_topic("txns");
    create_replicated(
        &bootstrap,
        &topic,
        PARTITIONS,
        &[("min.insync.replicas", "2")],
    )
    .await;
    let leaders: BTreeSet<i32> = eventually(RECOVERY, "the topic in sync", || {
        partitions(&bootstrap, &topic).filter(|v| v.iter().all(PartitionView::healthy))
    })
    .iter()
    .map(|p| p.leader)
    .collect();
    assert!(
        leaders.len() > 1,
        "partitions led by {leaders:?}: one broker"
    );
    let producer = producer(
        &bootstrap,
        &[
            ("transactional.id", "spanning"),
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "30000"),
        ],
    );
    producer
        .init_transactions(Timeout::After(Duration::from_secs(30)))
        .expect("init_transactions");
    let mut committed = BTreeSet::new();
    for n in 0..6 {
        if transaction(&producer, &topic, n, n % 3 == 2).await {
            committed.insert(n);
        }
    }
    assert_eq!(
        committed,
        BTreeSet::from([0, 1, 3, 4]),
        "transactions over partitions led by {leaders:?}\n{}",
        cluster.logs()
    );
    // The coordinator of `spanning` dies; its successor completes what follows.
    let states = eventually(RECOVERY, "__transaction_state in sync", || {
        partitions(&bootstrap, "__transaction_state")
            .filter(|v| !v.is_empty() && v.iter().all(PartitionView::healthy))
    });
    let at = offsets_partition("spanning", states.len() as i32) as usize;
    let coordinator = states[at].leader;
    cluster.kill9(coordinator);
    let live = cluster.bootstrap();
    eventually(RECOVERY, "another coordinator", || {
        partitions(&live, "__transaction_state")
            .map(|v| v[at].leader)
            .filter(|l| *l > 0 && *l != coordinator)
    });
    for n in 6..10 {
        let abort = n == 8;
        let deadline = Instant::now() + RECOVERY;
        // One that fails while the coordinator moves is aborted and tried again.
        while !transaction(&producer, &topic, n, abort).await && !abort {
            assert!(
                Instant::now() < deadline,
                "transaction {n} never committed after the failover\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !abort {
            committed.insert(n);
        }
    }
    cluster.restart(coordinator);
    let read = read_committed(&cluster.bootstrap(), &topic, PARTITIONS);
    let expected: BTreeSet<String> = committed
        .iter()
        .flat_map(|n| (0..PARTITIONS).map(move |p| format!("txn-{n}-{p}")))
        .collect();
    let read_set: BTreeSet<String> = read.iter().cloned().collect();
    assert_eq!(read.len(), read_set.len(), "read twice: {read:?}");
    assert_eq!(
        read_set,
        expected,
        "committed {committed:?}; coordinator {coordinator} killed\n{}",
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_read_from_an_in_sync_replica_in_their_rack() {
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::protocol::StrBytes;
    let mut args = FAST_FENCING.to_vec();
    args.extend([
        "--set",
        "broker.rack=rack-{id}",
        "--set",
        "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector",
    ]);
    let cluster = Cluster::start_with(3, &args);
    let bootstrap = cluster.bootstrap();
    let topic = unique_topic("racked");
    create_replicated(&bootstrap, &topic, 1, &[("min.insync.replicas", "2")]).await;
    let view = eventually(RECOVERY, "the partition in sync", || {
        partitions(&bootstrap, &topic)
            .and_then(|v| v.into_iter().next().filter(PartitionView::healthy))
    });
    let strict = producer(&bootstrap, &[("acks", "all")]);
    for i in 0..10 {
        send(&strict, &topic, 0, &format!("r-{i}"))
            .await
            .expect("acks=all");
    }
    let follower = *view
        .replicas
        .iter()
        .find(|r| **r != view.leader)
        .expect("a follower");
    let rack = format!("rack-{follower}");
    let fetch = |to: i32, rack: &str| {
        let request: FetchRequest =
            fetch_request(&topic, 0, 0, -1).with_rack_id(StrBytes::from_string(rack.to_string()));
        raw_round_trip(&cluster.node(to).addr.to_string(), &request, 12)
            .responses
            .remove(0)
            .partitions
            .remove(0)
    };
    // The leader sends a consumer of the follower's rack there, with no records...
    let answer = fetch(view.leader, &rack);
    assert_eq!(answer.error_code, 0, "{answer:?}");
    assert_eq!(answer.preferred_read_replica.0, follower);
    assert!(answer.records.unwrap_or_default().is_empty());
    // ...serves one of its own rack (or none) itself...
    let own = fetch(view.leader, &format!("rack-{}", view.leader));
    assert_eq!(own.preferred_read_replica.0, -1);
    assert!(!own.records.unwrap_or_default().is_empty());
    // ...and the follower serves the consumer up to its high watermark.
    let served = eventually(RECOVERY, "the follower's high watermark", || {
        let p = fetch(follower, &rack);
        (p.error_code == 0 && p.high_watermark == 10).then_some(p)
    });
    assert!(!served.records.unwrap_or_default().is_empty());
    // librdkafka with client.rack reads everything, from wherever it is sent.
    let read = read_partition(&bootstrap, &topic, 0, 10, RECOVERY);
    assert_eq!(read.len(), 10, "{read:?}");
    let racked = consumer(
        &bootstrap,
        &[
            ("client.rack", rack.as_str()),
            ("auto.offset.reset", "earliest"),
        ],
    );
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&topic, 0, Offset::Beginning)
        .expect("assignment");
    racked.assign(&assignment).expect("assign");
    let mut values = BTreeSet::new();
    let deadline = Instant::now() + RECOVERY;
    while values.len() < 10 && Instant::now() < deadline {
        if let Some(Ok(m)) = racked.poll(Duration::from_millis(100)) {
            values.insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    assert_eq!(values.len(), 10, "{values:?}\n{}", cluster.logs());
}

/// ListPartitionReassignments through `addr`: the partitions being moved.
fn ongoing_reassignments(addr: &str) -> Vec<i32> {
    use kafka_protocol::messages::ListPartitionReassignmentsRequest;
    let response = raw_round_trip(addr, &ListPartitionReassignmentsRequest::default(), 0);
    assert_eq!(response.error_code, 0, "{response:?}");
    response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassigned_partition_moves_under_load_with_identical_bytes() {
    let cluster = Cluster::start_with(3, FAST_FENCING);
    let bootstrap = cluster.bootstrap();
    let topic = unique_topic("moved");
    // Two replicas on brokers 1 and 2, to be moved to 2 and 3.
    create_placed(&bootstrap, &topic, &[&[1, 2]]).await;
    eventually(RECOVERY, "both replicas in sync", || {
        partitions(&bootstrap, &topic)
            .and_then(|v| v.into_iter().next())
            .filter(|p| p.isr.len() == 2)
    });
    let strict = producer(&bootstrap, &[("acks", "all"), ("compression.type", "none")]);
    let mut acked = BTreeMap::new();
    for i in 0..200 {
        let value = format!("before-{i}");
        acked.insert(
            send(&strict, &topic, 0, &value).await.expect("acks=all"),
            value,
        );
    }
    reassign(&cluster.node(1).addr.to_string(), &topic, &[2, 3]);
    // Writes go on while it moves; every one acknowledged stays.
    for i in 0..200 {
        let value = format!("during-{i}");
        acked.insert(
            send(&strict, &topic, 0, &value).await.expect("acks=all"),
            value,
        );
    }
    let done = eventually(RECOVERY, "the move completed", || {
        let view = partitions(&bootstrap, &topic)?.into_iter().next()?;
        (ongoing_reassignments(&cluster.node(2).addr.to_string()).is_empty()
            && view.replicas == BTreeSet::from([2, 3])
            && view.isr == BTreeSet::from([2, 3]))
        .then_some(view)
    });
    assert!([2, 3].contains(&done.leader), "{done:?}");
    let high = high_watermark(&bootstrap, &topic, 0);
    let read = read_partition(&bootstrap, &topic, 0, high, RECOVERY);
    for (offset, value) in &acked {
        assert_eq!(read.get(offset), Some(value), "offset {offset}");
    }
    // The new replica holds the same bytes as the one that stayed, and the old one is gone.
    let bytes = eventually(RECOVERY, "replicas 2 and 3 byte for byte", || {
        let (a, b) = (
            log_bytes(&cluster.node(2).data_dir, &topic, 0),
            log_bytes(&cluster.node(3).data_dir, &topic, 0),
        );
        (!a.is_empty() && a == b).then_some(a.len())
    });
    assert!(bytes > 0);
    eventually(RECOVERY, "broker 1's replica removed", || {
        (!cluster.node(1).data_dir.join(format!("{topic}-0")).exists()).then_some(())
    });
}

/// AlterPartitionReassignments through `addr`: `topic`'s partition 0 is to move to
/// `replicas`.
fn reassign(addr: &str, topic: &str, replicas: &[i32]) {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![
            ReassignableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(Some(replicas.iter().map(|&r| r.into()).collect())),
                ]),
        ]);
    let answer = raw_round_trip(addr, &request, 0);
    assert_eq!(
        answer.responses[0].partitions[0].error_code, 0,
        "{answer:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Replication throttles (KIP-73).

const LEADER_RATE: &str = "leader.replication.throttled.rate";
const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";
/// IncrementalAlterConfigs' resource types and operations.
const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;
const SET: i8 = 0;
const DELETE: i8 = 1;
/// DescribeConfigs' source of a dynamic config of one broker.
const DYNAMIC_BROKER: i8 = 2;
/// DescribeConfigs' source of a cluster-wide dynamic broker config.
const DYNAMIC_DEFAULT: i8 = 3;

/// Sets both throttle rates cluster-wide (`None`: removes them) and waits until every
/// broker reports the new value.
fn set_throttle_rates(cluster: &Cluster, rate: Option<u64>) {
    let value = rate.map(|r| r.to_string());
    let op = if value.is_some() { SET } else { DELETE };
    let ops = [
        (LEADER_RATE, op, value.as_deref()),
        (FOLLOWER_RATE, op, value.as_deref()),
    ];
    let (code, message) = alter(
        &cluster.node(1).addr.to_string(),
        BROKER_RESOURCE,
        "",
        &ops,
        false,
    );
    assert_eq!(code, 0, "{message:?}");
    let wanted = value.unwrap_or_else(|| i64::MAX.to_string());
    for node in &cluster.nodes {
        eventually(RECOVERY, "every broker has the throttle rates", || {
            let addr = node.addr.to_string();
            let id = node.id.to_string();
            [LEADER_RATE, FOLLOWER_RATE]
                .iter()
                .all(|key| {
                    config_source(&addr, BROKER_RESOURCE, &id, key).0.as_deref()
                        == Some(wanted.as_str())
                })
                .then_some(())
        });
    }
}

/// Sends `count` records of `size` bytes to `topic`'s partition 0, 64 in flight at a
/// time, every one acks=all; returns offset → payload of each.
async fn fill(bootstrap: &str, topic: &str, count: usize, size: usize) -> BTreeMap<i64, String> {
    let client = producer(
        bootstrap,
        &[
            ("acks", "all"),
            ("compression.type", "none"),
            ("linger.ms", "5"),
        ],
    );
    let mut acked = BTreeMap::new();
    let values: Vec<String> = (0..count)
        .map(|i| format!("{i:08}-{}", "x".repeat(size.saturating_sub(9))))
        .collect();
    for window in values.chunks(64) {
        let pending: Vec<_> = window
            .iter()
            .map(|v| {
                enqueue(
                    &client,
                    FutureRecord::<(), _>::to(topic).partition(0).payload(v),
                )
            })
            .collect();
        for (value, future) in window.iter().zip(pending) {
            let delivery = delivered(future).await.expect("acks=all");
            acked.insert(delivery.offset, value.clone());
        }
    }
    acked
}

/// Bytes of `topic`'s partition 0 on node `id` (0 while it has no directory).
fn replica_bytes(cluster: &Cluster, id: i32, topic: &str) -> u64 {
    let dir = cluster.node(id).data_dir.join(format!("{topic}-0"));
    if dir.is_dir() {
        files_bytes(&segment_files(&dir))
    } else {
        0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_reassignment_moves_at_the_throttled_rate_until_the_throttle_is_lifted() {
    const RATE: u64 = 256 * 1024;
    let cluster = Cluster::start_with(3, FAST_FENCING);
    let bootstrap = cluster.bootstrap();
    let addr = cluster.node(1).addr.to_string();
    let topic = unique_topic("throttled");
    create_placed(&bootstrap, &topic, &[&[1, 2]]).await;
    eventually(RECOVERY, "both replicas in sync", || {
        partitions(&bootstrap, &topic)
            .and_then(|v| v.into_iter().next())
            .filter(|p| p.isr.len() == 2)
    });
    let acked = fill(&bootstrap, &topic, 1024, 4096).await;
    let total = replica_bytes(&cluster, 2, &topic);
    assert!(total >= 4 << 20, "{total}");

    // Kafka's validation, and Kafka's error for values that fail it.
    let invalid = kafka_protocol::ResponseError::InvalidConfig.code();
    for bad in ["-1", "fast"] {
        let ops = [(LEADER_RATE, SET, Some(bad))];
        let (code, _) = alter(&addr, BROKER_RESOURCE, "", &ops, false);
        assert_eq!(code, invalid, "{LEADER_RATE}={bad}");
    }
    for bad in ["0-1", "*,0:1", "a:b"] {
        let ops = [(FOLLOWER_REPLICAS, SET, Some(bad))];
        let (code, message) = alter(&addr, TOPIC_RESOURCE, &topic, &ops, false);
        assert_eq!(code, invalid, "{FOLLOWER_REPLICAS}={bad}: {message:?}");
    }
    set_throttle_rates(&cluster, Some(RATE));
    assert_eq!(
        config_source(&addr, BROKER_RESOURCE, "1", LEADER_RATE),
        (Some(RATE.to_string()), DYNAMIC_DEFAULT)
    );
    let ops = [
        (LEADER_REPLICAS, SET, Some("*")),
        (FOLLOWER_REPLICAS, SET, Some("*")),
    ];
    let (code, message) = alter(&addr, TOPIC_RESOURCE, &topic, &ops, false);
    assert_eq!(code, 0, "{message:?}");
    for node in &cluster.nodes {
        eventually(RECOVERY, "every broker has the throttled replicas", || {
            let source = config_source(
                &node.addr.to_string(),
                TOPIC_RESOURCE,
                &topic,
                FOLLOWER_REPLICAS,
            );
            (source.0.as_deref() == Some("*")).then_some(())
        });
    }

    // Broker 3 has none of it: at the rate, the move takes total / RATE (16 s). For half of
    // that it must not be done, and at no point ahead of the rate by more than a second's
    // burst and one fetch response (1 MiB), with half again as slack.
    reassign(&addr, &topic, &[2, 3]);
    let started = Instant::now();
    let held = Duration::from_secs_f64(total as f64 / RATE as f64 * 0.5);
    let mut moved = 0;
    while started.elapsed() < held {
        tokio::time::sleep(Duration::from_millis(250)).await;
        moved = replica_bytes(&cluster, 3, &topic);
        let elapsed = started.elapsed().as_secs_f64();
        let allowed = (1 << 20) as f64 + RATE as f64 * (elapsed + 1.0) * 1.5;
        assert!(
            (moved as f64) <= allowed,
            "{moved} bytes moved after {elapsed:.1} s at {RATE} B/s"
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "throttled: {moved} of {total} bytes in {elapsed:.1} s ({:.0} B/s, rate {RATE})",
        moved as f64 / elapsed
    );
    assert!(moved > 0, "the throttle let nothing through");
    assert!(moved < total, "moved {total} bytes in {elapsed:.1} s");
    assert!(!ongoing_reassignments(&addr).is_empty());

    // Lifted, the move completes, with every acknowledged record and the same bytes.
    set_throttle_rates(&cluster, None);
    let lifted = Instant::now();
    let done = eventually(RECOVERY, "the move completed", || {
        let view = partitions(&bootstrap, &topic)?.into_iter().next()?;
        (ongoing_reassignments(&cluster.node(2).addr.to_string()).is_empty()
            && view.replicas == BTreeSet::from([2, 3])
            && view.isr == BTreeSet::from([2, 3]))
        .then_some(view)
    });
    eprintln!(
        "unthrottled: the rest moved and the reassignment completed in {:.1} s",
        lifted.elapsed().as_secs_f64()
    );
    assert!([2, 3].contains(&done.leader), "{done:?}");
    let high = high_watermark(&bootstrap, &topic, 0);
    let read = read_partition(&bootstrap, &topic, 0, high, RECOVERY);
    assert_eq!(read.len(), acked.len());
    for (offset, value) in &acked {
        assert_eq!(read.get(offset), Some(value), "offset {offset}");
    }
    eventually(RECOVERY, "replicas 2 and 3 byte for byte", || {
        let (a, b) = (
            log_bytes(&cluster.node(2).data_dir, &topic, 0),
            log_bytes(&cluster.node(3).data_dir, &topic, 0),
        );
        (!a.is_empty() && a == b).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_sync_followers_are_not_throttled() {
    let cluster = Cluster::start_with(3, FAST_FENCING);
    let bootstrap = cluster.bootstrap();
    let topic = unique_topic("insync");
    // Every replica must have each write: a held-back follower would fail acks=all.
    create_replicated(
        &bootstrap,
        &topic,
        1,
        &[
            ("min.insync.replicas", "3"),
            (LEADER_REPLICAS, "*"),
            (FOLLOWER_REPLICAS, "*"),
        ],
    )
    .await;
    eventually(RECOVERY, "every replica in sync", || {
        partitions(&bootstrap, &topic)
            .and_then(|v| v.into_iter().next())
            .filter(PartitionView::healthy)
    });
    // 1 KiB/s: the 512 KiB below would take over eight minutes at the rate.
    set_throttle_rates(&cluster, Some(1024));
    let started = Instant::now();
    let acked = fill(&bootstrap, &topic, 128, 4096).await;
    let elapsed = started.elapsed();
    eprintln!("512 KiB acks=all under a 1 KiB/s throttle: {elapsed:?}");
    assert_eq!(acked.len(), 128);
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    let view = partitions(&bootstrap, &topic).and_then(|v| v.into_iter().next());
    assert!(
        view.as_ref().is_some_and(PartitionView::healthy),
        "{view:?}"
    );
}

/// `odradek ARGS…` through `bootstrap`, which must succeed: its standard output.
fn cli_ok(bootstrap: &str, args: &[&str]) -> String {
    let out = odradek_at(bootstrap, args);
    assert!(
        out.status.success(),
        "odradek {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `count` records round-robin over `partitions` partitions with acks=all:
/// (partition, offset) → payload.
async fn write_acked(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: i32,
) -> BTreeMap<(i32, i64), String> {
    let strict = producer(bootstrap, &[("acks", "all")]);
    let mut acked = BTreeMap::new();
    for i in 0..count {
        let value = format!("record-{i}");
        let partition = i % partitions;
        let offset = send(&strict, topic, partition, &value)
            .await
            .expect("acks=all");
        acked.insert((partition, offset), value);
    }
    acked
}

/// Every record of `acked` is read back from its partition.
fn assert_all_readable(bootstrap: &str, topic: &str, acked: &BTreeMap<(i32, i64), String>) {
    let partitions: BTreeSet<i32> = acked.keys().map(|(p, _)| *p).collect();
    for p in partitions {
        let high = high_watermark(bootstrap, topic, p);
        let read = read_partition(bootstrap, topic, p, high, RECOVERY);
        for ((_, offset), value) in acked.range((p, 0)..(p + 1, 0)) {
            assert_eq!(read.get(offset), Some(value), "{topic}-{p} offset {offset}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_reassign_plans_executes_and_watches_a_move_that_keeps_every_record() {
    let cluster = Cluster::start(3);
    let bootstrap = cluster.bootstrap();
    let topic = unique_topic("reassigned");
    create_placed(&bootstrap, &topic, &[&[1], &[1], &[1]]).await;
    let acked = write_acked(&bootstrap, &topic, 3, 90).await;

    let plan = cli_ok(
        &bootstrap,
        &[
            "cluster",
            "reassign",
            "plan",
            "--topics",
            &topic,
            "--brokers",
            "2,3",
        ],
    );
    let parsed: serde_json::Value = serde_json::from_str(&plan).expect("a JSON plan");
    assert_eq!(parsed["version"], 1, "{plan}");
    let targets: BTreeMap<i32, Vec<i32>> = parsed["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|m| {
            assert_eq!(m["topic"], topic.as_str());
            let replicas = serde_json::from_value(m["replicas"].clone()).expect("replicas");
            (m["partition"].as_i64().expect("partition") as i32, replicas)
        })
        .collect();
    // Every partition moves, one replica each (the factor is kept), spread over both.
    assert_eq!(targets.len(), 3, "{plan}");
    let used: BTreeSet<i32> = targets.values().flatten().copied().collect();
    assert_eq!(used, BTreeSet::from([2, 3]), "{plan}");
    assert!(targets.values().all(|r| r.len() == 1), "{plan}");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("plan.json");
    std::fs::write(&file, &plan).expect("writing the plan");
    let file = file.to_str().expect("a UTF-8 path");
    let rate = (1 << 20).to_string();
    let started = cli_ok(
        &bootstrap,
        &[
            "cluster",
            "reassign",
            "execute",
            "--plan",
            file,
            "--throttle",
            &rate,
        ],
    );
    assert_eq!(started.matches(" ok").count(), 3, "{started}");
    assert!(
        started.contains(&format!(
            "Throttled replication to {rate} B/s on brokers 1,2,3 for {topic}"
        )),
        "{started}"
    );
    // Kafka's throttles for the move: the rates on every broker involved, the leader
    // throttle on the replicas that send (all on broker 1), the follower throttle on the
    // ones being added (while the move runs they may still be there).
    let rates_on = |node: &ClusterNode| -> Vec<(Option<String>, i8)> {
        [LEADER_RATE, FOLLOWER_RATE]
            .iter()
            .map(|key| {
                let id = node.id.to_string();
                config_source(&node.addr.to_string(), BROKER_RESOURCE, &id, key)
            })
            .collect()
    };
    let pairs = |node: &ClusterNode, key: &str| -> BTreeSet<String> {
        let (value, _) = config_source(&node.addr.to_string(), TOPIC_RESOURCE, &topic, key);
        value
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    };
    let lists_on =
        |node: &ClusterNode| (pairs(node, LEADER_REPLICAS), pairs(node, FOLLOWER_REPLICAS));
    let throttled = vec![(Some(rate.clone()), DYNAMIC_BROKER); 2];
    let senders: BTreeSet<String> = (0..3).map(|p| format!("{p}:1")).collect();
    let receivers: BTreeSet<String> = targets
        .iter()
        .map(|(p, replicas)| format!("{p}:{}", replicas[0]))
        .collect();
    for node in &cluster.nodes {
        eventually(RECOVERY, &format!("broker {} throttled", node.id), || {
            (rates_on(node) == throttled && lists_on(node) == (senders.clone(), receivers.clone()))
                .then_some(())
        });
    }

    // `watch` waits for the moves and then removes every throttle `execute` set.
    let watched = cli_ok(
        &bootstrap,
        &["cluster", "reassign", "watch", "--plan", file],
    );
    assert!(
        watched.contains("No reassignment in progress.")
            && watched.contains(&format!(
                "Removed the replication throttles of broker 1, broker 2, broker 3, topic {topic}"
            )),
        "{watched}"
    );
    let unthrottled = Some(i64::MAX.to_string());
    for node in &cluster.nodes {
        eventually(RECOVERY, &format!("broker {} unthrottled", node.id), || {
            let lists = lists_on(node);
            (rates_on(node).iter().all(|(v, _)| *v == unthrottled)
                && lists.0.is_empty()
                && lists.1.is_empty())
            .then_some(())
        });
    }

    eventually(RECOVERY, "the planned replicas in the metadata", || {
        let views = partitions(&bootstrap, &topic)?;
        views
            .iter()
            .enumerate()
            .all(|(p, v)| {
                let planned: BTreeSet<i32> = targets[&(p as i32)].iter().copied().collect();
                v.replicas == planned && v.isr == planned
            })
            .then_some(())
    });
    assert_all_readable(&bootstrap, &topic, &acked);

    // Describe and info show the result: ELR per partition, nothing under-replicated.
    let described: serde_json::Value = serde_json::from_str(&cli_ok(
        &bootstrap,
        &["topic", "describe", &topic, "--output", "json"],
    ))
    .expect("JSON");
    for p in described["partitions"].as_array().expect("partitions") {
        assert!(p["elr"].is_array(), "{described}");
    }
    let configs = described["configs"].as_object().expect("configs");
    assert!(
        !configs.keys().any(|k| k.contains("throttled")),
        "throttles left behind: {described}"
    );
    let info: serde_json::Value = serde_json::from_str(&cli_ok(
        &bootstrap,
        &["cluster", "info", "--output", "json"],
    ))
    .expect("JSON");
    assert_eq!(info["under_replicated_partitions"], 0, "{info}");
    assert_eq!(info["offline_partitions"], 0, "{info}");

    // A second watch has nothing to wait for; a cancel has nothing to cancel.
    let again = cli_ok(&bootstrap, &["cluster", "reassign", "watch"]);
    assert!(again.contains("No reassignment in progress."), "{again}");
    let out = odradek_at(
        &bootstrap,
        &["cluster", "reassign", "cancel", "--plan", file],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.contains("NO_REASSIGNMENT_IN_PROGRESS"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_decommission_drains_a_broker_that_then_stops_without_losing_records() {
    let mut cluster = Cluster::start(3);
    let bootstrap = cluster.bootstrap();
    let topic = unique_topic("drained");
    create_placed(&bootstrap, &topic, &[&[3, 1], &[1, 3], &[2, 3], &[3, 2]]).await;
    let acked = write_acked(&bootstrap, &topic, 4, 120).await;

    // A topic with three replicas cannot lose one of three brokers: refused, naming it.
    let wide = unique_topic("three-replicas");
    create_placed(&bootstrap, &wide, &[&[1, 2, 3]]).await;
    let out = odradek_at(&bootstrap, &["cluster", "decommission", "3"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains(&format!("{wide} (replication factor 3)")),
        "{said}"
    );
    cli_ok(&bootstrap, &["topic", "delete", &wide]);

    let drained = cli_ok(&bootstrap, &["cluster", "decommission", "3"]);
    assert!(drained.contains("Broker 3 holds no replicas"), "{drained}");
    let consumer = consumer(&bootstrap, &[]);
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    for t in metadata.topics() {
        for p in t.partitions() {
            assert!(
                !p.replicas().contains(&3),
                "{}-{} is still on broker 3: {:?}",
                t.name(),
                p.id(),
                p.replicas()
            );
            if t.name() == topic {
                assert_eq!(p.replicas().len(), 2, "the replication factor is kept");
            }
        }
    }
    cluster.stop(3);
    assert_all_readable(&cluster.bootstrap(), &topic, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_replicas_isr_and_broker_health_of_a_cluster() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // Every node serves HTTP on its own address, at the same port.
    let listeners = format!("http.listeners=127.0.0.{{id}}:{port}");
    let mut args = FAST_FENCING.to_vec();
    args.extend(["--set", &listeners]);
    let mut cluster = Cluster::start_with(3, &args);
    let bootstrap = cluster.bootstrap();
    let topic = unique_topic("console");
    create_placed(&bootstrap, &topic, &[&[1, 2, 3]]).await;
    let http = format!("127.0.0.1:{port}");
    let api = |path: &str| -> serde_json::Value {
        let (status, body) = get(&http, &format!("/api/{path}"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    };
    let sorted = |v: &serde_json::Value| -> Vec<i64> {
        let mut ids: Vec<i64> = v
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(serde_json::Value::as_i64)
            .collect();
        ids.sort();
        ids
    };
    let partition = eventually(RECOVERY, "every replica in sync", || {
        let p = api(&format!("topics/{topic}"))["partitions"][0].clone();
        (sorted(&p["isr"]) == [1, 2, 3]).then_some(p)
    });
    assert_eq!(sorted(&partition["replicas"]), [1, 2, 3], "{partition}");
    assert!(partition["leader"].as_i64() >= Some(1), "{partition}");
    assert!(partition["leader_epoch"].as_i64() >= Some(0), "{partition}");

    let brokers = api("brokers");
    let listed = brokers["brokers"].as_array().expect("brokers");
    assert_eq!(listed.len(), 3, "{brokers}");
    for b in listed {
        assert_eq!(b["fenced"], false, "{brokers}");
        let id = b["id"].as_i64().expect("an id");
        assert_eq!(
            b["address"],
            cluster.node(id as i32).addr.to_string().as_str(),
            "{brokers}"
        );
    }
    let leader = brokers["quorum_leader"].as_i64().expect("a quorum leader");
    let marked: Vec<&serde_json::Value> = listed
        .iter()
        .filter(|b| b["quorum_leader"] == true)
        .collect();
    assert!(marked.len() == 1 && marked[0]["id"] == leader, "{brokers}");

    // A dead broker shows as fenced, and it leaves the ISR.
    cluster.kill9(3);
    eventually(RECOVERY, "broker 3 fenced and out of the ISR", || {
        let brokers = api("brokers");
        let fenced = brokers["brokers"]
            .as_array()?
            .iter()
            .any(|b| b["id"] == 3 && b["fenced"] == true);
        let isr = sorted(&api(&format!("topics/{topic}"))["partitions"][0]["isr"]);
        (fenced && isr == [1, 2]).then_some(())
    });
}
