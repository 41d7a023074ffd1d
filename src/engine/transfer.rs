//! Bodies too large to buffer, streamed while the connection carries their progress:
//! [`Incoming`] decodes an upload's body as it arrives and hands the bytes to the
//! API's [`UploadBody`], [`Outgoing`] sends a stored file as the socket accepts it.
//!
//! Neither ever blocks on the client: `Incoming::feed` takes whatever bytes a read
//! produced and `Outgoing::pump` writes until the socket would block; the worker then
//! parks the connection. Framing is the engine's (one `http::body::Decoder`); what
//! the bytes must be and where they go is the API's.

use super::io::write_some;
use crate::api::error::Error;
use crate::api::limits::QuotaFields;
use crate::api::route::UNMATCHED;
use crate::api::UploadBody;
use crate::http::body::Decoder;
use crate::http::parse::Method;
use crate::http::request_id::RequestId;
use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::FileExt;
use std::time::Instant;

/// An upload whose body is still arriving.
pub(crate) struct Incoming {
    pub body: UploadBody,
    decoder: Decoder,
    /// Whether the connection closes after the response.
    pub close: bool,
    /// The client sent `Expect: 100-continue` and waits before sending the body.
    pub expect_continue: bool,
    /// Whether `100 Continue` went out.
    pub continue_sent: bool,
    /// What its response carries and how it is counted, from when its head was
    /// read: other requests are answered by the same worker while it streams.
    pub meta: AnswerMeta,
}

/// What the answer to a request carries besides its body, and how it is counted.
#[derive(Clone)]
pub(crate) struct AnswerMeta {
    /// The rate-limit fields, from the request's admission.
    pub quota: QuotaFields,
    pub id: RequestId,
    /// The request's metrics slot, and when its connection became ready.
    pub slot: usize,
    pub started: Instant,
    /// For the access log: its method, client and user.
    pub method: Method,
    pub client: IpAddr,
    pub user: Option<i64>,
}

impl AnswerMeta {
    pub fn new() -> AnswerMeta {
        AnswerMeta {
            quota: QuotaFields::default(),
            id: RequestId::default(),
            slot: UNMATCHED,
            started: Instant::now(),
            method: Method::Other,
            client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            user: None,
        }
    }

    /// Forgets the last request's fields before the next one from `peer` (the ID
    /// is assigned anew, and `started` stays: it is the connection's).
    pub fn reset(&mut self, peer: IpAddr) {
        self.quota.clear();
        self.slot = UNMATCHED;
        self.method = Method::Other;
        self.client = peer;
        self.user = None;
    }
}

impl Incoming {
    pub fn new(
        body: UploadBody,
        decoder: Decoder,
        close: bool,
        expect_continue: bool,
        meta: AnswerMeta,
    ) -> Incoming {
        Incoming {
            body,
            decoder,
            close,
            expect_continue,
            continue_sent: false,
            meta,
        }
    }

    /// Consumes body bytes from `input`; returns how many were body (the rest belongs
    /// to the next request) and whether the body is complete.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, bool), Error> {
        let body = &mut self.body;
        let used = self.decoder.decode(input, |b| body.write(b))?;
        Ok((used, self.decoder.is_done()))
    }
}

/// A stored file being sent after its response head.
pub(crate) struct Outgoing {
    file: File,
    offset: u64,
    end: u64,
}

impl Outgoing {
    /// Bytes of the file still to send.
    pub fn remaining(&self) -> u64 {
        self.end - self.offset
    }

    pub fn new(file: File, size: u64) -> Outgoing {
        Outgoing {
            file,
            offset: 0,
            end: size,
        }
    }

    /// Sends file bytes until done (`Ok(true)`) or the socket would block
    /// (`Ok(false)`). `scratch` is the worker's transfer buffer. Positional reads
    /// mean a partially written chunk is simply read again next time.
    pub fn pump(&mut self, sock: &TcpStream, scratch: &mut [u8]) -> io::Result<bool> {
        while self.offset < self.end {
            let want = scratch
                .len()
                .min(usize::try_from(self.end - self.offset).unwrap_or(usize::MAX));
            let n = self.file.read_at(&mut scratch[..want], self.offset)?;
            if n == 0 {
                // The file shrank under us; the promised length cannot be kept.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stored file truncated",
                ));
            }
            let written = write_some(sock, &scratch[..n])?;
            self.offset += written as u64;
            if written < n {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
