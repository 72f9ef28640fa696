//! The history page: requests no longer pending, filtered, newest first, a page at a time. A
//! row is what the table shows and no more: an agent that made thousands of requests must not
//! make the page render thousands of argument documents.

use std::sync::Arc;

use tollgate_api::{ApprovalRequest, Phase};

use super::super::format;
use super::view::{self, DecisionView, Name};

/// Rows on one page of the history.
pub const PAGE_ROWS: usize = 100;

/// The history view's filters and page, from the query string.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Filter {
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub namespace: String,
    /// Matched, case-insensitively, against the tool, the server and the agent.
    #[serde(default)]
    pub q: String,
    /// Counted from 0, the newest.
    #[serde(default)]
    pub page: usize,
}

impl Filter {
    pub fn keeps(&self, ar: &ApprovalRequest) -> bool {
        let phase = format::phase(ar);
        let phase_ok = match self.phase.as_str() {
            "" => phase != Phase::Pending,
            p => phase.to_string().eq_ignore_ascii_case(p),
        };
        let ns_ok = self.namespace.is_empty() || ar.metadata.namespace.as_deref() == Some(self.namespace.as_str());
        let q = self.q.to_lowercase();
        let q_ok = q.is_empty() || [&ar.spec.tool, &ar.spec.server, &ar.spec.agent].iter().any(|f| f.to_lowercase().contains(&q));
        phase_ok && ns_ok && q_ok
    }

    /// The query string of the same filters on page `page`.
    fn at(&self, page: usize) -> String {
        serde_urlencoded::to_string(Filter { page, ..self.clone() }).unwrap_or_default()
    }
}

/// One line of the history's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub tool: Name,
    pub agent: Name,
    pub approvals: String,
    pub requested: String,
    pub decisions: Vec<DecisionView>,
}

/// One page of the history, and the links to its neighbours (query strings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub rows: Vec<Row>,
    pub newer: Option<String>,
    pub older: Option<String>,
}

fn row(ar: &ApprovalRequest) -> Row {
    Row {
        namespace: ar.metadata.namespace.clone().unwrap_or_default(),
        name: ar.metadata.name.clone().unwrap_or_default(),
        phase: format::phase(ar).to_string(),
        tool: view::name(&ar.spec.tool),
        agent: view::name(&ar.spec.agent),
        approvals: ar.status.as_ref().and_then(|s| s.approvals.clone()).unwrap_or_default(),
        requested: format::rfc3339(&ar.spec.requested_at),
        decisions: view::decisions(ar),
    }
}

/// The page of `items` that `filter` asks for, newest (resolved, else requested) first.
pub fn page(items: &[Arc<ApprovalRequest>], filter: &Filter) -> Page {
    let when = |ar: &ApprovalRequest| ar.status.as_ref().and_then(|s| s.resolved_at.clone()).map_or(ar.spec.requested_at.0, |t| t.0);
    let mut kept: Vec<&ApprovalRequest> = items.iter().map(|a| &**a).filter(|a| filter.keeps(a)).collect();
    kept.sort_by(|a, b| when(b).cmp(&when(a)).then_with(|| format::qualified_name(a).cmp(&format::qualified_name(b))));
    let start = filter.page.saturating_mul(PAGE_ROWS);
    Page {
        rows: kept.iter().skip(start).take(PAGE_ROWS).map(|ar| row(ar)).collect(),
        newer: (filter.page > 0).then(|| filter.at(filter.page - 1)),
        older: (kept.len() > start.saturating_add(PAGE_ROWS)).then(|| filter.at(filter.page + 1)),
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
