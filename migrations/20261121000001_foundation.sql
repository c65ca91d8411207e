-- The catalog, customers' wallets and the durable stock ledger.
-- Redis holds the fast `available` counter per product; these tables are the record it is rebuilt from.

CREATE TABLE categories (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id           uuid PRIMARY KEY,
    sku          text NOT NULL,
    name         text NOT NULL,
    price_minor  bigint NOT NULL CHECK (price_minor >= 0),
    currency     char(3) NOT NULL,
    category_id  uuid NOT NULL REFERENCES categories (id),
    version      bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: orders placed earlier keep pointing at the row.
    deleted_at   timestamptz
);

-- A SKU is unique among live products; a deleted product's SKU may be reused.
CREATE UNIQUE INDEX products_live_sku ON products (sku) WHERE deleted_at IS NULL;
CREATE INDEX products_live_by_category ON products (category_id, id) WHERE deleted_at IS NULL;

CREATE TABLE customers (
    id             uuid PRIMARY KEY,
    name           text NOT NULL,
    email          text NOT NULL UNIQUE,
    balance_minor  bigint NOT NULL CHECK (balance_minor >= 0),
    currency       char(3) NOT NULL,
    version        bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
    -- SHA-256 of the bearer token; the token itself is shown once and never stored.
    token_hash     bytea NOT NULL UNIQUE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Every credit to a wallet, so balance = deposits - charges + refunds can be checked.
CREATE TABLE deposits (
    id            uuid PRIMARY KEY,
    customer_id   uuid NOT NULL REFERENCES customers (id),
    amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deposits_by_customer ON deposits (customer_id);

-- Units physically on hand: the sum of the product's settled adjustments, and, once nothing is
-- pending, equal to available (Redis) + held by reservations. Adjustments are applied to Redis and
-- settled here in one order, under a lock on this row, so on_hand only ever takes values Redis's
-- counter took, which are never negative.
CREATE TABLE stock_levels (
    product_id  uuid PRIMARY KEY REFERENCES products (id),
    on_hand     bigint NOT NULL CHECK (on_hand >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The ledger of stock adjustments. A row is written `pending` before Redis is touched and
-- becomes `applied` once Redis has applied it; a refused one is removed. See services/stock.rs.
-- An adjustment sent with an Idempotency-Key has an id derived from it, so a retry finds its row.
CREATE TABLE stock_adjustments (
    id          uuid PRIMARY KEY,
    product_id  uuid NOT NULL REFERENCES products (id),
    delta       bigint NOT NULL CHECK (delta <> 0),
    reason      text NOT NULL CHECK (reason IN ('initial', 'restock', 'correction', 'damage')),
    status      text NOT NULL CHECK (status IN ('pending', 'applied')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    applied_at  timestamptz
);
CREATE INDEX stock_adjustments_by_product ON stock_adjustments (product_id, created_at);
CREATE INDEX stock_adjustments_pending ON stock_adjustments (product_id, created_at, id) WHERE status = 'pending';
