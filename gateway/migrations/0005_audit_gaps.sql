-- What each stored record says is missing from the trail: `cut` is 1 for a record stored cut to
-- its bound, `lost` the records an `audit-gap` record stands for (never shipped). Summed per
-- agent for its `AuditComplete` condition.
ALTER TABLE audit ADD COLUMN cut BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit ADD COLUMN lost BIGINT NOT NULL DEFAULT 0;
-- Only the records that say something is missing are indexed: the status loop's sums read those
-- and never scan an agent's whole day of records (on SQLite that scan would hold the one
-- connection every call's settlement waits for).
CREATE INDEX IF NOT EXISTS audit_incomplete ON audit (namespace, agent, time_us) WHERE cut > 0 OR lost > 0;
