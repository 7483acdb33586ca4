-- When each team's webhook last had a digest delivered, which a daemon's metrics start from.
-- Read from the digests themselves, that was every row of the ledger at each start and reload:
-- 2.4 s at 10,000 teams after a year, ten times that at 100,000. A trigger keeps it, so the
-- write that records a delivery records this too, in the same statement. Only an update
-- delivers: a row is made by a lease, before anything is sent. (SQLite's is the same table
-- and trigger, in its own dialect.) Filled before the trigger is made: the trigger's lock on
-- digests holds every replica's writes until this commits, so it is taken last, for a moment.
-- A delivery another replica records while this fills is caught at its webhook's next one.
CREATE TABLE last_deliveries (
    team TEXT NOT NULL,
    webhook TEXT NOT NULL,
    delivered_at BIGINT NOT NULL,
    PRIMARY KEY (team, webhook)
);
INSERT INTO last_deliveries (team, webhook, delivered_at)
    SELECT team, webhook, max(delivered_at) FROM digests
    WHERE delivered_at IS NOT NULL GROUP BY team, webhook;
CREATE FUNCTION last_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO last_deliveries (team, webhook, delivered_at)
        VALUES (NEW.team, NEW.webhook, NEW.delivered_at)
        ON CONFLICT (team, webhook) DO UPDATE
        SET delivered_at = greatest(last_deliveries.delivered_at, excluded.delivered_at);
    RETURN NULL;
END
$$;
CREATE TRIGGER last_delivery AFTER UPDATE OF delivered_at ON digests FOR EACH ROW
    WHEN (NEW.delivered_at IS NOT NULL AND NEW.delivered_at IS DISTINCT FROM OLD.delivered_at)
    EXECUTE FUNCTION last_delivery();
