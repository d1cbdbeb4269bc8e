//! One classic consumer group and Kafka's rebalance state machine:
//! Empty → PreparingRebalance → CompletingRebalance → Stable (→ Dead when deleted).
//!
//! The methods here are synchronous and take the current time, so the whole protocol can
//! be driven deterministically; the coordinator holds the lock and does the I/O.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names Kafka reports in ListGroups and DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
        }
    }
}

/// Group limits from the broker config.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    pub max_size: usize,
    pub initial_rebalance_delay: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// For the leader: every member's id, instance id and metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(error: ResponseError, member_id: &str) -> Self {
        Self {
            error: Some(error),
            generation: -1,
            member_id: member_id.to_string(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(error: ResponseError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }
}

pub enum Outcome<T> {
    Now(T),
    Wait(oneshot::Receiver<T>),
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// A committed offset as OffsetCommit stores it and OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Where this commit's record is in `__consumer_offsets` (not part of the record):
    /// between a transactional and a plain commit of one partition, the later record wins.
    pub record_offset: i64,
}

/// What a JoinGroup asks for.
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ makes new members ask again with an assigned id (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    static_members: HashMap<String, String>,
    /// Ids handed out with MEMBER_ID_REQUIRED, waiting for the member's second JoinGroup
    /// until their deadline (the join's session timeout, as in Kafka).
    pending_members: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    initial_delay_deadline: Option<Instant>,
    pub offsets: HashMap<(String, i32), CommittedOffset>,
    pub state_timestamp: i64,
    /// Set when the group uses the KIP-848 consumer protocol instead of the classic one.
    pub consumer: Option<super::consumer::ConsumerState>,
}

fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl Group {
    /// Makes `offset` the partition's committed offset unless a commit whose record is later
    /// in `__consumer_offsets` is already applied. Commits become visible in an order other
    /// than the log's (a transaction's at its marker; concurrent commits as their writes
    /// become durable), and Kafka keeps the latest record.
    pub fn commit_offset(&mut self, topic: String, partition: i32, offset: CommittedOffset) {
        let key = (topic, partition);
        if self
            .offsets
            .get(&key)
            .is_none_or(|current| current.record_offset < offset.record_offset)
        {
            self.offsets.insert(key, offset);
        }
    }

    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_deadline: None,
            offsets: HashMap::new(),
            state_timestamp: odradek_storage::now_ms(),
            consumer: None,
        }
    }

    /// Restores a group from its persisted metadata: members keep their assignments and
    /// get a full session timeout to heartbeat, as after a coordinator failover in Kafka.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_member(
        &mut self,
        id: String,
        instance_id: Option<String>,
        client_id: String,
        client_host: String,
        rebalance_timeout: Duration,
        session_timeout: Duration,
        subscription: Bytes,
        assignment: Bytes,
        now: Instant,
    ) {
        let protocol = self.protocol.clone().unwrap_or_default();
        if let Some(instance) = &instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        let member = Member {
            id: id.clone(),
            instance_id,
            client_id,
            client_host,
            session_timeout,
            rebalance_timeout,
            protocols: vec![(protocol, subscription)],
            assignment,
            last_seen: now,
            join_waiter: None,
            sync_waiter: None,
        };
        self.members.insert(id, member);
    }

    fn set_state(&mut self, state: GroupState) {
        self.state = state;
        self.state_timestamp = odradek_storage::now_ms();
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.consumer.as_ref().is_none_or(|c| c.members.is_empty())
    }

    /// "classic" or "consumer", as ListGroups reports the group type.
    pub fn group_type(&self) -> &'static str {
        if self.consumer.is_some() {
            "consumer"
        } else {
            "classic"
        }
    }

    /// The state name ListGroups reports, for either protocol.
    pub fn state_name(&self) -> &'static str {
        match &self.consumer {
            Some(c) => c.state_name(),
            None => self.state.name(),
        }
    }

    /// The member a static instance id currently maps to, when it differs from `member_id`.
    fn fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id.is_some_and(|i| self.static_members.get(i).is_some_and(|m| m != member_id))
    }

    /// Protocols every member (and the candidate) supports.
    fn supports_common_protocol(&self, protocols: &[(String, Bytes)]) -> bool {
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| &p == n))
            })
            .collect();
        // Each member votes for its most preferred candidate; most votes wins, ties go to
        // the first candidate in the first member's order.
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n))
                && let Some(v) = votes.iter_mut().find(|(_, c)| *c == name)
            {
                v.0 += 1;
            }
        }
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .into_iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| c.clone())
    }

    fn current_join_result(&self, member_id: &str) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            skip_assignment: false,
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| {
                        (
                            m.id.clone(),
                            m.instance_id.clone(),
                            m.metadata_for(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    fn prepare_rebalance(&mut self, now: Instant, limits: &GroupLimits) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        let was_empty = self.state == GroupState::Empty;
        if self.state != GroupState::PreparingRebalance {
            let longest = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default();
            self.rebalance_deadline = Some(now + longest);
            self.initial_delay_deadline =
                was_empty.then(|| (now + limits.initial_rebalance_delay).min(now + longest));
            self.set_state(GroupState::PreparingRebalance);
        } else if let (Some(delay), Some(deadline)) =
            (self.initial_delay_deadline, self.rebalance_deadline)
        {
            // A member joining during the initial delay extends it (Kafka's InitialDelayedJoin).
            if now < delay {
                self.initial_delay_deadline =
                    Some((now + limits.initial_rebalance_delay).min(deadline));
            }
        }
    }

    /// Ends the join phase if every member has rejoined (and any initial delay is over) or
    /// the rebalance timeout has passed. Returns true when the group changed generation.
    pub fn try_complete_join(&mut self, now: Instant) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        // As Kafka's coordinator: a member handed an id (MEMBER_ID_REQUIRED) that has not
        // joined with it yet is waited for too, or the group would form a generation
        // without it and need another as soon as it arrives.
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some())
            && self.pending_members.is_empty();
        let delay_over = self.initial_delay_deadline.is_none_or(|d| now >= d);
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !((all_joined && delay_over) || timed_out) {
            return false;
        }
        // Members that did not rejoin in time leave the group.
        let absent: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in absent {
            self.remove_member(&id);
        }
        self.generation += 1;
        self.rebalance_deadline = None;
        self.initial_delay_deadline = None;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty);
            return true;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.set_state(GroupState::CompletingRebalance);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.current_join_result(&id);
            if let Some(w) = self.members.get_mut(&id).and_then(|m| m.join_waiter.take()) {
                let _ = w.send(result);
            }
        }
        true
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let mut member = self.members.remove(id)?;
        if let Some(instance) = &member.instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(id)
        {
            self.static_members.remove(instance);
        }
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinResult::error(ResponseError::UnknownMemberId, id));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ResponseError::UnknownMemberId));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        Some(member)
    }

    fn add_member(
        &mut self,
        id: String,
        req: JoinRequest,
        now: Instant,
        limits: &GroupLimits,
    ) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(instance) = &req.instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: req.instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: Some(tx),
                sync_waiter: None,
            },
        );
        self.prepare_rebalance(now, limits);
        rx
    }

    pub fn join(
        &mut self,
        req: JoinRequest,
        now: Instant,
        limits: &GroupLimits,
    ) -> Outcome<JoinResult> {
        use ResponseError::*;
        let fail = |e: ResponseError| Outcome::Now(JoinResult::error(e, &req.member_id));
        if self.state == GroupState::Dead {
            return fail(CoordinatorNotAvailable);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(InconsistentGroupProtocol);
        }
        if !self.members.is_empty()
            && (self.protocol_type.as_deref() != Some(req.protocol_type.as_str())
                || !self.supports_common_protocol(&req.protocols))
        {
            return fail(InconsistentGroupProtocol);
        }
        if req.session_timeout < limits.min_session_timeout
            || req.session_timeout > limits.max_session_timeout
        {
            return fail(InvalidSessionTimeout);
        }
        let known = self.members.contains_key(&req.member_id);
        if !known
            && self.members.len() >= limits.max_size
            && !self.pending_members.contains_key(&req.member_id)
        {
            let replaces_static = req
                .instance_id
                .as_ref()
                .is_some_and(|i| self.static_members.contains_key(i));
            if !replaces_static {
                return fail(GroupMaxSizeReached);
            }
        }

        if req.member_id.is_empty() {
            if let Some(instance) = req.instance_id.clone() {
                let new_id = new_member_id(&instance);
                if let Some(old_id) = self.static_members.get(&instance).cloned() {
                    return self.replace_static_member(old_id, new_id, req, now, limits);
                }
                return Outcome::Wait(self.add_member(new_id, req, now, limits));
            }
            let new_id = new_member_id(if req.client_id.is_empty() {
                "member"
            } else {
                &req.client_id
            });
            if req.require_known_member_id {
                self.pending_members
                    .insert(new_id.clone(), now + req.session_timeout);
                return Outcome::Now(JoinResult::error(MemberIdRequired, &new_id));
            }
            return Outcome::Wait(self.add_member(new_id, req, now, limits));
        }

        if self.pending_members.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return Outcome::Wait(self.add_member(id, req, now, limits));
        }
        if self.fenced(&req.member_id, req.instance_id.as_deref()) {
            return fail(FencedInstanceId);
        }
        let Some(member) = self.members.get_mut(&req.member_id) else {
            return fail(UnknownMemberId);
        };
        member.last_seen = now;
        let changed = member.protocols != req.protocols;
        member.protocols = req.protocols;
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::CompletingRebalance | GroupState::Stable
                if !(changed || self.state == GroupState::Stable && is_leader) =>
            {
                Outcome::Now(self.current_join_result(&req.member_id))
            }
            _ => {
                let (tx, rx) = oneshot::channel();
                if let Some(old) = self
                    .members
                    .get_mut(&req.member_id)
                    .and_then(|m| m.join_waiter.replace(tx))
                {
                    let _ = old.send(JoinResult::error(UnknownMemberId, &req.member_id));
                }
                self.prepare_rebalance(now, limits);
                Outcome::Wait(rx)
            }
        }
    }

    /// KIP-345: a static member rejoining with a new member id takes over its old identity.
    /// In a stable group with unchanged protocols it gets its old assignment back and the
    /// rest of the group is not disturbed.
    fn replace_static_member(
        &mut self,
        old_id: String,
        new_id: String,
        req: JoinRequest,
        now: Instant,
        limits: &GroupLimits,
    ) -> Outcome<JoinResult> {
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members
                .remove(req.instance_id.as_deref().unwrap_or_default());
            return Outcome::Wait(self.add_member(new_id, req, now, limits));
        };
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        let unchanged = member.protocols == req.protocols;
        member.id = new_id.clone();
        member.protocols = req.protocols;
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.last_seen = now;
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        if let Some(instance) = &member.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        self.members.insert(new_id.clone(), member);
        if self.state == GroupState::Stable && unchanged {
            let mut result = self.current_join_result(&new_id);
            // The leader must not recompute assignments the group already runs on (v9+).
            result.skip_assignment = self.leader.as_deref() == Some(new_id.as_str());
            return Outcome::Now(result);
        }
        let (tx, rx) = oneshot::channel();
        if let Some(m) = self.members.get_mut(&new_id) {
            m.join_waiter = Some(tx);
        }
        self.prepare_rebalance(now, limits);
        Outcome::Wait(rx)
    }

    /// Returns true when the leader's assignment made the group Stable (to be persisted).
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> (Outcome<SyncResult>, bool) {
        use ResponseError::*;
        let fail = |e| (Outcome::Now(SyncResult::error(e)), false);
        if self.state == GroupState::Dead {
            return fail(CoordinatorNotAvailable);
        }
        if self.fenced(member_id, instance_id) {
            return fail(FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return fail(UnknownMemberId);
        }
        if generation != self.generation {
            return fail(IllegalGeneration);
        }
        let (ptype, pname) = protocol;
        if ptype.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || pname.is_some_and(|n| Some(n) != self.protocol.as_deref())
        {
            return fail(InconsistentGroupProtocol);
        }
        let ok = |g: &Group, assignment: Bytes| SyncResult {
            error: None,
            protocol_type: g.protocol_type.clone(),
            protocol_name: g.protocol.clone(),
            assignment,
        };
        let Some(member) = self.members.get_mut(member_id) else {
            return fail(UnknownMemberId);
        };
        member.last_seen = now;
        match self.state {
            GroupState::PreparingRebalance => fail(RebalanceInProgress),
            GroupState::Stable => {
                let assignment = member.assignment.clone();
                (Outcome::Now(ok(self, assignment)), false)
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                member.sync_waiter = Some(tx);
                if self.leader.as_deref() != Some(member_id) {
                    return (Outcome::Wait(rx), false);
                }
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                for m in self.members.values_mut() {
                    m.assignment = given.remove(&m.id).unwrap_or_default();
                }
                self.set_state(GroupState::Stable);
                let waiting: Vec<(oneshot::Sender<SyncResult>, Bytes)> = self
                    .members
                    .values_mut()
                    .filter_map(|m| m.sync_waiter.take().map(|w| (w, m.assignment.clone())))
                    .collect();
                for (w, assignment) in waiting {
                    let _ = w.send(ok(self, assignment));
                }
                (Outcome::Wait(rx), true)
            }
            GroupState::Empty | GroupState::Dead => fail(UnknownMemberId),
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Option<ResponseError> {
        use ResponseError::*;
        if self.state == GroupState::Dead {
            return Some(CoordinatorNotAvailable);
        }
        if self.fenced(member_id, instance_id) {
            return Some(FencedInstanceId);
        }
        let Some(member) = self.members.get_mut(member_id) else {
            return Some(UnknownMemberId);
        };
        member.last_seen = now;
        if generation != self.generation {
            return Some(IllegalGeneration);
        }
        match self.state {
            GroupState::PreparingRebalance => Some(RebalanceInProgress),
            _ => None,
        }
    }

    /// LeaveGroup for one member (by id, or by static instance id).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
        limits: &GroupLimits,
    ) -> Option<ResponseError> {
        if self.pending_members.remove(member_id).is_some() {
            self.try_complete_join(now);
            return None;
        }
        let id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(current) if member_id.is_empty() || current == member_id => current.clone(),
                Some(_) => return Some(ResponseError::FencedInstanceId),
                None => return Some(ResponseError::UnknownMemberId),
            },
            None => member_id.to_string(),
        };
        self.remove_member(&id)?;
        self.after_departure(now, limits);
        None
    }

    fn after_departure(&mut self, now: Instant, limits: &GroupLimits) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, limits)
            }
            _ => {}
        }
        self.try_complete_join(now);
    }

    /// Removes members whose session expired and forgets unclaimed pending ids. Returns
    /// the expired member ids.
    pub fn expire(&mut self, now: Instant, limits: &GroupLimits) -> Vec<String> {
        self.pending_members.retain(|_, deadline| now < *deadline);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none() && now.duration_since(m.last_seen) > m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id);
        }
        if !expired.is_empty() {
            self.after_departure(now, limits);
        } else {
            self.try_complete_join(now);
        }
        expired
    }

    /// Marks the group deleted: any waiting member is told the coordinator moved.
    pub fn kill(&mut self) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.remove_member(&id);
        }
        self.set_state(GroupState::Dead);
    }

    /// Whether an OffsetCommit of `partitions` (topic id, partition) from this member and
    /// generation may write, per Kafka's rules: simple commits (generation < 0, no member)
    /// only to an empty group.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        partitions: &[(uuid::Uuid, i32)],
        now: Instant,
    ) -> Option<ResponseError> {
        use ResponseError::*;
        if self.state == GroupState::Dead {
            return Some(CoordinatorNotAvailable);
        }
        if self.fenced(member_id, instance_id) {
            return Some(FencedInstanceId);
        }
        if generation < 0 && member_id.is_empty() && self.is_empty() {
            return None;
        }
        if let Some(c) = &self.consumer {
            return c.check_epoch(member_id, generation, partitions);
        }
        let Some(member) = self.members.get_mut(member_id) else {
            return Some(UnknownMemberId);
        };
        member.last_seen = now;
        if generation != self.generation {
            return Some(IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Some(RebalanceInProgress);
        }
        None
    }

    /// Topics the group's members are subscribed to, when the protocol is "consumer".
    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        if let Some(c) = &self.consumer {
            return c.is_subscribed_to(topic);
        }
        self.protocol_type.as_deref() == Some("consumer")
            && self.members.values().any(|m| {
                let protocol = self.protocol.clone().unwrap_or_default();
                subscription_topics(&m.metadata_for(&protocol))
                    .iter()
                    .any(|t| t == topic)
            })
    }
}

/// Topic names of a ConsumerProtocolSubscription (any version: topics come first after the
/// version), read leniently: a malformed subscription counts as subscribing to nothing.
pub fn subscription_topics(metadata: &[u8]) -> Vec<String> {
    let mut topics = Vec::new();
    let read_i16 =
        |b: &[u8], at: usize| b.get(at..at + 2).map(|s| i16::from_be_bytes([s[0], s[1]]));
    let Some(count) = metadata
        .get(2..6)
        .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    else {
        return topics;
    };
    let mut pos = 6;
    for _ in 0..count.clamp(0, 10_000) {
        let Some(len) = read_i16(metadata, pos) else {
            break;
        };
        let Some(name) = metadata.get(pos + 2..pos + 2 + len.max(0) as usize) else {
            break;
        };
        topics.push(String::from_utf8_lossy(name).into_owned());
        pos += 2 + len.max(0) as usize;
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GroupLimits {
        GroupLimits {
            min_session_timeout: Duration::from_millis(10),
            max_session_timeout: Duration::from_secs(60),
            max_size: 10,
            initial_rebalance_delay: Duration::ZERO,
        }
    }

    fn request(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
        }
    }

    fn joined(outcome: Outcome<JoinResult>) -> JoinResult {
        match outcome {
            Outcome::Now(r) => r,
            Outcome::Wait(mut rx) => rx.try_recv().expect("join completed"),
        }
    }

    /// Kafka's `hasAllMembersJoined`: a member told MEMBER_ID_REQUIRED is waited for, so a
    /// rebalance it arrives during forms one generation with it instead of two.
    #[test]
    fn a_rebalance_waits_for_a_member_handed_an_id_until_it_joins_or_expires() {
        let (now, l) = (Instant::now(), limits());
        let mut g = Group::new("g");
        let a = joined(g.join(request("", None), now, &l)).member_id;
        let Outcome::Wait(mut a_join) = g.join(request(&a, None), now, &l) else {
            panic!("a waits")
        };
        assert!(g.try_complete_join(now));
        assert_eq!(a_join.try_recv().unwrap().generation, 1);
        g.sync(&a, None, 1, (None, None), vec![], now);

        let b = joined(g.join(request("", None), now, &l)).member_id;
        let Outcome::Wait(mut a_join) = g.join(request(&a, None), now, &l) else {
            panic!("a rejoins")
        };
        assert!(
            !g.try_complete_join(now),
            "b holds an id and has not joined"
        );
        let Outcome::Wait(mut b_join) = g.join(request(&b, None), now, &l) else {
            panic!("b waits")
        };
        assert!(g.try_complete_join(now));
        let (a_result, b_result) = (a_join.try_recv().unwrap(), b_join.try_recv().unwrap());
        assert_eq!((a_result.generation, b_result.generation), (2, 2));
        assert_eq!(a_result.members.len(), 2, "one generation holds both");
        g.sync(&b, None, 2, (None, None), vec![], now);
        let (_, stable) = g.sync(&a, None, 2, (None, None), vec![], now);
        assert!(stable);

        // A member that never comes back with its id is waited for only until its
        // session timeout.
        let _gone = joined(g.join(request("", None), now, &l)).member_id;
        let Outcome::Wait(mut a_join) = g.join(request(&a, None), now, &l) else {
            panic!("a rejoins")
        };
        let Outcome::Wait(mut b_join) = g.join(request(&b, None), now, &l) else {
            panic!("b rejoins")
        };
        assert!(!g.try_complete_join(now));
        g.expire(now + Duration::from_secs(11), &l);
        assert_eq!(a_join.try_recv().unwrap().generation, 3);
        assert_eq!(b_join.try_recv().unwrap().generation, 3);
    }

    #[test]
    fn two_members_join_sync_and_a_departure_rebalances() {
        let (now, l) = (Instant::now(), limits());
        let mut g = Group::new("g");
        let first = joined(g.join(request("", None), now, &l));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let a = first.member_id;
        let Outcome::Wait(mut a_join) = g.join(request(&a, None), now, &l) else {
            panic!("a waits")
        };
        assert!(g.try_complete_join(now));
        let a_result = a_join.try_recv().unwrap();
        assert_eq!(
            (a_result.generation, a_result.leader.as_str()),
            (1, a.as_str())
        );
        let (_, stable) = g.sync(
            &a,
            None,
            1,
            (None, None),
            vec![(a.clone(), Bytes::from_static(b"all"))],
            now,
        );
        assert!(stable);
        assert_eq!(g.state, GroupState::Stable);

        // b joins: a's heartbeat learns of the rebalance, a rejoins, both get generation 2.
        let b = joined(g.join(request("", None), now, &l)).member_id;
        let Outcome::Wait(mut b_join) = g.join(request(&b, None), now, &l) else {
            panic!("b waits")
        };
        assert_eq!(
            g.heartbeat(&a, None, 1, now),
            Some(ResponseError::RebalanceInProgress)
        );
        let Outcome::Wait(mut a_join) = g.join(request(&a, None), now, &l) else {
            panic!("a waits")
        };
        assert!(g.try_complete_join(now), "everyone rejoined");
        assert_eq!(
            a_join.try_recv().unwrap().members.len(),
            2,
            "leader sees both members"
        );
        assert_eq!(b_join.try_recv().unwrap().generation, 2);
        assert_eq!(
            g.heartbeat(&b, None, 1, now),
            Some(ResponseError::IllegalGeneration)
        );

        // a's session expires without a heartbeat: the group rebalances around b.
        let (sync_b, _) = g.sync(&b, None, 2, (None, None), vec![], now);
        let (_, stable) = g.sync(
            &a,
            None,
            2,
            (None, None),
            vec![(b.clone(), Bytes::from_static(b"b"))],
            now,
        );
        assert!(stable);
        let Outcome::Wait(mut sync_b) = sync_b else {
            panic!("b waited for the leader")
        };
        assert_eq!(
            sync_b.try_recv().unwrap().assignment,
            Bytes::from_static(b"b")
        );
        let later = now + Duration::from_secs(11);
        g.heartbeat(&b, None, 2, later);
        assert_eq!(g.expire(later, &l), vec![a.clone()]);
        assert_eq!(g.state, GroupState::PreparingRebalance);
    }

    #[test]
    fn a_static_member_rejoining_a_stable_group_does_not_rebalance_it() {
        let (now, l) = (Instant::now(), limits());
        let mut g = Group::new("g");
        let Outcome::Wait(_) = g.join(request("", Some("i1")), now, &l) else {
            panic!()
        };
        assert!(g.try_complete_join(now));
        let old = g.leader.clone().unwrap();
        g.sync(
            &old,
            Some("i1"),
            1,
            (None, None),
            vec![(old.clone(), Bytes::from_static(b"p0"))],
            now,
        );
        let again = joined(g.join(request("", Some("i1")), now, &l));
        assert_eq!((again.error, again.generation), (None, 1));
        assert_ne!(again.member_id, old);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(
            g.heartbeat(&old, Some("i1"), 1, now),
            Some(ResponseError::FencedInstanceId)
        );
        assert_eq!(g.heartbeat(&again.member_id, Some("i1"), 1, now), None);
    }

    #[test]
    fn limits_and_generation_fencing_are_enforced() {
        let (now, mut l) = (Instant::now(), limits());
        let mut g = Group::new("g");
        let mut short = request("", None);
        short.session_timeout = Duration::from_millis(1);
        assert_eq!(
            joined(g.join(short, now, &l)).error,
            Some(ResponseError::InvalidSessionTimeout)
        );
        let mut long = request("", None);
        long.session_timeout = Duration::from_secs(3600);
        assert_eq!(
            joined(g.join(long, now, &l)).error,
            Some(ResponseError::InvalidSessionTimeout)
        );

        l.max_size = 1;
        let a = joined(g.join(request("", None), now, &l)).member_id;
        let Outcome::Wait(_) = g.join(request(&a, None), now, &l) else {
            panic!()
        };
        let b = joined(g.join(request("", None), now, &l));
        assert_eq!(b.error, Some(ResponseError::GroupMaxSizeReached));
        assert!(g.try_complete_join(now));

        // Commits: members of the current generation only; simple commits only when empty.
        assert_eq!(
            g.check_commit(&a, None, 0, &[], now),
            Some(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            g.check_commit("stranger", None, 1, &[], now),
            Some(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            g.check_commit("", None, -1, &[], now),
            Some(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            g.check_commit(&a, None, 1, &[], now),
            Some(ResponseError::RebalanceInProgress),
            "awaiting SyncGroup"
        );
        g.sync(&a, None, 1, (None, None), vec![], now);
        assert_eq!(g.check_commit(&a, None, 1, &[], now), None);
        assert_eq!(g.leave(&a, None, now, &l), None);
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.check_commit("", None, -1, &[], now), None);
    }

    #[test]
    fn protocols_are_chosen_by_vote_among_those_all_members_support() {
        let (now, l) = (Instant::now(), limits());
        let mut g = Group::new("g");
        let with = |id: &str, names: &[&str]| {
            let mut r = request(id, None);
            r.require_known_member_id = false;
            r.protocols = names
                .iter()
                .map(|n| (n.to_string(), Bytes::new()))
                .collect();
            r
        };
        let Outcome::Wait(_) = g.join(with("", &["range", "roundrobin"]), now, &l) else {
            panic!()
        };
        let Outcome::Wait(_) = g.join(with("", &["roundrobin", "range"]), now, &l) else {
            panic!()
        };
        let Outcome::Wait(_) = g.join(with("", &["roundrobin"]), now, &l) else {
            panic!()
        };
        assert_eq!(
            joined(g.join(with("", &["sticky"]), now, &l)).error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
        assert!(g.try_complete_join(now));
        assert_eq!(g.protocol.as_deref(), Some("roundrobin"));
    }
}
