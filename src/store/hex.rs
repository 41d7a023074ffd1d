//! Hexadecimal text of byte strings: how content addresses (MD5s), temp-file names
//! and API tokens are written. Lowercase out, either case in; nothing else.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Decodes exactly `out.len() * 2` hex digits (either case) into `out`; `None` for
/// any other length or a non-hex byte.
pub(crate) fn decode_hex(hex: &[u8], out: &mut [u8]) -> Option<()> {
    if hex.len() != out.len() * 2 {
        return None;
    }
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(())
}

/// The two lowercase hex digits of `b`.
pub(crate) fn hex_pair(b: u8) -> [u8; 2] {
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]
}

/// Lowercase hex of `bytes`.
pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|&b| hex_pair(b)).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let bytes = [0x00, 0x9f, 0xa0, 0xff];
        assert_eq!(encode_hex(&bytes), "009fa0ff");
        let mut out = [0u8; 4];
        assert_eq!(decode_hex(b"009FA0ff", &mut out), Some(()));
        assert_eq!(out, bytes);
        assert_eq!(decode_hex(b"009fa0f", &mut out), None, "odd length");
        assert_eq!(decode_hex(b"009fa0fg", &mut out), None, "not hex");
    }
}
