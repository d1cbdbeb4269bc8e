//! Real client traffic, recorded through a proxy in front of the broker: every request frame
//! must decode with the broker's own codec. With `ODRADEK_FUZZ_CORPUS=<dir>` the frames,
//! the produced batches and a segment are written there as seeds for the fuzz targets
//! (`fuzz/README.md`):
//! `ODRADEK_FUZZ_CORPUS=$PWD/fuzz/corpus cargo nextest run -p odradek --test fuzz_corpus`.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};
use odradek_protocol::codec;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use support::*;

type Frames = Arc<Mutex<Vec<Vec<u8>>>>;

/// Forwards every connection to `upstream`, recording each client request frame (without
/// its size prefix).
fn start_proxy(listener: TcpListener, upstream: String, frames: Frames) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut client_read, mut server_write) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let (mut server_read, mut client_write) = (server, client);
            let frames = frames.clone();
            std::thread::spawn(move || {
                let mut pending = Vec::new();
                let mut chunk = [0u8; 65536];
                while let Ok(n) = client_read.read(&mut chunk) {
                    if n == 0 || server_write.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                    while pending.len() >= 4 {
                        let size = i32::from_be_bytes(pending[..4].try_into().expect("4 bytes"));
                        let end = 4 + size as usize;
                        if pending.len() < end {
                            break;
                        }
                        frames
                            .lock()
                            .expect("frames")
                            .push(pending[4..end].to_vec());
                        pending.drain(..end);
                    }
                }
                let _ = server_write.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_read, &mut client_write);
                let _ = client_write.shutdown(std::net::Shutdown::Both);
            });
        }
    });
}

/// Produces with every codec, consumes in a group with commits, and asks for metadata,
/// offsets and configs: the requests a librdkafka application sends.
async fn client_traffic(addr: &str) {
    create_topic(addr, "seeds", 2, &[("segment.bytes", "4096")]).await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let client = producer(addr, &[("acks", "all"), ("compression.codec", codec)]);
        let sends: Vec<_> = (0..20)
            .map(|i| {
                enqueue(
                    &client,
                    FutureRecord::to("seeds")
                        .partition(i % 2)
                        .key(&format!("k{}", i % 4))
                        .payload(&format!("{codec} value {i}")),
                )
            })
            .collect();
        for send in sends {
            delivered(send).await.expect("produce");
        }
    }
    let mut config = client_config(addr);
    config
        .set("group.id", "seeds-group")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().expect("consumer");
    consumer.subscribe(&["seeds"]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    while got < 100 {
        assert!(Instant::now() < deadline, "consumed only {got} of 100");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m.expect("consume");
            got += 1;
        }
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    consumer
        .fetch_watermarks("seeds", 0, Duration::from_secs(10))
        .expect("watermarks");
    consumer
        .offsets_for_timestamp(0, Duration::from_secs(10))
        .expect("offsets for times");
    consumer.unsubscribe();
    drop(consumer);
}

fn write_seeds(dir: &Path, frames: &[Vec<u8>], batches: &[Bytes], broker: &BrokerProcess) {
    let write = |target: &str, name: String, bytes: &[u8]| {
        let dir = dir.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("corpus file");
    };
    let mut per_kind: BTreeMap<(i16, i16), usize> = BTreeMap::new();
    for frame in frames {
        let key = (
            i16::from_be_bytes([frame[0], frame[1]]),
            i16::from_be_bytes([frame[2], frame[3]]),
        );
        let seen = per_kind.entry(key).or_default();
        // A few of each kind: the fuzzer mutates, it does not need thousands of Produces.
        if *seen < 3 {
            write(
                "request_decode",
                format!("{}-v{}-{seen}", key.0, key.1),
                frame,
            );
        }
        *seen += 1;
    }
    for (i, batch) in batches.iter().take(30).enumerate() {
        write("batch_validate", format!("produced-{i}"), batch);
    }
    // segment_recovery input: [flags][index length u16][index][segment].
    let segments = (0..2).flat_map(|p| segment_files(&broker.partition_dir("seeds", p)));
    for (i, segment) in segments.enumerate() {
        let log = std::fs::read(&segment).expect("segment");
        let index = std::fs::read(segment.with_extension("index")).unwrap_or_default();
        for flags in [0u8, 1] {
            let mut seed = vec![flags];
            seed.extend_from_slice(&(index.len() as u16).to_be_bytes());
            seed.extend_from_slice(&index);
            seed.extend_from_slice(&log);
            write("segment_recovery", format!("segment-{i}-{flags}"), &seed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_requests_all_decode_and_seed_the_fuzz_corpus() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
    let proxy = listener.local_addr().expect("proxy address").to_string();
    // Clients learn the broker's address from Metadata: it must be the proxy's.
    let mut broker = BrokerProcess::start_with(&["--advertised-listener", &proxy]);
    let frames = Frames::default();
    start_proxy(listener, broker.addr.clone(), frames.clone());
    client_traffic(&proxy).await;
    broker.stop();
    broker.restart();

    let frames = frames.lock().expect("frames").clone();
    let mut batches = Vec::new();
    // Raw keys: ApiKey is not Ord.
    let mut keys = std::collections::BTreeSet::new();
    for frame in &frames {
        let request = codec::decode_header(Bytes::copy_from_slice(frame)).expect("header");
        let body = codec::decode_body(&request).unwrap_or_else(|e| {
            panic!("{e}");
        });
        keys.insert(request.api_key as i16);
        if let RequestKind::Produce(produce) = body {
            for topic in produce.topic_data {
                for partition in topic.partition_data {
                    batches.extend(partition.records);
                }
            }
        }
    }
    for key in [
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::CreateTopics,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::FindCoordinator,
        ApiKey::JoinGroup,
        ApiKey::SyncGroup,
        ApiKey::Heartbeat,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
    ] {
        assert!(
            keys.contains(&(key as i16)),
            "no {key:?} request in {keys:?}"
        );
    }
    assert!(batches.len() >= 5, "{} produced batches", batches.len());
    if let Ok(dir) = std::env::var("ODRADEK_FUZZ_CORPUS") {
        write_seeds(Path::new(&dir), &frames, &batches, &broker);
    }
}
