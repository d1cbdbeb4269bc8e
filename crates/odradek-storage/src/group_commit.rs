//! Group commit: one background thread makes appends durable. Every producer that asks for
//! durability while a sync is in progress joins the next round, so one `fdatasync` per log
//! covers all batches that arrived meanwhile, across partitions and connections.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::{Log, StorageError};

/// Called once the log is durable up to at least the offset the caller appended, or with the
/// error that prevented it.
pub type DurabilityWaiter = Box<dyn FnOnce(Result<(), Arc<StorageError>>) + Send>;

type SharedLog = Arc<Mutex<Log>>;

/// Told about every fsync round of a log: how long the sync took and how many waiters it
/// released (the group-commit batch size). For metrics.
pub type SyncObserver = Box<dyn Fn(std::time::Duration, usize) + Send + Sync>;

struct Round {
    /// Keyed by the log's address: one sync per log per round however many waiters it has.
    logs: HashMap<usize, (SharedLog, Vec<DurabilityWaiter>)>,
    shutting_down: bool,
}

struct Shared {
    pending: Mutex<Round>,
    wake: Condvar,
    observer: std::sync::OnceLock<SyncObserver>,
}

pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    pub fn start() -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Round {
                logs: HashMap::new(),
                shutting_down: false,
            }),
            wake: Condvar::new(),
            observer: std::sync::OnceLock::new(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("odradek-group-commit".into())
            .spawn(move || run(&worker))
            .expect("spawning the group commit thread");
        Self {
            shared,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Asks for `log` to be synced; `waiter` (if any) hears when everything appended to it
    /// before this call is durable.
    pub fn request(&self, log: &SharedLog, waiter: Option<DurabilityWaiter>) {
        let mut round = self.shared.pending.lock().expect("group commit lock");
        if round.shutting_down {
            drop(round);
            if let Some(w) = waiter {
                let dir = log
                    .lock()
                    .map(|l| l.dir().to_path_buf())
                    .unwrap_or_default();
                w(Err(Arc::new(StorageError::ShuttingDown(dir))));
            }
            return;
        }
        let key = Arc::as_ptr(log) as usize;
        let entry = round
            .logs
            .entry(key)
            .or_insert_with(|| (log.clone(), Vec::new()));
        entry.1.extend(waiter);
        drop(round);
        self.shared.wake.notify_one();
    }

    /// Installs the observer of fsync rounds (once; later calls are ignored).
    pub fn observe(&self, observer: SyncObserver) {
        let _ = self.shared.observer.set(observer);
    }

    /// Completes every pending request and stops the thread.
    pub fn shutdown(&self) {
        self.shared
            .pending
            .lock()
            .expect("group commit lock")
            .shutting_down = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().expect("group commit lock").take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let batch = {
            let mut round = shared.pending.lock().expect("group commit lock");
            while round.logs.is_empty() && !round.shutting_down {
                round = shared.wake.wait(round).expect("group commit lock");
            }
            if round.logs.is_empty() {
                return;
            }
            std::mem::take(&mut round.logs)
        };
        for (log, waiters) in batch.into_values() {
            let started = std::time::Instant::now();
            let result = sync_log(&log).map_err(Arc::new);
            if let Some(observe) = shared.observer.get() {
                observe(started.elapsed(), waiters.len());
            }
            for waiter in waiters {
                waiter(result.clone());
            }
        }
    }
}

fn sync_log(log: &SharedLog) -> Result<(), StorageError> {
    Log::sync_shared(log, |_| (), |()| Ok(()))
}
