//! KIP-848 consumer groups: the broker computes assignments with a server-side assignor and
//! reconciles each member towards its target through ConsumerGroupHeartbeat. A partition
//! moves only after its previous owner has acknowledged revoking it, so no partition is
//! ever owned by two members at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::records::{self, CurrentAssignment, MemberMetadata};

/// A member's partitions: topic id → partition indexes.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// A topic as assignors see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
}

#[derive(Debug)]
pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    /// The epoch before the last bump, as Kafka records it.
    previous_epoch: i32,
    pub subscribed_names: Vec<String>,
    pub subscribed_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout: Duration,
    /// What the member was last told it owns.
    pub assigned: Assignment,
    /// The member epoch at which it got each partition it owns (KIP-1251's assignment
    /// epochs): a commit made at an older epoch is still good for a partition it owned then.
    assigned_at: BTreeMap<(Uuid, i32), i32>,
    /// Partitions it was told to give up and has not yet confirmed giving up.
    pub revoking: Assignment,
    /// What the member last reported owning.
    owned: Assignment,
    last_seen: Instant,
}

#[derive(Debug, Default)]
pub struct ConsumerState {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
    /// The topics (with partition counts) the last target assignment was computed from;
    /// a change (new topic matching a regex, added partitions) triggers a new one. Unknown
    /// for a group restored from `__consumer_offsets`: the first heartbeat takes the topics
    /// as they are, so a restart alone does not bump the group epoch.
    subscribed_metadata: Option<Vec<TopicInfo>>,
    pub assignor: String,
    /// What `__consumer_offsets` holds for this group. Records are written as the
    /// difference between it and the live state, so a change whose write failed is
    /// written with the next one instead of being lost from the log.
    persisted: Snapshot,
}

pub struct HeartbeatRequest {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout: Duration,
    pub subscribed_names: Option<Vec<String>>,
    pub subscribed_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Default)]
pub struct HeartbeatResult {
    pub error: Option<(ResponseError, String)>,
    pub member_id: String,
    pub member_epoch: i32,
    /// `None` when the member's assignment did not change since the last response.
    pub assignment: Option<Assignment>,
}

pub const ASSIGNORS: &[&str] = &["uniform", "range"];
/// Member epoch -1: leave the group; -2: a static member leaving temporarily.
const LEAVE_EPOCH: i32 = -1;
const STATIC_LEAVE_EPOCH: i32 = -2;

fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

fn contains(a: &Assignment, topic: &Uuid, p: i32) -> bool {
    a.get(topic).is_some_and(|s| s.contains(&p))
}

fn is_subset(a: &Assignment, of: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.iter().all(|p| contains(of, t, *p)))
}

fn insert(a: &mut Assignment, topic: Uuid, p: i32) {
    a.entry(topic).or_default().insert(p);
}

fn remove_empty(a: &mut Assignment) {
    a.retain(|_, s| !s.is_empty());
}

/// Whether a member subscribes to a topic, by name or by regex (anchored, as Kafka's RE2J
/// `matches` is).
fn subscribes(m: &ConsumerMember, topic: &str) -> bool {
    m.subscribed_names.iter().any(|n| n == topic)
        || m.subscribed_regex.as_deref().is_some_and(|r| {
            regex::Regex::new(&format!("^(?:{r})$")).is_ok_and(|re| re.is_match(topic))
        })
}

/// A group's state as its `__consumer_offsets` records describe it; the records to write
/// are the difference between two of these.
#[derive(Debug, Default, PartialEq)]
pub struct Snapshot {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, (MemberMetadata, CurrentAssignment)>,
    pub target: BTreeMap<String, Assignment>,
}

impl ConsumerMember {
    fn new(id: String, now: Instant) -> Self {
        Self {
            id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            epoch: 0,
            previous_epoch: -1,
            subscribed_names: Vec::new(),
            subscribed_regex: None,
            server_assignor: None,
            rebalance_timeout: Duration::ZERO,
            assigned: Assignment::new(),
            assigned_at: BTreeMap::new(),
            revoking: Assignment::new(),
            owned: Assignment::new(),
            last_seen: now,
        }
    }

    fn metadata(&self) -> MemberMetadata {
        MemberMetadata {
            instance_id: self.instance_id.clone(),
            rack_id: self.rack_id.clone(),
            client_id: self.client_id.clone(),
            client_host: self.client_host.clone(),
            subscribed_names: self.subscribed_names.clone(),
            subscribed_regex: self.subscribed_regex.clone(),
            rebalance_timeout_ms: self.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
            server_assignor: self.server_assignor.clone(),
        }
    }

    fn current(&self, target: Option<&Assignment>) -> CurrentAssignment {
        let state = if !self.revoking.is_empty() {
            records::MEMBER_UNREVOKED_PARTITIONS
        } else if target.is_some_and(|t| *t != self.assigned) {
            records::MEMBER_UNRELEASED_PARTITIONS
        } else {
            records::MEMBER_STABLE
        };
        CurrentAssignment {
            member_epoch: self.epoch,
            previous_member_epoch: self.previous_epoch,
            state,
            assigned: self.assigned.clone(),
            revoking: self.revoking.clone(),
        }
    }
}

impl ConsumerState {
    pub fn persisted(&self) -> &Snapshot {
        &self.persisted
    }

    /// Records that `snapshot` is now what the log holds (written, or replayed from it).
    pub fn mark_persisted(&mut self, snapshot: Snapshot) {
        self.persisted = snapshot;
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            members: self
                .members
                .iter()
                .map(|(id, m)| (id.clone(), (m.metadata(), m.current(self.target.get(id)))))
                .collect(),
            target: self.target.clone(),
        }
    }

    /// The member a replayed record is about, created (its session starting at `now`) by
    /// whichever of its records comes first.
    fn restored_member(&mut self, id: &str, now: Instant) -> &mut ConsumerMember {
        self.members
            .entry(id.to_string())
            .or_insert_with(|| ConsumerMember::new(id.to_string(), now))
    }

    /// Replays a member metadata record; `None` is its tombstone. A restored member's
    /// session starts at `now`.
    pub fn restore_member(&mut self, id: &str, metadata: Option<MemberMetadata>, now: Instant) {
        let Some(md) = metadata else {
            self.members.remove(id);
            self.target.remove(id);
            return;
        };
        if let Some(assignor) = &md.server_assignor {
            self.assignor = assignor.clone();
        }
        let m = self.restored_member(id, now);
        m.instance_id = md.instance_id;
        m.rack_id = md.rack_id;
        m.client_id = md.client_id;
        m.client_host = md.client_host;
        m.subscribed_names = md.subscribed_names;
        m.subscribed_regex = md.subscribed_regex;
        m.rebalance_timeout = Duration::from_millis(md.rebalance_timeout_ms.max(0) as u64);
        m.server_assignor = md.server_assignor;
    }

    /// Replays a member's current assignment record.
    pub fn restore_current(&mut self, id: &str, current: CurrentAssignment, now: Instant) {
        let m = self.restored_member(id, now);
        m.epoch = current.member_epoch;
        m.previous_epoch = current.previous_member_epoch;
        // Until it says otherwise, the member still owns what it was told to own or give
        // up: a pending revocation is not taken as done.
        m.owned = current.assigned.clone();
        for (t, ps) in &current.revoking {
            m.owned.entry(*t).or_default().extend(ps);
        }
        // The records keep no assignment epochs: taken as the member's epoch, so older
        // commits are refused after a restart, as before KIP-1251.
        m.assigned_at = current
            .assigned
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(|p| ((*t, *p), current.member_epoch)))
            .collect();
        m.assigned = current.assigned;
        m.revoking = current.revoking;
    }

    pub fn new(assignor: &str) -> Self {
        Self {
            assignor: assignor.to_string(),
            ..Self::default()
        }
    }

    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || !m.revoking.is_empty())
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Topics any member subscribes to, as they exist now.
    fn subscribed_topics(&self, topics: &[TopicInfo]) -> Vec<TopicInfo> {
        topics
            .iter()
            .filter(|t| self.members.values().any(|m| subscribes(m, &t.name)))
            .cloned()
            .collect()
    }

    /// Recomputes every member's target with the group's assignor.
    fn compute_target(&mut self, topics: &[TopicInfo]) {
        let subscribed = self.subscribed_topics(topics);
        let mut target: BTreeMap<String, Assignment> = self
            .members
            .keys()
            .map(|id| (id.clone(), Assignment::new()))
            .collect();
        if self.assignor == "range" {
            for topic in &subscribed {
                let subscribers: Vec<&String> = self
                    .members
                    .values()
                    .filter(|m| subscribes(m, &topic.name))
                    .map(|m| &m.id)
                    .collect();
                if subscribers.is_empty() {
                    continue;
                }
                let n = subscribers.len() as i32;
                let (per, extra) = (topic.partitions / n, topic.partitions % n);
                let mut next = 0;
                for (i, member) in subscribers.iter().enumerate() {
                    let take = per + i32::from((i as i32) < extra);
                    for p in next..next + take {
                        insert(target.entry((*member).clone()).or_default(), topic.id, p);
                    }
                    next += take;
                }
            }
        } else {
            // Uniform: keep each partition with its current owner while that owner holds no
            // more than the floor of a fair share, then give the rest to the least loaded
            // subscriber (so the remainder lands one each on the lightest members).
            let total: usize = subscribed
                .iter()
                .map(|t| t.partitions.max(0) as usize)
                .sum();
            let share = total / self.members.len().max(1);
            let mut unassigned = Vec::new();
            for topic in &subscribed {
                for p in 0..topic.partitions {
                    let keeper = self.members.values().find(|m| {
                        contains(&m.assigned, &topic.id, p)
                            && subscribes(m, &topic.name)
                            && count(&target[&m.id]) < share
                    });
                    match keeper {
                        Some(m) => insert(target.entry(m.id.clone()).or_default(), topic.id, p),
                        None => unassigned.push((topic, p)),
                    }
                }
            }
            for (topic, p) in unassigned {
                let least = self
                    .members
                    .values()
                    .filter(|m| subscribes(m, &topic.name))
                    .min_by_key(|m| (count(&target[&m.id]), m.id.clone()));
                if let Some(m) = least {
                    insert(target.entry(m.id.clone()).or_default(), topic.id, p);
                }
            }
        }
        self.target = target;
        self.assignment_epoch = self.group_epoch;
        self.subscribed_metadata = Some(subscribed);
    }

    fn bump(&mut self) {
        self.group_epoch += 1;
    }

    pub fn remove_member(&mut self, id: &str) -> bool {
        if self.members.remove(id).is_some() {
            self.target.remove(id);
            self.bump();
            true
        } else {
            false
        }
    }

    /// One ConsumerGroupHeartbeat.
    pub fn heartbeat(
        &mut self,
        req: HeartbeatRequest,
        topics: &[TopicInfo],
        now: Instant,
    ) -> HeartbeatResult {
        let fail = |e: ResponseError, msg: &str, id: &str, epoch: i32| HeartbeatResult {
            error: Some((e, msg.to_string())),
            member_id: id.to_string(),
            member_epoch: epoch,
            assignment: None,
        };
        if matches!(req.member_epoch, LEAVE_EPOCH | STATIC_LEAVE_EPOCH) {
            self.remove_member(&req.member_id);
            return HeartbeatResult {
                member_id: req.member_id,
                member_epoch: req.member_epoch,
                ..HeartbeatResult::default()
            };
        }
        if let Some(assignor) = &req.server_assignor
            && !ASSIGNORS.contains(&assignor.as_str())
        {
            return fail(
                ResponseError::UnsupportedAssignor,
                "unknown server assignor",
                &req.member_id,
                req.member_epoch,
            );
        }
        if let Some(r) = &req.subscribed_regex
            && regex::Regex::new(r).is_err()
        {
            return fail(
                ResponseError::InvalidRegularExpression,
                "invalid subscription regex",
                &req.member_id,
                req.member_epoch,
            );
        }
        let member_id = if req.member_id.is_empty() {
            Uuid::new_v4().simple().to_string()
        } else {
            req.member_id.clone()
        };
        if req.member_epoch == 0 {
            // Joining, or rejoining after being fenced: start from nothing.
            self.members.remove(&member_id);
            if let Some(instance) = &req.instance_id {
                let previous = self
                    .members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(instance))
                    .map(|m| m.id.clone());
                if let Some(previous) = previous {
                    self.members.remove(&previous);
                    self.target.remove(&previous);
                }
            }
            if req.subscribed_names.is_none() && req.subscribed_regex.is_none() {
                return fail(
                    ResponseError::InvalidRequest,
                    "a joining member must send its subscription",
                    &member_id,
                    0,
                );
            }
            let mut member = ConsumerMember::new(member_id.clone(), now);
            member.instance_id = req.instance_id.clone();
            member.rack_id = req.rack_id.clone();
            member.client_id = req.client_id.clone();
            member.client_host = req.client_host.clone();
            self.members.insert(member_id.clone(), member);
            self.bump();
        }
        let Some(member) = self.members.get_mut(&member_id) else {
            return fail(
                ResponseError::UnknownMemberId,
                "unknown member",
                &member_id,
                req.member_epoch,
            );
        };
        // A member one epoch behind that owns nothing beyond its current assignment only
        // missed the response that moved it on (lost, or its records failed to write):
        // Kafka accepts it and sends the whole assignment again.
        let missed_response = req.member_epoch > 0
            && req.member_epoch == member.previous_epoch
            && req
                .owned
                .as_ref()
                .is_some_and(|owned| is_subset(owned, &member.assigned));
        if req.member_epoch > 0 && req.member_epoch != member.epoch && !missed_response {
            return fail(
                ResponseError::FencedMemberEpoch,
                "the member epoch is fenced",
                &member_id,
                req.member_epoch,
            );
        }
        member.last_seen = now;
        member.rebalance_timeout = req.rebalance_timeout;
        let mut changed = false;
        if let Some(names) = req.subscribed_names
            && names != member.subscribed_names
        {
            member.subscribed_names = names;
            changed = true;
        }
        if req.subscribed_regex.is_some() && req.subscribed_regex != member.subscribed_regex {
            member.subscribed_regex = req.subscribed_regex;
            changed = true;
        }
        if let Some(assignor) = req.server_assignor {
            member.server_assignor = Some(assignor);
        }
        if let Some(owned) = req.owned {
            member.owned = owned;
        }
        // Revocations the member has carried out.
        let owned = member.owned.clone();
        member.revoking.retain(|t, ps| {
            ps.retain(|p| contains(&owned, t, *p));
            !ps.is_empty()
        });
        if changed {
            self.bump();
        }
        if let Some(assignor) = self
            .members
            .values()
            .find_map(|m| m.server_assignor.clone())
        {
            self.assignor = assignor;
        }
        if self.subscribed_metadata.is_none() && self.assignment_epoch == self.group_epoch {
            self.subscribed_metadata = Some(self.subscribed_topics(topics));
        }
        if self.assignment_epoch < self.group_epoch
            || Some(self.subscribed_topics(topics)) != self.subscribed_metadata
        {
            if self.assignment_epoch == self.group_epoch {
                self.bump();
            }
            self.compute_target(topics);
        }
        let result = self.reconcile(&member_id, req.member_epoch == 0 || missed_response);
        HeartbeatResult {
            error: None,
            member_id,
            member_epoch: result.0,
            assignment: result.1,
        }
    }

    /// Moves a member one step towards its target. Returns its epoch and its assignment if
    /// it changed or `resend` asks for it.
    fn reconcile(&mut self, id: &str, resend: bool) -> (i32, Option<Assignment>) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        // Partitions other members own or are still giving up.
        let mut taken = Assignment::new();
        for (other_id, other) in &self.members {
            if other_id != id {
                for (t, ps) in other.assigned.iter().chain(other.revoking.iter()) {
                    for p in ps {
                        insert(&mut taken, *t, *p);
                    }
                }
            }
        }
        let epoch = self.assignment_epoch;
        // Only members that just heartbeated are reconciled; one that is gone has nothing.
        let Some(member) = self.members.get_mut(id) else {
            return (epoch, None);
        };
        let before = member.assigned.clone();
        let mut revoke = Assignment::new();
        for (t, ps) in &member.assigned {
            for p in ps {
                if !contains(&target, t, *p) {
                    insert(&mut revoke, *t, *p);
                }
            }
        }
        if count(&revoke) > 0 {
            // First give up what others need; the epoch moves on once that is confirmed.
            for (t, ps) in &revoke {
                if let Some(mine) = member.assigned.get_mut(t) {
                    for p in ps {
                        mine.remove(p);
                        member.assigned_at.remove(&(*t, *p));
                    }
                }
                for p in ps {
                    insert(&mut member.revoking, *t, *p);
                }
            }
            remove_empty(&mut member.assigned);
        } else if member.revoking.is_empty() {
            for (t, ps) in &target {
                for p in ps {
                    if !contains(&taken, t, *p) && !contains(&member.assigned, t, *p) {
                        insert(&mut member.assigned, *t, *p);
                        member.assigned_at.insert((*t, *p), epoch);
                    }
                }
            }
            if member.epoch != epoch {
                member.previous_epoch = member.epoch;
                member.epoch = epoch;
            }
        }
        let assignment = (resend || member.assigned != before).then(|| member.assigned.clone());
        (member.epoch, assignment)
    }

    /// Removes members whose session timed out. Returns their ids.
    pub fn expire(&mut self, now: Instant, session_timeout: Duration) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| now.duration_since(m.last_seen) > session_timeout)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id);
        }
        expired
    }

    /// Checks the member epoch of an offset commit of `partitions` (KIP-848 fencing, with
    /// KIP-1251's assignment epochs, as Kafka 4.3): the current epoch is good; an older one
    /// is good for partitions the member already owned at that epoch (its heartbeat moved
    /// the epoch on while the commit was on its way); a newer one never.
    pub fn check_epoch(
        &self,
        member_id: &str,
        epoch: i32,
        partitions: &[(Uuid, i32)],
    ) -> Option<ResponseError> {
        let Some(m) = self.members.get(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        let owned_then = |p: &(Uuid, i32)| m.assigned_at.get(p).is_some_and(|&at| at <= epoch);
        if epoch == m.epoch || (epoch < m.epoch && partitions.iter().all(owned_then)) {
            None
        } else {
            Some(ResponseError::StaleMemberEpoch)
        }
    }

    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        self.members.values().any(|m| subscribes(m, topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, epoch: i32, owned: Option<Assignment>) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: id.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout: Duration::from_secs(30),
            subscribed_names: (epoch == 0).then(|| vec!["t".to_string()]),
            subscribed_regex: None,
            server_assignor: None,
            owned,
            client_id: "c".into(),
            client_host: "/h".into(),
        }
    }

    #[test]
    fn a_second_member_gets_partitions_only_after_the_first_releases_them() {
        let topic = TopicInfo {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: 4,
        };
        let topics = vec![topic.clone()];
        let now = Instant::now();
        let mut g = ConsumerState::new("uniform");
        let a = g.heartbeat(req("a", 0, None), &topics, now);
        assert_eq!(count(a.assignment.as_ref().unwrap()), 4);
        let all = a.assignment.unwrap();
        let b = g.heartbeat(req("b", 0, None), &topics, now);
        assert_eq!(
            b.assignment.as_ref().map(count),
            Some(0),
            "nothing free yet"
        );
        // a learns to give two up, keeps its epoch until it confirms.
        let a2 = g.heartbeat(req("a", a.member_epoch, None), &topics, now);
        let kept = a2.assignment.unwrap();
        assert_eq!(count(&kept), 2);
        assert_eq!(a2.member_epoch, a.member_epoch);
        assert_eq!(g.state_name(), "Reconciling");
        // b still waits: a has not confirmed.
        let b2 = g.heartbeat(req("b", b.member_epoch, None), &topics, now);
        assert!(b2.assignment.is_none());
        let a3 = g.heartbeat(req("a", a2.member_epoch, Some(kept.clone())), &topics, now);
        assert!(a3.member_epoch > a.member_epoch);
        let b3 = g.heartbeat(req("b", b2.member_epoch, None), &topics, now);
        let given = b3.assignment.unwrap();
        assert_eq!(count(&given), 2);
        for (t, ps) in &given {
            for p in ps {
                assert!(!contains(&kept, t, *p) && contains(&all, t, *p));
            }
        }
        let given: Vec<(Uuid, i32)> = given
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(|p| (*t, *p)))
            .collect();
        assert_eq!(g.check_epoch("b", b3.member_epoch, &given), None);
        assert_eq!(
            g.check_epoch("b", b3.member_epoch - 1, &given),
            Some(ResponseError::StaleMemberEpoch),
            "b got these partitions at its current epoch"
        );
        assert_eq!(
            g.check_epoch("b", b3.member_epoch + 1, &given),
            Some(ResponseError::StaleMemberEpoch)
        );
        // a kept its partitions across the epoch bump: a commit of them at its old epoch
        // (sent before the heartbeat that moved it) still lands (KIP-1251).
        let kept: Vec<(Uuid, i32)> = kept
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(|p| (*t, *p)))
            .collect();
        assert_eq!(g.check_epoch("a", a.member_epoch, &kept), None);
        assert_eq!(
            g.check_epoch("a", a.member_epoch, &given),
            Some(ResponseError::StaleMemberEpoch),
            "a gave those up"
        );
    }

    #[test]
    fn a_member_that_missed_the_response_moving_its_epoch_is_answered_again() {
        let topics = vec![TopicInfo {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: 4,
        }];
        let now = Instant::now();
        let mut g = ConsumerState::new("uniform");
        let a = g.heartbeat(req("a", 0, None), &topics, now);
        let all = a.assignment.unwrap();
        g.heartbeat(req("b", 0, None), &topics, now);
        let a2 = g.heartbeat(req("a", a.member_epoch, Some(all.clone())), &topics, now);
        let kept = a2.assignment.unwrap();
        // This response, moving a to the new epoch, never reaches a.
        let a3 = g.heartbeat(req("a", a2.member_epoch, Some(kept.clone())), &topics, now);
        assert!(a3.member_epoch > a2.member_epoch);

        // a asks again with the epoch it has and what it owns: the new epoch and the whole
        // assignment come back.
        let again = g.heartbeat(req("a", a2.member_epoch, Some(kept.clone())), &topics, now);
        assert_eq!(again.error, None);
        assert_eq!(again.member_epoch, a3.member_epoch);
        assert_eq!(again.assignment, Some(kept.clone()));
        // Owning a partition it was told to give up, or claiming a later epoch, is fenced.
        for (epoch, owned) in [
            (a2.member_epoch, all.clone()),
            (a3.member_epoch + 1, kept.clone()),
        ] {
            let fenced = g.heartbeat(req("a", epoch, Some(owned)), &topics, now);
            assert_eq!(
                fenced.error.map(|(e, _)| e),
                Some(ResponseError::FencedMemberEpoch)
            );
        }
        // Without its owned partitions the claim cannot be checked: fenced too, as in Kafka.
        let unknown = g.heartbeat(req("a", a2.member_epoch, None), &topics, now);
        assert_eq!(
            unknown.error.map(|(e, _)| e),
            Some(ResponseError::FencedMemberEpoch)
        );
    }

    #[test]
    fn range_splits_each_topic_into_contiguous_ranges_and_regexes_match_whole_names() {
        let t1 = TopicInfo {
            name: "orders".into(),
            id: Uuid::new_v4(),
            partitions: 5,
        };
        let t2 = TopicInfo {
            name: "orders-dlq".into(),
            id: Uuid::new_v4(),
            partitions: 2,
        };
        let topics = vec![t1.clone(), t2.clone()];
        let now = Instant::now();
        let mut g = ConsumerState::new("range");
        let mut a = req("a", 0, None);
        a.subscribed_names = None;
        a.subscribed_regex = Some("orders".into());
        let mut b = req("b", 0, None);
        b.subscribed_names = Some(vec!["orders".into()]);
        g.heartbeat(a, &topics, now);
        g.heartbeat(b, &topics, now);
        assert_eq!(
            g.target["a"]
                .get(&t1.id)
                .map(|s| s.iter().copied().collect::<Vec<_>>()),
            Some(vec![0, 1, 2])
        );
        assert_eq!(
            g.target["b"]
                .get(&t1.id)
                .map(|s| s.iter().copied().collect::<Vec<_>>()),
            Some(vec![3, 4])
        );
        assert!(
            !g.target["a"].contains_key(&t2.id),
            "the regex is anchored: orders-dlq does not match"
        );
        let mut bad = req("c", 0, None);
        bad.subscribed_regex = Some("(".into());
        assert_eq!(
            g.heartbeat(bad, &topics, now).error.map(|e| e.0),
            Some(ResponseError::InvalidRegularExpression)
        );
    }
}
