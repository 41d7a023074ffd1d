//! One client connection and the state it carries between readiness events.
//!
//! Ownership is the concurrency rule: a connection is a `Box<Conn>` that lives in
//! exactly one place at a time — its registry slot (parked, waiting for readiness),
//! the task queue, a worker's hands (or its `ready` list), the hashing gate's wait
//! list, or the counter batcher — and moves between them by value. So exactly one thread touches a connection at a time, and
//! the compiler checks it. Dropping a `Conn` deregisters and closes its socket and
//! frees its slot.

use crate::poller::Registry;
use crate::server::Permit;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a closing connection keeps draining the client's bytes after our last
/// response, so the close does not turn into a reset that destroys that response.
pub const LINGER: Duration = Duration::from_secs(2);

/// Where the connection is in the request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Between requests; nothing is buffered.
    Idle,
    /// Part of a request has arrived; the rest is awaited.
    Reading {
        /// When the first byte of this request arrived.
        since: Instant,
        /// Whether the head is complete (only body bytes are missing).
        head_done: bool,
        /// Whether `100 Continue` was already sent for this request.
        continue_sent: bool,
    },
    /// The last response is written (or being written); the write side is shut down
    /// once it is out, and input is discarded until EOF or the linger deadline.
    Closing,
}

pub struct Conn {
    pub key: usize,
    pub sock: TcpStream,
    pub state: ConnState,
    /// Bytes of an incomplete request, from the buffer pool; `None` when nothing waits.
    pub partial: Option<Vec<u8>>,
    /// Response bytes the socket did not take yet; empty (and unallocated) normally.
    pub pending_out: Vec<u8>,
    /// An upload whose body is still arriving.
    pub incoming: Option<Box<crate::transfer::Incoming>>,
    /// A stored file being sent after its response head.
    pub outgoing: Option<crate::transfer::Outgoing>,
    /// A hashing permit handed to this connection while it waited in the gate.
    pub permit: Option<Permit>,
    /// A readiness event said the peer closed its side: read to the EOF even after a
    /// short read (edge-triggered polling will not report it again).
    pub peer_closed: bool,
    /// The committed result of the counter increment at the head of its buffer.
    pub counter: Option<Result<i64, crate::error::ApiError>>,
    /// When the poller gives up on this connection if it is still parked.
    pub deadline: Instant,
    registry: Arc<Registry>,
}

impl Conn {
    pub(crate) fn new(key: usize, sock: TcpStream, registry: Arc<Registry>, deadline: Instant) -> Conn {
        Conn {
            key,
            sock,
            state: ConnState::Idle,
            partial: None,
            pending_out: Vec::new(),
            incoming: None,
            outgoing: None,
            permit: None,
            peer_closed: false,
            counter: None,
            deadline,
            registry,
        }
    }

    /// A request has begun or progressed without completing.
    pub fn reading(&mut self, head_done: bool) {
        self.state = match self.state {
            ConnState::Reading {
                since, continue_sent, ..
            } => ConnState::Reading {
                since,
                head_done,
                continue_sent,
            },
            _ => ConnState::Reading {
                since: Instant::now(),
                head_done,
                continue_sent: false,
            },
        };
    }

    /// Records that `100 Continue` went out; returns false if it already had.
    pub fn take_continue(&mut self) -> bool {
        match &mut self.state {
            ConnState::Reading { continue_sent, .. } if !*continue_sent => {
                *continue_sent = true;
                true
            }
            _ => false,
        }
    }

    /// A request completed; the next one starts from scratch.
    pub fn request_done(&mut self) {
        debug_assert!(
            self.state != ConnState::Closing,
            "no request completes while closing"
        );
        self.state = ConnState::Idle;
    }

    pub fn start_closing(&mut self) {
        self.state = ConnState::Closing;
    }

    pub fn is_closing(&self) -> bool {
        self.state == ConnState::Closing
    }

    /// Whether output is waiting for the socket to accept it.
    pub fn wants_write(&self) -> bool {
        !self.pending_out.is_empty() || self.outgoing.is_some()
    }

    /// The deadline for parking now, from the state and the configured timeouts.
    pub fn park_deadline(&self, now: Instant, header_timeout: Duration, idle_timeout: Duration) -> Instant {
        if self.wants_write() {
            return now + idle_timeout;
        }
        match self.state {
            ConnState::Idle => now + idle_timeout,
            ConnState::Reading {
                since,
                head_done: false,
                ..
            } => since + header_timeout,
            ConnState::Reading { head_done: true, .. } => now + idle_timeout,
            ConnState::Closing => now + LINGER,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.registry.release(self.key, &self.sock);
    }
}
