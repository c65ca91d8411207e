//! The inbox: which messages each Postgres-writing consumer has already processed.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Records `message_id` as processed by `consumer` in the caller's transaction; `false` when it
/// was already (a redelivery: the caller must change nothing). A copy processed concurrently
/// waits here for the first to commit or roll back.
pub async fn claim(
    conn: &mut PgConnection,
    consumer: &str,
    message_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(message_id)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Forgets ids older than `age`: by then no copy of the message is still in flight (retries
/// give up after minutes) and every effect is also idempotent per order. Deletes in slices of
/// `super::PRUNE_SLICE` rows, each its own short transaction; returns how many went.
pub async fn prune(pool: &PgPool, age: Duration) -> Result<u64, sqlx::Error> {
    super::prune_in_slices(
        pool,
        "DELETE FROM inbox WHERE ctid = ANY(ARRAY(SELECT ctid FROM inbox \
             WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2))",
        age,
    )
    .await
}
