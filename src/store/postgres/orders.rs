//! Orders, their items and the checkout idempotency keys.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{
    order::{OrderReason, OrderStatus},
    saga::OrderChange,
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: String,
    pub reason: Option<String>,
    pub total_minor: i64,
    pub currency: String,
    pub saga_id: Uuid,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub last_seq: i32,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderRow {
    pub fn status(&self) -> OrderStatus {
        OrderStatus::parse(&self.status).unwrap_or(OrderStatus::Pending)
    }

    pub fn reason(&self) -> Option<OrderReason> {
        self.reason.as_deref().and_then(OrderReason::parse)
    }
}

// Qualified, so the same list serves joins: every query names the table `o`.
pub(super) const COLUMNS: &str = "o.id, o.customer_id, o.status, o.reason, o.total_minor, \
    o.currency::text AS currency, o.saga_id, o.cancel_requested_at, o.last_seq, o.version, \
    o.created_at, o.updated_at";

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ItemRow {
    pub order_id: Uuid,
    pub product_id: Uuid,
    pub quantity: i32,
    pub price_minor: i64,
}

/// A new order and its priced lines (written by [`super::checkout::place`]).
pub struct NewOrder<'a> {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub total_minor: i64,
    pub currency: &'a str,
    pub saga_id: Uuid,
    /// `(product, quantity, price)` per line.
    pub lines: &'a [(Uuid, i64, i64)],
}

/// Orders whose checkout has not settled yet (served by `orders_by_status`).
pub async fn pending_count(pool: &sqlx::PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'pending'")
        .fetch_one(pool)
        .await
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders o WHERE o.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The items of the given orders, in line order.
pub async fn items(
    conn: impl sqlx::PgExecutor<'_>,
    order_ids: &[Uuid],
) -> Result<Vec<ItemRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT order_id, product_id, quantity, price_minor FROM order_items \
         WHERE order_id = ANY($1) ORDER BY order_id, line",
    )
    .bind(order_ids)
    .fetch_all(conn)
    .await
}

/// A page of orders, newest first: a customer's or everyone's, optionally of one status.
pub async fn list(
    pool: &PgPool,
    customer_id: Option<Uuid>,
    status: Option<OrderStatus>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders o \
         WHERE ($1::uuid IS NULL OR customer_id = $1) AND ($2::text IS NULL OR status = $2) \
           AND ($3::uuid IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4"
    ))
    .bind(customer_id)
    .bind(status.map(OrderStatus::as_str))
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Records a customer's cancel, once, if the order is the viewer's (`None`: the admin) and has
/// not ended when the update runs; bumps the version so an orchestrator that read the order
/// before re-reads it, and takes the next history seq for the `cancel_requested` event. `None`
/// when the order is not the viewer's, has ended, or was cancelled already.
pub async fn request_cancel(
    conn: &mut PgConnection,
    id: Uuid,
    viewer: Option<Uuid>,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE orders o SET cancel_requested_at = now(), last_seq = last_seq + 1, \
                version = version + 1, updated_at = now() \
         WHERE id = $1 AND ($2::uuid IS NULL OR customer_id = $2) \
           AND cancel_requested_at IS NULL AND status IN ('pending', 'confirmed') \
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(viewer)
    .fetch_optional(conn)
    .await
}

/// Records what a saga transition did to the order, if the order is still at `seen_version`:
/// its new status, the saga now in charge, and the seq of its newest history event.
pub async fn record(
    conn: &mut PgConnection,
    id: Uuid,
    seen_version: i64,
    change: Option<OrderChange>,
    saga_id: Uuid,
    last_seq: i32,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE orders SET status = COALESCE($3, status), reason = CASE WHEN $3 IS NULL \
                THEN reason ELSE $4 END, saga_id = $5, last_seq = $6, version = version + 1, \
                updated_at = now() \
         WHERE id = $1 AND version = $2",
    )
    .bind(id)
    .bind(seen_version)
    .bind(change.map(|c| c.status.as_str()))
    .bind(change.and_then(|c| c.reason).map(OrderReason::as_str))
    .bind(saga_id)
    .bind(last_seq)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Has the customer a confirmed order containing the product?
pub async fn has_confirmed_purchase(
    pool: &PgPool,
    customer_id: Uuid,
    product_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM orders o JOIN order_items i ON i.order_id = o.id \
         WHERE o.customer_id = $1 AND i.product_id = $2 AND o.status = 'confirmed')",
    )
    .bind(customer_id)
    .bind(product_id)
    .fetch_one(pool)
    .await
}

/// What `(customer, key)` was first used for: the request's hash and the order it placed.
pub async fn key_use(
    conn: impl sqlx::PgExecutor<'_>,
    customer_id: Uuid,
    key: &str,
) -> Result<Option<(Vec<u8>, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT request_hash, order_id FROM idempotency_keys WHERE customer_id = $1 AND key = $2",
    )
    .bind(customer_id)
    .bind(key)
    .fetch_optional(conn)
    .await
}
