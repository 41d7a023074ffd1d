//! Driving one connection until its socket would block: flush what it owes, pump a
//! download, read what arrived, dispatch every complete request, write the answers
//! with one write, then park it (or hand it to the hashing gate or a batcher, or
//! close it).
//!
//! A driver never waits for a client: reads and writes stop at WouldBlock, and what
//! is left (a partial request, unsent bytes) stays with the connection's [`Io`].
//! Handing a connection to a batcher is the worker's job ([`Driven::Batch`]), since
//! whoever submits may have to commit.
//!
//! [`Io`]: super::io::Io

use super::conn::{Conn, Grant, Phase};
use super::dispatch::{Dispatcher, Step};
use super::io::{write_some, ReadEnd};
use super::shared::{Shared, Waiter};
use crate::api::error::ApiError;
use crate::api::route::Lane;
use crate::api::{Api, Resume};
use crate::http::error::HttpError;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// Output past this size is written before more requests are processed, so a client
/// pipelining faster than it reads cannot grow the output buffer without bound.
const OUT_HIGH_WATER: usize = 256 * 1024;

/// What became of a driven connection.
pub(crate) enum Driven {
    /// It is parked, waiting in the gate, or closed: nothing more to do here.
    Done,
    /// Its next request is staged for a group commit: submit it to that lane.
    Batch(Lane, Waiter),
}

/// What to do with a connection after reading and answering.
enum Next {
    /// Drive it again now: output (a download, a closing response) remains, or it
    /// was just granted a hashing permit for its waiting request.
    Again(Box<Conn>),
    Stop(Driven),
}

/// The message a panic was raised with, when it has one.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic without a message".to_string()
    }
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    /// The read buffer: allocated once, never resized; a whole JSON request fits.
    buf: Box<[u8]>,
    dispatch: Dispatcher,
}

impl Driver {
    pub fn new(worker: usize, shared: Arc<Shared>, api: Api) -> Driver {
        let buf = vec![0u8; shared.config.read_buffer_bytes()].into_boxed_slice();
        Driver {
            dispatch: Dispatcher::new(worker, Arc::clone(&shared), api),
            shared,
            buf,
        }
    }

    pub fn api(&self) -> &Api {
        &self.dispatch.api
    }

    /// Drives `conn` until it would block.
    pub fn drive(&mut self, mut conn: Box<Conn>) -> Driven {
        loop {
            // Output owed from earlier goes first: queued response bytes, then the
            // rest of a file being downloaded.
            match conn.io.flush_pending() {
                Ok(true) => {}
                Ok(false) => {
                    self.park(conn);
                    return Driven::Done;
                }
                Err(_) => return Driven::Done,
            }
            if let Phase::Sending { file, close } = &mut conn.phase {
                // The read buffer is free here: any partial request is stashed.
                match file.pump(&conn.io.sock, &mut self.buf) {
                    Ok(true) => conn.phase = if *close { Phase::Closing } else { Phase::Idle },
                    Ok(false) => {
                        self.park(conn);
                        return Driven::Done;
                    }
                    Err(_) => return Driven::Done,
                }
            }
            if conn.is_closing() {
                self.close_gracefully(conn);
                return Driven::Done;
            }
            match self.read_and_answer(conn) {
                Next::Again(c) => conn = c,
                Next::Stop(driven) => return driven,
            }
        }
    }

    /// Reads what the client sent, answers every complete request and writes the
    /// batch of answers.
    fn read_and_answer(&mut self, mut conn: Box<Conn>) -> Next {
        let pool = &self.shared.buffers;
        let mut len = conn.io.restore(pool, &mut self.buf);
        self.dispatch.out.clear();
        let mut eof = false;
        // A connection back from waiting (for a permit, a batch, a fetch) whose last
        // read drained its socket has nothing new to read unless an event came
        // meanwhile: its first pass skips the read that would only say WouldBlock
        // (one system call per group-committed request).
        let mut quiet = matches!(conn.phase, Phase::Granted(_))
            && conn.io.drained
            && !self.shared.registry.take_ready(&mut *conn);
        let step = loop {
            let end = if std::mem::take(&mut quiet) {
                ReadEnd::Drained
            } else {
                match conn.io.read_some(&mut self.buf, &mut len) {
                    Ok(end) => end,
                    // Reset or another hard error: nothing can be delivered any more.
                    Err(_) => return Next::Stop(Driven::Done),
                }
            };
            eof |= end == ReadEnd::Eof;
            // A panic anywhere in dispatching costs this connection: what was
            // answered before it goes out, then a 500, then the close.
            let processed = catch_unwind(AssertUnwindSafe(|| {
                self.dispatch.process(&mut conn, &self.buf[..len])
            }));
            let (used, step) = match processed {
                Ok(done) => done,
                Err(payload) => {
                    self.shared.stats.panics.fetch_add(1, Relaxed);
                    let panicked = ApiError::Panicked(panic_message(&*payload));
                    self.dispatch.fail(panicked.into(), false);
                    (len, Step::Close)
                }
            };
            self.dispatch.flush_log();
            self.buf.copy_within(used..len, 0);
            len -= used;
            if !matches!(step, Step::NeedMore) || conn.is_sending() {
                break step;
            }
            if len == self.buf.len() {
                // The buffer is full of one incomplete request: it can never fit.
                let err = match conn.phase {
                    Phase::Reading { head_done: true, .. } => HttpError::BodyTooLarge,
                    _ => HttpError::HeadTooLarge,
                };
                self.dispatch.fail(err.into(), false);
                break Step::Close;
            }
            if self.dispatch.out.len() >= OUT_HIGH_WATER {
                let Ok(written) = write_some(&conn.io.sock, &self.dispatch.out) else {
                    return Next::Stop(Driven::Done);
                };
                self.dispatch.out.drain(..written);
                if !self.dispatch.out.is_empty() {
                    // The client is not reading; stop taking its requests until it does.
                    break Step::NeedMore;
                }
            }
            if end != ReadEnd::Full {
                break step;
            }
        };

        // One write for the whole batch; whatever the socket does not take waits.
        if conn.io.send(&self.dispatch.out).is_err() {
            return Next::Stop(Driven::Done);
        }
        let waits = matches!(step, Step::NeedPermit | Step::NeedBatch(..) | Step::NeedFetch(_));
        if waits && !conn.io.has_pending() {
            // Keep what is buffered (the waiting request heads it) and wait with the
            // connection, not the worker.
            conn.io.stash(pool, &self.buf[..len]);
            match step {
                Step::NeedBatch(lane, staged) => {
                    return Next::Stop(Driven::Batch(lane, Waiter { conn, staged }))
                }
                // The connection waits in the key's flight; the fetch thread that
                // lands it queues it again with its answer.
                Step::NeedFetch(ticket) => {
                    let shared = Arc::clone(&self.shared);
                    let resume: Resume = Box::new(move |fetched| {
                        let mut conn = conn;
                        conn.phase = Phase::Granted(Grant::Fetched(fetched));
                        // A closed queue (shutdown) drops the connection.
                        let _ = shared.enqueue(conn);
                    });
                    self.dispatch.api.relay_wait(ticket, resume);
                    return Next::Stop(Driven::Done);
                }
                // Take a permit or wait in the gate's queue (atomically).
                _ => {
                    return match self.shared.gate.acquire_or_park(conn) {
                        Some(mut conn) => {
                            conn.phase = Phase::Granted(Grant::Permit(self.shared.permit()));
                            Next::Again(conn)
                        }
                        None => Next::Stop(Driven::Done),
                    }
                }
            }
        }
        // With output pending, a waiting request is simply read again later.
        if matches!(step, Step::Close) || (eof && !waits && !conn.is_sending()) {
            conn.start_closing();
            conn.io.discard_partial(pool);
            if conn.wants_write() {
                return Next::Again(conn);
            }
            self.close_gracefully(conn);
            return Next::Stop(Driven::Done);
        }
        conn.io.stash(pool, &self.buf[..len]);
        if conn.is_sending() && !conn.io.has_pending() {
            return Next::Again(conn);
        }
        self.park(conn);
        Next::Stop(Driven::Done)
    }

    /// Parks `conn` for its next event, or drops it once the poller is gone.
    fn park(&self, mut conn: Box<Conn>) {
        if self.shared.is_stopped() {
            return;
        }
        let cfg = &self.shared.config;
        conn.deadline = conn.park_deadline(
            Instant::now(),
            cfg.header_timeout,
            cfg.body_timeout,
            cfg.keepalive_timeout,
        );
        if let Some(conn) = self.shared.registry.park(conn) {
            // Readiness arrived while we held it: back of the queue, like any event
            // (a closed queue means shutdown, and dropping closes).
            let _ = self.shared.enqueue(conn);
        }
    }

    /// Shuts down our side, then discards input until EOF; parks while the client
    /// still has bytes in flight, so closing never resets the last response away.
    fn close_gracefully(&self, conn: Box<Conn>) {
        if !conn.io.shutdown_and_drain() {
            self.park(conn);
        }
    }
}
