//! Accept and readiness: the [`Registry`] of parked connections and the poller thread.
//!
//! The poller is the only place that adds sockets to the OS poller (mio: epoll,
//! edge-triggered). Every connection is registered once, for reading and writing:
//! nothing is re-armed per request and a wait is one system call. An event for a
//! parked connection takes it out of its slot and onto the task queue; an event for
//! a connection that is away (with a worker, the hashing gate or the counter
//! batcher) marks its slot, and [`Registry::park`] hands such a connection straight
//! back to be driven again instead of storing it. The slot lock orders the two, so
//! no readiness is ever lost. An edge that says the peer closed its side is kept on
//! the connection (`Conn::peer_closed`), so a worker knows to read on to the EOF
//! instead of trusting a short read. The poller also enforces the connection limit
//! (503 + Retry-After), the header and idle timeouts (408 or close) and the
//! shutdown sequence.

use crate::conn::{Conn, ConnState};
use crate::error::{ApiError, Error};
use crate::http::date::DateCache;
use crate::server::Shared;
use crossbeam_queue::ArrayQueue;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Key of the listening socket; connection keys are slot indices below it.
const LISTENER: usize = usize::MAX - 1;
/// Key of the waker that interrupts a wait (shutdown).
const WAKE: usize = usize::MAX - 2;
/// How often the poller wakes to check timeouts and shutdown when nothing happens.
const TICK: Duration = Duration::from_millis(100);
/// Readiness events taken from the OS per wait.
const EVENTS_PER_WAIT: usize = 1024;

/// Whether an I/O error only means "try again when ready".
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Writes as much of `bytes` as the socket takes without blocking.
pub fn write_some(mut sock: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match sock.write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if would_block(&e) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Parked connections, one slot per allowed connection, and the OS poller.
pub struct Registry {
    registry: mio::Registry,
    waker: Waker,
    slots: Box<[Mutex<Slot>]>,
    free: ArrayQueue<usize>,
    active: AtomicUsize,
}

/// Where a connection waits for readiness.
#[derive(Default)]
struct Slot {
    conn: Option<Box<Conn>>,
    /// An event arrived while the connection was away.
    ready: bool,
    /// One of those events said the peer closed its side.
    closed: bool,
}

impl Registry {
    /// The registry and the OS poller it registers with (for the poller thread).
    pub fn new(max_connections: usize) -> io::Result<(Registry, Poll)> {
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
                .map(|_| Mutex::new(Slot::default()))
                .collect(),
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

    /// Registers a newly accepted socket, parked and armed for reading. Hands the
    /// socket back when every slot is taken.
    fn register(self: &Arc<Self>, sock: TcpStream, deadline: Instant) -> Result<(), TcpStream> {
        let Some(key) = self.free.pop() else {
            return Err(sock);
        };
        let mut slot = self.slots[key].lock();
        debug_assert!(slot.conn.is_none(), "a free slot is empty");
        // A stale event of the previous connection in this slot means nothing here.
        slot.ready = false;
        slot.closed = false;
        // `Conn::drop` deregisters the socket (`Registry::release`) before closing it.
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
        slot.conn = Some(Box::new(Conn::new(key, sock, Arc::clone(self), deadline)));
        Ok(())
    }

    /// Parks `conn` until its socket has news. Hands it back instead when an event
    /// arrived while it was away: the caller must drive it again.
    #[must_use = "a connection handed back has unread readiness and must be driven"]
    pub fn park(&self, mut conn: Box<Conn>) -> Option<Box<Conn>> {
        let mut slot = self.slots[conn.key].lock();
        if std::mem::take(&mut slot.ready) {
            conn.peer_closed |= std::mem::take(&mut slot.closed);
            return Some(conn);
        }
        slot.conn = Some(conn);
        None
    }

    /// The connection for an event on `key`, when it is parked; otherwise notes the
    /// event for when it comes back. `closed`: the event says the peer closed.
    fn take(&self, key: usize, closed: bool) -> Option<Box<Conn>> {
        let mut slot = self.slots.get(key)?.lock();
        match slot.conn.take() {
            Some(mut conn) => {
                conn.peer_closed |= closed;
                Some(conn)
            }
            None => {
                slot.ready = true;
                slot.closed |= closed;
                None
            }
        }
    }

    /// Called by `Conn::drop`: forget the socket and free its slot.
    pub(crate) fn release(&self, key: usize, sock: &TcpStream) {
        let _ = self.registry.deregister(&mut SourceFd(&sock.as_raw_fd()));
        self.active.fetch_sub(1, Ordering::Relaxed);
        let _ = self.free.push(key);
    }

    /// Takes every parked connection for which `pick` says so.
    fn take_where(&self, mut pick: impl FnMut(&Conn) -> bool, mut each: impl FnMut(Box<Conn>)) {
        for slot in self.slots.iter() {
            let Some(mut guard) = slot.try_lock() else {
                continue;
            };
            if guard.conn.as_deref().is_some_and(&mut pick) {
                if let Some(conn) = guard.conn.take() {
                    drop(guard);
                    each(conn);
                }
            }
        }
    }
}

/// Binds the listening socket: SO_REUSEADDR so a restart binds at once, the
/// configured backlog, non-blocking.
pub fn bind(addr: std::net::SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Puts the calling thread under SCHED_BATCH, so that when it wakes (an event
/// arrived) it does not preempt a busy worker on the same CPU. The worker then
/// finishes its queue and the poller collects many events per wake-up instead of
/// one: measured with the server pinned to one CPU, GET /health at -c64 went from
/// about 86k context switches and 83k requests per second to 10k and 133k.
fn deprioritise() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain FFI call with a valid pointer to a local; pid 0 is this thread.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::debug!("SCHED_BATCH not available: {}", io::Error::last_os_error());
    }
}

/// The poller thread: runs until shutdown has drained every connection.
pub fn run(shared: Arc<Shared>, listener: TcpListener, mut poll: Poll) {
    deprioritise();
    let reg = Arc::clone(&shared.registry);
    let cfg = &shared.config;
    let mut listener = Some(listener);
    if let Some(l) = &listener {
        // Deregistered at shutdown below, before it is dropped.
        let added = reg
            .registry
            .register(&mut SourceFd(&l.as_raw_fd()), Token(LISTENER), Interest::READABLE);
        if let Err(e) = added {
            tracing::error!("cannot poll the listener: {e}");
            shared.request_shutdown();
        }
    }
    // Edge-triggered: a backlog left by a failed accept gets no new event, so the
    // tick retries it.
    let mut backlog_left = false;
    let mut events = Events::with_capacity(EVENTS_PER_WAIT);
    let mut date = DateCache::default();
    let mut scratch = Vec::with_capacity(512);
    let mut draining_since: Option<Instant> = None;
    let mut next_scan = Instant::now() + TICK;

    loop {
        if let Err(e) = poll.poll(&mut events, Some(TICK)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!("poller wait failed: {e}");
            }
        }
        for ev in events.iter() {
            let Token(key) = ev.token();
            if key == LISTENER {
                if let Some(l) = &listener {
                    backlog_left = !accept_all(&shared, l, &mut date, &mut scratch);
                }
            } else if key == WAKE {
                // Only interrupts the wait; shutdown is checked below.
            } else if let Some(conn) = reg.take(key, ev.is_read_closed() || ev.is_error()) {
                if let Err(conn) = shared.queue.push(conn) {
                    // Unreachable while the ring holds max_connections; never block here.
                    tracing::error!("task queue full; closing connection {}", conn.key);
                }
            }
        }

        if draining_since.is_none() && shared.is_shutting_down() {
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            draining_since = Some(Instant::now());
            if let Some(l) = listener.take() {
                let _ = reg.registry.deregister(&mut SourceFd(&l.as_raw_fd()));
            }
        }

        let now = Instant::now();
        if now >= next_scan || draining_since.is_some() {
            next_scan = now + TICK;
            if let Some(l) = listener.as_ref().filter(|_| backlog_left) {
                backlog_left = !accept_all(&shared, l, &mut date, &mut scratch);
            }
            let draining = draining_since.is_some();
            reg.take_where(
                |c| {
                    c.deadline <= now || (draining && matches!(c.state, ConnState::Idle | ConnState::Closing))
                },
                |conn| expire(&shared, conn, now, &mut date, &mut scratch),
            );
        }

        if let Some(since) = draining_since {
            if reg.active() == 0 || since.elapsed() >= cfg.shutdown_grace {
                reg.take_where(|_| true, drop);
                for conn in shared.gate.drain_parked() {
                    drop(conn);
                }
                break;
            }
        }
    }
    shared.stop_workers();
}

/// Accepts until the backlog is empty (returns true) or accepting fails (false).
/// Over the connection limit a client gets 503 with Retry-After and is closed,
/// instead of waiting in the backlog.
fn accept_all(
    shared: &Arc<Shared>,
    listener: &TcpListener,
    date: &mut DateCache,
    scratch: &mut Vec<u8>,
) -> bool {
    let cfg = &shared.config;
    loop {
        match listener.accept() {
            Ok((sock, _)) => {
                if sock.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = sock.set_nodelay(true);
                let deadline = Instant::now() + cfg.header_timeout;
                if let Err(sock) = shared.registry.register(sock, deadline) {
                    shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    refuse(sock, &Error::Api(ApiError::Overloaded), date, scratch);
                } else {
                    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if would_block(&e) => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors or similar: leave the rest in the backlog and let
                // the next tick try again rather than spin.
                tracing::warn!("accept failed: {e}");
                return false;
            }
        }
    }
}

/// Sends one final error response without blocking, then closes.
fn refuse(mut sock: TcpStream, err: &Error, date: &mut DateCache, scratch: &mut Vec<u8>) {
    scratch.clear();
    err.encode(scratch, date.now(), true, false);
    // Read what the client already sent so closing does not reset the connection.
    let mut sink = [0u8; 1024];
    let _ = sock.read(&mut sink);
    let _ = sock.write(scratch);
    let _ = sock.shutdown(Shutdown::Write);
}

/// A parked connection ran out of time (or shutdown wants it gone).
fn expire(shared: &Shared, conn: Box<Conn>, now: Instant, date: &mut DateCache, scratch: &mut Vec<u8>) {
    if let ConnState::Reading { .. } = conn.state {
        if conn.deadline <= now && conn.pending_out.is_empty() {
            shared.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            scratch.clear();
            Error::Http(crate::http::HttpError::Timeout).encode(scratch, date.now(), true, false);
            let _ = (&conn.sock).write(scratch);
            let _ = conn.sock.shutdown(Shutdown::Write);
        }
    }
    drop(conn);
}
