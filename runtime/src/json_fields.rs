//! A span's fields for the JSON log lines, written as a JSON object and added to without being
//! read again. tracing-subscriber's own `JsonFields` parses a span's fields back into a map and
//! writes them anew each time one is recorded after the span began: in the gateway that was two
//! parses and two writes per model call, about 4 % of its CPU. Here a recorded field is appended
//! before the closing brace; a field recorded twice appears twice, and the reader of the line
//! (the JSON formatter, which parses the object) keeps the last, as `JsonFields` does.

use std::fmt::{self, Write};
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// The fields formatter of the JSON log layer (`telemetry::init`).
#[derive(Debug, Default, Clone, Copy)]
pub struct AppendedJsonFields;

impl<'writer> FormatFields<'writer> for AppendedJsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        writer.write_char('{')?;
        let mut v = Members { out: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut v);
        v.result?;
        writer.write_char('}')
    }

    fn add_fields(&self, current: &'writer mut tracing_subscriber::fmt::FormattedFields<Self>, fields: &tracing::span::Record<'_>) -> fmt::Result {
        if !current.fields.ends_with('}') {
            current.fields.clear();
            return self.format_fields(current.as_writer(), fields);
        }
        current.fields.pop();
        let first = current.fields.ends_with('{');
        let mut writer = current.as_writer();
        let mut v = Members { out: &mut writer, first, result: Ok(()) };
        fields.record(&mut v);
        v.result?;
        current.fields.push('}');
        Ok(())
    }
}

/// Writes each field as a `"name":value` member of an object already opened.
struct Members<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Members<'_, '_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        self.named(field.name(), value);
    }

    fn named(&mut self, name: &str, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.out.write_char(',')?;
            }
            write_str(self.out, name)?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl Visit for Members<'_, '_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: `null`, as serde_json writes them.
        self.member(field, |w| if value.is_finite() { write!(w, "{value:?}") } else { w.write_str("null") });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| write_str(w, value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        // As serde_json writes bytes: an array of numbers.
        self.member(field, |w| {
            w.write_char('[')?;
            for (i, b) in value.iter().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                write!(w, "{b}")?;
            }
            w.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // As `JsonFields`: the `log` crate's own fields are not the span's, and a raw
        // identifier is named without its prefix.
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        self.named(name.strip_prefix("r#").unwrap_or(name), |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

fn write_str(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given as the inside of a JSON string, escaped as serde_json escapes it.
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The span fields of the one line logged, with `fields` as the layer's fields formatter.
    fn logged<N>(fields: N) -> serde_json::Value
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let lines = Lines::default();
        let out = lines.clone();
        let layer = tracing_subscriber::fmt::layer().json().fmt_fields(fields).with_writer(move || out.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let odd = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \0 é 🦀";
            let span = tracing::info_span!("call", bytes = &b"\x00\xff"[..], api = ?"Open\"Ai", n = 3_u64, neg = -2_i64, ok = true, r#type = "raw", x = 1.5_f64, nan = f64::NAN, agent = tracing::field::Empty, model = tracing::field::Empty);
            span.record("agent", "ns/\"a\"");
            span.record("model", odd);
            span.record("n", 4_u64);
            let _g = span.enter();
            tracing::info!("inside");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        line["span"].clone()
    }

    #[test]
    fn a_span_logs_as_tracing_subscribers_own_json_fields_would() {
        let ours = logged(AppendedJsonFields);
        assert_eq!(ours, logged(tracing_subscriber::fmt::format::JsonFields::new()));
        assert_eq!(ours["n"], 4, "a field recorded again says its last value");
        assert_eq!(ours["agent"], "ns/\"a\"");
        assert!(ours["model"].as_str().is_some_and(|m| m.contains('\0') && m.ends_with('🦀')));
    }
}
