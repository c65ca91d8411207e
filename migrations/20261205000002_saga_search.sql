-- Saga search (`GET /sagas`): newest first, by state, by kind, and by how long a saga in flight
-- has gone without a change. `updated_at` moves with every change of a saga and is in no index,
-- so a step's update stays heap-only; the `stuck_for` filter reads it among the sagas in flight
-- (`sagas_in_flight`). A fixed default: existing rows take the migration's time, without a
-- rewrite of the table.
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

-- `state` changes only when a saga starts compensating or ends, updates that are not heap-only
-- anyway (ending sets `finished_at`); `kind` never changes.
CREATE INDEX IF NOT EXISTS sagas_by_state ON sagas (state, id DESC);
CREATE INDEX IF NOT EXISTS sagas_by_kind ON sagas (kind, id DESC);
