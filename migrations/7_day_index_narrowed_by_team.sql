-- The index by last day also holds the team, so no lookup of one digest can walk a whole day.
-- PostgreSQL plans a statement it runs again and again once per connection; planned while the
-- table was new and empty, the keyed read of a digest went by the last day alone and filtered
-- every team's row of that day (at 20,000 teams a day, 286 µs a read where the key takes a few).
-- With the team in it, whichever index the planner takes finds one team's rows of the day.
DROP INDEX IF EXISTS digests_by_last_day;
CREATE INDEX digests_by_last_day ON digests (last_day, team);
