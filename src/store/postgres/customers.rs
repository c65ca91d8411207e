//! The `customers` and `deposits` tables: identities, hashed tokens and wallets.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerRow {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub balance_minor: i64,
    pub currency: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
}

pub struct NewCustomer<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub email: &'a str,
    pub balance_minor: i64,
    pub currency: &'a str,
    pub token_hash: &'a [u8],
}

/// The unique constraint that refuses a second customer with the same email.
pub const EMAIL_CONSTRAINT: &str = "customers_email_key";

const COLUMNS: &str = "id, name, email, balance_minor, currency, version, created_at";

pub async fn insert(
    conn: &mut PgConnection,
    c: NewCustomer<'_>,
) -> Result<CustomerRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO customers (id, name, email, balance_minor, currency, token_hash) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(c.id)
    .bind(c.name)
    .bind(c.email)
    .bind(c.balance_minor)
    .bind(c.currency)
    .bind(c.token_hash)
    .fetch_one(conn)
    .await
}

pub async fn record_deposit(
    conn: &mut PgConnection,
    customer_id: Uuid,
    amount_minor: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO deposits (id, customer_id, amount_minor) VALUES ($1, $2, $3)")
        .bind(Uuid::now_v7())
        .bind(customer_id)
        .bind(amount_minor)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<CustomerRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM customers WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn find_by_email(pool: &PgPool, email: &str) -> Result<Option<CustomerRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM customers WHERE email = $1"))
        .bind(email)
        .fetch_optional(pool)
        .await
}

pub async fn id_by_token_hash(
    pool: &PgPool,
    token_hash: &[u8],
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM customers WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(pool)
        .await
}

pub async fn replace_token_hash(
    pool: &PgPool,
    id: Uuid,
    token_hash: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE customers SET token_hash = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(token_hash)
        .execute(pool)
        .await
        .map(drop)
}

/// Adds `amount_minor` to the wallet in one statement (so concurrent deposits cannot lose each
/// other) unless the balance would pass `max_balance`; `None` when nothing was changed.
pub async fn credit(
    conn: &mut PgConnection,
    id: Uuid,
    amount_minor: i64,
    max_balance: i64,
) -> Result<Option<CustomerRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE customers SET balance_minor = balance_minor + $2, version = version + 1, \
                updated_at = now() \
         WHERE id = $1 AND balance_minor <= $3 - $2 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(amount_minor)
    .bind(max_balance)
    .fetch_optional(conn)
    .await
}

/// Sum of a customer's deposits, for the money-conservation checks.
pub async fn deposited(pool: &PgPool, id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(amount_minor), 0)::bigint FROM deposits WHERE customer_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}
