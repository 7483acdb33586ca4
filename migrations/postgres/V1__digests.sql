-- One row per (team, span, webhook): what happened to that digest, and its lease.
-- Times are Unix seconds, but lease_until is in milliseconds of this server's clock, which
-- judges every lease.
CREATE TABLE digests (
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
CREATE INDEX digests_by_last_day ON digests (last_day);
