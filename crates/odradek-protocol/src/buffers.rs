//! Large byte buffers, kept for reuse once nothing refers to them any more.
//!
//! Request frames (a produce request of up to 1 MB) and fetch reads (up to a partition's
//! `max_bytes`, 1 MiB by default) are the broker's large buffers. Fresh buffers that size
//! are `mmap`ed by the allocator and unmapped when freed, so every request paid a page
//! fault and a page clearing per 4 KiB it carried — for a fetch, more than the read itself
//! cost. A buffer lent out as `Bytes` goes back to the pool when the last `Bytes` pointing
//! into it is dropped: once a request is done with, once a response has been written.

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
    buffers: Vec<Vec<u8>>,
    retained: usize,
}

/// The pool of this process.
pub fn shared() -> &'static BufferPool {
    static SHARED: OnceLock<BufferPool> = OnceLock::new();
    SHARED.get_or_init(BufferPool::default)
}

impl BufferPool {
    /// An empty buffer with room for at least `len` bytes, reused when one is free.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let reused = {
            let mut free = self.free.lock().expect("buffer pool");
            let at = free.buffers.iter().position(|b| b.capacity() >= len);
            at.map(|at| {
                let buf = free.buffers.swap_remove(at);
                free.retained -= buf.capacity();
                buf
            })
        };
        reused.unwrap_or_else(|| Vec::with_capacity(len))
    }

    /// The buffer's bytes as `Bytes`; the buffer returns to this pool when the last
    /// reference goes.
    pub fn lend(&'static self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled { buf, pool: self })
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() > LARGEST_KEPT {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().expect("buffer pool");
        if free.retained + buf.capacity() <= RETAINED_BYTES {
            free.retained += buf.capacity();
            free.buffers.push(buf);
        }
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
