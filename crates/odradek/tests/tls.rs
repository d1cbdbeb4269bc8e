//! SSL listeners (issue #20): librdkafka over TLS and mutual TLS against the real broker,
//! with a CA, broker and client certificates made by the test (rcgen), and the ways a
//! connection must be refused: no client certificate, an untrusted one, plaintext on the
//! TLS port and TLS on a plaintext port. Bad TLS settings stop start-up naming their key.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;

/// A CA and the PEM files one test needs, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let (ours, ours_key) = ca("Odradek test CA");
        write("ca.pem", ours.pem());
        let (broker, broker_key) = leaf(&["localhost", "127.0.0.1"], "broker", &ours, &ours_key);
        write(
            "broker.pem",
            format!("{}{}", broker_key.serialize_pem(), broker.pem()),
        );
        let (alice, alice_key) = leaf(&[], "alice", &ours, &ours_key);
        write("alice.pem", alice.pem());
        write("alice.key", alice_key.serialize_pem());
        // A client certificate this broker does not trust: signed by another CA.
        let (rogue_ca, rogue_ca_key) = ca("Someone else's CA");
        let (mallory, mallory_key) = leaf(&[], "mallory", &rogue_ca, &rogue_ca_key);
        write("mallory.pem", mallory.pem());
        write("mallory.key", mallory_key.serialize_pem());
        Self { dir }
    }

    /// The broker's SSL settings, with `ssl.client.auth=required` (mTLS).
    fn broker_args(&self) -> Vec<String> {
        [
            "listeners=SSL://127.0.0.1:0".to_string(),
            "listener.security.protocol.map=SSL:SSL".into(),
            "ssl.keystore.type=PEM".into(),
            format!(
                "ssl.keystore.location={}",
                self.path("broker.pem").display()
            ),
            "ssl.truststore.type=PEM".into(),
            format!("ssl.truststore.location={}", self.path("ca.pem").display()),
            "ssl.client.auth=required".into(),
        ]
        .into_iter()
        .flat_map(|pair| ["--set".to_string(), pair])
        .collect()
    }

    /// A librdkafka config for the SSL listener, with `who`'s client certificate if given.
    fn client(&self, addr: &str, who: Option<&str>) -> ClientConfig {
        let mut config = client_config(addr);
        config
            .set("security.protocol", "ssl")
            .set("ssl.ca.location", path_str(&self.path("ca.pem")));
        if let Some(who) = who {
            config
                .set(
                    "ssl.certificate.location",
                    path_str(&self.path(&format!("{who}.pem"))),
                )
                .set(
                    "ssl.key.location",
                    path_str(&self.path(&format!("{who}.key"))),
                );
        }
        config
    }
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}

fn leaf(
    names: &[&str],
    common_name: &str,
    ca: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let cert = params.signed_by(&key, ca, ca_key).unwrap();
    (cert, key)
}

fn start_tls_broker(pki: &Pki) -> BrokerProcess {
    let args = pki.broker_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    BrokerProcess::start_with(&args)
}

/// The first record of partition 0 of `topic`, read without a group.
fn consume_with(config: &ClientConfig, topic: &str) -> Vec<u8> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "tls-assign-only")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            return message
                .expect("consume")
                .payload()
                .unwrap_or_default()
                .to_vec();
        }
    }
    panic!("nothing read from {topic}");
}

/// Whether a client with this config can get the cluster's metadata within a few seconds.
fn reaches_the_cluster(config: &ClientConfig) -> bool {
    let consumer: BaseConsumer = config.create().expect("client");
    consumer
        .fetch_metadata(None, Duration::from_secs(4))
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_clients_produce_consume_and_commit_and_others_are_refused() {
    let pki = Pki::new();
    let broker = start_tls_broker(&pki);

    let producer: FutureProducer = pki
        .client(&broker.addr, Some("alice"))
        .set("acks", "all")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    for i in 0..100 {
        producer
            .send(
                FutureRecord::to("secure")
                    .key(&format!("k{i}"))
                    .payload(&format!("value {i}")),
                Duration::from_secs(20),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {i} over TLS: {e}"));
    }

    // A record of 600 KB: its request is read into a pooled frame, through rustls.
    let large: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    producer
        .send(
            FutureRecord::<(), _>::to("secure-large").payload(&large),
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("large produce over TLS: {e}"));
    let read_back = consume_with(&pki.client(&broker.addr, Some("alice")), "secure-large");
    assert!(read_back == large, "the large record came back changed");

    let consumer: BaseConsumer = pki
        .client(&broker.addr, Some("alice"))
        .set("group.id", "secure-readers")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&["secure"]).expect("subscribe");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 100 && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("consume over TLS");
            seen.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(seen.len(), 100, "every record read back over TLS");
    assert_eq!(seen[0], "value 0");
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit over TLS");
    let committed = consumer
        .committed(Duration::from_secs(10))
        .expect("committed offsets");
    assert_eq!(
        committed.elements()[0].offset(),
        rdkafka::Offset::Offset(100)
    );

    // Refused: no client certificate, one from an untrusted CA, and plaintext on this port.
    assert!(!reaches_the_cluster(&pki.client(&broker.addr, None)));
    assert!(!reaches_the_cluster(
        &pki.client(&broker.addr, Some("mallory"))
    ));
    assert!(!reaches_the_cluster(&client_config(&broker.addr)));
    // ... and the broker still serves a trusted client after all of them.
    assert!(reaches_the_cluster(
        &pki.client(&broker.addr, Some("alice"))
    ));
    let log = broker.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
}

#[test]
fn a_tls_client_on_a_plaintext_port_is_refused() {
    let pki = Pki::new();
    let broker = BrokerProcess::start();
    assert!(!reaches_the_cluster(
        &pki.client(&broker.addr, Some("alice"))
    ));
    assert!(reaches_the_cluster(&client_config(&broker.addr)));
}

#[test]
fn tls_without_client_certificates_serves_anyone_who_trusts_the_broker() {
    let pki = Pki::new();
    let args: Vec<String> = pki
        .broker_args()
        .into_iter()
        .map(|a| a.replace("ssl.client.auth=required", "ssl.client.auth=none"))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = BrokerProcess::start_with(&args);
    assert!(reaches_the_cluster(&pki.client(&broker.addr, None)));
    // A client that does not trust the broker's CA refuses the broker.
    let mut distrustful = pki.client(&broker.addr, None);
    distrustful.set("ssl.ca.location", path_str(&pki.path("mallory.pem")));
    assert!(!reaches_the_cluster(&distrustful));
}

#[test]
fn bad_tls_settings_stop_start_up_naming_the_key() {
    let pki = Pki::new();
    let missing = pki.path("nowhere.pem");
    let cases: Vec<(Vec<(String, String)>, &str)> = vec![
        (
            vec![("ssl.keystore.location".into(), path_str(&missing))],
            "ssl.keystore.location",
        ),
        (
            vec![("ssl.keystore.type".into(), "JKS".into())],
            "ssl.keystore.type",
        ),
        (
            vec![(
                "ssl.truststore.location".into(),
                path_str(&pki.path("alice.key")),
            )],
            "ssl.truststore.location",
        ),
        (
            vec![("ssl.enabled.protocols".into(), "TLSv1.1".into())],
            "ssl.enabled.protocols",
        ),
    ];
    for (overrides, key) in cases {
        let mut args = pki.broker_args();
        for (k, v) in &overrides {
            args.extend(["--set".to_string(), format!("{k}={v}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = BrokerProcess::refused_start(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{key}: started anyway");
        assert!(stderr.contains(key), "{key} not named in:\n{stderr}");
    }
}

/// A fetch response of 12 MiB, many times the socket buffers, to a client that reads it
/// slowly: the writer is held back by the full socket again and again (rustls buffering
/// each record until the socket takes it), and the response must still arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_reaches_a_slow_reader_whole() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use std::io::Write;
    use std::sync::Arc;

    let pki = Pki::new();
    let args: Vec<String> = pki
        .broker_args()
        .into_iter()
        .map(|a| a.replace("ssl.client.auth=required", "ssl.client.auth=none"))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let broker = BrokerProcess::start_with(&args);
    let producer: FutureProducer = pki
        .client(&broker.addr, None)
        .set("acks", "all")
        .create()
        .expect("producer");
    let record = vec![7u8; 512 << 10];
    for i in 0..24 {
        producer
            .send(
                FutureRecord::<(), _>::to("big").payload(&record),
                Duration::from_secs(20),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
    }

    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, raw_connect(&broker.addr));
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(64 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName("big".into()))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(64 << 20),
                ]),
        ]);
    tls.write_all(&request_frame(&request, 12, 1))
        .expect("send fetch");
    tls.flush().expect("flush");
    // A slow reader (not a synchronisation: the case under test): 16 KiB every 2 ms.
    let mut slow = SlowReader(&mut tls);
    let frame = read_frame(&mut slow).expect("the whole response (10 s read timeout)");
    let (_, response) = decode_response::<FetchRequest>(frame, 12);
    let got = carried(&response);
    assert_eq!(got.len(), 1);
    assert!(got[0].2 >= 24 * (512 << 10), "{got:?}");
}

struct SlowReader<'a, R>(&'a mut R);

impl<R: std::io::Read> std::io::Read for SlowReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(2));
        let n = buf.len().min(16 << 10);
        self.0.read(&mut buf[..n])
    }
}
