//! Who may talk to `kubectl approve ui`'s server (docs/design.md §3.3; the server is
//! `cli/src/approve/ui/`): the pure rule, so every case is a unit test. The server is on
//! loopback, but loopback is shared with every other program and every web page the person's
//! browser has open, so it trusts nothing it did not hand out itself:
//! - `Host` must be the server's own name and port: a random `<hex>.localhost` (browsers send
//!   every `*.localhost` to loopback), so that its cookie, which browsers scope by host and not
//!   by port, is sent nowhere else — not to another program's port on 127.0.0.1 — and a
//!   DNS-rebound name, which carries its own name in `Host`, is refused;
//! - a request that comes from a page (`Origin`, `Sec-Fetch-Site`) must come from this server's
//!   own origin; other ports of 127.0.0.1 are other origins (though the same *site*, which is why
//!   `SameSite` cookies alone would not do);
//! - the credential is a session cookie, got once by presenting the one-time secret of the URL
//!   the command printed; the secret works once, so a URL left in a history or a terminal
//!   scrollback opens nothing later.

use std::fmt;

/// What the server knows about a request, taken from its headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    pub method_is_safe: bool,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
    /// Every value the request carries under this server's cookie name: a page on another
    /// `*.localhost` name can add one of its own (`Domain=localhost`), and if only the first
    /// counted, it could lock the person out of their own page.
    pub cookies: &'a [&'a str],
    /// The `token` query parameter, when present.
    pub token: Option<&'a str>,
}

/// What this server handed out.
#[derive(Debug, Clone, Copy)]
pub struct Secrets<'a> {
    /// The server's own host name (`<random hex>.localhost`).
    pub host: &'a str,
    pub port: u16,
    /// The one-time secret of the printed URL, until it is used.
    pub token: Option<&'a str>,
    pub session: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// The one-time secret, presented for the first time: set the session cookie, send the
    /// browser to the same page without the secret in its address, and forget the secret.
    Exchange,
    Refuse(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Host,
    CrossOrigin,
    SecretUsed,
    NoCredential,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::Host => 421,
            Refusal::CrossOrigin | Refusal::SecretUsed | Refusal::NoCredential => 403,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Host => "this server answers only to the address `kubectl approve ui` printed (unexpected Host header)",
            Refusal::CrossOrigin => "refused: the request came from another web page",
            Refusal::SecretUsed => "this link was already used once; run `kubectl approve ui` again for a new one",
            Refusal::NoCredential => "open the address `kubectl approve ui` printed (it carries a one-time secret)",
        })
    }
}

/// Whether `host` (a `Host` header) is exactly the server's own `name:port`.
pub fn own_host(host: &str, name: &str, port: u16) -> bool {
    let Some((h, p)) = host.rsplit_once(':') else {
        return false;
    };
    p.parse::<u16>().ok() == Some(port) && h.eq_ignore_ascii_case(name)
}

fn own_origin(origin: &str, name: &str, port: u16) -> bool {
    origin.strip_prefix("http://").is_some_and(|host| own_host(host, name, port))
}

/// Compares secrets in time independent of where they first differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request may go on, and how.
pub fn admit(facts: &Facts<'_>, secrets: &Secrets<'_>) -> Admission {
    if !facts.host.is_some_and(|h| own_host(h, secrets.host, secrets.port)) {
        return Admission::Refuse(Refusal::Host);
    }
    // Browsers send Origin on every non-GET request and on cross-origin fetches; a state change
    // without one is not from a browser page at all, so it is refused too.
    match facts.origin {
        Some(o) if !own_origin(o, secrets.host, secrets.port) => return Admission::Refuse(Refusal::CrossOrigin),
        None if !facts.method_is_safe => return Admission::Refuse(Refusal::CrossOrigin),
        _ => {}
    }
    // `none`: typed or opened from outside a browser page; `same-origin`: this server's pages.
    let from_here = facts.sec_fetch_site.is_none_or(|site| site == "same-origin" || site == "none");
    if facts.cookies.iter().any(|c| same_secret(c, secrets.session)) {
        return if from_here { Admission::Allow } else { Admission::Refuse(Refusal::CrossOrigin) };
    }
    // The link itself may come from anywhere (the private file the browser was given redirects
    // to it, a `cross-site` navigation from a `file:` page): the secret is what it proves.
    match (facts.token, secrets.token) {
        (Some(given), Some(token)) if facts.method_is_safe && same_secret(given, token) => Admission::Exchange,
        (Some(_), None) => Admission::Refuse(Refusal::SecretUsed),
        _ if !from_here => Admission::Refuse(Refusal::CrossOrigin),
        _ => Admission::Refuse(Refusal::NoCredential),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRETS: Secrets<'static> = Secrets { host: "a1b2c3.localhost", port: 4711, token: Some("t0k3n"), session: "s3ss10n" };
    const HOST: &str = "a1b2c3.localhost:4711";

    fn get(host: &str) -> Facts<'_> {
        Facts { method_is_safe: true, host: Some(host), ..Facts::default() }
    }

    #[test]
    fn the_printed_url_is_exchanged_once_for_a_cookie() {
        let first = Facts { token: Some("t0k3n"), sec_fetch_site: Some("none"), ..get(HOST) };
        assert_eq!(admit(&first, &SECRETS), Admission::Exchange);
        // Also when the private launcher file redirected to it.
        assert_eq!(admit(&Facts { sec_fetch_site: Some("cross-site"), ..first }, &SECRETS), Admission::Exchange);
        let used = Secrets { token: None, ..SECRETS };
        assert_eq!(admit(&first, &used), Admission::Refuse(Refusal::SecretUsed));
        let wrong = Facts { token: Some("t0k3m"), ..first };
        assert_eq!(admit(&wrong, &SECRETS), Admission::Refuse(Refusal::NoCredential));
        let with_cookie = Facts { cookies: &["s3ss10n"], ..get("A1B2C3.localhost:4711") };
        assert_eq!(admit(&with_cookie, &used), Admission::Allow);
    }

    #[test]
    fn a_cookie_tossed_in_by_a_sibling_name_does_not_shadow_the_session() {
        // Another `*.localhost` page can set `Domain=localhost` cookies of the same name; the
        // browser sends them first when their path is longer.
        let tossed = Facts { cookies: &["evil", "s3ss10n"], ..get(HOST) };
        assert_eq!(admit(&tossed, &SECRETS), Admission::Allow);
    }

    #[test]
    fn nothing_without_a_credential() {
        assert_eq!(admit(&get(HOST), &SECRETS), Admission::Refuse(Refusal::NoCredential));
        let bad_cookie = Facts { cookies: &["s3ss10m"], ..get(HOST) };
        assert_eq!(admit(&bad_cookie, &SECRETS), Admission::Refuse(Refusal::NoCredential));
        // The secret is for opening the page, not for posting decisions.
        let post = Facts { method_is_safe: false, token: Some("t0k3n"), origin: Some("http://a1b2c3.localhost:4711"), ..get(HOST) };
        assert_eq!(admit(&post, &SECRETS), Admission::Refuse(Refusal::NoCredential));
    }

    #[test]
    fn other_hosts_are_refused_even_with_the_cookie() {
        // Loopback by address or by another name is someone else's: the cookie is scoped to the name.
        for host in [
            "127.0.0.1:4711",
            "localhost:4711",
            "other.localhost:4711",
            "a1b2c3.localhost:4712",
            "a1b2c3.localhost",
            "evil.example:4711",
            "a1b2c3.localhost.evil:4711",
            "[::1]:4711",
            "",
        ] {
            let f = Facts { cookies: &["s3ss10n"], ..get(host) };
            assert_eq!(admit(&f, &SECRETS), Admission::Refuse(Refusal::Host), "{host}");
        }
        let none = Facts { host: None, cookies: &["s3ss10n"], ..get("") };
        assert_eq!(admit(&none, &SECRETS), Admission::Refuse(Refusal::Host));
    }

    #[test]
    fn other_pages_cannot_post_or_read() {
        let cookie = Facts { cookies: &["s3ss10n"], ..get(HOST) };
        for origin in ["http://127.0.0.1:4711", "http://a1b2c3.localhost:8080", "http://evil.example", "null", "https://a1b2c3.localhost:4711"] {
            let post = Facts { method_is_safe: false, origin: Some(origin), ..cookie };
            assert_eq!(admit(&post, &SECRETS), Admission::Refuse(Refusal::CrossOrigin), "{origin}");
        }
        let no_origin_post = Facts { method_is_safe: false, ..cookie };
        assert_eq!(admit(&no_origin_post, &SECRETS), Admission::Refuse(Refusal::CrossOrigin));
        for site in ["same-site", "cross-site"] {
            let nav = Facts { sec_fetch_site: Some(site), ..cookie };
            assert_eq!(admit(&nav, &SECRETS), Admission::Refuse(Refusal::CrossOrigin), "{site}");
        }
        let own = Facts { method_is_safe: false, origin: Some("http://a1b2c3.localhost:4711"), sec_fetch_site: Some("same-origin"), ..cookie };
        assert_eq!(admit(&own, &SECRETS), Admission::Allow);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
