//! Kafka's replication throttles (KIP-73): a cap in bytes per second on what a broker sends
//! to followers as a leader (`leader.replication.throttled.rate`) and fetches as a follower
//! (`follower.replication.throttled.rate`), applied only to the replicas a topic names in
//! `leader.replication.throttled.replicas` / `follower.replication.throttled.replicas` and
//! only while the follower is out of the ISR. A reassignment or a rebuilt broker then cannot
//! starve client traffic of disk and network, while replication that acks=all writes wait
//! for is never slowed.
//!
//! Each side meters what it moved with a [`TokenBucket`]; once it is in debt, throttled
//! partitions are held back (the leader answers them with no records, the follower leaves
//! them out of its fetch) until the rate has paid the debt off.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use odradek_storage::LockExt;

use crate::Broker;
use crate::config::BrokerConfig;
use crate::log_manager::Topic;
use crate::metrics::{Metrics, ThrottleLabel};

pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";

/// Both rates' default, Kafka's `Long.MAX_VALUE`: not throttled.
pub const UNTHROTTLED: i64 = i64::MAX;

/// A throttled-replicas list that is neither `*` nor `partition:broker` pairs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "must be the literal '*' or a list of replicas in the following format: \
     [partitionId]:[brokerId],[partitionId]:[brokerId],..."
)]
pub struct InvalidReplicaList;

/// The replicas a topic's `leader.` or `follower.replication.throttled.replicas` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottledReplicas {
    /// `*`: every replica of every partition.
    All,
    /// `(partition, broker)` pairs; empty (the default) throttles nothing.
    Listed(BTreeSet<(i32, i32)>),
}

impl Default for ThrottledReplicas {
    fn default() -> Self {
        Self::Listed(BTreeSet::new())
    }
}

impl ThrottledReplicas {
    /// Parses Kafka's syntax: `*`, or comma-separated `partition:broker` pairs (spaces
    /// around items and trailing empty items allowed, as Kafka's validator allows them).
    pub fn parse(value: &str) -> Result<Self, InvalidReplicaList> {
        if value.trim() == "*" {
            return Ok(Self::All);
        }
        let items: Vec<&str> = value.split(',').map(str::trim).collect();
        let used = items
            .iter()
            .rposition(|i| !i.is_empty())
            .map_or(0, |last| last + 1);
        let pair = |item: &str| -> Option<(i32, i32)> {
            let (partition, broker) = item.split_once(':')?;
            let id = |s: &str| {
                s.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| s.parse::<i32>().ok())
                    .flatten()
            };
            Some((id(partition)?, id(broker)?))
        };
        items[..used]
            .iter()
            .map(|i| pair(i).ok_or(InvalidReplicaList))
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self::Listed)
    }

    /// Whether `broker`'s replica of `partition` is throttled.
    pub fn covers(&self, partition: i32, broker: i32) -> bool {
        match self {
            Self::All => true,
            Self::Listed(pairs) => pairs.contains(&(partition, broker)),
        }
    }
}

/// A token bucket in bytes that may go into debt: a transfer is let through while the
/// balance is positive and its whole size is charged after, as Kafka checks its quota
/// before a read and records the read's size after. Refilled at the rate, up to one
/// second's worth, so an idle spell buys a burst of at most one second. Over any span
/// `t`, what passes is at most one second's worth, plus `rate × t`, plus the last transfer
/// let through.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Bytes that may pass now; at or below zero nothing may.
    balance: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket (one second's worth at whatever rate it is first asked about).
    pub fn new(now: Instant) -> Self {
        Self {
            balance: f64::INFINITY,
            at: now,
        }
    }

    /// Rates are passed on each call, not stored: they are dynamic configs, and the
    /// balance carries over a change (a debt run up at a high rate is paid at the new one).
    fn refill(&mut self, rate: u64, now: Instant) {
        let rate = rate as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.balance = (self.balance + rate * elapsed).min(rate);
        self.at = self.at.max(now);
    }

    /// `None` while transfers may pass; else how long until they may at `rate`
    /// (`Duration::MAX` at rate 0, which holds throttled replication still).
    pub fn wait(&mut self, rate: u64, now: Instant) -> Option<Duration> {
        self.refill(rate, now);
        if self.balance > 0.0 {
            return None;
        }
        let seconds = if rate == 0 {
            f64::INFINITY
        } else {
            -self.balance / rate as f64
        };
        // At a balance of exactly zero the debt is paid but nothing has accrued yet.
        Some(
            Duration::try_from_secs_f64(seconds)
                .map_or(Duration::MAX, |d| d.max(Duration::from_nanos(1))),
        )
    }

    /// Charges `bytes` that passed.
    pub fn record(&mut self, rate: u64, bytes: usize, now: Instant) {
        self.refill(rate, now);
        self.balance -= bytes as f64;
    }
}

/// One side's throttle on this broker: the rate config it follows, its bucket, and its
/// metrics' label.
#[derive(Debug)]
pub struct ReplicationQuota {
    rate_config: &'static str,
    bucket: Mutex<TokenBucket>,
    label: ThrottleLabel,
}

impl ReplicationQuota {
    fn new(rate_config: &'static str, side: &'static str) -> Self {
        Self {
            rate_config,
            bucket: Mutex::new(TokenBucket::new(Instant::now())),
            label: ThrottleLabel { side },
        }
    }

    /// The configured rate, `None` when unthrottled (the default).
    fn rate(&self, config: &BrokerConfig) -> Option<u64> {
        let rate = config.int(self.rate_config);
        (rate != UNTHROTTLED).then(|| u64::try_from(rate).unwrap_or(0))
    }

    /// `None` while throttled replicas may move; else how long until they may.
    pub fn exceeded(&self, config: &BrokerConfig) -> Option<Duration> {
        let rate = self.rate(config)?;
        self.bucket.lock_or_recover().wait(rate, Instant::now())
    }

    /// Charges bytes a throttled replica moved.
    pub fn record(&self, config: &BrokerConfig, metrics: &Metrics, bytes: usize) {
        if bytes == 0 {
            return;
        }
        if let Some(rate) = self.rate(config) {
            self.bucket
                .lock_or_recover()
                .record(rate, bytes, Instant::now());
            metrics
                .replication_throttled_bytes
                .get_or_create(&self.label)
                .inc_by(bytes as u64);
        }
    }

    /// Counts a partition held back from a fetch.
    pub fn held_back(&self, metrics: &Metrics) {
        metrics
            .replication_throttled_holds
            .get_or_create(&self.label)
            .inc();
    }
}

/// The broker's two throttles.
#[derive(Debug)]
pub struct ReplicationQuotas {
    pub leader: ReplicationQuota,
    pub follower: ReplicationQuota,
}

impl Default for ReplicationQuotas {
    fn default() -> Self {
        Self {
            leader: ReplicationQuota::new(LEADER_RATE, "leader"),
            follower: ReplicationQuota::new(FOLLOWER_RATE, "follower"),
        }
    }
}

/// How a replica stands with one of its broker's replication throttles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttle {
    /// Not named in the topic's throttled-replicas list.
    Off,
    /// Named and in the ISR: its bytes count against the rate (as in Kafka, so that all
    /// replication of throttled replicas stays under it) but are never held back, since
    /// acks=all writes wait for them.
    Counted,
    /// Named and out of the ISR: counted, and held back while the throttle is in debt.
    Holdable,
}

impl Broker {
    fn throttle(&self, named: bool, topic: &str, partition: i32, replica: i32) -> Throttle {
        if !named {
            return Throttle::Off;
        }
        let image = self.logs.image();
        let in_sync = image
            .topic(topic)
            .and_then(|t| t.placement(partition))
            .is_some_and(|p| p.isr.contains(&replica));
        if in_sync {
            Throttle::Counted
        } else {
            Throttle::Holdable
        }
    }

    /// This leader's throttle on what `replica` fetches of `topic`'s `partition`: the
    /// topic's leader list names this broker's replica of it.
    pub(crate) fn leader_throttle(&self, topic: &Topic, partition: i32, replica: i32) -> Throttle {
        let named = topic
            .settings
            .leader_throttled
            .covers(partition, self.node_id);
        self.throttle(named, &topic.name, partition, replica)
    }

    /// This follower's throttle on its fetching of `topic`'s `partition`: the topic's
    /// follower list names this broker's replica of it.
    pub(crate) fn follower_throttle(&self, topic: &str, partition: i32) -> Throttle {
        let named = self.logs.topic(topic).is_some_and(|t| {
            t.settings
                .follower_throttled
                .covers(partition, self.node_id)
        });
        self.throttle(named, topic, partition, self.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(pairs: &[(i32, i32)]) -> ThrottledReplicas {
        ThrottledReplicas::Listed(pairs.iter().copied().collect())
    }

    #[test]
    fn replica_lists_parse_as_kafka_validates_them() {
        assert_eq!(ThrottledReplicas::parse(""), Ok(listed(&[])));
        assert_eq!(ThrottledReplicas::parse(" * "), Ok(ThrottledReplicas::All));
        assert_eq!(
            ThrottledReplicas::parse("0:1, 0:2,3:101,"),
            Ok(listed(&[(0, 1), (0, 2), (3, 101)]))
        );
        for bad in [
            "*,0:1",
            "0:1,,1:2",
            "0-1",
            "0:",
            ":1",
            "a:1",
            "-1:2",
            "0:1:2",
            "0 : 1",
            "99999999999:1",
        ] {
            assert_eq!(
                ThrottledReplicas::parse(bad),
                Err(InvalidReplicaList),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_list_covers_the_named_replicas_and_a_star_every_one() {
        let list = listed(&[(0, 1), (2, 3)]);
        assert!(list.covers(0, 1));
        assert!(list.covers(2, 3));
        assert!(!list.covers(0, 3), "partition 0 on broker 3 is not named");
        assert!(!list.covers(1, 1));
        assert!(!ThrottledReplicas::default().covers(0, 1));
        assert!(ThrottledReplicas::All.covers(7, 9));
    }

    #[test]
    fn the_bucket_lets_a_second_through_then_holds_back_until_the_debt_is_paid() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start);
        let rate = 1000;
        assert_eq!(bucket.wait(rate, start), None, "starts full");
        // One transfer larger than the balance passes whole and leaves a debt.
        bucket.record(rate, 3000, start);
        assert_eq!(bucket.wait(rate, start), Some(Duration::from_secs(2)));
        let later = start + Duration::from_millis(1500);
        assert_eq!(bucket.wait(rate, later), Some(Duration::from_millis(500)));
        assert_eq!(bucket.wait(rate, start + Duration::from_millis(2001)), None);
    }

    #[test]
    fn idle_time_buys_at_most_one_second_of_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start);
        let rate = 1000;
        let hour = start + Duration::from_secs(3600);
        bucket.record(rate, 1000, hour);
        assert!(
            bucket.wait(rate, hour).is_some(),
            "an hour idle is still one second"
        );
    }

    #[test]
    fn the_long_run_rate_is_the_configured_one() {
        // A sender that sends 100 bytes whenever allowed, checked every 10 ms for 10 s.
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start);
        let rate = 5000;
        let mut sent = 0;
        for tick in 0..1000 {
            let now = start + Duration::from_millis(tick * 10);
            if bucket.wait(rate, now).is_none() {
                bucket.record(rate, 100, now);
                sent += 100;
            }
        }
        // 10 s at 5000 B/s, one second's burst, one transfer's overshoot.
        assert!(sent <= 50_000 + 5000 + 100, "{sent}");
        assert!(sent >= 50_000, "{sent}");
    }

    #[test]
    fn a_rate_change_applies_to_the_debt_at_once() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start);
        bucket.record(100, 1100, start);
        assert_eq!(bucket.wait(100, start), Some(Duration::from_secs(10)));
        assert_eq!(bucket.wait(10_000, start), Some(Duration::from_millis(100)));
    }

    #[test]
    fn rate_zero_holds_everything_and_time_does_not_overflow() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start);
        assert_eq!(bucket.wait(0, start), Some(Duration::MAX));
        let far = start + Duration::from_secs(1 << 40);
        assert_eq!(bucket.wait(0, far), Some(Duration::MAX));
        // A huge rate refills (capped) within a millisecond.
        let later = far + Duration::from_millis(1);
        assert_eq!(bucket.wait(u64::MAX, later), None);
        // A clock read out of order (earlier than the last) does not refill.
        bucket.record(1000, 5000, later);
        assert!(bucket.wait(1000, start).is_some());
    }
}
