//! The access log (`--access-log PATH`): one JSON line per answered request, with
//! its time, request ID, method, route template, status, response bytes (`bytes`:
//! the head and body as encoded, after any gzip, plus a download's file),
//! duration, client IP and user id when it was authenticated.
//!
//! Workers format lines into a buffer of their own and append it to the file with
//! one `write` per pass over a connection's requests (the file is opened with
//! `O_APPEND`, so each write lands whole at the end and lines of different workers
//! never interleave). Off (the default), nothing of this runs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Buffered bytes past which a worker writes its lines out before its pass ends.
pub const FLUSH_BYTES: usize = 32 * 1024;

/// The open log file.
pub struct AccessLog {
    file: File,
}

/// One answered request.
pub struct Entry<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub client: IpAddr,
    pub user_id: Option<i64>,
}

impl AccessLog {
    pub fn open(path: &Path) -> std::io::Result<AccessLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AccessLog { file })
    }

    /// Appends buffered lines (whole lines only); a failure is logged, not fatal.
    pub fn write(&self, lines: &[u8]) {
        if let Err(e) = (&self.file).write_all(lines) {
            tracing::warn!("access log: {e}");
        }
    }
}

impl Entry<'_> {
    /// Appends the entry as one JSON line.
    pub fn format(&self, out: &mut Vec<u8>) {
        let time = OffsetDateTime::from(self.time)
            .format(&Rfc3339)
            .unwrap_or_default();
        let line = serde_json::json!({
            "time": time,
            "request_id": self.request_id,
            "method": self.method,
            "route": self.route,
            "status": self.status,
            "bytes": self.bytes,
            "duration_us": self.duration.as_micros() as u64,
            "client_ip": self.client.to_string(),
            "user_id": self.user_id,
        });
        // Serialising a json! value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &line);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_json_line() {
        let mut out = Vec::new();
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
            request_id: "abc",
            method: "GET",
            route: "/api/sample/{id}",
            status: 404,
            bytes: 12,
            duration: Duration::from_micros(250),
            client: "10.0.0.1".parse().expect("ip"),
            user_id: Some(7),
        }
        .format(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["time"], "1970-01-01T00:00:01.5Z");
        assert_eq!(v["route"], "/api/sample/{id}");
        assert_eq!(v["status"], 404);
        assert_eq!(v["duration_us"], 250);
        assert_eq!(v["client_ip"], "10.0.0.1");
        assert_eq!(v["user_id"], 7);
    }
}
