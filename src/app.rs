//! Assembles stores, services and roles into a running application, and stops it cleanly.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{
    config::Settings,
    domain::money::Currency,
    http::{self, AppState},
    messaging::topology::Topology,
    metrics::Metrics,
    roles::{self, Role, RoleContext},
    seed,
    services::{
        Stores, catalog::Catalog, customers::Customers, orders::Orders, ratings::Ratings,
        reconcile::Reconciler, reviews::Reviews,
    },
    store::{
        broker::Broker, documents::CatalogDocuments, history::OrderHistory, postgres,
        ratings::RatingCache, stock::StockCounters,
    },
};

/// Connects every store, applying migrations and creating indexes on the way.
/// Every store, with a Postgres pool of up to `pg_pool` connections.
pub async fn connect(settings: &Settings, pg_pool: u32) -> anyhow::Result<Stores> {
    Currency::parse(&settings.currency).context("ORDERLY_CURRENCY")?;
    let pg = postgres::migrate(settings, pg_pool)
        .await
        .context("connecting to Postgres")?;
    let stock = StockCounters::connect(&settings.redis_url, &settings.redis_prefix)
        .await
        .context("connecting to Redis")?;
    let docs = CatalogDocuments::connect(&settings.mongodb_url, &settings.mongodb_database)
        .await
        .context("configuring the MongoDB client")?;
    docs.ensure_indexes()
        .await
        .context("creating MongoDB indexes")?;
    OrderHistory::new(docs.database())
        .ensure_indexes()
        .await
        .context("creating MongoDB indexes")?;
    Ok(Stores {
        pg,
        ratings: RatingCache::new(stock.connection(), &settings.redis_prefix),
        stock,
        docs,
        broker: Arc::new(Broker::new(&settings.amqp_url)),
    })
}

/// The API and the worker roles run beside it, bound to its address but not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// The roles' stores: the API's, but with a Postgres pool of their own, so that a backlog
    /// of saga work cannot take every connection from checkouts and reads.
    role_stores: Stores,
    settings: Arc<Settings>,
    roles: Vec<Role>,
}

impl Application {
    /// The API with every worker role: `orderly run`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_roles(settings, Role::ALL.to_vec()).await
    }

    /// The API with the given worker roles (none for `orderly api`).
    pub async fn build_with_roles(settings: Settings, roles: Vec<Role>) -> anyhow::Result<Self> {
        let stores = connect(&settings, settings.pg_max_connections).await?;
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding {}", settings.http_addr))?;
        let role_stores = if roles.is_empty() {
            stores.clone()
        } else {
            Stores {
                pg: postgres::connect(&settings, settings.worker_pg_max_connections)
                    .await
                    .context("connecting to Postgres")?,
                ..stores.clone()
            }
        };
        let metrics = Arc::new(Metrics::default());
        let policy = role_context(&stores, &settings, &metrics).policy();
        let ratings = Ratings::new(stores.clone(), metrics.rating_aggregations.clone());
        let state = AppState {
            catalog: Catalog::new(stores.clone(), settings.currency.clone(), ratings.clone()),
            customers: Customers::new(stores.clone(), settings.currency.clone()),
            reviews: Reviews::new(stores.clone(), ratings),
            orders: Orders::new(
                stores.clone(),
                settings.currency.clone(),
                policy,
                metrics.clone(),
                settings.max_pending_orders,
            ),
            metrics,
            admin_token: Arc::from(settings.admin_token.as_str()),
            stores,
        };
        Ok(Self {
            listener,
            state,
            role_stores,
            settings: Arc::new(settings),
            roles,
        })
    }

    /// The bound address (tests bind port 0 and ask).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn stores(&self) -> &Stores {
        &self.state.stores
    }

    /// Serves until `shutdown` resolves, then stops taking connections, lets requests in flight
    /// finish (up to the grace period) and stops the background tasks.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(
            self.state
                .orders
                .clone()
                .run_settlement_listener(stop_rx.clone()),
        );
        tasks.spawn(self.state.orders.clone().run_backlog_watch(stop_rx.clone()));
        let context = role_context(&self.role_stores, &self.settings, &self.state.metrics);
        roles::spawn(context, &self.roles, stop_rx.clone(), &mut tasks);
        let broker = self.state.stores.broker.clone();
        let router = http::router(self.state, self.settings.body_limit_bytes);
        tracing::info!(addr = %self.listener.local_addr()?, "orderly is serving");

        let mut stopped = stop_rx.clone();
        let server = axum::serve(self.listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = stop_tx.send(true);
        });
        let grace = self.settings.shutdown_grace;
        let outcome = tokio::select! {
            served = server => served.context("serving HTTP"),
            _ = async {
                let _ = stopped.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("grace period over; dropping requests still in flight");
                Ok(())
            }
        };
        drain(tasks, grace).await;
        broker.close().await;
        tracing::info!("stopped");
        outcome
    }
}

fn role_context(stores: &Stores, settings: &Settings, metrics: &Arc<Metrics>) -> RoleContext {
    RoleContext {
        stores: stores.clone(),
        topology: Topology::new(&settings.amqp_prefix),
        metrics: metrics.clone(),
        settings: Arc::new(settings.clone()),
    }
}

/// Waits for the roles to finish the messages they hold, up to `grace`.
async fn drain(mut tasks: JoinSet<()>, grace: Duration) {
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!("grace period over; abandoning work in flight (it will be redelivered)");
    }
}

/// `orderly worker --roles …`: runs worker roles without the API until SIGINT or SIGTERM, then
/// stops taking messages and finishes those in flight.
pub async fn work(settings: Settings, roles: Vec<Role>) -> anyhow::Result<()> {
    tracing::info!(settings = ?settings, roles = ?roles, "starting worker");
    let stores = connect(&settings, settings.worker_pg_max_connections).await?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    roles::spawn(
        role_context(&stores, &settings, &metrics),
        &roles,
        stop_rx.clone(),
        &mut tasks,
    );
    if let Some(addr) = settings.worker_metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving worker metrics");
        let router = http::ops::worker_router(metrics.clone());
        let mut stopped = stop_rx;
        tasks.spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await;
        });
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing messages in flight");
    let _ = stop_tx.send(true);
    drain(tasks, settings.shutdown_grace).await;
    stores.broker.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `orderly run` / `orderly api`: serve (with `roles` beside the API) until SIGINT or SIGTERM.
pub async fn serve(settings: Settings, roles: Vec<Role>) -> anyhow::Result<()> {
    tracing::info!(settings = ?settings, roles = ?roles, "starting");
    Application::build_with_roles(settings, roles)
        .await?
        .run_until_stopped(shutdown_signal())
        .await
}

/// `orderly migrate`.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    postgres::migrate(settings, 1)
        .await
        .context("migrating Postgres")?;
    println!("migrations applied");
    Ok(())
}

/// `orderly seed`: prints the demo credentials as `KEY=value` lines for scripts.
pub async fn seed(settings: &Settings) -> anyhow::Result<()> {
    let stores = connect(settings, settings.pg_max_connections).await?;
    let demo = seed::run(&stores, &settings.currency).await?;
    println!("ORDERLY_DEMO_CUSTOMER_ID={}", demo.customer_id);
    println!("ORDERLY_DEMO_CUSTOMER_TOKEN={}", demo.customer_token);
    Ok(())
}

/// `orderly reconcile`: rebuilds Redis's stock keys from Postgres, or with `check` only reports
/// where they drifted. Returns whether Redis agreed with Postgres (a rebuild always does).
pub async fn reconcile(settings: &Settings, check: bool) -> anyhow::Result<bool> {
    let stores = connect(settings, 4).await?;
    let reconciler = Reconciler::new(stores);
    if !check {
        let report = reconciler.rebuild().await?;
        println!(
            "rebuilt Redis stock: {} products, {} reservation records ({} holding stock)",
            report.products, report.orders, report.holding
        );
        return Ok(true);
    }
    let report = reconciler.check().await?;
    for drift in &report.drift {
        println!("drift: {drift}");
    }
    println!(
        "checked {} products and {} orders ({} holding stock): {} drift(s)",
        report.products,
        report.orders,
        report.holding,
        report.drift.len()
    );
    Ok(report.drift.is_empty())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
