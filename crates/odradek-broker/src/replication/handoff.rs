//! A leader whose log went offline (a failed fsync: a failing disk) hands the partition to
//! another live in-sync replica, so that clients are served from a healthy copy instead of
//! getting KAFKA_STORAGE_ERROR until someone restarts the broker. Kafka gets there by
//! halting a broker whose only log directory failed, or, with several, by reporting the
//! failed directory to the controller (KIP-858); here a failed log takes only its own
//! partition offline, so only that partition moves. The replica leaves the ISR in the same
//! commit: it will not fetch again, and as a member it would hold back every acks=all write
//! and the high watermark until `replica.lag.time.max.ms` dropped it.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::Broker;
use crate::metadata::MetadataRecord;

impl Broker {
    /// Every `broker.heartbeat.interval.ms`, elects the first live in-sync replica (in
    /// preference order) of each partition led here whose log is offline, and takes this
    /// replica out of the ISR. The image applies each record only to the partition as it
    /// was proposed from (the election bumps both epochs once), so a stale view changes
    /// nothing.
    pub(crate) async fn run_offline_handoff(self: Arc<Self>) {
        let interval = self.config().int("broker.heartbeat.interval.ms").max(1);
        self.every(Duration::from_millis(interval as u64), || async {
            let image = self.logs.image();
            let live = |b: i32| image.brokers.get(&b).is_some_and(|b| !b.fenced);
            let mut elections = Vec::new();
            for topic in self.logs.topics() {
                let Some(meta) = image.topic(&topic.name).filter(|t| t.id == topic.id) else {
                    continue;
                };
                for partition in &topic.partitions {
                    let Some(placement) = meta.placement(partition.index) else {
                        continue;
                    };
                    let offline =
                        partition.shared_log().is_some() && partition.lock_online_log().is_none();
                    if placement.leader != self.node_id || !offline {
                        continue;
                    }
                    let next = placement.replicas.iter().copied().find(|r| {
                        *r != self.node_id && placement.isr.contains(r) && live(*r)
                    });
                    let Some(next) = next else {
                        continue;
                    };
                    warn!(topic = %topic.name, partition = partition.index, next, "the log is offline: handing leadership to an in-sync replica");
                    let isr = placement.isr.iter().copied().filter(|r| *r != self.node_id);
                    elections.extend([
                        MetadataRecord::LeaderElected {
                            id: meta.id,
                            partition: partition.index,
                            partition_epoch: placement.partition_epoch,
                            leader: next,
                            unclean: false,
                        },
                        MetadataRecord::IsrChanged {
                            id: meta.id,
                            partition: partition.index,
                            leader_epoch: placement.leader_epoch + 1,
                            partition_epoch: placement.partition_epoch + 1,
                            isr: isr.collect(),
                        },
                    ]);
                }
            }
            if !elections.is_empty()
                && let Err(e) = self.logs.commit(&elections).await
            {
                warn!(error = %e, "cannot hand off the partitions of offline logs");
            }
        })
        .await;
    }
}
