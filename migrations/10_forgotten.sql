-- The first day whose digests the ledger still remembers, once it has forgotten any ([state]
-- keep_days): a digest that ended before it may have been sent without a row saying so, so
-- `once --date` sends it only when forced. No row: nothing was ever forgotten.
CREATE TABLE forgotten (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    before_day TEXT NOT NULL
);
