//! Sagas and their log. The domain's [`Saga`] is stored as columns plus its steps as JSON.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use super::{
    orders::{self, OrderRow},
    outbox,
};
use crate::{
    domain::{
        order::OrderReason,
        saga::{OrderChange, Saga, SagaKind, SagaState, Step as SagaStep},
    },
    messaging::envelope::Envelope,
};

#[derive(Debug, Clone)]
pub struct SagaRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub version: i64,
    pub saga: Saga,
}

// The columns an order shares a name with are aliased, so a row can carry both (see
// `find_with_order`).
#[derive(sqlx::FromRow)]
struct Raw {
    #[sqlx(rename = "saga_row_id")]
    id: Uuid,
    order_id: Uuid,
    kind: Json<SagaKind>,
    state: Json<SagaState>,
    #[sqlx(rename = "saga_reason")]
    reason: Option<String>,
    steps: Json<Vec<SagaStep>>,
    deadline_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "saga_version")]
    version: i64,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<Raw> for SagaRow {
    fn from(r: Raw) -> Self {
        Self {
            id: r.id,
            order_id: r.order_id,
            version: r.version,
            saga: Saga {
                kind: r.kind.0,
                state: r.state.0,
                steps: r.steps.0,
                reason: r.reason.as_deref().and_then(OrderReason::parse),
                deadline: r.deadline_at,
                started_at: r.started_at,
                finished_at: r.finished_at,
            },
        }
    }
}

// kind and state are plain text columns; `to_jsonb` lets serde read them as the domain enums.
const COLUMNS: &str = "s.id AS saga_row_id, s.order_id, to_jsonb(s.kind) AS kind, \
    to_jsonb(s.state) AS state, s.reason AS saga_reason, s.steps, s.deadline_at, \
    s.version AS saga_version, s.started_at, s.finished_at";

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    fresh: bool,
    #[sqlx(flatten)]
    saga: Raw,
    #[sqlx(flatten)]
    order: OrderRow,
}

/// What an orchestrator step found when it claimed its message.
pub struct Claimed {
    /// `false` when the message was handled before (or was being handled, and the claim waited
    /// for it): the step must change nothing.
    pub fresh: bool,
    pub saga: SagaRow,
    pub order: OrderRow,
}

/// Claims `message_id` for `consumer` in the inbox (a sweeper's event has none) and reads the
/// saga with its order, in one statement of the caller's transaction. `None` when there is no
/// such saga.
pub async fn claim_and_find(
    conn: &mut PgConnection,
    consumer: &str,
    message_id: Option<Uuid>,
    saga_id: Uuid,
) -> Result<Option<Claimed>, sqlx::Error> {
    let row: Option<ClaimedRow> = sqlx::query_as(&format!(
        "WITH claimed AS ( \
             INSERT INTO inbox (consumer, message_id) SELECT $2, $3 WHERE $3::uuid IS NOT NULL \
             ON CONFLICT DO NOTHING RETURNING 1 \
         ) \
         SELECT ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM claimed)) AS fresh, {COLUMNS}, {} \
         FROM sagas s JOIN orders o ON o.id = s.order_id WHERE s.id = $1",
        orders::COLUMNS_OF_O
    ))
    .bind(saga_id)
    .bind(consumer)
    .bind(message_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| Claimed {
        fresh: row.fresh,
        saga: row.saga.into(),
        order: row.order,
    }))
}

/// What a transition writes: the saga, its log entry, the order, perhaps a new saga taking
/// charge of the order, and the outgoing messages.
pub struct Advance<'a> {
    pub saga_id: Uuid,
    pub saga: &'a Saga,
    pub seen_version: i64,
    pub event: &'a str,
    pub message_id: Option<Uuid>,
    pub order_id: Uuid,
    pub order_seen_version: i64,
    pub change: Option<OrderChange>,
    /// The saga in charge of the order afterwards.
    pub in_charge: Uuid,
    /// The seq of the order's newest history event afterwards.
    pub last_seq: i32,
    /// A saga that starts now (`in_charge`), to insert.
    pub started: Option<&'a Saga>,
    pub outgoing: &'a [Envelope],
}

/// Writes a transition in one statement of the caller's transaction, if the saga and the order
/// are still at the versions it was decided on. `false` when another writer moved either first:
/// part of it may then be written, so the caller must roll back, re-read and decide again.
pub async fn advance(conn: &mut PgConnection, a: &Advance<'_>) -> Result<bool, sqlx::Error> {
    let started = a.started;
    let out = outbox::Rows::of(a.outgoing);
    // Each part after `saved` selects from the one before, so nothing more is written once a
    // version check fails.
    sqlx::query_scalar(
        "WITH saved AS ( \
             UPDATE sagas SET state = $3, reason = $4, steps = $5, deadline_at = $6, \
                    finished_at = $7, version = version + 1 \
             WHERE id = $1 AND version = $2 RETURNING id \
         ), recorded AS ( \
             UPDATE orders SET status = COALESCE($10, status), \
                    reason = CASE WHEN $10 IS NULL THEN reason ELSE $11 END, saga_id = $12, \
                    last_seq = $13, version = version + 1, updated_at = now() \
             WHERE id = $8 AND version = $9 AND EXISTS (SELECT 1 FROM saved) RETURNING id \
         ), logged AS ( \
             INSERT INTO saga_log (saga_id, event, message_id, stale) \
             SELECT $1, $14, $15, false FROM recorded \
         ), started AS ( \
             INSERT INTO sagas (id, order_id, kind, state, reason, steps, deadline_at, \
                                started_at, finished_at) \
             SELECT $12, recorded.id, $16, $17, $18, $19, $20, $21, $22 FROM recorded \
             WHERE $16::text IS NOT NULL \
         ), queued AS ( \
             INSERT INTO outbox (message_id, exchange, routing_key, body) \
             SELECT u.* FROM recorded, \
                    UNNEST($23::uuid[], $24::text[], $25::text[], $26::jsonb[]) u \
         ) \
         SELECT EXISTS (SELECT 1 FROM recorded)",
    )
    .bind(a.saga_id)
    .bind(a.seen_version)
    .bind(a.saga.state.as_str())
    .bind(a.saga.reason.map(OrderReason::as_str))
    .bind(Json(&a.saga.steps))
    .bind(a.saga.deadline)
    .bind(a.saga.finished_at)
    .bind(a.order_id)
    .bind(a.order_seen_version)
    .bind(a.change.map(|c| c.status.as_str()))
    .bind(a.change.and_then(|c| c.reason).map(OrderReason::as_str))
    .bind(a.in_charge)
    .bind(a.last_seq)
    .bind(a.event)
    .bind(a.message_id)
    .bind(started.map(|s| s.kind.as_str()))
    .bind(started.map(|s| s.state.as_str()))
    .bind(started.and_then(|s| s.reason).map(OrderReason::as_str))
    .bind(started.map(|s| Json(&s.steps)))
    .bind(started.and_then(|s| s.deadline))
    .bind(started.map(|s| s.started_at))
    .bind(started.and_then(|s| s.finished_at))
    .bind(&out.ids)
    .bind(&out.exchanges)
    .bind(&out.keys)
    .bind(&out.bodies)
    .fetch_one(conn)
    .await
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<SagaRow>, sqlx::Error> {
    let raw: Option<Raw> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM sagas s WHERE s.id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(raw.map(SagaRow::from))
}

pub async fn find_many(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<SagaRow>, sqlx::Error> {
    let raw: Vec<Raw> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM sagas s WHERE s.id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(raw.into_iter().map(SagaRow::from).collect())
}

/// Appends to the saga's log what it was told, and whether it was stale.
pub async fn log(
    conn: &mut PgConnection,
    saga_id: Uuid,
    event: &str,
    message_id: Option<Uuid>,
    stale: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO saga_log (saga_id, event, message_id, stale) VALUES ($1, $2, $3, $4)")
        .bind(saga_id)
        .bind(event)
        .bind(message_id)
        .bind(stale)
        .execute(conn)
        .await
        .map(drop)
}

/// Sagas whose step deadline has passed, as `(saga, order)`, oldest deadline first.
pub async fn due(pool: &PgPool, limit: i64) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, order_id FROM sagas WHERE deadline_at <= now() \
         ORDER BY deadline_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
