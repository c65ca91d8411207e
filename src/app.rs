//! Assembles stores, services and roles into a running application, and stops it cleanly.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    config::Settings,
    domain::money::Currency,
    http::{self, AppState},
    metrics::Metrics,
    seed,
    services::{
        Stores, catalog::Catalog, customers::Customers, reviews::Reviews, stock::StockAdjuster,
    },
    store::{broker::Broker, documents::CatalogDocuments, postgres, stock::StockCounters},
};

/// Connects every store, applying migrations and creating indexes on the way.
pub async fn connect(settings: &Settings) -> anyhow::Result<Stores> {
    Currency::parse(&settings.currency).context("ORDERLY_CURRENCY")?;
    let pg = postgres::migrate(settings)
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
    Ok(Stores {
        pg,
        stock,
        docs,
        broker: Arc::new(Broker::new(&settings.amqp_url)),
    })
}

/// The API with its background tasks, bound to its address but not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let stores = connect(&settings).await?;
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding {}", settings.http_addr))?;
        let state = AppState {
            catalog: Catalog::new(stores.clone(), settings.currency.clone()),
            customers: Customers::new(stores.clone(), settings.currency.clone()),
            reviews: Reviews::new(stores.clone()),
            metrics: Arc::new(Metrics::default()),
            admin_token: Arc::from(settings.admin_token.as_str()),
            stores,
        };
        Ok(Self {
            listener,
            state,
            settings,
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
        let recovery = tokio::spawn(
            StockAdjuster::new(self.state.stores.clone())
                .run_recovery(self.settings.stock_recovery_interval, stop_rx.clone()),
        );
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
        let _ = recovery.await;
        broker.close().await;
        tracing::info!("stopped");
        outcome
    }
}

/// `orderly run` / `orderly api`: serve until SIGINT or SIGTERM.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(settings = ?settings, "starting");
    Application::build(settings)
        .await?
        .run_until_stopped(shutdown_signal())
        .await
}

/// `orderly migrate`.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    postgres::migrate(settings)
        .await
        .context("migrating Postgres")?;
    println!("migrations applied");
    Ok(())
}

/// `orderly seed`: prints the demo credentials as `KEY=value` lines for scripts.
pub async fn seed(settings: &Settings) -> anyhow::Result<()> {
    let stores = connect(settings).await?;
    let demo = seed::run(&stores, &settings.currency).await?;
    println!("ORDERLY_DEMO_CUSTOMER_ID={}", demo.customer_id);
    println!("ORDERLY_DEMO_CUSTOMER_TOKEN={}", demo.customer_token);
    Ok(())
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
