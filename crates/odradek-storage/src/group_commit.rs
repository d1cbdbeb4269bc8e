//! Group commit: a few background threads make appends durable. Every producer that asks for
//! durability of a log while that log is being synced joins its next sync, so one
//! `fdatasync` per log covers all batches that arrived meanwhile, across partitions and
//! connections. Different logs are synced in parallel by up to [`SYNC_THREADS`] threads, so
//! a produce touching many partitions waits for the slowest of their fsyncs, not their sum;
//! one log is never synced by two threads at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::{LockExt, Log, StorageError};

/// Called once the log is durable up to at least the offset the caller appended, or with the
/// error that prevented it.
pub type DurabilityWaiter = Box<dyn FnOnce(Result<(), Arc<StorageError>>) + Send>;

type SharedLog = Arc<Mutex<Log>>;

/// Told about every fsync round of a log: how long the sync took and how many waiters it
/// released (the group-commit batch size). For metrics.
pub type SyncObserver = Box<dyn Fn(std::time::Duration, usize) + Send + Sync>;

/// Threads syncing logs concurrently. A few are enough to overlap fsyncs on one device;
/// more would only queue in the kernel.
pub const SYNC_THREADS: usize = 4;

/// Key of a log: its address, stable while the `Arc` lives.
type LogKey = usize;

/// Every change to it is a queue or set insert or remove, none of which a panic can stop
/// halfway, so a poisoned lock is recovered ([`LockExt`]): the waiters it holds must still
/// hear back.
struct Pending {
    /// Logs asked to be synced, with their waiters, in the order first asked.
    logs: HashMap<LogKey, (SharedLog, Vec<DurabilityWaiter>)>,
    order: VecDeque<LogKey>,
    /// Logs a thread is syncing now: their new requests wait for the next sync.
    syncing: HashSet<LogKey>,
    shutting_down: bool,
}

impl Pending {
    /// The oldest requested log no thread is syncing, taken out of the queue.
    fn take_ready(&mut self) -> Option<(LogKey, SharedLog, Vec<DurabilityWaiter>)> {
        let at = self.order.iter().position(|k| !self.syncing.contains(k))?;
        let key = self.order.remove(at)?;
        let (log, waiters) = self.logs.remove(&key)?;
        Some((key, log, waiters))
    }
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    observer: std::sync::OnceLock<SyncObserver>,
}

pub struct GroupCommit {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the sync threads; fails if the system refuses one of them.
    pub fn try_start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                logs: HashMap::new(),
                order: VecDeque::new(),
                syncing: HashSet::new(),
                shutting_down: false,
            }),
            wake: Condvar::new(),
            observer: std::sync::OnceLock::new(),
        });
        let commit = Self {
            shared,
            threads: Mutex::new(Vec::with_capacity(SYNC_THREADS)),
        };
        for i in 0..SYNC_THREADS {
            let worker = commit.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("odradek-sync-{i}"))
                .spawn(move || run(&worker));
            match spawned {
                Ok(thread) => commit.threads.lock_or_recover().push(thread),
                Err(e) => {
                    commit.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(commit)
    }

    /// Asks for `log` to be synced; `waiter` (if any) hears when everything appended to it
    /// before this call is durable.
    pub fn request(&self, log: &SharedLog, waiter: Option<DurabilityWaiter>) {
        let mut pending = self.shared.pending.lock_or_recover();
        if pending.shutting_down {
            drop(pending);
            if let Some(w) = waiter {
                let dir = log
                    .lock()
                    .map(|l| l.dir().to_path_buf())
                    .unwrap_or_default();
                w(Err(Arc::new(StorageError::ShuttingDown(dir))));
            }
            return;
        }
        let key = Arc::as_ptr(log) as LogKey;
        let pending = &mut *pending;
        let entry = pending.logs.entry(key).or_insert_with(|| {
            pending.order.push_back(key);
            (log.clone(), Vec::new())
        });
        entry.1.extend(waiter);
        self.shared.wake.notify_one();
    }

    /// Installs the observer of fsync rounds (once; later calls are ignored).
    pub fn observe(&self, observer: SyncObserver) {
        let _ = self.shared.observer.set(observer);
    }

    /// Completes every pending request and stops the threads.
    pub fn shutdown(&self) {
        self.shared.pending.lock_or_recover().shutting_down = true;
        self.shared.wake.notify_all();
        for thread in self.threads.lock_or_recover().drain(..) {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let (key, log, waiters) = {
            let mut pending = shared.pending.lock_or_recover();
            loop {
                if let Some(ready) = pending.take_ready() {
                    pending.syncing.insert(ready.0);
                    break ready;
                }
                // Requests for a log being synced stay queued until its thread is done.
                if pending.shutting_down && pending.logs.is_empty() {
                    return;
                }
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let started = std::time::Instant::now();
        let result = Log::sync_shared(&log, |_| (), |()| Ok(())).map_err(Arc::new);
        if let Some(observe) = shared.observer.get() {
            observe(started.elapsed(), waiters.len());
        }
        for waiter in waiters {
            waiter(result.clone());
        }
        let mut pending = shared.pending.lock_or_recover();
        pending.syncing.remove(&key);
        if pending.logs.contains_key(&key) || pending.shutting_down {
            // A request that arrived during this sync may now be taken by any thread.
            shared.wake.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odradek_protocol::batch::testing::batch;
    use std::sync::mpsc;

    #[test]
    fn every_waiter_hears_once_and_logs_end_durable() {
        let dir = tempfile::tempdir().unwrap();
        let logs: Vec<SharedLog> = (0..6)
            .map(|i| {
                let log =
                    Log::open(&dir.path().join(format!("p{i}")), Default::default(), true).unwrap();
                Arc::new(Mutex::new(log))
            })
            .collect();
        let commit = GroupCommit::try_start().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut asked = 0;
        for round in 0..50 {
            for log in &logs {
                log.lock().unwrap().append(batch(1, round), 0).unwrap();
                let tx = tx.clone();
                let end = log.lock().unwrap().log_end_offset();
                let log2 = log.clone();
                commit.request(
                    log,
                    Some(Box::new(move |r| {
                        let flushed = log2.lock().unwrap().flushed_offset();
                        tx.send((r.is_ok(), flushed >= end)).unwrap();
                    })),
                );
                asked += 1;
            }
        }
        for _ in 0..asked {
            let (ok, durable) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
            assert!(ok && durable);
        }
        commit.shutdown();
        assert!(rx.try_recv().is_err(), "no waiter is called twice");
        for log in &logs {
            let log = log.lock().unwrap();
            assert_eq!(log.flushed_offset(), log.log_end_offset());
        }
    }

    #[test]
    fn a_poisoned_log_lock_answers_offline_and_stalls_no_later_request() {
        let dir = tempfile::tempdir().unwrap();
        let log: SharedLog = Arc::new(Mutex::new(
            Log::open(dir.path(), Default::default(), true).unwrap(),
        ));
        log.lock().unwrap().append(batch(1, 0), 0).unwrap();
        let poisoner = log.clone();
        std::thread::spawn(move || {
            let _held = poisoner.lock().unwrap();
            panic!("a bug under the log's lock");
        })
        .join()
        .unwrap_err();
        assert!(log.is_poisoned());
        let commit = GroupCommit::try_start().unwrap();
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let tx = tx.clone();
            commit.request(
                &log,
                Some(Box::new(move |r| {
                    tx.send(r.map_err(|e| e.to_string())).unwrap();
                })),
            );
            let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
            let error = answer.expect("every request is answered").unwrap_err();
            assert!(error.contains("offline"), "{error}");
        }
        commit.shutdown();
    }
}
