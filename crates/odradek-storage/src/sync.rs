//! Taking std locks whose data a panic elsewhere cannot leave half-changed.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks that recover from poisoning. Use them only where the data under the lock is
/// replaced whole or changed by steps that cannot stop halfway (an `Arc` swapped, one map
/// insert or remove): a panic elsewhere while holding the lock then left it consistent, and
/// failing every later caller would only spread that panic. Where it could have left the
/// data inconsistent (a partition's `Log`), answer an error instead, as
/// `Log::lock_shared` does.
pub trait LockExt<T: ?Sized> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`LockExt`] for `RwLock`s, under the same condition.
pub trait RwLockExt<T: ?Sized> {
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T>;
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}
