//! A checkout's writes in one statement: the idempotency key, the order, its items, its saga and
//! its outbox rows.
//!
//! One statement rather than a transaction of five: under load every round trip waits its turn
//! for a CPU, and `POST /orders` latency was mostly those waits. A statement is atomic on its
//! own, and the foreign keys between its parts are checked when it ends.

use sqlx::types::Json;
use uuid::Uuid;

use super::{
    orders::{COLUMNS, ItemRow, NewOrder, OrderRow},
    outbox,
};
use crate::{domain::order::OrderReason, domain::saga::Saga, messaging::envelope::Outbound};

/// Everything a new checkout writes.
pub struct Placement<'a> {
    pub order: NewOrder<'a>,
    pub key: &'a str,
    pub request_hash: &'a [u8],
    pub saga: &'a Saga,
    pub outgoing: &'a [Outbound],
    /// The customer's pending orders at which nothing is written; 0: no bound.
    pub max_pending: i64,
}

/// Writes the checkout if `(customer, key)` is new and the customer has fewer than
/// `max_pending` orders pending, and returns the order and its items as stored; `None`, writing
/// nothing, when the key was used before (a concurrent request with the same key is waited for
/// first) or the customer is at its bound. The bound is soft: concurrent checkouts of one
/// customer count each other's orders only once committed.
pub async fn place(
    conn: impl sqlx::PgExecutor<'_>,
    p: &Placement<'_>,
) -> Result<Option<(OrderRow, Vec<ItemRow>)>, sqlx::Error> {
    let order = &p.order;
    let lines: Vec<i16> = (0..order.lines.len() as i16).collect();
    let products: Vec<Uuid> = order.lines.iter().map(|l| l.0).collect();
    let quantities: Vec<i32> = order.lines.iter().map(|l| l.1 as i32).collect();
    let prices: Vec<i64> = order.lines.iter().map(|l| l.2).collect();
    let out = outbox::Rows::of(p.outgoing);
    // Every later part selects from `claimed`: a used key, or a customer at its bound, inserts
    // nothing anywhere. The count stops at the bound, so its cost does not grow past it.
    let row: Option<OrderRow> = sqlx::query_as(&format!(
        "WITH claimed AS ( \
             INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id) \
             SELECT $2::uuid, $6::text, $7::bytea, $1::uuid \
              WHERE $23::bigint <= 0 OR (SELECT count(*) FROM (SELECT 1 FROM orders \
                                  WHERE customer_id = $2 AND status = 'pending' LIMIT $23) p) < $23 \
             ON CONFLICT DO NOTHING RETURNING order_id \
         ), placed AS ( \
             INSERT INTO orders AS o (id, customer_id, status, total_minor, currency, saga_id, \
                                      last_seq) \
             SELECT order_id, $2, 'pending', $3, $4, $5, 1 FROM claimed RETURNING {COLUMNS} \
         ), items AS ( \
             INSERT INTO order_items (order_id, line, product_id, quantity, price_minor) \
             SELECT placed.id, u.* FROM placed, \
                    UNNEST($8::smallint[], $9::uuid[], $10::int[], $11::bigint[]) u \
         ), saga AS ( \
             INSERT INTO sagas (id, order_id, kind, state, reason, steps, deadline_at, \
                                started_at, finished_at) \
             SELECT $5, placed.id, $12, $13, $14, $15, $16, $17, $18 FROM placed \
         ), queued AS ( \
             INSERT INTO outbox (message_id, exchange, routing_key, body) \
             SELECT u.* FROM placed, \
                    UNNEST($19::uuid[], $20::text[], $21::text[], $22::text[]::jsonb[]) u \
         ) \
         SELECT * FROM placed"
    ))
    .bind(order.id)
    .bind(order.customer_id)
    .bind(order.total_minor)
    .bind(order.currency)
    .bind(order.saga_id)
    .bind(p.key)
    .bind(p.request_hash)
    .bind(&lines)
    .bind(&products)
    .bind(&quantities)
    .bind(&prices)
    .bind(p.saga.kind.as_str())
    .bind(p.saga.state.as_str())
    .bind(p.saga.reason.map(OrderReason::as_str))
    .bind(Json(&p.saga.steps))
    .bind(p.saga.deadline)
    .bind(p.saga.started_at)
    .bind(p.saga.finished_at)
    .bind(&out.ids)
    .bind(&out.exchanges)
    .bind(&out.keys)
    .bind(&out.bodies)
    .bind(p.max_pending)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| {
        let items = order
            .lines
            .iter()
            .zip(quantities)
            .map(|(&(product_id, _, price_minor), quantity)| ItemRow {
                order_id: order.id,
                product_id,
                quantity,
                price_minor,
            })
            .collect();
        (row, items)
    }))
}
