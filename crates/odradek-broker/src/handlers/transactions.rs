//! Idempotent and transactional producers (KIP-98): InitProducerId, the transaction
//! coordinator's APIs (AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit), the
//! marker API (WriteTxnMarkers) and the admin views (DescribeTransactions,
//! ListTransactions, DescribeProducers).
//!
//! Every state change of a transactional id is durable in `__transaction_state` before it is
//! acted on. Ending a transaction is Kafka's two-phase sequence, done in line: persist
//! PrepareCommit/PrepareAbort, write a marker to every partition of the transaction, persist
//! CompleteCommit/CompleteAbort. A crash between the phases is finished by the sweeper on
//! the next start, from the persisted Prepare state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TransactionalId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use odradek_protocol::batch::{BatchOwner, TxnMarker};
use odradek_storage::LockExt;
use odradek_storage::now_ms;
use tracing::{info, warn};

use crate::Broker;
use crate::broker::str_bytes;
use crate::coordinator::group::CommittedOffset;
use crate::coordinator::transactions::{
    TRANSACTION_STATE_TOPIC, TopicPartition, TxnMetadata, TxnState, decode_key, decode_value,
    encode_key, encode_value,
};
use crate::coordinator::{self, OFFSETS_TOPIC, PendingOffset, partition_for};
use crate::handlers::groups::CoordinatorKind;
use crate::log_manager::Topic;

fn code(e: Option<ResponseError>) -> i16 {
    e.map_or(0, |e| e.code())
}

/// Groups per-partition entries under their topic, topics in order of first appearance,
/// and builds each topic's entry with `topic`.
fn by_topic<S: PartialEq, P, T>(
    entries: impl IntoIterator<Item = (S, P)>,
    topic: impl Fn(S, Vec<P>) -> T,
) -> Vec<T> {
    let mut groups: Vec<(S, Vec<P>)> = Vec::new();
    for (name, entry) in entries {
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, entries)) => entries.push(entry),
            None => groups.push((name, vec![entry])),
        }
    }
    groups
        .into_iter()
        .map(|(name, entries)| topic(name, entries))
        .collect()
}

/// Checks that a request comes from the transaction's current producer; returns the
/// transaction's state.
fn check_producer(
    m: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
) -> Result<&TxnMetadata, ResponseError> {
    let m = m.ok_or(ResponseError::InvalidProducerIdMapping)?;
    if m.producer_id != producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if m.epoch != epoch {
        return Err(ResponseError::ProducerFenced);
    }
    if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
        return Err(ResponseError::ConcurrentTransactions);
    }
    Ok(m)
}

/// How long a marker may take to reach every in-sync replica (Kafka's
/// `request.timeout.ms` default, which its marker requests use).
const MARKER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Broker {
    /// `__transaction_state`, created on first use as Kafka does.
    pub(crate) async fn transaction_topic(&self) -> Option<Arc<Topic>> {
        if let Some(topic) = self.logs.topic(TRANSACTION_STATE_TOPIC) {
            return Some(topic);
        }
        let limits = self.txn.limits;
        let created = coordinator::internal_topic(
            &self.logs,
            TRANSACTION_STATE_TOPIC,
            limits.partitions,
            limits.segment_bytes,
        )
        .await;
        // Its partitions led here are served at once, not after a load-in-progress retry.
        self.reconcile_coordinators().await;
        created
    }

    /// `__consumer_offsets`, created on first use as Kafka does.
    pub(crate) async fn offsets_topic(&self) -> Option<Arc<Topic>> {
        if let Some(topic) = self.logs.topic(OFFSETS_TOPIC) {
            return Some(topic);
        }
        let created = self.coordinator.offsets_topic(&self.logs).await;
        self.reconcile_coordinators().await;
        created
    }

    /// Makes a transactional id's state durable (`None`: deletes it).
    async fn persist_txn(&self, id: &str, m: Option<&TxnMetadata>) -> Result<(), ResponseError> {
        let topic = self
            .transaction_topic()
            .await
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let key = encode_key(id);
        let value = m.map(encode_value);
        let partition = partition_for(id, topic.partitions.len() as i32);
        let appended = coordinator::append_records(
            &topic,
            partition,
            &[(Some(&key[..]), value.as_deref())],
            BatchOwner::BROKER,
        );
        let appended = appended.map_err(|e| {
            warn!(transactional_id = id, error = %e, "cannot persist transaction state");
            ResponseError::CoordinatorNotAvailable
        })?;
        if self.durable(&appended).await {
            Ok(())
        } else {
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }

    /// Rebuilds the transactional ids of `partitions` of `__transaction_state` from their
    /// records (the last record per id wins), replacing what was held of them: when this
    /// broker starts to coordinate them. A transaction found preparing to commit or abort
    /// is completed by the transaction sweeper, as after a restart.
    pub(crate) async fn load_transaction_partitions(&self, partitions: &[i32]) {
        let Some(topic) = self.logs.topic(TRANSACTION_STATE_TOPIC) else {
            return;
        };
        let count = topic.partitions.len() as i32;
        let mut loaded = std::collections::HashMap::new();
        tokio::task::block_in_place(|| {
            for partition in topic
                .partitions
                .iter()
                .filter(|p| partitions.contains(&p.index))
            {
                coordinator::replay_records(partition, |_, _, key, value| {
                    if let Some(id) = key.and_then(decode_key) {
                        match value.and_then(decode_value) {
                            Some(m) => loaded.insert(id, m),
                            None => loaded.remove(&id),
                        };
                    }
                });
            }
        });
        for m in loaded.values() {
            if m.state == TxnState::Ongoing {
                self.txn.open.open(m.producer_id, m.epoch, &m.partitions);
            }
        }
        info!(
            ?partitions,
            transactional_ids = loaded.len(),
            "loaded transaction state"
        );
        let mut txns = self.txn.txns.lock().await;
        txns.retain(|id, _| !partitions.contains(&coordinator::partition_for(id, count)));
        txns.extend(loaded);
    }

    /// Forgets the transactional ids of `partitions`: another broker coordinates them now.
    pub(crate) async fn unload_transaction_partitions(&self, partitions: &[i32]) {
        let Some(topic) = self.logs.topic(TRANSACTION_STATE_TOPIC) else {
            return;
        };
        let count = topic.partitions.len() as i32;
        let mut txns = self.txn.txns.lock().await;
        let before = txns.len();
        txns.retain(|id, _| !partitions.contains(&coordinator::partition_for(id, count)));
        info!(
            ?partitions,
            transactional_ids = before - txns.len(),
            "unloaded transaction state"
        );
    }

    pub(crate) async fn init_producer_id(
        &self,
        request: InitProducerIdRequest,
    ) -> InitProducerIdResponse {
        let fail = |e: ResponseError| {
            InitProducerIdResponse::default()
                .with_error_code(e.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        };
        let transactional_id = request
            .transactional_id
            .as_ref()
            .map(|t| t.to_string())
            .filter(|t| !t.is_empty());
        let Some(id) = transactional_id else {
            // Idempotent producer: a fresh id each time (KIP-360 bumps need none locally).
            return match self.logs.allocate_producer_id().await {
                Ok(pid) => InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(0),
                Err(e) => {
                    warn!(error = %e, "cannot allocate a producer id");
                    fail(ResponseError::CoordinatorNotAvailable)
                }
            };
        };
        // Made (or learnt from another broker) first: only then is its leader known.
        if self.transaction_topic().await.is_none() {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        // Checked first, as Kafka's coordinator does, whoever coordinates the id.
        let timeout = request.transaction_timeout_ms;
        if timeout <= 0 || timeout > self.txn.limits.max_timeout_ms {
            return fail(ResponseError::InvalidTransactionTimeout);
        }
        if let Err(e) = self.check_coordinator(CoordinatorKind::Transaction, &id) {
            return fail(e);
        }
        let mut txns = self.txn.txns.lock().await;
        let now = now_ms();
        let mut m = match txns.get(&id).cloned() {
            None => {
                let pid = match self.logs.allocate_producer_id().await {
                    Ok(pid) => pid,
                    Err(_) => return fail(ResponseError::CoordinatorNotAvailable),
                };
                TxnMetadata {
                    producer_id: pid,
                    epoch: -1,
                    timeout_ms: timeout,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    last_update_ms: now,
                }
            }
            Some(mut m) => {
                let given = (request.producer_id.0, request.producer_epoch);
                if given.0 >= 0 && given != (m.producer_id, m.epoch) {
                    return fail(ResponseError::ProducerFenced);
                }
                match m.state {
                    TxnState::PrepareCommit | TxnState::PrepareAbort => {
                        return fail(ResponseError::ConcurrentTransactions);
                    }
                    TxnState::Ongoing => {
                        // A new instance of the producer: fence the old one by aborting its
                        // transaction under a bumped epoch.
                        m.epoch = m.epoch.saturating_add(1);
                        if let Err(e) = self.complete_transaction(&id, &mut m, false).await {
                            return fail(e);
                        }
                    }
                    _ => {}
                }
                m
            }
        };
        if m.epoch >= i16::MAX - 1 {
            match self.logs.allocate_producer_id().await {
                Ok(pid) => (m.producer_id, m.epoch) = (pid, 0),
                Err(_) => return fail(ResponseError::CoordinatorNotAvailable),
            }
        } else {
            m.epoch += 1;
        }
        m.timeout_ms = timeout;
        m.state = TxnState::Empty;
        m.partitions.clear();
        m.last_update_ms = now;
        if let Err(e) = self.persist_txn(&id, Some(&m)).await {
            return fail(e);
        }
        let response = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(m.producer_id))
            .with_producer_epoch(m.epoch);
        txns.insert(id, m);
        response
    }

    /// Ends `m`'s transaction: Prepare state, markers, Complete state, each durable in turn.
    /// Markers carry `m.epoch`, which callers bump first when fencing.
    async fn complete_transaction(
        &self,
        id: &str,
        m: &mut TxnMetadata,
        commit: bool,
    ) -> Result<(), ResponseError> {
        self.txn.open.close(m.producer_id);
        m.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        m.last_update_ms = now_ms();
        self.persist_txn(id, Some(m)).await?;
        let marker = TxnMarker {
            producer_id: m.producer_id,
            producer_epoch: m.epoch,
            coordinator_epoch: 0,
            commit,
        };
        for (tp, error) in self.write_markers(&marker, &m.partitions).await {
            if let Some(e) = error {
                warn!(transactional_id = id, topic = %tp.0, partition = tp.1, error = ?e, "transaction marker not written");
                if e != ResponseError::UnknownTopicOrPartition {
                    return Err(ResponseError::CoordinatorNotAvailable);
                }
            }
        }
        m.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        m.partitions.clear();
        m.last_update_ms = now_ms();
        self.persist_txn(id, Some(m)).await
    }

    /// Writes `marker` to each partition, through its leader: here, or with WriteTxnMarkers
    /// to the broker that leads it (Kafka's `TransactionMarkerChannelManager`). A partition
    /// without a leader now fails, and the transaction sweeper tries again.
    async fn write_markers(
        &self,
        marker: &TxnMarker,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Vec<(TopicPartition, Option<ResponseError>)> {
        let mut here = BTreeSet::new();
        let mut elsewhere: BTreeMap<i32, BTreeSet<TopicPartition>> = BTreeMap::new();
        let mut results = Vec::new();
        for tp in partitions {
            match self.logs.leader(&tp.0, tp.1) {
                Some(leader) if leader == self.node_id => {
                    here.insert(tp.clone());
                }
                Some(leader) => {
                    elsewhere.entry(leader).or_default().insert(tp.clone());
                }
                None if self.logs.topic(&tp.0).is_none() => {
                    results.push((tp.clone(), Some(ResponseError::UnknownTopicOrPartition)));
                }
                None => results.push((tp.clone(), Some(ResponseError::NotLeaderOrFollower))),
            }
        }
        results.extend(self.write_local_markers(marker, &here).await);
        for (leader, partitions) in elsewhere {
            results.extend(self.send_markers(leader, marker, &partitions).await);
        }
        results
    }

    /// WriteTxnMarkers to `leader` for `partitions`; every partition fails alike when the
    /// request does.
    async fn send_markers(
        &self,
        leader: i32,
        marker: &TxnMarker,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Vec<(TopicPartition, Option<ResponseError>)> {
        let topics = by_topic(
            partitions.iter().map(|(t, p)| (t.clone(), *p)),
            |topic, indexes| {
                WritableTxnMarkerTopic::default()
                    .with_name(str_bytes(topic).into())
                    .with_partition_indexes(indexes)
            },
        );
        let request = WriteTxnMarkersRequest::default().with_markers(vec![
            WritableTxnMarker::default()
                .with_producer_id(ProducerId(marker.producer_id))
                .with_producer_epoch(marker.producer_epoch)
                .with_transaction_result(marker.commit)
                .with_coordinator_epoch(marker.coordinator_epoch)
                .with_topics(topics),
        ]);
        let response = match self.call_broker(leader, &request, 1).await {
            Ok(response) => response,
            Err(e) => {
                warn!(leader, error = %e, "cannot send transaction markers");
                return partitions
                    .iter()
                    .map(|tp| (tp.clone(), Some(ResponseError::NotLeaderOrFollower)))
                    .collect();
            }
        };
        let mut results = Vec::new();
        for m in response.markers {
            for t in m.topics {
                for p in t.partitions {
                    let error = ResponseError::try_from_code(p.error_code);
                    results.push(((t.name.to_string(), p.partition_index), error));
                }
            }
        }
        // A partition the answer left out was not written.
        for tp in partitions {
            if !results.iter().any(|(r, _)| r == tp) {
                results.push((tp.clone(), Some(ResponseError::UnknownServerError)));
            }
        }
        results
    }

    /// Writes `marker` to each partition led here and waits until all are on the in-sync
    /// replicas. Markers in `__consumer_offsets` also settle the producer's pending
    /// transactional offsets.
    async fn write_local_markers(
        &self,
        marker: &TxnMarker,
        partitions: &BTreeSet<TopicPartition>,
    ) -> Vec<(TopicPartition, Option<ResponseError>)> {
        let mut results = Vec::new();
        let mut waits = Vec::new();
        for tp in partitions {
            if self.leads(&tp.0, tp.1).is_err() {
                results.push((tp.clone(), Some(ResponseError::NotLeaderOrFollower)));
                continue;
            }
            let Some(partition) = self.logs.partition(&tp.0, tp.1) else {
                results.push((tp.clone(), Some(ResponseError::UnknownTopicOrPartition)));
                continue;
            };
            let epoch = partition.leader_epoch();
            let appended = match partition.lock_log() {
                Some(mut log) => log.append_marker(marker, epoch),
                None => {
                    results.push((tp.clone(), Some(ResponseError::KafkaStorageError)));
                    continue;
                }
            };
            match appended {
                Ok(written) => {
                    partition.appended.notify_waiters();
                    if tp.0 == OFFSETS_TOPIC {
                        self.coordinator.settle_txn_offsets(
                            marker.producer_id,
                            tp.1,
                            marker.commit,
                        );
                    }
                    // On every in-sync replica before the transaction counts as ended: a
                    // new leader without the marker would hold the transaction open.
                    let ack = self.acknowledged(
                        &partition,
                        written.last_offset,
                        epoch,
                        1,
                        false,
                        MARKER_TIMEOUT,
                    );
                    waits.push((results.len(), ack));
                    results.push((tp.clone(), None));
                }
                Err(e) => {
                    warn!(topic = %tp.0, partition = tp.1, error = %e, "cannot write transaction marker");
                    results.push((tp.clone(), Some(super::produce::storage_error_code(&e))));
                }
            }
        }
        for (i, ack) in waits {
            if let Err((error, message)) = ack.await {
                warn!(topic = %results[i].0.0, partition = results[i].0.1, ?error, %message, "transaction marker not acknowledged");
                results[i].1 = Some(error);
            }
        }
        results
    }

    /// Adds partitions to a transaction (or, `verify_only`, checks they are in it).
    async fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        wanted: Vec<TopicPartition>,
        verify_only: bool,
    ) -> Vec<(TopicPartition, Option<ResponseError>)> {
        let all = |e: ResponseError| wanted.iter().map(|tp| (tp.clone(), Some(e))).collect();
        if let Err(e) = self.check_coordinator(CoordinatorKind::Transaction, id) {
            return all(e);
        }
        let unknown: Vec<bool> = wanted
            .iter()
            .map(|(t, p)| self.logs.partition(t, *p).is_none())
            .collect();
        if unknown.iter().any(|u| *u) {
            return wanted
                .iter()
                .zip(unknown)
                .map(|(tp, u)| {
                    let e = if u {
                        ResponseError::UnknownTopicOrPartition
                    } else {
                        ResponseError::OperationNotAttempted
                    };
                    (tp.clone(), Some(e))
                })
                .collect();
        }
        let mut txns = self.txn.txns.lock().await;
        let mut m = match check_producer(txns.get(id), producer_id, epoch) {
            Ok(m) => m.clone(),
            Err(e) => return all(e),
        };
        if verify_only {
            let in_txn = m.state == TxnState::Ongoing;
            return wanted
                .into_iter()
                .map(|tp| {
                    let ok = in_txn && m.partitions.contains(&tp);
                    (tp, (!ok).then_some(ResponseError::InvalidTxnState))
                })
                .collect();
        }
        let now = now_ms();
        if m.state != TxnState::Ongoing {
            m.start_ms = now;
            m.partitions.clear();
        }
        let before = m.partitions.len();
        m.partitions.extend(wanted.iter().cloned());
        if m.state != TxnState::Ongoing || m.partitions.len() != before {
            m.state = TxnState::Ongoing;
            m.last_update_ms = now;
            if let Err(e) = self.persist_txn(id, Some(&m)).await {
                return all(e);
            }
        }
        self.txn.open.open(m.producer_id, m.epoch, &m.partitions);
        txns.insert(id.to_string(), m);
        wanted.into_iter().map(|tp| (tp, None)).collect()
    }

    pub(crate) async fn add_partitions_to_txn(
        &self,
        request: AddPartitionsToTxnRequest,
        version: i16,
    ) -> AddPartitionsToTxnResponse {
        let flatten = |topics: &[AddPartitionsToTxnTopic]| -> Vec<TopicPartition> {
            topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
                .collect()
        };
        let to_topics = |results: Vec<(TopicPartition, Option<ResponseError>)>| {
            let results = results.into_iter().map(|((topic, partition), error)| {
                let result = AddPartitionsToTxnPartitionResult::default()
                    .with_partition_index(partition)
                    .with_partition_error_code(code(error));
                (topic, result)
            });
            by_topic(results, |topic, results| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(str_bytes(topic).into())
                    .with_results_by_partition(results)
            })
        };
        if version <= 3 {
            let results = self
                .add_partitions(
                    request.v3_and_below_transactional_id.as_str(),
                    request.v3_and_below_producer_id.0,
                    request.v3_and_below_producer_epoch,
                    flatten(&request.v3_and_below_topics),
                    false,
                )
                .await;
            return AddPartitionsToTxnResponse::default()
                .with_results_by_topic_v3_and_below(to_topics(results));
        }
        let mut by_transaction = Vec::new();
        for t in &request.transactions {
            let results = self
                .add_partitions(
                    t.transactional_id.as_str(),
                    t.producer_id.0,
                    t.producer_epoch,
                    flatten(&t.topics),
                    t.verify_only,
                )
                .await;
            by_transaction.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(to_topics(results)),
            );
        }
        AddPartitionsToTxnResponse::default().with_results_by_transaction(by_transaction)
    }

    pub(crate) async fn add_offsets_to_txn(
        &self,
        request: AddOffsetsToTxnRequest,
    ) -> AddOffsetsToTxnResponse {
        let Some(offsets) = self.offsets_topic().await else {
            return AddOffsetsToTxnResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code());
        };
        let partition = partition_for(request.group_id.as_str(), offsets.partitions.len() as i32);
        let results = self
            .add_partitions(
                request.transactional_id.as_str(),
                request.producer_id.0,
                request.producer_epoch,
                vec![(OFFSETS_TOPIC.to_string(), partition)],
                false,
            )
            .await;
        AddOffsetsToTxnResponse::default().with_error_code(code(results[0].1))
    }

    pub(crate) async fn end_txn(&self, request: EndTxnRequest) -> EndTxnResponse {
        let id = request.transactional_id.to_string();
        let respond = |e: Option<ResponseError>| {
            EndTxnResponse::default()
                .with_error_code(code(e))
                .with_producer_id(request.producer_id)
                .with_producer_epoch(request.producer_epoch)
        };
        if let Err(e) = self.check_coordinator(CoordinatorKind::Transaction, &id) {
            return respond(Some(e));
        }
        let mut txns = self.txn.txns.lock().await;
        let mut m =
            match check_producer(txns.get(&id), request.producer_id.0, request.producer_epoch) {
                Ok(m) => m.clone(),
                Err(e) => return respond(Some(e)),
            };
        let commit = request.committed;
        let outcome = match m.state {
            TxnState::Ongoing => self.complete_transaction(&id, &mut m, commit).await.err(),
            // A retry of the request that already ended it.
            TxnState::CompleteCommit if commit => None,
            TxnState::CompleteAbort if !commit => None,
            _ => Some(ResponseError::InvalidTxnState),
        };
        txns.insert(id, m);
        respond(outcome)
    }

    pub(crate) async fn txn_offset_commit(
        &self,
        request: TxnOffsetCommitRequest,
        version: i16,
    ) -> TxnOffsetCommitResponse {
        let group_id = request.group_id.to_string();
        let (pid, epoch) = (request.producer_id.0, request.producer_epoch);
        let offsets = self.offsets_topic().await;
        let coordinated = self.check_coordinator(CoordinatorKind::Group, &group_id);
        let error = match &offsets {
            None => Some(ResponseError::CoordinatorNotAvailable),
            Some(_) if coordinated.is_err() => coordinated.err(),
            Some(topic) => {
                let partition = partition_for(&group_id, topic.partitions.len() as i32);
                if !self.txn.open.allows(pid, epoch, OFFSETS_TOPIC, partition) {
                    let txns = self.txn.txns.lock().await;
                    Some(
                        check_producer(txns.get(request.transactional_id.as_str()), pid, epoch)
                            .err()
                            .unwrap_or(ResponseError::InvalidTxnState),
                    )
                } else if version >= 3 && request.generation_id >= 0 {
                    // KIP-447: the group's generation fences zombie instances.
                    let mut groups = self.coordinator.groups.lock_or_recover();
                    groups.get_mut(&group_id).and_then(|g| {
                        g.check_commit(
                            &request.member_id,
                            request.group_instance_id.as_deref(),
                            request.generation_id,
                            &self.committed_partitions(request.topics.iter().map(|t| {
                                (
                                    t.name.as_str(),
                                    t.partitions.iter().map(|p| p.partition_index),
                                )
                            })),
                            std::time::Instant::now(),
                        )
                    })
                } else {
                    None
                }
            }
        };
        let now = now_ms();
        let mut pending = Vec::new();
        let mut topics = Vec::new();
        for topic in &request.topics {
            let known = self.logs.topic(topic.name.as_str());
            let mut partitions = Vec::new();
            for p in &topic.partitions {
                let metadata = p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let e = error.or_else(|| {
                    if known.as_ref().is_none_or(|k| {
                        p.partition_index < 0 || p.partition_index as usize >= k.partitions.len()
                    }) {
                        Some(ResponseError::UnknownTopicOrPartition)
                    } else if metadata.len() > self.coordinator.metadata_max_bytes {
                        Some(ResponseError::OffsetMetadataTooLarge)
                    } else {
                        None
                    }
                });
                if e.is_none() {
                    pending.push(PendingOffset {
                        group: group_id.clone(),
                        topic: topic.name.to_string(),
                        partition: p.partition_index,
                        offset: CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata,
                            commit_timestamp: now,
                            // Known once appended, below.
                            record_offset: -1,
                        },
                    });
                }
                partitions.push(
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code(e)),
                );
            }
            topics.push(
                TxnOffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions),
            );
        }
        if let (Some(offsets), false) = (offsets, pending.is_empty()) {
            let owner = BatchOwner {
                producer_id: pid,
                producer_epoch: epoch,
                transactional: true,
                control: false,
            };
            let written = self
                .coordinator
                .append_txn_offsets(&offsets, &group_id, &pending, owner);
            let durable = match written {
                Ok(appended) => {
                    // The records are in `pending`'s order.
                    for (at, p) in (appended.base_offset..).zip(&mut pending) {
                        p.offset.record_offset = at;
                    }
                    self.durable(&appended).await
                }
                Err(e) => {
                    warn!(group = %group_id, error = %e, "cannot write transactional offsets");
                    false
                }
            };
            if durable {
                self.coordinator.add_pending_txn_offsets(pid, pending);
            } else {
                for t in &mut topics {
                    for p in &mut t.partitions {
                        if p.error_code == 0 {
                            p.error_code = ResponseError::CoordinatorNotAvailable.code();
                        }
                    }
                }
            }
        }
        TxnOffsetCommitResponse::default().with_topics(topics)
    }

    pub(crate) async fn write_txn_markers(
        &self,
        request: WriteTxnMarkersRequest,
    ) -> WriteTxnMarkersResponse {
        let mut markers = Vec::new();
        for m in &request.markers {
            let partitions: BTreeSet<TopicPartition> = m
                .topics
                .iter()
                .flat_map(|t| t.partition_indexes.iter().map(|p| (t.name.to_string(), *p)))
                .collect();
            let marker = TxnMarker {
                producer_id: m.producer_id.0,
                producer_epoch: m.producer_epoch,
                coordinator_epoch: m.coordinator_epoch,
                commit: m.transaction_result,
            };
            // The producer's writes to these partitions were verified with its
            // coordinator; its transaction is ending, so the next one verifies again.
            self.txn.open.close(m.producer_id.0);
            let results = self.write_local_markers(&marker, &partitions).await;
            let results = results.into_iter().map(|((topic, partition), error)| {
                let result = WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(partition)
                    .with_error_code(code(error));
                (topic, result)
            });
            let topics = by_topic(results, |topic, results| {
                WritableTxnMarkerTopicResult::default()
                    .with_name(str_bytes(topic).into())
                    .with_partitions(results)
            });
            markers.push(
                WritableTxnMarkerResult::default()
                    .with_producer_id(m.producer_id)
                    .with_topics(topics),
            );
        }
        WriteTxnMarkersResponse::default().with_markers(markers)
    }

    pub(crate) async fn describe_transactions(
        &self,
        request: DescribeTransactionsRequest,
    ) -> DescribeTransactionsResponse {
        let txns = self.txn.txns.lock().await;
        let states = request
            .transactional_ids
            .iter()
            .map(|id| {
                let state = TransactionState::default().with_transactional_id(id.clone());
                if let Err(e) = self.check_coordinator(CoordinatorKind::Transaction, id.as_str()) {
                    return state.with_error_code(e.code());
                }
                let Some(m) = txns.get(id.as_str()) else {
                    return state.with_error_code(ResponseError::TransactionalIdNotFound.code());
                };
                let partitions = m.partitions.iter().map(|(topic, p)| (topic, *p));
                let topics = by_topic(partitions, |topic, partitions| {
                    TopicData::default()
                        .with_topic(str_bytes(topic.clone()).into())
                        .with_partitions(partitions)
                });
                state
                    .with_transaction_state(str_bytes(m.state.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.epoch)
                    .with_topics(topics)
            })
            .collect();
        DescribeTransactionsResponse::default().with_transaction_states(states)
    }

    pub(crate) async fn list_transactions(
        &self,
        request: ListTransactionsRequest,
    ) -> ListTransactionsResponse {
        use kafka_protocol::messages::list_transactions_response::TransactionState as Listed;
        let mut unknown = Vec::new();
        let mut states = BTreeSet::new();
        for f in &request.state_filters {
            match TxnState::from_name(f.as_str()) {
                Some(s) => {
                    states.insert(s.name());
                }
                None => unknown.push(f.clone()),
            }
        }
        let pattern = match request.transactional_id_pattern.as_deref() {
            Some(p) if !p.is_empty() => match regex::Regex::new(&format!("^(?:{p})$")) {
                Ok(r) => Some(r),
                Err(_) => {
                    return ListTransactionsResponse::default()
                        .with_error_code(ResponseError::InvalidRegularExpression.code());
                }
            },
            _ => None,
        };
        let now = now_ms();
        let txns = self.txn.txns.lock().await;
        let listed = txns
            .iter()
            .filter(|(_, m)| {
                (request.state_filters.is_empty() || states.contains(m.state.name()))
                    && (request.producer_id_filters.is_empty()
                        || request
                            .producer_id_filters
                            .contains(&ProducerId(m.producer_id)))
                    && (request.duration_filter < 0
                        || (m.state == TxnState::Ongoing
                            && now.saturating_sub(m.start_ms) >= request.duration_filter))
            })
            .filter(|(id, _)| pattern.as_ref().is_none_or(|r| r.is_match(id)))
            .map(|(id, m)| {
                Listed::default()
                    .with_transactional_id(TransactionalId(str_bytes(id.clone())))
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_transaction_state(str_bytes(m.state.name()))
            })
            .collect();
        ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(listed)
    }

    pub(crate) fn describe_producers(
        &self,
        request: DescribeProducersRequest,
    ) -> DescribeProducersResponse {
        let topics = request
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|&index| {
                        let response = PartitionResponse::default().with_partition_index(index);
                        let Some(partition) = self.logs.partition(t.name.as_str(), index) else {
                            return response
                                .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                        };
                        let Some(log) = partition.lock_log() else {
                            return response
                                .with_error_code(ResponseError::KafkaStorageError.code());
                        };
                        let producers = log
                            .producers()
                            .into_iter()
                            .map(|p| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(p.producer_id))
                                    .with_producer_epoch(i32::from(p.epoch))
                                    .with_last_sequence(p.last_sequence)
                                    .with_last_timestamp(p.last_timestamp)
                                    .with_coordinator_epoch(p.coordinator_epoch)
                                    .with_current_txn_start_offset(
                                        p.current_txn_first_offset.unwrap_or(-1),
                                    )
                            })
                            .collect();
                        response.with_active_producers(producers)
                    })
                    .collect();
                TopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        DescribeProducersResponse::default().with_topics(topics)
    }

    /// The coordinator's timers, every
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: finishes transactions
    /// a crash left in a Prepare state, aborts (and fences) transactions open longer than
    /// their timeout, forgets transactional ids idle for `transactional.id.expiration.ms`,
    /// and producers idle for `producer.id.expiration.ms`.
    pub(crate) async fn sweep_transactions(&self) {
        let now = now_ms();
        let limits = self.txn.limits;
        let mut txns = self.txn.txns.lock().await;
        let ids: Vec<String> = txns.keys().cloned().collect();
        for id in ids {
            let Some(mut m) = txns.get(&id).cloned() else {
                continue;
            };
            let outcome = match m.state {
                TxnState::PrepareCommit => self.complete_transaction(&id, &mut m, true).await,
                TxnState::PrepareAbort => self.complete_transaction(&id, &mut m, false).await,
                TxnState::Ongoing if now.saturating_sub(m.start_ms) > i64::from(m.timeout_ms) => {
                    info!(transactional_id = %id, producer_id = m.producer_id, "aborting a transaction that timed out");
                    m.epoch = m.epoch.saturating_add(1);
                    self.complete_transaction(&id, &mut m, false).await
                }
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    if now.saturating_sub(m.last_update_ms) > limits.id_expiration_ms =>
                {
                    if self.persist_txn(&id, None).await.is_ok() {
                        txns.remove(&id);
                    }
                    continue;
                }
                _ => continue,
            };
            if let Err(e) = outcome {
                warn!(transactional_id = %id, error = ?e, "cannot finish transaction; will retry");
            }
            txns.insert(id, m);
        }
        drop(txns);
        for topic in self.logs.topics() {
            for partition in &topic.partitions {
                if let Some(mut log) = partition.lock_log() {
                    log.expire_producers(now, limits.producer_id_expiration_ms);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::by_topic;

    #[test]
    fn by_topic_groups_in_order_of_first_appearance() {
        let entries = [("b", 0), ("a", 1), ("b", 2), ("c", 3), ("a", 4)];
        let grouped = by_topic(entries, |topic, partitions| (topic, partitions));
        assert_eq!(
            grouped,
            [("b", vec![0, 2]), ("a", vec![1, 4]), ("c", vec![3])]
        );
    }
}
