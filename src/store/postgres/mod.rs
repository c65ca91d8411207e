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
    ConnectOptions, Connection, PgPool,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};

use crate::config::Settings;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pool of up to `size` connections. Connects on first use, not now: a process must start
/// while Postgres is down (see [`crate::readiness`]).
pub fn pool(settings: &Settings, size: u32) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(settings)?;
    Ok(PgPoolOptions::new()
        .max_connections(size.max(1))
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection it hands out by default: a round trip before each query,
        // the largest single cost the load test's profile found. A connection that broke while
        // idle now fails its first query instead, which callers already treat as transient.
        .test_before_acquire(false)
        .connect_lazy_with(options.application_name("orderly")))
}

/// Where Postgres is and how to reach it: the URL (with its `sslmode`) and the CA file setting.
pub fn connect_options(settings: &Settings) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = settings.database_url.parse()?;
    Ok(match &settings.database_ca_file {
        Some(ca) => options.ssl_root_cert(ca),
        None => options,
    })
}

/// A listener for `NOTIFY`, on a connection of its own made with the same settings as the pool's
/// (TLS and CA file included), reconnected by sqlx when it drops.
pub async fn listener(settings: &Settings) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(connect_options(settings)?)
        .await?;
    PgListener::connect_with(&pool).await
}

/// Creates the database when missing, then applies every pending migration.
///
/// On a connection of its own, not the pool's: sqlx holds a session advisory lock while it
/// migrates and releases it only on success, so a pooled connection would keep the lock after a
/// failure, and every other process would wait on it. This connection closes on every path,
/// failure and cancellation included, and its lock with it. Only reaching Postgres is bounded
/// in time; a long migration (an index on a big table) is left to finish, while waiting for
/// another process's lock gives up after `lock_timeout` and is retried.
pub async fn migrate(settings: &Settings) -> Result<(), sqlx::Error> {
    let options = connect_options(settings)?;
    // The database is created first when missing, from the maintenance database. Not by
    // connecting and reading the error: PgBouncer reports a missing database as its own error and
    // then holds further logins to it back for a while. A managed service may keep orderly's
    // user out of the maintenance database; then the database must exist already, and the
    // connection below says so if it does not.
    let connect = async {
        let _ = create_database(&options).await;
        options.connect().await
    };
    let mut conn = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let migrated = async {
        sqlx::query("SET lock_timeout = '15s'")
            .execute(&mut conn)
            .await?;
        MIGRATOR.run_direct(&mut conn).await?;
        Ok(())
    }
    .await;
    let _ = conn.close().await;
    migrated
}

/// Creates `options`' database unless it exists, asked of the server's maintenance database, over the same TLS settings (sqlx's URL-only helper would drop the CA
/// file). Two processes may race here on a fresh machine; the loser's "already exists" is fine.
async fn create_database(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let name = options.get_database().unwrap_or("postgres");
    let mut admin = options.clone().database("postgres").connect().await?;
    let created = async {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut admin)
                .await?;
        if exists {
            return Ok(());
        }
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&create).execute(&mut admin).await {
            // 42P04: another process created it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(()),
            done => done.map(drop),
        }
    }
    .await;
    let _ = admin.close().await;
    created
}

/// Rows a retention deletes per statement: small enough that no delete holds locks or builds a
/// backlog of dead rows for long.
const PRUNE_SLICE: i64 = 5_000;

/// Runs `delete` (binding an age in seconds as `$1` and [`PRUNE_SLICE`] as `$2`) until a slice
/// comes back short; returns how many rows went.
async fn prune_in_slices(pool: &PgPool, delete: &str, age: Duration) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let done = sqlx::query(delete)
            .bind(age.as_secs_f64())
            .bind(PRUNE_SLICE)
            .execute(pool)
            .await?
            .rows_affected();
        total += done;
        if done < PRUNE_SLICE as u64 {
            return Ok(total);
        }
    }
}

pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(drop)
}
