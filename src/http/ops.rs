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
    metrics::{Metrics, QueueLabels, SagaStateLabels, StoreLabels},
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

/// 200 when Postgres answers and is migrated, else 503; the body names every store's state.
///
/// Only Postgres decides: checkout, the orders and the outbox live there, so with Postgres up
/// the API takes orders through a RabbitMQ, Redis or MongoDB outage (the outbox holds what the
/// broker cannot take yet; the endpoints that need another store answer `503` themselves). A
/// stricter probe would take every API pod out of its Service at the first broker blip.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = BTreeMap<String, String>), (status = 503, body = BTreeMap<String, String>)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    api_probe(&state).report().await
}

/// The API's readiness: Postgres required, every store reported.
fn api_probe(state: &AppState) -> Probe {
    Probe {
        stores: state.stores.clone(),
        readiness: state.readiness.clone(),
        required: vec![Store::Postgres],
        reported: Store::ALL.to_vec(),
        metrics: state.metrics.clone(),
    }
}

/// What a process's `/readyz` looks at.
#[derive(Clone)]
pub struct Probe {
    pub stores: Stores,
    pub readiness: Readiness,
    /// The stores without which the process cannot do its work: ready only when all answer.
    pub required: Vec<Store>,
    /// The stores named in the body (a superset of `required`).
    pub reported: Vec<Store>,
    /// Where each check sets `orderly_store_up`.
    pub metrics: std::sync::Arc<Metrics>,
}

impl Probe {
    /// Each reported store's state, checked at the same time; 503 unless the required are "ok".
    pub async fn report(&self) -> (StatusCode, Json<BTreeMap<&'static str, String>>) {
        let report = self.check().await;
        let ready = self
            .required
            .iter()
            .all(|s| report.get(s.as_str()).is_some_and(|state| state == "ok"));
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(report))
    }

    /// Each reported store's state by name, also set as `orderly_store_up`.
    pub async fn check(&self) -> BTreeMap<&'static str, String> {
        let states = futures::future::join_all(self.reported.iter().map(|&s| self.state(s))).await;
        let report: BTreeMap<&str, String> = self
            .reported
            .iter()
            .map(|s| s.as_str())
            .zip(states)
            .collect();
        for (store, state) in &report {
            self.metrics
                .store_up
                .get_or_create(&StoreLabels { store })
                .set(i64::from(state == "ok"));
        }
        report
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
    let probe = api_probe(&state);
    tokio::join!(refresh_store_gauges(&state), probe.check());
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
    let probe_for_metrics = probe.clone();
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
            axum::routing::get(move || {
                let probe = probe_for_metrics.clone();
                let metrics = metrics.clone();
                async move {
                    probe.check().await;
                    (
                        [(header::CONTENT_TYPE, Metrics::CONTENT_TYPE)],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(healthz))
}
