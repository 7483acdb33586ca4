-- The two headline totals of each window fetched, by the exact window the API was asked for:
-- the baselines that tell an unusual day from an ordinary one. A provisional window (its data
-- looked incomplete when read) is never trusted as a baseline: it is fetched again.
CREATE TABLE totals (
    account TEXT NOT NULL,
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    utc_offset TEXT NOT NULL,
    visitors BIGINT NOT NULL,
    chats BIGINT NOT NULL,
    provisional INTEGER NOT NULL DEFAULT 0,
    fetched_at BIGINT NOT NULL,
    PRIMARY KEY (account, window_start, window_end, utc_offset)
);
CREATE INDEX totals_by_window_end ON totals (window_end);

-- A digest whose data looked incomplete waits and reads again: how many reads looked so, and
-- what the last one read, so two reads that agree end the wait.
ALTER TABLE digests ADD COLUMN reads INTEGER NOT NULL DEFAULT 0;
ALTER TABLE digests ADD COLUMN last_read TEXT;
