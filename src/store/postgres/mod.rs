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

/// A pool of up to `size` connections. Connects on first use, not now: a process must start
/// while Postgres is down (see [`crate::readiness`]).
pub fn pool(settings: &Settings, size: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.database_url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(size.max(1))
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection it hands out by default: a round trip before each query,
        // the largest single cost the load test's profile found. A connection that broke while
        // idle now fails its first query instead, which callers already treat as transient.
        .test_before_acquire(false)
        .connect_lazy_with(options.application_name("orderly")))
}

/// Creates the database when missing, then applies every pending migration through `pool`.
pub async fn migrate(database_url: &str, pool: &PgPool) -> Result<(), sqlx::Error> {
    if !sqlx::Postgres::database_exists(database_url).await? {
        // Two processes may race here on a fresh machine; the loser's "already exists" is fine.
        if let Err(e) = sqlx::Postgres::create_database(database_url).await
            && !sqlx::Postgres::database_exists(database_url).await?
        {
            return Err(e);
        }
    }
    MIGRATOR.run(pool).await?;
    Ok(())
}

pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(drop)
}
