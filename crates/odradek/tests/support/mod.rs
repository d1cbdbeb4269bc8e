//! Shared harness for the integration tests: a real `odradek` process on an ephemeral port
//! and a temp data dir, and real librdkafka clients talking to it over TCP.
#![allow(dead_code)] // each test binary uses a different subset

pub mod cluster;
pub mod netns;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use rdkafka::{Offset, TopicPartitionList};

pub struct BrokerProcess {
    child: Option<Child>,
    pub addr: String,
    /// The HTTP listener (metrics, console): a free port, kept across restarts.
    pub http: String,
    pub data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl BrokerProcess {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a broker with extra command-line arguments.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_in(None, args)
    }

    /// Starts a broker whose data dir is `data_dir` (for a test that controls the filesystem
    /// under it), or a fresh temp dir when `None`.
    pub fn start_in(data_dir: Option<&Path>, args: &[&str]) -> Self {
        Self::start_with_env(data_dir, args, &[])
    }

    /// Starts a broker with extra environment variables, kept across restarts.
    pub fn start_with_env(data_dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut broker = Self::unstarted(data_dir, args, env);
        broker.launch();
        broker
    }

    /// Runs a broker on a fresh data dir that must refuse to start with these arguments,
    /// and returns its output (see [`Self::start_expecting_exit`]).
    pub fn refused_start(args: &[&str]) -> std::process::Output {
        Self::unstarted(None, args, &[]).start_expecting_exit()
    }

    fn unstarted(data_dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = data_dir.map_or_else(|| tmp.path().join("data"), Path::to_path_buf);
        Self {
            child: None,
            addr: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            data_dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log_path: tmp.path().join("broker.log"),
            _tmp: tmp,
        }
    }

    fn launch(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let start_of_run = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(env!("CARGO_BIN_EXE_odradek"))
            .arg("broker")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(&self.addr)
            .arg("--http")
            .arg(&self.http)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning odradek");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let run = &text[start_of_run as usize..];
            if let Some(line) = run.lines().find(|l| l.contains("odradek broker ready")) {
                let listen = line
                    .split("listen=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next());
                self.addr = listen
                    .expect("ready line names the listen address")
                    .to_string();
                if let Some(http) = line
                    .split("http=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .filter(|h| h.contains(':'))
                {
                    self.http = http.to_string();
                }
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("broker exited with {status} before becoming ready:\n{run}");
            }
            assert!(
                Instant::now() < deadline,
                "broker did not become ready:\n{run}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM and wait: the broker must exit 0.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("broker running");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().expect("waiting for broker");
        assert!(
            status.success(),
            "broker exited with {status}:\n{}",
            self.log()
        );
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker running").id()
    }

    /// Panics, showing the broker's log, if the process has exited.
    pub fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("broker running");
        if let Some(status) = child.try_wait().expect("checking the broker process") {
            panic!("broker exited with {status}:\n{}", self.log());
        }
    }

    /// kill -9: no chance to flush or write a clean-shutdown marker.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("broker running");
        child.kill().expect("SIGKILL");
        child.wait().expect("waiting for broker");
    }

    /// Starts again on the same data dir and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the broker first");
        self.launch();
    }

    /// Starts the stopped broker in the foreground, for a start-up that must fail: returns
    /// its output once it exits, and panics if it is still running after 30 s.
    pub fn start_expecting_exit(&self) -> std::process::Output {
        assert!(self.child.is_none(), "stop or kill the broker first");
        let child = Command::new(env!("CARGO_BIN_EXE_odradek"))
            .arg("broker")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", "127.0.0.1:0", "--http", ""])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning odradek");
        let pid = child.id();
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(child.wait_with_output()));
        match outcome.recv_timeout(Duration::from_secs(30)) {
            Ok(output) => output.expect("waiting for odradek"),
            Err(_) => {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!("the broker kept running; it was expected to refuse to start");
            }
        }
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn client_config(addr: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", addr)
        .set("broker.address.family", "v4");
    config
}

pub fn producer(addr: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = client_config(addr);
    config
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("producer")
}

pub fn admin(addr: &str) -> AdminClient<DefaultClientContext> {
    client_config(addr).create().expect("admin client")
}

pub async fn create_topic(addr: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = admin(addr)
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("CreateTopics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// A consumer that reads assigned partitions without a consumer group.
pub fn consumer(addr: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = client_config(addr);
    // librdkafka insists on a group.id even for assign(); no group APIs are used with it.
    config
        .set("group.id", "odradek-tests-assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("consumer")
}

/// Reads `count` messages from one partition starting at `from`, failing after `timeout`.
pub fn consume(
    addr: &str,
    topic: &str,
    partition: i32,
    from: i64,
    count: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let consumer = consumer(addr, &[]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .expect("assignment");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "got only {} of {count} messages from {topic}/{partition}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => panic!("consume error: {e}"),
            None => {}
        }
    }
    out
}

/// Builds the shim that fails or stalls fsync (`support/fail_fsync.c`, with the C compiler
/// the rdkafka crate already needs) into `dir`; preload it with `LD_PRELOAD`.
pub fn build_fsync_shim(dir: &Path) -> PathBuf {
    let source = dir.join("fail_fsync.c");
    std::fs::write(&source, include_str!("fail_fsync.c")).expect("writing the shim");
    let library = dir.join("libfail_fsync.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("running cc");
    assert!(status.success(), "building the shim failed: {status}");
    library
}

pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("partition dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Bytes in `files` now (a file deleted meanwhile, as by a cleaner swap, counts 0).
pub fn files_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

pub fn payload(m: &OwnedMessage) -> Option<Vec<u8>> {
    m.payload().map(<[u8]>::to_vec)
}

/// Hands a record to librdkafka (which copies it) and returns the future of its delivery,
/// so many sends can be in flight at once.
pub fn enqueue<K, P>(
    producer: &FutureProducer,
    mut record: rdkafka::producer::FutureRecord<'_, K, P>,
) -> DeliveryFuture
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(future) => return future,
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("enqueueing a record: {e}"),
        }
    }
}

/// Waits for a delivery report.
pub async fn delivered(future: DeliveryFuture) -> Result<Delivery, rdkafka::error::KafkaError> {
    future
        .await
        .expect("producer dropped the delivery report")
        .map_err(|(e, _)| e)
}

// Raw Kafka protocol over a blocking std TCP socket, for requests no well-behaved client sends.

/// (topic, partition, record bytes) of every partition a response carries.
pub fn carried(response: &FetchResponse) -> Vec<(String, i32, usize)> {
    response
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    t.topic.to_string(),
                    p.partition_index,
                    p.records.as_ref().map_or(0, |r| r.len()),
                )
            })
        })
        .collect()
}

/// A blocking connection with bounded reads and writes.
pub fn raw_connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connecting to the broker");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    stream
}

/// A complete request frame: size prefix, request header in `header_version`, then `body`.
pub fn raw_frame(
    api_key: i16,
    version: i16,
    header_version: i16,
    correlation_id: i32,
    body: &[u8],
) -> Vec<u8> {
    let mut frame = vec![0u8; 4];
    RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("odradek-tests")))
        .encode(&mut frame, header_version)
        .expect("encoding a request header");
    frame.extend_from_slice(body);
    let size = i32::try_from(frame.len() - 4).expect("frame fits an i32");
    frame[..4].copy_from_slice(&size.to_be_bytes());
    frame
}

/// A well-formed request frame for `request` at `version`.
pub fn request_frame<R: Request>(request: &R, version: i16, correlation_id: i32) -> Vec<u8> {
    let mut body = Vec::new();
    request
        .encode(&mut body, version)
        .expect("encoding a request");
    raw_frame(
        R::KEY,
        version,
        R::header_version(version),
        correlation_id,
        &body,
    )
}

/// Reads one size-prefixed response frame (without its size).
pub fn read_frame(stream: &mut impl Read) -> std::io::Result<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    assert!(
        (0..=64 << 20).contains(&size),
        "implausible response size {size}"
    );
    let mut frame = vec![0u8; size as usize];
    stream.read_exact(&mut frame)?;
    Ok(frame.into())
}

/// Decodes a response frame to `R`'s request at `version`: its correlation id and body.
/// The whole frame must be consumed.
pub fn decode_response<R: Request>(mut frame: Bytes, version: i16) -> (i32, R::Response) {
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
        .expect("decoding a response header");
    let body = R::Response::decode(&mut frame, version).expect("decoding a response body");
    assert!(
        frame.is_empty(),
        "{} bytes left over after the response body",
        frame.len()
    );
    (header.correlation_id, body)
}

/// The `(producer id, epoch, sequence)` of a record from a producer that is not idempotent.
pub const NO_PRODUCER: (i64, i16, i32) = (-1, -1, -1);

/// A ProduceRequest (acks=all) of one record, `value`, to partition 0 of `topic`, from
/// `producer` as `(producer id, epoch, sequence)`, inside `transactional_id`'s transaction
/// when there is one.
pub fn one_record_produce(
    topic: &str,
    value: &str,
    (producer_id, producer_epoch, sequence): (i64, i16, i32),
    transactional_id: Option<&str>,
) -> ProduceRequest {
    let record = Record {
        transactional: transactional_id.is_some(),
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: Default::default(),
    };
    let mut batch = Vec::new();
    RecordBatchEncoder::encode(
        &mut batch,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encoding a batch");
    ProduceRequest::default()
        .with_transactional_id(
            transactional_id.map(|id| TransactionalId(StrBytes::from_string(id.to_string()))),
        )
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.into())),
                ]),
        ])
}

/// Sends one request on a fresh connection and returns the decoded response.
/// A Fetch of `topic`'s partition `p` from `offset`, answered at once, by a client that
/// believes the partition's leader epoch is `epoch` (-1: no belief, no check).
pub fn fetch_request(topic: &str, p: i32, offset: i64, epoch: i32) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(p)
                        .with_current_leader_epoch(epoch)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

/// The features finalized cluster-wide, by name, as ApiVersions v3 reports them from `addr`,
/// with the epoch reported with them.
pub fn finalized_features(addr: &str) -> (std::collections::BTreeMap<String, i16>, i64) {
    let request = kafka_protocol::messages::ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("odradek-tests"))
        .with_client_software_version(StrBytes::from_static_str("1.0"));
    let response = raw_round_trip(addr, &request, 3);
    let features = response
        .finalized_features
        .iter()
        .map(|f| (f.name.to_string(), f.max_version_level))
        .collect();
    (features, response.finalized_features_epoch)
}

pub fn raw_round_trip<R: Request>(addr: &str, request: &R, version: i16) -> R::Response {
    let mut stream = raw_connect(addr);
    stream
        .write_all(&request_frame(request, version, 7))
        .expect("sending a request");
    let frame = read_frame(&mut stream).expect("reading a response");
    let (correlation_id, response) = decode_response::<R>(frame, version);
    assert_eq!(correlation_id, 7);
    response
}

/// Reads until the broker closes the connection (EOF or reset) and returns whatever it sent
/// first. Panics if the connection is still open after `timeout`.
pub fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the broker kept the connection open for {timeout:?}"
        );
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return received;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the broker kept the connection open for {timeout:?}")
            }
            Err(e) => panic!("reading from the broker: {e}"),
        }
    }
}

/// Runs the `odradek` binary with `args` against `broker` (`-b` its address).
pub fn odradek(broker: &BrokerProcess, args: &[&str]) -> std::process::Output {
    odradek_at(&broker.addr, args)
}

/// Runs the `odradek` binary with `args` against the brokers at `bootstrap`.
pub fn odradek_at(bootstrap: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_odradek"))
        .args(args)
        .args(["-b", bootstrap])
        .output()
        .expect("running odradek")
}

/// GET `path` from the HTTP listener: (status code, body).
pub fn get(http: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(http).expect("connecting to the HTTP listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

/// The JSON a successful `odradek … --output json` printed.
pub fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// IncrementalAlterConfigs on one resource (2 = topic, 4 = broker): (error code, message).
pub fn alter(
    addr: &str,
    resource_type: i8,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, Option<String>) {
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let r = raw_round_trip(
        addr,
        &IncrementalAlterConfigsRequest::default()
            .with_validate_only(validate_only)
            .with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(StrBytes::from_string(name.into()))
                    .with_configs(
                        ops.iter()
                            .map(|(k, op, v)| {
                                AlterableConfig::default()
                                    .with_name(StrBytes::from_string(k.to_string()))
                                    .with_config_operation(*op)
                                    .with_value(v.map(|v| StrBytes::from_string(v.into())))
                            })
                            .collect(),
                    ),
            ]),
        1,
    );
    (
        r.responses[0].error_code,
        r.responses[0].error_message.as_ref().map(|m| m.to_string()),
    )
}

/// DescribeConfigs of one key of one resource (2 = topic, 4 = broker): its value and
/// source.
pub fn config_source(addr: &str, resource_type: i8, name: &str, key: &str) -> (Option<String>, i8) {
    use kafka_protocol::messages::DescribeConfigsRequest;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let r = raw_round_trip(
        addr,
        &DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.into()))
                .with_configuration_keys(Some(vec![StrBytes::from_string(key.into())])),
        ]),
        4,
    );
    let c = &r.results[0].configs[0];
    (c.value.as_ref().map(|v| v.to_string()), c.config_source)
}
