//! Postgres: the pool, migrations, and one module per table group.

pub mod checkout;
pub mod customers;
pub mod inbox;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod products;
pub mod sagas;
pub mod stock_ledger;

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::Settings;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens a pool of up to `size` connections, failing fast when Postgres does not answer.
pub async fn connect(settings: &Settings, size: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.database_url.parse()?;
    PgPoolOptions::new()
        .max_connections(size.max(1))
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection it hands out by default: a round trip before each query,
        // the largest single cost the load test's profile found. A connection that broke while
        // idle now fails its first query instead, which callers already treat as transient.
        .test_before_acquire(false)
        .connect_with(options.application_name("orderly"))
        .await
}

/// Creates the database when missing, then applies every pending migration; returns a pool of
/// up to `size` connections.
pub async fn migrate(settings: &Settings, size: u32) -> Result<PgPool, sqlx::Error> {
    if !sqlx::Postgres::database_exists(&settings.database_url).await? {
        // Two processes may race here on a fresh machine; the loser's "already exists" is fine.
        if let Err(e) = sqlx::Postgres::create_database(&settings.database_url).await
            && !sqlx::Postgres::database_exists(&settings.database_url).await?
        {
            return Err(e);
        }
    }
    let pool = connect(settings, size).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(drop)
}
