-- Reports fetched before, so a comparison with an earlier span needs no new request.
-- Keyed by the exact window the API was asked for; pruned after history_days.
CREATE TABLE IF NOT EXISTS history (
    account TEXT NOT NULL,
    window_start TEXT NOT NULL,
    window_end TEXT NOT NULL,
    utc_offset TEXT NOT NULL,
    report TEXT NOT NULL,
    fetched_at BIGINT NOT NULL,
    PRIMARY KEY (account, window_start, window_end, utc_offset)
);
CREATE INDEX IF NOT EXISTS history_by_window_end ON history (window_end);
