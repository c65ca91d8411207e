-- The tables orderly uses as queues. The outbox and inbox take rows in and out all day; orders
-- and sagas change state several times each; saga_log only grows until its retention prunes it.
-- Autovacuum's default waits for a fifth of a table to be dead before it cleans it, and by then
-- a queue's hot indexes (the outbox's head, the pending orders) are mostly dead entries that
-- every query walks past. These tables are cleaned after a fixed number of changes instead, and
-- without pausing between pages: the work is small each time, and it is never worth postponing.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE inbox SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE orders SET (
    autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 2000,
    autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE sagas SET (
    autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 2000,
    autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE saga_log SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0
);

-- The saga log's retention deletes the oldest entries first.
CREATE INDEX saga_log_by_age ON saga_log (at);
