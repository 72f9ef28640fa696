-- SQLite only (PostgreSQL's tables have no hidden row id: it has no migration 9). A table whose
-- key is declared `BIGINT` keeps its rows under a hidden row id and the key in an index of its
-- own: every ledger row and audit record was two b-tree inserts before its other indexes, and
-- both pages went to the log at commit. Declared `INTEGER PRIMARY KEY`, the key is the row id:
-- one insert, and a fifth less written per call (docs/performance-history.md). SQLite cannot
-- change a table's key in place, so each table is copied into its new shape, in this
-- migration's transaction.
CREATE TABLE ledger_by_rowid (
    id INTEGER PRIMARY KEY NOT NULL,
    time_us BIGINT NOT NULL,
    namespace TEXT NOT NULL,
    agent TEXT NOT NULL,
    pod TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    status BIGINT NOT NULL
);
INSERT INTO ledger_by_rowid (id, time_us, namespace, agent, pod, provider, model, input_tokens, cached_input_tokens, output_tokens, cost_micros, latency_ms, status)
    SELECT id, time_us, namespace, agent, pod, provider, model, input_tokens, cached_input_tokens, output_tokens, cost_micros, latency_ms, status FROM ledger;
DROP TABLE ledger;
ALTER TABLE ledger_by_rowid RENAME TO ledger;
CREATE INDEX ledger_agent_time ON ledger (namespace, agent, time_us);

CREATE TABLE audit_by_rowid (
    seq INTEGER PRIMARY KEY NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    time_us BIGINT NOT NULL,
    namespace TEXT NOT NULL,
    service_account TEXT NOT NULL,
    agent TEXT NOT NULL,
    tool TEXT NOT NULL,
    decision TEXT NOT NULL,
    record TEXT NOT NULL,
    cut BIGINT NOT NULL DEFAULT 0,
    lost BIGINT NOT NULL DEFAULT 0,
    shadow_of TEXT NOT NULL DEFAULT '',
    shadow_would TEXT NOT NULL DEFAULT ''
);
INSERT INTO audit_by_rowid (seq, prev, hash, time_us, namespace, service_account, agent, tool, decision, record, cut, lost, shadow_of, shadow_would)
    SELECT seq, prev, hash, time_us, namespace, service_account, agent, tool, decision, record, cut, lost, shadow_of, shadow_would FROM audit;
DROP TABLE audit;
ALTER TABLE audit_by_rowid RENAME TO audit;
CREATE INDEX audit_namespace_time ON audit (namespace, time_us);
CREATE INDEX audit_incomplete ON audit (namespace, agent, time_us) WHERE cut > 0 OR lost > 0;
CREATE INDEX audit_shadow ON audit (shadow_would, time_us) WHERE shadow_would <> '';
