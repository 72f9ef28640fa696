//! JSON strings as text: where a string's run of bytes that need no escape ends, and a string
//! written as serde_json writes it. Shared by the scanner that reads bodies
//! ([`crate::mcp::scan`]), the arguments' canonical form ([`crate::mcp::digest`]) and the audit
//! line ([`crate::audit::line`]), so each finds and writes escapes the one way.

/// Where the run of bytes from `i` that a string holds as they are ends: at a `"`, a `\`, a
/// control character or the end. Eight bytes at a time while none of them is one.
pub fn plain_run(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let found = (quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash) | (w.wrapping_sub(ONES * 0x20) & !w);
        if found & HIGH != 0 {
            break;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// `s` as a JSON string, as serde_json escapes it: `"` and `\` with a backslash, the control
/// characters below U+0020 by their short escape or `\u00XX` in lower-case hex, everything else
/// as it is.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let end = plain_run(bytes, start);
        out.extend_from_slice(&bytes[start..end]);
        let Some(&b) = bytes.get(end) else { break };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]),
        }
        start = end + 1;
    }
    out.push(b'"');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_as_serde_json_does() {
        let long = "a run longer than eight bytes \u{1}, then \"quoted\" and ü€😀 and \\ and \u{7f}\u{80}";
        for s in ["", "plain", "q\"b\\", "\u{0}\u{1}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1f}\u{7f}", "ü€😀", "</script>\u{2028}", long, "\u{1f}", "12345678\""]
        {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn every_byte_value_escapes_as_serde_json_does() {
        // Each byte value at each position in a word, so a fault in the eight-at-a-time test shows.
        for b in 0u8..0x80 {
            for at in 0..10 {
                let mut s = "x".repeat(10);
                s.replace_range(at..=at, &char::from(b).to_string());
                let mut out = Vec::new();
                write_str(&mut out, &s);
                assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap(), "byte {b:#x} at {at}");
            }
        }
    }
}
