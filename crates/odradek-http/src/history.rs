//! The last minutes of throughput and consumer lag, sampled in memory for the console's
//! charts. Bounded: [`SAMPLES`] points per series and [`MAX_GROUPS`] groups.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use odradek_broker::Broker;
use odradek_storage::LockExt;
use serde::Serialize;
use tokio::sync::watch;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Ten minutes at one sample every five seconds.
pub const SAMPLES: usize = 120;
pub const MAX_GROUPS: usize = 200;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Traffic {
    pub time_ms: i64,
    pub bytes_in_per_sec: f64,
    pub bytes_out_per_sec: f64,
    pub messages_in_per_sec: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LagPoint {
    pub time_ms: i64,
    pub lag: i64,
}

#[derive(Debug, Default)]
struct Series {
    traffic: VecDeque<Traffic>,
    lag: BTreeMap<String, VecDeque<LagPoint>>,
    last_totals: Option<(i64, u64, u64, u64)>,
    /// Per topic: bytes in at the last sample and the rate since the one before.
    topic_bytes_in: BTreeMap<String, (u64, f64)>,
}

/// The chart series. A panic while sampling can at worst leave one sample half-taken,
/// which the next sample overwrites, so a poisoned lock is recovered ([`LockExt`]).
#[derive(Debug, Default)]
pub struct History {
    series: Mutex<Series>,
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() == SAMPLES {
        queue.pop_front();
    }
    queue.push_back(item);
}

impl History {
    pub fn traffic(&self) -> Vec<Traffic> {
        self.series
            .lock_or_recover()
            .traffic
            .iter()
            .copied()
            .collect()
    }

    pub fn lag(&self, group: &str) -> Vec<LagPoint> {
        self.series
            .lock_or_recover()
            .lag
            .get(group)
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Bytes per second produced to `topic` over the last sampling interval.
    pub fn topic_rate(&self, topic: &str) -> f64 {
        self.series
            .lock_or_recover()
            .topic_bytes_in
            .get(topic)
            .map_or(0.0, |(_, rate)| *rate)
    }

    /// Takes one sample now.
    pub fn sample(&self, broker: &Broker) {
        let now = odradek_storage::now_ms();
        let totals = &broker.metrics.totals;
        let current = (
            now,
            totals.bytes_in.get(),
            totals.bytes_out.get(),
            totals.messages_in.get(),
        );
        let groups = broker.group_summaries();
        let topics: Vec<(String, u64)> = broker
            .topic_summaries()
            .into_iter()
            .map(|t| {
                let bytes = broker.metrics.topic_bytes_in(&t.name);
                (t.name, bytes)
            })
            .collect();
        let mut series = self.series.lock_or_recover();
        let elapsed = series
            .last_totals
            .map_or(0.0, |(t, ..)| ((now - t) as f64 / 1000.0).max(0.001));
        let previous = std::mem::take(&mut series.topic_bytes_in);
        for (topic, bytes) in topics {
            let rate = match previous.get(&topic) {
                Some((before, _)) if elapsed > 0.0 => {
                    bytes.saturating_sub(*before) as f64 / elapsed
                }
                _ => 0.0,
            };
            series.topic_bytes_in.insert(topic, (bytes, rate));
        }
        if let Some((t, bin, bout, msgs)) = series.last_totals {
            let secs = ((now - t) as f64 / 1000.0).max(0.001);
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            let point = Traffic {
                time_ms: now,
                bytes_in_per_sec: rate(current.1, bin),
                bytes_out_per_sec: rate(current.2, bout),
                messages_in_per_sec: rate(current.3, msgs),
            };
            push_bounded(&mut series.traffic, point);
        }
        series.last_totals = Some(current);
        series
            .lag
            .retain(|g, _| groups.iter().any(|s| &s.group == g));
        for g in groups.iter().take(MAX_GROUPS) {
            let lag = LagPoint {
                time_ms: now,
                lag: g.total_lag(),
            };
            push_bounded(series.lag.entry(g.group.clone()).or_default(), lag);
        }
    }

    /// Samples every [`SAMPLE_EVERY`] until shutdown.
    pub async fn run(self: Arc<Self>, broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            tokio::task::block_in_place(|| self.sample(&broker));
        }
    }
}
