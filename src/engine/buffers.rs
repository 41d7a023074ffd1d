//! The bounded pool of read buffers that hold a connection's partial request between
//! readiness events.
//!
//! A connection borrows a buffer only while part of a request is waiting for more
//! bytes and gives it back as soon as nothing is buffered, so an idle keep-alive
//! connection holds none. The pool keeps at most `retain` buffers; past that, returned
//! buffers are freed, and an empty pool allocates a fresh one.

use crossbeam_queue::ArrayQueue;

pub struct BufferPool {
    free: ArrayQueue<Vec<u8>>,
    /// Capacity new buffers are made with (one worker read buffer).
    size: usize,
}

impl BufferPool {
    pub fn new(retain: usize, size: usize) -> BufferPool {
        BufferPool {
            free: ArrayQueue::new(retain.max(1)),
            size,
        }
    }

    /// An empty buffer with room for `size` bytes.
    pub fn get(&self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Returns a buffer; it is kept for reuse only if the pool has room and the buffer
    /// did not grow past the standard size.
    pub fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() > self.size * 2 {
            return;
        }
        buf.clear();
        let _ = self.free.push(buf);
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_up_to_the_retain_bound() {
        let pool = BufferPool::new(2, 64);
        let bufs: Vec<_> = (0..3).map(|_| pool.get()).collect();
        for mut b in bufs {
            b.extend_from_slice(b"partial");
            pool.put(b);
        }
        assert_eq!(pool.idle(), 2);
        let b = pool.get();
        assert!(b.is_empty());
        assert!(b.capacity() >= 64);
    }
}
