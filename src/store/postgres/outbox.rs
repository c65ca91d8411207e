//! The outbox: messages written in the transaction that decided to send them, published by the
//! relay and deleted once RabbitMQ confirmed them.

use sqlx::{PgConnection, PgPool};

use crate::messaging::envelope::Outbound;

/// The outbox columns of `messages`, one array per column, for an `UNNEST` insert. Bodies go as
/// text, cast to `jsonb` by the statement (`$n::text[]::jsonb[]`): they are JSON already.
pub(super) struct Rows<'a> {
    pub ids: Vec<uuid::Uuid>,
    pub exchanges: Vec<&'static str>,
    pub keys: Vec<&'a str>,
    pub bodies: Vec<&'a str>,
}

impl<'a> Rows<'a> {
    pub(super) fn of(messages: &'a [Outbound]) -> Self {
        Self {
            ids: messages.iter().map(|m| m.message_id).collect(),
            exchanges: messages.iter().map(|m| m.exchange.as_str()).collect(),
            keys: messages.iter().map(|m| m.routing_key.as_str()).collect(),
            bodies: messages.iter().map(|m| m.body.as_str()).collect(),
        }
    }
}

/// Queues messages inside the caller's transaction, in one statement.
pub async fn enqueue(conn: &mut PgConnection, messages: &[Outbound]) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let rows = Rows::of(messages);
    sqlx::query(
        "INSERT INTO outbox (message_id, exchange, routing_key, body) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]::jsonb[])",
    )
    .bind(&rows.ids)
    .bind(&rows.exchanges)
    .bind(&rows.keys)
    .bind(&rows.bodies)
    .execute(conn)
    .await
    .map(drop)
}

/// A row taken for publishing, as stored: the relay sends the body as it is.
#[derive(Debug, sqlx::FromRow)]
pub struct Taken {
    pub id: i64,
    pub message_id: uuid::Uuid,
    pub exchange: String,
    pub routing_key: String,
    pub body: String,
}

/// Deletes up to `limit` of the oldest rows no other relay holds, in the caller's transaction,
/// and returns them oldest first. They are gone only if that transaction commits: the caller
/// commits once RabbitMQ confirmed them, and a rollback (or a crash) puts them back.
///
/// Bodies come back as text, not decoded: a row this build cannot read (written by another
/// version, say) must still move, or it would stall every row behind it.
pub async fn take(conn: &mut PgConnection, limit: i64) -> Result<Vec<Taken>, sqlx::Error> {
    let mut rows: Vec<Taken> = sqlx::query_as(
        "DELETE FROM outbox WHERE id IN \
             (SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, message_id, exchange, routing_key, body::text AS body",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    // RETURNING follows no order.
    rows.sort_unstable_by_key(|row| row.id);
    Ok(rows)
}

/// Rows not yet published.
pub async fn backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
}
