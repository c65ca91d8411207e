//! Sagas and their log. The domain's [`Saga`] is stored as columns plus its steps as JSON.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

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

// The columns an order shares a name with are aliased, so they can be selected beside an
// order's in one row.
#[derive(sqlx::FromRow)]
pub(super) struct Raw {
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
                // The order's, not a column of the saga: the orchestrator sets it from the order
                // it locked (see `Saga::cancel_requested`).
                cancel_requested: false,
                deadline: r.deadline_at,
                started_at: r.started_at,
                finished_at: r.finished_at,
            },
        }
    }
}

// kind and state are plain text columns; `to_jsonb` lets serde read them as the domain enums.
pub(super) const COLUMNS: &str = "s.id AS saga_row_id, s.order_id, to_jsonb(s.kind) AS kind, \
    to_jsonb(s.state) AS state, s.reason AS saga_reason, s.steps, s.deadline_at, \
    s.version AS saga_version, s.started_at, s.finished_at";

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<SagaRow>, sqlx::Error> {
    let raw: Option<Raw> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM sagas s WHERE s.id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(raw.map(SagaRow::from))
}

/// The sagas of `ids`, locked for the caller's transaction (in id order). Lock their orders
/// first ([`super::orders::lock`]): every writer of both takes orders, then sagas, so two never
/// wait on each other in a circle.
pub async fn lock(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<SagaRow>, sqlx::Error> {
    let raw: Vec<Raw> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM sagas s WHERE s.id = ANY($1) ORDER BY s.id FOR NO KEY UPDATE"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(raw.into_iter().map(SagaRow::from).collect())
}

/// Stores each saga if its row is still at its seen version; `false`, having written some of
/// them perhaps, when any row had moved (the caller rolls back and decides again).
pub async fn save_many(
    conn: &mut PgConnection,
    sagas: &[(Uuid, &Saga, i64)],
) -> Result<bool, sqlx::Error> {
    if sagas.is_empty() {
        return Ok(true);
    }
    let ids: Vec<Uuid> = sagas.iter().map(|(id, _, _)| *id).collect();
    let seen: Vec<i64> = sagas.iter().map(|(_, _, v)| *v).collect();
    let states: Vec<&str> = sagas.iter().map(|(_, s, _)| s.state.as_str()).collect();
    let reasons: Vec<Option<&str>> = sagas
        .iter()
        .map(|(_, s, _)| s.reason.map(OrderReason::as_str))
        .collect();
    let steps: Vec<Json<&Vec<Step>>> = sagas.iter().map(|(_, s, _)| Json(&s.steps)).collect();
    let deadlines: Vec<Option<DateTime<Utc>>> = sagas.iter().map(|(_, s, _)| s.deadline).collect();
    let finished: Vec<Option<DateTime<Utc>>> =
        sagas.iter().map(|(_, s, _)| s.finished_at).collect();
    let done = sqlx::query(
        "UPDATE sagas s SET state = u.state, reason = u.reason, steps = u.steps, \
                deadline_at = u.deadline, finished_at = u.finished, version = s.version + 1, \
                updated_at = now() \
           FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::jsonb[], \
                       $6::timestamptz[], $7::timestamptz[]) \
                AS u(id, seen, state, reason, steps, deadline, finished) \
          WHERE s.id = u.id AND s.version = u.seen",
    )
    .bind(&ids)
    .bind(&seen)
    .bind(&states)
    .bind(&reasons)
    .bind(&steps)
    .bind(&deadlines)
    .bind(&finished)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == sagas.len() as u64)
}

/// Inserts new sagas `(id, order, saga)` in one statement.
pub async fn insert_many(
    conn: &mut PgConnection,
    sagas: &[(Uuid, Uuid, &Saga)],
) -> Result<(), sqlx::Error> {
    if sagas.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = sagas.iter().map(|(id, _, _)| *id).collect();
    let orders: Vec<Uuid> = sagas.iter().map(|(_, o, _)| *o).collect();
    let kinds: Vec<&str> = sagas.iter().map(|(_, _, s)| s.kind.as_str()).collect();
    let states: Vec<&str> = sagas.iter().map(|(_, _, s)| s.state.as_str()).collect();
    let reasons: Vec<Option<&str>> = sagas
        .iter()
        .map(|(_, _, s)| s.reason.map(OrderReason::as_str))
        .collect();
    let steps: Vec<Json<&Vec<Step>>> = sagas.iter().map(|(_, _, s)| Json(&s.steps)).collect();
    let deadlines: Vec<Option<DateTime<Utc>>> = sagas.iter().map(|(_, _, s)| s.deadline).collect();
    let started: Vec<DateTime<Utc>> = sagas.iter().map(|(_, _, s)| s.started_at).collect();
    let finished: Vec<Option<DateTime<Utc>>> =
        sagas.iter().map(|(_, _, s)| s.finished_at).collect();
    sqlx::query(
        "INSERT INTO sagas (id, order_id, kind, state, reason, steps, deadline_at, started_at, \
                            finished_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
                              $6::jsonb[], $7::timestamptz[], $8::timestamptz[], \
                              $9::timestamptz[])",
    )
    .bind(&ids)
    .bind(&orders)
    .bind(&kinds)
    .bind(&states)
    .bind(&reasons)
    .bind(&steps)
    .bind(&deadlines)
    .bind(&started)
    .bind(&finished)
    .execute(conn)
    .await
    .map(drop)
}

/// One entry of a saga's log: what it was told, by which message, and whether it was stale.
pub struct LogEntry<'a> {
    pub saga_id: Uuid,
    pub event: &'a str,
    pub message_id: Option<Uuid>,
    pub stale: bool,
}

/// Appends entries to sagas' logs in one statement.
pub async fn log_many(
    conn: &mut PgConnection,
    entries: &[LogEntry<'_>],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let sagas: Vec<Uuid> = entries.iter().map(|e| e.saga_id).collect();
    let events: Vec<&str> = entries.iter().map(|e| e.event).collect();
    let messages: Vec<Option<Uuid>> = entries.iter().map(|e| e.message_id).collect();
    let stale: Vec<bool> = entries.iter().map(|e| e.stale).collect();
    sqlx::query(
        "INSERT INTO saga_log (saga_id, event, message_id, stale) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::bool[])",
    )
    .bind(&sagas)
    .bind(&events)
    .bind(&messages)
    .bind(&stale)
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

/// What `GET /sagas` searches by; every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct SagaFilter {
    pub state: Option<SagaState>,
    pub kind: Option<SagaKind>,
    pub order_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub started_after: Option<DateTime<Utc>>,
    pub started_before: Option<DateTime<Utc>>,
    /// Not ended, and unchanged for at least this long.
    pub stuck_for: Option<std::time::Duration>,
}

/// The lowest v7 id of a millisecond: saga ids are v7, made when the saga starts, so a bound on
/// `started_at` is also one on `id`, which lets the search walk the primary key's range.
fn v7_floor(at: DateTime<Utc>) -> Uuid {
    Uuid::from_u128(u128::from(at.timestamp_millis().max(0) as u64) << 80)
}

/// Sagas matching `filter`, newest first, after the cursor `before`. The statement names only
/// the filters given, so each shape of search gets a plan that uses its index (an optional
/// `($n IS NULL OR …)` condition would get a generic plan that uses none).
pub async fn search(
    pool: &PgPool,
    filter: &SagaFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<SagaRow>, sqlx::Error> {
    // Ids are made a moment after `started_at`: a second's margin keeps the id bounds loose,
    // and `started_at` itself decides.
    let margin = chrono::Duration::seconds(1);
    let mut q = sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM sagas s WHERE true"));
    if let Some(state) = filter.state {
        q.push(" AND s.state = ").push_bind(state.as_str());
        if !state.is_terminal() {
            // Served by `sagas_in_flight`.
            q.push(" AND s.finished_at IS NULL");
        }
    }
    if let Some(kind) = filter.kind {
        q.push(" AND s.kind = ").push_bind(kind.as_str());
    }
    if let Some(order_id) = filter.order_id {
        q.push(" AND s.order_id = ").push_bind(order_id);
    }
    if let Some(customer_id) = filter.customer_id {
        q.push(" AND s.order_id IN (SELECT id FROM orders WHERE customer_id = ")
            .push_bind(customer_id)
            .push(")");
    }
    if let Some(after) = filter.started_after {
        q.push(" AND s.started_at > ").push_bind(after);
        q.push(" AND s.id >= ").push_bind(v7_floor(after - margin));
    }
    if let Some(before) = filter.started_before {
        q.push(" AND s.started_at < ").push_bind(before);
        q.push(" AND s.id < ").push_bind(v7_floor(before + margin));
    }
    if let Some(stuck) = filter.stuck_for {
        q.push(" AND s.finished_at IS NULL AND s.updated_at <= now() - make_interval(secs => ")
            .push_bind(stuck.as_secs_f64())
            .push(")");
    }
    if let Some(before) = before {
        q.push(" AND s.id < ").push_bind(before);
    }
    q.push(" ORDER BY s.id DESC LIMIT ").push_bind(limit);
    let raw: Vec<Raw> = q.build_query_as().fetch_all(pool).await?;
    Ok(raw.into_iter().map(SagaRow::from).collect())
}

/// The sagas not yet ended, by kind and state: how many, and the oldest one's age in seconds.
/// Reads only the sagas in flight (`sagas_in_flight`).
pub async fn in_flight(pool: &PgPool) -> Result<Vec<(String, String, i64, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, state, count(*), \
                extract(epoch FROM now() - min(started_at))::float8 \
           FROM sagas WHERE finished_at IS NULL GROUP BY kind, state",
    )
    .fetch_all(pool)
    .await
}

/// Sagas whose step deadline has passed, as `(saga, order)`, oldest deadline first; read from
/// the sagas in flight (`sagas_in_flight`), so that a step moving `deadline_at` is a HOT update.
pub async fn due(pool: &PgPool, limit: i64) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, order_id FROM sagas \
         WHERE finished_at IS NULL AND deadline_at <= now() \
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
