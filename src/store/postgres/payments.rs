//! Payments: one row per order the payments role has seen, and the wallets they move. Read and
//! written a batch at a time: the rows a batch decides on are locked as they are read, so what
//! it decides in memory (see [`crate::domain::payment`]) still holds when it writes.

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::payment::{Payment, PaymentStatus};

/// The existing payments of `orders`, locked for the caller's transaction (in order id order,
/// so two batches never wait on each other in a circle).
pub async fn lock(
    conn: &mut PgConnection,
    orders: &[Uuid],
) -> Result<HashMap<Uuid, Payment>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, String, i64)> = sqlx::query_as(
        "SELECT order_id, customer_id, status, amount_minor FROM payments \
         WHERE order_id = ANY($1) ORDER BY order_id FOR NO KEY UPDATE",
    )
    .bind(orders)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(order, customer_id, status, amount_minor)| {
            let status = PaymentStatus::parse(&status)?;
            Some((
                order,
                Payment {
                    customer_id,
                    status,
                    amount_minor,
                },
            ))
        })
        .collect())
}

/// The balances of `customers`' wallets, locked for the caller's transaction (in id order).
pub async fn lock_wallets(
    conn: &mut PgConnection,
    customers: &[Uuid],
) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, balance_minor FROM customers WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(customers)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Inserts payments no row existed for when they were decided; returns how many went in. Fewer
/// than given means another writer created one of them meanwhile (a row that did not exist
/// could not be locked): the caller's decision no longer holds.
pub async fn insert(
    conn: &mut PgConnection,
    payments: &[(Uuid, Payment)],
) -> Result<u64, sqlx::Error> {
    if payments.is_empty() {
        return Ok(0);
    }
    let orders: Vec<Uuid> = payments.iter().map(|(o, _)| *o).collect();
    let customers: Vec<Uuid> = payments.iter().map(|(_, p)| p.customer_id).collect();
    let amounts: Vec<i64> = payments.iter().map(|(_, p)| p.amount_minor).collect();
    let statuses: Vec<&str> = payments.iter().map(|(_, p)| p.status.as_str()).collect();
    let done = sqlx::query(
        "INSERT INTO payments (order_id, customer_id, amount_minor, status, charged_at, \
                               refunded_at) \
         SELECT o, c, a, s, \
                CASE WHEN s IN ('charged', 'declined', 'refunded') THEN now() END, \
                CASE WHEN s = 'refunded' THEN now() END \
           FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[]) AS u(o, c, a, s) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&orders)
    .bind(&customers)
    .bind(&amounts)
    .bind(&statuses)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Sets the status of existing payments (locked by [`lock`]).
pub async fn set_status(
    conn: &mut PgConnection,
    changes: &[(Uuid, PaymentStatus)],
) -> Result<(), sqlx::Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let orders: Vec<Uuid> = changes.iter().map(|(o, _)| *o).collect();
    let statuses: Vec<&str> = changes.iter().map(|(_, s)| s.as_str()).collect();
    sqlx::query(
        "UPDATE payments p SET status = u.s, version = p.version + 1, \
                refunded_at = CASE WHEN u.s = 'refunded' THEN now() ELSE p.refunded_at END \
           FROM UNNEST($1::uuid[], $2::text[]) AS u(o, s) WHERE p.order_id = u.o",
    )
    .bind(&orders)
    .bind(&statuses)
    .execute(conn)
    .await
    .map(drop)
}

/// Sets wallets (locked by [`lock_wallets`]) to their new balances.
pub async fn set_balances(
    conn: &mut PgConnection,
    balances: &[(Uuid, i64)],
) -> Result<(), sqlx::Error> {
    if balances.is_empty() {
        return Ok(());
    }
    let customers: Vec<Uuid> = balances.iter().map(|(c, _)| *c).collect();
    let amounts: Vec<i64> = balances.iter().map(|(_, b)| *b).collect();
    sqlx::query(
        "UPDATE customers c SET balance_minor = u.b, version = c.version + 1, updated_at = now() \
           FROM UNNEST($1::uuid[], $2::bigint[]) AS u(id, b) WHERE c.id = u.id",
    )
    .bind(&customers)
    .bind(&amounts)
    .execute(conn)
    .await
    .map(drop)
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
