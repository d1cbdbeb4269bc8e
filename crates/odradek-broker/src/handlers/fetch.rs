//! Fetch: reads stored batches as stored, parks until `min_bytes` arrive or `max_wait_ms`
//! passes (woken by appends, not by polling), and keeps incremental fetch sessions
//! (KIP-227) so consumers of many partitions send and receive only what changed.

use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, ResponseKind, TopicName};
use odradek_storage::StorageError;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::check_leader_epoch;
use crate::Broker;
use crate::broker::{Reply, str_bytes};
use crate::log_manager::{Partition, Topic};
use crate::metrics::TopicLabel;
use crate::replication::throttle::Throttle;

/// Kafka's `max.incremental.fetch.session.cache.slots` default.
const MAX_SESSIONS: usize = 1000;
/// A session unused this long may be evicted to make room (Kafka: `min.incremental.fetch.session.eviction.ms`).
const SESSION_IDLE_EVICTION: Duration = Duration::from_secs(120);

/// A topic as the request names it: by name before Fetch v13, by id from v13.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TopicKey {
    Name(String),
    Id(Uuid),
}

#[derive(Debug, Clone)]
struct FetchTarget {
    topic: TopicKey,
    partition: i32,
    fetch_offset: i64,
    max_bytes: i32,
    leader_epoch: i32,
    /// The epoch of the last batch a follower has (-1: none, or a consumer).
    last_fetched_epoch: i32,
}

/// What a session last told the client about a partition, to send it again only on change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Reported {
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

#[derive(Debug)]
struct Session {
    next_epoch: i32,
    targets: Vec<(FetchTarget, Option<Reported>)>,
    last_used: Instant,
}

#[derive(Default)]
pub struct FetchSessions {
    sessions: Mutex<HashMap<i32, Session>>,
}

/// How this fetch relates to a session.
enum SessionMode {
    None,
    Full(i32),
    Incremental(i32),
}

impl FetchSessions {
    /// The sessions. A panic while one was being updated could leave its targets and what
    /// was reported of them out of step, and an incremental fetch would then leave out
    /// partitions with data; so a poisoned lock drops every session: their clients hear
    /// FETCH_SESSION_ID_NOT_FOUND and start new ones, as after a restart.
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Session>> {
        self.sessions.lock().unwrap_or_else(|poisoned| {
            warn!("a panic poisoned the fetch sessions' lock; dropping every session");
            self.sessions.clear_poison();
            let mut sessions = poisoned.into_inner();
            sessions.clear();
            sessions
        })
    }

    fn new_session(&self, targets: &[FetchTarget]) -> i32 {
        let mut sessions = self.lock();
        if sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .filter(|(_, s)| s.last_used.elapsed() >= SESSION_IDLE_EVICTION)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(&id, _)| id);
            match oldest {
                Some(id) => {
                    sessions.remove(&id);
                }
                // Full of active sessions: the client carries on without one, as in Kafka.
                None => return 0,
            }
        }
        let id = loop {
            let candidate = (Uuid::new_v4().as_u128() as i32) & i32::MAX;
            if candidate != 0 && !sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        let targets = targets.iter().map(|t| (t.clone(), None)).collect();
        sessions.insert(
            id,
            Session {
                next_epoch: 1,
                targets,
                last_used: Instant::now(),
            },
        );
        id
    }

    /// Applies an incremental request to its session, returning every partition the
    /// session now covers.
    fn update(
        &self,
        id: i32,
        epoch: i32,
        changed: Vec<FetchTarget>,
        forgotten: &[(TopicKey, i32)],
    ) -> Result<Vec<(FetchTarget, Option<Reported>)>, ResponseError> {
        let mut sessions = self.lock();
        let session = sessions
            .get_mut(&id)
            .ok_or(ResponseError::FetchSessionIdNotFound)?;
        if session.next_epoch != epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        session.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
        session.last_used = Instant::now();
        session
            .targets
            .retain(|(t, _)| !forgotten.contains(&(t.topic.clone(), t.partition)));
        for target in changed {
            match session
                .targets
                .iter_mut()
                .find(|(t, _)| t.topic == target.topic && t.partition == target.partition)
            {
                Some((existing, _)) => *existing = target,
                None => session.targets.push((target, None)),
            }
        }
        Ok(session.targets.clone())
    }

    /// Records what this response told the client, and sends the partitions that returned
    /// records to the back of the session, as Kafka's sessions do: the next incremental
    /// fetch reads the others first, so under `max_bytes` and `partition_max_bytes` the
    /// partitions take turns instead of the first ones starving the rest (KIP-227).
    fn remember(
        &self,
        id: i32,
        reported: &[(TopicKey, i32, Reported)],
        returned_records: &HashSet<(TopicKey, i32)>,
    ) {
        let mut sessions = self.lock();
        let Some(session) = sessions.get_mut(&id) else {
            return;
        };
        for (topic, partition, r) in reported {
            if let Some((_, last)) = session
                .targets
                .iter_mut()
                .find(|(t, _)| &t.topic == topic && t.partition == *partition)
            {
                *last = Some(r.clone());
            }
        }
        if !returned_records.is_empty() {
            let (mut waiting, served): (Vec<_>, Vec<_>) = std::mem::take(&mut session.targets)
                .into_iter()
                .partition(|(t, _)| !returned_records.contains(&(t.topic.clone(), t.partition)));
            waiting.extend(served);
            session.targets = waiting;
        }
    }

    fn remove(&self, id: i32) {
        self.lock().remove(&id);
    }
}

/// Who is fetching: a follower replicating (Fetch's `replica_id`), or a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Follower(i32),
    /// `from_followers`: Fetch v11+ (KIP-392), which a follower serves too.
    Consumer {
        read_committed: bool,
        from_followers: bool,
    },
}

/// One partition's outcome in one pass over the fetch.
struct PartitionRead {
    data: PartitionData,
    bytes: usize,
    /// More could be read than this read returned (see `FetchedRecords::more_waiting`).
    more_waiting: bool,
    reported: Option<Reported>,
    /// The topic's metrics label, for a consumer's read that returned records.
    counted_as: Option<TopicLabel>,
    /// Bytes a follower's read returned (counted as replication, not as consumption).
    replicated: usize,
    /// A follower's read as this leader's replication throttle (KIP-73) has it, and
    /// whether the throttle withheld its records.
    throttle: Throttle,
    held_back: bool,
}

impl PartitionRead {
    /// A read that returns no records: an error, or a diverging epoch.
    fn empty(data: PartitionData) -> Self {
        Self {
            data,
            bytes: 0,
            more_waiting: false,
            reported: None,
            counted_as: None,
            replicated: 0,
            throttle: Throttle::Off,
            held_back: false,
        }
    }
}

impl Broker {
    fn topic(&self, key: &TopicKey) -> Result<Arc<Topic>, ResponseError> {
        match key {
            TopicKey::Name(n) => self
                .logs
                .topic(n)
                .ok_or(ResponseError::UnknownTopicOrPartition),
            TopicKey::Id(id) => self
                .logs
                .topic_by_id(id)
                .ok_or(ResponseError::UnknownTopicId),
        }
    }

    fn resolve(
        &self,
        key: &TopicKey,
        partition: i32,
    ) -> Result<(Arc<Topic>, Arc<Partition>), ResponseError> {
        let topic = self.topic(key)?;
        let partition = usize::try_from(partition)
            .ok()
            .and_then(|p| topic.partitions.get(p).cloned())
            .ok_or(ResponseError::UnknownTopicOrPartition)?;
        Ok((topic, partition))
    }

    fn read_partition(
        &self,
        target: &FetchTarget,
        limit: usize,
        min_one: bool,
        reader: Reader,
    ) -> PartitionRead {
        let read_committed = matches!(
            reader,
            Reader::Consumer {
                read_committed: true,
                ..
            }
        );
        let mut data = PartitionData::default().with_partition_index(target.partition);
        data.aborted_transactions = if read_committed {
            Some(Vec::new())
        } else {
            None
        };
        let error = |mut data: PartitionData, e: ResponseError| {
            data.error_code = e.code();
            data.high_watermark = -1;
            // Kafka sends an empty record set with an error, never a null one: clients
            // (librdkafka) reject a null set as a malformed response.
            data.records = Some(bytes::Bytes::new());
            PartitionRead::empty(data)
        };
        let (topic, partition) = match self.resolve(&target.topic, target.partition) {
            Ok(found) => found,
            Err(e) => return error(data, e),
        };
        let checked = match self.leads(&topic.name, target.partition) {
            Err(_) if self.serves_as_follower(reader, &topic.name, &partition) => self
                .logs
                .leadership(&topic.name, target.partition)
                .ok_or(ResponseError::NotLeaderOrFollower)
                .and_then(|(_, epoch)| check_leader_epoch(target.leader_epoch, epoch)),
            led => led.and_then(|epoch| check_leader_epoch(target.leader_epoch, epoch)),
        };
        if let Err(e) = checked {
            // KIP-951: who leads now, so the client goes there without a metadata round
            // trip (-1 and -1 when nobody does).
            let (leader, epoch) = self
                .logs
                .leadership(&topic.name, target.partition)
                .unwrap_or((-1, -1));
            data.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(leader.into())
                .with_leader_epoch(epoch);
            return error(data, e);
        }
        if let Reader::Follower(replica) = reader
            && !partition
                .replica
                .led_replicas()
                .is_some_and(|r| r.contains(&replica))
        {
            return error(data, ResponseError::NotLeaderOrFollower);
        }
        // Kafka's `shouldLeaderThrottle`: a throttled follower gets no records while this
        // leader's throttle is in debt, and is answered as if there were none yet.
        let throttle = match reader {
            Reader::Follower(replica) => self.leader_throttle(&topic, target.partition, replica),
            Reader::Consumer { .. } => Throttle::Off,
        };
        let held_back = throttle == Throttle::Holdable
            && self
                .replication_quotas
                .leader
                .exceeded(&self.config())
                .is_some();
        let Some(log) = partition.lock_online_log() else {
            return error(data, ResponseError::KafkaStorageError);
        };
        let log_start_offset = log.log_start_offset();
        if let Reader::Follower(replica) = reader {
            // KIP-595's check of KIP-101's truncation: a follower whose last epoch ends
            // earlier here than its fetch offset has a tail this leader never had.
            if target.last_fetched_epoch >= 0 {
                let (epoch, end) = log.end_offset_for_epoch(target.last_fetched_epoch);
                // An epoch this log cannot place (none written yet) proves nothing: the
                // fetch offset is then checked against the log end as any other.
                if epoch >= 0 && (epoch != target.last_fetched_epoch || end < target.fetch_offset) {
                    let (high_watermark, last_stable_offset) = partition.visible_offsets(&log);
                    drop(log);
                    data.diverging_epoch = EpochEndOffset::default()
                        .with_epoch(epoch)
                        .with_end_offset(end);
                    data.high_watermark = high_watermark;
                    data.last_stable_offset = last_stable_offset;
                    data.log_start_offset = log_start_offset;
                    data.records = Some(bytes::Bytes::new());
                    return PartitionRead::empty(data);
                }
            }
            let now = odradek_storage::now_ms();
            let (moved, expand) = partition.replica.follower_fetched(
                replica,
                target.fetch_offset,
                log.log_end_offset(),
                now,
            );
            if moved {
                partition.appended.notify_waiters();
            }
            if let Some(proposal) = expand {
                info!(topic = %topic.name, partition = target.partition, replica, isr = ?proposal.isr, "a follower caught up: expanding the in-sync replicas");
                let change = crate::replication::isr::IsrChange {
                    topic: topic.id,
                    partition: partition.clone(),
                    proposal,
                };
                if let Err(refused) = self.isr_changes.send(change) {
                    partition.replica.proposal_failed(&refused.0.proposal);
                }
            }
        }
        let (high_watermark, last_stable_offset) = partition.visible_offsets(&log);
        // Followers read to the log end; consumers to the high watermark, or for
        // read_committed to the last stable offset.
        let prepared = (!held_back).then(|| {
            log.prepare_read(target.fetch_offset, limit, min_one)
                .map(|p| match reader {
                    Reader::Follower(_) => p,
                    Reader::Consumer {
                        read_committed: true,
                        ..
                    } => p.up_to(last_stable_offset),
                    Reader::Consumer {
                        read_committed: false,
                        ..
                    } => p.up_to(high_watermark),
                })
        });
        if read_committed {
            let aborted = log
                .aborted_transactions(target.fetch_offset, last_stable_offset)
                .into_iter()
                .map(|t| {
                    AbortedTransaction::default()
                        .with_producer_id(ProducerId(t.producer_id))
                        .with_first_offset(t.first_offset)
                })
                .collect();
            data.aborted_transactions = Some(aborted);
        }
        drop(log);
        data.high_watermark = high_watermark;
        data.last_stable_offset = last_stable_offset;
        data.log_start_offset = log_start_offset;
        // Held back is not "more waiting": the fetch parks as for a partition with no data,
        // so the follower does not ask again at once.
        let (records, more_waiting) = match prepared.map(|p| p.and_then(|p| p.read())) {
            None => (bytes::Bytes::new(), false),
            Some(Ok(r)) => (r.records, r.more_waiting),
            Some(Err(StorageError::OffsetOutOfRange { .. })) => {
                let mut out = error(data, ResponseError::OffsetOutOfRange);
                out.data.high_watermark = high_watermark;
                out.data.log_start_offset = log_start_offset;
                return out;
            }
            // Kafka's ReplicaManager answers a CorruptRecordException with CORRUPT_MESSAGE
            // for that partition alone; the rest of the fetch is served.
            Some(Err(e @ StorageError::Corrupt { .. })) => {
                error!(topic = ?target.topic, partition = target.partition, offset = target.fetch_offset, error = %e, "fetch found corrupt data on disk");
                return error(data, ResponseError::CorruptMessage);
            }
            Some(Err(e)) => {
                warn!(error = %e, "fetch read failed");
                return error(data, ResponseError::KafkaStorageError);
            }
        };
        let bytes = records.len();
        data.records = Some(records);
        PartitionRead {
            data,
            bytes,
            more_waiting,
            reported: Some(Reported {
                high_watermark,
                last_stable_offset,
                log_start_offset,
            }),
            counted_as: (bytes > 0 && !matches!(reader, Reader::Follower(_)))
                .then(|| topic.metric_label.clone()),
            replicated: if matches!(reader, Reader::Follower(_)) {
                bytes
            } else {
                0
            },
            throttle,
            held_back,
        }
    }

    /// Whether this broker serves a consumer's read of `partition` although it does not
    /// lead it: KIP-392's fetch from a follower, which needs Fetch v11+ and a replica here.
    fn serves_as_follower(&self, reader: Reader, topic: &str, partition: &Partition) -> bool {
        matches!(
            reader,
            Reader::Consumer {
                from_followers: true,
                ..
            }
        ) && partition.is_local()
            && self
                .logs
                .replicas(topic, partition.index)
                .contains(&self.node_id)
    }

    /// KIP-392's `RackAwareReplicaSelector` (when `replica.selector.class` names it): for a
    /// consumer in `rack`, an in-sync replica in that rack when this leader is not in it.
    fn preferred_read_replica(&self, topic: &TopicKey, partition: i32, rack: &str) -> Option<i32> {
        let config = self.config();
        if !config.rack_aware_replica_selector() || config.rack().as_deref() == Some(rack) {
            return None;
        }
        let (topic, _) = self.resolve(topic, partition).ok()?;
        self.leads(&topic.name, partition).ok()?;
        let image = self.logs.image();
        let placement = image.topic(&topic.name)?.placement(partition)?;
        placement.isr.iter().copied().find(|r| {
            *r != self.node_id
                && image
                    .brokers
                    .get(r)
                    .is_some_and(|b| !b.fenced && b.rack.as_deref() == Some(rack))
        })
    }

    /// One pass over every target, within the request's byte budgets.
    fn read_all(
        &self,
        targets: &[(FetchTarget, Option<Reported>)],
        max_bytes: usize,
        reader: Reader,
    ) -> Vec<PartitionRead> {
        let mut budget = max_bytes;
        let mut min_one = true;
        targets
            .iter()
            .map(|(target, _)| {
                let limit = budget.min(target.max_bytes.max(0) as usize);
                let read = self.read_partition(target, limit, min_one, reader);
                if read.bytes > 0 {
                    min_one = false;
                    budget = budget.saturating_sub(read.bytes);
                }
                read
            })
            .collect()
    }

    pub(crate) fn fetch(self: &Arc<Self>, request: FetchRequest, version: i16) -> Reply {
        let by_id = version >= 13;
        let key_of = |name: &TopicName, id: Uuid| {
            if by_id {
                TopicKey::Id(id)
            } else {
                TopicKey::Name(name.to_string())
            }
        };
        let requested: Vec<FetchTarget> = request
            .topics
            .iter()
            .flat_map(|t| {
                let key = key_of(&t.topic, t.topic_id);
                t.partitions.iter().map(move |p| FetchTarget {
                    topic: key.clone(),
                    partition: p.partition,
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    leader_epoch: p.current_leader_epoch,
                    last_fetched_epoch: p.last_fetched_epoch,
                })
            })
            .collect();
        let (session_id, epoch) = (request.session_id, request.session_epoch);
        let sessions = &self.fetch_sessions;
        let (mode, targets) = match epoch {
            -1 => {
                if session_id != 0 {
                    sessions.remove(session_id);
                }
                (
                    SessionMode::None,
                    requested.into_iter().map(|t| (t, None)).collect(),
                )
            }
            0 => {
                if session_id != 0 {
                    sessions.remove(session_id);
                }
                let id = sessions.new_session(&requested);
                let mode = if id == 0 {
                    SessionMode::None
                } else {
                    SessionMode::Full(id)
                };
                (mode, requested.into_iter().map(|t| (t, None)).collect())
            }
            _ => {
                let forgotten: Vec<(TopicKey, i32)> = request
                    .forgotten_topics_data
                    .iter()
                    .flat_map(|f| {
                        let key = key_of(&f.topic, f.topic_id);
                        f.partitions.iter().map(move |&p| (key.clone(), p))
                    })
                    .collect();
                match sessions.update(session_id, epoch, requested, &forgotten) {
                    Ok(targets) => (SessionMode::Incremental(session_id), targets),
                    Err(e) => {
                        let response = FetchResponse::default()
                            .with_error_code(e.code())
                            .with_session_id(0);
                        return Reply::now(ResponseKind::Fetch(response));
                    }
                }
            }
        };
        let broker = self.clone();
        let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
        // As Kafka: the broker's `fetch.max.bytes` caps what any request may ask, and a
        // `min_bytes` above the cap could never be met, so it is lowered to it.
        let asked = if request.max_bytes <= 0 {
            usize::MAX
        } else {
            request.max_bytes as usize
        };
        let max_bytes = asked.min(self.fetch_max_bytes);
        let min_bytes = (request.min_bytes.max(0) as usize).min(max_bytes);
        let replica_id = if version >= 15 {
            request.replica_state.replica_id.0
        } else {
            request.replica_id.0
        };
        let reader = if replica_id >= 0 {
            Reader::Follower(replica_id)
        } else {
            Reader::Consumer {
                read_committed: request.isolation_level == 1,
                from_followers: version >= 11,
            }
        };
        // KIP-392: a consumer in another rack than this leader is sent to an in-sync
        // replica in its own, and told so at once.
        let client_rack = request.rack_id.trim();
        let redirects: Vec<Option<i32>> = targets
            .iter()
            .map(|(t, _)| {
                (replica_id < 0 && version >= 11 && !client_rack.is_empty())
                    .then(|| self.preferred_read_replica(&t.topic, t.partition, client_rack))
                    .flatten()
            })
            .collect();
        let min_bytes = if redirects.iter().any(Option::is_some) {
            0
        } else {
            min_bytes
        };
        Reply::Later(Box::pin(async move {
            let mut reads = broker
                .park_until_ready(&targets, max_wait, min_bytes, max_bytes, reader)
                .await;
            for (read, redirect) in reads.iter_mut().zip(&redirects) {
                if let Some(replica) = *redirect
                    && read.data.error_code == 0
                {
                    read.data.preferred_read_replica = replica.into();
                    read.data.records = Some(bytes::Bytes::new());
                    read.data.aborted_transactions =
                        read.data.aborted_transactions.as_ref().map(|_| Vec::new());
                    read.bytes = 0;
                    read.counted_as = None;
                    // Sent even in an incremental session, where an unchanged partition
                    // is left out.
                    read.reported = None;
                }
            }
            ResponseKind::Fetch(broker.fetch_response(mode, targets, reads, version))
        }))
    }

    async fn park_until_ready(
        &self,
        targets: &[(FetchTarget, Option<Reported>)],
        max_wait: Duration,
        min_bytes: usize,
        max_bytes: usize,
        reader: Reader,
    ) -> Vec<PartitionRead> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let partitions: Vec<Arc<Partition>> = targets
            .iter()
            .filter_map(|(t, _)| self.resolve(&t.topic, t.partition).ok().map(|(_, p)| p))
            .collect();
        loop {
            // Register for wake-ups before reading, so an append between the read and the
            // wait is not missed.
            let mut woken: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = partitions
                .iter()
                .map(|p| Box::pin(p.appended.notified()))
                .collect();
            for n in &mut woken {
                n.as_mut().enable();
            }
            let reads = self.read_all(targets, max_bytes, reader);
            let bytes: usize = reads.iter().map(|r| r.bytes).sum();
            // A diverging epoch, like an error, will not change by waiting.
            let has_error = reads
                .iter()
                .any(|r| r.data.error_code != 0 || r.data.diverging_epoch.epoch >= 0);
            // Data held back by the limits will not grow the response by waiting.
            let full = reads.iter().any(|r| r.more_waiting);
            if bytes >= min_bytes || full || has_error || tokio::time::Instant::now() >= deadline {
                return reads;
            }
            let any_append = poll_fn(|cx| {
                if woken.iter_mut().any(|n| n.as_mut().poll(cx).is_ready()) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            let mut stopping = self.stopping.subscribe();
            tokio::select! {
                _ = any_append => {}
                _ = tokio::time::sleep_until(deadline) => return self.read_all(targets, max_bytes, reader),
                _ = stopping.wait_for(|s| *s) => return self.read_all(targets, max_bytes, reader),
            }
        }
    }

    fn fetch_response(
        &self,
        mode: SessionMode,
        targets: Vec<(FetchTarget, Option<Reported>)>,
        reads: Vec<PartitionRead>,
        version: i16,
    ) -> FetchResponse {
        let by_id = version >= 13;
        let mut movers = std::collections::BTreeSet::new();
        let incremental = matches!(mode, SessionMode::Incremental(_));
        let mut topics: Vec<FetchableTopicResponse> = Vec::new();
        let mut reported = Vec::new();
        let mut returned_records = HashSet::new();
        for ((target, last), read) in targets.into_iter().zip(reads) {
            if read.bytes > 0 {
                returned_records.insert((target.topic.clone(), target.partition));
            }
            let unchanged = incremental
                && read.bytes == 0
                && read.data.error_code == 0
                && read.reported.is_some()
                && read.reported == last;
            if let Some(r) = read.reported.clone() {
                reported.push((target.topic.clone(), target.partition, r));
            }
            let quota = &self.replication_quotas.leader;
            if read.throttle != Throttle::Off {
                quota.record(&self.config(), &self.metrics, read.replicated);
            }
            if read.held_back {
                quota.held_back(&self.metrics);
            }
            if unchanged {
                continue;
            }
            if let Some(label) = &read.counted_as {
                self.metrics.record_fetch(label, read.bytes);
            }
            self.metrics
                .replication_bytes_out
                .inc_by(read.replicated as u64);
            let is_target = |t: &FetchableTopicResponse| match &target.topic {
                TopicKey::Name(n) => t.topic.as_str() == n,
                TopicKey::Id(id) => t.topic_id == *id,
            };
            let at = match topics.iter().position(is_target) {
                Some(at) => at,
                None => {
                    let mut t = FetchableTopicResponse::default();
                    match &target.topic {
                        TopicKey::Name(n) => t.topic = TopicName(str_bytes(n.clone())),
                        TopicKey::Id(id) if by_id => t.topic_id = *id,
                        TopicKey::Id(_) => {}
                    }
                    topics.push(t);
                    topics.len() - 1
                }
            };
            let mut data = read.data;
            if version < 12 {
                data.current_leader = LeaderIdAndEpoch::default();
            } else if data.current_leader.leader_id.0 >= 0 {
                movers.insert(data.current_leader.leader_id.0);
            }
            topics[at].partitions.push(data);
        }
        let session_id = match mode {
            SessionMode::None => 0,
            SessionMode::Full(id) | SessionMode::Incremental(id) => {
                self.fetch_sessions
                    .remember(id, &reported, &returned_records);
                id
            }
        };
        let node_endpoints = if version >= 16 {
            self.node_endpoints(movers)
        } else {
            Vec::new()
        };
        FetchResponse::default()
            .with_session_id(session_id)
            .with_responses(topics)
            .with_node_endpoints(node_endpoints)
    }
}
