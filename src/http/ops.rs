//! Operations: liveness, readiness of every store, metrics and the OpenAPI description.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use crate::{
    domain::saga::{SagaKind, SagaState},
    messaging::topology::Queue,
    metrics::{Metrics, QueueLabels, SagaStateLabels},
    readiness::{Readiness, Store},
    services::Stores,
    store::{StoreError, postgres},
};

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
    Probe {
        stores: state.stores.clone(),
        readiness: state.readiness.clone(),
        which: Store::ALL.to_vec(),
    }
    .report()
    .await
}

/// What a process's `/readyz` looks at: the stores it uses.
#[derive(Clone)]
pub struct Probe {
    pub stores: Stores,
    pub readiness: Readiness,
    pub which: Vec<Store>,
}

impl Probe {
    /// Each store's state, checked at the same time; 503 unless all are "ok".
    async fn report(&self) -> (StatusCode, Json<BTreeMap<&'static str, String>>) {
        let states = futures::future::join_all(self.which.iter().map(|&s| self.state(s))).await;
        let report: BTreeMap<&str, String> =
            self.which.iter().map(|s| s.as_str()).zip(states).collect();
        let status = if report.values().all(|s| s == "ok") {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(report))
    }

    /// "ok", or "down: <why>" in words of our own: a driver's text names hosts and topology.
    async fn state(&self, store: Store) -> String {
        if !self.readiness.is_set_up(store) {
            return "down: not set up yet (retrying)".to_owned();
        }
        let stores = &self.stores;
        let check = async {
            match store {
                Store::Postgres => postgres::ping(&stores.pg).await.map_err(StoreError::from),
                Store::Redis => stores.stock.ping().await,
                Store::Mongodb => stores.docs.ping().await,
                Store::Rabbitmq => stores.broker.ping().await,
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(StoreError::Unavailable { .. })) => "down: unreachable".to_owned(),
            Ok(Err(StoreError::Failed { .. })) => "down: answers with errors".to_owned(),
            Err(_) => "down: no answer within 2s".to_owned(),
        }
    }
}

/// Prometheus metrics, as OpenMetrics text.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    refresh_store_gauges(&state).await;
    (
        [(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
}

/// Sets the gauges read from the stores at scrape time: the outbox backlog and the sagas in
/// flight (Postgres), the dead letters (RabbitMQ). They are shared by every process, so no
/// process counts them as it works. A store that does not answer within a second leaves its
/// gauges as they were: the scrape itself must not fail.
async fn refresh_store_gauges(state: &AppState) {
    let second = Duration::from_secs(1);
    let dead_queues: Vec<String> = Queue::ALL
        .iter()
        .map(|&q| state.topology.dead_letter_queue(q))
        .collect();
    let (backlog, sagas, dead) = tokio::join!(
        tokio::time::timeout(second, postgres::outbox::backlog(&state.stores.pg)),
        tokio::time::timeout(second, postgres::sagas::in_flight(&state.stores.pg)),
        tokio::time::timeout(second, state.stores.broker.queue_depths(&dead_queues)),
    );
    let metrics = &state.metrics;
    if let Ok(Ok(backlog)) = backlog {
        metrics.outbox_backlog.set(backlog);
    }
    if let Ok(Ok(rows)) = sagas {
        // Every kind and state in flight is set, to zero when no saga is in it now.
        for kind in SagaKind::ALL {
            for state in [SagaState::Running, SagaState::Compensating] {
                let row = rows
                    .iter()
                    .find(|(k, s, _, _)| k == kind.as_str() && s == state.as_str());
                let labels = SagaStateLabels {
                    kind: kind.as_str(),
                    state: state.as_str(),
                };
                metrics
                    .sagas_in_flight
                    .get_or_create(&labels)
                    .set(row.map_or(0, |r| r.2));
                metrics
                    .saga_oldest_in_flight
                    .get_or_create(&labels)
                    .set(row.map_or(0.0, |r| r.3));
            }
        }
    }
    if let Ok(Ok(depths)) = dead {
        for (queue, depth) in Queue::ALL.iter().zip(depths) {
            metrics
                .dead_letters
                .get_or_create(&QueueLabels {
                    queue: queue.as_str(),
                })
                .set(i64::from(depth.unwrap_or(0)));
        }
    }
}

/// The operators' dashboard: one page, compiled into the binary, that asks for the admin token
/// once and then reads the API (metrics every second, saga search and timelines, dead letters).
#[utoipa::path(get, path = "/dashboard", tag = "operations",
    responses((status = 200, content_type = "text/html", description = "the page")))]
pub async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // The page is one file: its script and styles are inline, and it talks only to
            // this origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
            ),
        ],
        include_str!("dashboard.html"),
    )
}

/// This API's OpenAPI 3.1 description, generated from the handlers and types.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200)))]
pub async fn openapi() -> impl IntoResponse {
    Json(super::openapi::ApiDoc::openapi())
}

/// The little HTTP surface of `orderly worker`: its own metrics, liveness, and the readiness of
/// the stores its roles use.
pub fn worker_router(metrics: std::sync::Arc<Metrics>, probe: Probe) -> axum::Router {
    axum::Router::new()
        .route(
            "/readyz",
            axum::routing::get(move || {
                let probe = probe.clone();
                async move { probe.report().await }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || async move {
                (
                    [(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
                    metrics.render(),
                )
            }),
        )
        .route("/healthz", axum::routing::get(healthz))
}
