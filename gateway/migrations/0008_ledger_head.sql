-- The ledger's next row number (docs/design.md §3.4). A row's id was a random 63-bit number,
-- unique across replicas without coordination, but each insert then landed on a random page of
-- the id's index: a batch of N rows dirtied about N pages, all written to SQLite's log at commit
-- and copied again at the checkpoint. Numbered from this row (taken, like the audit chain's head,
-- under the transaction's row lock), a batch's rows are consecutive and land on the index's last
-- page. Ids written before are random and far above any number this reaches.
CREATE TABLE IF NOT EXISTS ledger_head (
    id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (id)
);
INSERT INTO ledger_head (id, seq) VALUES (1, 0);
