-- Keeps last_deliveries (migration 8): the write that records a delivery records this too, in
-- the same statement, and a delivery recorded last with an earlier time leaves the later one.
-- Only an update delivers: a row is made by a lease, before anything is sent. Made after the
-- fill, in a transaction of its own: its lock on digests holds every replica's writes until
-- it commits, for a moment. A delivery another replica records between the two is caught at
-- its webhook's next one.
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
