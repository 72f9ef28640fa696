//! Glob patterns over server, tool and model names: `*` any run of characters, `?` one character.

/// A glob compiled once, at policy load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Glob {
    Any,
    Exact(String),
    Pattern(Vec<char>),
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        if pattern == "*" {
            Glob::Any
        } else if pattern.contains(['*', '?']) {
            Glob::Pattern(pattern.chars().collect())
        } else {
            Glob::Exact(pattern.to_owned())
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Exact(s) => s == text,
            Glob::Pattern(p) => wildcard_match(p, text),
        }
    }

    pub fn is_any(&self) -> bool {
        matches!(self, Glob::Any)
    }
}

/// Iterative matcher with single-star backtracking: linear in practice, never exponential.
fn wildcard_match(pattern: &[char], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some('?') => {
                p += 1;
                t += 1;
            }
            Some(c) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Glob;

    #[test]
    fn globs() {
        let cases = [
            ("*", "anything", true),
            ("*", "", true),
            ("delete_*", "delete_repo", true),
            ("delete_*", "delete_", true),
            ("delete_*", "undelete_repo", false),
            ("*_prod", "deploy_prod", true),
            ("*_prod", "deploy_production", false),
            ("read_?ile", "read_file", true),
            ("read_?ile", "read_fle", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("ünï*", "ünïcode", true),
            ("?", "é", true),
            ("**", "x", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(Glob::new(pattern).matches(text), want, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let pattern = "*a*a*a*a*a*a*a*a*b";
        let text = "a".repeat(5000);
        let started = std::time::Instant::now();
        assert!(!Glob::new(pattern).matches(&text));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
