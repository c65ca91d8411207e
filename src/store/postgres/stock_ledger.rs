//! The durable side of stock: `stock_levels` (units on hand) and `stock_adjustments` (the ledger).

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{reservation::Record, stock::AdjustmentReason};

/// An adjustment recorded but not yet settled against Redis.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct PendingAdjustment {
    pub id: Uuid,
    pub product_id: Uuid,
    pub delta: i64,
}

pub async fn open_level(conn: &mut PgConnection, product_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO stock_levels (product_id, on_hand) VALUES ($1, 0)")
        .bind(product_id)
        .execute(conn)
        .await
        .map(drop)
}

/// What recording an adjustment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// A row with this id exists already (a retry with the same idempotency key).
    Existing {
        delta: i64,
        reason: AdjustmentReason,
    },
}

/// Records a pending adjustment, or reports the one already recorded under its id.
pub async fn record_pending(
    conn: &mut PgConnection,
    adjustment: PendingAdjustment,
    reason: AdjustmentReason,
) -> Result<Recorded, sqlx::Error> {
    // A no-op DO UPDATE so RETURNING yields the existing row on a conflict; `xmax = 0` only for
    // a freshly inserted row.
    let (delta, stored_reason, inserted): (i64, String, bool) = sqlx::query_as(
        "INSERT INTO stock_adjustments (id, product_id, delta, reason, status) \
         VALUES ($1, $2, $3, $4, 'pending') \
         ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id \
         RETURNING delta, reason, (xmax = 0)",
    )
    .bind(adjustment.id)
    .bind(adjustment.product_id)
    .bind(adjustment.delta)
    .bind(reason.as_str())
    .fetch_one(conn)
    .await?;
    Ok(if inserted {
        Recorded::New
    } else {
        Recorded::Existing {
            delta,
            reason: AdjustmentReason::parse_stored(&stored_reason),
        }
    })
}

/// Locks a product's stock level: the one lock every change of its stock is made under. With
/// `skip_locked`, returns false instead of waiting when another process holds it.
pub async fn lock_level(
    conn: &mut PgConnection,
    product_id: Uuid,
    skip_locked: bool,
) -> Result<bool, sqlx::Error> {
    let lock = if skip_locked {
        "FOR UPDATE SKIP LOCKED"
    } else {
        "FOR UPDATE"
    };
    let locked: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT on_hand FROM stock_levels WHERE product_id = $1 {lock}"
    ))
    .bind(product_id)
    .fetch_optional(conn)
    .await?;
    Ok(locked.is_some())
}

/// A product's pending adjustments, oldest first: the order they must be applied in.
pub async fn pending_for(
    conn: &mut PgConnection,
    product_id: Uuid,
) -> Result<Vec<PendingAdjustment>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, product_id, delta FROM stock_adjustments \
         WHERE product_id = $1 AND status = 'pending' ORDER BY created_at, id",
    )
    .bind(product_id)
    .fetch_all(conn)
    .await
}

/// Products with adjustments a crash or a store error left pending.
pub async fn products_with_pending(pool: &PgPool, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT product_id FROM stock_adjustments WHERE status = 'pending' \
         GROUP BY product_id ORDER BY min(created_at) LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Marks the adjustment applied and adds its delta to on-hand; returns on-hand after.
pub async fn mark_applied(
    conn: &mut PgConnection,
    adjustment: PendingAdjustment,
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "UPDATE stock_adjustments SET status = 'applied', applied_at = now() WHERE id = $1",
    )
    .bind(adjustment.id)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar(
        "UPDATE stock_levels SET on_hand = on_hand + $2, updated_at = now() \
         WHERE product_id = $1 RETURNING on_hand",
    )
    .bind(adjustment.product_id)
    .bind(adjustment.delta)
    .fetch_one(conn)
    .await
}

/// Removes an adjustment Redis refused: it never happened, so the ledger does not keep it.
pub async fn discard(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM stock_adjustments WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn is_applied(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM stock_adjustments WHERE id = $1 AND status = 'applied')",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}

pub async fn on_hand(pool: &PgPool, product_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT on_hand FROM stock_levels WHERE product_id = $1")
        .bind(product_id)
        .fetch_optional(pool)
        .await
        .map(Option::unwrap_or_default)
}

/// Sum of every applied adjustment of a product: what on-hand must equal.
pub async fn applied_total(pool: &PgPool, product_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(delta), 0)::bigint FROM stock_adjustments \
         WHERE product_id = $1 AND status = 'applied'",
    )
    .bind(product_id)
    .fetch_one(pool)
    .await
}

/// Every product's units on hand.
pub async fn all_on_hand(pool: &PgPool) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT product_id, on_hand FROM stock_levels")
        .fetch_all(pool)
        .await
}

/// Every adjustment not yet settled, of every product.
pub async fn all_pending(pool: &PgPool) -> Result<Vec<PendingAdjustment>, sqlx::Error> {
    sqlx::query_as("SELECT id, product_id, delta FROM stock_adjustments WHERE status = 'pending'")
        .fetch_all(pool)
        .await
}

/// Records what `reserve.lua` answered for orders, in the caller's transaction (the one that
/// queues the replies); the first answer stays, as it does in Redis.
pub async fn record_reservations(
    conn: &mut PgConnection,
    answers: &[(Uuid, Record)],
) -> Result<(), sqlx::Error> {
    if answers.is_empty() {
        return Ok(());
    }
    let orders: Vec<Uuid> = answers.iter().map(|(o, _)| *o).collect();
    let outcomes: Vec<&str> = answers.iter().map(|(_, r)| r.as_str()).collect();
    sqlx::query(
        "INSERT INTO stock_reservations (order_id, outcome) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[]) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(&orders)
    .bind(&outcomes)
    .execute(conn)
    .await
    .map(drop)
}
