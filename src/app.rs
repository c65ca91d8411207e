//! Assembles stores, services and roles into a running application, and stops it cleanly.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{
    config::Settings,
    domain::money::Currency,
    http::{self, AppState},
    messaging::{
        Amqp,
        dead_letters::{Action, DeadLetter, DeadLetters},
        topology::{Queue, Topology},
    },
    metrics::Metrics,
    readiness::{Readiness, Store, when_set_up},
    roles::{self, Role, RoleContext},
    seed,
    services::{
        Stores, catalog::Catalog, customers::Customers, orders::Orders, ratings::Ratings,
        reconcile::Reconciler, reviews::Reviews,
    },
    store::{
        broker::Broker, documents::CatalogDocuments, postgres, ratings::RatingCache,
        stock::StockCounters, tls,
    },
};

/// Handles on every store, with a Postgres pool of up to `pg_pool` connections. No store is
/// contacted yet; [`Readiness`] sets them up. Fails only on settings that cannot work.
pub async fn open(settings: &Settings, pg_pool: u32) -> anyhow::Result<Stores> {
    Currency::parse(&settings.currency).context("ORDERLY_CURRENCY")?;
    tls::install_crypto_provider();
    // sqlx reads the file at each connect; read now so a wrong path stops the start, not a query.
    ca_pem(
        settings.database_ca_file.as_deref(),
        "ORDERLY_DATABASE_CA_FILE",
    )?;
    let pg = postgres::pool(settings, pg_pool).context("ORDERLY_DATABASE_URL")?;
    let redis_ca = ca_pem(settings.redis_ca_file.as_deref(), "ORDERLY_REDIS_CA_FILE")?;
    let stock = StockCounters::open(
        &settings.redis_url,
        &settings.redis_prefix,
        redis_ca.as_deref(),
    )
    .context("ORDERLY_REDIS_URL")?;
    let docs = CatalogDocuments::connect(&settings.mongodb_url, &settings.mongodb_database)
        .await
        .context("ORDERLY_MONGODB_URL")?;
    Ok(Stores {
        pg,
        ratings: RatingCache::new(stock.connection(), &settings.redis_prefix),
        stock,
        docs,
        broker: Arc::new(Broker::new(amqp(settings)?)),
    })
}

/// Where RabbitMQ is, with the CA file the settings name.
fn amqp(settings: &Settings) -> anyhow::Result<Amqp> {
    let ca = ca_pem(settings.amqp_ca_file.as_deref(), "ORDERLY_AMQP_CA_FILE")?;
    Ok(Amqp::new(&settings.amqp_url, ca))
}

fn ca_pem(path: Option<&std::path::Path>, setting: &'static str) -> anyhow::Result<Option<String>> {
    Ok(path.map(|p| tls::read_ca_file(setting, p)).transpose()?)
}

/// Postgres, Redis and MongoDB, set up now (migrations, indexes), for one-shot commands and
/// tests: fails on the first of them that does not answer.
pub async fn connect(settings: &Settings, pg_pool: u32) -> anyhow::Result<Stores> {
    let stores = open(settings, pg_pool).await?;
    let failed = Readiness::default()
        .try_set_up(
            &stores,
            settings,
            &[Store::Postgres, Store::Redis, Store::Mongodb],
        )
        .await;
    if let Some((store, e)) = failed.into_iter().next() {
        return Err(anyhow::Error::new(e).context(format!("setting up {}", store.as_str())));
    }
    Ok(stores)
}

/// Opens the stores and tries to set up each of `which` once, so that on healthy stores a
/// process starts ready; the ones that fail are named in the log and retried once it runs.
async fn open_and_try(
    settings: &Settings,
    pg_pool: u32,
    which: &[Store],
) -> anyhow::Result<(Stores, Readiness)> {
    let stores = open(settings, pg_pool).await?;
    let readiness = Readiness::default();
    for (store, e) in readiness.try_set_up(&stores, settings, which).await {
        // A certificate refused now is refused on every retry: stop, naming the store.
        if tls::certificate_rejected(&e) {
            return Err(anyhow::Error::new(e).context(format!(
                "{}: TLS: the server's certificate is not trusted (check its URL's host and the CA file setting)",
                store.as_str()
            )));
        }
        tracing::warn!(store = store.as_str(), error = %e, "store not available at start; starting without it and retrying");
    }
    Ok((stores, readiness))
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
        let (stores, readiness) =
            open_and_try(&settings, settings.pg_max_connections, &Store::ALL).await?;
        let listener = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding {}", settings.http_addr))?;
        let role_stores = if roles.is_empty() {
            stores.clone()
        } else {
            Stores {
                pg: postgres::pool(&settings, settings.worker_pg_max_connections)
                    .context("ORDERLY_DATABASE_URL")?,
                ..stores.clone()
            }
        };
        let metrics = Arc::new(Metrics::default());
        let policy = role_context(&stores, &settings, &metrics).policy();
        let ratings = Ratings::new(stores.clone(), metrics.rating_aggregations.clone());
        let topology = Topology::new(&settings.amqp_prefix);
        let dead_letters = DeadLetters::new(stores.broker.amqp().clone(), topology.clone());
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
                settings.max_pending_per_customer,
            ),
            metrics,
            admin_token: Arc::from(settings.admin_token.as_str()),
            stores,
            readiness,
            dead_letters,
            topology,
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

    /// Which of its stores the application has set up so far.
    pub fn readiness(&self) -> &Readiness {
        &self.state.readiness
    }

    /// Serves until `shutdown` resolves, then stops taking connections, lets requests in flight
    /// finish (up to the grace period) and stops the background tasks.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let readiness = self.state.readiness.clone();
        readiness.spawn_set_up(
            &self.state.stores,
            &self.settings,
            &Store::ALL,
            &stop_rx,
            &mut tasks,
        );
        let orders = self.state.orders.clone();
        tasks.spawn(when_set_up(
            readiness.clone(),
            &[Store::Postgres],
            stop_rx.clone(),
            orders.clone().run_settlement_listener(stop_rx.clone()),
        ));
        tasks.spawn(when_set_up(
            readiness.clone(),
            &[Store::Postgres],
            stop_rx.clone(),
            orders.run_backlog_watch(stop_rx.clone()),
        ));
        let context = role_context(&self.role_stores, &self.settings, &self.state.metrics);
        roles::spawn(
            context,
            &self.roles,
            &readiness,
            stop_rx.clone(),
            &mut tasks,
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
    let needed = roles::needs(&roles);
    let (stores, readiness) =
        open_and_try(&settings, settings.worker_pg_max_connections, &needed).await?;
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    readiness.spawn_set_up(&stores, &settings, &needed, &stop_rx, &mut tasks);
    let context = role_context(&stores, &settings, &metrics);
    roles::spawn(context, &roles, &readiness, stop_rx.clone(), &mut tasks);
    if let Some(addr) = settings.worker_metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving worker metrics and readiness");
        // Ready when the stores its roles use answer (RabbitMQ among them: without it a
        // worker does nothing).
        let probe = http::ops::Probe {
            stores: stores.clone(),
            readiness: readiness.clone(),
            required: needed.clone(),
            reported: needed,
            metrics: metrics.clone(),
        };
        let router = http::ops::worker_router(metrics.clone(), probe);
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
    postgres::migrate(settings)
        .await
        .context("migrating Postgres")?;
    println!("migrations applied");
    Ok(())
}

/// `orderly seed`: prints the demo credentials as `KEY=value` lines for scripts.
pub async fn seed(settings: &Settings) -> anyhow::Result<()> {
    let stores = connect(settings, settings.pg_max_connections).await?;
    let metrics = Arc::new(Metrics::default());
    let policy = role_context(&stores, settings, &metrics).policy();
    let demo = seed::run(&stores, &settings.currency, policy).await?;
    println!("ORDERLY_DEMO_CUSTOMER_ID={}", demo.customer_id);
    println!("ORDERLY_DEMO_CUSTOMER_TOKEN={}", demo.customer_token);
    println!("ORDERLY_DEMO_ORDER_ID={}", demo.order_id);
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

/// What `orderly dlq` was asked to do.
pub enum Dlq {
    List(Option<Queue>),
    Show(String),
    Replay(Which),
    Purge(Which),
}

/// One dead letter by id, or every one (of a queue).
pub enum Which {
    One(String),
    All(Option<Queue>),
}

/// `orderly dlq`: prints what it found or did; `false` when the dead letter named is not there.
pub async fn dlq(settings: &Settings, command: Dlq) -> anyhow::Result<bool> {
    let letters = DeadLetters::new(amqp(settings)?, Topology::new(&settings.amqp_prefix));
    let line = |l: &DeadLetter| {
        format!(
            "{}  {}  failures={}  last={}  {}",
            l.id,
            l.queue,
            l.failures,
            l.last_failed_at.as_deref().unwrap_or("-"),
            l.reason.as_deref().unwrap_or("-")
        )
    };
    let (action, which) = match command {
        Dlq::List(queue) => {
            let all = letters.list(queue).await?;
            for letter in &all {
                println!("{}", line(letter));
            }
            println!("{} dead letter(s)", all.len());
            return Ok(true);
        }
        Dlq::Show(id) => {
            return match letters.find(&id).await? {
                Some(letter) => {
                    println!("{}", serde_json::to_string_pretty(&letter)?);
                    Ok(true)
                }
                None => {
                    eprintln!("no dead letter {id}");
                    Ok(false)
                }
            };
        }
        Dlq::Replay(which) => (Action::Replay, which),
        Dlq::Purge(which) => (Action::Purge, which),
    };
    let verb = if action == Action::Replay {
        "replayed"
    } else {
        "purged"
    };
    match which {
        Which::One(id) => match letters.settle_one(&id, action).await? {
            Some(letter) => {
                println!("{verb} {}", line(&letter));
                Ok(true)
            }
            None => {
                eprintln!("no dead letter {id}");
                Ok(false)
            }
        },
        Which::All(queue) => {
            let done = letters.settle_all(queue, action).await?;
            for letter in &done {
                println!("{verb} {}", line(letter));
            }
            println!("{verb} {} dead letter(s)", done.len());
            Ok(true)
        }
    }
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
