//! What goes on a span from an untrusted source (docs/design.md §3.8). A tool name, a model name,
//! a JSON-RPC id or a session header is the agent's to choose: on a span it is bounded and made
//! inert, so a megabyte name or a control character cannot bloat every exported span or break the
//! tools that display it.

use std::borrow::Cow;

/// The longest attribute value taken from what an agent sent, in bytes.
pub const MAX_ATTRIBUTE: usize = 256;

/// `value` as a span may carry it: at most [`MAX_ATTRIBUTE`] bytes (cut at a character boundary,
/// marked with `…`), control characters (NUL included) replaced by U+FFFD.
pub fn attribute(value: &str) -> Cow<'_, str> {
    let clean = !value.chars().any(char::is_control);
    if clean && value.len() <= MAX_ATTRIBUTE {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(MAX_ATTRIBUTE + 3);
    for c in value.chars() {
        let c = if c.is_control() { '\u{fffd}' } else { c };
        if out.len() + c.len_utf8() > MAX_ATTRIBUTE {
            out.push('…');
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_short_values_are_kept_as_they_are() {
        assert!(matches!(attribute("get_weather"), Cow::Borrowed("get_weather")));
    }

    #[test]
    fn control_characters_are_made_inert() {
        assert_eq!(attribute("a\0b\x1b[31mc\n"), "a\u{fffd}b\u{fffd}[31mc\u{fffd}");
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(1 << 20);
        let cut = attribute(&long);
        assert!(cut.len() <= MAX_ATTRIBUTE + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.ends_with('…') && cut.trim_end_matches('…').chars().all(|c| c == 'é'));
    }
}
