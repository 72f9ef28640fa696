//! Kubernetes' own rules for names that end up as file paths: a Secret's name (a DNS-1123
//! subdomain) and a key of its data. The sidecar reads `<dir>/<secret>/<key>`, so anything else
//! (`..`, `/etc/passwd`) must never reach the filesystem.

/// A DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253, each label starting
/// and ending alphanumeric.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b.first().is_some_and(u8::is_ascii_alphanumeric)
                && b.last().is_some_and(u8::is_ascii_alphanumeric)
        })
}

/// A Secret (or ConfigMap) data key: `[-._a-zA-Z0-9]+`, at most 253, and not `.`, `..` or
/// starting with `..`.
pub fn is_secret_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')) && s != "." && !s.starts_with("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_paths_are_refused() {
        for ok in ["token", "github-token", "a.b-c", "x1"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in ["", "..", ".", "../etc", "/etc", "a/b", "A", "-a", "a-", "a..b", "a_b", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(bad), "{bad:?}");
        }
        for ok in ["token", ".dockerconfigjson", "tls.crt", "API_KEY", "a..b"] {
            assert!(is_secret_key(ok), "{ok}");
        }
        for bad in ["", ".", "..", "..data", "../token", "a/b", "/etc/passwd", "a b", "ключ"] {
            assert!(!is_secret_key(bad), "{bad:?}");
        }
    }
}
