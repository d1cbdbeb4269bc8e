//! Crash schedule: acks=all producers with unique payloads and a committing consumer group
//! run while the broker is kill -9'd and restarted at random moments. After every restart
//! the log must hold every acknowledged record exactly once at its acknowledged offset, and
//! committed offsets must be durable and never ahead of the data.
//!
//! The normal run does a few crashes (about a minute). The long form:
//! `ODRADEK_CRASH_ROUNDS=200 cargo nextest run -p odradek --test crash_schedule`, and
//! `ODRADEK_CRASH_SEED=<seed printed by a failed run>` replays a schedule.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use support::*;

const TOPIC: &str = "crashes";
const GROUP: &str = "crash-group";
const PARTITIONS: i32 = 3;
const PRODUCERS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(30);

/// (partition, offset) → payload of every acknowledged record.
type Acked = Arc<Mutex<BTreeMap<(i32, i64), String>>>;
/// Partition → offset of the latest commit the broker acknowledged.
type Committed = Arc<Mutex<HashMap<i32, i64>>>;

/// xorshift64*: the schedule only needs to be varied and replayable.
struct Rng(u64);

impl Rng {
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

/// Sends records `p{id}-{seq}` in windows of 50 until told to stop. Failures (the broker
/// is down) are expected; `retries=0` keeps an unacknowledged record from being written a
/// second time by a retry, so every payload may appear at most once.
async fn run_producer(addr: String, id: usize, stop: Arc<AtomicBool>, acked: Acked) {
    let client = producer(
        &addr,
        &[
            ("acks", "all"),
            ("retries", "0"),
            ("message.timeout.ms", "3000"),
            ("reconnect.backoff.max.ms", "200"),
        ],
    );
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let sends: Vec<_> = (seq..seq + 50)
            .map(|s| {
                let value = format!("p{id}-{s}");
                let future = enqueue(&client, FutureRecord::<(), _>::to(TOPIC).payload(&value));
                (value, future)
            })
            .collect();
        seq += 50;
        let mut failed = false;
        for (value, future) in sends {
            match delivered(future).await {
                Ok(d) => {
                    let previous = acked
                        .lock()
                        .expect("acked")
                        .insert((d.partition, d.offset), value.clone());
                    assert!(
                        previous.is_none(),
                        "offset {}/{} acknowledged for {value} and {previous:?}",
                        d.partition,
                        d.offset
                    );
                }
                Err(_) => failed = true,
            }
        }
        // Paced, so the log each round re-reads whole stays small enough for long runs.
        let pause = if failed { 100 } else { 20 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// A group member that consumes and commits its position every 200 records (and when
/// idle), recording each commit the broker acknowledged.
fn run_group_member(addr: String, stop: Arc<AtomicBool>, committed: Committed) {
    let mut config = client_config(&addr);
    config
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("reconnect.backoff.max.ms", "200");
    let consumer: BaseConsumer = config.create().expect("group consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut since_commit = 0;
    while !stop.load(Ordering::Relaxed) {
        let idle = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                since_commit += 1;
                false
            }
            Some(Err(_)) => true,
            None => true,
        };
        if since_commit >= 200 || (idle && since_commit > 0) {
            let Ok(position) = consumer.position() else {
                continue;
            };
            let position: Vec<(i32, i64)> = position
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect();
            let mut tpl = TopicPartitionList::new();
            for &(p, o) in &position {
                tpl.add_partition_offset(TOPIC, p, Offset::Offset(o))
                    .expect("commit entry");
            }
            if !position.is_empty() && consumer.commit(&tpl, CommitMode::Sync).is_ok() {
                committed.lock().expect("committed").extend(position);
                since_commit = 0;
            }
        }
    }
}

/// Everything in one partition, offset → payload, read with a plain consumer.
fn read_partition(addr: &str, partition: i32, high: i64) -> BTreeMap<i64, String> {
    let consumer = consumer(addr, &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Beginning)
        .expect("assignment");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + TIMEOUT;
    let mut out = BTreeMap::new();
    let mut last = -1;
    while last + 1 < high {
        assert!(
            Instant::now() < deadline,
            "partition {partition}: read to {last} of {high}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                assert!(
                    m.offset() > last,
                    "partition {partition}: offset {} after {last}",
                    m.offset()
                );
                last = m.offset();
                let value = String::from_utf8(m.payload().expect("payload").to_vec())
                    .expect("utf8 payload");
                out.insert(m.offset(), value);
            }
            Some(Err(e)) => panic!("partition {partition}: consume error {e}"),
            None => {}
        }
    }
    out
}

/// The first record a fetch from `offset` returns: checks the index finds the batch.
fn first_record_from(addr: &str, partition: i32, offset: i64) -> (i64, String) {
    let m = consume(addr, TOPIC, partition, offset, 1, TIMEOUT).remove(0);
    let value = String::from_utf8(m.payload().expect("payload").to_vec()).expect("utf8");
    (m.offset(), value)
}

fn verify(
    addr: &str,
    acked: &BTreeMap<(i32, i64), String>,
    committed: &HashMap<i32, i64>,
    rng: &mut Rng,
) {
    let probe = consumer(addr, &[]);
    let mut payload_seen: HashMap<String, (i32, i64)> = HashMap::new();
    // Read before the log end: the group keeps consuming and committing meanwhile, so a
    // commit read later could be of records appended after the log end was read.
    let (tpl, group_consumer) = committed_offsets(addr);
    drop(group_consumer);
    for p in 0..PARTITIONS {
        let (_, high) = probe
            .fetch_watermarks(TOPIC, p, TIMEOUT)
            .expect("watermarks");
        let log = read_partition(addr, p, high);
        for (&offset, value) in &log {
            if let Some(other) = payload_seen.insert(value.clone(), (p, offset)) {
                panic!("{value} is stored twice: at {other:?} and at {p}/{offset}");
            }
        }
        let acked_here: Vec<(i64, &String)> = acked
            .range((p, i64::MIN)..=(p, i64::MAX))
            .map(|(&(_, o), v)| (o, v))
            .collect();
        for &(offset, value) in &acked_here {
            assert_eq!(
                log.get(&offset),
                Some(value),
                "partition {p}: acknowledged {value} at offset {offset} (log end {high})"
            );
        }
        // Fetching from an acknowledged offset (a sample) or a committed one starts exactly
        // there: the offset index agrees with the segments.
        let mut starts: Vec<i64> = (0..8)
            .filter(|_| !acked_here.is_empty())
            .map(|_| acked_here[rng.below(acked_here.len() as u64) as usize].0)
            .collect();
        let stored = tpl.find_partition(TOPIC, p).and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        });
        if let Some(c) = stored {
            assert!(
                c <= high,
                "partition {p}: committed offset {c} is ahead of the log end {high}"
            );
            if c < high {
                starts.push(c);
            }
        }
        if let Some(&acknowledged) = committed.get(&p) {
            assert!(
                stored.is_some_and(|c| c >= acknowledged),
                "partition {p}: commit of {acknowledged} was acknowledged, now {stored:?}"
            );
        }
        for start in starts {
            let got = first_record_from(addr, p, start);
            assert_eq!(
                (got.0, Some(&got.1)),
                (start, log.get(&start)),
                "partition {p}: a fetch from {start}"
            );
        }
    }
}

/// The group's committed offsets, read without joining the group.
fn committed_offsets(addr: &str) -> (TopicPartitionList, BaseConsumer) {
    let consumer = consumer(addr, &[("group.id", GROUP)]);
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(TOPIC, p);
    }
    let tpl = consumer
        .committed_offsets(tpl, TIMEOUT)
        .expect("OffsetFetch");
    (tpl, consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_and_commits_survive_random_kill_nine() {
    let rounds = env_number("ODRADEK_CRASH_ROUNDS").unwrap_or(5);
    let seed = env_number("ODRADEK_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64
            | 1
    });
    eprintln!("crash schedule: {rounds} rounds, ODRADEK_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let mut broker = BrokerProcess::start();
    // Small segments: crashes land around rolls and index writes too.
    create_topic(
        &broker.addr,
        TOPIC,
        PARTITIONS,
        &[("segment.bytes", "65536")],
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Acked::default();
    let committed = Committed::default();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            tokio::spawn(run_producer(
                broker.addr.clone(),
                id,
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();
    let member = {
        let (addr, stop, committed) = (broker.addr.clone(), stop.clone(), committed.clone());
        std::thread::spawn(move || run_group_member(addr, stop, committed))
    };

    for round in 1..=rounds {
        tokio::time::sleep(Duration::from_millis(500 + rng.below(2000))).await;
        tokio::task::block_in_place(|| broker.kill9());
        // Nothing can be acknowledged by a dead broker: this is what must have survived.
        let acked_now = acked.lock().expect("acked").clone();
        let committed_now = committed.lock().expect("committed").clone();
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        tokio::task::block_in_place(|| {
            broker.restart();
            verify(&broker.addr, &acked_now, &committed_now, &mut rng);
        });
        eprintln!(
            "round {round}: {} acknowledged records, commits {committed_now:?}: verified",
            acked_now.len()
        );
    }

    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.expect("producer task");
    }
    member.join().expect("group member");
    let acked = acked.lock().expect("acked").clone();
    let committed = committed.lock().expect("committed").clone();
    assert!(
        acked.len() > 1000 && !committed.is_empty(),
        "too little traffic to mean anything: {} records, commits {committed:?}",
        acked.len()
    );
    tokio::task::block_in_place(|| verify(&broker.addr, &acked, &committed, &mut rng));
    broker.assert_alive();
}
