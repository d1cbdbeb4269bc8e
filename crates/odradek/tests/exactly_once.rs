//! Idempotent and transactional producers (KIP-98) with librdkafka: no duplicates under
//! retries, read_committed isolation, atomic offsets with output, fencing, and kill -9.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A TCP proxy that cuts every connection after a pseudo-random amount of client traffic,
/// a few milliseconds after forwarding it: the broker has acted on the requests but the
/// client never sees the responses, so it must retry them.
async fn start_chaos_proxy(listener: std::net::TcpListener, upstream: String) -> Arc<AtomicUsize> {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let cuts = Arc::new(AtomicUsize::new(0));
    let counter = cuts.clone();
    tokio::spawn(async move {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let budget = 10_000 + (seed >> 33) as usize % 40_000;
            let cuts = counter.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut sent = 0usize;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                    if sent >= budget {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        cuts.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    cuts
}

fn values(messages: &[OwnedMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8(payload(m).unwrap()).unwrap())
        .collect()
}

/// Everything a consumer with `isolation` reads from `topic`-`partition` within `wait`.
fn read_all(
    addr: &str,
    topic: &str,
    partition: i32,
    isolation: &str,
    wait: Duration,
) -> Vec<String> {
    let consumer = consumer(addr, &[("isolation.level", isolation)]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.expect("consume").detach());
        }
    }
    values(&out)
}

fn transactional_producer(addr: &str, id: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = vec![("transactional.id", id), ("enable.idempotence", "true")];
    config.extend_from_slice(extra);
    let p = producer(addr, &config);
    p.init_transactions(Timeout::After(TIMEOUT))
        .expect("init_transactions");
    p
}

async fn send_all(p: &FutureProducer, topic: &str, records: &[(i32, String)]) {
    let futures: Vec<_> = records
        .iter()
        .map(|(partition, v)| {
            enqueue(
                p,
                FutureRecord::<(), _>::to(topic)
                    .partition(*partition)
                    .payload(v.as_str()),
            )
        })
        .collect();
    for f in futures {
        delivered(f).await.expect("delivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_through_dropped_connections_write_each_record_once_in_order() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap().to_string();
    let advertised = format!("advertised.listeners=PLAINTEXT://{proxy}");
    let broker = BrokerProcess::start_with(&["--set", &advertised]);
    let cuts = start_chaos_proxy(listener, broker.addr.clone()).await;
    create_topic(&broker.addr, "idempotent", 3, &[]).await;
    let p = producer(
        &proxy,
        &[
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "120000"),
            ("batch.num.messages", "50"),
            ("linger.ms", "2"),
            ("reconnect.backoff.max.ms", "200"),
            ("retry.backoff.ms", "20"),
        ],
    );
    let per_partition = 800;
    let records: Vec<(i32, String)> = (0..per_partition)
        .flat_map(|i| (0..3).map(move |p| (p, format!("p{p}-{i:06}-{}", "x".repeat(100)))))
        .collect();
    send_all(&p, "idempotent", &records).await;
    assert!(
        cuts.load(Ordering::SeqCst) >= 3,
        "the proxy cut only {} connections: too few retries to test",
        cuts.load(Ordering::SeqCst)
    );
    for partition in 0..3 {
        let got = values(&consume(
            &broker.addr,
            "idempotent",
            partition,
            0,
            per_partition,
            TIMEOUT,
        ));
        let want: Vec<String> = records
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(got, want, "partition {partition}: duplicates or reordering");
        // Nothing beyond them: a duplicate appended at the end would show here.
        let more = read_all(
            &broker.addr,
            "idempotent",
            partition,
            "read_uncommitted",
            Duration::from_millis(1500),
        );
        assert_eq!(
            more.len(),
            per_partition,
            "partition {partition} holds extra records"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sees_only_committed_transactions_and_waits_for_open_ones() {
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "txn", 3, &[]).await;
    let p = transactional_producer(&broker.addr, "txn-abc", &[]);
    // A, B, C interleaved over three partitions; B aborts.
    for (name, commit) in [("A", true), ("B", false), ("C", true)] {
        p.begin_transaction().unwrap();
        let records: Vec<(i32, String)> = (0..30).map(|i| (i % 3, format!("{name}{i}"))).collect();
        send_all(&p, "txn", &records).await;
        if commit {
            p.commit_transaction(Timeout::After(TIMEOUT)).unwrap();
        } else {
            p.abort_transaction(Timeout::After(TIMEOUT)).unwrap();
        }
    }
    let expected = |names: &[&str], partition: i32| -> Vec<String> {
        names
            .iter()
            .flat_map(|n| {
                (0..30)
                    .filter(move |i| i % 3 == partition)
                    .map(move |i| format!("{n}{i}"))
            })
            .collect()
    };
    for partition in 0..3 {
        let committed = read_all(
            &broker.addr,
            "txn",
            partition,
            "read_committed",
            Duration::from_secs(2),
        );
        assert_eq!(committed, expected(&["A", "C"], partition));
        let all = read_all(
            &broker.addr,
            "txn",
            partition,
            "read_uncommitted",
            Duration::from_secs(2),
        );
        assert_eq!(all, expected(&["A", "B", "C"], partition));
    }

    // An open transaction holds read_committed readers back at its first offset.
    p.begin_transaction().unwrap();
    send_all(&p, "txn", &[(0, "D0".to_string()), (0, "D1".to_string())]).await;
    let held = read_all(
        &broker.addr,
        "txn",
        0,
        "read_committed",
        Duration::from_secs(2),
    );
    assert_eq!(held, expected(&["A", "C"], 0));
    let uncommitted = read_all(
        &broker.addr,
        "txn",
        0,
        "read_uncommitted",
        Duration::from_secs(2),
    );
    assert_eq!(uncommitted.last().map(String::as_str), Some("D1"));
    p.commit_transaction(Timeout::After(TIMEOUT)).unwrap();
    let released = read_all(
        &broker.addr,
        "txn",
        0,
        "read_committed",
        Duration::from_secs(2),
    );
    assert_eq!(&released[released.len() - 2..], ["D0", "D1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_moves_output_and_offsets_together() {
    let broker = BrokerProcess::start_with(&["--set", "group.initial.rebalance.delay.ms=0"]);
    create_topic(&broker.addr, "ctp-in", 1, &[]).await;
    create_topic(&broker.addr, "ctp-out", 1, &[]).await;
    let input = producer(&broker.addr, &[]);
    send_all(
        &input,
        "ctp-in",
        &(0..40).map(|i| (0, format!("m{i}"))).collect::<Vec<_>>(),
    )
    .await;

    let mut config = client_config(&broker.addr);
    config
        .set("group.id", "ctp-group")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    let source: BaseConsumer = config.create().unwrap();
    source.subscribe(&["ctp-in"]).unwrap();
    let sink = transactional_producer(&broker.addr, "ctp", &[]);

    // Two committed rounds of 10 and one aborted round.
    let mut processed = 0;
    for round in 0..3 {
        let mut batch = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while batch.len() < 10 {
            assert!(Instant::now() < deadline, "input did not arrive");
            if let Some(m) = source.poll(Duration::from_millis(100)) {
                batch.push(m.unwrap().detach());
            }
        }
        sink.begin_transaction().unwrap();
        let out: Vec<(i32, String)> = batch
            .iter()
            .map(|m| {
                (
                    0,
                    format!("out-{}", String::from_utf8_lossy(m.payload().unwrap())),
                )
            })
            .collect();
        send_all(&sink, "ctp-out", &out).await;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                "ctp-in",
                0,
                Offset::Offset(batch.last().unwrap().offset() + 1),
            )
            .unwrap();
        sink.send_offsets_to_transaction(
            &offsets,
            &source.group_metadata().unwrap(),
            Timeout::After(TIMEOUT),
        )
        .unwrap();
        if round < 2 {
            sink.commit_transaction(Timeout::After(TIMEOUT)).unwrap();
            processed += batch.len();
        } else {
            sink.abort_transaction(Timeout::After(TIMEOUT)).unwrap();
        }
    }
    let committed = source
        .committed(Timeout::After(TIMEOUT))
        .unwrap()
        .find_partition("ctp-in", 0)
        .unwrap()
        .offset();
    assert_eq!(
        committed,
        Offset::Offset(processed as i64),
        "offsets of the aborted round leaked"
    );
    let output = read_all(
        &broker.addr,
        "ctp-out",
        0,
        "read_committed",
        Duration::from_secs(2),
    );
    let want: Vec<String> = (0..processed).map(|i| format!("out-m{i}")).collect();
    assert_eq!(output, want);

    // The committed offset survives a restart; the aborted round's does not reappear.
    drop(source);
    let mut broker = broker;
    broker.stop();
    broker.restart();
    let mut config = client_config(&broker.addr);
    config.set("group.id", "ctp-group");
    let fresh: BaseConsumer = config.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("ctp-in", 0);
    let after = fresh
        .committed_offsets(tpl, Timeout::After(TIMEOUT))
        .unwrap()
        .find_partition("ctp-in", 0)
        .unwrap()
        .offset();
    assert_eq!(after, Offset::Offset(processed as i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "fenced", 1, &[]).await;
    let zombie = transactional_producer(&broker.addr, "shared-id", &[]);
    zombie.begin_transaction().unwrap();
    send_all(&zombie, "fenced", &[(0, "zombie".to_string())]).await;

    let fresh = transactional_producer(&broker.addr, "shared-id", &[]);
    fresh.begin_transaction().unwrap();
    send_all(&fresh, "fenced", &[(0, "fresh".to_string())]).await;
    fresh.commit_transaction(Timeout::After(TIMEOUT)).unwrap();

    let error = zombie
        .commit_transaction(Timeout::After(TIMEOUT))
        .expect_err("the fenced producer must not commit");
    assert!(
        error.to_string().to_lowercase().contains("fenced"),
        "unexpected error: {error}"
    );
    let committed = read_all(
        &broker.addr,
        "fenced",
        0,
        "read_committed",
        Duration::from_secs(2),
    );
    assert_eq!(committed, ["fresh"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_committed_transactions_and_aborts_open_ones_after_their_timeout() {
    let mut broker = BrokerProcess::start_with(&[
        "--set",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=500",
    ]);
    create_topic(&broker.addr, "crash-txn", 2, &[]).await;
    let committed: Vec<(i32, String)> = (0..20).map(|i| (i % 2, format!("ok{i}"))).collect();
    let p = transactional_producer(
        &broker.addr,
        "crashy",
        &[
            ("transaction.timeout.ms", "3000"),
            ("message.timeout.ms", "3000"),
        ],
    );
    p.begin_transaction().unwrap();
    send_all(&p, "crash-txn", &committed).await;
    p.commit_transaction(Timeout::After(TIMEOUT)).unwrap();
    p.begin_transaction().unwrap();
    send_all(
        &p,
        "crash-txn",
        &[(0, "open0".to_string()), (1, "open1".to_string())],
    )
    .await;
    broker.kill9();
    drop(p);
    broker.restart();

    // After the restart the open transaction still holds readers back, and no one sees it.
    let plain = producer(&broker.addr, &[]);
    send_all(
        &plain,
        "crash-txn",
        &[(0, "after0".to_string()), (1, "after1".to_string())],
    )
    .await;
    let deadline = Instant::now() + TIMEOUT;
    let mut seen: HashMap<i32, Vec<String>> = HashMap::new();
    loop {
        for partition in 0..2 {
            seen.insert(
                partition,
                read_all(
                    &broker.addr,
                    "crash-txn",
                    partition,
                    "read_committed",
                    Duration::from_secs(1),
                ),
            );
        }
        for values in seen.values() {
            assert!(
                !values.iter().any(|v| v.starts_with("open")),
                "an uncommitted record became visible: {values:?}"
            );
        }
        let released = (0..2).all(|p| seen[&p].last().is_some_and(|v| v.starts_with("after")));
        if released {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the open transaction was never aborted: {seen:?}"
        );
    }
    for partition in 0..2 {
        let mut want: Vec<String> = committed
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, v)| v.clone())
            .collect();
        want.push(format!("after{partition}"));
        assert_eq!(seen[&partition], want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_views_describe_transactions_and_producers_and_idle_ids_expire() {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::{
        DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, TopicName,
        TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    let broker = BrokerProcess::start_with(&[
        "--set",
        "transactional.id.expiration.ms=3000",
        "--set",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=300",
    ]);
    create_topic(&broker.addr, "viewed", 2, &[]).await;
    let p = transactional_producer(&broker.addr, "viewed-txn", &[]);
    p.begin_transaction().unwrap();
    send_all(&p, "viewed", &[(1, "v".to_string())]).await;

    let describe = || {
        let request =
            DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
                StrBytes::from_static_str("viewed-txn"),
            )]);
        raw_round_trip(&broker.addr, &request, 0).transaction_states[0].clone()
    };
    let state = describe();
    assert_eq!(state.error_code, 0);
    assert_eq!(state.transaction_state.as_str(), "Ongoing");
    assert_eq!(state.topics.len(), 1);
    assert_eq!(state.topics[0].topic.as_str(), "viewed");
    assert_eq!(state.topics[0].partitions, [1]);

    let listed = raw_round_trip(
        &broker.addr,
        &ListTransactionsRequest::default()
            .with_state_filters(vec![StrBytes::from_static_str("Ongoing")]),
        1,
    );
    assert_eq!(listed.error_code, 0);
    assert_eq!(
        listed
            .transaction_states
            .iter()
            .map(|t| t.transactional_id.as_str())
            .collect::<Vec<_>>(),
        ["viewed-txn"]
    );

    let producers = raw_round_trip(
        &broker.addr,
        &DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(TopicName(StrBytes::from_static_str("viewed")))
                .with_partition_indexes(vec![1]),
        ]),
        0,
    );
    let active = &producers.topics[0].partitions[0].active_producers;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].producer_id, state.producer_id);
    assert_eq!(active[0].current_txn_start_offset, 0);

    p.commit_transaction(Timeout::After(TIMEOUT)).unwrap();
    assert_eq!(describe().transaction_state.as_str(), "CompleteCommit");
    drop(p);
    // transactional.id.expiration.ms after its last use, the id is forgotten.
    let deadline = Instant::now() + TIMEOUT;
    while describe().error_code == 0 {
        assert!(
            Instant::now() < deadline,
            "the idle transactional id never expired"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        describe().error_code,
        kafka_protocol::ResponseError::TransactionalIdNotFound.code()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_enforces_sequences_epochs_and_transaction_membership() {
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, TopicName, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    let broker = BrokerProcess::start();
    create_topic(&broker.addr, "raw-idem", 1, &[]).await;
    let addr = broker.addr.as_str();
    let produce = |topic, (pid, epoch, sequence): (i64, i16, i32), transactional: bool| {
        let request = one_record_produce(
            topic,
            &format!("seq-{sequence}"),
            (pid, epoch, sequence),
            transactional.then_some("raw-txn"),
        );
        let response = raw_round_trip(addr, &request, 9);
        let p = &response.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    let ok = |code: i16| code == 0;

    // Idempotence: duplicates keep their offset, gaps and old epochs are refused.
    let init = raw_round_trip(
        addr,
        &InitProducerIdRequest::default().with_transaction_timeout_ms(-1),
        4,
    );
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    let first = produce("raw-idem", (pid, epoch, 0), false);
    let second = produce("raw-idem", (pid, epoch, 1), false);
    assert!(ok(first.0) && ok(second.0));
    assert_eq!(
        produce("raw-idem", (pid, epoch, 0), false),
        first,
        "a retried batch keeps its offset"
    );
    assert_eq!(
        produce("raw-idem", (pid, epoch, 5), false).0,
        ResponseError::OutOfOrderSequenceNumber.code()
    );
    assert!(
        ok(produce("raw-idem", (pid, epoch + 1, 0), false).0),
        "a bumped epoch starts at 0"
    );
    assert_eq!(
        produce("raw-idem", (pid, epoch, 2), false).0,
        ResponseError::InvalidProducerEpoch.code()
    );

    // Transactions: only partitions added to the open transaction take its writes.
    let too_long = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("raw-txn"))))
        .with_transaction_timeout_ms(3_600_000);
    assert_eq!(
        raw_round_trip(addr, &too_long, 4).error_code,
        ResponseError::InvalidTransactionTimeout.code()
    );
    let init = raw_round_trip(addr, &too_long.with_transaction_timeout_ms(60_000), 4);
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    assert_eq!(
        produce("raw-idem", (pid, epoch, 0), true).0,
        ResponseError::InvalidTxnState.code(),
        "a transactional write before AddPartitionsToTxn"
    );
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str("raw-txn")))
        .with_v3_and_below_producer_id(init.producer_id)
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("raw-idem")))
                .with_partitions(vec![0]),
        ]);
    let added = raw_round_trip(addr, &add, 3);
    assert_eq!(
        added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    assert!(ok(produce("raw-idem", (pid, epoch, 0), true).0));
    let end = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_static_str("raw-txn")))
        .with_producer_id(init.producer_id)
        .with_producer_epoch(epoch)
        .with_committed(true);
    assert_eq!(raw_round_trip(addr, &end, 3).error_code, 0);
    assert_eq!(
        raw_round_trip(addr, &end, 3).error_code,
        0,
        "a retried commit succeeds"
    );
    assert_eq!(
        produce("raw-idem", (pid, epoch, 1), true).0,
        ResponseError::InvalidTxnState.code(),
        "a late write after the commit must not start a transaction on its own"
    );
    assert_eq!(
        raw_round_trip(addr, &end.with_producer_epoch(epoch - 1), 3).error_code,
        ResponseError::ProducerFenced.code()
    );
}

/// A plain offset commit written while a transaction holding an offset for the same group
/// and partition is open is later in `__consumer_offsets` than the transaction's: it stays
/// when the transaction commits, as in Kafka; a transactional commit written after a plain
/// one replaces it. Each outcome also holds after a restart, which replays the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_later_record_wins_between_plain_and_transactional_offset_commits() {
    let mut broker = BrokerProcess::start();
    create_topic(&broker.addr, "mixed-in", 1, &[]).await;
    let mut config = client_config(&broker.addr);
    config
        .set("group.id", "mixed")
        .set("enable.auto.commit", "false");
    let at = |offset: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("mixed-in", 0, Offset::Offset(offset))
            .unwrap();
        tpl
    };
    let committed = |consumer: &BaseConsumer| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("mixed-in", 0);
        consumer
            .committed_offsets(tpl, Timeout::After(TIMEOUT))
            .unwrap()
            .find_partition("mixed-in", 0)
            .unwrap()
            .offset()
    };
    // (transactional offset, plain offset, plain written while the transaction is open,
    // transaction commits, expected)
    let rounds = [
        (5, 9, true, true, 9),
        (15, 12, false, true, 15),
        (20, 22, true, false, 22),
    ];
    for (round, (txn_at, plain_at, plain_inside, commit, expected)) in
        rounds.into_iter().enumerate()
    {
        let group: BaseConsumer = config.create().unwrap();
        let txn = transactional_producer(&broker.addr, "mixed-writer", &[]);
        if !plain_inside {
            group.commit(&at(plain_at), CommitMode::Sync).unwrap();
        }
        txn.begin_transaction().unwrap();
        txn.send_offsets_to_transaction(
            &at(txn_at),
            &group.group_metadata().unwrap(),
            Timeout::After(TIMEOUT),
        )
        .unwrap();
        if plain_inside {
            group.commit(&at(plain_at), CommitMode::Sync).unwrap();
        }
        if commit {
            txn.commit_transaction(Timeout::After(TIMEOUT)).unwrap();
        } else {
            txn.abort_transaction(Timeout::After(TIMEOUT)).unwrap();
        }
        assert_eq!(committed(&group), Offset::Offset(expected), "round {round}");
        drop((group, txn));
        if round % 2 == 0 {
            broker.stop();
        } else {
            broker.kill9();
        }
        broker.restart();
        let fresh: BaseConsumer = config.create().unwrap();
        assert_eq!(
            committed(&fresh),
            Offset::Offset(expected),
            "round {round}, replayed after a restart"
        );
    }
}
