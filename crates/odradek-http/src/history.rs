//! The last minutes of throughput and consumer lag, sampled in memory for the console's
//! charts. Bounded: [`TRAFFIC_SAMPLES`] throughput points, [`SAMPLES`] lag points per group
//! and [`MAX_GROUPS`] groups.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use odradek_broker::Broker;
use odradek_storage::LockExt;
use serde::Serialize;
use tokio::sync::watch;

/// Throughput is three counters, cheap to read, so it is sampled often: the chart has a
/// shape seconds after a broker starts or a load begins, not after a minute.
pub const TRAFFIC_EVERY: Duration = Duration::from_secs(1);
/// Ten minutes at one sample a second.
pub const TRAFFIC_SAMPLES: usize = 600;
/// Lag and per-topic rates walk every group and partition (taking their locks), so they are
/// sampled less often.
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
    last_totals: Option<Totals>,
    /// Per topic: bytes in at the last sample and the rate since the one before.
    topic_bytes_in: BTreeMap<String, (u64, f64)>,
    /// When `topic_bytes_in` was sampled (ms).
    last_topic_sample: Option<i64>,
}

/// The chart series. A panic while sampling can at worst leave one sample half-taken,
/// which the next sample overwrites, so a poisoned lock is recovered ([`LockExt`]).
#[derive(Debug, Default)]
pub struct History {
    series: Mutex<Series>,
}

/// The broker-wide counters at one time: (ms, bytes in, bytes out, messages in).
type Totals = (i64, u64, u64, u64);

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, limit: usize) {
    if queue.len() == limit {
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

    /// Takes one throughput sample now.
    pub fn sample_traffic(&self, broker: &Broker) {
        let totals = &broker.metrics.totals;
        self.record_traffic((
            odradek_storage::now_ms(),
            totals.bytes_in.get(),
            totals.bytes_out.get(),
            totals.messages_in.get(),
        ));
    }

    /// Adds the rates since the previous totals as a point; the first totals only start the
    /// series.
    fn record_traffic(&self, current: Totals) {
        let mut series = self.series.lock_or_recover();
        if let Some((t, bin, bout, msgs)) = series.last_totals {
            let secs = ((current.0 - t) as f64 / 1000.0).max(0.001);
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            let point = Traffic {
                time_ms: current.0,
                bytes_in_per_sec: rate(current.1, bin),
                bytes_out_per_sec: rate(current.2, bout),
                messages_in_per_sec: rate(current.3, msgs),
            };
            push_bounded(&mut series.traffic, point, TRAFFIC_SAMPLES);
        }
        series.last_totals = Some(current);
    }

    /// Takes one sample of each group's lag and each topic's rate now.
    pub fn sample_lag_and_topics(&self, broker: &Broker) {
        let now = odradek_storage::now_ms();
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
            .last_topic_sample
            .map_or(0.0, |t| ((now - t) as f64 / 1000.0).max(0.001));
        series.last_topic_sample = Some(now);
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
        series
            .lag
            .retain(|g, _| groups.iter().any(|s| &s.group == g));
        for g in groups.iter().take(MAX_GROUPS) {
            let lag = LagPoint {
                time_ms: now,
                lag: g.total_lag(),
            };
            push_bounded(series.lag.entry(g.group.clone()).or_default(), lag, SAMPLES);
        }
    }

    /// Samples throughput every [`TRAFFIC_EVERY`], and lag and topic rates every
    /// [`SAMPLE_EVERY`], until shutdown.
    pub async fn run(self: Arc<Self>, broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(TRAFFIC_EVERY);
        // After a stall, one late sample covers the gap (rates are per elapsed time); a burst
        // of catch-up samples would add points of nothing.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let slow_every = (SAMPLE_EVERY.as_millis() / TRAFFIC_EVERY.as_millis()).max(1) as u64;
        for tick in 0u64.. {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            self.sample_traffic(&broker);
            if tick % slow_every == 0 {
                tokio::task::block_in_place(|| self.sample_lag_and_topics(&broker));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_traffic_sample_after_the_first_adds_a_rate_point_and_the_oldest_go() {
        let history = History::default();
        history.record_traffic((0, 0, 0, 0));
        assert!(history.traffic().is_empty(), "one sample is no rate yet");
        history.record_traffic((1000, 2048, 512, 10));
        history.record_traffic((3000, 2048 + 4096, 512, 30));
        let points = history.traffic();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].time_ms, 1000);
        assert_eq!(points[0].bytes_in_per_sec, 2048.0);
        assert_eq!(points[0].bytes_out_per_sec, 512.0);
        assert_eq!(
            points[1].bytes_in_per_sec, 2048.0,
            "per second of the 2 s between"
        );
        assert_eq!(points[1].messages_in_per_sec, 10.0);
        for i in 0..TRAFFIC_SAMPLES as i64 {
            history.record_traffic((4000 + i * 1000, 0, 0, 0));
        }
        let points = history.traffic();
        assert_eq!(points.len(), TRAFFIC_SAMPLES);
        assert_eq!(
            points.last().map(|p| p.time_ms),
            Some(4000 + (TRAFFIC_SAMPLES as i64 - 1) * 1000)
        );
    }
}
