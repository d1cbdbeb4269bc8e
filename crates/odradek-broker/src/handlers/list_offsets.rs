use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};
use odradek_storage::{OffsetLookup, UNDEFINED_EPOCH_OFFSET};

use super::check_leader_epoch;
use crate::Broker;

/// Kafka's special timestamps in ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

impl Broker {
    pub(crate) fn list_offsets(
        &self,
        request: ListOffsetsRequest,
        version: i16,
    ) -> ListOffsetsResponse {
        let topics = request
            .topics
            .iter()
            .map(|topic| {
                let found = self.logs.topic(topic.name.as_str());
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let response = ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_timestamp(-1)
                            .with_offset(-1);
                        let fail = |e: ResponseError| response.clone().with_error_code(e.code());
                        let partition = found.as_ref().and_then(|t| {
                            usize::try_from(p.partition_index)
                                .ok()
                                .and_then(|i| t.partitions.get(i))
                        });
                        let Some(partition) = partition else {
                            return fail(ResponseError::UnknownTopicOrPartition);
                        };
                        let checked = self
                            .leads(topic.name.as_str(), p.partition_index)
                            .and_then(|epoch| check_leader_epoch(p.current_leader_epoch, epoch));
                        if let Err(e) = checked {
                            return fail(e);
                        }
                        let Some(log) = partition.lock_online_log() else {
                            return fail(ResponseError::KafkaStorageError);
                        };
                        let (high_watermark, last_stable_offset) = partition.visible_offsets(&log);
                        let lookup = match p.timestamp {
                            // read_committed consumers start at the last stable offset.
                            LATEST if request.isolation_level == 1 => Ok(Some(OffsetLookup {
                                offset: last_stable_offset,
                                timestamp: -1,
                            })),
                            LATEST => Ok(Some(OffsetLookup {
                                offset: high_watermark,
                                timestamp: -1,
                            })),
                            EARLIEST | EARLIEST_LOCAL => Ok(Some(OffsetLookup {
                                offset: log.log_start_offset(),
                                timestamp: -1,
                            })),
                            MAX_TIMESTAMP => log.max_timestamp_offset(),
                            // Nothing is tiered: there is no tiered offset to report.
                            LATEST_TIERED => Ok(None),
                            t if t < 0 => return fail(ResponseError::InvalidRequest),
                            t => log.offset_for_timestamp(t),
                        };
                        match lookup {
                            // From v4, the epoch that wrote the offset (the latest for the
                            // log end), from the leader epoch cache, as Kafka reports it.
                            Ok(Some(found)) => response
                                .with_offset(found.offset)
                                .with_timestamp(found.timestamp)
                                .with_leader_epoch(if version >= 4 {
                                    log.leader_epochs().epoch_at(found.offset).unwrap_or(-1)
                                } else {
                                    -1
                                }),
                            Ok(None) => response,
                            Err(e) => {
                                tracing::warn!(error = %e, "ListOffsets read failed");
                                fail(ResponseError::KafkaStorageError)
                            }
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }
}

impl Broker {
    /// OffsetForLeaderEpoch (KIP-101, KIP-320): where each asked-for epoch's writes end in
    /// the partition's log, from its leader epoch cache. A client that read data of an
    /// older epoch compares this with its position to tell whether that data is still
    /// there. Answered by the leader only, after the same leader-epoch check as Fetch.
    pub(crate) fn offset_for_leader_epoch(
        &self,
        request: OffsetForLeaderEpochRequest,
    ) -> OffsetForLeaderEpochResponse {
        let topics = request
            .topics
            .iter()
            .map(|topic| {
                let name = topic.topic.as_str();
                let found = self.logs.topic(name);
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let answer = EpochEndOffset::default().with_partition(p.partition);
                        let ended = found
                            .as_ref()
                            .and_then(|t| {
                                usize::try_from(p.partition)
                                    .ok()
                                    .and_then(|i| t.partitions.get(i))
                            })
                            .ok_or(ResponseError::UnknownTopicOrPartition)
                            .and_then(|partition| {
                                let epoch = self.leads(name, p.partition)?;
                                check_leader_epoch(p.current_leader_epoch, epoch)?;
                                let log = partition
                                    .lock_online_log()
                                    .ok_or(ResponseError::KafkaStorageError)?;
                                Ok(log.end_offset_for_epoch(p.leader_epoch))
                            });
                        match ended {
                            Ok((epoch, end_offset)) => {
                                answer.with_leader_epoch(epoch).with_end_offset(end_offset)
                            }
                            Err(e) => answer
                                .with_error_code(e.code())
                                .with_leader_epoch(UNDEFINED_EPOCH_OFFSET.0)
                                .with_end_offset(UNDEFINED_EPOCH_OFFSET.1),
                        }
                    })
                    .collect();
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic.topic.clone())
                    .with_partitions(partitions)
            })
            .collect();
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }
}
