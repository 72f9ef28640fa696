//! A JSON reader that knows where it is: each value it reads, it can give back as the text it
//! spans as well as what it says. serde_json gives a value's text (`RawValue`, by skipping it) or
//! its parts, never both in one reading, so a body's envelope, `params` and arguments cost it a
//! reading each besides the strict check's; with this the check reads the body once
//! (docs/design.md §3.2).
//!
//! It accepts what `serde_json::from_slice` accepts and nothing more (`core/tests/parsers.rs`
//! holds the two to that): the same escapes, unpaired surrogates refused, control characters
//! refused in strings, numbers out of `f64`'s range refused, at most 127 levels of nesting.

use crate::json_text::plain_run;
use serde_json::{Number, Value};
use std::borrow::Cow;

/// serde_json's nesting limit: 128 levels are refused there, so here.
const MAX_DEPTH: u32 = 127;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at line {line} column {column}")]
pub struct SyntaxError {
    pub what: &'static str,
    pub line: usize,
    pub column: usize,
}

impl SyntaxError {
    /// An error at byte `at` of `text`, placed as an editor would (lines and columns from 1).
    pub fn at(what: &'static str, text: &[u8], at: usize) -> SyntaxError {
        let before = &text[..at.min(text.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        SyntaxError { what, line, column }
    }
}

/// Reads one JSON text from the start; the caller walks it value by value.
pub struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    depth: u32,
}

type Result<T> = std::result::Result<T, SyntaxError>;

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Scanner<'a> {
        Scanner { text, pos: 0, depth: 0 }
    }

    pub(crate) fn error(&self, what: &'static str) -> SyntaxError {
        SyntaxError::at(what, self.text.as_bytes(), self.pos)
    }

    fn skip_whitespace(&mut self) {
        let bytes = self.text.as_bytes();
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The first byte of the next value, whitespace skipped: where it starts is [`Scanner::offset`].
    pub fn peek(&mut self) -> Result<u8> {
        self.skip_whitespace();
        self.text.as_bytes().get(self.pos).copied().ok_or_else(|| self.error("EOF while parsing a value"))
    }

    /// Where the reader is: before a value once [`Scanner::peek`] has found it, after it once read.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// The text from `start` (an [`Scanner::offset`]) to where the reader is.
    pub fn since(&self, start: usize) -> &'a str {
        // Both ends sit next to JSON's ASCII punctuation or at the ends of the text.
        self.text.get(start..self.pos).unwrap_or_default()
    }

    /// Only whitespace may follow the value read.
    pub fn end(&mut self) -> Result<()> {
        self.skip_whitespace();
        if self.pos == self.text.len() { Ok(()) } else { Err(self.error("trailing characters")) }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        self.pos += 1;
        Ok(())
    }

    /// Reads an object (the reader before its `{`), handing `member` each key with the reader
    /// before its value, which `member` must read.
    pub fn object<E: From<SyntaxError>>(
        &mut self,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.enter()?;
        if self.peek()? == b'}' {
            self.leave();
            return Ok(());
        }
        loop {
            if self.peek()? != b'"' {
                return Err(self.error("key must be a string").into());
            }
            let key = self.string()?;
            if self.peek()? != b':' {
                return Err(self.error("expected `:`").into());
            }
            self.pos += 1;
            member(self, key)?;
            match self.peek() {
                Ok(b',') => self.pos += 1,
                Ok(b'}') => {
                    self.leave();
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `}`").into()),
            }
        }
    }

    /// Reads an array (the reader before its `[`), `element` reading each element.
    pub fn array<E: From<SyntaxError>>(&mut self, mut element: impl FnMut(&mut Self) -> std::result::Result<(), E>) -> std::result::Result<(), E> {
        self.enter()?;
        if self.peek()? == b']' {
            self.leave();
            return Ok(());
        }
        loop {
            element(self)?;
            match self.peek() {
                Ok(b',') => self.pos += 1,
                Ok(b']') => {
                    self.leave();
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `]`").into()),
            }
        }
    }

    fn leave(&mut self) {
        self.depth -= 1;
        self.pos += 1;
    }

    /// A string, number, `true`, `false` or `null` (the reader before it), as serde_json reads it.
    pub fn scalar(&mut self) -> Result<Value> {
        match self.peek()? {
            b'"' => Ok(Value::String(self.string()?.into_owned())),
            b'-' | b'0'..=b'9' => self.number(),
            _ => self.literal(),
        }
    }

    /// A scalar checked as [`Scanner::scalar`] reads it, its value not made (a string's not copied).
    pub fn check_scalar(&mut self) -> Result<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => self.literal().map(drop),
        }
    }

    fn literal(&mut self) -> Result<Value> {
        let rest = &self.text.as_bytes()[self.pos..];
        let (value, len) = if rest.starts_with(b"null") {
            (Value::Null, 4)
        } else if rest.starts_with(b"true") {
            (Value::Bool(true), 4)
        } else if rest.starts_with(b"false") {
            (Value::Bool(false), 5)
        } else {
            return Err(self.error("expected value"));
        };
        self.pos += len;
        Ok(value)
    }

    /// A number. Integers that fit are read here; the rest (fractions, exponents, `-0`, past 64
    /// bits) by serde_json from their text, so each is the same `Number` and the same refusal.
    fn number(&mut self) -> Result<Value> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let negative = bytes[start] == b'-';
        let digits = start + usize::from(negative);
        let mut end = digits;
        while bytes.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        let integer = &bytes[digits..end];
        let mut simple = !integer.is_empty() && (integer[0] != b'0' || integer.len() == 1);
        if matches!(bytes.get(end), Some(b'.' | b'e' | b'E')) {
            simple = false;
            end += 1;
            while bytes.get(end).is_some_and(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) {
                end += 1;
            }
        }
        self.pos = end;
        if simple && integer.len() <= 18 {
            let n = integer.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
            match (negative, n) {
                (false, n) => return Ok(Value::Number(Number::from(n))),
                (true, n) if n != 0 => return Ok(Value::Number(Number::from(-n))),
                _ => {}
            }
        }
        self.pos = start;
        let value = serde_json::from_str::<Value>(&self.text[start..end])
            .map_err(|e| self.error(if e.is_syntax() { "invalid number" } else { "number out of range" }))?;
        self.pos = end;
        Ok(value)
    }

    /// A string (the reader before its `"`): borrowed from the text unless it has escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        let bytes = self.text.as_bytes();
        let start = self.pos + 1;
        let i = plain_run(bytes, start);
        if bytes.get(i) != Some(&b'"') {
            return self.escaped(start, i).map(Cow::Owned);
        }
        self.pos = i + 1;
        Ok(Cow::Borrowed(&self.text[start..i]))
    }

    /// The rest of a string from `i`, where its plain run ends (at an escape, or at what ends it
    /// or makes it invalid), decoded.
    fn escaped(&mut self, start: usize, mut i: usize) -> Result<String> {
        let bytes = self.text.as_bytes();
        let mut out = String::with_capacity(i - start + 16);
        let mut run = start;
        loop {
            match bytes.get(i) {
                Some(b'"') => {
                    out.push_str(&self.text[run..i]);
                    self.pos = i + 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(&self.text[run..i]);
                    self.pos = i + 1;
                    out.push(self.escape()?);
                    i = self.pos;
                    run = i;
                }
                Some(_) => {
                    self.pos = i;
                    return Err(self.error("control character (\\u0000-\\u001F) found while parsing a string"));
                }
                None => {
                    self.pos = i;
                    return Err(self.error("EOF while parsing a string"));
                }
            }
            i = plain_run(bytes, i);
        }
    }

    /// One escape, the reader past its `\`.
    fn escape(&mut self) -> Result<char> {
        let bytes = self.text.as_bytes();
        let Some(&b) = bytes.get(self.pos) else { return Err(self.error("EOF while parsing a string")) };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(),
            _ => return Err(self.error("invalid escape")),
        };
        Ok(c)
    }

    /// `\uXXXX`, the reader past its `u`: a surrogate must come paired, as serde_json requires of
    /// a string.
    fn unicode_escape(&mut self) -> Result<char> {
        let high = self.hex4()?;
        let code = match high {
            0xDC00..=0xDFFF => return Err(self.error("lone leading surrogate in hex escape")),
            0xD800..=0xDBFF => {
                if !self.text.as_bytes()[self.pos..].starts_with(b"\\u") {
                    return Err(self.error("unexpected end of hex escape"));
                }
                self.pos += 2;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(self.error("lone leading surrogate in hex escape"));
                }
                0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
            }
            n => u32::from(n),
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid unicode code point"))
    }

    fn hex4(&mut self) -> Result<u16> {
        let bytes = self.text.as_bytes();
        let mut n = 0u16;
        for _ in 0..4 {
            let Some(&b) = bytes.get(self.pos) else { return Err(self.error("EOF while parsing a string")) };
            let digit = (b as char).to_digit(16).ok_or_else(|| self.error("invalid escape"))?;
            n = n * 16 + digit as u16;
            self.pos += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A whole value, as the strict check reads arguments.
    fn value(s: &mut Scanner<'_>) -> Result<Value> {
        match s.peek()? {
            b'{' => {
                let mut map = serde_json::Map::new();
                s.object(|s, k| value(s).map(|v| drop(map.insert(k.into_owned(), v))))?;
                Ok(Value::Object(map))
            }
            b'[' => {
                let mut items = Vec::new();
                s.array(|s| value(s).map(|v| items.push(v)))?;
                Ok(Value::Array(items))
            }
            _ => s.scalar(),
        }
    }

    fn read(text: &str) -> Result<Value> {
        let mut s = Scanner::new(text);
        let v = value(&mut s)?;
        s.end().map(|()| v)
    }

    #[test]
    fn reads_what_serde_reads() {
        for text in [
            r#"{"a":[1,-2,3.5,-0,1e2,18446744073709551615,18446744073709551616,-9223372036854775808,123456789012345678,-123456789012345678]}"#,
            r#" { "s" : "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00 é" , "t":true,"f":false,"n":null, "e":{}, "l":[] } "#,
            "\"a long string, longer than eight bytes, with no escape in it at all\"",
            "0",
            "-1",
        ] {
            assert_eq!(read(text).unwrap(), serde_json::from_str::<Value>(text).unwrap(), "{text}");
        }
    }

    #[test]
    fn refuses_what_serde_refuses() {
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "-",
            "1e400",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "\"a\u{1}\"",
            "\"\\x\"",
            "nul",
            "[1 2]",
            "{\"a\" 1}",
            "{1:2}",
            "1 2",
            "\"abc",
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err(), "serde accepts {text:?}");
            assert!(read(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn nesting_stops_where_serde_stops() {
        for depth in [126, 127, 128, 129] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(read(&text).is_ok(), serde_json::from_str::<Value>(&text).is_ok(), "{depth}");
        }
    }

    #[test]
    fn spans_are_the_values_text() {
        let text = r#"{"id": 7 , "params": {"x": [1, "2"]}}"#;
        let mut s = Scanner::new(text);
        let mut spans = Vec::new();
        s.object(|s, key| {
            s.peek()?;
            let start = s.offset();
            value(s)?;
            spans.push((key.into_owned(), s.since(start).to_owned()));
            Ok::<(), SyntaxError>(())
        })
        .unwrap();
        assert_eq!(spans, [("id".to_owned(), "7".to_owned()), ("params".to_owned(), r#"{"x": [1, "2"]}"#.to_owned())]);
    }

    #[test]
    fn errors_say_where() {
        let e = read("{\n  \"a\": tru\n}").unwrap_err();
        assert_eq!((e.what, e.line, e.column), ("expected value", 2, 8));
    }
}
