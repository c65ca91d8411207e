//! The durable side of stock: `stock_levels` (units on hand) and `stock_adjustments` (the ledger).

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::stock::AdjustmentReason;

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

pub async fn record_pending(
    conn: &mut PgConnection,
    adjustment: PendingAdjustment,
    reason: AdjustmentReason,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stock_adjustments (id, product_id, delta, reason, status) \
         VALUES ($1, $2, $3, $4, 'pending')",
    )
    .bind(adjustment.id)
    .bind(adjustment.product_id)
    .bind(adjustment.delta)
    .bind(reason.as_str())
    .execute(conn)
    .await
    .map(drop)
}

/// Locks the adjustment while it is still pending. With `skip_locked`, one that another process
/// is settling right now is passed over instead of waited for.
pub async fn lock_pending(
    conn: &mut PgConnection,
    id: Uuid,
    skip_locked: bool,
) -> Result<Option<PendingAdjustment>, sqlx::Error> {
    let lock = if skip_locked {
        "FOR UPDATE SKIP LOCKED"
    } else {
        "FOR UPDATE"
    };
    sqlx::query_as(&format!(
        "SELECT id, product_id, delta FROM stock_adjustments \
         WHERE id = $1 AND status = 'pending' {lock}"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The oldest pending adjustments: those a crash or a Redis error left unsettled.
pub async fn pending_ids(pool: &PgPool, limit: i64) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM stock_adjustments WHERE status = 'pending' ORDER BY created_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Marks the (locked) adjustment applied and adds its delta to on-hand; returns on-hand after.
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
