//! The page templates (`cli/templates/*.html`, Askama: compiled in, HTML-escaped by default).
//! Nothing here marks a value `safe`: every value a template prints is escaped.

use askama::Template;

use super::history::{self, Filter};
use super::view::{RequestView, Rows, Standing};

/// What every page's frame shows: who is acting and where.
#[derive(Debug, Clone)]
pub struct Shell {
    pub user: String,
    pub scope: String,
    pub note: Option<String>,
}

#[derive(Template)]
#[template(path = "inbox.html")]
pub struct InboxPage<'a> {
    pub shell: &'a Shell,
    pub rows: &'a Rows,
}

#[derive(Template)]
#[template(path = "inbox_rows.html")]
pub struct InboxFragment<'a> {
    pub rows: &'a Rows,
}

/// A message after a decision, shown once.
#[derive(Debug, Clone)]
pub struct Flash {
    /// `ok` or `error`: a CSS class.
    pub kind: &'static str,
    pub text: String,
}

#[derive(Template)]
#[template(path = "request.html")]
pub struct RequestPage<'a> {
    pub shell: &'a Shell,
    pub r: &'a RequestView,
    pub flash: Option<Flash>,
    pub csrf: &'a str,
}

#[derive(Template)]
#[template(path = "request_status.html")]
pub struct RequestFragment<'a> {
    pub r: &'a RequestView,
}

#[derive(Template)]
#[template(path = "history.html")]
pub struct HistoryPage<'a> {
    pub shell: &'a Shell,
    pub filter: &'a Filter,
    pub phases: &'a [PhaseOption],
    pub page: &'a history::Page,
    pub error: Option<String>,
}

/// One choice of the history's phase filter.
#[derive(Debug, Clone, Copy)]
pub struct PhaseOption {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    pub text: &'a str,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::approve::ui::view::{self, Caller};
    use serde_json::json;
    use tollgate_api::ApprovalRequest;

    /// Everything the agent wrote, hostile: the page must show it as text.
    #[test]
    fn what_the_agent_wrote_is_escaped() {
        let spec = json!({
            "agent": "<img src=x onerror=alert(1)>", "serviceAccount": "coder", "server": "github",
            "tool": "<script>alert(1)</script>", "argumentsDigest": format!("sha256:{}", "0".repeat(64)),
            "workflow": "ops", "requestedAt": "2026-12-03T10:00:00Z",
            "justification": "see <a href=\"javascript:alert(1)\">the docs</a>\" onmouseover=\"x",
            "message": "</pre><script>alert(2)</script>",
            "arguments": {"html": "<script>alert(3)</script>", "link": "javascript:alert(4)"},
        });
        let mut ar = ApprovalRequest::new("x7k2", serde_json::from_value(spec).unwrap());
        ar.metadata.namespace = Some("team".into());
        let v = view::request(&ar, &Caller { user: "approver-a".into(), groups: vec![] }, None, "2026-12-03T10:01:00Z".parse().unwrap());
        let shell = Shell { user: "<b>me</b>".into(), scope: "all namespaces".into(), note: None };
        let page = RequestPage { shell: &shell, r: &v, flash: Some(Flash { kind: "error", text: "<i>no</i>".into() }), csrf: "c" }.render().unwrap();
        for raw in ["<script>alert", "<img src=x", "<a href=\"javascript", "href=\"javascript:", "<b>me</b>", "<i>no</i>", "</pre><script>", "onmouseover=\""] {
            assert!(!page.contains(raw), "{raw} reached the page unescaped:\n{page}");
        }
        assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{page}");
        // Links on the page are its own, none the agent's.
        let hrefs: Vec<&str> = page.split("href=\"").skip(1).filter_map(|s| s.split('"').next()).collect();
        assert!(hrefs.iter().all(|h| h.starts_with('/')), "{hrefs:?}");
        // The only script is the page's own file.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains(r#"<script src="/static/ui.js" defer></script>"#));
    }
}
