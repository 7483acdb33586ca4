-- Per team, the instant (Unix milliseconds) up to which the reconciler has accounted for its
-- firings: one after it whose digest nothing recorded is reported missed, never lost silently.
CREATE TABLE watermarks (
    team TEXT PRIMARY KEY,
    planned_until BIGINT NOT NULL
);

-- POSTs of a digest that may have reached its receiver, across rounds, processes and `once`
-- runs, whatever the answers: what bounds the copies one receiver can get.
ALTER TABLE digests ADD COLUMN posts INTEGER NOT NULL DEFAULT 0;

-- An alert's detail, and when it went out: one recorded but not sent (the process stopped
-- first) is sent by the next start.
ALTER TABLE alerts ADD COLUMN detail TEXT;
ALTER TABLE alerts ADD COLUMN sent_at BIGINT;
-- Alerts from before this column went out when they were raised.
UPDATE alerts SET sent_at = raised_at;
