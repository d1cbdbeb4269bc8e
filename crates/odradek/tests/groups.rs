//! Consumer groups (classic protocol) with librdkafka against a real broker process.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    ConsumerProtocolSubscription, HeartbeatRequest, JoinGroupRequest, SyncGroupRequest,
    join_group_request::JoinGroupRequestProtocol,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use support::*;

const TIMEOUT: Duration = Duration::from_secs(30);

fn group_consumer(addr: &str, group: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    group_config(addr, group, extra)
        .create()
        .expect("group consumer")
}

fn group_config(addr: &str, group: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut config = client_config(addr);
    config
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        // An empty value drops a setting (KIP-848 members may not set classic-only ones).
        if v.is_empty() {
            config.remove(k);
        } else {
            config.set(*k, *v);
        }
    }
    config
}

/// Commits the stored offsets; "nothing stored" (all already committed, or the partitions
/// were just revoked) is not an error.
fn commit(consumer: &BaseConsumer) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(e) => panic!("commit failed: {e}"),
    }
}

/// A member polling in its own thread, recording what it consumed and committing as it goes.
struct Member {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    assigned: Arc<Mutex<Vec<i32>>>,
}

impl Member {
    fn start(
        addr: &str,
        group: &str,
        topic: &str,
        seen: Arc<Mutex<Vec<String>>>,
        extra: &[(&str, &str)],
    ) -> Self {
        let consumer = group_consumer(addr, group, extra);
        consumer.subscribe(&[topic]).expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let assigned = Arc::new(Mutex::new(Vec::new()));
        let (stop2, assigned2) = (stop.clone(), assigned.clone());
        let thread = std::thread::spawn(move || {
            let mut uncommitted = 0;
            while !stop2.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
                        consumer
                            .store_offset_from_message(&m)
                            .expect("store offset");
                        uncommitted += 1;
                    }
                    // Transient (a broker restart, a rebalance); librdkafka recovers by itself.
                    Some(Err(e)) => eprintln!("consumer error: {e}"),
                    // Idle: commit what was consumed, so a rebalance hands over exact positions.
                    None if uncommitted > 0 => {
                        commit(&consumer);
                        uncommitted = 0;
                    }
                    None => {}
                }
                if uncommitted >= 500 {
                    commit(&consumer);
                    uncommitted = 0;
                }
                if let Ok(a) = consumer.assignment() {
                    let mut partitions: Vec<i32> =
                        a.elements().iter().map(|e| e.partition()).collect();
                    partitions.sort_unstable();
                    *assigned2.lock().unwrap() = partitions;
                }
            }
            if uncommitted > 0 {
                commit(&consumer);
            }
            // Dropping the consumer sends LeaveGroup.
        });
        Self {
            stop,
            thread: Some(thread),
            assigned,
        }
    }

    fn assignment(&self) -> Vec<i32> {
        self.assigned.lock().unwrap().clone()
    }

    fn leave(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("member thread");
    }
}

/// Waits until the members' assignments are disjoint, non-empty, cover `partitions`, are
/// fair (sizes differ by at most one, as every assignor used here makes them) and have held
/// for a second. KIP-848 moves partitions one revocation at a time, so an assignment that
/// merely covers everything can still be on its way: a partition that moves after the test
/// starts producing would be read twice (what was read past the last commit is read again by
/// the new owner, as Kafka's at-least-once promises).
fn wait_for_balance(members: &[&Member], partitions: i32) {
    const SETTLED: Duration = Duration::from_secs(1);
    let deadline = Instant::now() + TIMEOUT;
    let mut since: Option<(Instant, Vec<Vec<i32>>)> = None;
    loop {
        let assignments: Vec<Vec<i32>> = members.iter().map(|m| m.assignment()).collect();
        let mut all: Vec<i32> = assignments.iter().flatten().copied().collect();
        all.sort();
        let sizes = assignments.iter().map(Vec::len);
        let fair = sizes.clone().max().unwrap_or(0) - sizes.min().unwrap_or(0) <= 1;
        let balanced = fair
            && assignments.iter().all(|a| !a.is_empty())
            && all == (0..partitions).collect::<Vec<_>>();
        since = match since {
            Some((at, seen)) if balanced && seen == assignments => {
                if at.elapsed() >= SETTLED {
                    return;
                }
                Some((at, seen))
            }
            _ if balanced => Some((Instant::now(), assignments.clone())),
            _ => None,
        };
        assert!(
            Instant::now() < deadline,
            "group never balanced: {assignments:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn produce_values(addr: &str, topic: &str, values: impl Iterator<Item = String>) {
    let client = producer(addr, &[("acks", "all")]);
    let sends: Vec<_> = values
        .map(|v| enqueue(&client, FutureRecord::to(topic).key(&v).payload(&v)))
        .collect();
    for s in sends {
        delivered(s).await.expect("send");
    }
}

/// The members' `session.timeout.ms`.
const SESSION_TIMEOUT_MS: u64 = 6000;

/// Waits until `count` messages are seen, then for one more session timeout: a duplicate,
/// should there be one, comes from a member the group has not yet noticed is gone or a
/// rebalance that has not yet settled, and both show within that time.
fn wait_for_count_and_settle(seen: &Mutex<Vec<String>>, count: usize) {
    wait_for_count(seen, count);
    std::thread::sleep(Duration::from_millis(SESSION_TIMEOUT_MS));
}

fn wait_for_count(seen: &Mutex<Vec<String>>, count: usize) {
    let deadline = Instant::now() + TIMEOUT;
    while seen.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "consumed only {} of {count}",
            seen.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three members share six partitions and consume 30,000 messages exactly once; a fourth
/// joins and the partitions spread; one leaves and the rest resume from committed offsets.
async fn share_consume_and_rebalance(broker_args: &[&str], protocol: &[(&str, &str)]) {
    let broker = BrokerProcess::start_with(broker_args);
    let topic = "shared";
    create_topic(&broker.addr, topic, 6, &[]).await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let members: Vec<Member> = (0..3)
        .map(|_| Member::start(&broker.addr, "g", topic, seen.clone(), protocol))
        .collect();
    wait_for_balance(&members.iter().collect::<Vec<_>>(), 6);

    produce_values(&broker.addr, topic, (0..30_000).map(|i| format!("v{i}"))).await;
    wait_for_count_and_settle(&seen, 30_000);
    {
        let seen = seen.lock().unwrap();
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            seen.len(),
            30_000,
            "every message exactly once across the group"
        );
        assert_eq!(unique.len(), 30_000);
    }

    // A fourth member joins: partitions spread over all four.
    let fourth = Member::start(&broker.addr, "g", topic, seen.clone(), protocol);
    let mut members = members;
    members.push(fourth);
    wait_for_balance(&members.iter().collect::<Vec<_>>(), 6);

    // One leaves: its partitions move to the others, who resume from committed offsets.
    members.remove(0).leave();
    wait_for_balance(&members.iter().collect::<Vec<_>>(), 6);
    produce_values(
        &broker.addr,
        topic,
        (30_000..33_000).map(|i| format!("v{i}")),
    )
    .await;
    wait_for_count_and_settle(&seen, 33_000);
    let seen_now = seen.lock().unwrap().clone();
    let unique: HashSet<&String> = seen_now.iter().collect();
    assert_eq!(unique.len(), 33_000, "nothing lost");
    assert_eq!(
        seen_now.len(),
        33_000,
        "nothing consumed twice: the leaver committed before leaving"
    );
    for m in members {
        m.leave();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_group_splits_partitions_consumes_everything_once_and_rebalances_on_join_and_leave()
 {
    share_consume_and_rebalance(&["--set", "group.initial.rebalance.delay.ms=1000"], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_group_with_cooperative_incremental_rebalancing_does_the_same() {
    share_consume_and_rebalance(
        &["--set", "group.initial.rebalance.delay.ms=1000"],
        &[("partition.assignment.strategy", "cooperative-sticky")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_consumer_group_does_the_same() {
    share_consume_and_rebalance(
        &["--set", "group.consumer.heartbeat.interval.ms=500"],
        &[
            ("group.protocol", "consumer"),
            ("session.timeout.ms", ""),
            ("heartbeat.interval.ms", ""),
        ],
    )
    .await;
}

/// The members of a KIP-848 group as ConsumerGroupDescribe reports them: id → epoch.
fn described_members(addr: &str, group: &str) -> Vec<(String, i32)> {
    let request =
        kafka_protocol::messages::ConsumerGroupDescribeRequest::default().with_group_ids(vec![
            kafka_protocol::messages::GroupId(StrBytes::from_string(group.into())),
        ]);
    let response = raw_round_trip(addr, &request, 0);
    let described = &response.groups[0];
    assert_eq!(described.error_code, 0, "{:?}", described.error_message);
    described
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.member_epoch))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_member_keeps_its_partitions_across_broker_restarts() {
    let mut broker =
        BrokerProcess::start_with(&["--set", "group.consumer.heartbeat.interval.ms=500"]);
    let topic = "kip848-restarts";
    create_topic(&broker.addr, topic, 3, &[]).await;
    let kip_848 = [
        ("group.protocol", "consumer"),
        ("session.timeout.ms", ""),
        ("heartbeat.interval.ms", ""),
    ];
    let consumer: Counted = group_config(&broker.addr, "k", &kip_848)
        .create_with_context(RebalanceCounter::default())
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let consumed = std::cell::Cell::new(0usize);
    let consume_until = |n: usize| {
        let deadline = Instant::now() + TIMEOUT;
        while consumed.get() < n {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(50)) {
                consumed.set(consumed.get() + 1);
            }
            assert!(
                Instant::now() < deadline,
                "consumed {} of {n}",
                consumed.get()
            );
        }
    };
    produce_values(&broker.addr, topic, (0..30).map(|i| format!("a{i}"))).await;
    consume_until(30);
    assert_eq!(assignment_of(&consumer).len(), 3);
    let members = described_members(&broker.addr, "k");
    assert_eq!(members.len(), 1);
    assert!(members[0].1 > 0, "{members:?}");
    let rebalances = consumer.context().0.load(Ordering::SeqCst);

    for (round, crash) in [(1, false), (2, true)] {
        if crash {
            broker.kill9();
        } else {
            broker.stop();
        }
        broker.restart();
        // Straight away, before the member can have heartbeated to the new process.
        assert_eq!(
            described_members(&broker.addr, "k"),
            members,
            "round {round}: the group is back with the same member and epoch"
        );
        produce_values(
            &broker.addr,
            topic,
            (0..30).map(|i| format!("r{round}-{i}")),
        )
        .await;
        consume_until(30 * (round + 1));
        // Several heartbeats on the new process: none may fence the member.
        poll_all_for(&[&consumer], Duration::from_secs(2));
        assert_eq!(
            consumer.context().0.load(Ordering::SeqCst),
            rebalances,
            "round {round}: no partition was revoked or lost"
        );
        assert_eq!(assignment_of(&consumer).len(), 3);
        assert_eq!(described_members(&broker.addr, "k"), members);
    }
    broker.stop();
}

fn subscription(topic: &str) -> bytes::Bytes {
    let mut buf = bytes::BytesMut::new();
    buf.extend_from_slice(&0i16.to_be_bytes());
    ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_string(topic.into())])
        .encode(&mut buf, 0)
        .unwrap();
    buf.freeze()
}

fn round_trip<R: kafka_protocol::protocol::Request>(
    stream: &mut std::net::TcpStream,
    request: &R,
    version: i16,
) -> R::Response {
    stream
        .write_all(&request_frame(request, version, 1))
        .unwrap();
    decode_response::<R>(read_frame(stream).unwrap(), version).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_dies_without_leaving_loses_its_partitions_after_its_session_timeout() {
    let broker = BrokerProcess::start_with(&[
        "--set",
        "group.initial.rebalance.delay.ms=0",
        "--set",
        "group.min.session.timeout.ms=1000",
    ]);
    let topic = "deaths";
    create_topic(&broker.addr, topic, 4, &[]).await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let survivor = Member::start(&broker.addr, "d", topic, seen.clone(), &[]);
    wait_for_balance(&[&survivor], 4);

    // A second member joins over raw TCP, as a client process would, then dies: its socket
    // closes without a LeaveGroup.
    let mut stream = raw_connect(&broker.addr);
    let join = |member_id: &str| {
        JoinGroupRequest::default()
            .with_group_id(kafka_protocol::messages::GroupId(
                StrBytes::from_static_str("d"),
            ))
            .with_session_timeout_ms(2000)
            .with_rebalance_timeout_ms(10000)
            .with_member_id(StrBytes::from_string(member_id.into()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(subscription(topic)),
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("roundrobin"))
                    .with_metadata(subscription(topic)),
            ])
    };
    let first = round_trip(&mut stream, &join(""), 9);
    assert_eq!(
        first.error_code,
        kafka_protocol::ResponseError::MemberIdRequired.code()
    );
    let member_id = first.member_id.to_string();
    let joined = round_trip(&mut stream, &join(&member_id), 9);
    assert_eq!(joined.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(
            StrBytes::from_static_str("d"),
        ))
        .with_generation_id(joined.generation_id)
        .with_member_id(StrBytes::from_string(member_id.clone()));
    let synced = round_trip(&mut stream, &sync, 5);
    assert_eq!(synced.error_code, 0);
    assert!(
        !synced.assignment.is_empty(),
        "the raw member was given partitions"
    );
    let beat = HeartbeatRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(
            StrBytes::from_static_str("d"),
        ))
        .with_generation_id(joined.generation_id)
        .with_member_id(StrBytes::from_string(member_id.clone()));
    assert_eq!(round_trip(&mut stream, &beat, 4).error_code, 0);
    assert!(
        survivor.assignment().len() < 4,
        "the survivor gave up partitions to the new member"
    );
    let died = Instant::now();
    drop(stream);

    // Within the dead member's 2 s session timeout (plus a rebalance), the survivor owns all.
    wait_for_balance(&[&survivor], 4);
    assert!(
        died.elapsed() < Duration::from_secs(15),
        "took {:?}",
        died.elapsed()
    );
    produce_values(&broker.addr, topic, (0..1000).map(|i| format!("d{i}"))).await;
    wait_for_count(&seen, 1000);
    survivor.leave();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_and_metadata_survive_restarts_and_kill_dash_nine() {
    let mut broker = BrokerProcess::start();
    let topic = "committed";
    create_topic(&broker.addr, topic, 2, &[]).await;
    let commit = |addr: &str, partition: i32, offset: i64, metadata: &str| {
        let consumer = group_consumer(addr, "keeper", &[]);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
        tpl.find_partition(topic, partition)
            .unwrap()
            .set_metadata(metadata);
        consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    };
    let committed = |addr: &str| -> HashMap<i32, (i64, String)> {
        let consumer = group_consumer(addr, "keeper", &[]);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        tpl.add_partition(topic, 1);
        let got = consumer
            .committed_offsets(tpl, TIMEOUT)
            .expect("OffsetFetch");
        got.elements()
            .iter()
            .map(|e| {
                (
                    e.partition(),
                    (e.offset().to_raw().unwrap_or(-1), e.metadata().to_string()),
                )
            })
            .collect()
    };
    commit(&broker.addr, 0, 42, "first");
    commit(&broker.addr, 1, 7, "ü metadata with spaces");
    commit(&broker.addr, 0, 43, "second");
    let want = HashMap::from([
        (0, (43, "second".to_string())),
        (1, (7, "ü metadata with spaces".to_string())),
    ]);
    assert_eq!(committed(&broker.addr), want);
    broker.stop();
    broker.restart();
    assert_eq!(committed(&broker.addr), want, "after a clean restart");
    broker.kill9();
    broker.restart();
    assert_eq!(committed(&broker.addr), want, "after kill -9");
    broker.stop();
}

/// Counts the rebalances (assignments and revocations) a consumer goes through.
#[derive(Default)]
struct RebalanceCounter(std::sync::atomic::AtomicUsize);

impl rdkafka::client::ClientContext for RebalanceCounter {}
impl rdkafka::consumer::ConsumerContext for RebalanceCounter {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, _: &rdkafka::consumer::Rebalance<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Counted = BaseConsumer<RebalanceCounter>;

fn assignment_of(consumer: &Counted) -> Vec<i32> {
    consumer
        .assignment()
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Polls every consumer (each must be polled to take part in a rebalance) until `done`.
fn poll_all_until(consumers: &[&Counted], what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        for c in consumers {
            let _ = c.poll(Duration::from_millis(20));
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// Keeps polling for `period`, so heartbeats and any rebalance would be served.
fn poll_all_for(consumers: &[&Counted], period: Duration) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        for c in consumers {
            let _ = c.poll(Duration::from_millis(20));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarting_within_its_session_timeout_does_not_rebalance_the_others() {
    let broker = BrokerProcess::start_with(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let topic = "static";
    create_topic(&broker.addr, topic, 4, &[]).await;
    let member = |instance: Option<&str>| -> Counted {
        let mut config = client_config(&broker.addr);
        config
            .set("group.id", "st")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "500");
        if let Some(i) = instance {
            config.set("group.instance.id", i);
        }
        let c: Counted = config
            .create_with_context(RebalanceCounter::default())
            .unwrap();
        c.subscribe(&[topic]).unwrap();
        c
    };
    let first = member(Some("instance-1"));
    let other = member(None);
    poll_all_until(&[&first, &other], "both members assigned", || {
        !assignment_of(&first).is_empty() && !assignment_of(&other).is_empty()
    });
    poll_all_for(&[&first, &other], Duration::from_secs(2));
    let rebalances_before = other.context().0.load(Ordering::SeqCst);
    let others_before = assignment_of(&other);
    let static_before = assignment_of(&first);
    assert_eq!(others_before.len() + static_before.len(), 4);

    // The static member's process goes away (a static member does not send LeaveGroup)
    // and comes back with the same group.instance.id within its session timeout.
    drop(first);
    let second = member(Some("instance-1"));
    poll_all_until(
        &[&second, &other],
        "the restarted static member assigned",
        || !assignment_of(&second).is_empty(),
    );
    poll_all_for(&[&second, &other], Duration::from_secs(3));
    assert_eq!(
        other.context().0.load(Ordering::SeqCst),
        rebalances_before,
        "the other member saw no rebalance"
    );
    assert_eq!(assignment_of(&other), others_before);
    assert_eq!(
        assignment_of(&second),
        static_before,
        "the restarted static member got its old partitions back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_after_partial_consumption_matches_between_the_admin_api_and_the_cli() {
    let broker = BrokerProcess::start_with(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let topic = "lagging";
    create_topic(&broker.addr, topic, 3, &[]).await;
    let client = producer(&broker.addr, &[("acks", "all")]);
    for i in 0..300 {
        delivered(enqueue(
            &client,
            FutureRecord::<(), _>::to(topic)
                .partition(i % 3)
                .payload(&format!("{i}")),
        ))
        .await
        .expect("send");
    }
    // Consume 40 messages of partition 0 and 70 of partition 1, committing; none of partition 2.
    let consumer = group_consumer(&broker.addr, "lagger", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(40))
        .unwrap();
    tpl.add_partition_offset(topic, 1, Offset::Offset(70))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");

    // Admin API view: committed offsets and high watermarks.
    let mut wanted = TopicPartitionList::new();
    for p in 0..3 {
        wanted.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(wanted, TIMEOUT)
        .expect("OffsetFetch");
    let mut expected = HashMap::new();
    for p in 0..3 {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, TIMEOUT)
            .expect("watermarks");
        let c = committed
            .find_partition(topic, p)
            .unwrap()
            .offset()
            .to_raw()
            .filter(|o| *o >= 0);
        expected.insert(p, (c, high, c.map(|c| high - c)));
    }
    assert_eq!(expected[&0], (Some(40), 100, Some(60)));
    assert_eq!(expected[&1], (Some(70), 100, Some(30)));
    assert_eq!(expected[&2], (None, 100, None));

    // The CLI reports the same figures.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args([
            "group",
            "describe",
            "lagger",
            "-b",
            &broker.addr,
            "--output",
            "json",
        ])
        .output()
        .expect("running odradek group describe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    for row in json["partitions"].as_array().expect("partitions") {
        let p = row["partition"].as_i64().unwrap() as i32;
        let (c, end, lag) = expected[&p];
        assert_eq!(row["committed"].as_i64(), c, "partition {p}");
        assert_eq!(row["end_offset"].as_i64(), Some(end), "partition {p}");
        assert_eq!(row["lag"].as_i64(), lag, "partition {p}");
    }
    assert_eq!(json["total_lag"].as_i64(), Some(90));
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args(["group", "describe", "lagger", "-b", &broker.addr])
        .output()
        .unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["lagging", "0", "40", "100", "60", "-", "-", "-"]),
        "{text}"
    );
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args(["group", "describe", "no-such-group", "-b", &broker.addr])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("GROUP_ID_NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_listed_described_and_deleted_only_when_empty() {
    let broker = BrokerProcess::start_with(&["--set", "group.initial.rebalance.delay.ms=0"]);
    let topic = "admin-groups";
    create_topic(&broker.addr, topic, 2, &[]).await;
    produce_values(&broker.addr, topic, (0..100).map(|i| format!("a{i}"))).await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let member = Member::start(&broker.addr, "adm", topic, seen.clone(), &[]);
    wait_for_balance(&[&member], 2);
    wait_for_count(&seen, 100);

    let probe = consumer(&broker.addr, &[]);
    let groups = probe
        .client()
        .fetch_group_list(Some("adm"), TIMEOUT)
        .expect("ListGroups/DescribeGroups");
    let group = groups
        .groups()
        .iter()
        .find(|g| g.name() == "adm")
        .expect("group listed");
    assert_eq!(
        (group.state(), group.protocol_type(), group.members().len()),
        ("Stable", "consumer", 1)
    );
    assert_eq!(group.members()[0].client_host(), "/127.0.0.1");

    let described = raw_round_trip(
        &broker.addr,
        &kafka_protocol::messages::DescribeGroupsRequest::default()
            .with_groups(vec![kafka_protocol::messages::GroupId(
                StrBytes::from_static_str("adm"),
            )])
            .with_include_authorized_operations(true),
        5,
    );
    assert_eq!(
        described.groups[0].authorized_operations,
        (1 << 3) | (1 << 6) | (1 << 8),
        "READ, DELETE, DESCRIBE"
    );

    let admin = admin(&broker.addr);
    let opts = rdkafka::admin::AdminOptions::new();
    let refused = admin
        .delete_groups(&["adm"], &opts)
        .await
        .expect("DeleteGroups");
    assert_eq!(
        refused[0].as_ref().unwrap_err().1,
        rdkafka::types::RDKafkaErrorCode::NonEmptyGroup
    );

    member.leave();
    let deleted = admin
        .delete_groups(&["adm", "never-existed"], &opts)
        .await
        .expect("DeleteGroups");
    assert!(deleted[0].is_ok(), "{:?}", deleted[0]);
    assert_eq!(
        deleted[1].as_ref().unwrap_err().1,
        rdkafka::types::RDKafkaErrorCode::GroupIdNotFound
    );
    let after = group_consumer(&broker.addr, "adm", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let committed = after.committed_offsets(tpl, TIMEOUT).expect("OffsetFetch");
    assert_eq!(
        committed.find_partition(topic, 0).unwrap().offset(),
        Offset::Invalid,
        "offsets went with the group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offsets_topic_is_internal_and_closed_to_producers() {
    let broker = BrokerProcess::start();
    // Any group use creates it.
    let c = group_consumer(&broker.addr, "creator", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("__consumer_offsets", 0);
    let _ = c.committed_offsets(tpl, TIMEOUT);
    let metadata = raw_round_trip(
        &broker.addr,
        &kafka_protocol::messages::MetadataRequest::default().with_topics(None),
        12,
    );
    let offsets = metadata
        .topics
        .iter()
        .find(|t| {
            t.name
                .as_ref()
                .is_some_and(|n| n.as_str() == "__consumer_offsets")
        })
        .expect("__consumer_offsets exists");
    assert!(offsets.is_internal);
    assert_eq!(
        offsets.partitions.len(),
        50,
        "offsets.topic.num.partitions default"
    );
    let client = producer(&broker.addr, &[("retries", "0")]);
    let err = delivered(enqueue(
        &client,
        FutureRecord::<(), _>::to("__consumer_offsets")
            .partition(0)
            .payload("x"),
    ))
    .await
    .expect_err("clients cannot write to an internal topic");
    assert_eq!(
        err,
        rdkafka::error::KafkaError::MessageProduction(
            rdkafka::types::RDKafkaErrorCode::InvalidTopic
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_member_that_stops_heartbeating_loses_its_partitions_after_the_session_timeout() {
    use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    let broker = BrokerProcess::start_with(&[
        "--set",
        "group.consumer.heartbeat.interval.ms=300",
        "--set",
        "group.consumer.session.timeout.ms=2000",
    ]);
    let topic = "kip848-death";
    create_topic(&broker.addr, topic, 4, &[]).await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let protocol = [
        ("group.protocol", "consumer"),
        ("session.timeout.ms", ""),
        ("heartbeat.interval.ms", ""),
    ];
    let survivor = Member::start(&broker.addr, "k", topic, seen.clone(), &protocol);
    wait_for_balance(&[&survivor], 4);

    // A second member heartbeats over raw TCP until it owns partitions, then goes silent.
    let mut stream = raw_connect(&broker.addr);
    let member_id = "raw-member-0123456789abcdef";
    let mut epoch = 0;
    let mut owned: Vec<TopicPartitions> = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let request = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(kafka_protocol::messages::GroupId(
                StrBytes::from_static_str("k"),
            ))
            .with_member_id(StrBytes::from_static_str(member_id))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(10_000)
            .with_subscribed_topic_names(if epoch == 0 {
                Some(vec![kafka_protocol::messages::TopicName(
                    StrBytes::from_static_str(topic),
                )])
            } else {
                None
            })
            .with_topic_partitions(Some(owned.clone()));
        let response = round_trip(&mut stream, &request, 1);
        assert_eq!(response.error_code, 0, "{:?}", response.error_message);
        epoch = response.member_epoch;
        if let Some(a) = response.assignment {
            owned = a
                .topic_partitions
                .iter()
                .map(|t| {
                    TopicPartitions::default()
                        .with_topic_id(t.topic_id)
                        .with_partitions(t.partitions.clone())
                })
                .collect();
        }
        if owned.iter().any(|t| !t.partitions.is_empty()) && survivor.assignment().len() < 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the raw member never got partitions"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let died = Instant::now();
    drop(stream);
    wait_for_balance(&[&survivor], 4);
    assert!(
        died.elapsed() < Duration::from_secs(15),
        "took {:?}",
        died.elapsed()
    );
    produce_values(&broker.addr, topic, (0..500).map(|i| format!("k{i}"))).await;
    wait_for_count(&seen, 500);
    survivor.leave();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_an_empty_group_expire_after_offsets_retention_minutes() {
    let mut broker = BrokerProcess::start_with(&[
        "--set",
        "offsets.retention.minutes=1",
        "--set",
        "offsets.retention.check.interval.ms=500",
    ]);
    let topic = "retained";
    create_topic(&broker.addr, topic, 1, &[]).await;
    let committed_at = Instant::now();
    let consumer = group_consumer(&broker.addr, "short-lived", &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(5))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    let committed = |addr: &str| {
        let c = group_consumer(addr, "short-lived", &[]);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        c.committed_offsets(tpl, TIMEOUT)
            .expect("OffsetFetch")
            .find_partition(topic, 0)
            .unwrap()
            .offset()
    };
    assert_eq!(committed(&broker.addr), Offset::Offset(5));
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&broker.addr) != Offset::Invalid {
        assert!(Instant::now() < deadline, "offsets never expired");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        committed_at.elapsed() >= Duration::from_secs(59),
        "expired early, after {:?}",
        committed_at.elapsed()
    );
    broker.kill9();
    broker.restart();
    assert_eq!(
        committed(&broker.addr),
        Offset::Invalid,
        "the expiry is durable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_regex_subscription_picks_up_matching_topics_created_later() {
    let broker = BrokerProcess::start_with(&["--set", "group.consumer.heartbeat.interval.ms=300"]);
    create_topic(&broker.addr, "orders-eu", 2, &[]).await;
    create_topic(&broker.addr, "payments", 1, &[]).await;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let protocol = [
        ("group.protocol", "consumer"),
        ("session.timeout.ms", ""),
        ("heartbeat.interval.ms", ""),
    ];
    let consumer = group_consumer(&broker.addr, "re", &protocol);
    consumer
        .subscribe(&["^orders-.*"])
        .expect("regex subscription");
    let member = {
        let seen = seen.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    seen.lock().unwrap().push(format!(
                        "{}:{}",
                        m.topic(),
                        String::from_utf8_lossy(m.payload().unwrap())
                    ));
                }
            }
        });
        (stop, thread)
    };
    produce_values(&broker.addr, "orders-eu", (0..10).map(|i| format!("eu{i}"))).await;
    produce_values(&broker.addr, "payments", (0..10).map(|i| format!("p{i}"))).await;
    wait_for_count(&seen, 10);
    // A topic created after the subscription matches and is assigned too.
    create_topic(&broker.addr, "orders-us", 1, &[]).await;
    produce_values(&broker.addr, "orders-us", (0..5).map(|i| format!("us{i}"))).await;
    wait_for_count(&seen, 15);
    std::thread::sleep(Duration::from_millis(500));
    member.0.store(true, Ordering::Relaxed);
    member.1.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 15);
    assert!(
        seen.iter().all(|v| v.starts_with("orders-")),
        "payments is not subscribed: {seen:?}"
    );
}
