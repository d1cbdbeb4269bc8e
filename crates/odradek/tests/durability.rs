//! What survives a stop, a restart, a kill -9 and a torn segment tail.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(30);

fn values(messages: &[rdkafka::message::OwnedMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8(payload(m).expect("value")).expect("utf8"))
        .collect()
}

fn high_watermark(addr: &str, topic: &str, partition: i32) -> i64 {
    consumer(addr, &[])
        .fetch_watermarks(topic, partition, TIMEOUT)
        .expect("watermarks")
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_keeps_every_record_and_offsets_continue() {
    let mut broker = BrokerProcess::start();
    let topic = "restart";
    create_topic(&broker.addr, topic, 3, &[]).await;
    let client = producer(&broker.addr, &[("acks", "all")]);
    let sends: Vec<_> = (0..3000)
        .map(|i| {
            enqueue(
                &client,
                FutureRecord::<(), _>::to(topic)
                    .partition(i % 3)
                    .payload(&format!("v{i}")),
            )
        })
        .collect();
    for send in sends {
        delivered(send).await.expect("send");
    }
    drop(client);
    broker.stop();
    assert!(
        broker.data_dir.join(".odradek_cleanshutdown").exists(),
        "clean shutdown leaves its marker"
    );
    broker.restart();
    assert!(
        !broker.data_dir.join(".odradek_cleanshutdown").exists(),
        "a running broker has no marker"
    );
    for p in 0..3 {
        let got = values(&consume(&broker.addr, topic, p, 0, 1000, TIMEOUT));
        let want: Vec<String> = (0..3000)
            .filter(|i| i % 3 == p)
            .map(|i| format!("v{i}"))
            .collect();
        assert_eq!(got, want, "partition {p}");
    }
    let producer = producer(&broker.addr, &[("acks", "all")]);
    let d = delivered(enqueue(
        &producer,
        FutureRecord::<(), _>::to(topic)
            .partition(0)
            .payload("after"),
    ))
    .await
    .expect("send after restart");
    assert_eq!(d.offset, 1000);
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_while_producing_loses_no_acknowledged_record() {
    let mut broker = BrokerProcess::start();
    let topic = "crash";
    create_topic(&broker.addr, topic, 4, &[]).await;
    // No retries: a batch whose ack was lost in the crash must not be written twice.
    let producer = Arc::new(producer(
        &broker.addr,
        &[
            ("acks", "all"),
            ("retries", "0"),
            ("message.timeout.ms", "10000"),
        ],
    ));
    let acked: Arc<Mutex<HashMap<String, (i32, i64)>>> = Arc::default();
    let sending = {
        let (producer, acked) = (producer.clone(), acked.clone());
        tokio::spawn(async move {
            let mut in_flight = Vec::new();
            for i in 0..200_000u32 {
                let value = format!("m{i}");
                let future = enqueue(
                    &producer,
                    FutureRecord::<(), _>::to(topic)
                        .partition((i % 4) as i32)
                        .payload(&value),
                );
                in_flight.push((value, future));
                if in_flight.len() == 200 {
                    for (value, future) in in_flight.drain(..) {
                        match delivered(future).await {
                            Ok(d) => {
                                acked.lock().unwrap().insert(value, (d.partition, d.offset));
                            }
                            Err(_) => return,
                        }
                    }
                }
            }
        })
    };
    // Crash mid-stream, once a good number of records are acknowledged.
    while acked.lock().unwrap().len() < 5000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sending.is_finished(), "producer stopped before the crash");
    }
    broker.kill9();
    sending.await.expect("producer task");
    drop(producer);
    let acked = acked.lock().unwrap().clone();
    broker.restart();
    let mut seen = HashMap::new();
    for p in 0..4 {
        let end = high_watermark(&broker.addr, topic, p);
        let messages = consume(&broker.addr, topic, p, 0, end as usize, TIMEOUT);
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(
                m.offset(),
                i as i64,
                "offsets are dense and ordered in partition {p}"
            );
            let value = String::from_utf8(payload(m).unwrap()).unwrap();
            assert!(
                seen.insert(value.clone(), (p, m.offset())).is_none(),
                "{value} stored twice"
            );
        }
    }
    for (value, at) in &acked {
        assert_eq!(
            seen.get(value),
            Some(at),
            "acknowledged {value} at {at:?} is missing or moved"
        );
    }
    // Per partition, acknowledged records keep the order they were sent in.
    for p in 0..4 {
        let mut order: Vec<(i64, u32)> = acked
            .iter()
            .filter(|(_, (part, _))| *part == p)
            .map(|(v, (_, o))| (*o, v[1..].parse().unwrap()))
            .collect();
        order.sort();
        assert!(
            order.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {p} reordered"
        );
    }
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_at_the_last_whole_batch() {
    let mut broker = BrokerProcess::start();
    let topic = "torn";
    create_topic(&broker.addr, topic, 1, &[]).await;
    let client = producer(&broker.addr, &[("acks", "all"), ("linger.ms", "0")]);
    // One record per batch: each send waits for the previous ack.
    for i in 0..20 {
        delivered(enqueue(
            &client,
            FutureRecord::<(), _>::to(topic).payload(&format!("t{i}")),
        ))
        .await
        .expect("send");
    }
    drop(client);
    broker.kill9();
    let segment = segment_files(&broker.partition_dir(topic, 0))
        .pop()
        .expect("a segment");
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    broker.restart();
    assert!(
        broker.log().contains("truncating segment tail"),
        "recovery logs the cut:\n{}",
        broker.log()
    );
    assert_eq!(high_watermark(&broker.addr, topic, 0), 19);
    let got = values(&consume(&broker.addr, topic, 0, 0, 19, TIMEOUT));
    assert_eq!(got, (0..19).map(|i| format!("t{i}")).collect::<Vec<_>>());
    let producer = producer(&broker.addr, &[("acks", "all")]);
    let d = delivered(enqueue(
        &producer,
        FutureRecord::<(), _>::to(topic).payload("new"),
    ))
    .await
    .expect("send");
    assert_eq!(d.offset, 19, "the cut batch's offset is reused");
    broker.stop();
}

/// The next offset a `recovery-point` file vouches for (0 while there is none): after its
/// version (2 bytes) and CRC (4), the base offset and position (8 each), then this.
fn checkpointed_next_offset(path: &std::path::Path) -> i64 {
    std::fs::read(path)
        .ok()
        .and_then(|b| Some(i64::from_be_bytes(b.get(22..30)?.try_into().ok()?)))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_recovery_resumes_from_the_recovery_point() {
    let mut broker =
        BrokerProcess::start_with(&["--set", "log.flush.offset.checkpoint.interval.ms=200"]);
    let topic = "checkpointed";
    create_topic(&broker.addr, topic, 1, &[]).await;
    let client = producer(&broker.addr, &[("acks", "1")]);
    let send = |range: std::ops::Range<i32>| {
        let sends: Vec<_> = range
            .map(|i| {
                enqueue(
                    &client,
                    FutureRecord::<(), _>::to(topic).payload(&format!("r{i}")),
                )
            })
            .collect();
        async move {
            for s in sends {
                delivered(s).await.expect("send");
            }
        }
    };
    send(0..500).await;
    // Let a checkpoint cover those, then write more that only recovery can vouch for.
    let checkpoint = broker.partition_dir(topic, 0).join("recovery-point");
    let deadline = std::time::Instant::now() + TIMEOUT;
    while checkpointed_next_offset(&checkpoint) < 500 {
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery point covered the first 500 records"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send(500..700).await;
    broker.kill9();
    broker.restart();
    assert!(
        broker
            .log()
            .contains("recovering the active segment from its recovery point"),
        "{}",
        broker.log()
    );
    let got = values(&consume(&broker.addr, topic, 0, 0, 700, TIMEOUT));
    assert_eq!(got, (0..700).map(|i| format!("r{i}")).collect::<Vec<_>>());
    // Reads starting inside the checkpointed part and after it find their records.
    for from in [123, 499, 500, 650] {
        let first = values(&consume(&broker.addr, topic, 0, from, 1, TIMEOUT));
        assert_eq!(first, [format!("r{from}")]);
    }
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_recovered_on_several_threads_each_get_their_own_log_back() {
    let mut broker = BrokerProcess::start_with(&["--set", "num.recovery.threads.per.data.dir=3"]);
    // Different partition counts and a different number of records per partition, so a log
    // opened under the wrong topic or index shows in its contents and its end offset.
    let layout = [("recover-a", 3), ("recover-b", 1), ("recover-c", 4)];
    let client = producer(&broker.addr, &[("acks", "all")]);
    let mut sends = Vec::new();
    for (topic, partitions) in layout {
        create_topic(&broker.addr, topic, partitions, &[]).await;
        for p in 0..partitions {
            for i in 0..(10 + 7 * p) {
                sends.push(enqueue(
                    &client,
                    FutureRecord::<(), _>::to(topic)
                        .partition(p)
                        .payload(&format!("{topic}/{p}/{i}")),
                ));
            }
        }
    }
    for send in sends {
        delivered(send).await.expect("send");
    }
    drop(client);
    broker.kill9();
    broker.restart();
    for (topic, partitions) in layout {
        for p in 0..partitions {
            let count = 10 + 7 * p;
            assert_eq!(high_watermark(&broker.addr, topic, p), i64::from(count));
            let got = values(&consume(&broker.addr, topic, p, 0, count as usize, TIMEOUT));
            let want: Vec<String> = (0..count).map(|i| format!("{topic}/{p}/{i}")).collect();
            assert_eq!(got, want, "{topic}/{p}");
        }
    }
    broker.stop();
}
