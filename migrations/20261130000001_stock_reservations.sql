-- What reserve.lua answered for each order, written by the inventory role in the transaction
-- that queues its reply. A reply on its way (in the outbox or a queue) therefore always has its
-- row here, so `orderly reconcile` rebuilds a reserve the saga has not heard back from exactly:
-- reserved or refused as the script decided, or, with no row, not decided yet (the command's
-- redelivery or retry runs the script again on the rebuilt counters).
CREATE TABLE stock_reservations (
    order_id    uuid PRIMARY KEY,
    outcome     text NOT NULL CHECK (outcome IN ('reserved', 'rejected')),
    decided_at  timestamptz NOT NULL DEFAULT now()
);
