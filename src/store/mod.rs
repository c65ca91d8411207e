//! Adapters for the stores and the broker. Each owns its SQL, Lua or collection; nothing above
//! this layer builds a query.

pub mod broker;
pub mod documents;
pub mod history;
pub mod postgres;
pub mod ratings;
pub mod stock;
pub mod tls;

use thiserror::Error;

/// `MGET` of `keys` in one round trip, values in the order of the keys; no keys, no trip.
async fn mget<T: redis::FromRedisValue>(
    redis: &redis::aio::ConnectionManager,
    keys: &[String],
) -> Result<Vec<Option<T>>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    Ok(redis::cmd("MGET")
        .arg(keys)
        .query_async(&mut redis.clone())
        .await?)
}

/// A store failed. `Unavailable` means it did not answer (retry later, `503`); `Failed` means it
/// answered with an error we did not expect (a bug, `500`).
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{store} is unavailable")]
    Unavailable {
        store: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{store} failed")]
    Failed {
        store: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|c| pg_unavailable(&c)),
            _ => false,
        };
        classify("postgres", unavailable, e)
    }
}

/// SQLSTATEs with which Postgres says it cannot serve now, not that the query was wrong:
/// connection exceptions (class 08), too many connections, and a server shutting down,
/// restarting or starting up ("terminating connection due to administrator command").
fn pg_unavailable(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "53300" | "57P01" | "57P02" | "57P03")
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        use redis::ErrorKind;
        let unavailable = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || matches!(
                e.kind(),
                ErrorKind::Server(
                    redis::ServerErrorKind::BusyLoading
                        | redis::ServerErrorKind::TryAgain
                        | redis::ServerErrorKind::MasterDown
                        | redis::ServerErrorKind::ClusterDown
                )
            );
        classify("redis", unavailable, e)
    }
}

/// MongoDB's codes for a server that is shutting down, stepping down or recovering: the write
/// or read may succeed on a retry.
const MONGO_UNAVAILABLE: [i32; 8] = [91, 189, 10107, 11600, 11602, 13435, 13436, 262];

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        let unavailable = match e.kind.as_ref() {
            ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. } => true,
            ErrorKind::Command(c) => MONGO_UNAVAILABLE.contains(&c.code),
            _ => false,
        } || e.contains_label("RetryableWriteError");
        classify("mongodb", unavailable, e)
    }
}

impl From<lapin::Error> for StoreError {
    fn from(e: lapin::Error) -> Self {
        let unavailable = matches!(
            e,
            lapin::Error::IOError(_)
                | lapin::Error::InvalidConnectionState(_)
                | lapin::Error::InvalidChannelState(_)
        );
        classify("rabbitmq", unavailable, e)
    }
}

fn classify(
    store: &'static str,
    unavailable: bool,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    let source = Box::new(source);
    if unavailable {
        StoreError::Unavailable { store, source }
    } else {
        StoreError::Failed { store, source }
    }
}

/// The Postgres SQLSTATE of a unique violation, when `e` is one.
pub(crate) fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}
