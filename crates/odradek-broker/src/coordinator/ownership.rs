//! Which coordinator partitions this broker serves: those of `__consumer_offsets` and
//! `__transaction_state` it leads, each loaded from its log at the leader epoch it was
//! loaded at. When leadership moves, the new leader loads the partition's groups or
//! transactional ids and the old one forgets them, as Kafka's coordinators do on
//! `onElection` / `onResignation`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use odradek_storage::LockExt;

use super::OFFSETS_TOPIC;
use super::transactions::TRANSACTION_STATE_TOPIC;
use crate::Broker;

/// (internal topic, partition) → the leader epoch its state was loaded at.
#[derive(Default)]
pub struct Ownership {
    loaded: Mutex<BTreeMap<(&'static str, i32), i32>>,
    /// Woken by every metadata change: leadership may have moved.
    pub changed: tokio::sync::Notify,
    /// One reconciliation at a time (the ownership task's, or a handler's that just made
    /// an internal topic), so a partition is never loaded twice at once.
    reconciling: tokio::sync::Mutex<()>,
}

impl Ownership {
    /// Whether this broker has loaded `topic`'s `partition` at leader epoch `epoch`.
    pub fn serves(&self, topic: &'static str, partition: i32, epoch: i32) -> bool {
        self.loaded.lock_or_recover().get(&(topic, partition)) == Some(&epoch)
    }
}

impl Broker {
    /// Follows leadership of the coordinator partitions until shutdown. A task of its own:
    /// loading waits for the transaction coordinator's lock, which its sweeper holds while
    /// markers are written, and the metadata must not wait for that.
    pub(crate) async fn run_coordinator_ownership(self: std::sync::Arc<Self>) {
        let mut stopping = self.stopping.subscribe();
        loop {
            self.reconcile_coordinators().await;
            tokio::select! {
                _ = self.ownership.changed.notified() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// Loads the coordinator partitions this broker has come to lead and forgets those it
    /// no longer leads; requests for a partition being loaded are answered
    /// COORDINATOR_LOAD_IN_PROGRESS meanwhile.
    pub(crate) async fn reconcile_coordinators(&self) {
        let _one_at_a_time = self.ownership.reconciling.lock().await;
        for name in [OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC] {
            let Some(topic) = self.logs.topic(name) else {
                continue;
            };
            let (mut load, mut unload) = (Vec::new(), Vec::new());
            {
                let loaded = self.ownership.loaded.lock_or_recover();
                for partition in &topic.partitions {
                    let index = partition.index;
                    let led = self
                        .logs
                        .leadership(name, index)
                        .filter(|(leader, _)| *leader == self.node_id)
                        .map(|(_, epoch)| epoch);
                    match (led, loaded.get(&(name, index))) {
                        (Some(epoch), Some(at)) if epoch == *at => {}
                        (Some(epoch), _) => load.push((index, epoch)),
                        (None, Some(_)) => unload.push(index),
                        (None, None) => {}
                    }
                }
            }
            if !unload.is_empty() {
                {
                    let mut loaded = self.ownership.loaded.lock_or_recover();
                    for index in &unload {
                        loaded.remove(&(name, *index));
                    }
                }
                if name == OFFSETS_TOPIC {
                    self.coordinator
                        .unload_partitions(topic.partitions.len() as i32, &unload);
                } else {
                    self.unload_transaction_partitions(&unload).await;
                }
            }
            if !load.is_empty() {
                let indexes: Vec<i32> = load.iter().map(|(index, _)| *index).collect();
                if name == OFFSETS_TOPIC {
                    tokio::task::block_in_place(|| {
                        self.coordinator.load_partitions(&topic, &indexes)
                    });
                } else {
                    self.load_transaction_partitions(&indexes).await;
                }
                let mut loaded = self.ownership.loaded.lock_or_recover();
                for (index, epoch) in load {
                    loaded.insert((name, index), epoch);
                }
            }
        }
    }
}
