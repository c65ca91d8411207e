//! Operations: liveness, readiness of every store, metrics and the OpenAPI description.

use std::{collections::BTreeMap, future::Future, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use crate::store::postgres;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// 200 when every store answers, else 503; the body names each store's state.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = BTreeMap<String, String>), (status = 503, body = BTreeMap<String, String>)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let stores = &state.stores;
    let (pg, redis, mongo, rabbit) = tokio::join!(
        probe(postgres::ping(&stores.pg)),
        probe(stores.stock.ping()),
        probe(stores.docs.ping()),
        probe(stores.broker.ping()),
    );
    let report: BTreeMap<&str, String> = BTreeMap::from([
        ("postgres", pg),
        ("redis", redis),
        ("mongodb", mongo),
        ("rabbitmq", rabbit),
    ]);
    let status = if report.values().all(|s| s == "ok") {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

/// "ok", or "down: <reason>" when the check fails or takes over two seconds.
async fn probe<E: std::fmt::Display>(check: impl Future<Output = Result<(), E>>) -> String {
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("down: {e}"),
        Err(_) => "down: no answer within 2s".to_owned(),
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // The backlog is shared by every relay, so it is read from Postgres at scrape time. If
    // Postgres does not answer, the last value stays: the scrape itself must not fail.
    if let Ok(Ok(backlog)) = tokio::time::timeout(
        Duration::from_secs(1),
        crate::store::postgres::outbox::backlog(&state.stores.pg),
    )
    .await
    {
        state.metrics.outbox_backlog.set(backlog);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// This API's OpenAPI 3.1 description, generated from the handlers and types.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200)))]
pub async fn openapi() -> impl IntoResponse {
    Json(super::openapi::ApiDoc::openapi())
}

/// The little HTTP surface of `orderly worker`: its own metrics and liveness.
pub fn worker_router(metrics: std::sync::Arc<crate::metrics::Metrics>) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }),
        )
        .route("/healthz", axum::routing::get(healthz))
}
