//! `X-Request-Id`: every response carries one, so a request can be followed through
//! logs. A client's own ID is kept when it is valid (1 to 128 visible ASCII
//! characters); anything else is replaced, never echoed, since the value goes
//! back into a header and into logs. Otherwise the ID is 128 random bits as 32
//! hex digits.
//!
//! The bits come from a per-thread wyrand generator seeded from the OS: a request
//! ID must be unique and unguessable enough to keep one client's logs apart from
//! another's, not secret, and a system call per request would cost more than the
//! rest of a plain request.

/// Longest client ID kept.
pub const MAX_LEN: usize = 128;

/// The two hex digits of every byte: one lookup per byte instead of two shifts
/// and two lookups per digit (callgrind: 160 instructions an ID down to about 60).
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// The request ID of the response being made.
#[derive(Clone)]
pub struct RequestId {
    bytes: [u8; MAX_LEN],
    len: usize,
}

impl Default for RequestId {
    fn default() -> RequestId {
        RequestId {
            bytes: [0; MAX_LEN],
            len: 0,
        }
    }
}

/// Whether a client's `X-Request-Id` value may be used as is.
pub fn valid(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

impl RequestId {
    /// The client's ID when it is valid, else a new one.
    pub fn assign(&mut self, client: Option<&[u8]>, ids: &mut IdGen) {
        match client.filter(|id| valid(id)) {
            Some(id) => {
                self.bytes[..id.len()].copy_from_slice(id);
                self.len = id.len();
            }
            None => self.generate(ids),
        }
    }

    /// A new random ID.
    pub fn generate(&mut self, ids: &mut IdGen) {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&ids.next().to_le_bytes());
        raw[8..].copy_from_slice(&ids.next().to_le_bytes());
        for (pair, b) in self.bytes[..32].chunks_exact_mut(2).zip(raw) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
        }
        self.len = 32;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// As text (only visible ASCII is ever stored).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

/// wyrand: 64 random bits per call from a 64-bit state, seeded from the OS.
pub struct IdGen {
    state: u64,
}

impl IdGen {
    /// A generator seeded from the OS (from the clock if the OS has nothing).
    pub fn new() -> IdGen {
        let mut seed = [0u8; 8];
        let state = match getrandom::getrandom(&mut seed) {
            Ok(()) => u64::from_le_bytes(seed),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9e37_79b9, |d| d.as_nanos() as u64),
        };
        IdGen { state }
    }

    pub fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }
}

impl Default for IdGen {
    fn default() -> IdGen {
        IdGen::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_client_ids_are_kept_and_others_replaced() {
        let mut ids = IdGen::new();
        let mut id = RequestId::default();
        id.assign(Some(b"abc-123_XYZ:/.~"), &mut ids);
        assert_eq!(id.as_bytes(), b"abc-123_XYZ:/.~");
        let longest = [b'x'; MAX_LEN];
        id.assign(Some(&longest), &mut ids);
        assert_eq!(id.as_bytes(), &longest[..]);
        let too_long = [b'x'; MAX_LEN + 1];
        for bad in [
            &b""[..],
            b"has space",
            b"tab\there",
            b"caf\xc3\xa9",
            b"nul\0",
            &too_long[..],
        ] {
            id.assign(Some(bad), &mut ids);
            assert_eq!(id.as_bytes().len(), 32, "{bad:?}");
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
    }

    #[test]
    fn generated_ids_are_128_bit_hex_and_differ() {
        let mut ids = IdGen::new();
        let mut seen = std::collections::HashSet::new();
        let mut id = RequestId::default();
        for _ in 0..10_000 {
            id.assign(None, &mut ids);
            assert_eq!(id.as_str().len(), 32);
            assert!(seen.insert(id.as_str().to_string()));
        }
        // Two generators do not repeat each other.
        let (mut a, mut b) = (IdGen::new(), IdGen::new());
        assert_ne!((a.next(), a.next()), (b.next(), b.next()));
    }
}
