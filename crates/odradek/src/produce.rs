//! `odradek produce TOPIC`: one record per line of stdin, against Odradek or any Kafka
//! cluster.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use odradek_protocol::batch::{Compression, ProducerRecord, encode_producer_batch};
use serde_json::json;

use crate::cli::{ClientArgs, check, now_ms, s, topic_layout};

/// Lines per round of Produce requests (one batch per partition per round).
const LINES_PER_ROUND: usize = 5000;

#[derive(clap::Args)]
pub struct ProduceArgs {
    topic: String,
    /// Split each line at the first SEP into key and value (lines without it have no key).
    #[arg(short = 'K', long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header on every record, e.g. --header source=cli; repeatable (duplicate keys kept).
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Write every record to this partition (else: murmur2 of the key as Kafka's default
    /// partitioner does, and keyless records stick to one partition per batch).
    #[arg(short, long)]
    partition: Option<i32>,
    #[arg(long, value_enum, default_value_t = Codec::None)]
    compression: Codec,
    /// -1 (all): wait for the records to be durable; 1: the leader has them; 0: no answer.
    #[arg(long, default_value = "-1", allow_negative_numbers = true, value_parser = parse_acks)]
    acks: i16,
}

fn parse_acks(v: &str) -> Result<i16, String> {
    match v {
        "all" | "-1" => Ok(-1),
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err("expected -1 (all), 0 or 1".into()),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<Codec> for Compression {
    fn from(c: Codec) -> Self {
        match c {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), which its default partitioner
/// applies to keys, so keyed records land where Kafka's clients would put them.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` (`toPositive(murmur2) % n`).
fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

fn parse_headers(headers: &[String]) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    headers
        .iter()
        .map(|h| {
            let (k, v) = h
                .split_once('=')
                .with_context(|| format!("--header expects KEY=VALUE, got '{h}'"))?;
            Ok((k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        })
        .collect()
}

pub fn run(options: ProduceArgs, cluster: &ClientArgs) -> anyhow::Result<()> {
    let mut client = cluster.connect(Duration::from_secs(30))?;
    let layout = topic_layout(&mut client, &options.topic, true)?;
    let partitions = layout.leaders.len() as i32;
    if partitions == 0 {
        bail!("topic {} has no partitions", options.topic);
    }
    if let Some(p) = options.partition
        && !layout.leaders.contains_key(&p)
    {
        bail!("topic {} has no partition {p}", options.topic);
    }
    let headers = parse_headers(&options.headers)?;
    let mut written: BTreeMap<i32, (u64, Option<i64>, Option<i64>)> = BTreeMap::new();
    // Keyless records stick to one partition per round, moving on each round, as Kafka's
    // sticky partitioner does per batch.
    let mut sticky = 0i32;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    // A live count for bulk loads from a terminal; indicatif draws nothing when stderr is
    // not a terminal (pipes, CI logs).
    let progress = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {human_pos} records sent in {elapsed}")
            .context("the progress template")?,
    );
    loop {
        let mut round: Vec<String> = Vec::with_capacity(LINES_PER_ROUND);
        for line in lines.by_ref().take(LINES_PER_ROUND) {
            round.push(line.context("reading stdin")?);
        }
        if round.is_empty() {
            break;
        }
        let timestamp = now_ms();
        let mut by_partition: BTreeMap<i32, Vec<ProducerRecord<'_>>> = BTreeMap::new();
        for line in &round {
            let (key, value) = match &options.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(k.as_bytes()), v.as_bytes()),
                    None => (None, line.as_bytes()),
                },
                None => (None, line.as_bytes()),
            };
            let partition = match (options.partition, key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, partitions),
                (None, None) => sticky,
            };
            by_partition
                .entry(partition)
                .or_default()
                .push(ProducerRecord {
                    key,
                    value: Some(value),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.as_slice(), Some(v.as_slice())))
                        .collect(),
                    timestamp,
                });
        }
        sticky = (sticky + 1) % partitions;
        let mut by_leader: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
        for (partition, records) in &by_partition {
            let batch = encode_producer_batch(records, options.compression.into())?;
            by_leader
                .entry(layout.leaders[partition].as_str())
                .or_default()
                .push(
                    PartitionProduceData::default()
                        .with_index(*partition)
                        .with_records(Some(Bytes::from(batch))),
                );
            written.entry(*partition).or_default().0 += records.len() as u64;
        }
        progress.inc(round.len() as u64);
        for (leader, data) in by_leader {
            let build = |_| {
                ProduceRequest::default()
                    .with_acks(options.acks)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![
                        TopicProduceData::default()
                            .with_name(TopicName(s(&options.topic)))
                            .with_topic_id(layout.topic_id)
                            .with_partition_data(data),
                    ])
            };
            if options.acks == 0 {
                client.send_unanswered(Some(leader), build)?;
                continue;
            }
            let (_, response) = client.send(Some(leader), build)?;
            for t in response.responses {
                for p in t.partition_responses {
                    check(
                        p.error_code,
                        &format!("Produce to partition {} of {}", p.index, options.topic),
                    )?;
                    let count = by_partition.get(&p.index).map_or(0, Vec::len) as i64;
                    let entry = written.entry(p.index).or_default();
                    entry.1.get_or_insert(p.base_offset);
                    entry.2 = Some(p.base_offset + count - 1);
                }
            }
        }
    }
    progress.finish_and_clear();
    let total: u64 = written.values().map(|w| w.0).sum();
    if cluster.json() {
        let rows: Vec<_> = written
            .iter()
            .map(|(p, (count, first, last))| {
                json!({"partition": p, "records": count, "first_offset": first, "last_offset": last})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"topic": options.topic, "records": total, "partitions": rows})
            )?
        );
    } else {
        eprintln!(
            "wrote {total} records to {} partitions of {}",
            written.len(),
            options.topic
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }
}
