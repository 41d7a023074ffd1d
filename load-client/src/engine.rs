//! The load engine: THREADS threads, each driving SOCKETS non-blocking keep-alive
//! connections through its own readiness poller (mio: epoll, edge-triggered, every
//! socket registered once for reading and writing, so a wait is one system call; a
//! poller that arms a timer per wait cost this client about a sixth of its CPU, taken
//! from the server's database on a 2-core machine).
//!
//! Each socket keeps up to `pipeline` requests in flight. In the closed model a new
//! request goes out as soon as one completes, and latency runs from its send. In the
//! open model (`rate`) each thread follows a fixed arrival schedule; a request whose
//! slot has come waits (keeping its intended time) until a socket has room, and its
//! latency runs from the intended time, so a stalled server shows up in the
//! percentiles instead of silently slowing the client (no coordinated omission).
//! Only complete responses are counted, each after validation.

use crate::http::{self, Target};
use crate::mix::{Expect, Fixture, Gen, Kind, Mix};
use crate::relay::{CacheCounts, Keys, XCache};
use crate::report::Stats;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How long in-flight requests may take to answer once issuing has stopped.
const DRAIN: Duration = Duration::from_secs(10);

/// How much work a run does.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// This many requests on every socket (the C client's REQUESTS_PER_SOCKET).
    PerSocket(u64),
    /// This many requests in all.
    Total(u64),
    /// Issue requests for this long.
    For(Duration),
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub threads: usize,
    pub sockets_per_thread: usize,
    pub budget: Budget,
    pub pipeline: usize,
    /// Total arrival rate (requests per second) for the open model.
    pub rate: Option<f64>,
    pub mix: Mix,
    pub seed: u64,
    /// For the 1mrc scenario: events follow their global sequence number.
    pub sequential_events: Option<u64>,
    /// Spread the sockets over this many loopback source addresses (127.0.0.2 up),
    /// so a server that limits per client IP sees that many clients; 0: the
    /// kernel's choice.
    pub source_ips: usize,
    /// What relay requests ask for.
    pub relay: Keys,
}

/// Counters the progress display reads while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub open_sockets: AtomicU64,
    issued: AtomicU64,
    pub stop: AtomicBool,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stats: BTreeMap<String, Stats>,
    /// Completed responses in each second of the run.
    pub per_second: Vec<u64>,
    pub elapsed: Duration,
    /// Values returned by counter requests (for the counter scenario).
    pub counter_values: Vec<i64>,
    /// How the relay made its answers (`X-Cache`), for relay requests.
    pub cache: CacheCounts,
}

struct Sock {
    stream: Option<TcpStream>,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    /// Requests in flight: what to expect, the intended time, when it was written.
    inflight: VecDeque<(Expect, Instant, Instant)>,
    sent: u64,
}

struct Thread<'a> {
    /// This thread's index (0-based).
    id: usize,
    plan: &'a Plan,
    target: &'a Target,
    live: &'a Live,
    poll: Poll,
    start: Instant,
    /// Keyed by kind, named at the end: no string per response.
    stats: BTreeMap<Kind, Stats>,
    per_second: Vec<u64>,
    counter_values: Vec<i64>,
    cache: CacheCounts,
}

/// Runs the plan to completion.
pub fn run(plan: &Plan, target: &Target, fixture: &Fixture, live: &Live) -> Result<Outcome, String> {
    let start = Instant::now();
    let results: Vec<Result<Outcome, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..plan.threads)
            .map(|id| scope.spawn(move || thread_main(id, plan, target, fixture, live, start)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a load thread panicked".into())))
            .collect()
    });
    let mut all = Outcome {
        elapsed: start.elapsed(),
        ..Outcome::default()
    };
    for r in results {
        let r = r?;
        for (k, s) in r.stats {
            all.stats.entry(k).or_default().merge(&s);
        }
        if all.per_second.len() < r.per_second.len() {
            all.per_second.resize(r.per_second.len(), 0);
        }
        for (i, n) in r.per_second.iter().enumerate() {
            all.per_second[i] += n;
        }
        all.counter_values.extend(r.counter_values);
        all.cache.merge(&r.cache);
    }
    Ok(all)
}

fn thread_main(
    id: usize,
    plan: &Plan,
    target: &Target,
    fixture: &Fixture,
    live: &Live,
    start: Instant,
) -> Result<Outcome, String> {
    let poll = Poll::new().map_err(|e| format!("poller: {e}"))?;
    let mut t = Thread {
        id,
        plan,
        target,
        live,
        poll,
        start,
        stats: BTreeMap::new(),
        per_second: Vec::new(),
        counter_values: Vec::new(),
        cache: CacheCounts::default(),
    };
    let mut gen = Gen::new(
        fixture,
        &target.host,
        plan.seed,
        id,
        plan.sequential_events,
        &plan.relay,
    );
    let mut socks: Vec<Sock> = (0..plan.sockets_per_thread)
        .map(|_| Sock {
            stream: None,
            wbuf: Vec::new(),
            rbuf: Vec::new(),
            inflight: VecDeque::new(),
            sent: 0,
        })
        .collect();
    for (key, s) in socks.iter_mut().enumerate() {
        t.connect(s, key)?;
    }
    let deadline = match plan.budget {
        Budget::For(d) => Some(start + d),
        _ => None,
    };
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(plan.threads as f64 / r.max(1e-9)));
    // Stagger the threads' schedules so arrivals are evenly spread.
    let mut next_at =
        start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(id as f64 / plan.threads as f64));
    let mut due: VecDeque<Instant> = VecDeque::new();
    let mut exhausted = false;
    let mut drain_until: Option<Instant> = None;
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 64 * 1024];

    loop {
        let now = Instant::now();
        let issuing = !exhausted && deadline.is_none_or(|d| now < d) && !live.stop.load(Relaxed);
        if issuing {
            if let Some(iv) = interval {
                while next_at <= now {
                    due.push_back(next_at);
                    next_at += iv;
                }
            }
            for s in socks.iter_mut() {
                while s.stream.is_some() && s.inflight.len() < plan.pipeline {
                    let intended = if interval.is_some() {
                        match due.pop_front() {
                            Some(at) => at,
                            None => break,
                        }
                    } else {
                        now
                    };
                    let seq = match t.take(s) {
                        Some(seq) => seq,
                        None => {
                            if let Budget::Total(_) = plan.budget {
                                exhausted = true;
                            }
                            break;
                        }
                    };
                    let kind = plan.mix.pick(&mut gen.rng);
                    let exp = gen.build(kind, seq, &mut s.wbuf);
                    s.inflight.push_back((exp, intended, now));
                    s.sent += 1;
                }
            }
            if let Budget::PerSocket(n) = plan.budget {
                if socks.iter().all(|s| s.sent >= n) {
                    exhausted = true;
                }
            }
        } else if drain_until.is_none() {
            drain_until = Some(now + DRAIN);
        }
        for (key, s) in socks.iter_mut().enumerate() {
            if !s.wbuf.is_empty() {
                t.flush(s, key);
            }
        }
        let idle = socks.iter().all(|s| s.inflight.is_empty());
        if !issuing && idle {
            break;
        }
        if drain_until.is_some_and(|d| now >= d) {
            for s in socks.iter_mut() {
                t.fail_all(s, "no response before the end of the run");
            }
            break;
        }

        // epoll waits whole milliseconds (mio rounds up): the open model's arrivals
        // that fall due within one wait go out together when it ends, each keeping
        // its intended time, so the schedule holds to the millisecond.
        let timeout = match (interval, issuing) {
            (Some(_), true) => next_at
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(10)),
            _ => Duration::from_millis(20),
        };
        if let Err(e) = t.poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            let key = ev.token().0;
            // Edge-triggered: `read` reads until the socket would block, and `flush`
            // writes until its buffer is empty or the socket is full, so no
            // readiness is left unconsumed.
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                t.read(&mut socks[key], key, &mut chunk);
            }
            if ev.is_writable() {
                t.flush(&mut socks[key], key);
            }
        }
    }
    for s in socks.iter_mut() {
        t.close(s);
    }
    Ok(Outcome {
        stats: t
            .stats
            .into_iter()
            .map(|(k, s)| (k.name().to_string(), s))
            .collect(),
        per_second: t.per_second,
        elapsed: start.elapsed(),
        counter_values: t.counter_values,
        cache: t.cache,
    })
}

impl Thread<'_> {
    /// Takes the next request from the budget: its global sequence number.
    fn take(&self, s: &Sock) -> Option<u64> {
        match self.plan.budget {
            Budget::PerSocket(n) if s.sent >= n => None,
            Budget::Total(n) => {
                let seq = self.live.issued.fetch_add(1, Relaxed);
                (seq < n).then_some(seq)
            }
            _ => Some(self.live.issued.fetch_add(1, Relaxed)),
        }
    }

    fn connect(&self, s: &mut Sock, key: usize) -> Result<(), String> {
        let addr = self.target.addr;
        let stream = match self.plan.source_ips {
            0 => TcpStream::connect(addr),
            n => {
                // 127.0.0.2 onwards: every 127/8 address is this host's loopback.
                let index = (self.id * self.plan.sockets_per_thread + key) % n;
                let source = std::net::Ipv4Addr::from(0x7f00_0002u32 + index as u32);
                connect_from(source.into(), addr)
            }
        }
        .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        self.poll
            .registry()
            .register(
                &mut SourceFd(&stream.as_raw_fd()),
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("poller: {e}"))?;
        s.stream = Some(stream);
        s.rbuf.clear();
        self.live.open_sockets.fetch_add(1, Relaxed);
        Ok(())
    }

    fn close(&self, s: &mut Sock) {
        if let Some(stream) = s.stream.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&stream.as_raw_fd()));
            self.live.open_sockets.fetch_sub(1, Relaxed);
        }
    }

    /// The connection ended: every request still in flight failed; reconnect.
    fn reset(&mut self, s: &mut Sock, key: usize, reason: &str) {
        self.fail_all(s, reason);
        self.close(s);
        s.wbuf.clear();
        if self.connect(s, key).is_err() {
            // Stays closed; the run ends when nothing is in flight.
        }
    }

    fn fail_all(&mut self, s: &mut Sock, reason: &str) {
        while let Some((exp, at, sent)) = s.inflight.pop_front() {
            self.complete(&exp, at, sent, Err(reason.to_string()));
        }
    }

    fn flush(&mut self, s: &mut Sock, key: usize) {
        let Some(stream) = s.stream.as_mut() else { return };
        let mut written = 0;
        let result = loop {
            if written == s.wbuf.len() {
                break Ok(());
            }
            match stream.write(&s.wbuf[written..]) {
                Ok(0) => break Err("write returned zero".to_string()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(format!("write failed: {}", e.kind())),
            }
        };
        s.wbuf.drain(..written);
        if let Err(reason) = result {
            self.reset(s, key, &reason);
        }
        // What is left waits for the socket's next writable edge.
    }

    fn read(&mut self, s: &mut Sock, key: usize, chunk: &mut [u8]) {
        loop {
            let Some(stream) = s.stream.as_mut() else { return };
            match stream.read(chunk) {
                Ok(0) => {
                    // parse_all may already have reset (and reconnected) the socket.
                    if !self.parse_all(s, key) {
                        self.reset(s, key, "connection closed by the server");
                    }
                    return;
                }
                Ok(n) => s.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if !self.parse_all(s, key) {
                        self.reset(s, key, &format!("read failed: {}", e.kind()));
                    }
                    return;
                }
            }
        }
        self.parse_all(s, key);
    }

    /// Takes every complete response off the read buffer and checks it. Returns
    /// whether it reset the connection (a close, or a response that makes no sense).
    fn parse_all(&mut self, s: &mut Sock, key: usize) -> bool {
        let mut off = 0;
        loop {
            match http::parse(&s.rbuf[off..], false) {
                Ok(Some(p)) => {
                    let head = off..off + p.body.start;
                    let body = off + p.body.start..off + p.body.end;
                    off += p.len;
                    if p.status == 100 {
                        continue;
                    }
                    let Some((exp, at, sent)) = s.inflight.pop_front() else {
                        s.rbuf.clear();
                        self.reset(s, key, "unsolicited response");
                        return true;
                    };
                    if exp.kind == Kind::Relay {
                        self.cache.add(XCache::from_head(&s.rbuf[head]));
                    }
                    let outcome = exp.validate(p.status, &s.rbuf[body]);
                    let outcome = outcome.map(|v| {
                        if let Some(v) = v {
                            self.counter_values.push(v);
                        }
                    });
                    self.complete(&exp, at, sent, outcome);
                    if p.close {
                        s.rbuf.drain(..off);
                        self.reset(s, key, "connection closed by the server");
                        return true;
                    }
                }
                Ok(None) => break,
                Err(reason) => {
                    s.rbuf.clear();
                    self.reset(s, key, &reason);
                    return true;
                }
            }
        }
        s.rbuf.drain(..off);
        false
    }

    fn complete(&mut self, exp: &Expect, at: Instant, sent: Instant, outcome: Result<(), String>) {
        let now = Instant::now();
        if outcome.is_err() {
            self.live.errors.fetch_add(1, Relaxed);
        }
        self.live.completed.fetch_add(1, Relaxed);
        self.stats.entry(exp.kind).or_default().record_sent(
            now.saturating_duration_since(at),
            now.saturating_duration_since(sent),
            outcome,
        );
        let sec = now.saturating_duration_since(self.start).as_secs() as usize;
        if self.per_second.len() <= sec {
            self.per_second.resize(sec + 1, 0);
        }
        self.per_second[sec] += 1;
    }
}
/// A connection to `to` from the local address `from` (any port).
fn connect_from(from: std::net::IpAddr, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&std::net::SocketAddr::new(from, 0).into())?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}
