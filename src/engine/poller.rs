//! The poller thread: accept, readiness, timeouts and the shutdown sequence.
//!
//! It is the only place that accepts sockets and adds them to the [`Registry`]
//! (which owns the slots and the OS poller). A wait is one system call; each event
//! for a parked connection moves it onto the task queue. The poller also enforces
//! the connection limit (503 + Retry-After), the header and idle timeouts (408 or
//! close) and the shutdown sequence: stop accepting, close idle connections, wait
//! for busy ones up to the grace period, then close the task queue.

use super::conn::{Conn, Phase, LINGER};
use super::io::{is_interrupted, would_block, Io};
use super::registry::{LISTENER, WAKE};
use super::shared::Shared;
use crate::api::error::{ApiError, Error};
use crate::http::date::DateCache;
use crate::http::error::HttpError;
use crate::http::request_id::{IdGen, RequestId};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the poller wakes to check timeouts and shutdown when nothing happens.
const TICK: Duration = Duration::from_millis(100);
/// Readiness events taken from the OS per wait.
const EVENTS_PER_WAIT: usize = 1024;

/// Binds the listening socket: SO_REUSEADDR so a restart binds at once, the
/// configured backlog, non-blocking.
pub(crate) fn bind(addr: std::net::SocketAddr, backlog: i32) -> io::Result<TcpListener> {
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
pub(crate) fn run(shared: Arc<Shared>, listener: TcpListener, mut poll: Poll) {
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
            if !is_interrupted(&e) {
                tracing::error!("poller wait failed: {e}");
            }
        }
        let woke = Instant::now();
        for ev in events.iter() {
            let Token(key) = ev.token();
            if key == LISTENER {
                if let Some(l) = &listener {
                    backlog_left = !accept_all(&shared, l, &mut date, &mut scratch);
                }
            } else if key == WAKE {
                // Only interrupts the wait; shutdown is checked below.
            } else if let Some(conn) = reg.take(key, ev.is_read_closed() || ev.is_error()) {
                if let Err(conn) = shared.enqueue_at(conn, woke) {
                    // Unreachable while the ring holds max_connections; never block here.
                    tracing::error!("task queue full; closing connection {}", conn.key);
                }
            }
        }

        if draining_since.is_none() && shared.is_shutting_down() {
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
            shared.shedder.finish(Instant::now());
            draining_since = Some(Instant::now());
            if let Some(l) = listener.take() {
                let _ = reg.registry.deregister(&mut SourceFd(&l.as_raw_fd()));
            }
        }

        let now = Instant::now();
        if now >= next_scan || draining_since.is_some() {
            next_scan = now + TICK;
            shared.shedder.tick(now);
            if let Some(l) = listener.as_ref().filter(|_| backlog_left) {
                backlog_left = !accept_all(&shared, l, &mut date, &mut scratch);
            }
            let draining = draining_since.is_some();
            // Only the connections that are due, unless shutdown wants the idle
            // ones too.
            reg.take_where(
                (!draining).then_some(now),
                |c| c.deadline <= now || (draining && matches!(c.phase, Phase::Idle) && !c.wants_write()),
                |conn| {
                    if conn.deadline <= now {
                        expire(&shared, conn, now, &mut date, &mut scratch)
                    } else {
                        linger(&shared, conn, now)
                    }
                },
            );
        }

        if let Some(since) = draining_since {
            if reg.active() == 0 || since.elapsed() >= cfg.shutdown_grace {
                reg.take_where(None, |_| true, drop);
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
            Ok((sock, peer)) => {
                if sock.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = sock.set_nodelay(true);
                let deadline = Instant::now() + cfg.header_timeout;
                let registry = &shared.registry;
                let made = registry.register(sock, |key, sock| {
                    Box::new(Conn::new(
                        key,
                        Io::new(sock),
                        peer.ip(),
                        Arc::clone(registry),
                        deadline,
                    ))
                });
                if let Err(sock) = made {
                    shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    refuse(sock, &Error::Api(ApiError::Overloaded), date, scratch);
                } else {
                    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if would_block(&e) => return true,
            Err(e) if is_interrupted(&e) => continue,
            Err(e) => {
                // Out of descriptors or similar: leave the rest in the backlog and let
                // the next tick try again rather than spin.
                tracing::warn!("accept failed: {e}");
                return false;
            }
        }
    }
}

/// A request ID for an answer the poller gives itself (no request was read).
fn new_id() -> RequestId {
    thread_local! {
        static IDS: std::cell::RefCell<IdGen> = std::cell::RefCell::new(IdGen::new());
    }
    let mut id = RequestId::default();
    IDS.with(|ids| id.generate(&mut ids.borrow_mut()));
    id
}

/// Sends one final error response without blocking, then closes.
fn refuse(mut sock: TcpStream, err: &Error, date: &mut DateCache, scratch: &mut Vec<u8>) {
    scratch.clear();
    err.encode(scratch, date.now(), true, false, new_id().as_bytes());
    // Read what the client already sent so closing does not reset the connection.
    let mut sink = [0u8; 1024];
    let _ = sock.read(&mut sink);
    let _ = sock.write(scratch);
    let _ = sock.shutdown(Shutdown::Write);
}

/// Closes an idle connection at shutdown without resetting it: our side is shut
/// at once (the client reads EOF), and what the client may have sent meanwhile
/// (a next request racing the close) is read and dropped until its EOF or
/// `LINGER`. Closing it outright with unread bytes would send a reset.
fn linger(shared: &Shared, mut conn: Box<Conn>, now: Instant) {
    conn.start_closing();
    if conn.io.shutdown_and_drain() {
        return;
    }
    conn.deadline = now + LINGER;
    if let Some(conn) = shared.registry.park(conn) {
        // Bytes came while we held it: a worker drains it (a closed queue drops it).
        let _ = shared.enqueue(conn);
    }
}

/// A parked connection ran out of time.
fn expire(shared: &Shared, conn: Box<Conn>, now: Instant, date: &mut DateCache, scratch: &mut Vec<u8>) {
    if let Phase::Reading { .. } | Phase::Uploading(_) = conn.phase {
        if conn.deadline <= now && !conn.io.has_pending() {
            shared.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            scratch.clear();
            Error::Http(HttpError::Timeout).encode(scratch, date.now(), true, false, new_id().as_bytes());
            let _ = (&conn.io.sock).write(scratch);
            let _ = conn.io.sock.shutdown(Shutdown::Write);
        }
    }
    drop(conn);
}
