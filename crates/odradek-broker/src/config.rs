//! Broker and topic configuration under Kafka's names, types, defaults and validation.
//!
//! Every key the broker accepts is listed here; anything else is rejected at start-up with
//! the key named. Topic configs fall back to their broker synonym (`segment.bytes` to
//! `log.segment.bytes`), then to Kafka's default, and report which source won, as Kafka's
//! DescribeConfigs does.

use std::collections::BTreeMap;

use odradek_security::{ClientAuth, PemInput, PemSource, TlsSettings};
use std::net::SocketAddr;
use std::path::PathBuf;

use odradek_protocol::batch::Compression;
use odradek_storage::{LogConfig, TimestampType};

use crate::replication::throttle::{self, ThrottledReplicas};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown config key '{0}'")]
    UnknownKey(String),
    #[error("invalid value '{value}' for config '{key}': {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Syntax(String),
    #[error(
        "{key}={value}: {reason}. Odradek does not support that yet, and refuses to start \
         rather than quietly run as something else"
    )]
    NotSupportedYet {
        key: String,
        value: String,
        reason: String,
    },
}

/// Kafka's `ConfigDef.Type`, numbered as DescribeConfigs v3+ reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
    Password = 9,
}

/// Kafka's `ConfigSource`, numbered as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    TopicConfig = 1,
    DynamicBrokerConfig = 2,
    DynamicDefaultBrokerConfig = 3,
    StaticBrokerConfig = 4,
    DefaultConfig = 5,
}

#[derive(Debug, Clone, Copy)]
enum Check {
    Any,
    AtLeast(i64),
    OneOf(&'static [&'static str]),
    ListOf(&'static [&'static str]),
    /// `*` or `partition:broker` pairs (the throttled-replicas lists).
    ReplicaList,
}

/// One config the broker understands.
#[derive(Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    /// `None` is Kafka's `null` default.
    pub default: Option<&'static str>,
    pub doc: &'static str,
    check: Check,
}

const fn def(
    name: &'static str,
    ty: ConfigType,
    default: Option<&'static str>,
    check: Check,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        ty,
        default,
        doc,
        check,
    }
}

use Check::*;
use ConfigType::{Boolean, Double, Int, List, Long, Password, Short};

const LONG_MAX: &str = "9223372036854775807";
const CLEANUP_POLICIES: &[&str] = &["delete", "compact"];
const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];

/// Broker configs. Keys that only matter for features Odradek does not have yet (threads,
/// socket buffers, KRaft controller settings) are accepted so a stock `server.properties`
/// starts the broker; the docs say which are honoured.
pub static BROKER_CONFIGS: &[ConfigDef] = &[
    def(
        "node.id",
        Int,
        Some("1"),
        AtLeast(0),
        "The node id of this broker.",
    ),
    def(
        "broker.rack",
        ConfigType::String,
        None,
        Any,
        "The rack (or availability zone) of this broker, reported to clients in Metadata and DescribeCluster.",
    ),
    def(
        "broker.id",
        Int,
        Some("1"),
        Any,
        "Legacy alias of node.id; set, it gives node.id, and node.id gives it.",
    ),
    def(
        "log.dirs",
        ConfigType::String,
        None,
        Any,
        "The directory holding this broker's data (one directory is supported).",
    ),
    def(
        "log.dir",
        ConfigType::String,
        Some("./odradek-data"),
        Any,
        "The data directory, used when log.dirs is not set.",
    ),
    def(
        "listeners",
        List,
        Some("PLAINTEXT://127.0.0.1:9092"),
        Any,
        "The listener the broker accepts clients on.",
    ),
    def(
        "http.listeners",
        List,
        Some("127.0.0.1:9644"),
        Any,
        "Address of the HTTP listener serving /metrics, /health, /ready and the web console; empty disables it (Odradek's own setting).",
    ),
    def(
        "metrics.partition.detail.max",
        Int,
        Some("10000"),
        AtLeast(0),
        "Most per-partition and per-group-partition series one /metrics scrape emits (Odradek's own setting): bounds label cardinality.",
    ),
    def(
        "advertised.listeners",
        List,
        None,
        Any,
        "The address given to clients in Metadata; defaults to listeners.",
    ),
    def(
        "auto.create.topics.enable",
        Boolean,
        Some("true"),
        Any,
        "Create a topic when a client asks for metadata of one that does not exist.",
    ),
    def(
        "num.partitions",
        Int,
        Some("1"),
        AtLeast(1),
        "Partitions of an auto-created topic or one created without a count.",
    ),
    def(
        "default.replication.factor",
        Int,
        Some("1"),
        AtLeast(1),
        "Replication factor of auto-created topics.",
    ),
    def(
        "delete.topic.enable",
        Boolean,
        Some("true"),
        Any,
        "Whether DeleteTopics is allowed.",
    ),
    def(
        "max.connections",
        Int,
        Some("2147483647"),
        AtLeast(0),
        "Most client connections the broker accepts; more are closed at once.",
    ),
    def(
        "max.connections.per.ip",
        Int,
        Some("2147483647"),
        AtLeast(0),
        "Most connections from one IP address.",
    ),
    def(
        "max.connections.per.ip.overrides",
        ConfigType::String,
        Some(""),
        Any,
        "Per-IP limits, e.g. 10.0.0.1:100,10.0.0.2:5.",
    ),
    def(
        "connections.max.idle.ms",
        Long,
        Some("600000"),
        AtLeast(1),
        "Close a connection that completes no request for this long (a half-sent request counts as idle).",
    ),
    def(
        "queued.max.request.bytes",
        Long,
        Some("-1"),
        Any,
        "Bytes of requests in flight across all connections before the broker stops reading more; -1 for no limit.",
    ),
    def(
        "fetch.max.bytes",
        Int,
        Some("57671680"),
        AtLeast(1024),
        "The most record bytes one fetch response carries, whatever the request asks (KIP-541); the first batch is returned whole even when larger, so a consumer always progresses.",
    ),
    def(
        "socket.request.max.bytes",
        Int,
        Some("104857600"),
        AtLeast(1),
        "The largest request frame accepted; larger frames close the connection.",
    ),
    def(
        "socket.send.buffer.bytes",
        Int,
        Some("102400"),
        Any,
        "Accepted for compatibility.",
    ),
    def(
        "socket.receive.buffer.bytes",
        Int,
        Some("102400"),
        Any,
        "Accepted for compatibility.",
    ),
    def(
        "num.network.threads",
        Int,
        Some("3"),
        AtLeast(1),
        "Accepted for compatibility; Odradek uses one async runtime.",
    ),
    def(
        "num.io.threads",
        Int,
        Some("8"),
        AtLeast(1),
        "Accepted for compatibility; Odradek uses one async runtime.",
    ),
    def(
        "num.recovery.threads.per.data.dir",
        Int,
        Some("2"),
        AtLeast(1),
        "Threads that open (and after a crash, recover) partitions at startup.",
    ),
    def(
        "process.roles",
        List,
        Some("broker,controller"),
        Any,
        "broker, controller or both. A controller-only node is a voter of the metadata quorum and serves no clients; a broker-only node is not a voter: it receives the metadata log from the controllers.",
    ),
    def(
        "broker.session.timeout.ms",
        Long,
        Some("9000"),
        AtLeast(1),
        "How long the controller waits for a broker's heartbeat before fencing it: its partitions then have no leader until it is back.",
    ),
    def(
        "replica.selector.class",
        ConfigType::String,
        None,
        Any,
        "org.apache.kafka.common.replica.RackAwareReplicaSelector sends consumers that set client.rack to an in-sync replica in their rack (KIP-392); unset, consumers read from leaders.",
    ),
    def(
        "auto.leader.rebalance.enable",
        Boolean,
        Some("true"),
        Any,
        "Moves leadership back to preferred replicas (the first of each partition's replicas) when a broker leads too few of its own.",
    ),
    def(
        "leader.imbalance.check.interval.seconds",
        Long,
        Some("300"),
        AtLeast(1),
        "How often the controller checks for leadership imbalance.",
    ),
    def(
        "leader.imbalance.per.broker.percentage",
        Int,
        Some("10"),
        AtLeast(0),
        "The share of a broker's preferred partitions it may not lead before leadership is rebalanced.",
    ),
    def(
        "replica.lag.time.max.ms",
        Long,
        Some("30000"),
        AtLeast(1),
        "A follower that has not caught up with its leader for this long is dropped from the in-sync replicas (a fenced broker leaves them at once).",
    ),
    def(
        throttle::LEADER_RATE,
        Long,
        Some(LONG_MAX),
        AtLeast(0),
        "Bytes per second this broker sends, as a leader, to followers out of the ISR of the replicas topics name in leader.replication.throttled.replicas (KIP-73). Dynamic, per broker or cluster-wide.",
    ),
    def(
        throttle::FOLLOWER_RATE,
        Long,
        Some(LONG_MAX),
        AtLeast(0),
        "Bytes per second this broker fetches, as a follower out of the ISR, for the replicas topics name in follower.replication.throttled.replicas (KIP-73). Dynamic, per broker or cluster-wide.",
    ),
    def(
        "replica.fetch.backoff.ms",
        Int,
        Some("1000"),
        AtLeast(0),
        "How long a follower waits after a failed fetch before trying its leader again (a metadata change wakes it sooner).",
    ),
    def(
        "broker.heartbeat.interval.ms",
        Long,
        Some("2000"),
        AtLeast(1),
        "How often a broker heartbeats to the controller.",
    ),
    def(
        "controller.quorum.voters",
        List,
        Some(""),
        Any,
        "The metadata quorum's voters as id@host:port (the controller listeners). A node with the controller role must be one of them, a broker-only node must not. Empty: this node alone.",
    ),
    def(
        "controller.quorum.bootstrap.servers",
        List,
        Some(""),
        Any,
        "Where a node that is not among controller.quorum.voters finds the quorum: any voters' controller listeners, host:port. A broker-only node follows the quorum through them; a controller joins it as an observer until AddRaftVoter (`odradek cluster add-controller`) makes it a voter. A controller naming only itself starts a quorum of its own (Kafka 4's quick-start).",
    ),
    def(
        "controller.listener.names",
        List,
        None,
        Any,
        "Listeners named here are the controller's: clients are not served on them.",
    ),
    def(
        "inter.broker.listener.name",
        ConfigType::String,
        None,
        Any,
        "Accepted for compatibility.",
    ),
    def(
        "listener.security.protocol.map",
        ConfigType::String,
        Some("PLAINTEXT:PLAINTEXT"),
        Any,
        "Maps listener names to security protocols: PLAINTEXT and SSL are served; a SASL listener stops start-up until SASL lands.",
    ),
    def(
        "ssl.keystore.type",
        ConfigType::String,
        Some("JKS"),
        Any,
        "The key store's format; Odradek reads PEM only (set PEM).",
    ),
    def(
        "ssl.keystore.location",
        ConfigType::String,
        None,
        Any,
        "A PEM file with the broker's private key and certificate chain.",
    ),
    def(
        "ssl.keystore.password",
        Password,
        None,
        Any,
        "Not used with PEM key stores (refused, as Kafka refuses it).",
    ),
    def(
        "ssl.keystore.certificate.chain",
        Password,
        None,
        Any,
        "The broker's certificate chain as PEM text (KIP-651), with ssl.keystore.key.",
    ),
    def(
        "ssl.keystore.key",
        Password,
        None,
        Any,
        "The broker's private key as PEM text (KIP-651), with ssl.keystore.certificate.chain.",
    ),
    def(
        "ssl.key.password",
        Password,
        None,
        Any,
        "The password of an encrypted private key; encrypted keys are not read yet (refused).",
    ),
    def(
        "ssl.truststore.type",
        ConfigType::String,
        Some("JKS"),
        Any,
        "The trust store's format; Odradek reads PEM only (set PEM).",
    ),
    def(
        "ssl.truststore.location",
        ConfigType::String,
        None,
        Any,
        "A PEM file of the CA certificates that sign client certificates.",
    ),
    def(
        "ssl.truststore.password",
        Password,
        None,
        Any,
        "Not used with PEM trust stores (refused, as Kafka refuses it).",
    ),
    def(
        "ssl.truststore.certificates",
        Password,
        None,
        Any,
        "The trusted CA certificates as PEM text (KIP-651).",
    ),
    def(
        "ssl.client.auth",
        ConfigType::String,
        Some("none"),
        OneOf(&["required", "requested", "none"]),
        "Whether SSL listeners ask clients for a certificate: required (mTLS), requested, or none.",
    ),
    def(
        "ssl.enabled.protocols",
        List,
        Some("TLSv1.2,TLSv1.3"),
        Any,
        "The TLS versions SSL listeners accept.",
    ),
    def(
        "ssl.protocol",
        ConfigType::String,
        Some("TLSv1.3"),
        Any,
        "Accepted for compatibility; ssl.enabled.protocols decides.",
    ),
    def(
        "ssl.cipher.suites",
        List,
        Some(""),
        Any,
        "Cipher suites by IANA name; empty: the TLS library's defaults (AES-GCM and ChaCha20-Poly1305 with ECDHE), which the JVM enables too.",
    ),
    def(
        "offsets.topic.replication.factor",
        Short,
        Some("3"),
        AtLeast(1),
        "Replicas of __consumer_offsets, capped (with a warning) to the live brokers when it is created.",
    ),
    def(
        "offsets.topic.num.partitions",
        Int,
        Some("50"),
        AtLeast(1),
        "Partitions of __consumer_offsets.",
    ),
    def(
        "transaction.state.log.replication.factor",
        Short,
        Some("3"),
        AtLeast(1),
        "Replicas of __transaction_state, capped (with a warning) to the live brokers when it is created.",
    ),
    def(
        "transaction.state.log.min.isr",
        Int,
        Some("2"),
        AtLeast(1),
        "min.insync.replicas of __transaction_state (at most its replication factor).",
    ),
    def(
        "share.coordinator.state.topic.replication.factor",
        Short,
        Some("3"),
        AtLeast(1),
        "Accepted for compatibility.",
    ),
    def(
        "share.coordinator.state.topic.min.isr",
        Short,
        Some("2"),
        AtLeast(1),
        "Accepted for compatibility.",
    ),
    def(
        "group.initial.rebalance.delay.ms",
        Int,
        Some("3000"),
        AtLeast(0),
        "Delay before the first rebalance of a new group.",
    ),
    def(
        "group.consumer.session.timeout.ms",
        Int,
        Some("45000"),
        AtLeast(1),
        "Session timeout of KIP-848 consumer group members.",
    ),
    def(
        "group.consumer.heartbeat.interval.ms",
        Int,
        Some("5000"),
        AtLeast(1),
        "Heartbeat interval given to KIP-848 consumer group members.",
    ),
    def(
        "group.consumer.assignors",
        List,
        Some("uniform,range"),
        Any,
        "Server-side assignors; the first is the default.",
    ),
    def(
        "group.min.session.timeout.ms",
        Int,
        Some("6000"),
        AtLeast(0),
        "Shortest session timeout a group member may ask for.",
    ),
    def(
        "group.max.session.timeout.ms",
        Int,
        Some("1800000"),
        AtLeast(0),
        "Longest session timeout a group member may ask for.",
    ),
    def(
        "group.max.size",
        Int,
        Some("2147483647"),
        AtLeast(1),
        "Most members a consumer group may have.",
    ),
    def(
        "offsets.topic.segment.bytes",
        Int,
        Some("104857600"),
        AtLeast(1),
        "Segment size of __consumer_offsets.",
    ),
    def(
        "offset.metadata.max.bytes",
        Int,
        Some("4096"),
        AtLeast(0),
        "Largest metadata string an offset commit may carry.",
    ),
    def(
        "offsets.retention.minutes",
        Int,
        Some("10080"),
        AtLeast(1),
        "How long offsets of an empty group are kept.",
    ),
    def(
        "transaction.max.timeout.ms",
        Int,
        Some("900000"),
        AtLeast(1),
        "Longest transaction.timeout.ms a producer may ask for (INVALID_TRANSACTION_TIMEOUT above).",
    ),
    def(
        "transactional.id.expiration.ms",
        Int,
        Some("604800000"),
        AtLeast(1),
        "How long a transactional id with no transaction in progress is kept.",
    ),
    def(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        Int,
        Some("10000"),
        AtLeast(1),
        "How often transactions past their timeout are aborted.",
    ),
    def(
        "transaction.state.log.num.partitions",
        Int,
        Some("50"),
        AtLeast(1),
        "Partitions of __transaction_state (fixed once it exists).",
    ),
    def(
        "transaction.state.log.segment.bytes",
        Int,
        Some("104857600"),
        AtLeast(1),
        "Segment size of __transaction_state.",
    ),
    def(
        "producer.id.expiration.ms",
        Int,
        Some("86400000"),
        AtLeast(1),
        "How long a partition remembers an idle producer's sequence numbers.",
    ),
    def(
        "offsets.retention.check.interval.ms",
        Long,
        Some("600000"),
        AtLeast(1),
        "How often expired offsets are removed.",
    ),
    def(
        "offsets.commit.timeout.ms",
        Int,
        Some("5000"),
        AtLeast(1),
        "Accepted for compatibility.",
    ),
    def(
        "group.coordinator.rebalance.protocols",
        List,
        Some("classic,consumer,streams"),
        Any,
        "Accepted for compatibility; the classic protocol is served.",
    ),
    def(
        "log.retention.check.interval.ms",
        Long,
        Some("300000"),
        AtLeast(1),
        "How often retention is enforced.",
    ),
    def(
        "log.retention.hours",
        Int,
        Some("168"),
        Any,
        "Retention in hours, used when log.retention.ms and .minutes are unset.",
    ),
    def(
        "log.retention.minutes",
        Int,
        None,
        Any,
        "Retention in minutes, used when log.retention.ms is unset.",
    ),
    def(
        "log.retention.ms",
        Long,
        None,
        Any,
        "Retention in milliseconds; -1 keeps data forever.",
    ),
    def(
        "log.retention.bytes",
        Long,
        Some("-1"),
        Any,
        "Size limit per partition; -1 for none.",
    ),
    def(
        "log.roll.hours",
        Int,
        Some("168"),
        AtLeast(1),
        "Roll a segment after this many hours, used when log.roll.ms is unset.",
    ),
    def(
        "log.roll.ms",
        Long,
        None,
        Any,
        "Roll a segment after this many milliseconds.",
    ),
    def(
        "log.roll.jitter.hours",
        Int,
        Some("0"),
        AtLeast(0),
        "Accepted for compatibility.",
    ),
    def(
        "log.roll.jitter.ms",
        Long,
        None,
        Any,
        "Accepted for compatibility.",
    ),
    def(
        "log.segment.bytes",
        Int,
        Some("1073741824"),
        AtLeast(1048576),
        "Segment size before rolling.",
    ),
    def(
        "log.index.interval.bytes",
        Int,
        Some("4096"),
        AtLeast(0),
        "Bytes between offset index entries.",
    ),
    def(
        "log.index.size.max.bytes",
        Int,
        Some("10485760"),
        AtLeast(4),
        "Accepted for compatibility.",
    ),
    def(
        "log.flush.interval.messages",
        Long,
        Some(LONG_MAX),
        AtLeast(1),
        "Flush a partition after this many unflushed records.",
    ),
    def(
        "log.flush.interval.ms",
        Long,
        None,
        Any,
        "Flush a partition when its data is this old.",
    ),
    def(
        "log.flush.offset.checkpoint.interval.ms",
        Int,
        Some("60000"),
        AtLeast(0),
        "How often each log is synced and its recovery point (with the active segment's indexes) written, so recovery after a crash checks only what was written since.",
    ),
    def(
        "log.flush.scheduler.interval.ms",
        Long,
        Some(LONG_MAX),
        Any,
        "How often to check log.flush.interval.ms.",
    ),
    def(
        "log.flush.offset.checkpoint.interval.ms",
        Int,
        Some("60000"),
        AtLeast(0),
        "Accepted for compatibility.",
    ),
    def(
        "log.cleanup.policy",
        List,
        Some("delete"),
        ListOf(CLEANUP_POLICIES),
        "Default cleanup.policy.",
    ),
    def(
        "log.cleaner.enable",
        Boolean,
        Some("true"),
        Any,
        "Whether the log cleaner runs; when false, compacted topics are not cleaned.",
    ),
    def(
        "log.cleaner.delete.retention.ms",
        Long,
        Some("86400000"),
        AtLeast(0),
        "Default delete.retention.ms.",
    ),
    def(
        "log.cleaner.min.compaction.lag.ms",
        Long,
        Some("0"),
        AtLeast(0),
        "Default min.compaction.lag.ms.",
    ),
    def(
        "log.cleaner.max.compaction.lag.ms",
        Long,
        Some(LONG_MAX),
        AtLeast(1),
        "Default max.compaction.lag.ms.",
    ),
    def(
        "log.cleaner.min.cleanable.ratio",
        Double,
        Some("0.5"),
        Any,
        "Default min.cleanable.dirty.ratio.",
    ),
    def(
        "log.cleaner.dedupe.buffer.size",
        Long,
        Some("134217728"),
        AtLeast(1),
        "Memory for the cleaner's offset map (key hash to latest offset); when it fills, a pass cleans only up to the offset it covered.",
    ),
    def(
        "log.cleaner.backoff.ms",
        Long,
        Some("15000"),
        AtLeast(0),
        "How long the cleaner sleeps between passes over the compacted logs.",
    ),
    def(
        "log.segment.delete.delay.ms",
        Long,
        Some("60000"),
        AtLeast(0),
        "Default file.delete.delay.ms.",
    ),
    def(
        "log.preallocate",
        Boolean,
        Some("false"),
        Any,
        "Default preallocate.",
    ),
    def(
        "log.message.format.version",
        ConfigType::String,
        Some("3.0-IV1"),
        Any,
        REMOVED_IN_KAFKA_4,
    ),
    def(
        "log.message.downconversion.enable",
        Boolean,
        Some("true"),
        Any,
        REMOVED_IN_KAFKA_4,
    ),
    def(
        "log.message.timestamp.difference.max.ms",
        Long,
        Some(LONG_MAX),
        AtLeast(0),
        REMOVED_IN_KAFKA_4,
    ),
    def(
        "log.message.timestamp.type",
        ConfigType::String,
        Some("CreateTime"),
        OneOf(TIMESTAMP_TYPES),
        "Default message.timestamp.type.",
    ),
    def(
        "log.message.timestamp.before.max.ms",
        Long,
        Some(LONG_MAX),
        AtLeast(0),
        "Default message.timestamp.before.max.ms.",
    ),
    def(
        "log.message.timestamp.after.max.ms",
        Long,
        Some("3600000"),
        AtLeast(0),
        "Default message.timestamp.after.max.ms.",
    ),
    def(
        "log.local.retention.ms",
        Long,
        Some("-2"),
        Any,
        "Default local.retention.ms.",
    ),
    def(
        "log.local.retention.bytes",
        Long,
        Some("-2"),
        Any,
        "Default local.retention.bytes.",
    ),
    def(
        "message.max.bytes",
        Int,
        Some("1048588"),
        AtLeast(0),
        "Default max.message.bytes: the largest record batch accepted.",
    ),
    def(
        "compression.type",
        ConfigType::String,
        Some("producer"),
        OneOf(COMPRESSION_TYPES),
        "Default compression.type.",
    ),
    def(
        "compression.gzip.level",
        Int,
        Some("-1"),
        Any,
        "Default compression.gzip.level.",
    ),
    def(
        "compression.lz4.level",
        Int,
        Some("9"),
        Any,
        "Default compression.lz4.level.",
    ),
    def(
        "compression.zstd.level",
        Int,
        Some("3"),
        Any,
        "Default compression.zstd.level.",
    ),
    def(
        "min.insync.replicas",
        Int,
        Some("1"),
        AtLeast(1),
        "Default min.insync.replicas.",
    ),
    def(
        "unclean.leader.election.enable",
        Boolean,
        Some("false"),
        Any,
        "Default unclean.leader.election.enable.",
    ),
];

/// A topic config and the broker config it falls back to.
#[derive(Debug)]
pub struct TopicConfigDef {
    pub def: ConfigDef,
    pub broker_synonym: Option<&'static str>,
}

const fn topic(
    name: &'static str,
    ty: ConfigType,
    default: Option<&'static str>,
    check: Check,
    broker_synonym: Option<&'static str>,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        def: def(name, ty, default, check, doc),
        broker_synonym,
    }
}

/// Topic configs, as Kafka 4.1 lists them.
pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    topic(
        "cleanup.policy",
        List,
        Some("delete"),
        ListOf(CLEANUP_POLICIES),
        Some("log.cleanup.policy"),
        "delete, compact, or both.",
    ),
    topic(
        "compression.type",
        ConfigType::String,
        Some("producer"),
        OneOf(COMPRESSION_TYPES),
        Some("compression.type"),
        "Codec of stored batches; producer keeps what the producer sent.",
    ),
    topic(
        "compression.gzip.level",
        Int,
        Some("-1"),
        Any,
        Some("compression.gzip.level"),
        "Gzip level when the broker compresses.",
    ),
    topic(
        "compression.lz4.level",
        Int,
        Some("9"),
        Any,
        Some("compression.lz4.level"),
        "LZ4 level when the broker compresses.",
    ),
    topic(
        "compression.zstd.level",
        Int,
        Some("3"),
        Any,
        Some("compression.zstd.level"),
        "Zstd level when the broker compresses.",
    ),
    topic(
        "delete.retention.ms",
        Long,
        Some("86400000"),
        AtLeast(0),
        Some("log.cleaner.delete.retention.ms"),
        "How long tombstones are kept on compacted topics.",
    ),
    topic(
        "file.delete.delay.ms",
        Long,
        Some("60000"),
        AtLeast(0),
        Some("log.segment.delete.delay.ms"),
        "Delay before a deleted segment's files are removed.",
    ),
    topic(
        "flush.messages",
        Long,
        Some(LONG_MAX),
        AtLeast(1),
        Some("log.flush.interval.messages"),
        "Force an fsync after this many records.",
    ),
    topic(
        "flush.ms",
        Long,
        Some(LONG_MAX),
        AtLeast(0),
        Some("log.flush.interval.ms"),
        "Force an fsync when unflushed data is this old.",
    ),
    topic(
        "follower.replication.throttled.replicas",
        List,
        Some(""),
        ReplicaList,
        None,
        "Replicas (partition:broker pairs, or * for all) whose fetching, while out of the ISR, counts against their broker's follower.replication.throttled.rate.",
    ),
    topic(
        "index.interval.bytes",
        Int,
        Some("4096"),
        AtLeast(0),
        Some("log.index.interval.bytes"),
        "Bytes between offset index entries.",
    ),
    topic(
        "leader.replication.throttled.replicas",
        List,
        Some(""),
        ReplicaList,
        None,
        "Replicas (partition:broker pairs, or * for all) whose sending to followers out of the ISR counts against their broker's leader.replication.throttled.rate.",
    ),
    topic(
        "local.retention.bytes",
        Long,
        Some("-2"),
        Any,
        Some("log.local.retention.bytes"),
        "Accepted for compatibility (tiered storage).",
    ),
    topic(
        "local.retention.ms",
        Long,
        Some("-2"),
        Any,
        Some("log.local.retention.ms"),
        "Accepted for compatibility (tiered storage).",
    ),
    topic(
        "max.compaction.lag.ms",
        Long,
        Some(LONG_MAX),
        AtLeast(1),
        Some("log.cleaner.max.compaction.lag.ms"),
        "Longest a record stays uncompacted.",
    ),
    topic(
        "max.message.bytes",
        Int,
        Some("1048588"),
        AtLeast(0),
        Some("message.max.bytes"),
        "The largest record batch accepted.",
    ),
    topic(
        "message.timestamp.after.max.ms",
        Long,
        Some("3600000"),
        AtLeast(0),
        Some("log.message.timestamp.after.max.ms"),
        "How far in the future a CreateTime timestamp may be.",
    ),
    topic(
        "message.timestamp.before.max.ms",
        Long,
        Some(LONG_MAX),
        AtLeast(0),
        Some("log.message.timestamp.before.max.ms"),
        "How far in the past a CreateTime timestamp may be.",
    ),
    topic(
        "message.downconversion.enable",
        Boolean,
        Some("true"),
        Any,
        Some("log.message.downconversion.enable"),
        REMOVED_IN_KAFKA_4,
    ),
    topic(
        "message.format.version",
        ConfigType::String,
        Some("3.0-IV1"),
        Any,
        Some("log.message.format.version"),
        REMOVED_IN_KAFKA_4,
    ),
    topic(
        "message.timestamp.difference.max.ms",
        Long,
        Some(LONG_MAX),
        AtLeast(0),
        Some("log.message.timestamp.difference.max.ms"),
        REMOVED_IN_KAFKA_4,
    ),
    topic(
        "message.timestamp.type",
        ConfigType::String,
        Some("CreateTime"),
        OneOf(TIMESTAMP_TYPES),
        Some("log.message.timestamp.type"),
        "CreateTime keeps the producer's timestamp; LogAppendTime uses the broker's clock.",
    ),
    topic(
        "min.cleanable.dirty.ratio",
        Double,
        Some("0.5"),
        Any,
        Some("log.cleaner.min.cleanable.ratio"),
        "Dirty share of the log that triggers compaction.",
    ),
    topic(
        "min.compaction.lag.ms",
        Long,
        Some("0"),
        AtLeast(0),
        Some("log.cleaner.min.compaction.lag.ms"),
        "Shortest a record stays uncompacted.",
    ),
    topic(
        "min.insync.replicas",
        Int,
        Some("1"),
        AtLeast(1),
        Some("min.insync.replicas"),
        "Replicas that must acknowledge an acks=all write.",
    ),
    topic(
        "preallocate",
        Boolean,
        Some("false"),
        Any,
        Some("log.preallocate"),
        "Accepted for compatibility.",
    ),
    topic(
        "remote.storage.enable",
        Boolean,
        Some("false"),
        Any,
        None,
        "Accepted for compatibility (tiered storage).",
    ),
    topic(
        "retention.bytes",
        Long,
        Some("-1"),
        Any,
        Some("log.retention.bytes"),
        "Size limit per partition; -1 for none.",
    ),
    topic(
        "retention.ms",
        Long,
        Some("604800000"),
        AtLeast(-1),
        Some("log.retention.ms"),
        "How long data is kept; -1 keeps it forever.",
    ),
    topic(
        "segment.bytes",
        Int,
        Some("1073741824"),
        AtLeast(14),
        Some("log.segment.bytes"),
        "Segment size before rolling.",
    ),
    topic(
        "segment.index.bytes",
        Int,
        Some("10485760"),
        AtLeast(4),
        Some("log.index.size.max.bytes"),
        "Accepted for compatibility.",
    ),
    topic(
        "segment.jitter.ms",
        Long,
        Some("0"),
        AtLeast(0),
        Some("log.roll.jitter.ms"),
        "Accepted for compatibility.",
    ),
    topic(
        "segment.ms",
        Long,
        Some("604800000"),
        AtLeast(1),
        Some("log.roll.ms"),
        "Roll a segment after this long.",
    ),
    topic(
        "unclean.leader.election.enable",
        Boolean,
        Some("false"),
        Any,
        Some("unclean.leader.election.enable"),
        "Lets a replica outside the ISR lead when no in-sync replica is live (acknowledged writes it lacks are lost). Counts as a topic config or a cluster-wide dynamic config.",
    ),
    topic(
        "write.caching",
        Boolean,
        Some("false"),
        Any,
        None,
        "Kafka's page-cache semantics for this topic (Redpanda's name): acks=all is answered once every in-sync replica has the batch, before any fsyncs it. Faster; a power loss on every replica at once can lose acknowledged writes.",
    ),
];

fn check_value(def: &ConfigDef, value: &str) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::InvalidValue {
        key: def.name.to_string(),
        value: value.to_string(),
        reason,
    };
    let number = match def.ty {
        Boolean => {
            return match value.to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => Err(bad("expected true or false".into())),
            };
        }
        Int | Short | Long => Some(
            match def.ty {
                Int => value
                    .trim()
                    .parse::<i32>()
                    .map(i64::from)
                    .map_err(|e| e.to_string()),
                Short => value
                    .trim()
                    .parse::<i16>()
                    .map(i64::from)
                    .map_err(|e| e.to_string()),
                _ => value.trim().parse::<i64>().map_err(|e| e.to_string()),
            }
            .map_err(|e| bad(format!("expected a {:?}: {e}", def.ty).to_lowercase()))?,
        ),
        Double => {
            value
                .trim()
                .parse::<f64>()
                .map_err(|e| bad(format!("expected a number: {e}")))?;
            None
        }
        ConfigType::String | List | Password => None,
    };
    match def.check {
        Any => Ok(()),
        AtLeast(min) => match number {
            Some(n) if n < min => Err(bad(format!("value must be at least {min}"))),
            _ => Ok(()),
        },
        OneOf(allowed) => {
            if allowed.contains(&value.trim()) {
                Ok(())
            } else {
                Err(bad(format!("must be one of {}", allowed.join(", "))))
            }
        }
        ReplicaList => ThrottledReplicas::parse(value)
            .map(|_| ())
            .map_err(|e| bad(format!("{} {e}", def.name))),
        ListOf(allowed) => {
            let items: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            match items.iter().find(|i| !allowed.contains(i)) {
                Some(i) => Err(bad(format!("'{i}' is not one of {}", allowed.join(", ")))),
                None => Ok(()),
            }
        }
    }
}

fn broker_def(name: &str) -> Option<&'static ConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

pub fn topic_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.def.name == name)
}

/// The definition of a topic config that this module names by a literal.
// Cannot fail for those literals, all in TOPIC_CONFIGS; every topic created in a test
// resolves them through `TopicSettings::resolve`.
#[allow(clippy::expect_used)]
fn known_topic_def(name: &'static str) -> &'static TopicConfigDef {
    topic_def(name).expect("a topic config named in this module is in TOPIC_CONFIGS")
}

/// Parses `server.properties` syntax: `key=value` or `key: value` lines, `#`/`!` comments.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let split = line.find(['=', ':']).ok_or_else(|| {
            ConfigError::Syntax(format!("line {}: expected key=value, got '{line}'", n + 1))
        })?;
        out.push((
            line[..split].trim().to_string(),
            line[split + 1..].trim().to_string(),
        ));
    }
    Ok(out)
}

/// The metadata quorum as configured: its voters (empty: this node alone) and where this
/// node listens for its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumSpec {
    pub voters: BTreeMap<i32, SocketAddr>,
    /// Where this node hears its peers: its controller listener, or for a broker-only node
    /// without one, a port of the system's choosing on its client listener's address, where
    /// the controllers send it the metadata log.
    pub listen: Option<SocketAddr>,
    /// `controller.quorum.bootstrap.servers`: where a broker-only node without a voter
    /// list asks to join.
    pub bootstrap: Vec<SocketAddr>,
}

/// Whether `server` (from `controller.quorum.bootstrap.servers`) is this node's own
/// controller listener `own`: the same port on the same address, or on any address when
/// the listener takes them all.
fn is_own_address(server: SocketAddr, own: SocketAddr) -> bool {
    server.port() == own.port() && (server.ip() == own.ip() || own.ip().is_unspecified())
}

/// Whether the quorum spec names any quorum to be part of or to follow.
fn knows_quorum(quorum: &QuorumSpec) -> bool {
    !quorum.voters.is_empty() || !quorum.bootstrap.is_empty()
}

/// What a node does (`process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRoles {
    /// Serves clients and holds partitions.
    pub broker: bool,
    /// Votes in the metadata quorum and can lead it.
    pub controller: bool,
}

/// The broker's configuration: every key explicitly set, validated, in Kafka's layers.
/// Dynamic layers (set with AlterConfigs/IncrementalAlterConfigs and kept in the metadata
/// log) win over the static one (`--config`, `--set`), which wins over the defaults.
#[derive(Debug, Clone, Default)]
pub struct BrokerConfig {
    explicit: BTreeMap<String, String>,
    /// Cluster-wide dynamic defaults (resource name "").
    dynamic_default: BTreeMap<String, String>,
    /// Dynamic configs of this broker (resource name = node id).
    dynamic_broker: BTreeMap<String, String>,
}

/// Broker configs that can change without a restart: the broker-level synonyms of topic
/// configs (new values apply to every topic without its own override at once), the
/// derived retention and roll settings, and the replication throttles' rates.
pub fn is_dynamic(name: &str) -> bool {
    TOPIC_CONFIGS.iter().any(|d| d.broker_synonym == Some(name))
        || is_per_broker(name)
        || matches!(
            name,
            throttle::LEADER_RATE
                | throttle::FOLLOWER_RATE
                | "log.retention.minutes"
                | "log.retention.hours"
                | "log.roll.hours"
                | "log.roll.jitter.hours"
        )
}

/// Dynamic configs that only make sense for one broker (Kafka's per-broker listener
/// configs): a cluster-wide default of them is refused, as Kafka refuses it.
pub fn is_per_broker(name: &str) -> bool {
    name == "advertised.listeners"
}

impl BrokerConfig {
    /// Builds the config from layers applied in order, later ones winning.
    pub fn from_layers<'a>(
        layers: impl IntoIterator<Item = &'a [(String, String)]>,
    ) -> Result<Self, ConfigError> {
        let mut explicit = BTreeMap::new();
        for layer in layers {
            for (key, value) in layer {
                let def = broker_def(key).ok_or_else(|| ConfigError::UnknownKey(key.clone()))?;
                check_value(def, value)?;
                explicit.insert(key.clone(), value.clone());
            }
        }
        // node.id and broker.id name one thing: either one set gives the other, as Kafka's
        // KafkaConfig.populateSynonyms does, so tools reading broker.id see the node id.
        for (set, alias) in [("node.id", "broker.id"), ("broker.id", "node.id")] {
            if let Some(id) = explicit.get(set).filter(|id| !id.starts_with('-')).cloned() {
                let other = explicit.entry(alias.to_string()).or_insert(id.clone());
                if *other != id && !other.starts_with('-') {
                    return Err(ConfigError::InvalidValue {
                        key: "broker.id".into(),
                        value: explicit["broker.id"].clone(),
                        reason: format!("must equal node.id ({})", explicit["node.id"]),
                    });
                }
            }
        }
        let config = Self {
            explicit,
            ..Self::default()
        };
        config.refuse_what_is_not_served()?;
        config.listen_addr()?;
        config.advertised_addr()?;
        Ok(config)
    }

    /// Settings that ask for something Odradek does not do yet (TLS, SASL, finding the
    /// quorum through bootstrap servers) stop start-up: served as plaintext or as a one-node
    /// cluster, they would quietly break the promise they make. So do roles that contradict
    /// the voters. Kafka's own quick-start `server.properties` (one node, both roles, the
    /// only voter) starts as it is.
    fn refuse_what_is_not_served(&self) -> Result<(), ConfigError> {
        let refuse = |key: &str, value: &str, reason: String| ConfigError::NotSupportedYet {
            key: key.into(),
            value: value.into(),
            reason,
        };
        let roles = self.process_roles()?;
        let quorum = self.quorum()?;
        let node_id = self.node_id();
        let voters_value = || {
            self.value("controller.quorum.voters")
                .unwrap_or_default()
                .to_string()
        };
        let invalid = |key: &str, value: String, reason: String| ConfigError::InvalidValue {
            key: key.into(),
            value,
            reason,
        };
        if !roles.controller && quorum.voters.is_empty() && quorum.bootstrap.is_empty() {
            return Err(invalid(
                "controller.quorum.voters",
                voters_value(),
                "a broker-only node (process.roles=broker) needs the controllers: list them \
                 here or in controller.quorum.bootstrap.servers"
                    .into(),
            ));
        }
        if !roles.controller && quorum.voters.contains_key(&node_id) {
            return Err(invalid(
                "process.roles",
                "broker".into(),
                format!(
                    "node {node_id} is a voter of controller.quorum.voters, so it must have the \
                     controller role"
                ),
            ));
        }
        if roles.controller && !quorum.voters.is_empty() && !quorum.voters.contains_key(&node_id) {
            return Err(invalid(
                "controller.quorum.voters",
                voters_value(),
                format!(
                    "node {node_id} has the controller role but is not a voter; a node that \
                     only serves clients runs with process.roles=broker"
                ),
            ));
        }
        // Others reach a voter that is not alone, a joining controller and every dedicated
        // controller only through its controller listener.
        let others_reach_it =
            quorum.voters.len() > 1 || !quorum.bootstrap.is_empty() || !roles.broker;
        if roles.controller && others_reach_it && quorum.listen.is_none() {
            return Err(invalid(
                "controller.listener.names",
                self.value("controller.listener.names")
                    .unwrap_or_default()
                    .into(),
                "a controller that others reach needs a controller listener: name one of \
                 `listeners` here (or use --controller-listen)"
                    .into(),
            ));
        }
        if roles.controller && !roles.broker && !knows_quorum(&quorum) {
            return Err(invalid(
                "controller.quorum.voters",
                voters_value(),
                "a dedicated controller needs the voters (or, to join a running quorum, \
                 controller.quorum.bootstrap.servers)"
                    .into(),
            ));
        }
        let map = self.security_protocol_map();
        let listeners = self.value("listeners").unwrap_or_default();
        for listener in listeners
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            let Some((name, _)) = listener.split_once("://") else {
                continue;
            };
            // As in Kafka's KRaft mode: with no map set, controller listeners are PLAINTEXT.
            let implicit = self.set_value("listener.security.protocol.map").is_none()
                && self
                    .controller_listener_names()
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(name));
            let protocol = map
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map_or(if implicit { "PLAINTEXT" } else { name }, |(_, p)| {
                    p.as_str()
                });
            if !["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
                .iter()
                .any(|known| protocol.eq_ignore_ascii_case(known))
            {
                return Err(ConfigError::InvalidValue {
                    key: "listener.security.protocol.map".into(),
                    value: self
                        .value("listener.security.protocol.map")
                        .unwrap_or_default()
                        .into(),
                    reason: format!("no security protocol is mapped for listener {name}"),
                });
            }
            if protocol.to_ascii_uppercase().starts_with("SASL") {
                return Err(refuse(
                    "listeners",
                    listeners,
                    format!("listener {name} would use {protocol}; PLAINTEXT and SSL are served"),
                ));
            }
            let controller = self
                .controller_listener_names()
                .iter()
                .any(|c| c.eq_ignore_ascii_case(name));
            if protocol.eq_ignore_ascii_case("SSL") && controller {
                return Err(refuse(
                    "listeners",
                    listeners,
                    format!(
                        "controller listener {name} would use SSL; controllers speak PLAINTEXT"
                    ),
                ));
            }
        }
        let client_listeners = listeners
            .split(',')
            .map(str::trim)
            .filter(|l| {
                l.split_once("://").is_some_and(|(name, _)| {
                    !self
                        .controller_listener_names()
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(name))
                })
            })
            .count();
        if client_listeners > 1 {
            return Err(refuse(
                "listeners",
                listeners,
                "one client listener is served (besides the controller's)".into(),
            ));
        }
        if self.client_security_protocol() == "SSL" {
            self.tls_settings()?;
        }
        Ok(())
    }

    /// The security protocol of the client listener: `PLAINTEXT` or `SSL`.
    pub fn client_security_protocol(&self) -> String {
        let listeners = self.value("listeners").unwrap_or_default();
        let listener = self.client_listener(listeners);
        let Some((name, _)) = listener.split_once("://") else {
            return "PLAINTEXT".into();
        };
        self.security_protocol_map()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or_else(
                || name.to_ascii_uppercase(),
                |(_, p)| p.to_ascii_uppercase(),
            )
    }

    /// The SSL listener's settings, every key checked; the files are read when the
    /// listener starts (`TlsSettings::server_config`).
    pub fn tls_settings(&self) -> Result<TlsSettings, ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::InvalidValue {
            key: key.into(),
            value: self.value(key).unwrap_or_default().into(),
            reason: reason.into(),
        };
        for store in ["ssl.keystore.type", "ssl.truststore.type"] {
            if !self
                .value(store)
                .unwrap_or_default()
                .eq_ignore_ascii_case("PEM")
            {
                return Err(invalid(
                    store,
                    "Odradek reads PEM key and trust stores only: set PEM (JKS and PKCS12 are Java formats; `keytool`/`openssl pkcs12` convert them)",
                ));
            }
        }
        for password in ["ssl.keystore.password", "ssl.truststore.password"] {
            if self.value(password).is_some() {
                return Err(invalid(
                    password,
                    "a PEM store has no password (as in Kafka)",
                ));
            }
        }
        if self.value("ssl.key.password").is_some() {
            return Err(invalid(
                "ssl.key.password",
                "encrypted private keys are not read yet: give the key unencrypted",
            ));
        }
        let pem = |file: &str, inline: &str| -> Result<Option<PemInput>, ConfigError> {
            match (self.value(file), self.value(inline)) {
                (Some(_), Some(_)) => Err(invalid(
                    inline,
                    &format!("set either {file} or {inline}, not both"),
                )),
                (Some(path), None) => Ok(Some(PemInput {
                    config: file.into(),
                    source: PemSource::File(path.into()),
                })),
                (None, Some(text)) => Ok(Some(PemInput {
                    config: inline.into(),
                    source: PemSource::Inline(text.into()),
                })),
                (None, None) => Ok(None),
            }
        };
        let chain = pem("ssl.keystore.location", "ssl.keystore.certificate.chain")?.ok_or_else(|| {
            invalid(
                "ssl.keystore.location",
                "an SSL listener needs the broker's key and certificate: set ssl.keystore.location (or ssl.keystore.certificate.chain and ssl.keystore.key)",
            )
        })?;
        let key = match &chain.source {
            PemSource::File(_) => chain.clone(),
            PemSource::Inline(_) => PemInput {
                config: "ssl.keystore.key".into(),
                source: PemSource::Inline(
                    self.value("ssl.keystore.key")
                        .ok_or_else(|| {
                            invalid(
                                "ssl.keystore.key",
                                "ssl.keystore.certificate.chain needs the key beside it",
                            )
                        })?
                        .into(),
                ),
            },
        };
        let client_auth = match self.value("ssl.client.auth").unwrap_or("none") {
            "required" => ClientAuth::Required,
            "requested" => ClientAuth::Requested,
            _ => ClientAuth::None,
        };
        let list = |key: &str| -> Vec<String> {
            self.value(key)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        Ok(TlsSettings {
            chain,
            key,
            trust: pem("ssl.truststore.location", "ssl.truststore.certificates")?,
            client_auth,
            protocols: list("ssl.enabled.protocols"),
            cipher_suites: list("ssl.cipher.suites"),
        })
    }

    /// `listener.security.protocol.map` as (listener name, security protocol) pairs.
    fn security_protocol_map(&self) -> Vec<(String, String)> {
        self.value("listener.security.protocol.map")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.split_once(':'))
            .map(|(name, protocol)| (name.trim().to_string(), protocol.trim().to_string()))
            .collect()
    }

    /// Listener names the controller uses (`controller.listener.names`): not for clients.
    fn controller_listener_names(&self) -> Vec<&str> {
        self.value("controller.listener.names")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// The metadata quorum this node is a voter of: `controller.quorum.voters`, and where
    /// this node's controller listener is. Unset: this node alone, binding nothing.
    pub fn quorum(&self) -> Result<QuorumSpec, ConfigError> {
        let invalid = |value: &str, reason: String| ConfigError::InvalidValue {
            key: "controller.quorum.voters".into(),
            value: value.into(),
            reason,
        };
        let value = self.value("controller.quorum.voters").unwrap_or_default();
        let mut voters = BTreeMap::new();
        for voter in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let (id, host_port) = voter
                .split_once('@')
                .ok_or_else(|| invalid(value, format!("{voter}: expected ID@HOST:PORT")))?;
            let id: i32 = id
                .parse()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| invalid(value, format!("{voter}: the id is not a node id")))?;
            let addr = std::net::ToSocketAddrs::to_socket_addrs(host_port)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| invalid(value, format!("{voter}: cannot resolve {host_port}")))?;
            if voters.insert(id, addr).is_some() {
                return Err(invalid(value, format!("node {id} is listed twice")));
            }
        }
        let controller = self.controller_listener_names();
        let listen = self
            .value("listeners")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter_map(|l| l.split_once("://"))
            .find(|(name, _)| controller.iter().any(|c| c.eq_ignore_ascii_case(name)))
            .map(|(_, host_port)| {
                std::net::ToSocketAddrs::to_socket_addrs(host_port)
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| ConfigError::InvalidValue {
                        key: "listeners".into(),
                        value: host_port.into(),
                        reason: "the controller listener must be HOST:PORT".into(),
                    })
            })
            .transpose()?;
        let bootstrap_value = self
            .value("controller.quorum.bootstrap.servers")
            .unwrap_or_default();
        let bootstrap = bootstrap_value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|host_port| {
                std::net::ToSocketAddrs::to_socket_addrs(host_port)
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| ConfigError::InvalidValue {
                        key: "controller.quorum.bootstrap.servers".into(),
                        value: bootstrap_value.into(),
                        reason: format!("cannot resolve {host_port}: expected HOST:PORT"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A controller naming itself as its bootstrap server starts a quorum of its own
        // (Kafka 4's quick-start); one naming others joins theirs, as an observer until an
        // AddRaftVoter makes it a voter.
        let controller = self.process_roles()?.controller;
        let bootstrap = if controller {
            bootstrap
                .into_iter()
                .filter(|server| !listen.is_some_and(|own| is_own_address(*server, own)))
                .collect()
        } else {
            bootstrap
        };
        // A node outside a quorum it knows of follows it; with neither voters nor bootstrap
        // servers it is the quorum, alone.
        let knows_a_quorum = !voters.is_empty() || !bootstrap.is_empty();
        let observer = knows_a_quorum && !voters.contains_key(&self.node_id());
        let listen = match listen {
            // A broker-only node may do without a controller listener; a controller may not.
            None if observer && !controller => Some(self.observer_listen()?),
            listen => listen,
        };
        Ok(QuorumSpec {
            voters,
            listen,
            bootstrap,
        })
    }

    /// A broker-only node with no controller listener of its own (Kafka's usual config for
    /// one) hears the controllers on an ephemeral port of the address its clients use.
    fn observer_listen(&self) -> Result<SocketAddr, ConfigError> {
        let listen = self.listen_addr()?;
        let ip = if listen.ip().is_unspecified() {
            let (host, port) = self.advertised_addr()?;
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port as u16))
                .ok()
                .and_then(|mut a| a.next())
                .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip())
        } else {
            listen.ip()
        };
        Ok(SocketAddr::new(ip, 0))
    }

    /// `process.roles`: both unless set.
    pub fn process_roles(&self) -> Result<ProcessRoles, ConfigError> {
        let value = self.value("process.roles").unwrap_or("broker,controller");
        let mut roles = ProcessRoles {
            broker: false,
            controller: false,
        };
        for role in value.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match role {
                "broker" => roles.broker = true,
                "controller" => roles.controller = true,
                other => {
                    return Err(ConfigError::InvalidValue {
                        key: "process.roles".into(),
                        value: value.into(),
                        reason: format!("unknown role '{other}': broker, controller or both"),
                    });
                }
            }
        }
        if !roles.broker && !roles.controller {
            return Err(ConfigError::InvalidValue {
                key: "process.roles".into(),
                value: value.into(),
                reason: "name at least one role: broker, controller or both".into(),
            });
        }
        Ok(roles)
    }

    /// The first of `value`'s listeners that clients use (not a controller listener).
    fn client_listener<'a>(&self, value: &'a str) -> &'a str {
        let controller = self.controller_listener_names();
        let mut listeners = value.split(',').map(str::trim);
        listeners
            .clone()
            .find(|l| {
                l.split_once("://").is_none_or(|(name, _)| {
                    !controller.iter().any(|c| c.eq_ignore_ascii_case(name))
                })
            })
            .or_else(|| listeners.next())
            .unwrap_or("")
    }

    /// The value of a broker config and where it came from.
    pub fn get(&self, name: &str) -> Option<(Option<&str>, ConfigSource)> {
        let def = broker_def(name)?;
        Some(match self.set_value(name) {
            Some((v, source)) => (Some(v), source),
            None => (def.default, ConfigSource::DefaultConfig),
        })
    }

    /// The value of a config set in some layer, the most specific first.
    fn set_value(&self, name: &str) -> Option<(&str, ConfigSource)> {
        self.layers()
            .into_iter()
            .find_map(|(layer, source)| layer.get(name).map(|v| (v.as_str(), source)))
    }

    fn layers(&self) -> [(&BTreeMap<String, String>, ConfigSource); 3] {
        [
            (&self.dynamic_broker, ConfigSource::DynamicBrokerConfig),
            (
                &self.dynamic_default,
                ConfigSource::DynamicDefaultBrokerConfig,
            ),
            (&self.explicit, ConfigSource::StaticBrokerConfig),
        ]
    }

    /// Every layer in which `name` is set, most specific first (DescribeConfigs synonyms).
    pub fn broker_synonyms(&self, name: &str) -> Vec<(String, Option<String>, ConfigSource)> {
        let mut out: Vec<_> = self
            .layers()
            .into_iter()
            .filter_map(|(layer, source)| {
                layer
                    .get(name)
                    .map(|v| (name.to_string(), Some(v.clone()), source))
            })
            .collect();
        if let Some(def) = broker_def(name) {
            out.push((
                name.to_string(),
                def.default.map(str::to_string),
                ConfigSource::DefaultConfig,
            ));
        }
        out
    }

    /// The dynamic layer for `node` (`None`: the cluster-wide default).
    pub fn dynamic(&self, node: Option<i32>) -> &BTreeMap<String, String> {
        if node.is_some() {
            &self.dynamic_broker
        } else {
            &self.dynamic_default
        }
    }

    /// A copy with one dynamic layer replaced; keys and values are validated.
    pub fn with_dynamic(
        &self,
        node: Option<i32>,
        configs: BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        for (key, value) in &configs {
            let def = broker_def(key).ok_or_else(|| ConfigError::UnknownKey(key.clone()))?;
            if !is_dynamic(key) {
                return Err(ConfigError::InvalidValue {
                    key: key.clone(),
                    value: value.clone(),
                    reason: "this config cannot be updated dynamically".into(),
                });
            }
            if node.is_none() && is_per_broker(key) {
                return Err(ConfigError::InvalidValue {
                    key: key.clone(),
                    value: value.clone(),
                    reason: "cannot be updated at the default cluster level: a broker id must be specified".into(),
                });
            }
            check_value(def, value)?;
        }
        let mut next = self.clone();
        match node {
            Some(_) => next.dynamic_broker = configs,
            None => next.dynamic_default = configs,
        }
        next.advertised_addr()?;
        next.check_advertised_listener_names()?;
        Ok(next)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|(v, _)| v)
    }

    fn number(&self, name: &str) -> Option<i64> {
        self.value(name).and_then(|v| v.trim().parse().ok())
    }

    /// A numeric config that has a registered default: the value set in the most specific
    /// layer, else that default. Values are checked against their type when they are set (at
    /// start-up and by IncrementalAlterConfigs) and `numeric_defaults_parse` checks the
    /// defaults, so the fallback below is only there so that a bug cannot take the broker down.
    pub fn int(&self, name: &str) -> i64 {
        let value = self.number(name);
        debug_assert!(value.is_some(), "{name} has no numeric value or default");
        value.unwrap_or_else(|| {
            tracing::error!(config = name, "no numeric value or default; using 0");
            0
        })
    }

    fn flag(&self, name: &str) -> bool {
        self.value(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    pub fn node_id(&self) -> i32 {
        self.explicit
            .get("node.id")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    }

    pub fn data_dir(&self) -> PathBuf {
        let dirs = self
            .value("log.dirs")
            .or_else(|| self.value("log.dir"))
            .unwrap_or(".");
        PathBuf::from(dirs.split(',').next().unwrap_or(".").trim())
    }

    fn listener_addr(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        let first = self.client_listener(value);
        let host_port = first.rsplit_once("://").map_or(first, |(_, hp)| hp);
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(host_port)
            .ok()
            .and_then(|mut a| a.next());
        resolved.ok_or_else(|| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: "expected HOST:PORT or PLAINTEXT://HOST:PORT".into(),
        })
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listener_addr("listeners", self.value("listeners").unwrap_or_default())
    }

    /// The HTTP listener's address (`http.listeners`), or `None` when it is disabled.
    pub fn http_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.value("http.listeners").map(str::trim) {
            None | Some("") => Ok(None),
            Some(value) => self.listener_addr("http.listeners", value).map(Some),
        }
    }

    /// Host and port clients are told to connect to.
    pub fn advertised_addr(&self) -> Result<(String, i32), ConfigError> {
        let Some(value) = self.value("advertised.listeners") else {
            let addr = self.listen_addr()?;
            return Ok((addr.ip().to_string(), i32::from(addr.port())));
        };
        let first = self.client_listener(value);
        let host_port = first.rsplit_once("://").map_or(first, |(_, hp)| hp);
        let parsed = host_port.rsplit_once(':').and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_string(),
                p.parse::<u16>().ok()?,
            ))
        });
        parsed
            .map(|(h, p)| (h, i32::from(p)))
            .ok_or_else(|| ConfigError::InvalidValue {
                key: "advertised.listeners".into(),
                value: value.to_string(),
                reason: "expected HOST:PORT or PLAINTEXT://HOST:PORT".into(),
            })
    }

    /// Kafka's rule: every advertised listener names a listener of `listeners`.
    fn check_advertised_listener_names(&self) -> Result<(), ConfigError> {
        let Some(advertised) = self.value("advertised.listeners") else {
            return Ok(());
        };
        let names = |value: &str| -> Vec<String> {
            value
                .split(',')
                .filter_map(|l| l.trim().split_once("://"))
                .map(|(name, _)| name.to_ascii_uppercase())
                .collect()
        };
        let listeners = names(self.value("listeners").unwrap_or_default());
        match names(advertised)
            .into_iter()
            .find(|n| !listeners.contains(n))
        {
            Some(name) => Err(ConfigError::InvalidValue {
                key: "advertised.listeners".into(),
                value: advertised.into(),
                reason: format!("listener {name} is not one of the listeners config"),
            }),
            None => Ok(()),
        }
    }

    /// Whether `advertised.listeners` is set in some layer (else clients are sent to the
    /// address the listener is bound to).
    pub fn advertised_listeners_set(&self) -> bool {
        self.value("advertised.listeners").is_some()
    }

    /// `broker.rack`, if set.
    pub fn rack(&self) -> Option<String> {
        self.value("broker.rack")
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
    }

    /// `replica.selector.class` names Kafka's `RackAwareReplicaSelector` (KIP-392): consumers
    /// that say their rack are sent to an in-sync replica in it.
    pub fn rack_aware_replica_selector(&self) -> bool {
        self.value("replica.selector.class")
            .is_some_and(|c| c.trim().ends_with("RackAwareReplicaSelector"))
    }

    pub fn auto_leader_rebalance(&self) -> bool {
        self.flag("auto.leader.rebalance.enable")
    }
    pub fn auto_create_topics(&self) -> bool {
        self.flag("auto.create.topics.enable")
    }
    pub fn delete_topic_enable(&self) -> bool {
        self.flag("delete.topic.enable")
    }
    pub fn num_partitions(&self) -> i32 {
        self.int("num.partitions") as i32
    }
    pub fn default_replication_factor(&self) -> i16 {
        self.int("default.replication.factor") as i16
    }
    pub fn retention_check_interval_ms(&self) -> i64 {
        self.int("log.retention.check.interval.ms")
    }
    pub fn cleaner_dedupe_buffer_size(&self) -> u64 {
        self.int("log.cleaner.dedupe.buffer.size").max(1) as u64
    }
    pub fn cleaner_enabled(&self) -> bool {
        self.flag("log.cleaner.enable")
    }
    pub fn cleaner_backoff_ms(&self) -> i64 {
        self.int("log.cleaner.backoff.ms")
    }
    pub fn flush_scheduler_interval_ms(&self) -> i64 {
        self.number("log.flush.scheduler.interval.ms")
            .unwrap_or(i64::MAX)
    }
    /// Connection limits, for the socket server.
    pub fn connection_limits(&self) -> ConnectionLimits {
        let overrides = self
            .value("max.connections.per.ip.overrides")
            .unwrap_or_default()
            .split(',')
            .filter_map(|entry| {
                let (host, count) = entry.trim().rsplit_once(':')?;
                Some((host.trim().parse().ok()?, count.trim().parse().ok()?))
            })
            .collect();
        ConnectionLimits {
            max_connections: self.int("max.connections").max(0) as usize,
            max_per_ip: self.int("max.connections.per.ip").max(0) as usize,
            per_ip_overrides: overrides,
            idle_timeout: std::time::Duration::from_millis(
                self.int("connections.max.idle.ms").max(1) as u64,
            ),
            queued_max_request_bytes: self
                .number("queued.max.request.bytes")
                .filter(|&n| n > 0)
                .map(|n| n as usize),
        }
    }
    pub fn recovery_threads(&self) -> usize {
        self.int("num.recovery.threads.per.data.dir").max(1) as usize
    }

    pub fn fetch_max_bytes(&self) -> usize {
        self.int("fetch.max.bytes") as usize
    }

    pub fn socket_request_max_bytes(&self) -> usize {
        self.int("socket.request.max.bytes") as usize
    }

    /// The broker-level value a topic config falls back to, with its source: Kafka's
    /// derived synonyms (`log.retention.hours` for `retention.ms`) included.
    fn topic_fallback(&self, def: &TopicConfigDef) -> Option<(String, ConfigSource)> {
        let synonym = def.broker_synonym?;
        if let Some((v, source)) = self.set_value(synonym) {
            return Some((v.to_string(), source));
        }
        let scaled = |key: &str, factor: i64| {
            self.set_value(key)
                .and_then(|(v, source)| Some((v.trim().parse::<i64>().ok()?, source)))
                .map(|(n, source)| ((n.saturating_mul(factor)).to_string(), source))
        };
        match def.def.name {
            "retention.ms" => scaled("log.retention.minutes", 60_000)
                .or_else(|| scaled("log.retention.hours", 3_600_000)),
            "segment.ms" => scaled("log.roll.hours", 3_600_000),
            "segment.jitter.ms" => scaled("log.roll.jitter.hours", 3_600_000),
            _ => None,
        }
    }

    /// Resolves a topic config: the topic's own override, else the broker's, else the default.
    pub fn resolve_topic(
        &self,
        def: &TopicConfigDef,
        overrides: &BTreeMap<String, String>,
    ) -> (Option<String>, ConfigSource) {
        if let Some(v) = overrides.get(def.def.name) {
            return (Some(v.clone()), ConfigSource::TopicConfig);
        }
        match self.topic_fallback(def) {
            Some((v, source)) => (Some(v), source),
            None => (
                def.def.default.map(str::to_string),
                ConfigSource::DefaultConfig,
            ),
        }
    }

    /// Every synonym of a topic config in Kafka's precedence order, for DescribeConfigs.
    pub fn topic_synonyms(
        &self,
        def: &TopicConfigDef,
        overrides: &BTreeMap<String, String>,
    ) -> Vec<(String, Option<String>, ConfigSource)> {
        let mut out = Vec::new();
        if let Some(v) = overrides.get(def.def.name) {
            out.push((
                def.def.name.to_string(),
                Some(v.clone()),
                ConfigSource::TopicConfig,
            ));
        }
        if let (Some(synonym), Some((v, source))) = (def.broker_synonym, self.topic_fallback(def)) {
            out.push((synonym.to_string(), Some(v), source));
        }
        // Kafka names the default after the broker config it comes from (log.segment.bytes).
        out.push((
            def.broker_synonym.unwrap_or(def.def.name).to_string(),
            def.def.default.map(str::to_string),
            ConfigSource::DefaultConfig,
        ));
        out
    }
}

/// Limits on client connections (Kafka's names in [`BROKER_CONFIGS`]).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub per_ip_overrides: std::collections::HashMap<std::net::IpAddr, usize>,
    pub idle_timeout: std::time::Duration,
    pub queued_max_request_bytes: Option<usize>,
}

/// Topic configs Kafka 4 removed (KIP-724, KIP-937) that tools and clients written for 3.x
/// still set: accepted, stored and shown as Kafka 3.9 shows them, with no effect.
const REMOVED_IN_KAFKA_4: &str =
    "Removed in Kafka 4; accepted as a no-op for clients and tools written for Kafka 3.x.";

/// Validates `topic`'s config overrides as CreateTopics and AlterConfigs do, warning once
/// about those that have no effect.
pub fn validate_topic_configs(
    topic: &str,
    overrides: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let mut no_ops = Vec::new();
    for (key, value) in overrides {
        let def = topic_def(key).ok_or_else(|| ConfigError::UnknownKey(key.clone()))?;
        check_value(&def.def, value)?;
        if def.def.doc == REMOVED_IN_KAFKA_4 {
            no_ops.push(key.as_str());
        }
    }
    if !no_ops.is_empty() {
        tracing::warn!(topic, configs = ?no_ops, "accepting topic configs that Kafka 4 removed; they have no effect");
    }
    Ok(())
}

/// The settings a topic's partitions run with, resolved from overrides and broker defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    pub log: LogConfig,
    pub max_message_bytes: usize,
    /// `message.timestamp.before.max.ms` / `after.max.ms` (CreateTime topics only).
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// `compression.type`: `None` keeps batches as the producer sent them.
    pub compression: Option<Compression>,
    /// `min.insync.replicas`: in-sync replicas an acks=all write needs.
    pub min_insync_replicas: usize,
    /// `write.caching`: acks=all waits for no fsync, on the leader or the followers.
    pub write_caching: bool,
    /// `leader.` and `follower.replication.throttled.replicas`.
    pub leader_throttled: ThrottledReplicas,
    pub follower_throttled: ThrottledReplicas,
}

impl TopicSettings {
    pub fn resolve(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> Self {
        let number = |name: &'static str| -> i64 {
            let def = known_topic_def(name);
            let (value, _) = broker.resolve_topic(def, overrides);
            value
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| {
                    def.def
                        .default
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(i64::MAX)
                })
        };
        let timestamp_type = match broker
            .resolve_topic(known_topic_def("message.timestamp.type"), overrides)
            .0
        {
            Some(t) if t == "LogAppendTime" => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        };
        let policy = broker
            .resolve_topic(known_topic_def("cleanup.policy"), overrides)
            .0;
        let has = |list: &str, p: &str| list.split(',').any(|x| x.trim() == p);
        // Validated when set; a stored value that no longer parses throttles nothing.
        let throttled = |name: &'static str| {
            broker
                .resolve_topic(known_topic_def(name), overrides)
                .0
                .and_then(|v| ThrottledReplicas::parse(&v).ok())
                .unwrap_or_default()
        };
        Self {
            log: LogConfig {
                segment_bytes: number("segment.bytes").max(1) as u64,
                segment_ms: number("segment.ms"),
                index_interval_bytes: number("index.interval.bytes").max(0) as u64,
                flush_messages: number("flush.messages").max(1) as u64,
                flush_ms: number("flush.ms"),
                retention_ms: number("retention.ms"),
                retention_bytes: number("retention.bytes"),
                delete_retention_enabled: policy.as_ref().is_none_or(|p| has(p, "delete")),
                compact: policy.as_ref().is_some_and(|p| has(p, "compact")),
                delete_retention_ms: number("delete.retention.ms"),
                min_cleanable_dirty_ratio: broker
                    .resolve_topic(known_topic_def("min.cleanable.dirty.ratio"), overrides)
                    .0
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|r| r.is_finite())
                    .unwrap_or(0.5),
                min_compaction_lag_ms: number("min.compaction.lag.ms"),
                max_compaction_lag_ms: number("max.compaction.lag.ms"),
                timestamp_type,
            },
            max_message_bytes: number("max.message.bytes").max(0) as usize,
            timestamp_before_max_ms: number("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: number("message.timestamp.after.max.ms"),
            min_insync_replicas: number("min.insync.replicas").clamp(1, i64::from(i16::MAX))
                as usize,
            write_caching: broker
                .resolve_topic(known_topic_def("write.caching"), overrides)
                .0
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            leader_throttled: throttled("leader.replication.throttled.replicas"),
            follower_throttled: throttled("follower.replication.throttled.replicas"),
            compression: match broker
                .resolve_topic(known_topic_def("compression.type"), overrides)
                .0
                .as_deref()
            {
                Some("uncompressed") => Some(Compression::None),
                Some("gzip") => Some(Compression::Gzip),
                Some("snappy") => Some(Compression::Snappy),
                Some("lz4") => Some(Compression::Lz4),
                Some("zstd") => Some(Compression::Zstd),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn numeric_defaults_parse() {
        let config = BrokerConfig::from_layers([]).unwrap();
        for def in BROKER_CONFIGS {
            if matches!(
                def.ty,
                ConfigType::Int | ConfigType::Short | ConfigType::Long
            ) && def.default.is_some()
            {
                assert!(config.number(def.name).is_some(), "{}", def.name);
            }
        }
    }

    #[test]
    fn later_layers_win_and_unknown_keys_are_named() {
        let file = layer(&[("num.partitions", "3"), ("log.segment.bytes", "2097152")]);
        let set = layer(&[("num.partitions", "4")]);
        let config = BrokerConfig::from_layers([file.as_slice(), set.as_slice()]).unwrap();
        assert_eq!(config.num_partitions(), 4);
        let settings = TopicSettings::resolve(&config, &BTreeMap::new());
        assert_eq!(settings.log.segment_bytes, 2_097_152);
        let err =
            BrokerConfig::from_layers([layer(&[("no.such.key", "1")]).as_slice()]).unwrap_err();
        assert_eq!(err, ConfigError::UnknownKey("no.such.key".into()));
        let err = BrokerConfig::from_layers([layer(&[("num.partitions", "zero")]).as_slice()])
            .unwrap_err();
        assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err}");
    }

    fn start_with(pairs: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_layers([layer(pairs).as_slice()])
    }

    #[test]
    fn node_id_and_broker_id_are_one_setting() {
        for pairs in [&[("node.id", "3")][..], &[("broker.id", "3")][..]] {
            let config = start_with(pairs).unwrap();
            assert_eq!(config.node_id(), 3, "{pairs:?}");
            assert_eq!(config.value("broker.id"), Some("3"), "{pairs:?}");
            assert_eq!(config.value("node.id"), Some("3"), "{pairs:?}");
        }
        let config = start_with(&[]).unwrap();
        assert_eq!(
            (config.node_id(), config.value("broker.id")),
            (1, Some("1"))
        );
        let err = start_with(&[("node.id", "3"), ("broker.id", "4")]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { key, .. } if key == "broker.id"),
            "{err}"
        );
    }

    #[test]
    fn settings_that_promise_sasl_several_listeners_or_a_quorum_stop_start_up() {
        // An SSL listener is served, but not without its key store.
        let err = start_with(&[("listeners", "SSL://127.0.0.1:9093")]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidValue { key, .. } if key == "ssl.keystore.type"),
            "{err}"
        );
        for pairs in [
            &[(
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9094",
            )][..],
            &[(
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9094",
            )],
            &[
                ("listeners", "CLIENTS://127.0.0.1:9092"),
                ("listener.security.protocol.map", "CLIENTS:SASL_PLAINTEXT"),
            ],
        ] {
            let err = start_with(pairs).unwrap_err();
            assert!(
                matches!(err, ConfigError::NotSupportedYet { .. }),
                "{pairs:?}: {err}"
            );
        }
        let err = start_with(&[("listeners", "CONTROLLER://127.0.0.1:9093")]).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err}");
        for pairs in [
            // A voter of several with no controller listener to hear its peers on.
            &[(
                "controller.quorum.voters",
                "1@127.0.0.1:9093,2@127.0.0.2:9093",
            )][..],
            &[(
                "controller.quorum.voters",
                "1@127.0.0.1:9093,1@127.0.0.2:9093",
            )],
            &[("controller.quorum.voters", "one@127.0.0.1:9093")],
            &[("controller.quorum.voters", "1-127.0.0.1:9093")],
            // Roles that contradict the voters, or name no role Kafka knows.
            &[("process.roles", "broker")],
            &[("process.roles", "controller")],
            &[("process.roles", "broker,observer")],
            &[("process.roles", "")],
            &[
                ("node.id", "3"),
                ("listeners", "PLAINTEXT://:9092,CONTROLLER://127.0.0.1:9093"),
                ("controller.listener.names", "CONTROLLER"),
                (
                    "controller.quorum.voters",
                    "1@127.0.0.1:9093,2@127.0.0.2:9093",
                ),
            ],
            &[
                ("node.id", "1"),
                ("process.roles", "broker"),
                ("controller.quorum.voters", "1@127.0.0.1:9093"),
            ],
            // A controller joining a running quorum must have a listener to be reached on.
            &[(
                "controller.quorum.bootstrap.servers",
                "127.0.0.1:9093,127.0.0.2:9093",
            )],
            // A dedicated controller with no quorum to be part of.
            &[
                ("process.roles", "controller"),
                ("listeners", "CONTROLLER://127.0.0.1:9093"),
                ("controller.listener.names", "CONTROLLER"),
            ],
        ] {
            let err = start_with(pairs).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidValue { .. }),
                "{pairs:?}: {err}"
            );
        }
    }

    #[test]
    fn dedicated_controllers_and_broker_only_nodes_take_kafkas_configs() {
        let controller = start_with(&[
            ("node.id", "1"),
            ("process.roles", "controller"),
            ("listeners", "CONTROLLER://127.0.0.1:9093"),
            ("controller.listener.names", "CONTROLLER"),
            ("controller.quorum.voters", "1@127.0.0.1:9093"),
        ])
        .unwrap();
        let roles = controller.process_roles().unwrap();
        assert!(roles.controller && !roles.broker);
        assert_eq!(
            controller.quorum().unwrap().listen,
            Some("127.0.0.1:9093".parse().unwrap())
        );
        // Kafka's broker-only config names no controller listener: the controllers reach
        // it on a port of the system's choosing on its client address.
        let broker = start_with(&[
            ("node.id", "4"),
            ("process.roles", "broker"),
            ("listeners", "PLAINTEXT://127.0.0.4:9092"),
            ("controller.listener.names", "CONTROLLER"),
            (
                "controller.quorum.voters",
                "1@127.0.0.1:9093,2@127.0.0.2:9093",
            ),
        ])
        .unwrap();
        let roles = broker.process_roles().unwrap();
        assert!(roles.broker && !roles.controller);
        assert_eq!(
            broker.quorum().unwrap().listen,
            Some("127.0.0.4:0".parse().unwrap())
        );
        // Kafka 4's way for a broker to find the quorum: any voters' addresses.
        let bootstrapped = start_with(&[
            ("node.id", "5"),
            ("process.roles", "broker"),
            ("listeners", "PLAINTEXT://127.0.0.5:9092"),
            (
                "controller.quorum.bootstrap.servers",
                "127.0.0.1:9093,127.0.0.2:9093",
            ),
        ])
        .unwrap();
        let quorum = bootstrapped.quorum().unwrap();
        assert!(quorum.voters.is_empty());
        assert_eq!(quorum.bootstrap.len(), 2);
        assert_eq!(quorum.listen, Some("127.0.0.5:0".parse().unwrap()));
    }

    #[test]
    fn a_voter_of_a_three_node_quorum_knows_its_peers_and_its_controller_listener() {
        let config = start_with(&[
            ("node.id", "2"),
            (
                "listeners",
                "PLAINTEXT://127.0.0.2:9092,CONTROLLER://127.0.0.2:9093",
            ),
            ("controller.listener.names", "CONTROLLER"),
            (
                "controller.quorum.voters",
                "1@127.0.0.1:9093,2@127.0.0.2:9093,3@127.0.0.3:9093",
            ),
        ])
        .unwrap();
        let quorum = config.quorum().unwrap();
        assert_eq!(quorum.voters.len(), 3);
        assert_eq!(quorum.voters[&3], "127.0.0.3:9093".parse().unwrap());
        assert_eq!(quorum.listen, Some("127.0.0.2:9093".parse().unwrap()));
        assert_eq!(
            config.listen_addr().unwrap(),
            "127.0.0.2:9092".parse().unwrap()
        );
    }

    #[test]
    fn a_one_node_kraft_quick_start_config_starts_and_serves_its_client_listener() {
        let config = start_with(&[
            ("process.roles", "broker,controller"),
            ("node.id", "1"),
            ("controller.quorum.voters", "1@localhost:9093"),
            (
                "listeners",
                "CONTROLLER://127.0.0.1:9093,PLAINTEXT://127.0.0.1:9092",
            ),
            ("controller.listener.names", "CONTROLLER"),
            (
                "listener.security.protocol.map",
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL",
            ),
        ])
        .unwrap();
        assert_eq!(config.listen_addr().unwrap().port(), 9092);
        assert_eq!(config.advertised_addr().unwrap().1, 9092);
        // Kafka 4's quick-start names the quorum by bootstrap server: this node alone.
        let config = start_with(&[
            ("process.roles", "broker,controller"),
            ("node.id", "1"),
            ("controller.quorum.bootstrap.servers", "localhost:9093"),
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
            ),
            ("controller.listener.names", "CONTROLLER"),
        ])
        .unwrap();
        let quorum = config.quorum().unwrap();
        assert!(quorum.voters.is_empty() && quorum.bootstrap.is_empty());
        assert_eq!(config.listen_addr().unwrap().port(), 9092);
    }

    #[test]
    fn topic_configs_fall_back_through_synonyms() {
        let config =
            BrokerConfig::from_layers([layer(&[("log.retention.hours", "1")]).as_slice()]).unwrap();
        let def = topic_def("retention.ms").unwrap();
        assert_eq!(
            config.resolve_topic(def, &BTreeMap::new()),
            (Some("3600000".into()), ConfigSource::StaticBrokerConfig)
        );
        let overrides = BTreeMap::from([("retention.ms".to_string(), "5".to_string())]);
        assert_eq!(
            config.resolve_topic(def, &overrides),
            (Some("5".into()), ConfigSource::TopicConfig)
        );
        let synonyms = config.topic_synonyms(def, &overrides);
        let names: Vec<(&str, ConfigSource)> =
            synonyms.iter().map(|(n, _, s)| (n.as_str(), *s)).collect();
        assert_eq!(
            names,
            vec![
                ("retention.ms", ConfigSource::TopicConfig),
                ("log.retention.ms", ConfigSource::StaticBrokerConfig),
                ("log.retention.ms", ConfigSource::DefaultConfig),
            ],
            "synonyms are named as Kafka names them"
        );
        let def = topic_def("max.message.bytes").unwrap();
        assert_eq!(
            BrokerConfig::default().resolve_topic(def, &BTreeMap::new()),
            (Some("1048588".into()), ConfigSource::DefaultConfig)
        );
    }

    #[test]
    fn properties_files_parse_like_kafkas() {
        let parsed =
            parse_properties("# comment\nnum.partitions=3\n\nlog.dirs : /tmp/x\n").unwrap();
        assert_eq!(
            parsed,
            layer(&[("num.partitions", "3"), ("log.dirs", "/tmp/x")])
        );
        assert!(parse_properties("just-a-word").is_err());
    }

    #[test]
    fn replication_throttles_are_dynamic_validated_and_resolved_per_topic() {
        let config = BrokerConfig::default();
        assert_eq!(config.int(throttle::LEADER_RATE), throttle::UNTHROTTLED);
        let rates = |value: &str| {
            BTreeMap::from([
                (throttle::LEADER_RATE.to_string(), value.to_string()),
                (throttle::FOLLOWER_RATE.to_string(), value.to_string()),
            ])
        };
        for node in [None, Some(1)] {
            let set = config.with_dynamic(node, rates("262144")).unwrap();
            assert_eq!(set.int(throttle::FOLLOWER_RATE), 262_144);
            assert!(
                config.with_dynamic(node, rates("0")).is_ok(),
                "Kafka's atLeast(0)"
            );
            for bad in ["-1", "fast", "1.5"] {
                assert!(
                    matches!(
                        config.with_dynamic(node, rates(bad)),
                        Err(ConfigError::InvalidValue { .. })
                    ),
                    "{bad}"
                );
            }
        }
        let overrides = |value: &str| {
            BTreeMap::from([
                (
                    "leader.replication.throttled.replicas".to_string(),
                    value.to_string(),
                ),
                (
                    "follower.replication.throttled.replicas".to_string(),
                    "0:3".to_string(),
                ),
            ])
        };
        assert!(validate_topic_configs("t", &overrides("0:1,0:2")).is_ok());
        assert!(validate_topic_configs("t", &overrides("*")).is_ok());
        let err = validate_topic_configs("t", &overrides("garbage")).unwrap_err();
        assert!(err.to_string().contains("must be the literal '*'"), "{err}");
        let settings = TopicSettings::resolve(&config, &overrides("*"));
        assert_eq!(settings.leader_throttled, ThrottledReplicas::All);
        assert!(settings.follower_throttled.covers(0, 3));
        assert!(!settings.follower_throttled.covers(0, 1));
        let plain = TopicSettings::resolve(&config, &BTreeMap::new());
        assert_eq!(plain.leader_throttled, ThrottledReplicas::default());
    }
}
