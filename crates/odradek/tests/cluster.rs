//! Several broker processes as one cluster (Kafka's combined mode: every node is a broker
//! and a voter of the metadata quorum), seen through real clients: librdkafka and
//! kafka-python. Partitions have one replica each until replication lands.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use support::cluster::{Cluster, eventually};
use support::netns::Network;
use support::*;

/// Each partition's leader (-1: none) and the brokers, as librdkafka reads them from `addr`.
fn view(addr: &str, topic: &str) -> (BTreeSet<i32>, Vec<i32>) {
    let consumer = consumer(addr, &[]);
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let brokers = metadata.brokers().iter().map(|b| b.id()).collect();
    let leaders = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| {
            let mut p: Vec<_> = t
                .partitions()
                .iter()
                .map(|p| (p.id(), p.leader()))
                .collect();
            p.sort();
            p.into_iter().map(|(_, leader)| leader).collect()
        })
        .unwrap_or_default();
    (brokers, leaders)
}

/// kafka-python's view through `addr`, and a record produced to and read back from every
/// partition (tests/cluster_view.py).
fn kafka_python_view(addr: &str, topic: &str, tag: &str) -> serde_json::Value {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let python = format!("{root}/target/compat-venv/bin/python");
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} is missing: compat/setup installs kafka-python there (scripts/test runs it first)"
    );
    let out = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/cluster_view.py"
        ))
        .args([addr, topic, tag])
        .output()
        .expect("running kafka-python");
    assert!(
        out.status.success(),
        "kafka-python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from cluster_view.py")
}

async fn create(addr: &str, name: &str, partitions: i32) -> Result<(), String> {
    let results = admin(addr)
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|e| e.to_string())?;
    match &results[0] {
        Ok(_) => Ok(()),
        Err((_, code)) => Err(format!("{code:?}")),
    }
}

/// Creates `name` through `bootstrap`, retrying across an election until it exists. A try
/// that timed out may have committed all the same: TOPIC_ALREADY_EXISTS then means done.
async fn create_eventually(bootstrap: &str, name: &str, partitions: i32, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match create(bootstrap, name, partitions).await {
            Ok(()) => return,
            Err(e) if e.contains("TopicAlreadyExists") => return,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name} not created within {timeout:?}: {e}"
                );
                println!("creating {name}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_through_one_node_is_served_through_every_node() {
    let cluster = Cluster::start(3);
    let topic = unique_topic("spread");
    create(&cluster.node(2).addr.to_string(), &topic, 6)
        .await
        .unwrap();
    let all: BTreeSet<i32> = [1, 2, 3].into();
    for node in &cluster.nodes {
        let addr = node.addr.to_string();
        let (brokers, leaders) =
            eventually(Duration::from_secs(10), "every node has the topic", || {
                let (brokers, leaders) = view(&addr, &topic);
                (leaders.len() == 6).then_some((brokers, leaders))
            });
        assert_eq!(brokers, all, "node {} lists every broker", node.id);
        let leading: BTreeSet<i32> = leaders.iter().copied().collect();
        assert_eq!(
            leading, all,
            "the partitions are spread over all three: {leaders:?}"
        );
    }

    // librdkafka, bootstrapped from node 3 alone, writes to each partition's leader.
    let producer = producer(&cluster.node(3).addr.to_string(), &[("acks", "all")]);
    for p in 0..6 {
        let value = format!("rdkafka {p}");
        producer
            .send(
                FutureRecord::<(), _>::to(&topic)
                    .partition(p)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("produce to partition {p}: {e}\n{}", cluster.logs()));
    }
    // ... and reads them back bootstrapped from node 1.
    let one = cluster.node(1).addr.to_string();
    let values: BTreeSet<String> = (0..6)
        .flat_map(|p| consume(&one, &topic, p, 0, 1, Duration::from_secs(20)))
        .filter_map(|m| payload(&m).map(|v| String::from_utf8_lossy(&v).into_owned()))
        .collect();
    assert_eq!(values, (0..6).map(|p| format!("rdkafka {p}")).collect());

    // kafka-python sees the same leaders through any node, and produces and reads through
    // them: each partition's record lands after librdkafka's, at offset 1.
    let (_, leaders) = view(&cluster.node(1).addr.to_string(), &topic);
    for node in [1, 3] {
        let seen = kafka_python_view(
            &cluster.node(node).addr.to_string(),
            &topic,
            &node.to_string(),
        );
        assert_eq!(seen["brokers"], serde_json::json!([1, 2, 3]), "{seen}");
        for (p, leader) in leaders.iter().enumerate() {
            assert_eq!(seen["leaders"][p.to_string()], *leader, "{seen}");
        }
        let expected_offset = if node == 1 { 1 } else { 2 };
        for p in 0..6 {
            assert_eq!(seen["sent"][p.to_string()], expected_offset, "{seen}");
            assert_eq!(seen["read"][p.to_string()], expected_offset, "{seen}");
        }
    }
}

/// The metadata log's partition as DescribeQuorum describes it through `addr`, if it answers
/// without an error.
fn describe_quorum(
    addr: &str,
) -> Option<kafka_protocol::messages::describe_quorum_response::PartitionData> {
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
    (response.error_code == 0 && partition.error_code == 0).then_some(partition)
}

/// The quorum leader (the controller) as DescribeQuorum reports it through `addr`.
fn quorum_leader(addr: &str) -> Option<i32> {
    let leader = describe_quorum(addr)?.leader_id.0;
    (leader >= 0).then_some(leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_controller_dies_another_is_elected_and_it_catches_up_on_return() {
    let mut cluster = Cluster::start(3);
    let first = eventually(Duration::from_secs(10), "a controller", || {
        quorum_leader(&cluster.node(1).addr.to_string())
    });
    create(&cluster.bootstrap(), &unique_topic("before"), 3)
        .await
        .unwrap();
    cluster.kill9(first);
    let survivor = cluster
        .nodes
        .iter()
        .find(|n| n.id != first)
        .unwrap()
        .addr
        .to_string();
    let started = std::time::Instant::now();
    let second = eventually(Duration::from_secs(10), "a new controller", || {
        quorum_leader(&survivor).filter(|l| *l != first)
    });
    // Topic creation works again, through either survivor, within a few seconds.
    let after = unique_topic("after");
    create_eventually(&survivor, &after, 2, Duration::from_secs(10)).await;
    println!(
        "controller {first} killed; node {second} leads, and a topic was created {:?} later",
        started.elapsed()
    );
    // The old controller comes back and catches up: it serves what was created without it.
    cluster.restart(first);
    let back = cluster.node(first).addr.to_string();
    eventually(
        Duration::from_secs(10),
        "the returning node knows the new topic",
        || (view(&back, &after).1.len() == 2).then_some(()),
    );
    assert_eq!(
        quorum_leader(&back),
        Some(second),
        "a returning node does not take over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_brokers_partitions_go_offline_and_the_others_stay_served() {
    let session_ms = "3000";
    let mut cluster = Cluster::start_with(
        3,
        &["--set", &format!("broker.session.timeout.ms={session_ms}")],
    );
    let topic = unique_topic("fenced");
    create(&cluster.bootstrap(), &topic, 6).await.unwrap();
    let one = cluster.node(1).addr.to_string();
    let (_, leaders) = eventually(Duration::from_secs(10), "leaders", || {
        let v = view(&one, &topic);
        (v.1.len() == 6).then_some(v)
    });
    // Whichever node is not the controller dies, so the fencing is the controller's doing.
    let controller = quorum_leader(&one).expect("a controller");
    let victim = [1, 2, 3].into_iter().find(|n| *n != controller).unwrap();
    cluster.kill9(victim);
    let alive = cluster.node(controller).addr.to_string();
    let after = eventually(Duration::from_secs(15), "the dead broker fenced", || {
        let (brokers, now) = view(&alive, &topic);
        (!brokers.contains(&victim)).then_some(now)
    });
    for (p, (before, now)) in leaders.iter().zip(&after).enumerate() {
        if *before == victim {
            assert_eq!(
                *now, -1,
                "partition {p} was led by the dead broker: offline now"
            );
        } else {
            assert_eq!(now, before, "partition {p} keeps its leader");
        }
    }
    // `odradek cluster info` still lists it, as fenced (DescribeCluster v2, KIP-1073).
    let info = Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args(["-b", &alive, "cluster", "info", "--output", "json"])
        .output()
        .expect("running odradek cluster info");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("JSON");
    let states: Vec<(i64, bool)> = info["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .map(|b| (b["id"].as_i64().unwrap(), b["fenced"].as_bool().unwrap()))
        .collect();
    let expected: Vec<(i64, bool)> = (1..=3).map(|id| (id, id == victim as i64)).collect();
    assert_eq!(states, expected, "{info}");
    // Every partition of a live broker takes writes.
    let producer = producer(&alive, &[("acks", "all"), ("message.timeout.ms", "10000")]);
    for (p, leader) in after.iter().enumerate() {
        if *leader == -1 {
            continue;
        }
        producer
            .send(
                FutureRecord::<(), _>::to(&topic)
                    .partition(p as i32)
                    .payload("still served"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("partition {p}: {e}"));
    }
    // Each change of leader is a new leader epoch (KIP-320): to none, and back.
    let epochs_before = leader_epochs(&alive, &topic);
    // Back again: it leads its partitions once more.
    cluster.restart(victim);
    eventually(
        Duration::from_secs(10),
        "the returned broker leads again",
        || (view(&alive, &topic).1 == leaders).then_some(()),
    );
    let epochs = leader_epochs(&alive, &topic);
    for (p, leader) in leaders.iter().enumerate() {
        let (then, now) = if *leader == victim { (1, 2) } else { (0, 0) };
        assert_eq!(
            (epochs_before[p], epochs[p]),
            (then, now),
            "partition {p}, led by {leader}"
        );
    }
    // The returned leader fences a client that still believes in the old epoch, and one
    // that believes in an epoch it has not reached (UNKNOWN_LEADER_EPOCH) too.
    let p = leaders.iter().position(|l| *l == victim).unwrap() as i32;
    let back = cluster.node(victim).addr.to_string();
    let fetch_at = |epoch: i32| fetch_error(&back, &topic, p, epoch);
    assert_eq!(fetch_at(2), 0);
    assert_eq!(fetch_at(-1), 0, "-1: no check");
    assert_eq!(
        fetch_at(0),
        kafka_protocol::ResponseError::FencedLeaderEpoch.code()
    );
    assert_eq!(
        fetch_at(3),
        kafka_protocol::ResponseError::UnknownLeaderEpoch.code()
    );
    // Fetch v16 from a broker that does not lead it says who does, and where (KIP-951).
    let mut request = fetch_request(&topic, p, 0, -1);
    request.topics[0].topic_id = topic_id(&alive, &topic);
    request.topics[0].topic = Default::default();
    let response = raw_round_trip(&alive, &request, 16);
    let partition = &response.responses[0].partitions[0];
    assert_eq!(
        partition.error_code,
        kafka_protocol::ResponseError::NotLeaderOrFollower.code()
    );
    assert_eq!(
        (
            partition.current_leader.leader_id.0,
            partition.current_leader.leader_epoch
        ),
        (victim, 2)
    );
    let endpoints: Vec<(i32, String)> = response
        .node_endpoints
        .iter()
        .map(|e| (e.node_id.0, format!("{}:{}", e.host.as_str(), e.port)))
        .collect();
    assert_eq!(endpoints, [(victim, back.clone())]);
}

/// `topic`'s id, as Metadata v12 reports it through `addr`.
fn topic_id(addr: &str, topic: &str) -> uuid::Uuid {
    metadata_v12(addr, topic).topics[0].topic_id
}

/// Metadata v12 of `topic` through `addr`.
fn metadata_v12(addr: &str, topic: &str) -> kafka_protocol::messages::MetadataResponse {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.into())))),
    ]));
    raw_round_trip(addr, &request, 12)
}

/// Each partition's leader epoch, as Metadata v12 reports it through `addr`.
fn leader_epochs(addr: &str, topic: &str) -> Vec<i32> {
    let response = metadata_v12(addr, topic);
    let mut partitions: Vec<(i32, i32)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_epoch))
        .collect();
    partitions.sort();
    partitions.into_iter().map(|(_, epoch)| epoch).collect()
}

/// The error code of a Fetch (v12) of `topic`'s partition `p` from `addr` by a client that
/// believes the leader epoch is `epoch`.
fn fetch_error(addr: &str, topic: &str, p: i32, epoch: i32) -> i16 {
    raw_round_trip(addr, &fetch_request(topic, p, 0, epoch), 12).responses[0].partitions[0]
        .error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controlled_shutdown_takes_the_broker_out_before_it_exits() {
    let mut cluster = Cluster::start(3);
    let topic = unique_topic("controlled");
    create(&cluster.bootstrap(), &topic, 6).await.unwrap();
    let one = cluster.node(1).addr.to_string();
    eventually(Duration::from_secs(10), "leaders", || {
        (view(&one, &topic).1.len() == 6).then_some(())
    });
    let leaving = 3;
    cluster.stop(leaving);
    // No session timeout to wait out: the broker was fenced before it exited.
    let (brokers, leaders) = view(&one, &topic);
    assert!(
        !brokers.contains(&leaving),
        "{brokers:?}\n{}",
        cluster.log(leaving)
    );
    assert!(!leaders.contains(&leaving), "{leaders:?}");
    assert!(cluster.log(leaving).contains("controlled shutdown: fenced"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_replicas_than_brokers_are_refused_rather_than_quietly_not_kept() {
    let cluster = Cluster::start(3);
    let admin = admin(&cluster.bootstrap());
    let results = admin
        .create_topics(
            &[NewTopic::new(
                &unique_topic("rf4"),
                3,
                TopicReplication::Fixed(4),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    match &results[0] {
        Err((_, code)) => assert_eq!(
            *code,
            rdkafka::types::RDKafkaErrorCode::InvalidReplicationFactor
        ),
        Ok(t) => panic!("{t} was created with replication factor 4 on 3 brokers"),
    }
    // An explicit assignment to a broker that exists is honoured.
    let name = unique_topic("assigned");
    let results = admin
        .create_topics(
            &[NewTopic::new(
                &name,
                3,
                TopicReplication::Variable(&[&[3], &[3], &[2]]),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    let leaders = eventually(Duration::from_secs(10), "leaders", || {
        let v = view(&cluster.node(1).addr.to_string(), &name).1;
        (v.len() == 3).then_some(v)
    });
    assert_eq!(leaders, [3, 3, 2]);
    // An assignment to a broker nobody registered is refused.
    let results = admin
        .create_topics(
            &[NewTopic::new(
                &unique_topic("nowhere"),
                1,
                TopicReplication::Variable(&[&[9]]),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    match &results[0] {
        Err((_, code)) => assert_eq!(
            *code,
            rdkafka::types::RDKafkaErrorCode::InvalidReplicaAssignment
        ),
        Ok(t) => panic!("{t} was created on broker 9, which does not exist"),
    }
}

/// Runs the `odradek` CLI inside host `host`'s network namespace; its output and whether
/// it succeeded.
fn cli_on(network: &Network, host: usize, args: &[&str]) -> (bool, String) {
    let out = network
        .command(host, env!("CARGO_BIN_EXE_odradek"))
        .args(args)
        .output()
        .expect("running the odradek CLI");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_a_five_node_quorum_cannot_commit_metadata() {
    let network = Arc::new(Network::create(5));
    let hosts = (0..5)
        .map(|i| {
            let on = network.clone();
            let launcher: Box<dyn Fn() -> Command + Send> =
                Box::new(move || on.command(i, env!("CARGO_BIN_EXE_odradek")));
            (network.addr(i), launcher)
        })
        .collect();
    let cluster = Cluster::start_on(hosts, &[]);
    let addr = |id: i32| cluster.node(id).addr.to_string();
    let leader = eventually(Duration::from_secs(10), "a controller", || {
        quorum_leader(&addr(1))
    });
    // The controller itself is cut off: the worst case, a leader that does not know it
    // lost its quorum.
    let cut = leader;
    let host = (cut - 1) as usize;
    network.isolate(host);
    let (ok, out) = cli_on(
        &network,
        host,
        &["-b", &addr(cut), "topic", "create", "minority"],
    );
    assert!(!ok, "the cut-off node committed a topic on its own:\n{out}");
    assert!(out.contains("REQUEST_TIMED_OUT"), "{out}");

    // The four others elect a controller among themselves and go on committing.
    let majority = [1, 2, 3, 4, 5].into_iter().find(|id| *id != cut).unwrap();
    eventually(
        Duration::from_secs(15),
        "a controller among the majority",
        || quorum_leader(&addr(majority)).filter(|l| *l != cut),
    );
    let created = create(&addr(majority), "majority", 2).await;
    assert!(created.is_ok(), "{created:?}\n{}", cluster.logs());

    // Healed, the cut-off node learns what was committed without it and drops what it
    // could not commit.
    network.heal(host);
    let back = addr(cut);
    eventually(
        Duration::from_secs(20),
        "the healed node catches up",
        || (view(&back, "majority").1.len() == 2).then_some(()),
    );
    let consumer = consumer(&back, &[]);
    let topics = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let names: BTreeSet<&str> = topics.topics().iter().map(|t| t.name()).collect();
    assert!(!names.contains("minority"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_controllers_and_broker_only_nodes_form_one_cluster() {
    use support::cluster::Role::{Broker, Controller};
    // Nodes 1-3 vote and serve no clients; 4 and 5 serve clients and receive the metadata
    // log as observers, with Kafka's broker-only config (no controller listener).
    let mut cluster = Cluster::start_roles(&[Controller, Controller, Controller, Broker, Broker]);
    let four = cluster.node(4).addr.to_string();
    let five = cluster.node(5).addr.to_string();
    let topic = unique_topic("roles");
    create(&four, &topic, 4).await.unwrap();
    let brokers: BTreeSet<i32> = [4, 5].into();
    for addr in [&four, &five] {
        let (listed, leaders) = eventually(
            Duration::from_secs(10),
            "both brokers have the topic",
            || {
                let seen = view(addr, &topic);
                (seen.1.len() == 4).then_some(seen)
            },
        );
        assert_eq!(listed, brokers, "only the broker-only nodes are brokers");
        assert_eq!(
            leaders.iter().copied().collect::<BTreeSet<_>>(),
            brokers,
            "the partitions are spread over the brokers, none on a controller: {leaders:?}"
        );
    }

    // A broker-only node answers DescribeQuorum from the controller: voters 1-3, observers 4, 5.
    let quorum = eventually(
        Duration::from_secs(10),
        "DescribeQuorum through node 4",
        || describe_quorum(&four),
    );
    let ids = |replicas: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| {
        replicas
            .iter()
            .map(|r| r.replica_id.0)
            .collect::<BTreeSet<i32>>()
    };
    assert_eq!(ids(&quorum.current_voters), [1, 2, 3].into());
    assert_eq!(ids(&quorum.observers), brokers);
    let controller = quorum.leader_id.0;
    assert!((1..=3).contains(&controller), "{quorum:?}");
    // The features the controller finalized reach the brokers with the rest of the log.
    for addr in [&four, &five] {
        let (features, _) = eventually(Duration::from_secs(10), "finalized features", || {
            Some(finalized_features(addr)).filter(|(f, _)| !f.is_empty())
        });
        assert_eq!(features.get("metadata.version"), Some(&25), "{features:?}");
    }

    // Records written through one broker are read back through the other.
    let producer = producer(&five, &[("acks", "all")]);
    for p in 0..4 {
        producer
            .send(
                FutureRecord::<(), _>::to(&topic)
                    .partition(p)
                    .payload(&format!("v{p}")),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("produce to partition {p}: {e}\n{}", cluster.logs()));
    }
    drop(producer);
    let read = |addr: &str| -> BTreeSet<String> {
        (0..4)
            .flat_map(|p| consume(addr, &topic, p, 0, 1, Duration::from_secs(20)))
            .filter_map(|m| payload(&m).map(|v| String::from_utf8_lossy(&v).into_owned()))
            .collect()
    };
    let written: BTreeSet<String> = (0..4).map(|p| format!("v{p}")).collect();
    assert_eq!(read(&four), written);

    // The controller dies: the two left elect another, and the brokers carry on with it.
    cluster.kill9(controller);
    let after = unique_topic("roles-after");
    create_eventually(&five, &after, 2, Duration::from_secs(15)).await;

    // A broker-only node killed and restarted (its quorum listener on a new port) catches
    // up: it knows what was created while it was down, and serves its partitions again.
    cluster.kill9(4);
    let late = unique_topic("roles-late");
    create(&five, &late, 1).await.unwrap();
    cluster.restart(4);
    eventually(
        Duration::from_secs(10),
        "node 4 knows the topic created while it was down",
        || (view(&four, &late).1.len() == 1).then_some(()),
    );
    assert_eq!(read(&four), written, "{}", cluster.logs());
}

/// The coordinator of `key` (key type 0: a group, 1: a transactional id) that FindCoordinator
/// names through `addr`.
fn coordinator_of(addr: &str, key: &str, key_type: i8) -> i32 {
    use kafka_protocol::messages::FindCoordinatorRequest;
    use kafka_protocol::protocol::StrBytes;
    let request = FindCoordinatorRequest::default()
        .with_key_type(key_type)
        .with_coordinator_keys(vec![StrBytes::from_string(key.into())]);
    let response = raw_round_trip(addr, &request, 4);
    let coordinator = &response.coordinators[0];
    assert_eq!(
        coordinator.error_code, 0,
        "FindCoordinator {key}: {response:?}"
    );
    coordinator.node_id.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_and_transaction_requests_are_answered_by_their_coordinator_only() {
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::{
        GroupId, HeartbeatRequest, InitProducerIdRequest, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    use rdkafka::consumer::CommitMode;
    let cluster = Cluster::start(3);
    let one = cluster.node(1).addr.to_string();

    // A real consumer group on a 3-broker cluster: librdkafka finds the coordinator,
    // joins, reads every partition (led by all three brokers) and commits.
    let topic = unique_topic("coordinated");
    create(&one, &topic, 3).await.unwrap();
    let producer = producer(&cluster.bootstrap(), &[("acks", "all")]);
    for p in 0..3 {
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).partition(p).payload("x"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let group = unique_topic("group");
    let member = consumer(
        &cluster.bootstrap(),
        &[
            ("group.id", &group),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
        ],
    );
    member.subscribe(&[&topic]).unwrap();
    let mut read = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read < 3 && std::time::Instant::now() < deadline {
        if let Some(m) = member.poll(Duration::from_millis(200)) {
            m.expect("a record");
            read += 1;
        }
    }
    assert_eq!(read, 3, "{}", cluster.logs());
    member.commit_consumer_state(CommitMode::Sync).unwrap();
    let committed = member
        .committed(Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.offset())
        .collect::<Vec<_>>();
    assert_eq!(committed, vec![rdkafka::Offset::Offset(1); 3]);

    // Any other broker refuses the group's requests with NOT_COORDINATOR, so that clients
    // go back to FindCoordinator, as Kafka's brokers do.
    let coordinator = coordinator_of(&one, &group, 0);
    let heartbeat = |node: i32| {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_generation_id(1)
            .with_member_id(StrBytes::from_static_str("nobody"));
        raw_round_trip(&cluster.node(node).addr.to_string(), &request, 4).error_code
    };
    for node in 1..=3 {
        let expected = if node == coordinator {
            ResponseError::UnknownMemberId
        } else {
            ResponseError::NotCoordinator
        };
        assert_eq!(heartbeat(node), expected.code(), "heartbeat to node {node}");
    }

    // Likewise for a transactional id: only its coordinator starts the producer. The
    // first one makes `__transaction_state` (150 replicas), whose first writes may wait out
    // the coordinator's write timeout while followers start: that is answered with the
    // retriable COORDINATOR_NOT_AVAILABLE, which clients retry, and so does this.
    let txn = unique_topic("txn");
    let txn_coordinator = coordinator_of(&one, &txn, 1);
    let retriable = [
        ResponseError::CoordinatorNotAvailable.code(),
        ResponseError::CoordinatorLoadInProgress.code(),
    ];
    for node in 1..=3 {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(txn.clone()))))
            .with_transaction_timeout_ms(10_000);
        let addr = cluster.node(node).addr.to_string();
        let response = eventually(Duration::from_secs(30), "a final answer", || {
            let response = raw_round_trip(&addr, &request, 4);
            (!retriable.contains(&response.error_code)).then_some(response)
        });
        if node == txn_coordinator {
            assert_eq!(response.error_code, 0, "{response:?}");
            assert!(response.producer_id.0 >= 0);
        } else {
            assert_eq!(
                response.error_code,
                ResponseError::NotCoordinator.code(),
                "InitProducerId on node {node}"
            );
        }
    }
}

/// The voters and observers of the metadata quorum, as DescribeQuorum reports them through
/// `addr`.
fn quorum_members(addr: &str) -> Option<(BTreeSet<i32>, BTreeSet<i32>)> {
    let quorum = describe_quorum(addr)?;
    let ids = |replicas: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| {
        replicas.iter().map(|r| r.replica_id.0).collect()
    };
    Some((ids(&quorum.current_voters), ids(&quorum.observers)))
}

/// `odradek cluster ARGS…` through `addr`: whether it succeeded, and what it printed.
fn cluster_cli(addr: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args(["-b", addr, "cluster"])
        .args(args)
        .output()
        .expect("running odradek cluster");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_controller_is_replaced_by_removing_it_and_adding_a_new_one() {
    use support::cluster::Role::{Broker, Controller, JoiningController};
    let mut cluster = Cluster::start_roles(&[Controller, Controller, Controller, Broker]);
    let four = cluster.node(4).addr.to_string();
    let leader = eventually(Duration::from_secs(10), "a controller", || {
        quorum_leader(&four)
    });
    // A controller that is not the leader dies for good, and is removed.
    let dead = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    cluster.kill9(dead);
    let (ok, out) = cluster_cli(&four, &["remove-controller", &dead.to_string()]);
    assert!(ok, "remove-controller {dead}: {out}\n{}", cluster.logs());
    let survivors: BTreeSet<i32> = [1, 2, 3].into_iter().filter(|n| *n != dead).collect();
    assert_eq!(quorum_members(&four).map(|m| m.0), Some(survivors.clone()));

    // Its replacement starts with the voters as its bootstrap servers: it observes...
    let new = cluster.add_node(JoiningController);
    eventually(
        Duration::from_secs(10),
        "the new controller observing",
        || quorum_members(&four).filter(|(_, observers)| observers.contains(&new)),
    );
    // ...until it is made a voter.
    let (ok, out) = cluster_cli(&four, &["add-controller", &new.to_string()]);
    assert!(ok, "add-controller {new}: {out}\n{}", cluster.logs());
    let mut voters = survivors.clone();
    voters.insert(new);
    assert_eq!(quorum_members(&four).map(|m| m.0), Some(voters.clone()));

    // It counts: with the old leader gone too, the other survivor and the new controller
    // are a majority of three; they elect a leader and commit.
    cluster.kill9(leader);
    create_eventually(&four, &unique_topic("replaced"), 1, Duration::from_secs(20)).await;
    let now = quorum_leader(&four).expect("a leader");
    assert!(voters.contains(&now) && now != leader, "leader {now}");
    // Restarted, it is the voter its log says, not the observer its config describes.
    cluster.kill9(new);
    cluster.restart(new);
    create_eventually(
        &four,
        &unique_topic("after-restart"),
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(quorum_members(&four).map(|m| m.0), Some(voters));
}
