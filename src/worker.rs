//! A worker thread: pop a connection, drive it until its socket would block, then
//! park it again (or close it).
//!
//! Driving means: flush output left from last time; restore the partial request, if
//! any, into this worker's read buffer; read until WouldBlock; answer every complete
//! request in the bytes, in order (pipelining); write all the answers with one write;
//! keep what is left of an incomplete request in a pooled buffer attached to the
//! connection. A worker never waits for a client: it only blocks on the database.
//! Requests that hash a password first take a permit from the hashing gate; without
//! one the whole connection waits in the gate's queue, not the worker. A counter
//! increment waits the same way, in the group-commit batcher: the worker that
//! commits a batch answers every connection of it (they are on its `ready` list),
//! and a worker with nothing else to do commits a waiting batch once it is due.

use crate::api::{Api, Reply, Request, Route};
use crate::batch::{Committed, Lead};
use crate::conn::Conn;
use crate::error::{ApiError, Error};
use crate::http::chunked::ChunkedDecoder;
use crate::http::date::DateCache;
use crate::http::parse::parse_head;
use crate::http::response::{encode, encode_head, ResponseHead, CONTINUE};
use crate::http::{Framing, Head, HttpError, Limits, Method};
use crate::poller::{would_block, write_some};
use crate::queue::Popped;
use crate::server::{Permit, Shared};
use crate::transfer::{FeedError, Incoming, Outgoing};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// Output past this size is written before more requests are processed, so a client
/// pipelining faster than it reads cannot grow the output buffer without bound.
const OUT_HIGH_WATER: usize = 256 * 1024;

/// What to do with a connection after reading and answering.
enum Next {
    /// Drive it again now: output (a download, a closing response) remains, or it
    /// was just granted a hashing permit for its waiting request.
    Again(Box<Conn>),
    /// Its next request is a counter increment: it goes to the batcher.
    Increment(Box<Conn>),
}

/// What processing the buffered bytes came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Every complete request is answered; what is left is part of the next one.
    NeedMore,
    /// A response that ends the connection was written.
    Close,
    /// The next request needs a hashing permit the connection does not hold.
    NeedPermit,
    /// The next request is a counter increment not committed yet.
    NeedIncrement,
}

pub struct Worker {
    shared: Arc<Shared>,
    /// The read buffer: allocated once, never resized; a whole JSON request fits.
    buf: Box<[u8]>,
    ctx: Ctx,
    /// Connections of a counter batch this worker committed, to answer before
    /// anything else.
    ready: VecDeque<Box<Conn>>,
}

/// Everything request processing needs besides the read buffer.
struct Ctx {
    shared: Arc<Shared>,
    api: Api,
    limits: Limits,
    /// Responses of the current batch.
    out: Vec<u8>,
    /// Scratch for one response body.
    body: Vec<u8>,
    /// Scratch for one decoded chunked request body.
    decoded: Vec<u8>,
    date: DateCache,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, api: Api) -> Worker {
        let cfg = &shared.config;
        let buf = vec![0u8; cfg.read_buffer_bytes()].into_boxed_slice();
        let ctx = Ctx {
            limits: Limits {
                max_head_bytes: cfg.max_header_bytes,
                max_headers: cfg.max_headers,
            },
            out: Vec::with_capacity(64 * 1024),
            body: Vec::with_capacity(16 * 1024),
            decoded: Vec::with_capacity(cfg.max_json_bytes),
            date: DateCache::default(),
            api,
            shared: Arc::clone(&shared),
        };
        Worker {
            shared,
            buf,
            ctx,
            ready: VecDeque::with_capacity(64),
        }
    }

    /// Serves connections until the queue is closed and empty.
    pub fn run(mut self) {
        while let Some(conn) = self.next_task() {
            self.serve(Some(conn));
        }
    }

    /// The next connection to drive; `None` once the queue is closed and drained.
    /// With the queue empty, increments waiting in the batcher come first: this
    /// worker commits them when their batch is due, and waits for new work only
    /// until then.
    fn next_task(&mut self) -> Option<Box<Conn>> {
        loop {
            if let Some(conn) = self.shared.queue.try_pop() {
                return Some(conn);
            }
            let deadline = self.lead_increments();
            match self.shared.queue.pop_until(deadline) {
                Popped::Item(conn) => return Some(conn),
                Popped::TimedOut => {}
                Popped::Closed => return None,
            }
        }
    }

    /// Commits and answers waiting increments while their batch is due. Returns when
    /// the next batch will be due, if increments wait for one.
    fn lead_increments(&mut self) -> Option<Instant> {
        while self.shared.counter.has_pending() {
            // Answering a batch may have let new connections into the queue.
            match self.lead(!self.shared.queue.is_empty()) {
                Lead::Done(batch) => {
                    self.resume(batch);
                    self.serve(None);
                }
                Lead::WaitUntil(due) => return Some(due),
                Lead::Idle => return None,
            }
        }
        None
    }

    /// Drives `conn` and the connections of every counter batch this worker commits
    /// meanwhile (a batch that comes due after a request is committed at once).
    fn serve(&mut self, conn: Option<Box<Conn>>) {
        let started = Instant::now();
        self.shared.stats.busy.fetch_add(1, Relaxed);
        if let Some(conn) = conn {
            self.drive(conn);
        }
        loop {
            while let Some(conn) = self.ready.pop_front() {
                self.drive(conn);
            }
            if !self.shared.counter.has_pending() {
                break;
            }
            match self.lead(!self.shared.queue.is_empty()) {
                Lead::Done(batch) => self.resume(batch),
                Lead::WaitUntil(_) | Lead::Idle => break,
            }
        }
        let stats = &self.shared.stats;
        stats.busy.fetch_sub(1, Relaxed);
        stats.tasks.fetch_add(1, Relaxed);
        stats
            .task_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
    }

    /// Commits the waiting increments if their batch is due; `busy`: this worker's
    /// queue holds more connections (which may hold more increments).
    fn lead(&self, busy: bool) -> Lead<Box<Conn>, i64, ApiError> {
        let api = &self.ctx.api;
        self.shared
            .counter
            .lead(Instant::now(), busy, |conns| api.commit_increments(conns.len()))
    }

    /// Hands a connection whose next request is a counter increment to the batcher;
    /// if this worker leads the batch, its connections become ready.
    fn submit_increment(&mut self, conn: Box<Conn>) {
        let api = &self.ctx.api;
        // Queued connections may hold more increments for this batch.
        let busy = !self.shared.queue.is_empty();
        if let Some(batch) = self
            .shared
            .counter
            .submit(conn, busy, |conns| api.commit_increments(conns.len()))
        {
            self.resume(batch);
        }
    }

    fn resume(&mut self, batch: Committed<Box<Conn>, i64, ApiError>) {
        for (mut conn, result) in batch {
            conn.counter = Some(result);
            self.ready.push_back(conn);
        }
    }

    /// Drives `conn` until it would block, then parks it (or hands it to the gate or
    /// the batcher, or closes it: a write error drops it).
    fn drive(&mut self, mut conn: Box<Conn>) {
        loop {
            // Output owed from earlier goes first: queued response bytes, then the
            // rest of a file being downloaded.
            if !conn.pending_out.is_empty() {
                let pending = std::mem::take(&mut conn.pending_out);
                let Ok(written) = write_some(&conn.sock, &pending) else {
                    return;
                };
                if written < pending.len() {
                    conn.pending_out = pending;
                    conn.pending_out.drain(..written);
                    return self.park(conn);
                }
            }
            if let Some(out) = conn.outgoing.as_mut() {
                // The read buffer is free here: any partial request is in `conn.partial`.
                match out.pump(&conn.sock, &mut self.buf) {
                    Ok(true) => conn.outgoing = None,
                    Ok(false) => return self.park(conn),
                    Err(_) => return,
                }
            }
            if conn.is_closing() {
                return self.close_gracefully(conn);
            }
            match self.read_and_answer(conn) {
                Some(Next::Again(c)) => conn = c,
                Some(Next::Increment(c)) => return self.submit_increment(c),
                None => return,
            }
        }
    }

    /// Reads what the client sent, answers every complete request and writes the
    /// batch. Returns the connection when output remains to be driven (a download
    /// or a closing response), a hashing permit was granted or an increment waits;
    /// `None` once it is parked, queued at the gate or closed.
    fn read_and_answer(&mut self, mut conn: Box<Conn>) -> Option<Next> {
        let mut len = 0;
        if let Some(partial) = conn.partial.take() {
            len = partial.len();
            self.buf[..len].copy_from_slice(&partial);
            self.shared.buffers.put(partial);
        }
        self.ctx.out.clear();
        let mut eof = false;
        let step = loop {
            let mut blocked = false;
            while len < self.buf.len() {
                match (&conn.sock).read(&mut self.buf[len..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        len += n;
                        if len < self.buf.len() && !conn.peer_closed {
                            // A short read drained the socket: skip the read that
                            // would only say WouldBlock. Bytes arriving from now on
                            // raise a new edge; only an EOF that arrived with the
                            // bytes just read would go unnoticed, and `peer_closed`
                            // says when one did.
                            blocked = true;
                            break;
                        }
                    }
                    Err(e) if would_block(&e) => {
                        blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Reset or another hard error: nothing can be delivered any more.
                    Err(_) => return None,
                }
            }
            let (used, step) = self.ctx.process(&mut conn, &self.buf[..len]);
            self.buf.copy_within(used..len, 0);
            len -= used;
            if step != Step::NeedMore || conn.outgoing.is_some() {
                break step;
            }
            if len == self.buf.len() {
                // The buffer is full of one incomplete request: it can never fit.
                let err = match conn.state {
                    crate::conn::ConnState::Reading { head_done: true, .. } => HttpError::BodyTooLarge,
                    _ => HttpError::HeadTooLarge,
                };
                self.ctx.fail(err.into(), false);
                break Step::Close;
            }
            if self.ctx.out.len() >= OUT_HIGH_WATER {
                let written = write_some(&conn.sock, &self.ctx.out).ok()?;
                self.ctx.out.drain(..written);
                if !self.ctx.out.is_empty() {
                    // The client is not reading; stop taking its requests until it does.
                    break Step::NeedMore;
                }
            }
            if blocked || eof {
                break step;
            }
        };

        // One write for the whole batch; whatever the socket does not take waits.
        let written = write_some(&conn.sock, &self.ctx.out).ok()?;
        if written < self.ctx.out.len() {
            conn.pending_out.extend_from_slice(&self.ctx.out[written..]);
        }

        if step == Step::NeedPermit && conn.pending_out.is_empty() {
            // Keep what is buffered and take a permit or wait in the gate's queue
            // (atomically). A client that already half-closed still gets its answer:
            // the next drive reads EOF again and closes after responding.
            self.stash(&mut conn, len);
            let mut conn = self.shared.gate.acquire_or_park(conn)?;
            conn.permit = Some(Permit::new(Arc::clone(&self.shared)));
            return Some(Next::Again(conn));
        }
        if step == Step::NeedIncrement && conn.pending_out.is_empty() {
            // As for a permit: the request stays buffered until its batch commits.
            self.stash(&mut conn, len);
            return Some(Next::Increment(conn));
        }
        let waits = matches!(step, Step::NeedPermit | Step::NeedIncrement);
        if step == Step::Close || (eof && !waits && conn.outgoing.is_none()) {
            conn.start_closing();
            conn.incoming = None;
            if let Some(p) = conn.partial.take() {
                self.shared.buffers.put(p);
            }
            if conn.wants_write() {
                return Some(Next::Again(conn));
            }
            self.close_gracefully(conn);
            return None;
        }
        self.stash(&mut conn, len);
        if conn.outgoing.is_some() && conn.pending_out.is_empty() {
            return Some(Next::Again(conn));
        }
        self.park(conn);
        None
    }

    /// Keeps the first `len` bytes of the read buffer (an incomplete request) with
    /// the connection, in a pooled buffer.
    fn stash(&self, conn: &mut Conn, len: usize) {
        if len > 0 {
            let mut partial = self.shared.buffers.get();
            partial.extend_from_slice(&self.buf[..len]);
            conn.partial = Some(partial);
        }
    }

    /// Parks `conn` for its next event, or drops it once the poller is gone.
    fn park(&self, mut conn: Box<Conn>) {
        if self.shared.is_stopped() {
            return;
        }
        let cfg = &self.shared.config;
        conn.deadline = conn.park_deadline(Instant::now(), cfg.header_timeout, cfg.keepalive_timeout);
        if let Some(conn) = self.shared.registry.park(conn) {
            // Readiness arrived while we held it: back of the queue, like any event
            // (a closed queue means shutdown, and dropping closes).
            let _ = self.shared.queue.push(conn);
        }
    }

    /// Shuts down our side, then discards input until EOF; parks while the client
    /// still has bytes in flight, so closing never resets the last response away.
    fn close_gracefully(&self, conn: Box<Conn>) {
        let _ = conn.sock.shutdown(Shutdown::Write);
        let mut sink = [0u8; 4096];
        loop {
            match (&conn.sock).read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        self.park(conn);
    }
}

impl Ctx {
    /// Answers every complete request at the start of `buf`. Returns the bytes used
    /// and why it stopped.
    fn process(&mut self, conn: &mut Conn, buf: &[u8]) -> (usize, Step) {
        let mut pos = 0;
        loop {
            if conn.incoming.is_some() {
                // The only place body bytes reach an upload, whenever they arrive.
                match self.feed_upload(conn, &buf[pos..]) {
                    (used, Step::NeedMore) if conn.incoming.is_none() => pos += used,
                    (used, step) => return (pos + used, step),
                }
            }
            if conn.outgoing.is_some() {
                // Later pipelined requests wait until the download is sent.
                return (pos, Step::NeedMore);
            }
            let rest = &buf[pos..];
            if rest.is_empty() {
                return (pos, Step::NeedMore);
            }
            let head = match parse_head(rest, &self.limits) {
                Ok(Some(head)) => head,
                Ok(None) => {
                    conn.reading(false);
                    return (pos, Step::NeedMore);
                }
                Err(e) => {
                    self.fail(e.into(), false);
                    return (pos, Step::Close);
                }
            };
            let head_only = head.method == Method::Head;
            let (route, limit) = match self.api.plan(&head, rest) {
                Ok((route, limit)) => (Ok(route), limit),
                Err(e) if e.closes_connection() => {
                    self.fail(e, head_only);
                    return (pos, Step::Close);
                }
                Err(e) => {
                    if head.expect_continue && !matches!(head.framing, Framing::None | Framing::Length(0)) {
                        // The client waits for 100 before sending its body: answer now
                        // and close instead of reading a body that may never come.
                        self.fail(e, head_only);
                        return (pos, Step::Close);
                    }
                    (Err(e), self.shared.config.max_json_bytes as u64)
                }
            };

            if route.as_ref().is_ok_and(|r| *r == Route::FileUpload) {
                let close = !head.keep_alive || self.shared.is_shutting_down();
                let req = Request {
                    head: &head,
                    buf: rest,
                    body: &[],
                    increment: None,
                };
                if let Err(e) = self.start_upload(conn, &req, limit, close) {
                    self.fail(e, head_only);
                    return (pos, Step::Close);
                }
                pos += head.len;
                continue;
            }

            let mut decoded = std::mem::take(&mut self.decoded);
            let framed = self.frame_body(&head, rest, limit, &mut decoded);
            let end = match framed {
                Ok(Some(end)) => end,
                Ok(None) => {
                    self.decoded = decoded;
                    conn.reading(true);
                    if head.expect_continue && conn.take_continue() {
                        self.out.extend_from_slice(CONTINUE);
                    }
                    return (pos, Step::NeedMore);
                }
                Err(e) => {
                    self.decoded = decoded;
                    self.fail(e.into(), head_only);
                    return (pos, Step::Close);
                }
            };
            let body: &[u8] = match head.framing {
                Framing::Chunked => &decoded,
                Framing::Length(_) => &rest[head.len..end],
                Framing::None => &[],
            };

            // A request that must wait stays buffered: for a hashing permit, or for
            // the batch commit of a counter increment.
            let wait = match route {
                Ok(r) if r.needs_hash_permit() && conn.permit.is_none() => Some(Step::NeedPermit),
                Ok(Route::CounterIncrement) if conn.counter.is_none() => Some(Step::NeedIncrement),
                _ => None,
            };
            if let Some(step) = wait {
                self.decoded = decoded;
                conn.reading(true);
                return (pos, step);
            }
            let close = !head.keep_alive || self.shared.is_shutting_down();
            let used_permit = route.as_ref().is_ok_and(|r| r.needs_hash_permit());
            let req = Request {
                head: &head,
                buf: rest,
                body,
                // Set only while the increment it belongs to heads the buffer.
                increment: conn.counter.take(),
            };
            conn.outgoing = self.answer(route, &req, close, head_only);
            if used_permit {
                // Dropping the permit releases it (possibly to a waiting connection).
                conn.permit = None;
            }
            self.decoded = decoded;
            pos += end;
            conn.request_done();
            if close {
                return (pos, Step::Close);
            }
        }
    }

    /// Where the body of the request at the start of `rest` ends, `None` while it is
    /// incomplete. A chunked body is decoded into `decoded`.
    fn frame_body(
        &self,
        head: &Head,
        rest: &[u8],
        limit: u64,
        decoded: &mut Vec<u8>,
    ) -> Result<Option<usize>, HttpError> {
        match head.framing {
            Framing::None => Ok(Some(head.len)),
            Framing::Length(n) => {
                // `plan` refused anything over the limit, which fits in memory.
                let end = head.len + n as usize;
                Ok((rest.len() >= end).then_some(end))
            }
            Framing::Chunked => {
                decoded.clear();
                let mut dec = ChunkedDecoder::new(limit);
                let used = dec.decode(&rest[head.len..], |b| {
                    decoded.extend_from_slice(b);
                    Ok::<(), HttpError>(())
                })?;
                Ok(dec.is_done().then_some(head.len + used))
            }
        }
    }

    /// Runs the handler (or renders the routing error) and encodes the response.
    /// Returns the file to stream after the head, when the reply is a stored file.
    fn answer(
        &mut self,
        route: Result<Route, Error>,
        req: &Request<'_>,
        close: bool,
        head_only: bool,
    ) -> Option<Outgoing> {
        self.body.clear();
        let stats = &self.shared.stats;
        let result = match route {
            Ok(route) => {
                stats.count(Some(route.kind()));
                self.api.handle(route, req, &mut self.body)
            }
            Err(e) => {
                stats.count(None);
                Err(e)
            }
        };
        self.reply(result, close, head_only)
    }

    /// Encodes a handler's result into the batch.
    fn reply(&mut self, result: Result<Reply, Error>, close: bool, head_only: bool) -> Option<Outgoing> {
        let date = self.date.now();
        match result {
            Ok(reply) => {
                let extra;
                let headers: &[(&str, &str)] = match &reply.header {
                    Some((name, value)) => {
                        extra = [(*name, value.as_str())];
                        &extra
                    }
                    None => &[],
                };
                let head = ResponseHead {
                    status: reply.status,
                    content_type: reply.content_type,
                    headers,
                    close,
                };
                match reply.file {
                    Some((file, size)) => {
                        encode_head(&mut self.out, date, &head, size);
                        (!head_only).then(|| Outgoing::new(file, size))
                    }
                    None => {
                        encode(&mut self.out, date, &head, &self.body, head_only);
                        None
                    }
                }
            }
            Err(e) => {
                if let Error::Api(ApiError::Internal(detail)) = &e {
                    tracing::error!("internal error: {detail}");
                }
                e.encode(&mut self.out, date, close, head_only);
                None
            }
        }
    }

    /// Admits an upload and attaches its streaming state to the connection.
    fn start_upload(
        &mut self,
        conn: &mut Conn,
        req: &Request<'_>,
        limit: u64,
        close: bool,
    ) -> Result<(), Error> {
        self.shared.stats.count(Some(crate::api::Kind::File));
        let admitted = self.api.admit_upload(req)?;
        let upload = self
            .api
            .state()
            .store
            .begin()
            .map_err(|e| ApiError::Internal(format!("starting upload: {e}")))?;
        let length = match req.head.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        let mut incoming = Incoming::new(upload, admitted.media, admitted.user_id, length, limit, close);
        incoming.expect_continue = req.head.expect_continue;
        conn.incoming = Some(Box::new(incoming));
        conn.reading(true);
        Ok(())
    }

    /// Streams body bytes into the connection's upload. When the body completes, the
    /// upload is stored and answered. Returns the bytes used and `NeedMore` unless
    /// the connection must close.
    fn feed_upload(&mut self, conn: &mut Conn, bytes: &[u8]) -> (usize, Step) {
        let Some(incoming) = conn.incoming.as_mut() else {
            return (0, Step::NeedMore);
        };
        match incoming.feed(bytes) {
            Ok((used, false)) => {
                let wants_continue = incoming.expect_continue;
                conn.reading(true);
                // Admission passed and the body is still missing: a waiting client
                // may send it now (once per request: take_continue says so).
                if wants_continue && conn.take_continue() {
                    self.out.extend_from_slice(CONTINUE);
                }
                (used, Step::NeedMore)
            }
            Ok((used, true)) => {
                let Some(incoming) = conn.incoming.take() else {
                    return (used, Step::NeedMore);
                };
                let close = incoming.close;
                self.body.clear();
                let result = self.api.finish_upload(*incoming, &mut self.body);
                self.reply(result, close, false);
                conn.request_done();
                (used, if close { Step::Close } else { Step::NeedMore })
            }
            Err(e) => {
                conn.incoming = None;
                let err = match e {
                    FeedError::Http(e) => Error::Http(e),
                    FeedError::NotPng => ApiError::Invalid("body is not a PNG image".into()).into(),
                    FeedError::Io(e) => ApiError::Internal(format!("writing upload: {e}")).into(),
                };
                self.fail(err, false);
                (0, Step::Close)
            }
        }
    }

    /// Answers a request that ends the connection.
    fn fail(&mut self, e: Error, head_only: bool) {
        self.shared.stats.count(None);
        e.encode(&mut self.out, self.date.now(), true, head_only);
    }
}
