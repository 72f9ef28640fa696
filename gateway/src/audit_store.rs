//! The audit store (DESIGN §3.5): batches of records from sidecars, appended with a hash chain,
//! each batch once; queried, exported and verified.

use crate::ledger::db::{Arg, Db, Kind, Sql};
use crate::ledger::{Ledger, LedgerError, transaction};
use serde_json::Value;
use tollgate_core::audit::bounds;
use tollgate_core::audit::chain::{self, Link};
use tollgate_core::model::call::ModelCallRecord;
use tollgate_core::model::record_text::Sender;

/// Who sent a batch, as the API server vouched for its token: never what a record claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub namespace: String,
    pub service_account: String,
    /// Shipped by that account's sidecar, rather than written by the gateway itself (its model
    /// calls): a shipped record saying it is a model call is told apart from the gateway's own.
    pub shipped: bool,
}

/// What a query selects; empty fields select everything.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub namespace: Option<String>,
    pub agent: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<String>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    /// Only records where an audited rule or budget would have decided otherwise.
    pub shadow: bool,
    pub limit: i64,
}

impl Ledger {
    /// Appends `records` from `source` under `batch_id`; a batch already stored is not stored
    /// again. Whether it was new.
    pub async fn append_audit(&self, batch_id: &str, source: &Source, records: Vec<Value>) -> Result<bool, LedgerError> {
        let now = jiff::Timestamp::now().as_microsecond();
        // Prepared here, off the writer: each is cleaned, bounded and written out once.
        let records: Vec<Prepared> = records.into_iter().map(|r| Prepared::new(source, r)).collect();
        let batch_id = batch_id.to_owned();
        transaction!(self, |db| async {
            let sql = Sql::written("INSERT INTO audit_batches (batch_id, received_us) VALUES ($1, $2) ON CONFLICT DO NOTHING");
            let new = db.execute(sql, &[Arg::Text(&batch_id), Arg::Int(now)]).await? == 1;
            if new {
                append_in(db, records.iter()).await?;
            }
            Ok::<_, LedgerError>(new)
        })
        .await
    }

    /// Records matching `q`, oldest first.
    pub async fn query_audit(&self, q: &Query) -> Result<Vec<Link>, LedgerError> {
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT seq, prev, hash, record FROM audit WHERE ($1 = '' OR namespace = $1) AND ($2 = '' OR agent = $2) AND ($3 = '' OR tool = $3) \
             AND ($4 = '' OR decision = $4) AND time_us >= $5 AND time_us <= $6 AND ($8 = '' OR shadow_would <> '') ORDER BY seq LIMIT $7",
        )
        .bind(q.namespace.clone().unwrap_or_default())
        .bind(q.agent.clone().unwrap_or_default())
        .bind(q.tool.clone().unwrap_or_default())
        .bind(q.decision.clone().unwrap_or_default())
        .bind(q.since_us.unwrap_or(0))
        .bind(q.until_us.unwrap_or(i64::MAX))
        .bind(q.limit.max(1))
        .bind(if q.shadow { "1" } else { "" })
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(to_link).collect())
    }

    /// An agent's records stored cut, and lost (as gap records count them), since `since_us`.
    pub async fn audit_gaps(&self, namespace: &str, agent: &str, since_us: i64) -> Result<(i64, i64), LedgerError> {
        let (cut, lost): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT CAST(SUM(cut) AS BIGINT), CAST(SUM(lost) AS BIGINT) FROM audit WHERE namespace = $1 AND agent = $2 AND time_us >= $3 \
                 AND (cut > 0 OR lost > 0)",
        )
        .bind(namespace)
        .bind(agent)
        .bind(since_us)
        .fetch_one(&self.pool)
        .await?;
        Ok((cut.unwrap_or(0), lost.unwrap_or(0)))
    }

    /// Would-be decisions stored since `since_us`, per object and decision: (object, decision,
    /// how many, the latest's time in µs).
    pub async fn shadow_counts(&self, since_us: i64) -> Result<Vec<(String, String, i64, i64)>, LedgerError> {
        Ok(sqlx::query_as(
            "SELECT shadow_of, shadow_would, COUNT(*), MAX(time_us) FROM audit WHERE shadow_would <> '' AND time_us >= $1 GROUP BY shadow_of, shadow_would",
        )
        .bind(since_us)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The chain's head: its last record's number and hash.
    pub async fn audit_head(&self) -> Result<(i64, String), LedgerError> {
        Ok(sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.pool).await?)
    }

    /// Every record, in order: the export, and what verification reads.
    pub async fn export_audit(&self) -> Result<Vec<Link>, LedgerError> {
        let rows: Vec<(i64, String, String, String)> = sqlx::query_as("SELECT seq, prev, hash, record FROM audit ORDER BY seq").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(to_link).collect())
    }
}

/// A record as it is stored: bounded, its sender named in it, written out once in canonical form
/// (what its hash covers and what is stored), and the fields the store indexes. Prepared where
/// it is made, off the writer's batch, which then only hashes and binds.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    namespace: String,
    service_account: String,
    text: String,
    agent: String,
    tool: String,
    decision: &'static str,
    cut: i64,
    lost: i64,
    shadow_of: String,
    shadow_would: &'static str,
}

impl Prepared {
    pub fn new(source: &Source, mut r: Value) -> Prepared {
        // What no database or reader's terminal takes, and no record of megabytes, is stored.
        bounds::sanitize(&mut r);
        name_sender(&mut r, source);
        // Written out once: a record within its bound (nearly all) is not serialized again to
        // be measured. The sender's names are short and bounded; a cut record is named again,
        // since cutting keeps only the fields that say what it is about.
        let mut text = tollgate_core::mcp::digest::canonical_json(&r);
        if text.len() > bounds::MAX_RECORD_BYTES
            && let Some(bytes) = bounds::bound(&mut r, bounds::MAX_RECORD_BYTES)
        {
            tracing::warn!(bytes, namespace = source.namespace, "an audit record was cut to its bound");
            name_sender(&mut r, source);
            text = tollgate_core::mcp::digest::canonical_json(&r);
        }
        let (cut, lost) = bounds::incompleteness(&r);
        let (shadow_of, shadow_would) = bounds::indexed_shadow(&r, &source.namespace, source.shipped);
        Prepared {
            namespace: source.namespace.clone(),
            service_account: source.service_account.clone(),
            text,
            agent: bounds::indexed(&r["agent"]["name"]),
            tool: bounds::indexed(&r["tool"]),
            decision: bounds::indexed_decision(&r["decision"]),
            cut,
            lost,
            shadow_of,
            shadow_would,
        }
    }
}

impl Prepared {
    /// [`Prepared::new`] of a model call's record the gateway made itself: its text written
    /// straight from the record when nothing in it needs cleaning or cutting (nearly always).
    pub fn model_call(source: &Source, record: &ModelCallRecord) -> Prepared {
        let Some(text) = tollgate_core::model::record_text::stored_text(record, sender(source)) else {
            return Prepared::new(source, record.to_value());
        };
        let shadow = record.shadow.as_ref();
        let (shadow_of, shadow_would) = bounds::indexed_shadow_of(
            shadow.map(|s| s.would.as_str()),
            shadow.and_then(|s| s.policy.as_deref()).unwrap_or_default(),
            &source.namespace,
            source.shipped,
        );
        Prepared {
            namespace: source.namespace.clone(),
            service_account: source.service_account.clone(),
            text,
            agent: bounds::indexed_str(&record.agent.name),
            tool: bounds::indexed_str(&record.tool),
            decision: bounds::indexed_decision_str(record.decision),
            // A record the gateway made whole: never cut, and no gap.
            cut: 0,
            lost: 0,
            shadow_of,
            shadow_would,
        }
    }
}

/// The record's `source`, as both ways of preparing it write it.
fn sender(source: &Source) -> Sender<'_> {
    Sender { namespace: &source.namespace, service_account: &source.service_account, writer: if source.shipped { "sidecar" } else { "gateway" } }
}

/// Names the record's sender in it, as the store verified it.
fn name_sender(r: &mut Value, source: &Source) {
    if let Some(o) = r.as_object_mut() {
        o.insert("source".into(), serde_json::to_value(sender(source)).unwrap_or(Value::Null));
    }
}

/// Appends records to the chain, within the transaction `db`.
pub(crate) async fn append_in<'a>(db: &mut impl Db, records: impl ExactSizeIterator<Item = &'a Prepared>) -> Result<(), LedgerError> {
    if records.len() == 0 {
        return Ok(());
    }
    let now = jiff::Timestamp::now().as_microsecond();
    let n = i64::try_from(records.len()).unwrap_or(i64::MAX);
    // Taking the head's row first serialises appends across replicas.
    let head = Sql::written("UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, hash");
    let mut cells = db.fetch(head, &[Arg::Int(n)], &[Kind::Int, Kind::Text]).await?.into_iter();
    let (Some(end), Some(prev)) = (cells.next(), cells.next()) else { return Err(LedgerError::Unavailable("the audit chain has no head".into())) };
    let (end, mut last) = (end.int()?, prev.text()?);
    let links: Vec<(i64, String, String, &Prepared)> = (end - n + 1..)
        .zip(records)
        .map(|(seq, p)| {
            let hash = chain::hash_text(&last, seq, &p.text);
            (seq, std::mem::replace(&mut last, hash.clone()), hash, p)
        })
        .collect();
    for piece in crate::ledger::pieces(&links) {
        let mut args = Vec::with_capacity(piece.len() * 14);
        for link in piece {
            args.extend(link_args(link, now));
        }
        let sql = Sql::rows(
            "INSERT INTO audit (seq, prev, hash, time_us, namespace, service_account, agent, tool, decision, record, cut, lost, shadow_of, shadow_would) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            piece.len(),
        );
        db.execute(sql, &args).await?;
    }
    db.execute(Sql::written("UPDATE audit_head SET hash = $1 WHERE id = 1"), &[Arg::Text(&last)]).await?;
    Ok(())
}

fn link_args<'a>((seq, prev, hash, p): &'a (i64, String, String, &'a Prepared), now: i64) -> [Arg<'a>; 14] {
    [
        Arg::Int(*seq),
        Arg::Text(prev),
        Arg::Text(hash),
        Arg::Int(now),
        Arg::Text(&p.namespace),
        Arg::Text(&p.service_account),
        Arg::Text(&p.agent),
        Arg::Text(&p.tool),
        Arg::Text(p.decision),
        Arg::Text(&p.text),
        Arg::Int(p.cut),
        Arg::Int(p.lost),
        Arg::Text(&p.shadow_of),
        Arg::Text(p.shadow_would),
    ]
}

fn to_link((seq, prev, hash, record): (i64, String, String, String)) -> Link {
    // A stored record that no longer parses is kept as its text: verification then names it.
    let record = serde_json::from_str(&record).unwrap_or(Value::String(record));
    Link { seq, prev, hash, record }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn batches_chain_once_and_an_altered_row_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display())).await.unwrap();
        let src = Source { namespace: "team-a".into(), service_account: "coder".into(), shipped: true };
        let rec = |tool: &str| json!({"kind": "decision", "tool": tool, "decision": "allow", "agent": {"name": "coder"}});
        assert!(l.append_audit("b1", &src, vec![rec("a"), rec("b")]).await.unwrap());
        assert!(!l.append_audit("b1", &src, vec![rec("a"), rec("b")]).await.unwrap(), "the same batch twice is stored once");
        assert!(l.append_audit("b2", &src, vec![rec("c")]).await.unwrap());
        let all = l.export_audit().await.unwrap();
        assert_eq!(chain::verify(&all), Ok(3));
        assert_eq!(all[0].record["source"]["namespace"], "team-a");
        let q = Query { tool: Some("b".into()), limit: 10, ..Query::default() };
        assert_eq!(l.query_audit(&q).await.unwrap().len(), 1);
        assert!(l.query_audit(&Query { shadow: true, limit: 10, ..Query::default() }).await.unwrap().is_empty(), "no record has a shadow");
        sqlx::query("UPDATE audit SET record = $1 WHERE seq = 2").bind(rec("evil").to_string()).execute(&l.pool).await.unwrap();
        assert_eq!(chain::verify(&l.export_audit().await.unwrap()), Err(chain::Break::Altered { seq: 2 }));
    }

    /// A sidecar's would-be decisions count for its namespace's policies and the cluster's, never
    /// for another namespace's policy nor for a budget (the gateway's own records speak for those).
    #[tokio::test]
    async fn would_be_decisions_are_counted_only_for_what_their_writer_speaks_for() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display())).await.unwrap();
        let sidecar = Source { namespace: "team-a".into(), service_account: "coder".into(), shipped: true };
        let gateway = Source { shipped: false, ..sidecar.clone() };
        let rec = |of: &str, would: &str| json!({"kind": "decision", "tool": "t", "decision": "allow", "agent": {"name": "coder"}, "shadow": {"would": would, "policy": of}});
        let shipped = vec![
            rec("ToolPolicy team-a/p", "deny"),
            rec("ToolPolicy team-a/p", "deny"),
            rec("ToolPolicy team-a/p", "require_approval"),
            rec("ClusterToolPolicy guard", "deny"),
            rec("ToolPolicy team-b/p", "deny"),
            rec("Budget team-a/daily", "deny"),
            rec("ToolPolicy team-a/p", "explode"),
        ];
        l.append_audit("b1", &sidecar, shipped).await.unwrap();
        let mut tx = l.pool.begin().await.unwrap();
        append_in(&mut tx, std::iter::once(&Prepared::new(&gateway, rec("Budget team-a/daily", "deny")))).await.unwrap();
        tx.commit().await.unwrap();
        let mut counts = l.shadow_counts(0).await.unwrap();
        counts.sort();
        let got: Vec<(&str, &str, i64)> = counts.iter().map(|(o, w, n, _)| (o.as_str(), w.as_str(), *n)).collect();
        assert_eq!(
            got,
            [
                ("Budget team-a/daily", "deny", 1),
                ("ClusterToolPolicy guard", "deny", 1),
                ("ToolPolicy team-a/p", "deny", 2),
                ("ToolPolicy team-a/p", "require_approval", 1)
            ]
        );
        assert_eq!(l.query_audit(&Query { shadow: true, limit: 100, ..Query::default() }).await.unwrap().len(), 5);
    }

    /// A model call's record written straight from it is what the general path makes of it as
    /// values, its budget's would-be decision indexed; one holding a NUL is cleaned by that path.
    #[test]
    fn a_model_calls_record_is_prepared_as_its_values_would_be() {
        use tollgate_core::model::call::{ModelCallAgent, Tokens};
        let source = Source { namespace: "team-a".into(), service_account: "coder".into(), shipped: false };
        let agent = ModelCallAgent { namespace: "team-a".into(), name: "coder".into(), service_account: "coder".into(), pod_claimed: Some("p-1".into()) };
        let settled = ModelCallRecord {
            kind: tollgate_core::model::call::RECORD_KIND,
            time: "2026-12-04T15:00:00Z".into(),
            agent,
            tool: "gpt-4o-mini".into(),
            provider: Some("openai".into()),
            decision: "allow",
            status: 200,
            reason: None,
            tokens: Some(Tokens { input: 10, cached_input: 0, output: 20 }),
            cost_usd: Some(0.0012),
            duration_ms: Some(3),
            hosted_tools: vec!["web_search".into()],
            shadow: Some(tollgate_core::model::call::would_refuse("team-a/daily", 5_000_000, 1_000_000)),
        };
        let p = Prepared::model_call(&source, &settled);
        assert_eq!(p, Prepared::new(&source, settled.to_value()));
        assert_eq!((p.shadow_of.as_str(), p.shadow_would), ("Budget team-a/daily", "deny"), "the gateway speaks for its namespace's budgets");
        let dirty = ModelCallRecord { tool: "gpt\0".into(), ..settled };
        let p = Prepared::model_call(&source, &dirty);
        assert_eq!(p, Prepared::new(&source, dirty.to_value()));
        assert_eq!(p.tool, "gpt\u{FFFD}");
    }

    /// The text stored is the record as canonically written, named by its sender; a record past
    /// the bound is cut to it and still names its sender (cutting keeps identity fields only).
    #[test]
    fn a_record_is_written_out_whole_within_its_bound_and_cut_past_it_naming_its_sender() {
        let source = Source { namespace: "team-a".into(), service_account: "coder".into(), shipped: true };
        let small = json!({"kind": "tool_call", "tool": "t\u{0}x", "agent": {"name": "coder"}, "arguments": {"a": "b"}});
        let p = Prepared::new(&source, small);
        let stored: Value = serde_json::from_str(&p.text).unwrap();
        assert_eq!(p.text, tollgate_core::mcp::digest::canonical_json(&stored), "stored as canonically written");
        assert_eq!(stored["tool"], "t\u{FFFD}x");
        assert_eq!(stored["source"], json!({"namespace": "team-a", "serviceAccount": "coder", "writer": "sidecar"}));
        assert_eq!((p.cut, p.tool.as_str()), (0, "t\u{FFFD}x"));
        let many: serde_json::Map<String, Value> = (0..2000).map(|i| (format!("k{i}"), json!("v".repeat(40)))).collect();
        let big = json!({"kind": "tool_call", "tool": "t", "agent": {"name": "coder"}, "arguments": many});
        let p = Prepared::new(&source, big);
        let stored: Value = serde_json::from_str(&p.text).unwrap();
        assert!(p.text.len() <= bounds::MAX_RECORD_BYTES + 200, "{} bytes", p.text.len());
        assert!(stored["truncated"]["originalBytes"].as_u64().is_some_and(|n| n > bounds::MAX_RECORD_BYTES as u64));
        assert_eq!((stored["tool"].as_str(), stored["source"]["writer"].as_str()), (Some("t"), Some("sidecar")));
        assert!(p.cut > 0);
    }
}
