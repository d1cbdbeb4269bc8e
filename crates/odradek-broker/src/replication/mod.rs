//! Partition replication with Kafka's ISR protocol: the leader's view of its followers
//! (their log end offsets, when each last caught up), the high watermark it derives from
//! them, and the in-sync replica changes it proposes; the follower side is in [`fetcher`].
//!
//! Odradek's promise is stronger than Kafka's default: a follower fetches an offset only
//! after everything below it is fsync'd there, so the high watermark (and every acks=all
//! acknowledgement) counts only data that is on stable storage on every in-sync replica.

pub mod checkpoint;
pub mod fetcher;
mod handoff;
pub(crate) mod isr;
pub mod throttle;

use std::collections::BTreeMap;
use std::sync::Mutex;

use odradek_storage::LockExt;
use tokio::sync::watch;

use crate::metadata::PartitionPlacement;

/// What acks=all waiters and readers watch: changes whenever the high watermark moves or
/// leadership or the in-sync replicas change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// The high watermark as last computed (see [`ReplicaState::high_watermark`] for the
    /// one readers use).
    pub high_watermark: i64,
    /// The leader epoch this broker leads at, or -1 while it does not lead.
    pub leading_epoch: i32,
    /// This broker is the only in-sync replica (maximal ISR): its log end is the high
    /// watermark.
    pub sole_member: bool,
    /// Members of the committed ISR, for `min.insync.replicas`.
    pub isr_len: usize,
}

/// A follower as its leader sees it.
#[derive(Debug, Clone, Copy)]
struct FollowerProgress {
    /// The offset it last fetched from: everything below is fsync'd there. -1: not heard
    /// from since this broker became leader.
    log_end_offset: i64,
    /// When it last had everything the leader had (Kafka's `lastCaughtUpTimeMs`).
    last_caught_up_ms: i64,
    /// The leader's log end at its previous fetch, and when that was.
    leader_end_at_last_fetch: i64,
    last_fetch_ms: i64,
}

/// The leader's state of one partition at one leader epoch.
#[derive(Debug)]
struct Leadership {
    epoch: i32,
    partition_epoch: i32,
    replicas: Vec<i32>,
    /// The committed ISR.
    isr: Vec<i32>,
    /// An ISR change proposed and not yet seen committed (KIP-497's pending state). Until
    /// it is, the high watermark waits for the union of both ISRs, so a member being
    /// added cannot miss an acknowledged write.
    pending: Option<Vec<i32>>,
    followers: BTreeMap<i32, FollowerProgress>,
    /// The topic's `min.insync.replicas`, capped at the replication factor (Kafka's
    /// effective min ISR, so a topic with fewer replicas still makes progress).
    min_isr: usize,
}

impl Leadership {
    fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        let pending = self.pending.iter().flatten();
        self.isr
            .iter()
            .chain(pending.filter(|r| !self.isr.contains(r)))
            .copied()
    }
}

/// How far a leader's furthest-behind follower is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerLag {
    pub records: i64,
    pub time_ms: i64,
}

/// An ISR change for the controller: applied only at the epochs it was proposed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// One partition's replication state on this broker.
#[derive(Debug)]
pub struct ReplicaState {
    node_id: i32,
    leadership: Mutex<Option<Leadership>>,
    watermark: watch::Sender<Watermark>,
}

impl ReplicaState {
    /// A replica whose high watermark starts at `high_watermark` (its checkpoint, or its log
    /// end for a partition that has only ever had this one replica).
    pub fn new(node_id: i32, high_watermark: i64) -> Self {
        Self {
            node_id,
            leadership: Mutex::new(None),
            watermark: watch::Sender::new(Watermark {
                high_watermark,
                leading_epoch: -1,
                sole_member: false,
                isr_len: 0,
            }),
        }
    }

    pub fn watch(&self) -> watch::Receiver<Watermark> {
        self.watermark.subscribe()
    }

    pub fn watermark(&self) -> Watermark {
        *self.watermark.borrow()
    }

    /// The high watermark readers see, given the log end: the log end itself while this
    /// broker is the only in-sync replica, else the minimum over the ISR (never behind
    /// what was already reported, and never past the log end).
    pub fn high_watermark(&self, log_end: i64) -> i64 {
        let w = self.watermark();
        if w.sole_member {
            log_end
        } else {
            w.high_watermark.min(log_end)
        }
    }

    /// Takes the partition's placement from a new metadata image, and the topic's
    /// `min.insync.replicas`. Returns true when this broker starts leading it (at a new
    /// leader epoch), so that the caller notes the epoch in the log.
    pub fn apply_placement(
        &self,
        placement: &PartitionPlacement,
        min_insync: usize,
        log_end: i64,
        now: i64,
    ) -> bool {
        let mut leadership = self.leadership.lock_or_recover();
        if placement.leader != self.node_id {
            if leadership.take().is_some() || self.watermark().leading_epoch >= 0 {
                let hw = self.high_watermark(log_end);
                self.watermark.send_modify(|w| {
                    *w = Watermark {
                        high_watermark: hw,
                        leading_epoch: -1,
                        sole_member: false,
                        isr_len: 0,
                    }
                });
            }
            return false;
        }
        let started = leadership
            .as_ref()
            .is_none_or(|l| l.epoch != placement.leader_epoch);
        if started {
            // Kafka resets every follower's catch-up time on election: each gets the full
            // lag time to show up before it is dropped from the ISR.
            let followers = placement
                .replicas
                .iter()
                .filter(|r| **r != self.node_id)
                .map(|&r| {
                    let progress = FollowerProgress {
                        log_end_offset: -1,
                        last_caught_up_ms: now,
                        leader_end_at_last_fetch: -1,
                        last_fetch_ms: now,
                    };
                    (r, progress)
                })
                .collect();
            *leadership = Some(Leadership {
                epoch: placement.leader_epoch,
                partition_epoch: placement.partition_epoch,
                replicas: placement.replicas.clone(),
                isr: placement.isr.clone(),
                pending: None,
                followers,
                min_isr: 1,
            });
        }
        if let Some(l) = leadership.as_mut() {
            l.min_isr = min_insync.min(placement.replicas.len()).max(1);
            if l.partition_epoch != placement.partition_epoch || started {
                l.partition_epoch = placement.partition_epoch;
                l.isr = placement.isr.clone();
                // Committed or lost its race: either way the proposal is settled.
                l.pending = None;
                // A reassignment adds and removes followers while this broker leads.
                l.replicas = placement.replicas.clone();
                l.followers.retain(|r, _| placement.replicas.contains(r));
                for &r in &placement.replicas {
                    if r != self.node_id {
                        l.followers.entry(r).or_insert(FollowerProgress {
                            log_end_offset: -1,
                            last_caught_up_ms: now,
                            leader_end_at_last_fetch: -1,
                            last_fetch_ms: now,
                        });
                    }
                }
            }
            self.publish(l, log_end);
        }
        started
    }

    /// Recomputes the high watermark and tells the watchers. The stored value never goes
    /// back: a sole member's log end was what readers saw, so it is kept when a member joins.
    /// While the ISR is smaller than `min.insync.replicas` it stands still (KIP-966): the
    /// replicas that left the ISR then are eligible to lead, so they must have everything
    /// below it.
    fn publish(&self, l: &Leadership, log_end: i64) {
        let previous = self.high_watermark(log_end);
        let advancing = l.isr.len() >= l.min_isr;
        let sole = advancing && l.maximal_isr().all(|r| r == self.node_id);
        let computed = if advancing {
            l.maximal_isr()
                .filter(|r| *r != self.node_id)
                .map(|r| l.followers.get(&r).map_or(-1, |f| f.log_end_offset))
                .fold(log_end, i64::min)
        } else {
            previous
        };
        let next = Watermark {
            high_watermark: computed.max(previous),
            leading_epoch: l.epoch,
            sole_member: sole,
            isr_len: l.isr.len(),
        };
        self.watermark.send_if_modified(|w| {
            let changed = *w != next;
            *w = next;
            changed
        });
    }

    /// A follower fetched from `fetch_offset` while the leader's log ended at `log_end`
    /// (the caller holds the log lock, so no append slips between this check and an ISR
    /// proposal). Returns whether the high watermark moved, and an ISR expansion to propose
    /// when this follower has caught up.
    pub fn follower_fetched(
        &self,
        replica: i32,
        fetch_offset: i64,
        log_end: i64,
        now: i64,
    ) -> (bool, Option<IsrProposal>) {
        let mut leadership = self.leadership.lock_or_recover();
        let Some(l) = leadership.as_mut() else {
            return (false, None);
        };
        let Some(f) = l.followers.get_mut(&replica) else {
            return (false, None);
        };
        // Kafka's rule: caught up now if it has everything, or as of its previous fetch if
        // it has everything the leader had then.
        if fetch_offset >= log_end {
            f.last_caught_up_ms = now;
        } else if fetch_offset >= f.leader_end_at_last_fetch && f.leader_end_at_last_fetch >= 0 {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.leader_end_at_last_fetch = log_end;
        f.last_fetch_ms = now;
        f.log_end_offset = fetch_offset;
        let before = self.watermark();
        let hw = self.high_watermark(log_end);
        let expand =
            (!l.isr.contains(&replica) && l.pending.is_none() && fetch_offset >= hw).then(|| {
                let mut isr = l.isr.clone();
                isr.push(replica);
                isr.sort_unstable();
                l.pending = Some(isr.clone());
                IsrProposal {
                    leader_epoch: l.epoch,
                    partition_epoch: l.partition_epoch,
                    isr,
                }
            });
        self.publish(l, log_end);
        (
            self.watermark().high_watermark != before.high_watermark,
            expand,
        )
    }

    /// An ISR without the followers that have not caught up for `lag_max_ms`, when there
    /// are such (Kafka's `maybeShrinkIsr`); it is proposed, and the union of both ISRs
    /// bounds the high watermark until it commits.
    pub fn lagging(&self, now: i64, lag_max_ms: i64) -> Option<IsrProposal> {
        let mut leadership = self.leadership.lock_or_recover();
        let l = leadership.as_mut()?;
        if l.pending.is_some() {
            return None;
        }
        let isr: Vec<i32> = l
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.node_id
                    || l.followers
                        .get(r)
                        .is_some_and(|f| now - f.last_caught_up_ms <= lag_max_ms)
            })
            .collect();
        if isr.len() == l.isr.len() || isr.is_empty() {
            return None;
        }
        l.pending = Some(isr.clone());
        Some(IsrProposal {
            leader_epoch: l.epoch,
            partition_epoch: l.partition_epoch,
            isr,
        })
    }

    /// Forgets a proposal that could not be sent, so that it is proposed again.
    pub fn proposal_failed(&self, proposal: &IsrProposal) {
        let mut leadership = self.leadership.lock_or_recover();
        if let Some(l) = leadership.as_mut()
            && l.pending.as_ref() == Some(&proposal.isr)
        {
            l.pending = None;
        }
    }

    /// A follower learns the leader's high watermark from each fetch response.
    pub fn set_follower_high_watermark(&self, high_watermark: i64) {
        self.watermark.send_if_modified(|w| {
            let changed = w.leading_epoch < 0 && w.high_watermark != high_watermark;
            if changed {
                w.high_watermark = high_watermark;
            }
            changed
        });
    }

    /// While this broker leads: how far its furthest-behind follower is from `log_end`
    /// in records (a follower not heard from since the election counts from the log start,
    /// 0), and the longest any follower has gone without having everything, at `now`
    /// (Kafka's lag time: what `replica.lag.time.max.ms` is compared with).
    pub fn follower_lag(&self, log_end: i64, now: i64) -> Option<FollowerLag> {
        let leadership = self.leadership.lock_or_recover();
        let l = leadership.as_ref()?;
        let records = l
            .followers
            .values()
            .map(|f| log_end - f.log_end_offset.max(0))
            .max()
            .unwrap_or(0)
            .max(0);
        let time_ms = l
            .followers
            .values()
            .map(|f| now - f.last_caught_up_ms)
            .max()
            .unwrap_or(0)
            .max(0);
        Some(FollowerLag { records, time_ms })
    }

    /// The replicas this broker leads the partition with (None: it does not lead).
    pub fn led_replicas(&self) -> Option<Vec<i32>> {
        self.leadership
            .lock_or_recover()
            .as_ref()
            .map(|l| l.replicas.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(leader: i32, epoch: i32, partition_epoch: i32, isr: &[i32]) -> PartitionPlacement {
        PartitionPlacement {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader,
            leader_epoch: epoch,
            partition_epoch,
            elr: Vec::new(),
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    #[test]
    fn the_high_watermark_is_the_least_log_end_over_the_isr_and_never_goes_back() {
        let state = ReplicaState::new(1, 0);
        assert!(state.apply_placement(&placement(1, 1, 1, &[1, 2, 3]), 1, 10, 0));
        assert_eq!(state.high_watermark(10), 0, "followers not heard from yet");
        state.follower_fetched(2, 10, 10, 1);
        assert_eq!(state.high_watermark(10), 0);
        let (moved, _) = state.follower_fetched(3, 7, 10, 1);
        assert!(moved);
        assert_eq!(state.high_watermark(10), 7);
        // A follower that truncated reports less: the high watermark stays.
        state.follower_fetched(3, 5, 10, 2);
        assert_eq!(state.high_watermark(10), 7);
        assert_eq!(
            state.follower_lag(10, 4),
            Some(FollowerLag {
                records: 5,
                time_ms: 4
            }),
            "3 is furthest behind, and has not had everything since the election at 0"
        );
        // The ISR shrinks to the leader alone: its log end is the high watermark.
        state.apply_placement(&placement(1, 1, 2, &[1]), 1, 12, 3);
        assert_eq!(state.high_watermark(12), 12);
        assert!(state.watermark().sole_member);
    }

    #[test]
    fn the_high_watermark_stands_still_while_the_isr_is_below_min_insync() {
        let state = ReplicaState::new(1, 0);
        state.apply_placement(&placement(1, 1, 1, &[1, 2, 3]), 2, 10, 0);
        state.follower_fetched(2, 10, 10, 1);
        state.follower_fetched(3, 10, 10, 1);
        assert_eq!(state.high_watermark(10), 10);
        // Down to the leader alone: what it appends now stays invisible, as 2 and 3 are
        // eligible to lead with what they have.
        state.apply_placement(&placement(1, 1, 2, &[1]), 2, 15, 2);
        assert_eq!(state.high_watermark(15), 10);
        assert!(!state.watermark().sole_member);
        state.apply_placement(&placement(1, 1, 3, &[1, 2]), 2, 15, 3);
        state.follower_fetched(2, 15, 15, 4);
        assert_eq!(state.high_watermark(15), 15, "back at min.insync.replicas");
        // A min.insync.replicas above the replication factor counts as the factor.
        state.apply_placement(&placement(1, 1, 4, &[1, 2, 3]), 5, 15, 5);
        state.follower_fetched(2, 18, 18, 6);
        state.follower_fetched(3, 18, 18, 6);
        assert_eq!(state.high_watermark(18), 18);
    }

    #[test]
    fn a_caught_up_follower_is_proposed_back_and_bounds_the_watermark_while_pending() {
        let state = ReplicaState::new(1, 0);
        state.apply_placement(&placement(1, 1, 1, &[1]), 1, 10, 0);
        assert_eq!(state.high_watermark(10), 10);
        let (_, expand) = state.follower_fetched(2, 4, 10, 1);
        assert_eq!(expand, None, "behind the high watermark");
        let (_, expand) = state.follower_fetched(2, 10, 10, 2);
        let expand = expand.expect("caught up: proposed");
        assert_eq!(expand.isr, vec![1, 2]);
        assert_eq!(expand.partition_epoch, 1);
        // Pending: the leader's later appends wait for the joining follower.
        assert_eq!(state.high_watermark(15), 10);
        assert!(!state.watermark().sole_member);
        let (_, again) = state.follower_fetched(2, 10, 15, 3);
        assert_eq!(again, None, "one proposal at a time");
    }

    #[test]
    fn a_follower_that_stops_catching_up_is_proposed_out() {
        let state = ReplicaState::new(1, 0);
        state.apply_placement(&placement(1, 1, 1, &[1, 2, 3]), 1, 10, 0);
        state.follower_fetched(2, 10, 10, 100);
        assert_eq!(state.lagging(1_000, 30_000), None);
        let shrink = state.lagging(30_050, 30_000).expect("3 never fetched");
        assert_eq!(shrink.isr, vec![1, 2]);
        state.proposal_failed(&shrink);
        assert!(state.lagging(30_050, 30_000).is_some(), "proposed again");
    }

    #[test]
    fn losing_leadership_stops_waiters_and_keeps_the_watermark() {
        let state = ReplicaState::new(1, 0);
        state.apply_placement(&placement(1, 1, 1, &[1]), 1, 10, 0);
        assert!(!state.apply_placement(&placement(2, 2, 2, &[2]), 1, 10, 1));
        let w = state.watermark();
        assert_eq!(
            state.follower_lag(10, 2),
            None,
            "only a leader has followers"
        );
        assert_eq!(w.leading_epoch, -1);
        assert_eq!(w.high_watermark, 10);
        state.set_follower_high_watermark(12);
        assert_eq!(state.high_watermark(20), 12);
    }
}
