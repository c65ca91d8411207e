-- A saga changes on every step, and each change wrote a new entry into every index of the
-- table, because `sagas_due` indexed `deadline_at`, which every step moves. The sweeper now finds
-- due sagas among those in flight (`finished_at IS NULL`: only the last change of a saga sets it),
-- so a step's update touches no indexed column and Postgres can make it a heap-only (HOT)
-- update: no index entries, and the old version is pruned from its page without a vacuum. What
-- the sweeper reads is the sagas in flight, the work at hand, not every saga ever run.
DROP INDEX IF EXISTS sagas_due;
CREATE INDEX IF NOT EXISTS sagas_in_flight ON sagas (started_at) WHERE finished_at IS NULL;

-- A HOT update needs room on the row's own page: leave a fifth of each new page free for the
-- next versions of its rows. (Orders change while pending without touching an indexed column
-- until their status settles.)
ALTER TABLE sagas SET (fillfactor = 80);
ALTER TABLE orders SET (fillfactor = 80);
