-- One row per model call, and what each budget has taken in each of its periods (reservations
-- of calls in flight included). Money in micro-USD, times in Unix microseconds: both are BIGINT,
-- which SQLite and PostgreSQL (and sqlx's Any driver) read alike.
CREATE TABLE IF NOT EXISTS ledger (
    id BIGINT NOT NULL,
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
    status BIGINT NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS ledger_agent_time ON ledger (namespace, agent, time_us);
CREATE TABLE IF NOT EXISTS budget_spend (
    budget TEXT NOT NULL,
    period_start_us BIGINT NOT NULL,
    spent_micros BIGINT NOT NULL,
    PRIMARY KEY (budget, period_start_us)
);
