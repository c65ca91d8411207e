//! The `products` and `categories` tables.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A live product as Postgres knows it (name, price, category, version).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductRow {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub category: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct NewProduct<'a> {
    pub id: Uuid,
    pub sku: &'a str,
    pub name: &'a str,
    pub price_minor: i64,
    pub currency: &'a str,
    pub category_id: Uuid,
}

/// The fields a patch may change; `None` leaves a field as it is.
#[derive(Default)]
pub struct ProductChanges<'a> {
    pub name: Option<&'a str>,
    pub price_minor: Option<i64>,
    pub category_id: Option<Uuid>,
}

/// The unique index that refuses a second live product with the same SKU.
pub const SKU_CONSTRAINT: &str = "products_live_sku";

const SELECT_LIVE: &str = "SELECT p.id, p.sku, p.name, p.price_minor, p.currency, c.name AS category, \
     p.version, p.created_at, p.updated_at \
     FROM products p JOIN categories c ON c.id = p.category_id WHERE p.deleted_at IS NULL";

/// The id of the category called `name`, created when it is new.
pub async fn ensure_category(conn: &mut PgConnection, name: &str) -> Result<Uuid, sqlx::Error> {
    // DO UPDATE (a no-op) rather than DO NOTHING so RETURNING yields the row in both cases.
    sqlx::query_scalar(
        "INSERT INTO categories (id, name) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_one(conn)
    .await
}

pub async fn insert(conn: &mut PgConnection, p: NewProduct<'_>) -> Result<ProductRow, sqlx::Error> {
    sqlx::query_as(
        "WITH p AS (INSERT INTO products (id, sku, name, price_minor, currency, category_id) \
                    VALUES ($1, $2, $3, $4, $5, $6) RETURNING *) \
         SELECT p.id, p.sku, p.name, p.price_minor, p.currency, c.name AS category, \
                p.version, p.created_at, p.updated_at \
         FROM p JOIN categories c ON c.id = p.category_id",
    )
    .bind(p.id)
    .bind(p.sku)
    .bind(p.name)
    .bind(p.price_minor)
    .bind(p.currency)
    .bind(p.category_id)
    .fetch_one(conn)
    .await
}

pub async fn find_live(pool: &PgPool, id: Uuid) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT_LIVE} AND p.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn find_live_by_sku(pool: &PgPool, sku: &str) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT_LIVE} AND p.sku = $1"))
        .bind(sku)
        .fetch_optional(pool)
        .await
}

pub async fn is_live(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM products WHERE id = $1 AND deleted_at IS NULL)",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}

/// Live products after `after` in id order (ids are time-ordered UUIDv7), optionally in one
/// category: one query per page, whatever its size.
pub async fn list_live(
    pool: &PgPool,
    category: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ProductRow>, sqlx::Error> {
    // One statement per filter rather than `($1 IS NULL OR …)`: a prepared statement's generic
    // plan cannot use an index for an optional condition, and sorted the whole catalog for
    // every page. The nil UUID sorts before every id, so "no cursor" is `id > nil`.
    let after = after.unwrap_or(Uuid::nil());
    match category {
        None => {
            sqlx::query_as(&format!(
                "{SELECT_LIVE} AND p.id > $1 ORDER BY p.id LIMIT $2"
            ))
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await
        }
        Some(name) => {
            sqlx::query_as(&format!(
                "{SELECT_LIVE} AND p.id > $1 AND c.name = $3 ORDER BY p.id LIMIT $2"
            ))
            .bind(after)
            .bind(limit)
            .bind(name)
            .fetch_all(pool)
            .await
        }
    }
}

/// Applies `changes` when the product is live and at one of `versions` (any, when `None`);
/// `None` otherwise.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    versions: Option<&[i64]>,
    changes: ProductChanges<'_>,
) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as(
        "WITH p AS (UPDATE products SET name = COALESCE($3, name), \
                        price_minor = COALESCE($4, price_minor), \
                        category_id = COALESCE($5, category_id), \
                        version = version + 1, updated_at = now() \
                    WHERE id = $1 AND ($2::bigint[] IS NULL OR version = ANY($2)) \
                      AND deleted_at IS NULL RETURNING *) \
         SELECT p.id, p.sku, p.name, p.price_minor, p.currency, c.name AS category, \
                p.version, p.created_at, p.updated_at \
         FROM p JOIN categories c ON c.id = p.category_id",
    )
    .bind(id)
    .bind(versions)
    .bind(changes.name)
    .bind(changes.price_minor)
    .bind(changes.category_id)
    .fetch_optional(conn)
    .await
}

/// The version of a live product, to tell "gone" from "changed meanwhile".
pub async fn live_version(conn: &mut PgConnection, id: Uuid) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM products WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Marks a live product deleted; false when there was none.
pub async fn soft_delete(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE products SET deleted_at = now(), updated_at = now(), version = version + 1 \
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The prices of those of `ids` that are live products, as `(id, price)`.
pub async fn live_prices(
    conn: impl sqlx::PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT id, price_minor FROM products WHERE id = ANY($1) AND deleted_at IS NULL")
        .bind(ids)
        .fetch_all(conn)
        .await
}
