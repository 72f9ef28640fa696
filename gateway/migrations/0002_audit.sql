-- The audit store: append-only, each record chained to the one before it (see
-- tollgate_core::audit_chain). `audit_head` holds the chain end, and that row is what two
-- replicas serialise on; `audit_batches` makes a batch sent twice count once.
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    time_us BIGINT NOT NULL,
    namespace TEXT NOT NULL,
    service_account TEXT NOT NULL,
    agent TEXT NOT NULL,
    tool TEXT NOT NULL,
    decision TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (seq)
);
CREATE INDEX IF NOT EXISTS audit_namespace_time ON audit (namespace, time_us);
CREATE TABLE IF NOT EXISTS audit_head (
    id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (id)
);
CREATE TABLE IF NOT EXISTS audit_batches (
    batch_id TEXT NOT NULL,
    received_us BIGINT NOT NULL,
    PRIMARY KEY (batch_id)
);
