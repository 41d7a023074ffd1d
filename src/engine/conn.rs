//! One client connection and the state it carries between readiness events.
//!
//! Ownership is the concurrency rule: a connection is a `Box<Conn>` that lives in
//! exactly one place at a time (its registry slot while parked, the task queue, a
//! worker's hands or its `ready` list, the hashing gate's wait list, a batcher, or
//! a relay flight's callback)
//! and moves between them by value. So exactly one thread touches a connection at a
//! time, and the compiler checks it. Dropping a `Conn` deregisters and closes its
//! socket and frees its slot.
//!
//! The socket and its buffers are [`Io`]; where the connection is in the request
//! cycle is one [`Phase`], so an upload that is also a download, or a permit held
//! while closing, cannot be represented.

use super::gate::Permit;
use super::io::Io;
use super::registry::{Parked, Registry};
use super::transfer::{Incoming, Outgoing};
use crate::api::error::ApiError;
use crate::api::Fetched;
use crate::http::request_id::RequestId;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a closing connection keeps draining the client's bytes after our last
/// response, so the close does not turn into a reset that destroys that response.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// Where the connection is in the request cycle.
pub(crate) enum Phase {
    /// Between requests; nothing is buffered.
    Idle,
    /// Part of a request has arrived; the rest is awaited. A request waiting in the
    /// hashing gate or a batcher is in this phase too, complete in the buffer.
    Reading {
        /// When the first byte of this request arrived.
        since: Instant,
        /// Whether the head is complete (only body bytes are missing).
        head_done: bool,
        /// Whether `100 Continue` was already sent for this request.
        continue_sent: bool,
    },
    /// An upload's body is streaming to disk as it arrives.
    Uploading(Box<Incoming>),
    /// A stored file is being sent after its response head; `close`: the
    /// connection ends once it is out.
    Sending { file: Outgoing, close: bool },
    /// The request at the front of the buffer waited and got what it waited for;
    /// the next dispatch answers it.
    Granted(Grant),
    /// The last response is written (or being written); the write side is shut down
    /// once it is out, and input is discarded until EOF or the linger deadline.
    Closing,
}

/// What a waiting request keeps of its first pass, so its answer carries the
/// same request ID (the one a relay fetch sent upstream) and its duration counts
/// from when it first became ready.
pub(crate) struct Held {
    pub id: RequestId,
    pub started: Instant,
}

/// What a waiting request was given.
pub(crate) enum Grant {
    /// A permit of the hashing gate, released when the request has been answered.
    Permit(Permit),
    /// Its batch committed: a value or id, or an error.
    Committed(Result<i64, ApiError>),
    /// Its relay fetch landed: the answer (or the error) it was given.
    Fetched(Fetched),
}

pub(crate) struct Conn {
    pub key: usize,
    pub io: Io,
    pub phase: Phase,
    /// When the poller gives up on this connection if it is still parked.
    pub deadline: Instant,
    /// When it last joined the task queue (its wait there feeds load shedding).
    pub queued_at: Instant,
    /// The socket peer's address (the client's, unless it is a proxy).
    pub peer: IpAddr,
    /// What the request at the front of the buffer keeps while it waits (in the
    /// gate, a batcher or a relay flight).
    pub held: Option<Held>,
    registry: Arc<Registry<Conn>>,
}

impl Conn {
    pub fn new(key: usize, io: Io, peer: IpAddr, registry: Arc<Registry<Conn>>, deadline: Instant) -> Conn {
        Conn {
            key,
            io,
            phase: Phase::Idle,
            deadline,
            queued_at: deadline,
            peer,
            held: None,
            registry,
        }
    }

    /// A request has begun or progressed without completing.
    pub fn reading(&mut self, head_done: bool) {
        debug_assert!(!self.is_closing(), "no request is read while closing");
        self.phase = match self.phase {
            Phase::Reading {
                since, continue_sent, ..
            } => Phase::Reading {
                since,
                head_done,
                continue_sent,
            },
            _ => Phase::Reading {
                since: Instant::now(),
                head_done,
                continue_sent: false,
            },
        };
    }

    /// Records that `100 Continue` went out for the current request; returns false
    /// if it already had.
    pub fn take_continue(&mut self) -> bool {
        let sent = match &mut self.phase {
            Phase::Reading { continue_sent, .. } => continue_sent,
            Phase::Uploading(incoming) => &mut incoming.continue_sent,
            _ => return false,
        };
        !std::mem::replace(sent, true)
    }

    /// What the request at the front of the buffer was granted, if anything; the
    /// connection is reading that request again.
    pub fn take_grant(&mut self) -> Option<Grant> {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Granted(grant) => {
                self.reading(true);
                Some(grant)
            }
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// A request completed; the next one starts from scratch.
    pub fn request_done(&mut self) {
        debug_assert!(!self.is_closing(), "no request completes while closing");
        self.phase = Phase::Idle;
    }

    pub fn start_closing(&mut self) {
        self.phase = Phase::Closing;
    }

    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing)
    }

    pub fn is_uploading(&self) -> bool {
        matches!(self.phase, Phase::Uploading(_))
    }

    pub fn is_sending(&self) -> bool {
        matches!(self.phase, Phase::Sending { .. })
    }

    /// Whether output is waiting for the socket to accept it.
    pub fn wants_write(&self) -> bool {
        self.io.has_pending() || self.is_sending()
    }

    /// The deadline for parking now, from the phase and the configured timeouts:
    /// a request head must be complete `header` after its first byte, a buffered
    /// request's body `body` after it (a trickled body cannot hold the
    /// connection and its buffer longer), and otherwise the connection may idle
    /// `idle` (between requests, between upload bytes, while output waits).
    pub fn park_deadline(&self, now: Instant, header: Duration, body: Duration, idle: Duration) -> Instant {
        if self.wants_write() {
            return now + idle;
        }
        match self.phase {
            Phase::Reading {
                since,
                head_done: false,
                ..
            } => since + header,
            Phase::Reading {
                since,
                head_done: true,
                ..
            } => since + body,
            Phase::Closing => now + LINGER,
            _ => now + idle,
        }
    }
}

impl Parked for Conn {
    fn key(&self) -> usize {
        self.key
    }

    fn note_peer_closed(&mut self) {
        self.io.peer_closed = true;
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.registry.release(self.key, &self.io.sock);
    }
}
