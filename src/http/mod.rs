//! The HTTP edge: the router, its shared state and the per-request span and metrics.

pub mod auth;
pub mod customers;
pub mod dead_letters;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod page;
pub mod products;
pub mod reviews;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tracing::Instrument;

use crate::{
    metrics::Metrics,
    readiness::{NotSetUp, Readiness, Store},
    services::{Stores, catalog::Catalog, customers::Customers, orders::Orders, reviews::Reviews},
};
use error::ApiError;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
    pub catalog: Catalog,
    pub customers: Customers,
    pub reviews: Reviews,
    pub orders: Orders,
    pub metrics: Arc<Metrics>,
    pub admin_token: Arc<str>,
    pub readiness: Readiness,
    /// Queue names, for the dead letters.
    pub topology: crate::messaging::topology::Topology,
    pub dead_letters: crate::messaging::dead_letters::DeadLetters,
}

pub fn router(state: AppState, body_limit: usize) -> Router {
    let operations = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/dashboard", get(ops::dashboard));
    Router::new()
        .route("/customers", post(customers::create_customer))
        .route("/customers/{id}", get(customers::get_customer))
        .route("/customers/{id}/deposits", post(customers::deposit))
        .route(
            "/products",
            get(products::list_products).post(products::create_product),
        )
        .route(
            "/products/{id}",
            get(products::get_product)
                .patch(products::update_product)
                .delete(products::delete_product),
        )
        .route(
            "/products/{id}/stock-adjustments",
            post(products::adjust_stock),
        )
        .route(
            "/products/{id}/reviews",
            get(reviews::list_reviews).post(reviews::create_review),
        )
        .route(
            "/orders",
            get(orders::list_orders).post(orders::place_order),
        )
        .route("/orders/{id}", get(orders::get_order))
        .route("/orders/{id}/cancel", post(orders::cancel_order))
        .route("/orders/{id}/history", get(orders::order_history))
        .route("/sagas", get(orders::search_sagas))
        .route("/dead-letters", get(dead_letters::list_dead_letters))
        .route(
            "/dead-letters/{id}",
            get(dead_letters::get_dead_letter).delete(dead_letters::purge_dead_letter),
        )
        .route(
            "/dead-letters/{id}/replay",
            post(dead_letters::replay_dead_letter),
        )
        .route("/sagas/{id}", get(orders::get_saga))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_tables,
        ))
        .merge(operations)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// `503` for a route that needs Postgres's tables before this process has set them up: the
/// query would otherwise fail on a table that does not exist yet, as an internal error.
async fn require_tables(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.readiness.is_set_up(Store::Postgres) {
        return Err(ApiError::Unavailable(NotSetUp(Store::Postgres).into()));
    }
    Ok(next.run(request).await)
}

/// One span per request (method, route, status, latency) and the matching metrics. The route is
/// the matched template (`/products/{id}`), so label cardinality stays bounded.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Any token is a valid method; only the known ones become labels, so metrics stay bounded.
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m.to_owned(),
        _ => "OTHER".to_owned(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "http",
        method = %method,
        route = %route,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("status", status);
    span.record("latency_ms", elapsed.as_secs_f64() * 1000.0);
    span.in_scope(|| tracing::info!("request finished"));
    state
        .metrics
        .observe_http(&method, &route, status, elapsed.as_secs_f64());
    response.into_response()
}
