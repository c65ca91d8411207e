//! The dead letters, for the admin: what failed and why, put back on its queue or dropped.
//! The same operations as `orderly dlq` (see [`crate::messaging::dead_letters`]).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use serde::Deserialize;

use super::{
    AppState,
    auth::Admin,
    error::{ApiError, Problems},
    extract::{Query, string_enum},
    page::PageBody,
};
use crate::{
    messaging::{
        dead_letters::{Action, DeadLetter},
        topology::Queue,
    },
    services::ServiceError,
};

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DeadLettersQuery {
    /// Only this queue's dead letters.
    #[param(schema_with = queues)]
    pub queue: Option<String>,
}

fn queues() -> utoipa::openapi::Object {
    string_enum(Queue::ALL.map(Queue::as_str))
}

/// `?queue=`, checked.
fn queue(raw: Option<&str>) -> Result<Option<Queue>, ApiError> {
    raw.map(|q| {
        Queue::parse(q).ok_or_else(|| {
            ApiError::bad_field(
                "queue",
                "must be one of inventory, payments, orchestrator, history",
            )
        })
    })
    .transpose()
}

/// The dead letters, oldest first per queue, with why each was given up on (admin).
#[utoipa::path(get, path = "/dead-letters", tag = "operations", params(DeadLettersQuery),
    security(("bearer" = [])),
    responses((status = 200, body = PageBody<DeadLetter>), Problems))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    _: Admin,
    Query(query): Query<DeadLettersQuery>,
) -> Result<Json<PageBody<DeadLetter>>, ApiError> {
    let queue = queue(query.queue.as_deref())?;
    let items = state
        .dead_letters
        .list(queue)
        .await
        .map_err(ServiceError::from)?;
    Ok(Json(PageBody {
        items,
        next_cursor: None,
    }))
}

/// One dead letter (admin).
#[utoipa::path(get, path = "/dead-letters/{id}", tag = "operations",
    params(("id" = String, Path, description = "the message's id")),
    security(("bearer" = [])),
    responses((status = 200, body = DeadLetter), Problems))]
pub async fn get_dead_letter(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<DeadLetter>, ApiError> {
    let letter = state
        .dead_letters
        .find(&id)
        .await
        .map_err(ServiceError::from)?;
    letter.map(Json).ok_or_else(not_found)
}

/// Puts a dead letter back on its queue as it was first sent (admin); answers it as it was.
/// Replaying twice changes nothing twice: the roles drop copies.
#[utoipa::path(post, path = "/dead-letters/{id}/replay", tag = "operations",
    params(("id" = String, Path, description = "the message's id")),
    security(("bearer" = [])),
    responses((status = 200, body = DeadLetter, description = "back on its queue"), Problems))]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<DeadLetter>, ApiError> {
    let letter = state
        .dead_letters
        .settle_one(&id, Action::Replay)
        .await
        .map_err(ServiceError::from)?;
    letter.map(Json).ok_or_else(not_found)
}

/// Drops a dead letter for good (admin).
#[utoipa::path(delete, path = "/dead-letters/{id}", tag = "operations",
    params(("id" = String, Path, description = "the message's id")),
    security(("bearer" = [])),
    responses((status = 204, description = "dropped"), Problems))]
pub async fn purge_dead_letter(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let letter = state
        .dead_letters
        .settle_one(&id, Action::Purge)
        .await
        .map_err(ServiceError::from)?;
    letter.map(|_| StatusCode::NO_CONTENT).ok_or_else(not_found)
}

fn not_found() -> ApiError {
    ApiError::NotFound("no such dead letter".into())
}
