-- A reconciler's pass reads the rows of the teams due now, among a week of every team's. In a
-- rowid table rows lie in the order they were written, day after day, so each team's rows were
-- on as many pages as it had days: keyed by the row's own key, a team's rows lie together
-- (100,000 teams, a week each: half the CPU of a pass).
CREATE TABLE digests_by_team (
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
    posts INTEGER NOT NULL DEFAULT 0,
    reads INTEGER NOT NULL DEFAULT 0,
    last_read TEXT,
    PRIMARY KEY (team, first_day, last_day, webhook)
) WITHOUT ROWID;
INSERT INTO digests_by_team (team, first_day, last_day, webhook, state, attempts, unanswered,
        next_attempt, last_error, refused_url, delivered_at, lease_owner, lease_until, posts,
        reads, last_read)
    SELECT team, first_day, last_day, webhook, state, attempts, unanswered, next_attempt,
        last_error, refused_url, delivered_at, lease_owner, lease_until, posts, reads, last_read
    FROM digests
    -- In the new key's order, so each page is written once, not split again and again.
    ORDER BY team, first_day, last_day, webhook;
DROP TABLE digests;
ALTER TABLE digests_by_team RENAME TO digests;
CREATE INDEX digests_by_last_day ON digests (last_day);
