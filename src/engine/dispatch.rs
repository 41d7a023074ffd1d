//! The one dispatch path of every request in a connection's buffered bytes: parse
//! the head, `plan` it with the API, frame its body, wait if its plan says so
//! (hashing permit, group commit), run the handler, encode the response.
//!
//! [`Dispatcher::process`] works on bytes that are already read; it never touches
//! the socket. It returns how many bytes it used and why it stopped ([`Step`]); the
//! driver reads more, writes what it encoded, hands a waiting connection to the gate
//! or a batcher, or closes. Route policy comes from [`Plan`]: nothing here matches
//! on routes. The driver runs `process` under one `catch_unwind` per read, so a
//! panic in a handler costs its connection (500, then close), not the worker.

use super::conn::{Conn, Grant, Held, Phase};
use super::shared::Shared;
use super::transfer::{AnswerMeta, Incoming, Outgoing};
use crate::api::error::{ApiError, Error, ErrorHead};
use crate::api::request::{Reply, Request};
use crate::api::route::{BodyUse, Lane, Plan, Wait, ROUTE_LABELS, UNMATCHED};
use crate::api::{Api, Looked, Staged, Ticket};
use crate::http::body::Decoder;
use crate::http::compress::{accepts_gzip, gzip};
use crate::http::date::DateCache;
use crate::http::error::HttpError;
use crate::http::parse::{parse_head, Framing, Head, Limits, Method};
use crate::http::request_id::{IdGen, RequestId};
use crate::http::response::{encode, encode_head, ResponseHead, CONTINUE};
use crate::obs::access_log::{Entry, FLUSH_BYTES};
use crate::obs::stats::Kind;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

/// Why processing the buffered bytes stopped.
pub(crate) enum Step {
    /// Every complete request is answered; what is left is part of the next one.
    NeedMore,
    /// A response that ends the connection was encoded.
    Close,
    /// The next request needs a hashing permit the connection does not hold.
    NeedPermit,
    /// The next request is staged for a group commit on this lane.
    NeedBatch(Lane, Staged),
    /// The next request waits for the relay to fetch its target.
    NeedFetch(Ticket),
}

/// Request processing state of one worker: the API handle and scratch buffers.
pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    pub api: Api,
    limits: Limits,
    /// Responses of the current batch, written by the driver.
    pub out: Vec<u8>,
    /// Scratch for one response body.
    body: Vec<u8>,
    /// Scratch for one decoded chunked request body.
    decoded: Vec<u8>,
    /// Scratch for one gzip-compressed response body.
    gzipped: Vec<u8>,
    /// What the response being made carries besides its body (rate-limit
    /// fields, request ID) and how it is counted and logged; an upload keeps its
    /// own copy while other requests are answered.
    meta: AnswerMeta,
    ids: IdGen,
    /// This worker's number (its metrics block).
    worker: usize,
    /// Access-log lines not yet written.
    log: Vec<u8>,
    date: DateCache,
}

impl Dispatcher {
    pub fn new(worker: usize, shared: Arc<Shared>, api: Api) -> Dispatcher {
        let cfg = &shared.config;
        Dispatcher {
            limits: Limits {
                max_head_bytes: cfg.max_header_bytes,
                max_headers: cfg.max_headers,
            },
            out: Vec::with_capacity(64 * 1024),
            body: Vec::with_capacity(16 * 1024),
            decoded: Vec::with_capacity(cfg.max_json_bytes),
            gzipped: Vec::new(),
            meta: AnswerMeta::new(),
            ids: IdGen::new(),
            worker,
            log: Vec::new(),
            date: DateCache::default(),
            api,
            shared,
        }
    }

    /// Answers every complete request at the start of `buf`. Returns the bytes used
    /// and why it stopped.
    pub fn process(&mut self, conn: &mut Conn, buf: &[u8]) -> (usize, Step) {
        let mut pos = 0;
        // Durations count from the connection's readiness (its queue wait included).
        self.meta.started = conn.queued_at;
        loop {
            if conn.is_uploading() {
                // The only place body bytes reach an upload, whenever they arrive.
                match self.feed_upload(conn, &buf[pos..]) {
                    (used, Step::NeedMore) if !conn.is_uploading() => pos += used,
                    (used, step) => return (pos + used, step),
                }
            }
            if conn.is_sending() {
                // Later pipelined requests wait until the download is sent.
                return (pos, Step::NeedMore);
            }
            let rest = &buf[pos..];
            if rest.is_empty() {
                return (pos, Step::NeedMore);
            }
            // Fields of the last response do not carry over.
            self.meta.reset(conn.peer);
            let head = match parse_head(rest, &self.limits) {
                Ok(Some(head)) => head,
                Ok(None) => {
                    conn.reading(false);
                    return (pos, Step::NeedMore);
                }
                Err(e) => {
                    self.meta.id.generate(&mut self.ids);
                    self.fail(e.into(), false);
                    return (pos, Step::Close);
                }
            };
            // A request that already waited (for a permit, for a batch that
            // committed it, for a fetch) is answered, never shed: its write may be
            // done. It keeps the ID and start time of its first pass.
            let waited = matches!(conn.phase, Phase::Granted(_));
            match conn.held.take().filter(|_| waited) {
                Some(held) => {
                    self.meta.id = held.id;
                    self.meta.started = held.started;
                }
                None => {
                    self.meta
                        .id
                        .assign(head.request_id.map(|id| id.of(rest)), &mut self.ids);
                    // (A held request earlier in this pass moved it back.)
                    self.meta.started = conn.queued_at;
                }
            }
            self.meta.method = head.method;
            let head_only = head.method == Method::Head;
            let mut planned = self.api.plan(&head, rest);
            if let Ok(plan) = &planned {
                if plan.shed && !waited && self.shared.shedder.is_shedding() {
                    self.shared.shedder.refuse();
                    planned = Err(ApiError::Shed.into());
                }
            }
            let (plan, limit) = match planned {
                Ok(plan) => {
                    self.meta.slot = plan.slot;
                    (Ok(plan), plan.body_limit)
                }
                Err(e) if e.closes_connection() || !self.can_skip_body(&head) => {
                    // A body that is not read cannot be skipped: answer now and close,
                    // instead of buffering what may never fit or never come.
                    self.fail(e, head_only);
                    return (pos, Step::Close);
                }
                Err(e) => (Err(e), self.api.unrouted_body_limit()),
            };
            let close = !head.keep_alive || self.shared.is_shutting_down() || self.api.is_draining();

            if let Some(plan) = plan.as_ref().ok().filter(|p| p.body == BodyUse::Streamed) {
                // An upload is admitted once, from its head: its body is streamed,
                // never buffered, and a refusal closes rather than skip it.
                let started = match self
                    .api
                    .admit(plan, &head, rest, conn.peer, true, &mut self.meta.quota)
                {
                    Ok(admitted) => {
                        let req = Request {
                            head: &head,
                            buf: rest,
                            body: &[],
                            committed: None,
                            client: admitted.client,
                            auth: admitted.auth,
                            fetched: None,
                        };
                        self.note_client(&req);
                        self.start_upload(conn, &req, plan, close)
                    }
                    Err(refused) => {
                        self.count(Some(plan.kind));
                        self.reply(Err(refused), true, head_only, None);
                        return (pos, Step::Close);
                    }
                };
                if let Err(e) = started {
                    self.fail(e, head_only);
                    return (pos, Step::Close);
                }
                pos += head.len;
                continue;
            }

            let mut decoded = std::mem::take(&mut self.decoded);
            let end = match frame_body(&head, rest, limit, &mut decoded) {
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
            let mut req = Request {
                head: &head,
                buf: rest,
                body,
                committed: None,
                client: conn.peer,
                auth: None,
                fetched: None,
            };

            let (sent, closes) = match plan {
                Err(e) => {
                    self.count(None);
                    self.reply(Err(e), close, head_only, None)
                }
                Ok(plan) => 'planned: {
                    // Admission (rate limits) before anything is done for the
                    // request; one that waited was admitted and charged before.
                    match self
                        .api
                        .admit(&plan, &head, rest, conn.peer, !waited, &mut self.meta.quota)
                    {
                        Ok(admitted) => {
                            req.client = admitted.client;
                            req.auth = admitted.auth;
                            self.note_client(&req);
                        }
                        Err(refused) => {
                            self.count(Some(plan.kind));
                            break 'planned self.reply(Err(refused), close, head_only, None);
                        }
                    }
                    // A request that must wait stays buffered: for a hashing permit,
                    // or for the group commit it is staged for. Only a request that
                    // waits can have been granted anything.
                    let grant = match plan.wait {
                        Wait::Nothing => None,
                        _ => conn.take_grant(),
                    };
                    let mut permit = None;
                    let refused = match (plan.wait, grant) {
                        (Wait::Nothing, _) => None,
                        (Wait::HashPermit, Some(Grant::Permit(p))) => {
                            permit = Some(p);
                            None
                        }
                        (Wait::HashPermit, _) => {
                            self.decoded = decoded;
                            conn.reading(true);
                            self.hold(conn);
                            return (pos, Step::NeedPermit);
                        }
                        (Wait::Batch(_), Some(Grant::Committed(result))) => {
                            req.committed = Some(result);
                            None
                        }
                        (Wait::Fetch, Some(Grant::Fetched(fetched))) => {
                            req.fetched = Some(fetched);
                            None
                        }
                        (Wait::Fetch, _) => match self.api.relay_lookup(&req, self.meta.id.as_bytes()) {
                            Ok(Looked::Ready(fetched)) => {
                                req.fetched = Some(fetched);
                                None
                            }
                            Ok(Looked::Wait(ticket)) => {
                                self.decoded = decoded;
                                conn.reading(true);
                                self.hold(conn);
                                return (pos, Step::NeedFetch(ticket));
                            }
                            Err(e) => Some(e),
                        },
                        (Wait::Batch(lane), _) => match self.api.stage(plan.route, &req) {
                            Ok(staged) => {
                                self.decoded = decoded;
                                conn.reading(true);
                                self.hold(conn);
                                return (pos, Step::NeedBatch(lane, staged));
                            }
                            // Refused before it was staged (401, 400, ...).
                            Err(e) => Some(e),
                        },
                    };
                    let replied = match refused {
                        Some(e) => {
                            self.count(Some(plan.kind));
                            self.reply(Err(e), close, head_only, None)
                        }
                        None => self.answer(&plan, &req, close, head_only),
                    };
                    // Dropping the permit releases it (possibly to a waiting connection).
                    drop(permit);
                    replied
                }
            };
            self.decoded = decoded;
            pos += end;
            conn.request_done();
            if let Some(file) = sent {
                conn.phase = Phase::Sending { file, close: closes };
            } else if closes {
                return (pos, Step::Close);
            }
        }
    }

    /// Keeps what the request about to wait must answer with when it comes back:
    /// its ID, and when its connection became ready.
    fn hold(&self, conn: &mut Conn) {
        conn.held = Some(Held {
            id: self.meta.id.clone(),
            started: self.meta.started,
        });
    }

    /// Whether the body of a request that will not be served can be read and
    /// discarded cheaply: none, or a small Content-Length body the client sends
    /// without waiting for 100 Continue.
    fn can_skip_body(&self, head: &Head) -> bool {
        match head.framing {
            Framing::None | Framing::Length(0) => true,
            Framing::Length(n) => n <= self.api.unrouted_body_limit() && !head.expect_continue,
            Framing::Chunked => false,
        }
    }

    fn count(&self, kind: Option<Kind>) {
        self.shared.stats.count(kind);
    }

    /// Runs the handler and encodes its response; returns the file to stream after
    /// the head, if any, and whether the connection closes after this response.
    fn answer(
        &mut self,
        plan: &Plan,
        req: &Request<'_>,
        close: bool,
        head_only: bool,
    ) -> (Option<Outgoing>, bool) {
        self.count(Some(plan.kind));
        self.body.clear();
        let result = self.api.handle(plan.route, req, &mut self.body);
        // Read only when the body (or, for a 304, the 200's it stands for) is big
        // enough to be compressed at all.
        let len = match &result {
            Ok(Reply {
                stands_for_json: Some(len),
                ..
            }) => *len,
            _ => self.body.len(),
        };
        let accept_encoding = req
            .head
            .accept_encoding
            .filter(|_| worth_compressing(self.shared.config.compress_min_bytes, len))
            .map(|a| a.str(req.buf));
        self.reply(result, close, head_only, accept_encoding)
    }

    /// Encodes a handler's result into the batch: the file to stream after the head,
    /// if any, and whether the connection closes after this response. The
    /// response carries the rate-limit fields admission left in `self.meta.quota`.
    fn reply(
        &mut self,
        result: Result<Reply, Error>,
        close: bool,
        head_only: bool,
        accept_encoding: Option<&str>,
    ) -> (Option<Outgoing>, bool) {
        let status = match &result {
            Ok(reply) => reply.status,
            Err(e) => e.status(),
        };
        let before = self.out.len();
        let answered = self.encode_reply(result, close, head_only, accept_encoding);
        let file = answered.0.as_ref().map_or(0, Outgoing::remaining);
        self.record(status, (self.out.len() - before) as u64 + file);
        answered
    }

    fn encode_reply(
        &mut self,
        result: Result<Reply, Error>,
        close: bool,
        head_only: bool,
        accept_encoding: Option<&str>,
    ) -> (Option<Outgoing>, bool) {
        let min = self.shared.config.compress_min_bytes;
        let date = self.date.now();
        match result {
            Ok(reply) => {
                // Room for `W/` + a strong ETag (ours are 18 to 34 bytes).
                let mut weak = [0u8; 80];
                let mut extra = [("", ""); 6];
                let mut n = 0;
                if let Some((name, value)) = &reply.header {
                    extra[n] = (*name, value.as_str());
                    n += 1;
                }
                if let Some(cache_control) = reply.cache_control {
                    extra[n] = ("Cache-Control", cache_control);
                    n += 1;
                }
                let mut age = itoa::Buffer::new();
                if let Some(upstream) = &reply.upstream {
                    extra[n] = ("Age", age.format(upstream.age));
                    extra[n + 1] = ("X-Cache", upstream.cache);
                    n += 2;
                }
                // A JSON body big enough to be worth it varies with Accept-Encoding,
                // and is gzipped when the client accepts that (never a file or a
                // body-less status). A 304 standing for such a 200 carries the
                // fields the 200 would (RFC 9110 §15.4.5).
                let mut body: &[u8] = match reply.upstream.as_ref().and_then(|u| u.body.as_deref()) {
                    Some(relayed) => relayed,
                    None => &self.body,
                };
                let json_len = match reply.stands_for_json {
                    Some(len) if reply.status == 304 => len,
                    _ => body.len(),
                };
                // (The length first: most bodies are small, and then nothing else
                // is looked at.)
                if worth_compressing(min, json_len)
                    && reply.file.is_none()
                    && (reply.content_type == Some("application/json") || reply.stands_for_json.is_some())
                    && reply.status != 204
                    && (reply.status != 304 || reply.stands_for_json.is_some())
                {
                    extra[n] = ("Vary", "Accept-Encoding");
                    n += 1;
                    // HEAD too: its fields (Content-Encoding, Content-Length) are
                    // the ones GET would send.
                    if accept_encoding.is_some_and(accepts_gzip) {
                        let gzipped = reply.status == 304 || {
                            self.gzipped.clear();
                            gzip(body, &mut self.gzipped).is_ok()
                        };
                        if gzipped {
                            if reply.status != 304 {
                                body = &self.gzipped;
                                extra[n] = ("Content-Encoding", "gzip");
                                n += 1;
                            }
                            // Another encoding is another representation: a strong
                            // validator may not name both (RFC 9110 §8.8.3), so
                            // the gzipped one's is weak (and still matches the
                            // plain one's in If-None-Match, which compares weakly).
                            weaken_etag(&mut extra[..n], &mut weak);
                        }
                    }
                }
                // A relayed answer carries the upstream's Date among its fields.
                let date = if reply.upstream.is_some() { &[][..] } else { date };
                let head = ResponseHead {
                    status: reply.status,
                    content_type: reply.content_type,
                    headers: &extra[..n],
                    relayed: reply.upstream.as_ref().map_or(&[], |u| &u.lines),
                    lines: self.meta.quota.lines(),
                    request_id: self.meta.id.as_bytes(),
                    close,
                };
                match reply.file {
                    Some((file, size)) => {
                        encode_head(&mut self.out, date, &head, size);
                        ((!head_only).then(|| Outgoing::new(file, size)), close)
                    }
                    None => {
                        encode(&mut self.out, date, &head, body, head_only);
                        (None, close)
                    }
                }
            }
            Err(e) => {
                log_failure(&e, &self.meta.id);
                if let Error::Api(ApiError::RateLimited(_)) = e {
                    self.shared.stats.limited.fetch_add(1, Relaxed);
                }
                let close = close || e.closes_connection();
                let parts = ErrorHead {
                    date,
                    close,
                    head_only,
                    request_id: self.meta.id.as_bytes(),
                    lines: self.meta.quota.lines(),
                };
                // The handler's body buffer is free: the error's body goes there.
                e.encode_with(&mut self.out, &mut self.body, parts);
                (None, close)
            }
        }
    }

    /// Admits an upload and attaches its streaming state to the connection.
    fn start_upload(
        &mut self,
        conn: &mut Conn,
        req: &Request<'_>,
        plan: &Plan,
        close: bool,
    ) -> Result<(), Error> {
        self.count(Some(plan.kind));
        let body = self.api.admit_upload(req)?;
        let decoder = Decoder::new(req.head.framing, plan.body_limit);
        let incoming = Incoming::new(body, decoder, close, req.head.expect_continue, self.meta.clone());
        conn.phase = Phase::Uploading(Box::new(incoming));
        Ok(())
    }

    /// Streams body bytes into the connection's upload. When the body completes, the
    /// upload is stored and answered. Returns the bytes used and `NeedMore` unless
    /// the connection must close.
    fn feed_upload(&mut self, conn: &mut Conn, bytes: &[u8]) -> (usize, Step) {
        let Phase::Uploading(incoming) = &mut conn.phase else {
            return (0, Step::NeedMore);
        };
        // Its answer (or its error) is the upload's own: its request ID and
        // fields, counted from when the upload started.
        self.meta.clone_from(&incoming.meta);
        match incoming.feed(bytes) {
            Ok((used, false)) => {
                // Admission passed and the body is still missing: a waiting client
                // may send it now (once per request: take_continue says so).
                if incoming.expect_continue && conn.take_continue() {
                    self.out.extend_from_slice(CONTINUE);
                }
                (used, Step::NeedMore)
            }
            Ok((used, true)) => {
                let Phase::Uploading(incoming) = std::mem::replace(&mut conn.phase, Phase::Idle) else {
                    unreachable!("matched as uploading above");
                };
                let close = incoming.close;
                self.body.clear();
                let result = self.api.finish_upload(incoming.body, &mut self.body);
                let (_, closes) = self.reply(result, close, false, None);
                (used, if closes { Step::Close } else { Step::NeedMore })
            }
            Err(e) => {
                conn.phase = Phase::Idle;
                self.fail(e, false);
                (0, Step::Close)
            }
        }
    }

    /// Answers a request that ends the connection.
    pub fn fail(&mut self, e: Error, head_only: bool) {
        self.count(None);
        log_failure(&e, &self.meta.id);
        let before = self.out.len();
        let parts = ErrorHead {
            date: self.date.now(),
            close: true,
            head_only,
            request_id: self.meta.id.as_bytes(),
            lines: b"",
        };
        e.encode_with(&mut self.out, &mut self.body, parts);
        self.record(e.status(), (self.out.len() - before) as u64);
    }

    /// Notes the client and user admission found, for the access log.
    fn note_client(&mut self, req: &Request<'_>) {
        self.meta.client = req.client;
        self.meta.user = match &req.auth {
            Some(Ok((who, _))) => Some(who.user_id),
            _ => None,
        };
    }

    /// Counts the request being answered in this worker's metrics, and logs it
    /// when the access log is on.
    fn record(&mut self, status: u16, bytes: u64) {
        let (metrics, log) = (self.shared.config.metrics, self.shared.access_log.is_some());
        if !metrics && !log {
            return;
        }
        let took = self.meta.started.elapsed();
        if metrics {
            self.shared
                .metrics
                .worker(self.worker)
                .request(self.meta.slot, status, took);
        }
        if log {
            Entry {
                time: SystemTime::now(),
                request_id: self.meta.id.as_str(),
                method: self.meta.method.as_str(),
                route: ROUTE_LABELS[self.meta.slot.min(UNMATCHED)].template,
                status,
                bytes,
                duration: took,
                client: self.meta.client,
                user_id: self.meta.user,
            }
            .format(&mut self.log);
            if self.log.len() >= FLUSH_BYTES {
                self.flush_log();
            }
        }
    }

    /// Writes the access-log lines buffered so far.
    pub fn flush_log(&mut self) {
        if let (Some(log), false) = (&self.shared.access_log, self.log.is_empty()) {
            log.write(&self.log);
            self.log.clear();
        }
    }
}

/// Makes a strong `ETag` among `fields` weak (`W/"..."`), written into `buf`;
/// left as it is when it is weak already or does not fit.
fn weaken_etag<'a>(fields: &mut [(&'a str, &'a str)], buf: &'a mut [u8]) {
    let Some(field) = fields
        .iter_mut()
        .find(|(name, _)| name.eq_ignore_ascii_case("ETag"))
    else {
        return;
    };
    let strong = field.1;
    if !strong.starts_with('"') || strong.len() + 2 > buf.len() {
        return;
    }
    buf[..2].copy_from_slice(b"W/");
    buf[2..2 + strong.len()].copy_from_slice(strong.as_bytes());
    if let Ok(weak) = std::str::from_utf8(&buf[..2 + strong.len()]) {
        field.1 = weak;
    }
}

/// Whether a body this long is worth compressing (`--compress-min-bytes`; 0:
/// never).
fn worth_compressing(min: usize, len: usize) -> bool {
    min > 0 && len >= min
}

/// Logs what the client is only told was internal, with the request's ID.
fn log_failure(e: &Error, id: &RequestId) {
    let id = id.as_str();
    match e {
        Error::Api(ApiError::Internal(detail)) => {
            tracing::error!(request_id = id, "internal error: {detail}")
        }
        Error::Api(ApiError::Panicked(detail)) => tracing::error!(
            request_id = id,
            "request panicked ({detail}); answered 500 and closed its connection"
        ),
        _ => {}
    }
}

/// Where the body of the request at the start of `rest` ends, `None` while it is
/// incomplete. A chunked body is decoded into `decoded`.
fn frame_body(
    head: &Head,
    rest: &[u8],
    limit: u64,
    decoded: &mut Vec<u8>,
) -> Result<Option<usize>, HttpError> {
    match head.framing {
        Framing::None => Ok(Some(head.len)),
        Framing::Length(n) => {
            // `plan` (or `can_skip_body`) refused anything over the limit, which
            // fits in memory.
            let end = head.len + n as usize;
            Ok((rest.len() >= end).then_some(end))
        }
        Framing::Chunked => {
            decoded.clear();
            let mut dec = Decoder::new(head.framing, limit);
            let used = dec.decode(&rest[head.len..], |b| {
                decoded.extend_from_slice(b);
                Ok::<(), HttpError>(())
            })?;
            Ok(dec.is_done().then_some(head.len + used))
        }
    }
}
