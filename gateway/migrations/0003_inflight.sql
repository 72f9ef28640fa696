-- Calls in flight: a row from before a call is forwarded (in the transaction that reserves its
-- budgets) until it is settled. A gateway that dies mid-call leaves its rows behind; once its
-- heartbeat in `gateway_instances` is stale, another gateway (or its successor) settles them
-- as interrupted at their reserved estimate, so no call is lost and none is counted twice.
CREATE TABLE IF NOT EXISTS inflight (
    id BIGINT NOT NULL,
    instance TEXT NOT NULL,
    started_us BIGINT NOT NULL,
    namespace TEXT NOT NULL,
    agent TEXT NOT NULL,
    service_account TEXT NOT NULL,
    pod TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    amount_micros BIGINT NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS inflight_instance ON inflight (instance);
CREATE TABLE IF NOT EXISTS gateway_instances (
    instance TEXT NOT NULL,
    seen_us BIGINT NOT NULL,
    PRIMARY KEY (instance)
);
