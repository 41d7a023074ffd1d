//! Socket I/O of one connection, never blocking: [`Io`] is the socket plus what must
//! survive between readiness events: response bytes the socket did not take yet
//! (`pending`), the bytes of an incomplete request (`partial`, a pooled buffer held
//! only while something is buffered), and whether the peer's EOF was signalled.
//!
//! The io::ErrorKind checks are named here once ([`would_block`],
//! [`is_interrupted`]); nothing here knows HTTP.

use super::buffers::BufferPool;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

/// Whether an I/O error only means "try again when ready".
pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Whether an I/O call was interrupted by a signal and should simply be retried.
pub(crate) fn is_interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// Writes as much of `bytes` as the socket takes without blocking.
pub(crate) fn write_some(mut sock: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match sock.write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if would_block(&e) => break,
            Err(e) if is_interrupted(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Why a read stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadEnd {
    /// The socket has nothing more for now; a new edge comes with new bytes.
    Drained,
    /// The peer closed its sending side.
    Eof,
    /// The buffer is full; more may wait in the socket.
    Full,
}

/// A connection's socket and the bytes it carries between events.
pub(crate) struct Io {
    pub sock: TcpStream,
    /// Bytes of an incomplete request, from the buffer pool; `None` when nothing waits.
    partial: Option<Vec<u8>>,
    /// Response bytes the socket did not take yet; empty (and unallocated) normally.
    pending: Vec<u8>,
    /// A readiness event said the peer closed its side: read to the EOF even after a
    /// short read (edge-triggered polling will not report it again).
    pub peer_closed: bool,
    /// The last read left the socket empty ([`ReadEnd::Drained`]): until a new
    /// edge, reading it again would only say WouldBlock.
    pub drained: bool,
}

impl Io {
    pub fn new(sock: TcpStream) -> Io {
        Io {
            sock,
            partial: None,
            pending: Vec::new(),
            peer_closed: false,
            drained: false,
        }
    }

    /// Reads into `buf[*len..]` until the socket is drained, the peer closed or the
    /// buffer is full; `*len` grows by what was read. A hard error (a reset) means
    /// nothing can be delivered any more.
    pub fn read_some(&mut self, buf: &mut [u8], len: &mut usize) -> io::Result<ReadEnd> {
        let end = self.read_until_blocked(buf, len);
        self.drained = matches!(end, Ok(ReadEnd::Drained));
        end
    }

    fn read_until_blocked(&self, buf: &mut [u8], len: &mut usize) -> io::Result<ReadEnd> {
        while *len < buf.len() {
            match (&self.sock).read(&mut buf[*len..]) {
                Ok(0) => return Ok(ReadEnd::Eof),
                Ok(n) => {
                    *len += n;
                    if *len < buf.len() && !self.peer_closed {
                        // A short read drained the socket: skip the read that would
                        // only say WouldBlock. Bytes arriving from now on raise a new
                        // edge; only an EOF that arrived with the bytes just read
                        // would go unnoticed, and `peer_closed` says when one did.
                        return Ok(ReadEnd::Drained);
                    }
                }
                Err(e) if would_block(&e) => return Ok(ReadEnd::Drained),
                Err(e) if is_interrupted(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ReadEnd::Full)
    }

    /// Whether response bytes wait for the socket.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes what is pending; true once nothing is.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        if self.pending.is_empty() {
            return Ok(true);
        }
        let written = write_some(&self.sock, &self.pending)?;
        self.pending.drain(..written);
        if self.pending.is_empty() {
            // Give the memory back: an idle connection holds no buffer.
            self.pending = Vec::new();
        }
        Ok(self.pending.is_empty())
    }

    /// Writes `out` (after anything pending); what the socket does not take is kept.
    pub fn send(&mut self, out: &[u8]) -> io::Result<()> {
        if self.has_pending() {
            self.pending.extend_from_slice(out);
            return self.flush_pending().map(|_| ());
        }
        let written = write_some(&self.sock, out)?;
        if written < out.len() {
            self.pending.extend_from_slice(&out[written..]);
        }
        Ok(())
    }

    /// Moves a stashed partial request to the front of `buf`, returning its length;
    /// the pooled buffer goes back to the pool.
    pub fn restore(&mut self, pool: &BufferPool, buf: &mut [u8]) -> usize {
        let Some(partial) = self.partial.take() else {
            return 0;
        };
        let len = partial.len();
        buf[..len].copy_from_slice(&partial);
        pool.put(partial);
        len
    }

    /// Keeps `bytes` (an incomplete request) with the connection, in a pooled buffer.
    pub fn stash(&mut self, pool: &BufferPool, bytes: &[u8]) {
        if !bytes.is_empty() {
            let mut partial = pool.get();
            partial.extend_from_slice(bytes);
            self.partial = Some(partial);
        }
    }

    /// Forgets a stashed partial request (the connection is closing).
    pub fn discard_partial(&mut self, pool: &BufferPool) {
        if let Some(p) = self.partial.take() {
            pool.put(p);
        }
    }

    /// Whether the peer is gone: its EOF is the next thing to read (a request that
    /// waited for it would be answered to nobody). Bytes still to read mean it is
    /// not known to be gone.
    pub fn peer_gone(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.sock.peek(&mut probe), Ok(0))
    }

    /// Shuts down our sending side, then discards input: true once the peer's EOF
    /// (or an error) was seen, false while the client still has bytes in flight.
    pub fn shutdown_and_drain(&self) -> bool {
        let _ = self.sock.shutdown(Shutdown::Write);
        let mut sink = [0u8; 4096];
        loop {
            match (&self.sock).read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if would_block(&e) => return false,
                Err(e) if is_interrupted(&e) => {}
                Err(_) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    fn pair() -> (Io, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (sock, _) = listener.accept().expect("accept");
        sock.set_nonblocking(true).expect("non-blocking");
        (Io::new(sock), client)
    }

    /// Reads until `want` bytes arrived (loopback delivery is not instant on a
    /// loaded machine), returning the last read's end.
    fn read_until(io: &mut Io, buf: &mut [u8], len: &mut usize, want: usize) -> ReadEnd {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let end = io.read_some(buf, len).expect("read");
            if *len >= want || Instant::now() > give_up {
                return end;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_short_read_drains_and_a_full_buffer_does_not() {
        let (mut io, mut client) = pair();
        assert!(!io.drained, "nothing read yet");
        let mut buf = [0u8; 8];
        let mut len = 0;
        assert_eq!(io.read_some(&mut buf, &mut len).expect("read"), ReadEnd::Drained);
        assert!(io.drained, "WouldBlock drains");

        client.write_all(b"abc").expect("write");
        assert_eq!(read_until(&mut io, &mut buf, &mut len, 3), ReadEnd::Drained);
        assert_eq!(&buf[..len], b"abc");
        assert!(io.drained, "a short read drains");

        client.write_all(b"defghijk").expect("write");
        assert_eq!(read_until(&mut io, &mut buf, &mut len, 8), ReadEnd::Full);
        assert_eq!(&buf, b"abcdefgh");
        assert!(!io.drained, "a full buffer may leave bytes in the socket");
    }
}
