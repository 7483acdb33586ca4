-- Keeps last_deliveries (migration 8): the write that records a delivery records this too, in
-- the same statement, and a delivery recorded last with an earlier time leaves the later one.
-- Only an update delivers: a row is made by a lease, before anything is sent.
CREATE TRIGGER last_delivery AFTER UPDATE OF delivered_at ON digests
    WHEN NEW.delivered_at IS NOT NULL AND NEW.delivered_at IS NOT OLD.delivered_at
BEGIN
    INSERT INTO last_deliveries (team, webhook, delivered_at)
        VALUES (NEW.team, NEW.webhook, NEW.delivered_at)
        ON CONFLICT (team, webhook) DO UPDATE
        SET delivered_at = max(delivered_at, excluded.delivered_at);
END;
