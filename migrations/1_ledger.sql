-- One row per (team, span, webhook): what happened to that digest, and its lease.
-- Both databases run these files; migrations/sqlite/ holds SQLite's own. Times are Unix
-- seconds, but lease_until is in milliseconds of the clock that judges leases (the server's on
-- PostgreSQL, the process's on SQLite). IF NOT EXISTS adopts a ledger made before migrations.
CREATE TABLE IF NOT EXISTS digests (
    team TEXT NOT NULL,
    first_day TEXT NOT NULL,
    last_day TEXT NOT NULL,
    webhook TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    unanswered BIGINT NOT NULL DEFAULT 0,
    next_attempt BIGINT,
    last_error TEXT,
    refused_url TEXT,
    delivered_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    PRIMARY KEY (team, first_day, last_day, webhook)
);
CREATE INDEX IF NOT EXISTS digests_by_last_day ON digests (last_day);

-- One row per failure alert sent, so restarts and replicas never send it twice.
CREATE TABLE IF NOT EXISTS alerts (
    team TEXT NOT NULL,
    first_day TEXT NOT NULL,
    last_day TEXT NOT NULL,
    webhook TEXT NOT NULL,
    reason TEXT NOT NULL,
    raised_at BIGINT NOT NULL,
    PRIMARY KEY (team, first_day, last_day, webhook, reason)
);
