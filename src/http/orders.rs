//! `/orders` and `/sagas`: checkout, reading orders while their saga runs, cancelling.

use std::time::Duration;

use axum::{
    Json,
    extract::{FromRequestParts, State},
    http::{StatusCode, header, request::Parts},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    AppState,
    auth::{Admin, Caller, CustomerCaller},
    error::{ApiError, Problems},
    extract::{Id, JsonBody, Query, RequiredIdempotencyKey, etag, string_enum, validated},
    page::{self, PageBody},
};
use crate::{
    domain::{
        order::{self, OrderLine, OrderStatus},
        saga::{SagaKind, SagaState},
    },
    messaging::envelope::HistoryEvent,
    services::orders::{OrderView, Viewer},
    store::postgres::sagas::{SagaFilter, SagaRow},
};

/// The longest `?wait=` honoured, in seconds.
const MAX_WAIT_SECS: f64 = 30.0;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    /// 1 to 50 lines, no product twice.
    pub items: Vec<CheckoutLine>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutLine {
    pub product_id: Uuid,
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

#[derive(Serialize, ToSchema)]
pub struct OrderItemBody {
    pub product_id: Uuid,
    pub quantity: i32,
    /// The catalog price when the order was placed.
    pub price_minor: i64,
}

#[derive(Serialize, ToSchema)]
pub struct StepBody {
    /// `reserve_stock`, `charge_payment`, `confirm_order` (checkout); `refund_payment`,
    /// `release_stock`, `cancel_order` (cancellation).
    pub name: String,
    /// `pending | running | succeeded | failed | compensating | compensated | skipped`.
    pub status: String,
    pub attempts: u32,
    pub compensation_attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SagaBody {
    pub id: Uuid,
    pub order_id: Uuid,
    /// `checkout | cancellation`.
    pub kind: String,
    /// `running | compensating | completed | compensated | failed`.
    pub state: String,
    pub steps: Vec<StepBody>,
    /// When the step in flight is due; null once the saga has ended.
    pub deadline_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct OrderBody {
    pub id: Uuid,
    pub customer_id: Uuid,
    /// `pending | confirmed | rejected | cancelled`.
    pub status: String,
    /// `insufficient_stock | insufficient_funds | cancelled_by_customer | timed_out |
    /// product_unavailable`, or null.
    pub reason: Option<String>,
    pub items: Vec<OrderItemBody>,
    pub total_minor: i64,
    pub currency: String,
    pub version: i64,
    /// The saga now in charge: the checkout, or the cancellation of a confirmed order.
    pub saga: SagaBody,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<SagaRow> for SagaBody {
    fn from(row: SagaRow) -> Self {
        let saga = row.saga;
        Self {
            id: row.id,
            order_id: row.order_id,
            kind: saga.kind.as_str().to_owned(),
            state: saga.state.as_str().to_owned(),
            steps: saga
                .steps
                .into_iter()
                .map(|s| StepBody {
                    name: s.name.as_str().to_owned(),
                    status: s.status.as_str().to_owned(),
                    attempts: s.attempts,
                    compensation_attempts: s.compensation_attempts,
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    error: s.error,
                })
                .collect(),
            deadline_at: saga.deadline,
            started_at: saga.started_at,
            finished_at: saga.finished_at,
        }
    }
}

impl From<OrderView> for OrderBody {
    fn from(v: OrderView) -> Self {
        let o = v.order;
        Self {
            id: o.id,
            customer_id: o.customer_id,
            status: o.status,
            reason: o.reason,
            items: v
                .items
                .into_iter()
                .map(|i| OrderItemBody {
                    product_id: i.product_id,
                    quantity: i.quantity,
                    price_minor: i.price_minor,
                })
                .collect(),
            total_minor: o.total_minor,
            currency: o.currency,
            version: o.version,
            saga: v.saga.into(),
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HistoryEventBody {
    pub seq: i32,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: DateTime<Utc>,
    pub data: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryBody {
    pub order_id: Uuid,
    /// In order, `seq` contiguous from 1.
    pub events: Vec<HistoryEventBody>,
}

impl From<HistoryEvent> for HistoryEventBody {
    fn from(e: HistoryEvent) -> Self {
        Self {
            seq: e.seq,
            kind: e.kind,
            at: e.at,
            data: e.data,
        }
    }
}

fn viewer(caller: Caller) -> Viewer {
    match caller {
        Caller::Admin => None,
        Caller::Customer(id) => Some(id),
    }
}

/// Checkout (customer): starts the saga and answers at once with the `pending` order. The same
/// `Idempotency-Key` with the same lines returns the same order.
#[utoipa::path(post, path = "/orders", tag = "orders", request_body = CheckoutBody,
    params(("Idempotency-Key" = String, Header, description = "1 to 255 visible ASCII characters, scoped to the customer")),
    security(("bearer" = [])),
    responses(
        (status = 202, body = OrderBody, description = "the order was placed; its saga is running"),
        (status = 200, body = OrderBody, description = "this key was used before with the same lines: that order"),
        Problems))]
pub async fn place_order(
    State(state): State<AppState>,
    Admitted { customer_id, key }: Admitted,
    JsonBody(body): JsonBody<CheckoutBody>,
) -> Result<impl IntoResponse, ApiError> {
    let requested: Vec<OrderLine> = body
        .items
        .iter()
        .map(|l| OrderLine {
            product_id: l.product_id,
            quantity: l.quantity,
        })
        .collect();
    let lines = validated(order::lines(&requested))?;
    let (view, created) = state.orders.checkout(customer_id, &key, &lines).await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let location = format!("/orders/{}", view.order.id);
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(OrderBody::from(view)),
    ))
}

/// Who places the order, under which key, admitted: decided before the body is read, so under
/// overload a refusal costs the token's lookup and the key's, and no more. A key already used
/// is let through, for the checkout to answer with its order.
pub struct Admitted {
    customer_id: Uuid,
    key: String,
}

impl FromRequestParts<AppState> for Admitted {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let CustomerCaller(customer_id) = CustomerCaller::from_request_parts(parts, state).await?;
        let RequiredIdempotencyKey(key) =
            RequiredIdempotencyKey::from_request_parts(parts, state).await?;
        state.orders.admit(customer_id, &key).await?;
        Ok(Self { customer_id, key })
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct GetOrderQuery {
    /// Hold the answer until the order leaves `pending`, for at most this many seconds (≤ 30).
    #[param(minimum = 0, maximum = 30)]
    pub wait: Option<f64>,
}

/// An order (its owner or the admin).
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", params(Id, GetOrderQuery),
    security(("bearer" = [])),
    responses((status = 200, body = OrderBody), Problems))]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
    Query(query): Query<GetOrderQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let view = match query.wait {
        None => state.orders.view(viewer(caller), id).await?,
        Some(w) if (0.0..=MAX_WAIT_SECS).contains(&w) => {
            state
                .orders
                .view_when_settled(viewer(caller), id, Duration::from_secs_f64(w))
                .await?
        }
        Some(_) => {
            return Err(ApiError::bad_field(
                "wait",
                "must be a number of seconds between 0 and 30",
            ));
        }
    };
    Ok((etag(view.order.version), Json(OrderBody::from(view))))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListOrdersQuery {
    /// `pending | confirmed | rejected | cancelled`.
    pub status: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Orders, newest first: a customer's own, or everyone's for the admin.
#[utoipa::path(get, path = "/orders", tag = "orders", params(ListOrdersQuery),
    security(("bearer" = [])),
    responses((status = 200, body = PageBody<OrderBody>), Problems))]
pub async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListOrdersQuery>,
) -> Result<Json<PageBody<OrderBody>>, ApiError> {
    let (limit, before) = page::params(query.limit, query.cursor.as_deref())?;
    let status = query
        .status
        .as_deref()
        .map(OrderStatus::parse)
        .transpose()
        .map_err(|e| ApiError::bad_field("status", e.0))?;
    let orders = state
        .orders
        .list(viewer(caller), status, before, limit)
        .await?;
    Ok(Json(PageBody::from_page(orders)))
}

/// Cancels an order (its owner or the admin). The cancellation runs as compensation: a pending
/// order's saga stops and undoes what it did; a confirmed order is refunded and restocked.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders", params(Id),
    security(("bearer" = [])),
    responses((status = 202, body = OrderBody, description = "the cancellation is under way"), Problems))]
pub async fn cancel_order(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<impl IntoResponse, ApiError> {
    let view = state.orders.cancel(viewer(caller), id).await?;
    Ok((StatusCode::ACCEPTED, Json(OrderBody::from(view))))
}

/// The order's history, from MongoDB.
#[utoipa::path(get, path = "/orders/{id}/history", tag = "orders", params(Id),
    security(("bearer" = [])),
    responses((status = 200, body = HistoryBody), Problems))]
pub async fn order_history(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<Json<HistoryBody>, ApiError> {
    let events = state.orders.history(viewer(caller), id).await?;
    Ok(Json(HistoryBody {
        order_id: id,
        events: events.into_iter().map(Into::into).collect(),
    }))
}

/// The longest `stuck_for` taken: ten years, in seconds.
const MAX_STUCK_FOR_SECS: u64 = 10 * 365 * 86_400;

#[derive(Deserialize, utoipa::IntoParams)]
pub struct SearchSagasQuery {
    #[param(schema_with = saga_states)]
    pub state: Option<SagaState>,
    #[param(schema_with = saga_kinds)]
    pub kind: Option<SagaKind>,
    pub order_id: Option<Uuid>,
    /// The customer whose orders the sagas are for.
    pub customer_id: Option<Uuid>,
    /// Started after this instant (RFC 3339).
    pub started_after: Option<DateTime<Utc>>,
    /// Started before this instant (RFC 3339).
    pub started_before: Option<DateTime<Utc>>,
    /// Not ended, and unchanged for at least this many seconds.
    #[param(minimum = 0, maximum = 315_360_000)]
    pub stuck_for: Option<u64>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn saga_states() -> utoipa::openapi::Object {
    string_enum(SagaState::ALL.map(SagaState::as_str))
}

fn saga_kinds() -> utoipa::openapi::Object {
    string_enum(SagaKind::ALL.map(SagaKind::as_str))
}

/// Sagas, newest first, with every filter given holding (admin): what is stuck, what failed,
/// one customer's.
#[utoipa::path(get, path = "/sagas", tag = "orders", params(SearchSagasQuery),
    security(("bearer" = [])),
    responses((status = 200, body = PageBody<SagaBody>), Problems))]
pub async fn search_sagas(
    State(state): State<AppState>,
    _: Admin,
    Query(query): Query<SearchSagasQuery>,
) -> Result<Json<PageBody<SagaBody>>, ApiError> {
    let (limit, before) = page::params(query.limit, query.cursor.as_deref())?;
    if query.stuck_for.is_some_and(|s| s > MAX_STUCK_FOR_SECS) {
        return Err(ApiError::bad_field(
            "stuck_for",
            format!("must be a number of seconds between 0 and {MAX_STUCK_FOR_SECS}"),
        ));
    }
    let filter = SagaFilter {
        state: query.state,
        kind: query.kind,
        order_id: query.order_id,
        customer_id: query.customer_id,
        started_after: query.started_after,
        started_before: query.started_before,
        stuck_for: query.stuck_for.map(Duration::from_secs),
    };
    let sagas = state.orders.search_sagas(&filter, before, limit).await?;
    Ok(Json(PageBody::from_page(sagas)))
}

/// A saga (the owner of its order, or the admin).
#[utoipa::path(get, path = "/sagas/{id}", tag = "orders", params(Id),
    security(("bearer" = [])),
    responses((status = 200, body = SagaBody), Problems))]
pub async fn get_saga(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<Json<SagaBody>, ApiError> {
    let saga = state.orders.saga(viewer(caller), id).await?;
    Ok(Json(saga.into()))
}
