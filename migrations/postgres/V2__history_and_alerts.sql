-- Reports fetched before, so a comparison with an earlier span needs no new request.
-- Keyed by the exact window the API was asked for; pruned after [history_days].
CREATE TABLE history (
    account TEXT NOT NULL,
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    utc_offset TEXT NOT NULL,
    report TEXT NOT NULL,
    fetched_at BIGINT NOT NULL,
    PRIMARY KEY (account, window_start, window_end, utc_offset)
);
CREATE INDEX history_by_window_end ON history (window_end);

-- One row per failure alert sent, so restarts and replicas never send it twice.
CREATE TABLE alerts (
    team TEXT NOT NULL,
    first_day TEXT NOT NULL,
    last_day TEXT NOT NULL,
    webhook TEXT NOT NULL,
    reason TEXT NOT NULL,
    raised_at BIGINT NOT NULL,
    PRIMARY KEY (team, first_day, last_day, webhook, reason)
);
