//! Sagas and their log. The domain's [`Saga`] is stored as columns plus its steps as JSON.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use super::orders::{self, OrderRow};
use crate::domain::{
    order::OrderReason,
    reservation::Record,
    saga::{Saga, SagaKind, SagaState, Step, StepStatus},
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
    steps: Json<Vec<Step>>,
    deadline_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "saga_version")]
    version: i64,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    cancel_requested: bool,
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
                cancel_requested: r.cancel_requested,
                deadline: r.deadline_at,
                started_at: r.started_at,
                finished_at: r.finished_at,
            },
        }
    }
}

// kind and state are plain text columns; `to_jsonb` lets serde read them as the domain enums.
// Whether the customer's cancel is recorded is the order's, read with every saga (see
// `Saga::cancel_requested`).
const COLUMNS: &str = "s.id AS saga_row_id, s.order_id, to_jsonb(s.kind) AS kind, \
    to_jsonb(s.state) AS state, s.reason AS saga_reason, s.steps, s.deadline_at, \
    s.version AS saga_version, s.started_at, s.finished_at, \
    (SELECT x.cancel_requested_at IS NOT NULL FROM orders x WHERE x.id = s.order_id) \
      AS cancel_requested";

#[derive(sqlx::FromRow)]
struct WithOrder {
    #[sqlx(flatten)]
    saga: Raw,
    #[sqlx(flatten)]
    order: OrderRow,
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    order_id: Uuid,
    saga: &Saga,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sagas (id, order_id, kind, state, reason, steps, deadline_at, started_at, \
                            finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(order_id)
    .bind(saga.kind.as_str())
    .bind(saga.state.as_str())
    .bind(saga.reason.map(OrderReason::as_str))
    .bind(Json(&saga.steps))
    .bind(saga.deadline)
    .bind(saga.started_at)
    .bind(saga.finished_at)
    .execute(conn)
    .await
    .map(drop)
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<SagaRow>, sqlx::Error> {
    let raw: Option<Raw> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM sagas s WHERE s.id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(raw.map(SagaRow::from))
}

/// The saga and the order it belongs to, in one read.
pub async fn find_with_order(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(SagaRow, OrderRow)>, sqlx::Error> {
    let row: Option<WithOrder> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, {} FROM sagas s JOIN orders o ON o.id = s.order_id WHERE s.id = $1",
        orders::COLUMNS
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.saga.into(), r.order)))
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

/// Stores `saga` if the row is still at `seen_version`; `false` when another writer moved it
/// first (the caller re-reads and decides again).
pub async fn save(
    conn: &mut PgConnection,
    id: Uuid,
    saga: &Saga,
    seen_version: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sagas SET state = $3, reason = $4, steps = $5, deadline_at = $6, \
                finished_at = $7, version = version + 1 \
         WHERE id = $1 AND version = $2",
    )
    .bind(id)
    .bind(seen_version)
    .bind(saga.state.as_str())
    .bind(saga.reason.map(OrderReason::as_str))
    .bind(Json(&saga.steps))
    .bind(saga.deadline)
    .bind(saga.finished_at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
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

/// Forgets the log of sagas that ended, entry by entry as each grows older than `age`; the
/// log of a saga still running is kept whole. Returns how many entries went.
pub async fn prune_log(pool: &PgPool, age: std::time::Duration) -> Result<u64, sqlx::Error> {
    super::prune_in_slices(
        pool,
        "DELETE FROM saga_log WHERE ctid = ANY(ARRAY( \
             SELECT l.ctid FROM saga_log l JOIN sagas s ON s.id = l.saga_id \
              WHERE l.at < now() - make_interval(secs => $1) AND s.finished_at IS NOT NULL \
              LIMIT $2))",
        age,
    )
    .await
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

/// An order's stock steps: its checkout's `reserve_stock`, what `reserve.lua` answered if the
/// inventory role recorded it, and the `release_stock` of its cancellation saga if it has one.
#[derive(Debug, Clone, Copy)]
pub struct StockSteps {
    pub order_id: Uuid,
    pub reserve: StepStatus,
    pub decided: Option<Record>,
    pub release: Option<StepStatus>,
}

/// The stock steps of every order, read from the steps' JSON without decoding whole sagas.
pub async fn stock_steps(pool: &PgPool) -> Result<Vec<StockSteps>, sqlx::Error> {
    type Row = (
        Uuid,
        Json<StepStatus>,
        Option<String>,
        Option<Json<StepStatus>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT c.order_id, r.step -> 'status', d.outcome, \
                (SELECT st -> 'status' FROM sagas x, jsonb_array_elements(x.steps) st \
                  WHERE x.order_id = c.order_id AND x.kind = 'cancellation' \
                    AND st ->> 'name' = 'release_stock') \
           FROM sagas c \
           CROSS JOIN LATERAL (SELECT st AS step FROM jsonb_array_elements(c.steps) st \
                                WHERE st ->> 'name' = 'reserve_stock') r \
           LEFT JOIN stock_reservations d ON d.order_id = c.order_id \
          WHERE c.kind = 'checkout'",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(order_id, reserve, decided, release)| StockSteps {
            order_id,
            reserve: reserve.0,
            decided: decided.as_deref().and_then(Record::parse),
            release: release.map(|r| r.0),
        })
        .collect())
}
