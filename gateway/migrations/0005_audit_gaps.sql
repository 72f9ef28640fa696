-- What each stored record says is missing from the trail: `cut` is 1 for a record stored cut to
-- its bound, `lost` the records an `audit-gap` record stands for (never shipped). Summed per
-- agent for its `AuditComplete` condition.
ALTER TABLE audit ADD COLUMN cut BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit ADD COLUMN lost BIGINT NOT NULL DEFAULT 0;
