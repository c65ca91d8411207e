-- Orders, their sagas, the outbox and inbox that carry saga messages, and the payments ledger.
-- Every row that two writers may race on carries a version; writers update it with
-- `WHERE version = $seen` and re-read when they lose.

CREATE TABLE orders (
    id            uuid PRIMARY KEY,            -- v7: time-ordered, so `ORDER BY id DESC` is newest first
    customer_id   uuid NOT NULL REFERENCES customers (id),
    status        text NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected', 'cancelled')),
    reason        text CHECK (reason IN ('insufficient_stock', 'insufficient_funds', 'cancelled_by_customer', 'timed_out', 'product_unavailable')),
    total_minor   bigint NOT NULL CHECK (total_minor >= 0),
    currency      char(3) NOT NULL,
    -- The saga now in charge of the order: the checkout, or later its cancellation.
    saga_id       uuid NOT NULL,
    -- Set once by the first accepted cancel; a second cancel is refused.
    cancel_requested_at timestamptz,
    -- The seq of the newest history event; the next event takes last_seq + 1 under the version
    -- check, so seqs are contiguous from 1.
    last_seq      integer NOT NULL CHECK (last_seq >= 1),
    version       bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_by_customer ON orders (customer_id, id DESC);
CREATE INDEX orders_by_status ON orders (status, id DESC);

-- Prices are copied from the catalog when the order is placed.
CREATE TABLE order_items (
    order_id     uuid NOT NULL REFERENCES orders (id),
    line         smallint NOT NULL,
    product_id   uuid NOT NULL REFERENCES products (id),
    quantity     integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    price_minor  bigint NOT NULL CHECK (price_minor >= 0),
    PRIMARY KEY (order_id, line),
    UNIQUE (order_id, product_id)
);
-- verified_purchase: has this customer a confirmed order with this product?
CREATE INDEX order_items_by_product ON order_items (product_id);

CREATE TABLE sagas (
    id           uuid PRIMARY KEY,
    order_id     uuid NOT NULL REFERENCES orders (id),
    kind         text NOT NULL CHECK (kind IN ('checkout', 'cancellation')),
    state        text NOT NULL CHECK (state IN ('running', 'compensating', 'completed', 'compensated', 'failed')),
    reason       text,
    steps        jsonb NOT NULL,
    -- When the step in flight is due; the sweeper acts on sagas past it.
    deadline_at  timestamptz,
    version      bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    UNIQUE (order_id, kind)
);
CREATE INDEX sagas_due ON sagas (deadline_at) WHERE deadline_at IS NOT NULL;

-- Every message a saga handled, stale ones included: the audit trail behind its state.
CREATE TABLE saga_log (
    saga_id     uuid NOT NULL REFERENCES sagas (id),
    entry       bigserial,
    event       text NOT NULL,
    message_id  uuid,
    stale       boolean NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, entry)
);

-- One checkout per customer and key, however concurrently the key is sent: the primary key
-- decides, not a check before the insert.
CREATE TABLE idempotency_keys (
    customer_id   uuid NOT NULL REFERENCES customers (id),
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    order_id      uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, key)
);

-- Messages waiting for the relay. A row is written in the transaction that decided to send it
-- and deleted once RabbitMQ has confirmed it, so the table holds only the backlog.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    message_id   uuid NOT NULL,
    exchange     text NOT NULL CHECK (exchange IN ('commands', 'events')),
    routing_key  text NOT NULL,
    body         jsonb NOT NULL,                 -- the envelope; its AMQP headers are derived from it
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orderly_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Tells `GET /orders/{id}?wait=` that an order left `pending`.
CREATE FUNCTION order_settled_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orderly_order_settled', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER order_settled_notify AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending')
    EXECUTE FUNCTION order_settled_notify();

-- Message ids each Postgres-writing consumer has processed, written in the transaction of the
-- effect: a redelivered message finds its id and changes nothing.
CREATE TABLE inbox (
    consumer      text NOT NULL,
    message_id    uuid NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_by_age ON inbox (processed_at);

-- One row per order the payments role has seen. `charged` and `refunded` rows moved money;
-- `declined` and `voided` ones did not, and refuse any later charge (a voided row is the
-- tombstone a refund leaves when it overtakes its charge).
CREATE TABLE payments (
    order_id      uuid PRIMARY KEY,
    customer_id   uuid NOT NULL REFERENCES customers (id),
    amount_minor  bigint NOT NULL CHECK (amount_minor >= 0),
    status        text NOT NULL CHECK (status IN ('charged', 'declined', 'voided', 'refunded')),
    charged_at    timestamptz,
    refunded_at   timestamptz,
    version       bigint NOT NULL DEFAULT 1
);
CREATE INDEX payments_by_customer ON payments (customer_id);
