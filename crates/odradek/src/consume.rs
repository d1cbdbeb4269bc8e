//! `odradek consume TOPIC`: prints records through a format template, against Odradek or
//! any Kafka cluster.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use odradek_client::Client;
use odradek_protocol::batch::{
    complete_batches, decompressed_records, raw_records, record_headers,
    record_offset_and_timestamp,
};

use crate::cli::{ClientArgs, EARLIEST, LATEST, TopicLayout, check, offsets_at, s, topic_layout};
use crate::group::{commit_offsets, committed_offsets, coordinator};

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("start").args(["from_beginning", "offset", "timestamp"]))]
pub struct ConsumeArgs {
    topic: String,
    /// Start at each partition's earliest offset (else at its end, or the group's committed
    /// offset).
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset in every partition read.
    #[arg(long)]
    offset: Option<i64>,
    /// Start at the first record with a timestamp at or after MS (ms since the epoch).
    #[arg(long, value_name = "MS")]
    timestamp: Option<i64>,
    /// Read only this partition (default: all).
    #[arg(short, long)]
    partition: Option<i32>,
    /// Start from this group's committed offsets and commit progress to it (as a simple
    /// consumer: the group must have no active members).
    #[arg(short, long)]
    group: Option<String>,
    /// Exit after printing N records.
    #[arg(short = 'n', long, value_name = "N")]
    count: Option<u64>,
    /// Output template: %k key, %v value, %h headers (k=v,k=v), %p partition, %o offset,
    /// %t timestamp (ms), %T topic, %% percent; \n, \t, \\ escapes.
    #[arg(short, long, default_value = "%v\\n")]
    format: String,
}

enum Start {
    Beginning,
    End,
    Offset(i64),
    Timestamp(i64),
}

impl ConsumeArgs {
    fn start(&self) -> Start {
        match (self.from_beginning, self.offset, self.timestamp) {
            (true, _, _) => Start::Beginning,
            (_, Some(o), _) => Start::Offset(o),
            (_, _, Some(ms)) => Start::Timestamp(ms),
            _ => Start::End,
        }
    }
}

/// One piece of a `--format` template.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Key,
    Value,
    Headers,
    Partition,
    Offset,
    Timestamp,
    Topic,
}

/// Parses a template: `%k` key, `%v` value, `%h` headers (`k=v` joined by `,`), `%p`
/// partition, `%o` offset, `%t` timestamp (ms), `%T` topic, `%%` a percent sign; `\n`,
/// `\t`, `\\` escapes (kcat's spelling, so scripts carry over).
fn parse_format(format: &str) -> anyhow::Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('k') => Piece::Key,
                Some('v') => Piece::Value,
                Some('h') => Piece::Headers,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('t') => Piece::Timestamp,
                Some('T') => Piece::Topic,
                Some('%') => {
                    text.push(b'%');
                    continue;
                }
                other => bail!("unknown placeholder %{} in --format", other.unwrap_or(' ')),
            },
            '\\' => {
                match chars.next() {
                    Some('n') => text.push(b'\n'),
                    Some('t') => text.push(b'\t'),
                    Some('\\') => text.push(b'\\'),
                    other => bail!("unknown escape \\{} in --format", other.unwrap_or(' ')),
                }
                continue;
            }
            c => {
                let mut buf = [0u8; 4];
                text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

struct Shown<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

fn render(pieces: &[Piece], r: &Shown<'_>, out: &mut Vec<u8>) {
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.extend_from_slice(t),
            Piece::Key => out.extend_from_slice(r.key.unwrap_or_default()),
            Piece::Value => out.extend_from_slice(r.value.unwrap_or_default()),
            Piece::Headers => {
                for (i, (k, v)) in r.headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(k);
                    out.push(b'=');
                    out.extend_from_slice(v.unwrap_or_default());
                }
            }
            Piece::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
            Piece::Timestamp => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
            Piece::Topic => out.extend_from_slice(r.topic.as_bytes()),
        }
    }
}

/// Set when SIGINT arrives, so the fetch loop ends (and commits) instead of dying mid-write.
fn interrupted_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the signal handler")?;
    let set = flag.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let Ok(mut sigint) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            else {
                return;
            };
            let _ = ready_tx.send(());
            sigint.recv().await;
            set.store(true, Ordering::SeqCst);
        })
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    Ok(flag)
}

/// Where each partition starts.
fn start_positions(
    client: &mut Client,
    options: &ConsumeArgs,
    partitions: &[i32],
    group_coordinator: Option<&str>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let keys = partitions
        .iter()
        .map(|p| (options.topic.clone(), *p))
        .collect();
    let committed = match (&options.group, group_coordinator) {
        (Some(group), Some(coordinator)) => committed_offsets(client, coordinator, group)?,
        _ => BTreeMap::new(),
    };
    let fallback = match options.start() {
        Start::Beginning => offsets_at(client, &keys, EARLIEST)?,
        Start::End => offsets_at(client, &keys, LATEST)?,
        Start::Timestamp(ms) => {
            let latest = offsets_at(client, &keys, LATEST)?;
            let mut at = offsets_at(client, &keys, ms)?;
            for (k, v) in latest {
                at.entry(k).or_insert(v);
            }
            at
        }
        Start::Offset(o) => keys.iter().map(|k| (k.clone(), o)).collect(),
    };
    partitions
        .iter()
        .map(|p| {
            let key = (options.topic.clone(), *p);
            let offset = committed
                .get(&key)
                .or_else(|| fallback.get(&key))
                .copied()
                .with_context(|| format!("no start offset for partition {p}"))?;
            Ok((*p, offset))
        })
        .collect()
}

/// What one fetch asks for: Kafka's consumer defaults are 1 MiB per partition
/// (`max.partition.fetch.bytes`) and 50 MiB in all (`fetch.max.bytes`); the CLI reads
/// at most 8 MiB a round, which is plenty for printing.
#[derive(Clone, Copy)]
pub struct FetchLimits {
    pub partition_max_bytes: i32,
    pub max_bytes: i32,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            partition_max_bytes: 1 << 20,
            max_bytes: 8 << 20,
        }
    }
}

/// One Fetch to each leader for the partitions at `positions`, one request in flight;
/// `each` gets every partition's record bytes (complete batches, possibly a partial one
/// at the end). A partition error fails the round. Returns the number of fetches sent.
pub fn fetch_round(
    client: &mut Client,
    topic: &str,
    layout: &TopicLayout,
    positions: &BTreeMap<i32, i64>,
    limits: FetchLimits,
    mut each: impl FnMut(i32, &Bytes) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    let mut by_leader: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for (p, offset) in positions {
        let leader = layout
            .leaders
            .get(p)
            .with_context(|| format!("no leader for partition {p}"))?;
        by_leader.entry(leader.as_str()).or_default().push(
            FetchPartition::default()
                .with_partition(*p)
                .with_fetch_offset(*offset)
                .with_partition_max_bytes(limits.partition_max_bytes),
        );
    }
    let fetches = by_leader.len();
    for (leader, fetch) in by_leader {
        let (_, response) = client.send(Some(leader), |_| {
            FetchRequest::default()
                .with_replica_id((-1).into())
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(limits.max_bytes)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(TopicName(s(topic)))
                        .with_topic_id(layout.topic_id)
                        .with_partitions(fetch),
                ])
        })?;
        check(response.error_code, "Fetch")?;
        for t in &response.responses {
            for p in &t.partitions {
                check(
                    p.error_code,
                    &format!("Fetch from partition {}", p.partition_index),
                )?;
                if let Some(records) = &p.records {
                    each(p.partition_index, records)?;
                }
            }
        }
    }
    Ok(fetches)
}

pub fn run(options: ConsumeArgs, cluster: &ClientArgs) -> anyhow::Result<()> {
    let options = &options;
    let pieces = parse_format(&options.format)?;
    let interrupted = interrupted_flag()?;
    let mut client = cluster.connect(Duration::from_secs(30))?;
    let layout = topic_layout(&mut client, &options.topic, false)?;
    let partitions: Vec<i32> = match options.partition {
        Some(p) if layout.leaders.contains_key(&p) => vec![p],
        Some(p) => bail!("topic {} has no partition {p}", options.topic),
        None => layout.leaders.keys().copied().collect(),
    };
    let group_coordinator = match &options.group {
        Some(g) => Some(coordinator(&mut client, g)?),
        None => None,
    };
    let mut positions = start_positions(
        &mut client,
        options,
        &partitions,
        group_coordinator.as_deref(),
    )?;
    let mut shown = 0u64;
    let stdout = std::io::stdout();
    let mut out = Vec::new();
    let done = |shown: u64| options.count.is_some_and(|c| shown >= c);
    while !done(shown) && !interrupted.load(Ordering::SeqCst) {
        let before = positions.clone();
        fetch_round(
            &mut client,
            &options.topic,
            &layout,
            &before,
            FetchLimits::default(),
            |partition, records| {
                let Some(position) = positions.get_mut(&partition) else {
                    return Ok(());
                };
                let mut start = 0;
                for (header, size) in complete_batches(records) {
                    let batch = &records[start..start + size];
                    start += size;
                    if !header.is_control() {
                        let section = decompressed_records(batch)?;
                        for record in raw_records(&section) {
                            let record = record?;
                            let (offset, timestamp) = record_offset_and_timestamp(&header, &record);
                            if offset < *position || done(shown) {
                                continue;
                            }
                            render(
                                &pieces,
                                &Shown {
                                    topic: &options.topic,
                                    partition,
                                    offset,
                                    timestamp,
                                    key: record.key,
                                    value: record.value,
                                    headers: record_headers(&record),
                                },
                                &mut out,
                            );
                            shown += 1;
                            *position = offset + 1;
                        }
                    }
                    if !done(shown) {
                        *position = (*position).max(header.last_offset() + 1);
                    }
                }
                Ok(())
            },
        )?;
        let mut lock = stdout.lock();
        if lock.write_all(&out).and_then(|()| lock.flush()).is_err() {
            // The reader went away (e.g. `| head`): stop as if interrupted.
            break;
        }
        out.clear();
        if let (Some(group), Some(coordinator)) = (&options.group, &group_coordinator)
            && positions != before
        {
            commit_offsets(
                &mut client,
                coordinator,
                group,
                &options.topic,
                layout.topic_id,
                &positions,
            )?;
        }
    }
    Ok(())
}
