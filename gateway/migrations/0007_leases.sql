-- Allowances leased by gateways ahead of their calls (docs/design.md §3.4): what a period's
-- `leased_micros` holds, by gateway instance, so a gateway that stops hands its allowance back
-- and one that dies has it charged (the calls it served last may be in it).
ALTER TABLE budget_spend ADD COLUMN leased_micros BIGINT NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS budget_leases (
    instance TEXT NOT NULL,
    budget TEXT NOT NULL,
    period_start_us BIGINT NOT NULL,
    amount_micros BIGINT NOT NULL,
    PRIMARY KEY (instance, budget, period_start_us)
);
