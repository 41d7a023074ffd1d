//! The `Date` header value, formatted at most once a second per worker.
//!
//! Each worker owns one [`DateCache`]; nothing is shared and nothing allocates: the
//! value is rendered into a fixed 29-byte array (IMF-fixdate is always 29 bytes).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

pub struct DateCache {
    secs: u64,
    value: [u8; DATE_LEN],
}

impl Default for DateCache {
    fn default() -> Self {
        let mut cache = DateCache {
            secs: u64::MAX,
            value: [b' '; DATE_LEN],
        };
        cache.refresh(SystemTime::now());
        cache
    }
}

impl DateCache {
    /// The current date, re-rendered when the second has changed.
    pub fn now(&mut self) -> &[u8; DATE_LEN] {
        self.refresh(SystemTime::now());
        &self.value
    }

    fn refresh(&mut self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if secs == self.secs {
            return;
        }
        let mut cursor = &mut self.value[..];
        // Writing 29 bytes into a 29-byte slice cannot fail.
        let _ = write!(cursor, "{}", httpdate::HttpDate::from(now));
        self.secs = secs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_imf_fixdate() {
        let mut c = DateCache::default();
        c.refresh(UNIX_EPOCH + Duration::from_secs(784_111_777));
        assert_eq!(&c.value, b"Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
