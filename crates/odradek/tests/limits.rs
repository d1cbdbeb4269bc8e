//! Bounded resources: connection limits and idle (and half-sent) connections.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiVersionsRequest;
use rdkafka::consumer::Consumer;
use support::*;

fn api_versions_answered(stream: &mut std::net::TcpStream) -> bool {
    if stream
        .write_all(&request_frame(&ApiVersionsRequest::default(), 0, 1))
        .is_err()
    {
        return false;
    }
    read_frame(stream).is_ok()
}

/// Whether the broker closed the connection within `within`.
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn connections_over_the_per_ip_and_total_limits_are_closed_at_once() {
    let broker = BrokerProcess::start_with(&["--set", "max.connections.per.ip=2"]);
    let mut first = raw_connect(&broker.addr);
    let mut second = raw_connect(&broker.addr);
    assert!(api_versions_answered(&mut first) && api_versions_answered(&mut second));
    let mut third = raw_connect(&broker.addr);
    assert!(
        closed_within(&mut third, Duration::from_secs(5)),
        "a third connection from the same IP is refused"
    );
    assert!(
        api_versions_answered(&mut first),
        "existing connections keep working"
    );
    drop(second);
    // The freed place is reusable once the broker has seen the close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = raw_connect(&broker.addr);
        if api_versions_answered(&mut again) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed connection slot was never reusable"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(first);

    let total = BrokerProcess::start_with(&["--set", "max.connections=1"]);
    let mut only = raw_connect(&total.addr);
    assert!(api_versions_answered(&mut only));
    let mut refused = raw_connect(&total.addr);
    assert!(closed_within(&mut refused, Duration::from_secs(5)));
}

#[test]
fn idle_and_half_sent_connections_are_closed_while_busy_ones_stay() {
    let broker = BrokerProcess::start_with(&["--set", "connections.max.idle.ms=1000"]);
    let mut idle = raw_connect(&broker.addr);
    assert!(api_versions_answered(&mut idle));
    // Slowloris: a frame that claims 100 bytes, of which 10 arrive, then nothing.
    let mut slow = raw_connect(&broker.addr);
    slow.write_all(&100i32.to_be_bytes()).unwrap();
    slow.write_all(&[0u8; 10]).unwrap();
    let started = Instant::now();
    // A client that keeps making requests is not idle.
    let busy = consumer(&broker.addr, &[]);
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        busy.fetch_metadata(None, Duration::from_secs(5))
            .expect("a busy client keeps being served");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "the idle connection was closed"
    );
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)),
        "the half-sent request was closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(broker.log().contains("closing idle connection"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_queued_max_request_bytes_slows_clients_down_but_loses_nothing() {
    use rdkafka::producer::FutureRecord;
    let broker = BrokerProcess::start_with(&["--set", "queued.max.request.bytes=65536"]);
    create_topic(&broker.addr, "throttled", 4, &[]).await;
    let clients: Vec<_> = (0..3)
        .map(|_| producer(&broker.addr, &[("acks", "all"), ("batch.size", "200000")]))
        .collect();
    let value = vec![b'q'; 1000];
    let mut sends = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for i in 0..1000 {
            sends.push(enqueue(
                client,
                FutureRecord::<(), _>::to("throttled")
                    .partition(((c + i) % 4) as i32)
                    .payload(&value),
            ));
        }
    }
    for s in sends {
        delivered(s)
            .await
            .expect("every request is served eventually");
    }
    let c = consumer(&broker.addr, &[]);
    let total: i64 = (0..4)
        .map(|p| {
            c.fetch_watermarks("throttled", p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum();
    assert_eq!(total, 3000);
}

/// `fetch.max.bytes` (KIP-541) bounds every response whatever the request asks: the first
/// batch still comes whole when it is larger, a `min_bytes` that only more data than fits
/// could meet does not hold the fetch until `max_wait_ms`, and a consumer asking
/// librdkafka's default 50 MiB reads everything in capped responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_max_bytes_caps_every_response_and_consumers_still_read_everything() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use rdkafka::producer::FutureRecord;

    const CAP: usize = 64 * 1024;
    let broker = BrokerProcess::start_with(&["--set", &format!("fetch.max.bytes={CAP}")]);
    create_topic(&broker.addr, "capped", 4, &[]).await;
    // One record per batch: partition 0 starts with a batch larger than the cap.
    let client = producer(&broker.addr, &[("acks", "all"), ("linger.ms", "0")]);
    let big = vec![b'b'; 100 * 1024];
    let small = vec![b's'; 30 * 1024];
    let mut expected = [0usize; 4];
    for (p, value) in std::iter::once((0, &big)).chain(
        (0..4)
            .flat_map(|p| (0..5).map(move |_| p))
            .map(|p| (p, &small)),
    ) {
        delivered(enqueue(
            &client,
            FutureRecord::<(), _>::to("capped")
                .partition(p)
                .payload(value),
        ))
        .await
        .expect("send");
        expected[p as usize] += 1;
    }

    let fetch = |offsets: [i64; 4], min_bytes: i32, max_wait_ms: i32| {
        let partitions = offsets
            .iter()
            .enumerate()
            .map(|(p, &offset)| {
                FetchPartition::default()
                    .with_partition(p as i32)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)
            })
            .collect();
        let request = FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(min_bytes)
            .with_max_bytes(50 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("capped")))
                    .with_partitions(partitions),
            ]);
        let started = Instant::now();
        let response = raw_round_trip(&broker.addr, &request, 12);
        let bytes: Vec<usize> = carried(&response).iter().map(|(_, _, b)| *b).collect();
        (bytes, started.elapsed())
    };

    // The oversized first batch alone: nothing else fits after it.
    let (first, _) = fetch([0; 4], 0, 0);
    assert!(first[0] > CAP, "{first:?}");
    assert_eq!(first[1..], [0, 0, 0], "{first:?}");

    // Past it: whole 30 KiB batches up to the cap, though 50 MiB were asked.
    let (rest, _) = fetch([1, 0, 0, 0], 0, 0);
    let total: usize = rest.iter().sum();
    assert!(total > 0 && total <= CAP, "{rest:?}");

    // 600 KiB wait, under the 1 MiB asked as min_bytes, but only the cap's worth fits in a
    // response: waiting cannot fill it further, so it is answered at once, not after 10 s.
    let (held, waited) = fetch([1, 0, 0, 0], 1 << 20, 10_000);
    assert!(held.iter().sum::<usize>() <= CAP, "{held:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");

    for (p, &count) in expected.iter().enumerate() {
        let got = consume(
            &broker.addr,
            "capped",
            p as i32,
            0,
            count,
            Duration::from_secs(30),
        );
        assert_eq!(got.len(), count);
    }
}
