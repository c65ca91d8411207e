//! Orders, their items and the checkout idempotency keys.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use super::sagas::SagaRow;

use crate::domain::{
    order::{OrderLine, OrderReason, OrderStatus},
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

/// The lines of the given orders, each order's in line order.
pub async fn lines(
    conn: impl sqlx::PgExecutor<'_>,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<OrderLine>>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, i32)> = sqlx::query_as(
        "SELECT order_id, product_id, quantity FROM order_items \
         WHERE order_id = ANY($1) ORDER BY order_id, line",
    )
    .bind(order_ids)
    .fetch_all(conn)
    .await?;
    let mut lines: HashMap<Uuid, Vec<OrderLine>> = HashMap::with_capacity(order_ids.len());
    for (order_id, product_id, quantity) in rows {
        lines.entry(order_id).or_default().push(OrderLine {
            product_id,
            quantity: i64::from(quantity),
        });
    }
    Ok(lines)
}

/// An order as the API shows it: with its lines and the saga now in charge, read together.
#[derive(Debug, Clone)]
pub struct OrderWithSaga {
    pub order: OrderRow,
    pub items: Vec<ItemRow>,
    pub saga: SagaRow,
}

#[derive(sqlx::FromRow)]
struct WithSaga {
    #[sqlx(flatten)]
    order: OrderRow,
    #[sqlx(flatten)]
    saga: super::sagas::Raw,
    items: Json<Vec<ItemJson>>,
}

#[derive(serde::Deserialize)]
struct ItemJson {
    product_id: Uuid,
    quantity: i32,
    price_minor: i64,
}

impl From<WithSaga> for OrderWithSaga {
    fn from(row: WithSaga) -> Self {
        let order_id = row.order.id;
        Self {
            items: row
                .items
                .0
                .into_iter()
                .map(|i| ItemRow {
                    order_id,
                    product_id: i.product_id,
                    quantity: i.quantity,
                    price_minor: i.price_minor,
                })
                .collect(),
            saga: row.saga.into(),
            order: row.order,
        }
    }
}

/// `SELECT` list of [`WithSaga`]: the order, its saga in charge, and its lines as JSON.
fn with_saga_columns() -> String {
    format!(
        "{COLUMNS}, {}, (SELECT COALESCE(json_agg(json_build_object('product_id', i.product_id, \
         'quantity', i.quantity, 'price_minor', i.price_minor) ORDER BY i.line), '[]') \
         FROM order_items i WHERE i.order_id = o.id) AS items",
        super::sagas::COLUMNS
    )
}

/// An order with its lines and saga, in one read.
pub async fn find_with_saga(
    conn: impl sqlx::PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<OrderWithSaga>, sqlx::Error> {
    let row: Option<WithSaga> = sqlx::query_as(&format!(
        "SELECT {} FROM orders o JOIN sagas s ON s.id = o.saga_id WHERE o.id = $1",
        with_saga_columns()
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// A page of orders with their lines and sagas, newest first: a customer's or everyone's,
/// optionally of one status.
pub async fn list(
    pool: &PgPool,
    customer_id: Option<Uuid>,
    status: Option<OrderStatus>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<OrderWithSaga>, sqlx::Error> {
    let rows: Vec<WithSaga> = sqlx::query_as(&format!(
        "SELECT {} FROM orders o JOIN sagas s ON s.id = o.saga_id \
         WHERE ($1::uuid IS NULL OR o.customer_id = $1) AND ($2::text IS NULL OR o.status = $2) \
           AND ($3::uuid IS NULL OR o.id < $3) \
         ORDER BY o.id DESC LIMIT $4",
        with_saga_columns()
    ))
    .bind(customer_id)
    .bind(status.map(OrderStatus::as_str))
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
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

/// The orders of `ids`, locked for the caller's transaction (in id order; before their sagas,
/// see [`super::sagas::lock`]).
pub async fn lock(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders o WHERE o.id = ANY($1) ORDER BY o.id FOR NO KEY UPDATE"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// What saga transitions did to an order, to be recorded if it is still at `seen_version`.
pub struct OrderRecord {
    pub id: Uuid,
    pub seen_version: i64,
    pub change: Option<OrderChange>,
    pub saga_id: Uuid,
    pub last_seq: i32,
}

/// Records several orders' changes in one statement (see [`record`]); `false`, having written
/// some perhaps, when any order had moved (the caller rolls back and decides again).
pub async fn record_many(
    conn: &mut PgConnection,
    records: &[OrderRecord],
) -> Result<bool, sqlx::Error> {
    if records.is_empty() {
        return Ok(true);
    }
    let ids: Vec<Uuid> = records.iter().map(|r| r.id).collect();
    let seen: Vec<i64> = records.iter().map(|r| r.seen_version).collect();
    let statuses: Vec<Option<&str>> = records
        .iter()
        .map(|r| r.change.map(|c| c.status.as_str()))
        .collect();
    let reasons: Vec<Option<&str>> = records
        .iter()
        .map(|r| r.change.and_then(|c| c.reason).map(OrderReason::as_str))
        .collect();
    let sagas: Vec<Uuid> = records.iter().map(|r| r.saga_id).collect();
    let seqs: Vec<i32> = records.iter().map(|r| r.last_seq).collect();
    let done = sqlx::query(
        "UPDATE orders o SET status = COALESCE(u.status, o.status), \
                reason = CASE WHEN u.status IS NULL THEN o.reason ELSE u.reason END, \
                saga_id = u.saga, last_seq = u.seq, version = o.version + 1, updated_at = now() \
           FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::uuid[], \
                       $6::int[]) AS u(id, seen, status, reason, saga, seq) \
          WHERE o.id = u.id AND o.version = u.seen",
    )
    .bind(&ids)
    .bind(&seen)
    .bind(&statuses)
    .bind(&reasons)
    .bind(&sagas)
    .bind(&seqs)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == records.len() as u64)
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
