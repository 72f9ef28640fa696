-- Slack interactions already received, by their signature: a replay is refused by whichever
-- gateway replica it reaches, since they share this database. Kept a little longer than Slack's
-- 5-minute window, past which a request is refused for its age anyway.
CREATE TABLE IF NOT EXISTS slack_seen (
    signature TEXT NOT NULL,
    seen_us BIGINT NOT NULL,
    PRIMARY KEY (signature)
);
