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
//! It understands only requests without a body (the bench sends GETs): a head end
//! is `\r\n\r\n`, found across reads. `refuser PORT` listens on 127.0.0.1:PORT
//! until killed.

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

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

fn main() -> io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "usage: refuser PORT"))?;
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))?;
    listener.set_nonblocking(true)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut SourceFd(&listener.as_raw_fd()), LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            sock.set_nonblocking(true)?;
                            sock.set_nodelay(true)?;
                            let key = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(
                                &mut SourceFd(&sock.as_raw_fd()),
                                Token(key),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns[key] = Some(Conn {
                                sock,
                                heads: HeadEnds::default(),
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(conn) = conns.get_mut(key).and_then(Option::as_mut) else {
                continue;
            };
            let alive = (!ev.is_writable() || conn.flush()) && (!ev.is_readable() || conn.serve(&mut buf));
            if !alive {
                if let Some(conn) = conns[key].take() {
                    let _ = poll.registry().deregister(&mut SourceFd(&conn.sock.as_raw_fd()));
                }
                free.push(key);
            }
        }
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
