//! Would-be decisions counted per object (docs/design.md §3.1): what the audit store says each
//! audited policy or budget would have done lately, as its `status.shadow`.

use serde_json::Value;
use std::collections::BTreeMap;
use tollgate_api::ShadowCounts;

/// The object a would-be decision is counted for, as the audit store names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    ToolPolicy { namespace: String, name: String },
    ClusterToolPolicy { name: String },
    Budget { namespace: String, name: String },
}

impl Subject {
    /// `ToolPolicy ns/name`, `ClusterToolPolicy name` or `Budget ns/name` (as `PolicyId` and
    /// [`crate::model::call::would_refuse`] write them).
    pub fn parse(s: &str) -> Option<Subject> {
        let namespaced = |rest: &str| rest.split_once('/').filter(|(ns, name)| !ns.is_empty() && !name.is_empty()).map(|(ns, n)| (ns.to_owned(), n.to_owned()));
        match s.split_once(' ')? {
            ("ToolPolicy", rest) => namespaced(rest).map(|(namespace, name)| Subject::ToolPolicy { namespace, name }),
            ("Budget", rest) => namespaced(rest).map(|(namespace, name)| Subject::Budget { namespace, name }),
            ("ClusterToolPolicy", name) if !name.is_empty() && !name.contains('/') => Some(Subject::ClusterToolPolicy { name: name.to_owned() }),
            _ => None,
        }
    }
}

/// The counts of the store's rows (object, would-be decision, how many, latest time in µs) over
/// `window`; rows naming no object or an unknown decision are left out.
pub fn counts(rows: &[(String, String, i64, i64)], window: &str) -> BTreeMap<Subject, ShadowCounts> {
    let mut out: BTreeMap<Subject, ShadowCounts> = BTreeMap::new();
    for (of, would, n, latest_us) in rows {
        let Some(subject) = Subject::parse(of) else { continue };
        let c = out.entry(subject).or_insert_with(|| ShadowCounts { window: window.to_owned(), ..ShadowCounts::default() });
        match would.as_str() {
            "deny" => c.would_deny += n,
            "require_approval" => c.would_require_approval += n,
            "allow" => c.would_allow += n,
            _ => continue,
        }
        let latest = jiff::Timestamp::from_microsecond(*latest_us).ok().map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
        if latest.as_ref().map(|t| t.0) > c.last_time.as_ref().map(|t| t.0) {
            c.last_time = latest;
        }
    }
    out
}

/// One line of `tollgate audit shadow`: calls that the same audited rule (or budget) would have
/// decided the same way, for one agent and tool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReportRow {
    pub object: String,
    pub rule: String,
    pub would: String,
    /// `namespace/name`.
    pub agent: String,
    pub tool: String,
    pub calls: u64,
    /// The latest call's time, as its record says.
    pub last: String,
}

/// What a report groups by: object, rule, would-be decision, agent, tool.
type Group = (String, String, String, String, String);

/// The records (as stored: `{"record": …}`, or as written) with a would-be decision, grouped by
/// object, rule, decision, agent and tool; the largest groups first.
pub fn report<'a>(records: impl IntoIterator<Item = &'a Value>) -> Vec<ReportRow> {
    let mut groups: BTreeMap<Group, (u64, String)> = BTreeMap::new();
    for r in records {
        let r = r.get("record").unwrap_or(r);
        let s = &r["shadow"];
        let Some(would) = s["would"].as_str() else { continue };
        let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        let agent = format!("{}/{}", r["agent"]["namespace"].as_str().unwrap_or("-"), r["agent"]["name"].as_str().unwrap_or("-"));
        let key = (text(&s["policy"]), text(&s["rule"]), would.to_owned(), agent, text(&r["tool"]));
        let (n, last) = groups.entry(key).or_default();
        *n += 1;
        let time = text(&r["time"]);
        if time > *last {
            *last = time;
        }
    }
    let mut rows: Vec<ReportRow> =
        groups.into_iter().map(|((object, rule, would, agent, tool), (calls, last))| ReportRow { object, rule, would, agent, tool, calls, last }).collect();
    rows.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.cmp(b)));
    rows
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_report_groups_by_rule_agent_and_tool() {
        let rec = |tool: &str, rule: &str, would: &str, time: &str| {
            serde_json::json!({"record": {"time": time, "tool": tool, "agent": {"namespace": "team-a", "name": "coder"},
                "shadow": {"would": would, "policy": "ToolPolicy team-a/p", "rule": rule}}})
        };
        let plain = serde_json::json!({"time": "t", "tool": "x", "agent": {"namespace": "team-a", "name": "coder"}});
        let records = [
            rec("deploy", "r0", "deny", "2026-01-01T00:00:01Z"),
            rec("deploy", "r0", "deny", "2026-01-01T00:00:03Z"),
            rec("read", "r1", "require_approval", "t"),
            plain,
        ];
        let rows = report(&records);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].tool.as_str(), rows[0].rule.as_str(), rows[0].calls, rows[0].last.as_str()), ("deploy", "r0", 2, "2026-01-01T00:00:03Z"));
        assert_eq!((rows[1].would.as_str(), rows[1].agent.as_str()), ("require_approval", "team-a/coder"));
    }

    #[test]
    fn rows_are_counted_per_object_and_decision() {
        let row = |of: &str, would: &str, n: i64, t: i64| (of.to_owned(), would.to_owned(), n, t);
        let rows = [
            row("ToolPolicy team-a/p", "deny", 3, 1_000_000),
            row("ToolPolicy team-a/p", "require_approval", 2, 5_000_000),
            row("ClusterToolPolicy guard", "allow", 1, 7),
            row("Budget team-a/daily", "deny", 4, 9),
            row("ToolPolicy nonsense", "deny", 9, 9),
            row("Pod team-a/x", "deny", 9, 9),
            row("ToolPolicy team-a/p", "maybe", 9, 99_000_000),
        ];
        let c = counts(&rows, "1h");
        assert_eq!(c.len(), 3);
        let p = &c[&Subject::ToolPolicy { namespace: "team-a".into(), name: "p".into() }];
        assert_eq!((p.would_deny, p.would_require_approval, p.would_allow, p.window.as_str()), (3, 2, 0, "1h"));
        assert_eq!(p.last_time.as_ref().map(|t| t.0.as_microsecond()), Some(5_000_000), "an unknown decision is not the latest");
        assert_eq!(c[&Subject::ClusterToolPolicy { name: "guard".into() }].would_allow, 1);
        assert_eq!(c[&Subject::Budget { namespace: "team-a".into(), name: "daily".into() }].would_deny, 4);
    }
}
