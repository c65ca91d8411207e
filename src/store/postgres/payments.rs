//! Payments: one row per order the payments role has seen, and the wallets they move.

use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Charged,
    Declined,
    Voided,
    Refunded,
}

impl PaymentStatus {
    fn parse(raw: &str) -> Self {
        match raw {
            "charged" => Self::Charged,
            "declined" => Self::Declined,
            "refunded" => Self::Refunded,
            _ => Self::Voided,
        }
    }
}

/// Claims the order for a charge of `amount_minor` (as `charged`); `false` when the order
/// already has a row — charged, declined, or voided by a refund that came first.
pub async fn claim_charge(
    conn: &mut PgConnection,
    order_id: Uuid,
    customer_id: Uuid,
    amount_minor: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO payments (order_id, customer_id, amount_minor, status, charged_at) \
         VALUES ($1, $2, $3, 'charged', now()) ON CONFLICT DO NOTHING",
    )
    .bind(order_id)
    .bind(customer_id)
    .bind(amount_minor)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Leaves the tombstone of a refund that found nothing to refund; `false` when the order
/// already has a row.
pub async fn claim_void(
    conn: &mut PgConnection,
    order_id: Uuid,
    customer_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO payments (order_id, customer_id, amount_minor, status) \
         VALUES ($1, $2, 0, 'voided') ON CONFLICT DO NOTHING",
    )
    .bind(order_id)
    .bind(customer_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The order's payment, locked for the caller's transaction.
pub async fn lock(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<(PaymentStatus, i64)>, sqlx::Error> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT status, amount_minor FROM payments WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(s, a)| (PaymentStatus::parse(&s), a)))
}

pub async fn mark(
    conn: &mut PgConnection,
    order_id: Uuid,
    status: PaymentStatus,
) -> Result<(), sqlx::Error> {
    let (status, column) = match status {
        PaymentStatus::Declined => ("declined", "charged_at"),
        PaymentStatus::Refunded => ("refunded", "refunded_at"),
        PaymentStatus::Charged => ("charged", "charged_at"),
        PaymentStatus::Voided => ("voided", "refunded_at"),
    };
    sqlx::query(&format!(
        "UPDATE payments SET status = $2, {column} = now(), version = version + 1 \
         WHERE order_id = $1"
    ))
    .bind(order_id)
    .bind(status)
    .execute(conn)
    .await
    .map(drop)
}

/// A wallet's balance and version.
pub async fn wallet(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT balance_minor, version FROM customers WHERE id = $1")
        .bind(customer_id)
        .fetch_optional(conn)
        .await
}

/// Moves a wallet by `delta` if it is still at `seen_version` and stays at or above zero;
/// `false` when another writer got there first (re-read and decide again).
pub async fn move_wallet(
    conn: &mut PgConnection,
    customer_id: Uuid,
    delta: i64,
    seen_version: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE customers SET balance_minor = balance_minor + $2, version = version + 1, \
                updated_at = now() \
         WHERE id = $1 AND version = $3 AND balance_minor + $2 >= 0",
    )
    .bind(customer_id)
    .bind(delta)
    .bind(seen_version)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a customer was charged and refunded in all, for the money-conservation checks.
pub async fn totals(conn: &mut PgConnection, customer_id: Uuid) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(SUM(amount_minor) FILTER (WHERE status IN ('charged', 'refunded')), 0)::bigint, \
                COALESCE(SUM(amount_minor) FILTER (WHERE status = 'refunded'), 0)::bigint \
         FROM payments WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_one(conn)
    .await
}
