//! The outbox: messages written in the transaction that decided to send them, published by the
//! relay and deleted once RabbitMQ confirmed them.

use sqlx::{PgConnection, PgPool, types::Json};

use crate::messaging::envelope::Envelope;

/// The outbox columns of `envelopes`, one array per column, for an `UNNEST` insert.
pub(super) struct Rows<'a> {
    pub ids: Vec<uuid::Uuid>,
    pub exchanges: Vec<&'static str>,
    pub keys: Vec<String>,
    pub bodies: Vec<Json<&'a Envelope>>,
}

impl<'a> Rows<'a> {
    pub(super) fn of(envelopes: &'a [Envelope]) -> Self {
        let mut rows = Self {
            ids: Vec::with_capacity(envelopes.len()),
            exchanges: Vec::with_capacity(envelopes.len()),
            keys: Vec::with_capacity(envelopes.len()),
            bodies: Vec::with_capacity(envelopes.len()),
        };
        for envelope in envelopes {
            let (exchange, key) = envelope.body.route();
            rows.ids.push(envelope.message_id);
            rows.exchanges.push(exchange.as_str());
            rows.keys.push(key);
            rows.bodies.push(Json(envelope));
        }
        rows
    }
}

/// Queues messages inside the caller's transaction, in one statement.
pub async fn enqueue(conn: &mut PgConnection, envelopes: &[Envelope]) -> Result<(), sqlx::Error> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let rows = Rows::of(envelopes);
    sqlx::query(
        "INSERT INTO outbox (message_id, exchange, routing_key, body) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[])",
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
