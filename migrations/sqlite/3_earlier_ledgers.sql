-- A ledger of the first version kept one row per delivered (team, date, webhook); this table
-- is empty unless the ledger is one of those.
CREATE TABLE IF NOT EXISTS deliveries (team TEXT, date TEXT, webhook TEXT, delivered_at TEXT);
INSERT OR IGNORE INTO digests (team, first_day, last_day, webhook, state, attempts, delivered_at)
    SELECT team, date, date, webhook, 'delivered', 1, CAST(strftime('%s', delivered_at) AS INTEGER)
    FROM deliveries;
DROP TABLE deliveries;
DROP TABLE IF EXISTS claims;
-- Ledgers before these migrations kept SQLite's leases in seconds.
UPDATE digests SET lease_until = lease_until * 1000 WHERE lease_until < 100000000000;
