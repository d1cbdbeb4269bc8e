//! Hostile and malformed input on raw TCP connections. Each case must end with the offending
//! connection closed (or answered) and the broker alive, while a well-behaved librdkafka
//! client on its own connection keeps being served throughout.

mod support;

use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, DescribeClusterRequest, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(30);
/// How long the broker may take to close a connection it must close.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);
const HEALTH_TOPIC: &str = "health";

/// A librdkafka client on its own connection asking for metadata in a loop for the whole
/// test. Every request must succeed.
struct GoodClient {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    failure: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl GoodClient {
    fn start(addr: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let failure = Arc::new(Mutex::new(None));
        let client = consumer(addr, &[]);
        let thread = std::thread::spawn({
            let (stop, served, failure) = (stop.clone(), served.clone(), failure.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match client.fetch_metadata(None, Duration::from_secs(10)) {
                        Ok(m) if m.brokers().len() == 1 => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(m) => {
                            *failure.lock().unwrap() =
                                Some(format!("metadata lists {} brokers", m.brokers().len()));
                            return;
                        }
                        Err(e) => {
                            *failure.lock().unwrap() = Some(e.to_string());
                            return;
                        }
                    }
                    // Pacing, so the loop does not monopolise a core of a small machine.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        let good = Self {
            stop,
            served,
            failure,
            thread: Some(thread),
        };
        good.wait_for_more_than(0);
        good
    }

    /// Waits until more than `n` requests have been served, failing on any error.
    fn wait_for_more_than(&self, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        while self.served.load(Ordering::SeqCst) <= n {
            if let Some(failure) = self.failure.lock().unwrap().as_ref() {
                panic!("the well-behaved client failed: {failure}");
            }
            assert!(
                Instant::now() < deadline,
                "the well-behaved client made no progress"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Checks the client is still being served after everything so far, then stops it.
    fn finish(mut self) {
        let now = self.served.load(Ordering::SeqCst);
        self.wait_for_more_than(now);
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("good client thread");
        if let Some(failure) = self.failure.lock().unwrap().as_ref() {
            panic!("the well-behaved client failed: {failure}");
        }
    }
}

/// A broker with a well-behaved client attached.
struct Scene {
    broker: BrokerProcess,
    good: GoodClient,
}

impl Scene {
    async fn start() -> Self {
        // One malloc arena: a thread that first allocates cannot reserve a new 64 MiB arena,
        // so VmPeak grows only by what the broker allocates (see assert_no_big_allocation).
        let broker = BrokerProcess::start_with_env(None, &[], &[("MALLOC_ARENA_MAX", "1")]);
        let good = GoodClient::start(&broker.addr);
        let mut scene = Self { broker, good };
        scene.assert_serving("start").await;
        scene
    }

    fn addr(&self) -> &str {
        &self.broker.addr
    }

    /// The broker is alive and a fresh librdkafka producer and consumer can round-trip a
    /// message through it.
    async fn assert_serving(&mut self, after: &str) {
        self.broker.assert_alive();
        let value = format!("after {after}");
        let producer = producer(&self.broker.addr, &[("linger.ms", "0")]);
        let delivery = producer
            .send(
                FutureRecord::<(), _>::to(HEALTH_TOPIC)
                    .partition(0)
                    .payload(&value),
                TIMEOUT,
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("producing after {after}: {e}"));
        let messages = consume(
            &self.broker.addr,
            HEALTH_TOPIC,
            0,
            delivery.offset,
            1,
            TIMEOUT,
        );
        assert_eq!(payload(&messages[0]), Some(value.into_bytes()), "{after}");
    }

    async fn finish(mut self) {
        self.assert_serving("the last case").await;
        self.good.finish();
        self.broker.stop();
    }
}

/// Sends `bytes` and expects the broker to close the connection without answering.
fn assert_closed_without_answer(addr: &str, bytes: &[u8], case: &str) {
    let mut stream = raw_connect(addr);
    stream.write_all(bytes).expect("sending");
    let answer = read_until_closed(&mut stream, CLOSE_WITHIN);
    assert!(
        answer.is_empty(),
        "{case}: the broker answered {} bytes before closing",
        answer.len()
    );
}

/// Peak virtual memory of a process, from /proc: an allocation shows here even if its pages
/// are never touched.
fn vm_peak_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmPeak:"))
        .expect("VmPeak line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmPeak value");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_negative_frame_sizes_close_the_connection_without_allocating() {
    let mut scene = Scene::start().await;
    let pid = scene.broker.pid();
    let peak_before = vm_peak_bytes(pid);
    let over_limit = 104_857_600i32 + 1; // socket.request.max.bytes + 1
    for (size, case) in [
        (i32::MAX, "a 2 GiB frame size"),
        (over_limit, "a frame one byte over socket.request.max.bytes"),
        (-1, "frame size -1"),
        (i32::MIN, "frame size i32::MIN"),
    ] {
        // The size alone, as a hostile client would send before (never) sending the rest.
        assert_closed_without_answer(scene.addr(), &size.to_be_bytes(), case);
        scene.assert_serving(case).await;
    }
    assert_no_big_allocation(pid, peak_before);
    scene.finish().await;
}

/// The broker never held a buffer anywhere near the sizes hostile input claimed (2 GiB, an
/// over-limit frame of 100 MiB, or 2^31 array elements): its peak virtual memory grew by
/// less than a third of the smallest of them. Measured here: 0 MiB over these tests (with
/// one malloc arena); the margin is for a few new threads' stacks.
fn assert_no_big_allocation(pid: u32, peak_before: u64) {
    let growth = vm_peak_bytes(pid).saturating_sub(peak_before);
    eprintln!("VmPeak growth: {} MiB", growth >> 20);
    assert!(
        growth < 32 << 20,
        "the broker's peak virtual memory grew by {} MiB",
        growth >> 20
    );
}

/// xorshift64*: a seeded generator, so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sends `bytes`, ends the write side, and returns whatever the broker sent before closing.
/// A write may fail because the broker has already closed; that is a close.
fn send_then_eof(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut stream = raw_connect(addr);
    if stream.write_all(bytes).is_ok() {
        let _ = stream.shutdown(Shutdown::Write);
    }
    read_until_closed(&mut stream, CLOSE_WITHIN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_are_closed_or_answered_never_a_crash() {
    let mut scene = Scene::start().await;
    let pid = scene.broker.pid();
    let peak_before = vm_peak_bytes(pid);
    let seed = 0x0dd2_ade4_u64;
    let mut rng = Rng(seed);

    // Pure noise: the size prefix itself is random.
    for i in 0..16 {
        let len = 1024 + rng.below(7 * 1024) as usize;
        let noise = rng.bytes(len);
        send_then_eof(scene.addr(), &noise);
        scene.broker.assert_alive();
        if i % 4 == 3 {
            scene.assert_serving(&format!("noise #{i}")).await;
        }
    }

    // Well-framed requests with a real header and a random body, for every version of the
    // APIs that only read: decoders of every kind see garbage. (Produce, Fetch and the topic
    // admin APIs are left out so a body that happens to decode cannot change or park
    // anything.)
    let apis = [
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::ListOffsets,
        ApiKey::DescribeConfigs,
        ApiKey::DescribeCluster,
        ApiKey::DescribeLogDirs,
    ];
    let mut correlation_id = 1000;
    let mut answered = 0;
    for api in apis {
        let range = api.valid_versions();
        for version in range.min..=range.max {
            for _ in 0..4 {
                correlation_id += 1;
                let len = rng.below(2048) as usize;
                let body = rng.bytes(len);
                let frame = raw_frame(
                    api as i16,
                    version,
                    api.request_header_version(version),
                    correlation_id,
                    &body,
                );
                let mut answer = Bytes::from(send_then_eof(scene.addr(), &frame));
                // Anything sent back is one whole response to this request.
                if !answer.is_empty() {
                    answered += 1;
                    assert!(answer.len() >= 8, "{api:?} v{version}: truncated answer");
                    let size = answer.get_i32();
                    assert_eq!(size as usize, answer.len(), "{api:?} v{version}");
                    assert_eq!(answer.get_i32(), correlation_id, "{api:?} v{version}");
                }
                scene.broker.assert_alive();
            }
        }
        scene
            .assert_serving(&format!("random {api:?} bodies"))
            .await;
    }
    eprintln!("seed {seed:#x}: {answered} random-bodied requests were answered");
    assert_no_big_allocation(pid, peak_before);
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_then_eof_leaves_the_broker_serving() {
    let mut scene = Scene::start().await;
    let mut truncated = 100i32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 1, 0, 0]);
    let answer = send_then_eof(scene.addr(), &truncated);
    assert!(
        answer.is_empty(),
        "answered a frame it never fully received"
    );
    scene.assert_serving("a truncated frame").await;

    // A whole request followed by a truncated one: the first is answered, then the
    // connection closes at EOF.
    let mut stream = raw_connect(scene.addr());
    let mut bytes = request_frame(&ApiVersionsRequest::default(), 0, 41);
    bytes.extend_from_slice(&truncated);
    stream.write_all(&bytes).expect("sending");
    let frame = read_frame(&mut stream).expect("the complete request is answered");
    let (correlation_id, response) = decode_response::<ApiVersionsRequest>(frame, 0);
    assert_eq!((correlation_id, response.error_code), (41, 0));
    stream.shutdown(Shutdown::Write).expect("shutdown");
    assert!(read_until_closed(&mut stream, CLOSE_WITHIN).is_empty());
    scene
        .assert_serving("a request then a truncated frame")
        .await;
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_api_key_closes_the_connection() {
    let mut scene = Scene::start().await;
    for api_key in [9999i16, -1, 1000] {
        let frame = raw_frame(api_key, 0, 1, 5, &[]);
        assert_closed_without_answer(scene.addr(), &frame, &format!("API key {api_key}"));
        scene.assert_serving(&format!("API key {api_key}")).await;
    }
    // Too short to hold a request header at all.
    assert_closed_without_answer(scene.addr(), &[0, 0, 0, 3, 0, 18, 0], "a 3-byte frame");
    scene.assert_serving("a 3-byte frame").await;
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_at_an_unsupported_version_is_answered_so_the_client_can_downgrade() {
    let mut scene = Scene::start().await;
    let mut stream = raw_connect(scene.addr());
    // An ApiVersions v99 body is unknown to the broker; a newer client would send a v3-style
    // body with the flexible (v2) header.
    let mut body = Vec::new();
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("future-client"))
        .with_client_software_version(StrBytes::from_static_str("99.0"))
        .encode(&mut body, 3)
        .expect("encode");
    let v99 = raw_frame(
        ApiKey::ApiVersions as i16,
        99,
        ApiVersionsRequest::header_version(99),
        77,
        &body,
    );
    stream.write_all(&v99).expect("sending ApiVersions v99");
    let frame = read_frame(&mut stream).expect("ApiVersions v99 is answered");
    // The answer is a v0 response (v0 header, v0 body), whatever version was asked for.
    let (correlation_id, response) = decode_response::<ApiVersionsRequest>(frame, 0);
    assert_eq!(correlation_id, 77);
    assert_eq!(response.error_code, 35, "UNSUPPORTED_VERSION");
    let range = |key: ApiKey| {
        response
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| (k.min_version, k.max_version))
    };
    assert_eq!(range(ApiKey::ApiVersions), Some((0, 4)));
    assert_eq!(range(ApiKey::Metadata), Some((0, 13)));
    assert_eq!(range(ApiKey::Produce), Some((3, 13)));

    // The connection stays open: the client retries at the highest version both support.
    stream
        .write_all(&request_frame(
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("future-client"))
                .with_client_software_version(StrBytes::from_static_str("99.0")),
            4,
            78,
        ))
        .expect("sending ApiVersions v4");
    let frame = read_frame(&mut stream).expect("the downgraded ApiVersions is answered");
    let (correlation_id, response) = decode_response::<ApiVersionsRequest>(frame, 4);
    assert_eq!((correlation_id, response.error_code), (78, 0));
    assert!(!response.api_keys.is_empty());
    drop(stream);
    scene.assert_serving("ApiVersions v99").await;
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_apis_at_unsupported_versions_close_the_connection() {
    let mut scene = Scene::start().await;
    // Derived from what the broker advertises, so the cases follow the broker as it grows.
    let advertised = raw_round_trip(scene.addr(), &ApiVersionsRequest::default(), 0).api_keys;
    let mut cases = vec![(ApiKey::Metadata, 99), (ApiKey::Metadata, -1)];
    for listed in &advertised {
        let api = ApiKey::try_from(listed.api_key).expect("advertised API key is known");
        if api == ApiKey::ApiVersions {
            continue; // answered at v0 instead; see the test above
        }
        // Versions the protocol has but the broker does not list, just outside its range.
        let known = api.valid_versions();
        if listed.min_version > known.min {
            cases.push((api, listed.min_version - 1));
        }
        if listed.max_version < known.max {
            cases.push((api, listed.max_version + 1));
        }
    }
    // APIs the broker does not advertise at all, at a version the protocol has.
    let unlisted =
        ApiKey::iter().filter(|api| !advertised.iter().any(|a| a.api_key == *api as i16));
    for api in unlisted.take(3) {
        cases.push((api, api.valid_versions().max));
    }
    assert!(cases.len() > 5, "too few cases: {cases:?}");
    eprintln!("unsupported versions tried: {cases:?}");
    for (api, version) in cases {
        let case = format!("{api:?} v{version}");
        let header_version = api.request_header_version(version.max(0));
        let frame = raw_frame(api as i16, version, header_version, 9, &[]);
        assert_closed_without_answer(scene.addr(), &frame, &case);
        scene.assert_serving(&case).await;
    }
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let mut scene = Scene::start().await;
    let topic = |name: &'static str| {
        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str(name))))
    };
    // allow_auto_topic_creation exists from v4 on; earlier versions must leave it default.
    let metadata = |version: i16| {
        MetadataRequest::default()
            .with_topics(Some(vec![topic(HEALTH_TOPIC)]))
            .with_allow_auto_topic_creation(version < 4)
    };
    let software = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("pipeliner"))
        .with_client_software_version(StrBytes::from_static_str("1.0"));
    enum Sent {
        Versions(i16),
        Metadata(i16),
    }
    let requests = [
        (Sent::Versions(3), 501),
        (Sent::Metadata(12), 502),
        (Sent::Versions(0), 503),
        (Sent::Metadata(1), 504),
        (Sent::Versions(4), 505),
    ];
    let mut bytes = Vec::new();
    for (request, correlation_id) in &requests {
        bytes.extend(match request {
            Sent::Versions(v) => request_frame(&software, *v, *correlation_id),
            Sent::Metadata(v) => request_frame(&metadata(*v), *v, *correlation_id),
        });
    }
    let mut stream = raw_connect(scene.addr());
    stream
        .write_all(&bytes)
        .expect("one write of five requests");
    for (request, correlation_id) in &requests {
        let frame = read_frame(&mut stream).expect("a response");
        match request {
            Sent::Versions(v) => {
                let (id, response) = decode_response::<ApiVersionsRequest>(frame, *v);
                assert_eq!(id, *correlation_id, "ApiVersions v{v}");
                assert_eq!(response.error_code, 0, "ApiVersions v{v}");
                assert!(
                    response
                        .api_keys
                        .iter()
                        .any(|k| k.api_key == ApiKey::Metadata as i16),
                    "ApiVersions v{v}"
                );
            }
            Sent::Metadata(v) => {
                let (id, response) = decode_response::<MetadataRequest>(frame, *v);
                assert_eq!(id, *correlation_id, "Metadata v{v}");
                assert_eq!(response.brokers.len(), 1, "Metadata v{v}");
                let [t] = response.topics.as_slice() else {
                    panic!("Metadata v{v}: {} topics", response.topics.len());
                };
                assert_eq!(t.error_code, 0, "Metadata v{v}");
                assert_eq!(t.partitions.len(), 1, "Metadata v{v}");
            }
        }
    }
    // Nothing more: exactly one response per request.
    stream.shutdown(Shutdown::Write).expect("shutdown");
    assert!(read_until_closed(&mut stream, CLOSE_WITHIN).is_empty());
    scene.assert_serving("pipelining").await;

    // Produces (answered only after their fsync) interleaved with requests answered at
    // once: responses still come back in request order, and the appends in that order too.
    let produce = |value: &str| one_record_produce(HEALTH_TOPIC, value, NO_PRODUCER, None);
    let mut bytes = request_frame(&produce("pipelined-1"), 9, 601);
    bytes.extend(request_frame(&metadata(12), 12, 602));
    bytes.extend(request_frame(&produce("pipelined-2"), 3, 603));
    bytes.extend(request_frame(&software, 3, 604));
    bytes.extend(request_frame(&produce("pipelined-3"), 9, 605));
    let mut stream = raw_connect(scene.addr());
    stream
        .write_all(&bytes)
        .expect("one write of five requests");
    let mut offsets = Vec::new();
    for (correlation_id, version) in [(601, 9), (602, 12), (603, 3), (604, 3), (605, 9)] {
        let frame = read_frame(&mut stream).expect("a response");
        let id = match correlation_id {
            602 => decode_response::<MetadataRequest>(frame, version).0,
            604 => decode_response::<ApiVersionsRequest>(frame, version).0,
            _ => {
                let (id, response) = decode_response::<ProduceRequest>(frame, version);
                let partition = &response.responses[0].partition_responses[0];
                assert_eq!(partition.error_code, 0, "produce {correlation_id}");
                offsets.push(partition.base_offset);
                id
            }
        };
        assert_eq!(id, correlation_id);
    }
    assert_eq!(offsets, [offsets[0], offsets[0] + 1, offsets[0] + 2]);
    let values: Vec<Option<Vec<u8>>> =
        consume(scene.addr(), HEALTH_TOPIC, 0, offsets[0], 3, TIMEOUT)
            .iter()
            .map(payload)
            .collect();
    assert_eq!(
        values,
        ["pipelined-1", "pipelined-2", "pipelined-3"].map(|v| Some(v.as_bytes().to_vec()))
    );
    drop(stream);
    scene.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_decode_closes_the_connection() {
    let mut scene = Scene::start().await;
    let pid = scene.broker.pid();
    let peak_before = vm_peak_bytes(pid);
    let metadata = ApiKey::Metadata as i16;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // v12 (flexible): topics is a compact array whose length is a varint of n + 1;
        // 0x80000000 claims 2^31 - 1 topics, and then the body ends.
        (
            raw_frame(metadata, 12, 2, 1, &[0x80, 0x80, 0x80, 0x80, 0x08]),
            "Metadata v12 claiming 2^31-1 topics",
        ),
        // v1: topics is an INT32-counted array.
        (
            raw_frame(metadata, 1, 1, 2, &0x7fff_ffffi32.to_be_bytes()),
            "Metadata v1 claiming 2^31-1 topics",
        ),
        // DescribeConfigs v1: 2^31-1 resources.
        (
            raw_frame(
                ApiKey::DescribeConfigs as i16,
                1,
                1,
                3,
                &0x7fff_ffffi32.to_be_bytes(),
            ),
            "DescribeConfigs v1 claiming 2^31-1 resources",
        ),
        // ListOffsets v1: a replica id, then 2^31-1 topics.
        (
            raw_frame(
                ApiKey::ListOffsets as i16,
                1,
                1,
                4,
                &[0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
            ),
            "ListOffsets v1 claiming 2^31-1 topics",
        ),
        // A valid topic count, then a topic name longer than the frame.
        (
            raw_frame(metadata, 1, 1, 4, &[0, 0, 0, 1, 0x7f, 0xff, b'a']),
            "Metadata v1 with a 32767-byte name in 1 byte",
        ),
        // The header itself is cut off inside the client id.
        (
            {
                let mut f = vec![0, 0, 0, 10];
                f.extend_from_slice(&metadata.to_be_bytes());
                f.extend_from_slice(&1i16.to_be_bytes());
                f.extend_from_slice(&5i32.to_be_bytes());
                f.extend_from_slice(&[0x40, 0x00]); // client id of 16384 bytes: absent
                f
            },
            "Metadata v1 with a truncated header",
        ),
    ];
    for (frame, case) in &cases {
        assert_closed_without_answer(scene.addr(), frame, case);
        scene.assert_serving(case).await;
    }
    // A garbage body behind a valid request on the same connection: the valid request is
    // answered, then the connection closes.
    let mut stream = raw_connect(scene.addr());
    let mut bytes = request_frame(&MetadataRequest::default(), 1, 60);
    bytes.extend_from_slice(&cases[1].0);
    stream.write_all(&bytes).expect("sending");
    let frame = read_frame(&mut stream).expect("the valid request is answered");
    let (correlation_id, _) = decode_response::<MetadataRequest>(frame, 1);
    assert_eq!(correlation_id, 60);
    assert!(read_until_closed(&mut stream, CLOSE_WITHIN).is_empty());
    scene.assert_serving("a valid request then garbage").await;
    // Decoding stopped at the end of the input instead of reserving room for 2^31 elements.
    assert_no_big_allocation(pid, peak_before);
    scene.finish().await;
}

/// Keeps the raw helpers honest: a well-formed request on a raw connection is answered.
#[test]
fn a_well_formed_raw_request_is_answered() {
    let mut broker = BrokerProcess::start();
    let response = raw_round_trip(&broker.addr, &MetadataRequest::default(), 12);
    assert_eq!(response.brokers.len(), 1);
    let mut stream = raw_connect(&broker.addr);
    stream
        .write_all(&request_frame(&DescribeClusterRequest::default(), 0, 3))
        .expect("sending");
    let (id, response) =
        decode_response::<DescribeClusterRequest>(read_frame(&mut stream).expect("answered"), 0);
    assert_eq!((id, response.error_code), (3, 0));
    drop(stream);
    broker.stop();
}
