-- no-transaction
-- Checkout's per-customer bound counts a customer's pending orders: this keeps that count's cost
-- to the orders in flight, not every order the customer ever placed. Built concurrently, so a
-- large orders table keeps taking checkouts meanwhile (and so alone in its migration, outside a
-- transaction).
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_pending_by_customer
    ON orders (customer_id) WHERE status = 'pending';
