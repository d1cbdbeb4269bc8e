use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ProduceRequest, ProduceResponse, ProducerId,
};
use odradek_protocol::batch::{self, BatchError};
use odradek_storage::{DurabilityWaiter, ProducerError, StorageError};
use tokio::sync::oneshot;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::Broker;
use crate::broker::{Reply, str_bytes};
use crate::log_manager::{Partition, Topic};

/// Completes once an acks=all batch is on stable storage on every in-sync replica, or
/// with the error the producer hears.
pub(crate) type DurableAck =
    Pin<Box<dyn Future<Output = Result<(), (ResponseError, String)>> + Send>>;

/// Waits until the batch ending before `end`, appended at leader epoch `epoch`, is fsync'd
/// here (`synced`) and on every in-sync replica (the high watermark passed it).
async fn replicated(
    partition: Arc<Partition>,
    synced: Option<oneshot::Receiver<Result<(), Arc<StorageError>>>>,
    end: i64,
    epoch: i32,
    min_insync: usize,
    timeout: std::time::Duration,
) -> Result<(), (ResponseError, String)> {
    if let Some(synced) = synced {
        let local = synced.await.unwrap_or_else(|_| {
            Err(Arc::new(StorageError::ShuttingDown(
                std::path::PathBuf::new(),
            )))
        });
        if let Err(e) = local {
            return Err((storage_error_code(&e), e.to_string()));
        }
    }
    let mut watermark = partition.replica.watch();
    // An ISR shrunk below min.insync.replicas holds the high watermark still (KIP-966), so
    // the write is answered at once rather than at the timeout.
    let waited = tokio::time::timeout(
        timeout,
        watermark.wait_for(|w| {
            w.leading_epoch != epoch
                || w.sole_member
                || w.high_watermark >= end
                || w.isr_len < min_insync
        }),
    )
    .await;
    let not_leader = || {
        (
            ResponseError::NotLeaderOrFollower,
            "leadership moved before the write was replicated".to_string(),
        )
    };
    match waited {
        Err(_) => Err((
            ResponseError::RequestTimedOut,
            "the in-sync replicas did not all have the write within the request timeout".into(),
        )),
        Ok(Err(_)) => Err(not_leader()),
        Ok(Ok(w)) if w.leading_epoch != epoch => Err(not_leader()),
        Ok(Ok(w)) if w.isr_len < min_insync => Err((
            ResponseError::NotEnoughReplicasAfterAppend,
            format!(
                "The write is on the {} in-sync replicas, fewer than min.insync.replicas ({min_insync}).",
                w.isr_len
            ),
        )),
        Ok(Ok(_)) => Ok(()),
    }
}

fn batch_error_code(e: &BatchError) -> ResponseError {
    match e {
        BatchError::Corrupt(_) => ResponseError::CorruptMessage,
        BatchError::Invalid(_) => ResponseError::InvalidRecord,
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
    }
}

pub(crate) fn storage_error_code(e: &StorageError) -> ResponseError {
    match e {
        StorageError::Producer(p) => match p {
            ProducerError::InvalidEpoch { .. } => ResponseError::InvalidProducerEpoch,
            ProducerError::OutOfOrder { .. } => ResponseError::OutOfOrderSequenceNumber,
            ProducerError::NonTransactionalInTransaction { .. } => ResponseError::InvalidTxnState,
            ProducerError::CoordinatorFenced { .. } => ResponseError::TransactionCoordinatorFenced,
        },
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::ShuttingDown(_) => ResponseError::NotLeaderOrFollower,
        StorageError::Io { .. }
        | StorageError::Offline(_)
        | StorageError::Corrupt { .. }
        | StorageError::NonContiguous { .. } => ResponseError::KafkaStorageError,
    }
}

fn failed(index: i32, error: ResponseError, message: String) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_error_message(Some(str_bytes(message)))
}

/// `message.timestamp.before.max.ms` / `after.max.ms` for CreateTime topics. The batch
/// header bounds its records' timestamps (first record's timestamp and the maximum), so
/// the check needs no decompression; a record in the middle older than the first is not
/// caught, where Kafka, which inflates every batch, would.
fn timestamp_problem(records: &[u8], settings: &crate::config::TopicSettings) -> Option<String> {
    if settings.log.timestamp_type != odradek_storage::TimestampType::CreateTime {
        return None;
    }
    let header = batch::BatchHeader::parse(records)?;
    let now = odradek_storage::now_ms();
    let (first, max) = (header.base_timestamp(), header.max_timestamp());
    if now.saturating_sub(first) > settings.timestamp_before_max_ms {
        return Some(format!(
            "Timestamp {first} of message is before the allowed {} ms window (message.timestamp.before.max.ms)",
            settings.timestamp_before_max_ms
        ));
    }
    if max.saturating_sub(now) > settings.timestamp_after_max_ms {
        return Some(format!(
            "Timestamp {max} of message is after the allowed {} ms window (message.timestamp.after.max.ms)",
            settings.timestamp_after_max_ms
        ));
    }
    None
}

/// The bytes to store: the batch as sent (shared, not copied), or, when the topic's
/// `compression.type` names a codec other than the batch's, the same records recompressed
/// with it (as Kafka does).
fn recompressed(records: &Bytes, codec: Option<batch::Compression>) -> Result<Bytes, BatchError> {
    let header = batch::BatchHeader::parse(records)
        .ok_or_else(|| BatchError::Corrupt("truncated header".into()))?;
    match codec {
        Some(target) if header.compression() != Some(target) => {
            let inflated = batch::decompressed_records(records)?;
            batch::build_batch(
                records,
                &inflated,
                header.record_count(),
                header.max_timestamp(),
                target,
            )
            .map(BytesMut::freeze)
        }
        _ => Ok(records.clone()),
    }
}

/// Indexes of the records in a validated batch that have no key. Compressed batches are
/// inflated for this: the one place the produce path decompresses, and only for compacted
/// topics, where Kafka refuses keyless records because the cleaner could not keep them.
fn keyless_records(records: &[u8]) -> Result<Vec<i32>, BatchError> {
    let header = batch::BatchHeader::parse(records)
        .ok_or_else(|| BatchError::Corrupt("truncated header".into()))?;
    let inflated;
    let section = if header.compression() == Some(batch::Compression::None) {
        &records[batch::HEADER_LEN..]
    } else {
        inflated = batch::decompressed_records(records)?;
        &inflated[..]
    };
    let mut missing = Vec::new();
    for (index, record) in batch::raw_records(section).enumerate() {
        if record?.key.is_none() {
            missing.push(index as i32);
        }
    }
    Ok(missing)
}

/// Kafka's answer to keyless records on a compacted topic: INVALID_RECORD with one
/// `record_errors` entry per record.
fn keyless_rejected(index: i32, topic: &str, missing: &[i32]) -> PartitionProduceResponse {
    let message = format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{index}."
    );
    let errors = missing
        .iter()
        .map(|&i| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(i)
                .with_batch_index_error_message(Some(str_bytes(message.clone())))
        })
        .collect();
    failed(
        index,
        ResponseError::InvalidRecord,
        format!(
            "One or more records have been rejected due to {} record errors in total: {message}",
            missing.len()
        ),
    )
    .with_record_errors(errors)
}

impl Broker {
    /// An acks=all acknowledgement of what was appended up to `last_offset` at leader
    /// `epoch`: it completes once that is fsync'd here and on every in-sync replica, or
    /// with `write_caching` once every in-sync replica has it, synced or not.
    pub(crate) fn acknowledged(
        &self,
        partition: &Arc<Partition>,
        last_offset: i64,
        epoch: i32,
        min_insync: usize,
        write_caching: bool,
        timeout: std::time::Duration,
    ) -> DurableAck {
        let synced = (!write_caching).then(|| {
            let (tx, rx) = oneshot::channel();
            let waiter: DurabilityWaiter = Box::new(move |r| {
                let _ = tx.send(r);
            });
            self.logs.sync(partition, Some(waiter));
            rx
        });
        Box::pin(replicated(
            partition.clone(),
            synced,
            last_offset + 1,
            epoch,
            min_insync,
            timeout,
        ))
    }

    /// KIP-890's verification when the producer's transaction coordinator is another
    /// broker: each transactional batch for a partition led here that this broker has not
    /// seen in the transaction is asked about with AddPartitionsToTxn (v4, verify only), and
    /// what the coordinator confirms is admitted until the transaction's markers arrive.
    pub(crate) async fn verify_with_coordinator(&self, request: &ProduceRequest) {
        let Some(transactional_id) = request.transactional_id.as_ref() else {
            return;
        };
        let mut unverified: BTreeMap<(i64, i16), BTreeSet<(String, i32)>> = BTreeMap::new();
        for topic_data in &request.topic_data {
            let name = if topic_data.name.is_empty() {
                match self.logs.topic_by_id(&topic_data.topic_id) {
                    Some(t) => t.name.clone(),
                    None => continue,
                }
            } else {
                topic_data.name.to_string()
            };
            for data in &topic_data.partition_data {
                let Some(header) = data.records.as_deref().and_then(batch::BatchHeader::parse)
                else {
                    continue;
                };
                let (pid, epoch) = (header.producer_id(), header.producer_epoch());
                if header.is_transactional()
                    && !self.txn.open.allows(pid, epoch, &name, data.index)
                    && self.leads(&name, data.index).is_ok()
                {
                    unverified
                        .entry((pid, epoch))
                        .or_default()
                        .insert((name.clone(), data.index));
                }
            }
        }
        if unverified.is_empty() {
            return;
        }
        let Some(coordinator) = self
            .logs
            .topic(crate::coordinator::transactions::TRANSACTION_STATE_TOPIC)
            .and_then(|t| {
                let at = crate::coordinator::partition_for(
                    transactional_id.as_str(),
                    t.partitions.len() as i32,
                );
                self.logs.leader(&t.name, at)
            })
            .filter(|c| *c != self.node_id)
        else {
            return;
        };
        for ((pid, epoch), partitions) in unverified {
            let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
            for (topic, index) in &partitions {
                match topics.iter_mut().find(|t| t.name.as_str() == topic) {
                    Some(t) => t.partitions.push(*index),
                    None => topics.push(
                        AddPartitionsToTxnTopic::default()
                            .with_name(str_bytes(topic.clone()).into())
                            .with_partitions(vec![*index]),
                    ),
                }
            }
            let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
                AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(transactional_id.clone())
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_verify_only(true)
                    .with_topics(topics),
            ]);
            match self.call_broker(coordinator, &request, 4).await {
                Ok(response) => {
                    for result in response.results_by_transaction {
                        for t in result.topic_results {
                            for p in t.results_by_partition {
                                if p.partition_error_code == 0 {
                                    self.txn.open.admit(
                                        pid,
                                        epoch,
                                        (t.name.to_string(), p.partition_index),
                                    );
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    debug!(coordinator, error = %e, "cannot verify a transactional write with its coordinator");
                }
            }
        }
    }

    /// KIP-890's defence: a transactional batch is accepted only if its producer, at this
    /// epoch, added the partition to its ongoing transaction.
    fn unverified_transactional_write(
        &self,
        topic: &str,
        partition: i32,
        records: &[u8],
    ) -> Option<ResponseError> {
        let header = batch::BatchHeader::parse(records)?;
        if !header.is_transactional() {
            return None;
        }
        let (pid, epoch) = (header.producer_id(), header.producer_epoch());
        (!self.txn.open.allows(pid, epoch, topic, partition))
            .then_some(ResponseError::InvalidTxnState)
    }

    /// Validates and appends one partition's batch. Returns the response entry and, for
    /// acks=all, a receiver that fires once the batch is on stable storage.
    fn append_to_partition(
        &self,
        topic: &Topic,
        partition: &Arc<Partition>,
        records: Option<&Bytes>,
        acks: i16,
        timeout: std::time::Duration,
    ) -> (PartitionProduceResponse, Option<DurableAck>) {
        let index = partition.index;
        let Some(records) = records else {
            return (
                failed(
                    index,
                    ResponseError::CorruptMessage,
                    "produce request carries no records".into(),
                ),
                None,
            );
        };
        if let Err(e) = batch::validate_produced(records, topic.settings.max_message_bytes) {
            debug!(topic = %topic.name, partition = index, error = %e, "rejected produced batch");
            return (failed(index, batch_error_code(&e), e.to_string()), None);
        }
        if topic.settings.log.compact {
            match keyless_records(records) {
                Ok(missing) if missing.is_empty() => {}
                Ok(missing) => {
                    debug!(topic = %topic.name, partition = index, records = missing.len(), "rejected keyless records for a compacted topic");
                    return (keyless_rejected(index, &topic.name, &missing), None);
                }
                Err(e) => return (failed(index, batch_error_code(&e), e.to_string()), None),
            }
        }
        if let Some(problem) = timestamp_problem(records, &topic.settings) {
            debug!(topic = %topic.name, partition = index, %problem, "rejected batch timestamp");
            return (
                failed(index, ResponseError::InvalidTimestamp, problem),
                None,
            );
        }
        let stored = match recompressed(records, topic.settings.compression) {
            Ok(stored) => stored,
            Err(e) => return (failed(index, batch_error_code(&e), e.to_string()), None),
        };
        let min_insync = topic.settings.min_insync_replicas;
        let isr_len = partition.replica.watermark().isr_len;
        if acks == -1 && isr_len < min_insync {
            return (
                failed(
                    index,
                    ResponseError::NotEnoughReplicas,
                    format!(
                        "The size of the current ISR ({isr_len}) is insufficient to satisfy the min.isr requirement of {min_insync} for partition {}-{index}",
                        topic.name
                    ),
                ),
                None,
            );
        }
        let Some(mut log) = partition.lock_log() else {
            return (
                failed(
                    index,
                    ResponseError::KafkaStorageError,
                    "partition is offline".into(),
                ),
                None,
            );
        };
        // Checked under the partition lock: ending a transaction closes it to new writes
        // before taking this lock to write the marker, so no write slips in after a marker.
        if let Some(error) = self.unverified_transactional_write(&topic.name, index, records) {
            drop(log);
            debug!(topic = %topic.name, partition = index, error = ?error, "rejected a transactional batch outside its transaction");
            return (
                failed(
                    index,
                    error,
                    "the partition is not part of the producer's ongoing transaction".into(),
                ),
                None,
            );
        }
        let epoch = partition.leader_epoch();
        let appended = log.append(stored, epoch);
        let log_start_offset = log.log_start_offset();
        drop(log);
        let result = match appended {
            Ok(r) => r,
            Err(e) => {
                warn!(topic = %topic.name, partition = index, error = %e, "append failed");
                return (failed(index, storage_error_code(&e), e.to_string()), None);
            }
        };
        partition.appended.notify_waiters();
        if !result.duplicate {
            let count = (result.last_offset - result.base_offset + 1).max(0) as u64;
            self.metrics
                .record_produce(&topic.metric_label, records.len(), count);
        }
        let write_caching = topic.settings.write_caching;
        // acks=all syncs anyway unless the topic caches writes; otherwise the flush policy
        // (`flush.messages`, `flush.ms`) decides.
        if result.flush_due && (acks != -1 || write_caching) {
            self.logs.sync(partition, None);
        }
        let durable = (acks == -1).then(|| {
            self.acknowledged(
                partition,
                result.last_offset,
                epoch,
                min_insync,
                write_caching,
                timeout,
            )
        });
        let response = PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(result.base_offset)
            .with_log_append_time_ms(result.log_append_time)
            .with_log_start_offset(log_start_offset);
        (response, durable)
    }

    pub(crate) fn produce(&self, request: ProduceRequest, version: i16) -> Reply {
        let acks = request.acks;
        let timeout = std::time::Duration::from_millis(request.timeout_ms.max(0) as u64);
        let mut topics = Vec::with_capacity(request.topic_data.len());
        let mut waits = Vec::new();
        let mut movers = std::collections::BTreeSet::new();
        for topic_data in &request.topic_data {
            let by_id = version >= 13;
            let topic = if by_id {
                self.logs.topic_by_id(&topic_data.topic_id)
            } else {
                self.logs.topic(topic_data.name.as_str())
            };
            let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
            for data in &topic_data.partition_data {
                let index = data.index;
                let entry = if !(-1..=1).contains(&acks) {
                    failed(
                        index,
                        ResponseError::InvalidRequiredAcks,
                        format!("acks must be -1, 0 or 1, not {acks}"),
                    )
                } else if topic
                    .as_ref()
                    .is_some_and(|t| crate::coordinator::is_internal(&t.name))
                {
                    failed(
                        index,
                        ResponseError::InvalidTopicException,
                        "Cannot append to internal topic".into(),
                    )
                } else if let Some(topic) = &topic {
                    match topic.partitions.get(index as usize).filter(|_| index >= 0) {
                        Some(_) if self.leads(&topic.name, index).is_err() => {
                            let leadership = self.logs.leadership(&topic.name, index);
                            let leader = leadership.map(|(leader, _)| leader);
                            movers.extend(leader);
                            let mut entry = failed(
                                index,
                                ResponseError::NotLeaderOrFollower,
                                format!(
                                    "This broker ({}) does not lead {}-{index}.",
                                    self.node_id, topic.name
                                ),
                            );
                            if version >= 10 {
                                entry.current_leader = LeaderIdAndEpoch::default()
                                    .with_leader_id(leader.unwrap_or(-1).into())
                                    .with_leader_epoch(leadership.map_or(-1, |(_, epoch)| epoch));
                            }
                            entry
                        }
                        Some(partition) => {
                            let (entry, durable) = self.append_to_partition(
                                topic,
                                partition,
                                data.records.as_ref(),
                                acks,
                                timeout,
                            );
                            if let Some(rx) = durable {
                                waits.push((topics.len(), partitions.len(), rx));
                            }
                            entry
                        }
                        None => failed(
                            index,
                            ResponseError::UnknownTopicOrPartition,
                            "This server does not host this topic-partition.".into(),
                        ),
                    }
                } else if by_id {
                    failed(
                        index,
                        ResponseError::UnknownTopicId,
                        "This server does not host this topic ID.".into(),
                    )
                } else {
                    failed(
                        index,
                        ResponseError::UnknownTopicOrPartition,
                        "This server does not host this topic-partition.".into(),
                    )
                };
                partitions.push(entry);
            }
            let mut response = TopicProduceResponse::default().with_partition_responses(partitions);
            if by_id {
                response.topic_id = topic_data.topic_id;
            } else {
                response.name = topic_data.name.clone();
                response.topic_id = Uuid::nil();
            }
            topics.push(response);
        }
        if acks == 0 {
            return Reply::Nothing;
        }
        let mut response = ProduceResponse::default().with_responses(topics);
        if version >= 10 {
            // KIP-951: where the partitions that moved are led now, so clients go there
            // without a metadata round trip.
            response.node_endpoints = self.node_endpoints(movers);
        }
        if waits.is_empty() {
            return Reply::now(kafka_protocol::messages::ResponseKind::Produce(response));
        }
        Reply::Later(Box::pin(async move {
            let mut response = response;
            for (t, p, ack) in waits {
                if let Err((error, message)) = ack.await {
                    let entry = &mut response.responses[t].partition_responses[p];
                    *entry = failed(entry.index, error, message);
                }
            }
            kafka_protocol::messages::ResponseKind::Produce(response)
        }))
    }
}
