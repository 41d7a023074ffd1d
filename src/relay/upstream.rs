//! The upstream HTTP client: ureq (blocking, keep-alive pool) configured so that
//! it never follows a redirect, never adds `Accept-Encoding` or its own
//! `User-Agent`, reports every status as a response (a 404 is relayed, not an
//! error), bounds the body, and gives up when the request's time is up (what is
//! left of `--relay-timeout` for the miss it serves).
//!
//! Only the relay's fetch threads call it, so at most `--relay-connections`
//! requests are in flight and at most that many idle connections are pooled.

use super::entry::Received;
use std::time::Duration;

/// Why the upstream gave no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// No connection, a reset, or a response that is not HTTP: 502.
    Unreachable(String),
    /// No complete response within the timeout: 504.
    Timeout,
    /// The body is larger than the relay keeps: 502.
    TooLarge,
    /// No request could be made of the target (the client refused the URL):
    /// nothing reached the upstream, so its breaker is not told. 502.
    Unsendable(String),
}

pub struct Upstream {
    agent: ureq::Agent,
    /// `scheme://authority/base-path` without a trailing slash.
    base: String,
    max_body: u64,
}

impl Upstream {
    pub fn new(base: &str, timeout: Duration, connections: usize, max_body: u64) -> Upstream {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(ureq::config::AutoHeaderValue::None)
            .accept(ureq::config::AutoHeaderValue::None)
            .accept_encoding(ureq::config::AutoHeaderValue::None)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout))
            .max_idle_connections(connections)
            .max_idle_connections_per_host(connections)
            .no_delay(true)
            .build();
        Upstream {
            agent: config.into(),
            base: base.trim_end_matches('/').to_string(),
            max_body,
        }
    }

    /// The URL a relay target (path and query after `/relay`) stands for.
    pub fn url(&self, target: &str) -> String {
        format!("{}{}", self.base, target)
    }

    /// GETs `target` (conditionally, when validators are given), carrying the
    /// request's ID and a `Via` field; gives up after `timeout` (connecting
    /// included).
    pub fn get(
        &self,
        target: &str,
        etag: Option<&str>,
        last_modified: Option<&str>,
        request_id: &str,
        via: &str,
        timeout: Duration,
    ) -> Result<Received, UpstreamError> {
        let mut request = self
            .agent
            .get(self.url(target))
            .config()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout))
            .build()
            .header("Via", via);
        if !request_id.is_empty() {
            request = request.header("X-Request-Id", request_id);
        }
        if let Some(etag) = etag {
            request = request.header("If-None-Match", etag);
        }
        if let Some(lm) = last_modified {
            request = request.header("If-Modified-Since", lm);
        }
        let mut response = request.call().map_err(classify)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(self.max_body)
            .read_to_vec()
            .map_err(classify)?;
        Ok(Received {
            status,
            headers,
            body,
        })
    }
}

fn classify(e: ureq::Error) -> UpstreamError {
    match e {
        ureq::Error::Timeout(_) => UpstreamError::Timeout,
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            UpstreamError::Timeout
        }
        ureq::Error::BodyExceedsLimit(_) => UpstreamError::TooLarge,
        e @ (ureq::Error::Http(_) | ureq::Error::BadUri(_)) => UpstreamError::Unsendable(e.to_string()),
        other => UpstreamError::Unreachable(other.to_string()),
    }
}
