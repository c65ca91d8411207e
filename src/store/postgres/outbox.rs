//! The outbox: messages written in the transaction that decided to send them, published by the
//! relay and deleted once RabbitMQ confirmed them.

use sqlx::{PgConnection, PgPool, types::Json};

use crate::messaging::envelope::Envelope;

/// Queues messages inside the caller's transaction, in one statement.
pub async fn enqueue(conn: &mut PgConnection, envelopes: &[Envelope]) -> Result<(), sqlx::Error> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(envelopes.len());
    let mut exchanges = Vec::with_capacity(envelopes.len());
    let mut keys = Vec::with_capacity(envelopes.len());
    let mut bodies = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        let (exchange, key) = envelope.body.route();
        ids.push(envelope.message_id);
        exchanges.push(exchange.as_str());
        keys.push(key);
        bodies.push(Json(envelope));
    }
    sqlx::query(
        "INSERT INTO outbox (message_id, exchange, routing_key, body) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[])",
    )
    .bind(&ids)
    .bind(&exchanges)
    .bind(&keys)
    .bind(&bodies)
    .execute(conn)
    .await
    .map(drop)
}

/// Locks up to `limit` of the oldest rows no other relay holds, in the caller's transaction.
pub async fn take(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<(i64, Envelope)>, sqlx::Error> {
    let rows: Vec<(i64, Json<Envelope>)> =
        sqlx::query_as("SELECT id, body FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED")
            .bind(limit)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(id, Json(e))| (id, e)).collect())
}

pub async fn remove(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await
        .map(drop)
}

/// Rows not yet published.
pub async fn backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
}
