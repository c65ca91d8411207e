//! The inbox: which messages each Postgres-writing consumer has already processed.

use std::{collections::HashSet, time::Duration};

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Records every id of `message_ids` as processed by `consumer` in the caller's transaction, in
/// one statement; returns those that were new (the rest are redeliveries: change nothing for
/// them). Copies claimed by a concurrent transaction are waited for.
pub async fn claim_many(
    conn: &mut PgConnection,
    consumer: &str,
    message_ids: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let claimed: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO inbox (consumer, message_id) SELECT $1, id FROM UNNEST($2::uuid[]) AS id \
         ON CONFLICT DO NOTHING RETURNING message_id",
    )
    .bind(consumer)
    .bind(message_ids)
    .fetch_all(conn)
    .await?;
    Ok(claimed.into_iter().collect())
}

/// Takes back claims made in the caller's transaction, for messages that failed in it and will
/// be retried or dead-lettered: a later copy must not be taken for done.
pub async fn unclaim(
    conn: &mut PgConnection,
    consumer: &str,
    message_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    if message_ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM inbox WHERE consumer = $1 AND message_id = ANY($2)")
        .bind(consumer)
        .bind(message_ids)
        .execute(conn)
        .await
        .map(drop)
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
