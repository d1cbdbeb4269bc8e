//! In-sync replica changes: a leader drops followers that stopped catching up and takes
//! back those that caught up, through the metadata quorum (Kafka's AlterPartition).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};
use uuid::Uuid;

use super::IsrProposal;
use crate::Broker;
use crate::log_manager::Partition;
use crate::metadata::MetadataRecord;

/// An ISR change a leader wants, on its way to the quorum. At most one is pending per
/// partition (see `ReplicaState`), so the queue is bounded by the partitions led here.
pub(crate) struct IsrChange {
    pub topic: Uuid,
    pub partition: Arc<Partition>,
    pub proposal: IsrProposal,
}

pub(crate) type IsrChanges = mpsc::UnboundedSender<IsrChange>;

impl Broker {
    /// Sends the ISR changes that fetches of caught-up followers asked for, one at a time
    /// (each is a quorum commit), until shutdown.
    pub(crate) async fn run_isr_changes(
        self: Arc<Self>,
        mut changes: mpsc::UnboundedReceiver<IsrChange>,
    ) {
        let mut stopping = self.stopping.subscribe();
        loop {
            let change = tokio::select! {
                change = changes.recv() => match change {
                    Some(change) => change,
                    None => return,
                },
                _ = stopping.wait_for(|s| *s) => return,
            };
            self.propose_isr(change).await;
        }
    }

    /// Every `replica.lag.time.max.ms` / 2 (as Kafka's `isr-expiration` task), proposes
    /// leaving out followers that have not caught up for `replica.lag.time.max.ms`.
    pub(crate) async fn run_isr_expiration(self: Arc<Self>) {
        let lag_max = self.config().int("replica.lag.time.max.ms").max(1);
        let period = Duration::from_millis((lag_max / 2).max(1) as u64);
        self.every(period, || async {
            let now = odradek_storage::now_ms();
            for topic in self.logs.topics() {
                for partition in &topic.partitions {
                    if let Some(proposal) = partition.replica.lagging(now, lag_max) {
                        warn!(topic = %topic.name, partition = partition.index, isr = ?proposal.isr, "followers fell behind: shrinking the in-sync replicas");
                        self.propose_isr(IsrChange {
                            topic: topic.id,
                            partition: partition.clone(),
                            proposal,
                        })
                        .await;
                    }
                }
            }
        })
        .await;
    }

    async fn propose_isr(&self, change: IsrChange) {
        let IsrChange {
            topic,
            partition,
            proposal,
        } = change;
        let record = MetadataRecord::IsrChanged {
            id: topic,
            partition: partition.index,
            leader_epoch: proposal.leader_epoch,
            partition_epoch: proposal.partition_epoch,
            isr: proposal.isr.clone(),
        };
        let before = partition.replica.watermark().isr_len;
        match self.logs.commit(std::slice::from_ref(&record)).await {
            Ok(()) => {
                let image = self.logs.image();
                let committed = image
                    .topic_by_id(&topic)
                    .and_then(|t| t.placement(partition.index))
                    .is_some_and(|p| p.isr == proposal.isr);
                if committed {
                    info!(%topic, partition = partition.index, isr = ?proposal.isr, "changed the ISR");
                    let counter = if proposal.isr.len() > before {
                        &self.metrics.isr_expands
                    } else {
                        &self.metrics.isr_shrinks
                    };
                    counter.inc();
                }
            }
            Err(e) => {
                warn!(%topic, partition = partition.index, error = %e, "cannot change the ISR")
            }
        }
        // Once committed (or lost to a newer epoch) the image has settled it; otherwise the
        // next fetch or expiration check proposes again.
        partition.replica.proposal_failed(&proposal);
    }
}
