//! A replica whose log went offline (a failed fsync: a failing disk) leaves the ISR, and
//! if it led, hands the partition to another live in-sync replica first, so that clients
//! are served from a healthy copy instead of getting KAFKA_STORAGE_ERROR until someone
//! restarts the broker. Kafka gets there by halting a broker whose only log directory
//! failed, or, with several, by reporting the failed directory to the controller (KIP-858);
//! here a failed log takes only its own partition offline, so only that partition changes.
//! Leaving the ISR at once matters: the replica will not fetch again, and as a member it
//! would hold back every acks=all write and the high watermark until
//! `replica.lag.time.max.ms` dropped it.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::Broker;
use crate::metadata::MetadataRecord;

impl Broker {
    /// Every `broker.heartbeat.interval.ms`, takes this broker's replica out of the ISR of
    /// each partition whose log is offline here; where it leads, it first elects the first
    /// live in-sync replica (in preference order). The image applies each record only to
    /// the partition as it was proposed from (the election bumps both epochs once), so a
    /// stale view changes nothing and the next round proposes again.
    pub(crate) async fn run_offline_handoff(self: Arc<Self>) {
        let interval = self.config().int("broker.heartbeat.interval.ms").max(1);
        self.every(Duration::from_millis(interval as u64), || async {
            let image = self.logs.image();
            let mut records = Vec::new();
            for topic in self.logs.topics() {
                for partition in &topic.partitions {
                    // The common case, no offline log, costs one lock per partition.
                    let offline =
                        partition.shared_log().is_some() && partition.lock_online_log().is_none();
                    if !offline {
                        continue;
                    }
                    let id = topic.id;
                    let Some(placement) = image
                        .topic(&topic.name)
                        .filter(|t| t.id == id)
                        .and_then(|t| t.placement(partition.index))
                    else {
                        continue;
                    };
                    if !placement.isr.contains(&self.node_id) {
                        continue;
                    }
                    let rest: Vec<i32> = placement
                        .isr
                        .iter()
                        .copied()
                        .filter(|r| *r != self.node_id && image.is_live(*r))
                        .collect();
                    let (name, index) = (&topic.name, partition.index);
                    if placement.leader != self.node_id {
                        // The leader stays; only a live leader's ISR can be changed.
                        if rest.contains(&placement.leader) {
                            warn!(topic = %name, partition = index, "the log is offline: leaving the in-sync replicas");
                            records.push(MetadataRecord::IsrChanged {
                                id,
                                partition: index,
                                leader_epoch: placement.leader_epoch,
                                partition_epoch: placement.partition_epoch,
                                isr: rest,
                            });
                        }
                        continue;
                    }
                    let next = placement
                        .replicas
                        .iter()
                        .copied()
                        .find(|r| rest.contains(r));
                    let Some(next) = next else {
                        continue;
                    };
                    warn!(topic = %name, partition = index, next, "the log is offline: handing leadership to an in-sync replica");
                    records.extend([
                        MetadataRecord::LeaderElected {
                            id,
                            partition: index,
                            partition_epoch: placement.partition_epoch,
                            leader: next,
                            unclean: false,
                        },
                        MetadataRecord::IsrChanged {
                            id,
                            partition: index,
                            leader_epoch: placement.leader_epoch + 1,
                            partition_epoch: placement.partition_epoch + 1,
                            isr: rest,
                        },
                    ]);
                }
            }
            if !records.is_empty()
                && let Err(e) = self.logs.commit(&records).await
            {
                warn!(error = %e, "cannot take offline logs out of the in-sync replicas");
            }
        })
        .await;
    }
}
