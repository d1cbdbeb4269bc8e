//! Large byte buffers, kept for reuse once nothing refers to them any more.
//!
//! Request frames (a produce request of up to 1 MB) and fetch reads (up to a partition's
//! `max_bytes`, 1 MiB by default) are the broker's large buffers. Fresh buffers that size
//! are `mmap`ed by the allocator and unmapped when freed, so every request paid a page
//! fault and a page clearing per 4 KiB it carried — for a fetch, more than the read itself
//! cost. A buffer lent out as `Bytes` goes back to the pool when the last `Bytes` pointing
//! into it is dropped: once a request is done with, once a response has been written.
//!
//! Buffers are allocated in power-of-two sizes, so the two uses share them: a produce
//! request of a librdkafka batch is a little under 1 MiB and a fetch reads 1 MiB per
//! partition. With exact sizes, a pool filled by produce requests held nothing a fetch could
//! use, and every fetch after a produce burst faulted in fresh memory. For the same reason a
//! full pool makes room for a returned buffer by dropping the ones returned longest ago: what
//! the pool holds follows what the broker is doing now.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

/// What the pool holds at most: enough for eight consumers each fetching 1 MiB from eight
/// partitions at once, or 64 produce requests of 1 MiB. Beyond it, buffers are freed.
const RETAINED_BYTES: usize = 64 << 20;
/// A buffer this large is not kept: one huge request or fetch must not pin its memory for
/// good.
const LARGEST_KEPT: usize = 8 << 20;

/// The buffers of one process. A pool rather than a static list only so tests can have
/// one of their own.
#[derive(Default)]
pub struct BufferPool {
    free: Mutex<Free>,
}

#[derive(Default)]
struct Free {
    /// Least recently returned first.
    buffers: VecDeque<Vec<u8>>,
    retained: usize,
}

/// The pool of this process.
pub fn shared() -> &'static BufferPool {
    static SHARED: OnceLock<BufferPool> = OnceLock::new();
    SHARED.get_or_init(BufferPool::default)
}

impl BufferPool {
    /// An empty buffer with room for at least `len` bytes: the smallest free one that is
    /// large enough, else a new one of the next power-of-two size. Among equals, the most
    /// recently returned: its bytes are the likeliest to be in the CPU's caches still.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let reused = self.free().and_then(|mut free| {
            let best = free
                .buffers
                .iter()
                .enumerate()
                .rev()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(at, _)| at);
            let buf = best.and_then(|at| free.buffers.remove(at));
            if let Some(buf) = &buf {
                free.retained -= buf.capacity();
            }
            buf
        });
        reused.unwrap_or_else(|| Vec::with_capacity(len.checked_next_power_of_two().unwrap_or(len)))
    }

    /// The free buffers, or `None` once a panic elsewhere poisoned their lock: `buffers` and
    /// `retained` may then disagree, so the pool stops pooling (taking allocates, giving
    /// back frees) rather than trust them. It is only a cache.
    fn free(&self) -> Option<std::sync::MutexGuard<'_, Free>> {
        self.free.lock().ok()
    }

    /// The buffer's bytes as `Bytes`; the buffer returns to this pool when the last
    /// reference goes.
    pub fn lend(&'static self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled { buf, pool: self })
    }

    /// Keeps `buf` as the most recently returned buffer, dropping the least recently
    /// returned ones while the pool would be over its bound.
    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() > LARGEST_KEPT {
            return;
        }
        buf.clear();
        let mut dropped = Vec::new();
        let Some(mut free) = self.free() else {
            return;
        };
        // Ends: `retained` is what `buffers` hold, and no kept buffer exceeds the bound.
        while free.retained + buf.capacity() > RETAINED_BYTES
            && let Some(oldest) = free.buffers.pop_front()
        {
            free.retained -= oldest.capacity();
            dropped.push(oldest);
        }
        free.retained += buf.capacity();
        free.buffers.push_back(buf);
        drop(free);
        // Unmapping happens outside the lock.
        drop(dropped);
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: &'static BufferPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_reused_once_its_last_bytes_are_dropped() {
        let pool: &'static BufferPool = Box::leak(Box::default());
        let mut buf = pool.take(300_000);
        buf.extend_from_slice(&[5u8; 300_000]);
        let address = buf.as_ptr();
        let bytes = pool.lend(buf);
        let slice = bytes.slice(10..20);
        drop(bytes);
        let while_referenced = pool.take(300_000);
        assert_ne!(while_referenced.as_ptr(), address);
        assert_eq!(&slice[..], &[5u8; 10]);
        drop(slice);
        let reused = pool.take(200_000);
        assert_eq!(reused.as_ptr(), address);
        assert!(reused.is_empty());
    }

    #[test]
    fn a_produce_frame_buffer_serves_a_one_mib_fetch_read() {
        // librdkafka's batches make request frames a little under 1 MiB.
        let pool: &'static BufferPool = Box::leak(Box::default());
        let frame = pool.take(1_000_100);
        let address = frame.as_ptr();
        drop(pool.lend(frame));
        let read = pool.take(1 << 20);
        assert_eq!(read.as_ptr(), address);
    }

    #[test]
    fn the_smallest_fitting_buffer_is_taken() {
        let pool: &'static BufferPool = Box::leak(Box::default());
        let large = pool.take(4 << 20);
        let small = pool.take(100_000);
        let small_address = small.as_ptr();
        drop(pool.lend(large));
        drop(pool.lend(small));
        let taken = pool.take(70_000);
        assert_eq!(taken.as_ptr(), small_address);
    }

    #[test]
    fn among_equals_the_most_recently_returned_buffer_is_taken() {
        let pool: &'static BufferPool = Box::leak(Box::default());
        let buffers: Vec<Vec<u8>> = (0..4).map(|_| pool.take(1 << 20)).collect();
        let last_address = buffers[3].as_ptr();
        for buf in buffers {
            drop(pool.lend(buf));
        }
        let taken = pool.take(1 << 20);
        assert_eq!(taken.as_ptr(), last_address);
    }

    #[test]
    fn a_full_pool_drops_the_buffers_returned_longest_ago() {
        let pool: &'static BufferPool = Box::leak(Box::default());
        let old: Vec<Vec<u8>> = (0..RETAINED_BYTES / (1 << 20))
            .map(|_| pool.take(1 << 20))
            .collect();
        let old_addresses: Vec<_> = old.iter().map(|b| b.as_ptr()).collect();
        for buf in old {
            drop(pool.lend(buf));
        }
        let new = pool.take(2 << 20);
        let new_address = new.as_ptr();
        drop(pool.lend(new));
        {
            let free = pool.free.lock().unwrap();
            assert!(free.retained <= RETAINED_BYTES);
            assert_eq!(free.buffers.back().map(|b| b.as_ptr()), Some(new_address));
            // Two of the 1 MiB buffers made room for it: the first two returned.
            let kept: Vec<_> = free.buffers.iter().map(|b| b.as_ptr()).collect();
            assert!(!kept.contains(&old_addresses[0]) && !kept.contains(&old_addresses[1]));
            assert!(kept.contains(&old_addresses[2]));
        }
        let again = pool.take(2 << 20);
        assert_eq!(again.as_ptr(), new_address);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_bound() {
        let pool: &'static BufferPool = Box::leak(Box::default());
        let held: Vec<Bytes> = (0..RETAINED_BYTES / (4 << 20) + 3)
            .map(|_| pool.lend(pool.take(4 << 20)))
            .collect();
        drop(held);
        pool.lend(pool.take(LARGEST_KEPT + 1));
        let free = pool.free.lock().unwrap();
        assert!(free.retained <= RETAINED_BYTES);
        assert!(free.buffers.iter().all(|b| b.capacity() <= LARGEST_KEPT));
        assert_eq!(
            free.retained,
            free.buffers.iter().map(Vec::capacity).sum::<usize>()
        );
    }
}
