//! A do-nothing HTTP refuser: the reference `scripts/bench-shed.sh` measures
//! crudrs's shedding against.
//!
//! It answers every request with the same canned 503 and does nothing else: no
//! parsing beyond finding where each head ends, no routing, no request ID, no
//! counting. One thread and one epoll (mio, as in the load-client); each ready
//! connection is read until it would block and answered with one write. So what a
//! refusal costs it is what the kernel charges for the request: about the least
//! any server pays per answer when it reads and writes each connection on its
//! own, at a given client shape.
//!
//! `--handoff` runs crudrs's thread model instead: a poller thread that queues
//! ready connections for a worker thread, which answers them. Its cost over the
//! single thread is what the hand-off costs, before any HTTP work.
//!
//! It understands only requests without a body (the bench sends GETs): a head end
//! is `\r\n\r\n`, found across reads. `refuser PORT [--handoff]` listens on
//! 127.0.0.1:PORT until killed.

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// The one answer: shaped like crudrs's own refusal (status, JSON error body,
/// `Retry-After`, an `X-Request-Id`, a `Date`), fixed bytes.
const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: application/json\r\n\
Content-Length: 62\r\n\
Retry-After: 1\r\n\
X-Request-Id: 0123456789abcdef0123456789abcdef\r\n\
Date: Tue, 24 Nov 2026 23:40:00 GMT\r\n\
\r\n\
{\"error\":\"overloaded\",\"message\":\"the server is shedding load\"}";

const LISTENER: Token = Token(usize::MAX);

/// Counts request heads ending in a stream of bytes, across reads: how much of
/// `\r\n\r\n` the bytes so far end with.
#[derive(Default)]
struct HeadEnds {
    matched: u8,
}

impl HeadEnds {
    /// How many heads end within `bytes`.
    fn count(&mut self, bytes: &[u8]) -> usize {
        let mut ends = 0;
        for &b in bytes {
            let want = if self.matched.is_multiple_of(2) {
                b'\r'
            } else {
                b'\n'
            };
            self.matched = if b == want {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.matched == 4 {
                ends += 1;
                self.matched = 0;
            }
        }
        ends
    }
}

struct Conn {
    sock: TcpStream,
    heads: HeadEnds,
    /// Answers the socket did not take yet.
    pending: Vec<u8>,
}

impl Conn {
    /// Writes what is pending; false when the connection is done for.
    fn flush(&mut self) -> bool {
        while !self.pending.is_empty() {
            match (&self.sock).write(&self.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads until the socket would block and answers every head with one write;
    /// false when the connection is done for.
    fn serve(&mut self, buf: &mut [u8]) -> bool {
        let mut heads = 0;
        let alive = loop {
            match (&self.sock).read(buf) {
                Ok(0) => break false,
                Ok(n) => {
                    heads += self.heads.count(&buf[..n]);
                    if n < buf.len() {
                        break true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        for _ in 0..heads {
            self.pending.extend_from_slice(ANSWER);
        }
        self.flush() && alive
    }
}

/// The open connections, by poll token; a freed slot is reused.
struct Conns {
    registry: Registry,
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
}

impl Conns {
    fn new(registry: Registry) -> Conns {
        Conns {
            registry,
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Registers a new connection and answers what it already sent.
    fn add(&mut self, sock: TcpStream, buf: &mut [u8]) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        let key = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.registry.register(
            &mut SourceFd(&sock.as_raw_fd()),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.slots[key] = Some(Conn {
            sock,
            heads: HeadEnds::default(),
            pending: Vec::new(),
        });
        self.drive(key, buf);
        Ok(())
    }

    /// Writes what `key` owes and answers what it sent; closes it when it is done for.
    fn drive(&mut self, key: usize, buf: &mut [u8]) {
        let Some(conn) = self.slots.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        if !(conn.flush() && conn.serve(buf)) {
            if let Some(conn) = self.slots[key].take() {
                let _ = self.registry.deregister(&mut SourceFd(&conn.sock.as_raw_fd()));
            }
            self.free.push(key);
        }
    }
}

/// Waits for readiness, retrying when interrupted.
fn wait(poll: &mut Poll, events: &mut Events) -> io::Result<()> {
    loop {
        match poll.poll(events, None) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

/// Accepts until the backlog is empty, handing each socket to `take`.
fn accept_all(listener: &TcpListener, mut take: impl FnMut(TcpStream) -> io::Result<()>) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((sock, _)) => take(sock)?,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One thread polls and answers: the least work per answer.
fn run_alone(listener: TcpListener, mut poll: Poll) -> io::Result<()> {
    let mut conns = Conns::new(poll.registry().try_clone()?);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        wait(&mut poll, &mut events)?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_all(&listener, |sock| conns.add(sock, &mut buf))?;
            } else {
                conns.drive(ev.token().0, &mut buf);
            }
        }
    }
}

/// What the poller hands the worker in `--handoff`.
enum Task {
    New(TcpStream),
    Ready(usize),
}

/// crudrs's thread model doing nothing: this thread polls and queues what is
/// ready (one lock and one notify per wait), a worker thread answers. The queue
/// is a `VecDeque` under a mutex, not crudrs's fixed ring: what this measures is
/// the hand-off between two threads on one CPU.
fn run_handoff(listener: TcpListener, mut poll: Poll) -> io::Result<()> {
    let queue = Arc::new((Mutex::new(VecDeque::<Task>::new()), Condvar::new()));
    let mut conns = Conns::new(poll.registry().try_clone()?);
    let tasks = Arc::clone(&queue);
    let worker = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let (ring, ready) = &*tasks;
        loop {
            let task = {
                let mut ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    if let Some(task) = ring.pop_front() {
                        break task;
                    }
                    ring = ready.wait(ring).unwrap_or_else(PoisonError::into_inner);
                }
            };
            match task {
                Task::New(sock) => {
                    if let Err(e) = conns.add(sock, &mut buf) {
                        eprintln!("refuser: {e}");
                    }
                }
                Task::Ready(key) => conns.drive(key, &mut buf),
            }
        }
    });
    let mut events = Events::with_capacity(1024);
    let (ring, ready) = &*queue;
    while !worker.is_finished() {
        wait(&mut poll, &mut events)?;
        let mut ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_all(&listener, |sock| {
                    ring.push_back(Task::New(sock));
                    Ok(())
                })?;
            } else {
                ring.push_back(Task::Ready(ev.token().0));
            }
        }
        drop(ring);
        ready.notify_one();
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let usage = || io::Error::new(io::ErrorKind::InvalidInput, "usage: refuser PORT [--handoff]");
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).ok_or_else(usage)?;
    let handoff = match args.next().as_deref() {
        None => false,
        Some("--handoff") => true,
        Some(_) => return Err(usage()),
    };
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))?;
    listener.set_nonblocking(true)?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&listener.as_raw_fd()), LISTENER, Interest::READABLE)?;
    if handoff {
        run_handoff(listener, poll)
    } else {
        run_alone(listener, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::HeadEnds;

    #[test]
    fn heads_are_counted_across_reads() {
        let mut h = HeadEnds::default();
        assert_eq!(
            h.count(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r"),
            1
        );
        assert_eq!(h.count(b"\n"), 1);
        assert_eq!(h.count(b"GET / HTTP/1.1\r\n"), 0);
        assert_eq!(h.count(b"\r"), 0);
        assert_eq!(h.count(b"\n"), 1);
    }

    #[test]
    fn a_bare_line_feed_or_a_carriage_return_in_between_starts_over() {
        let mut h = HeadEnds::default();
        assert_eq!(h.count(b"a\n\r\n"), 0);
        assert_eq!(h.count(b"a\r\r\n\r\n"), 1);
        assert_eq!(h.count(b"a\r\n\n\r\n"), 0);
    }

    #[test]
    fn the_answer_says_its_body_length() {
        let answer = super::ANSWER;
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        let body = split.map(|i| &answer[i..]).unwrap_or_default();
        assert_eq!(body.len(), 62);
        assert!(answer.windows(18).any(|w| w == b"Content-Length: 62"));
    }
}
