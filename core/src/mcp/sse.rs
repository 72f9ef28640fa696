//! Server-sent events as MCP's Streamable HTTP uses them: a parser that keeps each event's text
//! exactly (ids for resumption included) so events the firewall does not touch pass unchanged.

/// One event: its raw text (without the blank line that ends it) and its joined `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub raw: String,
    pub data: String,
}

/// Splits complete events off the front of `buf`, leaving a partial event in it. Linear in the
/// input: each byte is scanned for an event's end once, and the buffer is compacted once per
/// push, not once per event (2 MiB of tiny events used to take seconds).
#[derive(Debug, Default)]
pub struct Parser {
    buf: String,
    /// Where the search for the current event's end resumes: everything before it was scanned.
    scanned: usize,
    /// Bytes of a UTF-8 character split across chunks, kept for the next chunk.
    partial: Vec<u8>,
}

/// An event larger than this is refused rather than buffered without bound.
pub const MAX_EVENT: usize = 16 << 20;

impl Parser {
    pub fn push(&mut self, chunk: &str) -> Result<Vec<Event>, String> {
        self.buf.push_str(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        // A terminator may straddle the previous chunk's end: back up by its longest length - 1.
        let mut from = self.scanned.saturating_sub(3).max(start);
        while let Some((end, sep)) = find_event_end(&self.buf, from) {
            let raw = &self.buf[start..end];
            let data = raw.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect::<Vec<_>>().join("\n");
            events.push(Event { raw: raw.to_owned(), data });
            start = end + sep;
            from = start;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_EVENT {
            return Err(format!("an event exceeds {MAX_EVENT} bytes"));
        }
        Ok(events)
    }
}

impl Parser {
    /// As [`Parser::push`], for a stream's raw chunks, which may split a character in two.
    pub fn push_bytes(&mut self, chunk: &[u8]) -> Result<Vec<Event>, String> {
        let joined;
        let bytes = if self.partial.is_empty() {
            chunk
        } else {
            self.partial.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.partial);
            &joined[..]
        };
        let valid = match std::str::from_utf8(bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => return Err("the event stream is not valid UTF-8".into()),
        };
        let (text, rest) = bytes.split_at(valid);
        let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
        let events = self.push(text)?;
        self.partial = rest.to_vec();
        Ok(events)
    }
}

/// The first blank line at or after `from`: its position and length (`\n\n`, `\r\n\r\n`, `\r\r`).
fn find_event_end(buf: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = buf.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        // Only line ends can start a terminator; skip to the next one.
        let off = bytes[i..].iter().position(|b| *b == b'\n' || *b == b'\r')?;
        i += off;
        let rest = &bytes[i..];
        if rest.starts_with(b"\n\n") || rest.starts_with(b"\r\r") {
            return Some((i, 2));
        }
        if rest.starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
        i += 1;
    }
    None
}

/// An event whose `data` is `json`, keeping the original's other fields (id, event) in order.
pub fn replace_data(event: &Event, json: &str) -> String {
    let mut out = String::new();
    let mut wrote = false;
    for line in event.raw.lines() {
        if line.starts_with("data:") {
            if !wrote {
                out.push_str("data: ");
                out.push_str(json);
                out.push('\n');
                wrote = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !wrote {
        out.push_str("data: ");
        out.push_str(json);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// A new event carrying one JSON-RPC message.
pub fn message_event(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 24);
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_chunks() {
        let mut p = Parser::default();
        assert!(p.push("id: 1\nevent: message\ndata: {\"a\"").unwrap().is_empty());
        let evs = p.push(":1}\n\nid: 2\ndata: x\ndata: y\n\n: comment").unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].data, "{\"a\":1}");
        assert_eq!(evs[0].raw, "id: 1\nevent: message\ndata: {\"a\":1}");
        assert_eq!(evs[1].data, "x\ny");
        let evs = p.push("\n\n").unwrap();
        assert_eq!(evs[0].data, "");
    }

    #[test]
    fn chunks_may_split_a_character() {
        let text = "data: {\"t\":\"é😀\"}\n\n".as_bytes();
        for cut in 0..text.len() {
            let mut p = Parser::default();
            let mut events = p.push_bytes(&text[..cut]).unwrap();
            events.extend(p.push_bytes(&text[cut..]).unwrap());
            assert_eq!(events.len(), 1, "cut at {cut}");
            assert_eq!(events[0].data, "{\"t\":\"é😀\"}");
        }
        assert!(Parser::default().push_bytes(b"data: \xff\xfe\n\n").is_err());
    }

    #[test]
    fn crlf() {
        let mut p = Parser::default();
        let evs = p.push("data: a\r\n\r\ndata: b\n\n").unwrap();
        assert_eq!(evs.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn replace_keeps_id() {
        let e = Event { raw: "id: 42\nevent: message\ndata: {}".into(), data: "{}".into() };
        assert_eq!(replace_data(&e, "{\"x\":1}"), "id: 42\nevent: message\ndata: {\"x\":1}\n\n");
    }

    #[test]
    fn many_small_events_parse_in_linear_time() {
        let one = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\n";
        let text = one.repeat((2 << 20) / one.len());
        let started = std::time::Instant::now();
        let mut p = Parser::default();
        let mut n = p.push(&text).unwrap().len();
        // And byte by byte through a terminator split across chunks.
        for c in ["data: a\r", "\n", "\r", "\n"] {
            n += p.push(c).unwrap().len();
        }
        assert_eq!(n, text.len() / one.len() + 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    }

    #[test]
    fn unbounded_event_is_refused() {
        let mut p = Parser::default();
        assert!(p.push(&"x".repeat(MAX_EVENT + 1)).is_err());
    }
}
