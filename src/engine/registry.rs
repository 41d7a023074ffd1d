//! The [`Registry`] of parked connections: one slot per allowed connection, and the
//! OS poller (mio: epoll, edge-triggered) they are registered with.
//!
//! Every connection is registered once, for reading and writing, when accepted, and
//! deregistered when dropped: nothing is re-armed per request. An event for a parked
//! connection takes it out of its slot (for the task queue); an event for a
//! connection that is away (with a worker, the hashing gate or a batcher) marks its
//! slot, and [`Registry::park`] hands such a connection straight back to be driven
//! again instead of storing it ([`Registry::take_ready`] lets a worker look first,
//! to skip reading a connection back from waiting that has no news). The slot lock orders the two, so no readiness is
//! ever lost. An event that says the peer closed is kept on the connection
//! (`Io::peer_closed`).
//!
//! Each slot's deadline is also kept outside its lock, in one array of atomics,
//! so the poller's timeout scan reads contiguous memory and locks only the slots
//! that are due (a scan that locked every slot cost about as much as serving a
//! request, ten times a second, whether connections were open or not).

use crossbeam_queue::ArrayQueue;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Key of the listening socket; connection keys are slot indices below it.
pub(crate) const LISTENER: usize = usize::MAX - 1;
/// Key of the waker that interrupts a wait (shutdown).
pub(crate) const WAKE: usize = usize::MAX - 2;

/// What the registry parks: a connection, which knows its slot and can be told
/// that its peer closed.
pub(crate) trait Parked {
    /// The slot (and poller token) of this connection.
    fn key(&self) -> usize;
    /// A readiness event said the peer closed its side.
    fn note_peer_closed(&mut self);
    /// When the poller gives up on it while it is parked.
    fn deadline(&self) -> Instant;
}

/// A slot without a parked connection, in [`Registry::deadlines`].
const NOT_PARKED: u64 = u64::MAX;

/// Parked connections, one slot per allowed connection, and the OS poller.
pub(crate) struct Registry<T> {
    pub(super) registry: mio::Registry,
    waker: Waker,
    slots: Box<[Mutex<Slot<T>>]>,
    /// Each slot's parked deadline in milliseconds since `epoch`, or
    /// `NOT_PARKED`. Written under the slot's lock, read without it by the
    /// scan, which then checks under the lock: a stale read only delays a
    /// timeout to the next scan or costs one needless lock.
    deadlines: Box<[AtomicU64]>,
    epoch: Instant,
    free: ArrayQueue<usize>,
    active: AtomicUsize,
}

/// Where a connection waits for readiness.
struct Slot<T> {
    conn: Option<Box<T>>,
    /// An event arrived while the connection was away.
    ready: bool,
    /// One of those events said the peer closed its side.
    closed: bool,
}

impl<T: Parked> Registry<T> {
    /// The registry and the OS poller it registers with (for the poller thread).
    pub fn new(max_connections: usize) -> io::Result<(Registry<T>, Poll)> {
        let free = ArrayQueue::new(max_connections);
        for key in 0..max_connections {
            let _ = free.push(key);
        }
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(&registry, Token(WAKE))?;
        let registry = Registry {
            registry,
            waker,
            slots: (0..max_connections)
                .map(|_| {
                    Mutex::new(Slot {
                        conn: None,
                        ready: false,
                        closed: false,
                    })
                })
                .collect(),
            deadlines: (0..max_connections).map(|_| AtomicU64::new(NOT_PARKED)).collect(),
            epoch: Instant::now(),
            free,
            active: AtomicUsize::new(0),
        };
        Ok((registry, poll))
    }

    /// Interrupts the poller's wait (to notice shutdown at once).
    pub fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::warn!("cannot wake the poller: {e}");
        }
    }

    /// Open connections, wherever they are.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Registers a newly accepted socket, parked as the connection `make` builds
    /// from its key. Hands the socket back when every slot is taken.
    pub(super) fn register(
        &self,
        sock: TcpStream,
        make: impl FnOnce(usize, TcpStream) -> Box<T>,
    ) -> Result<(), TcpStream> {
        let Some(key) = self.free.pop() else {
            return Err(sock);
        };
        let mut slot = self.slots[key].lock();
        debug_assert!(slot.conn.is_none(), "a free slot is empty");
        // A stale event of the previous connection in this slot means nothing here.
        slot.ready = false;
        slot.closed = false;
        // Dropping the connection must deregister the socket (`Registry::release`)
        // before closing it.
        let added = self.registry.register(
            &mut SourceFd(&sock.as_raw_fd()),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = added {
            tracing::warn!("cannot register connection: {e}");
            let _ = self.free.push(key);
            return Ok(());
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        let conn = make(key, sock);
        self.set_deadline(key, Some(conn.deadline()));
        slot.conn = Some(conn);
        Ok(())
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn set_deadline(&self, key: usize, at: Option<Instant>) {
        let ms = at.map_or(NOT_PARKED, |at| self.millis(at));
        self.deadlines[key].store(ms, Ordering::Relaxed);
    }

    /// Parks `conn` until its socket has news. Hands it back instead when an event
    /// arrived while it was away: the caller must drive it again.
    #[must_use = "a connection handed back has unread readiness and must be driven"]
    pub fn park(&self, mut conn: Box<T>) -> Option<Box<T>> {
        let mut slot = self.slots[conn.key()].lock();
        if std::mem::take(&mut slot.ready) {
            if std::mem::take(&mut slot.closed) {
                conn.note_peer_closed();
            }
            return Some(conn);
        }
        self.set_deadline(conn.key(), Some(conn.deadline()));
        slot.conn = Some(conn);
        None
    }

    /// Whether an event arrived for `conn` while it was away (with a worker, the
    /// hashing gate or a batcher), forgetting it: the caller reads the socket now.
    /// A peer close noted with it goes to `conn`.
    pub fn take_ready(&self, conn: &mut T) -> bool {
        let mut slot = self.slots[conn.key()].lock();
        if std::mem::take(&mut slot.closed) {
            conn.note_peer_closed();
        }
        std::mem::take(&mut slot.ready)
    }

    /// The connection for an event on `key`, when it is parked; otherwise notes the
    /// event for when it comes back. `closed`: the event says the peer closed.
    pub(super) fn take(&self, key: usize, closed: bool) -> Option<Box<T>> {
        let mut slot = self.slots.get(key)?.lock();
        match slot.conn.take() {
            Some(mut conn) => {
                self.set_deadline(key, None);
                if closed {
                    conn.note_peer_closed();
                }
                Some(conn)
            }
            None => {
                slot.ready = true;
                slot.closed |= closed;
                None
            }
        }
    }

    /// Called when a connection is dropped: forget the socket and free its slot.
    pub(crate) fn release(&self, key: usize, sock: &TcpStream) {
        let _ = self.registry.deregister(&mut SourceFd(&sock.as_raw_fd()));
        self.active.fetch_sub(1, Ordering::Relaxed);
        let _ = self.free.push(key);
    }

    /// Takes the parked connections for which `pick` says so, among those whose
    /// deadline is at or before `due` (all parked ones with `None`).
    pub(super) fn take_where(
        &self,
        due: Option<Instant>,
        mut pick: impl FnMut(&T) -> bool,
        mut each: impl FnMut(Box<T>),
    ) {
        let due = due.map_or(NOT_PARKED - 1, |at| self.millis(at));
        for (key, deadline) in self.deadlines.iter().enumerate() {
            if deadline.load(Ordering::Relaxed) > due {
                continue;
            }
            let Some(mut guard) = self.slots[key].try_lock() else {
                continue;
            };
            if guard.conn.as_deref().is_some_and(&mut pick) {
                if let Some(conn) = guard.conn.take() {
                    self.set_deadline(key, None);
                    drop(guard);
                    each(conn);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    struct Fake {
        key: usize,
        closed: bool,
    }

    impl Parked for Fake {
        fn key(&self) -> usize {
            self.key
        }
        fn note_peer_closed(&mut self) {
            self.closed = true;
        }
        fn deadline(&self) -> Instant {
            Instant::now() + Duration::from_secs(60)
        }
    }

    fn registered() -> (Registry<Fake>, Box<Fake>, TcpStream) {
        let (reg, _poll) = Registry::<Fake>::new(2).expect("poller");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (sock, _) = listener.accept().expect("accept");
        let mut key = None;
        assert!(reg
            .register(sock, |k, _sock| {
                key = Some(k);
                Box::new(Fake {
                    key: k,
                    closed: false,
                })
            })
            .is_ok());
        let key = key.expect("a slot");
        // Its first event takes it away, to a worker.
        let conn = reg.take(key, false).expect("parked after registration");
        (reg, conn, client)
    }

    #[test]
    fn an_event_while_away_is_taken_once_with_its_close() {
        let (reg, mut conn, _client) = registered();
        assert!(!reg.take_ready(&mut conn), "no event came");
        assert!(reg.take(conn.key, true).is_none(), "away: the event is noted");
        assert!(reg.take_ready(&mut conn));
        assert!(conn.closed, "the close came with it");
        assert!(!reg.take_ready(&mut conn), "taken once");
        assert!(reg.park(conn).is_none(), "nothing left to hand back");
    }

    #[test]
    fn an_event_not_taken_hands_the_connection_back_at_park() {
        let (reg, conn, _client) = registered();
        assert!(reg.take(conn.key, false).is_none());
        let back = reg.park(conn).expect("handed back: readiness came while away");
        assert!(reg.park(back).is_none(), "parked the second time");
    }
}
