//! The `odradek` binary. `odradek broker` (or a bare `odradek`) runs a broker; later
//! subcommands operate one.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use odradek_broker::Broker;
use odradek_broker::config::{BrokerConfig, parse_properties};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use crate::cli::ClientArgs;

mod cli;
mod cluster;
mod config;
mod consume;
mod group;
mod perf;
mod produce;
mod reassign;
mod repair;
mod topic;

#[derive(Parser)]
#[command(
    name = "odradek",
    version,
    about = "A Kafka-compatible streaming platform"
)]
struct Cli {
    /// Log lines on stderr as text or as one JSON object per line; levels per module come
    /// from RUST_LOG (e.g. RUST_LOG=info,odradek_storage=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Option<Command>,
    /// For a bare `odradek`, which runs a broker; [`misplaced_options`] keeps these from
    /// going with a subcommand.
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (the default when no subcommand is given).
    Broker(BrokerArgs),
    /// Inspect consumer groups: members, committed offsets and lag.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Create, inspect, change and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Show the cluster, move replicas between brokers, drain a broker, change the quorum.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Read and change broker configs (dynamic ones, per broker or cluster-wide).
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Print a shell completion script, e.g. `odradek completions bash > /etc/bash_completion.d/odradek`.
    Completions { shell: clap_complete::Shell },
    /// Write one record per line of stdin to a topic.
    Produce(produce::ProduceArgs),
    /// Print a topic's records through a format template.
    Consume(consume::ConsumeArgs),
    /// Repair a broker's data directory offline (stop the broker first).
    Repair {
        #[command(subcommand)]
        command: repair::RepairCommand,
    },
    /// Measure a cluster's throughput and latency, like Kafka's perf-test tools.
    Perf {
        #[command(subcommand)]
        command: perf::PerfCommand,
    },
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (-1: the broker's num.partitions).
        #[arg(short, long, default_value_t = -1)]
        partitions: i32,
        /// Replication factor (-1: the broker's default.replication.factor).
        #[arg(short, long, default_value_t = -1)]
        replication_factor: i16,
        /// A topic config, e.g. -c retention.ms=60000; repeatable.
        #[arg(short, long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Show partitions, leaders, earliest and latest offsets, and configs that differ from defaults.
    Describe { name: String },
    /// Delete a topic.
    Delete { name: String },
    /// Set or remove topic configs.
    AlterConfig {
        name: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Grow a topic to a number of partitions.
    AddPartitions {
        name: String,
        /// The new total number of partitions.
        #[arg(long)]
        total: i32,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Cluster id, controller, brokers, topic and partition counts, partitions
    /// under-replicated, under min ISR or offline.
    Info,
    /// Each broker's log directories: size per partition, disk space (kafka-log-dirs.sh).
    LogDirs {
        /// Only these topics (repeatable); every topic when none is given.
        #[arg(short, long = "topic", value_name = "TOPIC")]
        topics: Vec<String>,
    },
    /// Make a controller that joined the quorum (started with the voters as its
    /// controller.quorum.bootstrap.servers) a voter (AddRaftVoter, as
    /// `kafka-metadata-quorum.sh add-controller`).
    AddController {
        /// Its node id.
        id: i32,
    },
    /// Remove a voter from the metadata quorum, e.g. a dead controller before it is
    /// replaced (RemoveRaftVoter, as `kafka-metadata-quorum.sh remove-controller`).
    RemoveController {
        /// Its node id.
        id: i32,
    },
    /// Move partitions' replicas between brokers (kafka-reassign-partitions.sh).
    Reassign {
        #[command(subcommand)]
        command: reassign::ReassignCommand,
    },
    /// Move every replica off a broker onto the other live brokers, so it can be stopped.
    Decommission {
        /// The broker's node id.
        id: i32,
        #[command(flatten)]
        throttle: reassign::Throttle,
        /// Start the moves and return; `cluster reassign watch` follows them.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// List every group with its state and type.
    List,
    /// Delete groups that have no members, with their committed offsets.
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Plan (default, --dry-run) or commit (--execute) new offsets for a group without members.
    ResetOffsets(group::ResetArgs),
    /// Show a group's members and, per partition, committed offset, end offset and lag.
    Describe { group: String },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Clone, Default, PartialEq)]
#[command(next_help_heading = "Broker options")]
struct BrokerArgs {
    /// Directory holding all data (Kafka's log.dirs).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to accept clients on.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address given to clients in metadata; defaults to the listen address.
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// This broker's node id.
    #[arg(long, value_name = "N")]
    node_id: Option<i32>,
    /// broker, controller, or both (the default; config `process.roles`). A broker-only
    /// node is not a voter: it receives the metadata log from the voters.
    #[arg(long, value_name = "ROLES")]
    process_roles: Option<String>,
    /// Address to hear the other voters of the metadata quorum on (a CONTROLLER listener).
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<String>,
    /// The metadata quorum's voters, ID@HOST:PORT,… (config `controller.quorum.voters`).
    #[arg(long, value_name = "VOTERS")]
    controller_quorum: Option<String>,
    /// Address of the HTTP listener for /metrics, /health, /ready and the web console
    /// (config `http.listeners`, default 127.0.0.1:9644); an empty value disables it.
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
    /// A Kafka server.properties file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Any broker config by its Kafka name; repeatable; wins over --config.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl BrokerArgs {
    /// Turns the flags into config layers: defaults < --config file < flags and --set.
    fn config(&self) -> anyhow::Result<BrokerConfig> {
        let mut defaults = vec![("log.dirs".to_string(), "./odradek-data".to_string())];
        defaults.retain(|_| self.data_dir.is_none());
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                parse_properties(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => Vec::new(),
        };
        let mut flags = Vec::new();
        if let Some(dir) = &self.data_dir {
            flags.push(("log.dirs".to_string(), dir.display().to_string()));
        }
        let mut listeners: Vec<String> = self
            .listen
            .iter()
            .map(|l| format!("PLAINTEXT://{l}"))
            .collect();
        if let Some(controller) = &self.controller_listen {
            listeners.push(format!("CONTROLLER://{controller}"));
            flags.push((
                "controller.listener.names".to_string(),
                "CONTROLLER".to_string(),
            ));
        }
        if !listeners.is_empty() {
            flags.push(("listeners".to_string(), listeners.join(",")));
        }
        if let Some(voters) = &self.controller_quorum {
            flags.push(("controller.quorum.voters".to_string(), voters.clone()));
        }
        if let Some(advertised) = &self.advertised_listener {
            flags.push((
                "advertised.listeners".to_string(),
                format!("PLAINTEXT://{advertised}"),
            ));
        }
        if let Some(http) = &self.http {
            flags.push(("http.listeners".to_string(), http.clone()));
        }
        if let Some(id) = self.node_id {
            flags.push(("node.id".to_string(), id.to_string()));
        }
        if let Some(roles) = &self.process_roles {
            flags.push(("process.roles".to_string(), roles.clone()));
        }
        for pair in &self.set {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("--set expects KEY=VALUE, got '{pair}'"))?;
            flags.push((key.trim().to_string(), value.trim().to_string()));
        }
        // A data dir from the file must beat the built-in default, so drop the default then.
        if file.iter().any(|(k, _)| k == "log.dirs" || k == "log.dir") {
            defaults.clear();
        }
        Ok(BrokerConfig::from_layers([
            defaults.as_slice(),
            file.as_slice(),
            flags.as_slice(),
        ])?)
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Some(problem) = misplaced_options(&cli, &matches) {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, problem)
            .exit();
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // openraft logs an unreachable peer at every retry; odradek-raft reports
                // it once when it goes and once when it is back.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("info,openraft::replication=off")
                }),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
    let outcome = cli.client.load().and_then(|()| run(cli));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("odradek: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the parser accepts but means nothing, which is refused rather than ignored: broker
/// flags before a subcommand (only a bare `odradek` runs a broker with them), and client
/// options typed for a command that talks to no cluster. Both are global or top-level so
/// that they can go anywhere, which clap cannot narrow per subcommand.
fn misplaced_options(cli: &Cli, matches: &ArgMatches) -> Option<String> {
    let name = matches.subcommand_name().unwrap_or_default();
    if cli.command.is_some() && cli.broker != BrokerArgs::default() {
        return Some(format!(
            "broker options (--data-dir, --listen, --config, ...) run a broker: give them \
             after `odradek broker`, not before `odradek {name}`"
        ));
    }
    let talks_to_cluster = !matches!(
        cli.command,
        None | Some(Command::Broker(_) | Command::Repair { .. } | Command::Completions { .. })
    );
    let typed = ClientArgs::FLAGS
        .iter()
        .find(|(id, _)| matches.value_source(id) == Some(ValueSource::CommandLine));
    match typed {
        Some((_, flag)) if !talks_to_cluster => Some(format!(
            "{flag} is for commands that talk to a cluster, which `odradek {name}` does not"
        )),
        _ => None,
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let client = &cli.client;
    match cli.command {
        None => run_broker(cli.broker),
        Some(Command::Broker(args)) => run_broker(args),
        Some(Command::Repair { command }) => repair::run(command),
        Some(Command::Completions { shell }) => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "odradek", &mut std::io::stdout());
            Ok(())
        }
        Some(Command::Topic { command }) => run_topic(command, client),
        Some(Command::Group { command }) => run_group(command, client),
        Some(Command::Cluster {
            command: ClusterCommand::Info,
        }) => cluster::info(client),
        Some(Command::Cluster {
            command: ClusterCommand::LogDirs { topics },
        }) => cluster::log_dirs(client, &topics),
        Some(Command::Cluster {
            command: ClusterCommand::AddController { id },
        }) => cluster::change_voter(client, id, true),
        Some(Command::Cluster {
            command: ClusterCommand::RemoveController { id },
        }) => cluster::change_voter(client, id, false),
        Some(Command::Cluster {
            command: ClusterCommand::Reassign { command },
        }) => reassign::run(command, client),
        Some(Command::Cluster {
            command:
                ClusterCommand::Decommission {
                    id,
                    throttle,
                    no_wait,
                },
        }) => reassign::decommission(client, id, throttle.throttle, no_wait),
        Some(Command::Config { command }) => config::run(command, client),
        Some(Command::Produce(args)) => produce::run(args, client),
        Some(Command::Consume(args)) => consume::run(args, client),
        Some(Command::Perf { command }) => perf::run(command, client),
    }
}

fn run_group(command: GroupCommand, client: &ClientArgs) -> anyhow::Result<()> {
    match command {
        GroupCommand::List => group::list(client),
        GroupCommand::Describe { group } => group::describe(client, &group),
        GroupCommand::Delete { groups } => group::delete(client, &groups),
        GroupCommand::ResetOffsets(args) => group::reset_offsets(args, client),
    }
}

fn run_topic(command: TopicCommand, client: &ClientArgs) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => topic::create(client, &name, partitions, replication_factor, &configs),
        TopicCommand::List => topic::list(client),
        TopicCommand::Describe { name } => topic::describe(client, &name),
        TopicCommand::Delete { name } => topic::delete(client, &name),
        TopicCommand::AlterConfig { name, set, delete } => {
            topic::alter_config(client, &name, &set, &delete)
        }
        TopicCommand::AddPartitions { name, total } => topic::add_partitions(client, &name, total),
    }
}

fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("odradek")
        .build()?;
    runtime.block_on(async move {
        let roles = config.process_roles()?;
        // A dedicated controller (process.roles=controller) serves no clients.
        let listen = if roles.broker {
            Some(config.listen_addr()?)
        } else {
            None
        };
        // An SSL listener's key, certificates and trust store are read now: a mistake stops
        // start-up naming its config key, not the first client's handshake.
        let tls = if roles.broker && config.client_security_protocol() == "SSL" {
            Some(config.tls_settings()?.server_config()?)
        } else {
            None
        };
        let controller_listen = config.quorum()?.listen;
        let data_dir = config.data_dir();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // The HTTP listener comes up first, so /health answers while storage recovers.
        let (serving, served) = tokio::sync::watch::channel(None);
        let http = match config.http_addr()? {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("HTTP listener on {addr} (http.listeners)"))?;
                let bound = listener.local_addr()?;
                tokio::spawn(odradek_http::serve(listener, served, stopped.clone()));
                bound.to_string()
            }
            None => "disabled".to_string(),
        };
        let broker = tokio::task::block_in_place(|| Broker::open(config))
            .context("opening the data directory")?;
        let listener = match listen {
            Some(listen) => {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("listening on {listen}"))?;
                broker.set_bound_address(listener.local_addr()?);
                Some(listener)
            }
            None => None,
        };
        let broker = Arc::new(broker);
        tokio::spawn(broker.clone().run_metadata_follower());
        if roles.controller {
            tokio::spawn(broker.clone().run_controller());
        }
        let history = Arc::new(odradek_http::History::default());
        tokio::spawn(history.clone().run(broker.clone(), stopped.clone()));
        serving.send_replace(Some(odradek_http::Served {
            broker: broker.clone(),
            history,
        }));
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let leaving = broker.clone();
        let serves_clients = listener.is_some();
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => info!("SIGTERM: shutting down"),
                _ = interrupt.recv() => info!("SIGINT: shutting down"),
            }
            // Leadership moves away before the listener stops, as in Kafka's controlled
            // shutdown: clients are sent elsewhere instead of waiting out timeouts.
            if serves_clients {
                leaving.controlled_shutdown().await;
            }
            let _ = stop.send(true);
        });
        let mut interrupted = stopped.clone();
        let Some(listener) = listener else {
            info!(
                version = env!("CARGO_PKG_VERSION"),
                controller = ?controller_listen,
                http = %http,
                data_dir = %data_dir.display(),
                "odradek controller ready"
            );
            let _ = interrupted.wait_for(|s| *s).await;
            broker.begin_shutdown();
            tokio::task::block_in_place(|| broker.shutdown()).context("clean shutdown")?;
            info!("clean shutdown complete");
            return Ok(());
        };
        // Serving starts once the controller knows this broker (at once on a single node;
        // in a cluster, once a quorum of voters is up).
        tokio::select! {
            () = broker.register() => {}
            _ = interrupted.wait_for(|s| *s) => {}
        }
        tokio::spawn(broker.clone().run_heartbeats());
        tokio::spawn(broker.clone().run_replication());
        info!(
            version = env!("CARGO_PKG_VERSION"),
            listen = %listener.local_addr()?,
            http = %http,
            data_dir = %data_dir.display(),
            "odradek broker ready"
        );
        tokio::spawn(broker.clone().run_flush_scheduler());
        tokio::spawn(broker.clone().run_group_sweeper());
        tokio::spawn(broker.clone().run_transaction_sweeper());
        tokio::spawn(broker.clone().run_retention());
        tokio::spawn(broker.clone().run_recovery_checkpoints());
        tokio::spawn(broker.clone().run_cleaner());
        odradek_broker::serve(listener, tls, broker.clone(), stopped).await;
        broker.controlled_shutdown().await;
        tokio::task::block_in_place(|| broker.shutdown()).context("clean shutdown")?;
        info!("clean shutdown complete");
        Ok(())
    })
}
