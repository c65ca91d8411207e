//! The worker roles. Each module reads as its job — take a message, do one effect, write the
//! reply — while decoding, tracing, acks, retries and dead-lettering live once, in
//! [`crate::messaging::consumer`].
//!
//! | role | consumes | effect |
//! |---|---|---|
//! | `relay` | the outbox (Postgres) | publishes with confirms, then deletes the rows |
//! | `orchestrator` | `saga.*` | drives sagas under their version; sweeps deadlines |
//! | `inventory` | `inventory.*` | `reserve.lua` / `release.lua`; settles stock adjustments |
//!
//! The relay, the deadline sweep and the stock recovery are each run by one process of the
//! cluster at a time, under a [`lease`]; the consumers run in every process that runs the role.
//! | `payments` | `payments.*` | wallet debits and refunds, once per order |
//! | `history` | `history.*` | projects order history into MongoDB |

pub mod history;
pub mod inventory;
pub mod lease;
pub mod orchestrator;
pub mod payments;
pub mod relay;

use std::{fmt, str::FromStr, sync::Arc, time::Instant};

use tokio::{sync::watch, task::JoinSet};

use self::lease::Duty;
use crate::{
    config::Settings,
    domain::saga::Policy,
    messaging::{
        consumer::{self, Handler},
        topology::{Queue, Topology},
    },
    metrics::Metrics,
    readiness::{self, Backoff, Readiness, Store},
    services::Stores,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Relay,
    Orchestrator,
    Inventory,
    Payments,
    History,
}

impl Role {
    pub const ALL: [Self; 5] = [
        Self::Relay,
        Self::Orchestrator,
        Self::Inventory,
        Self::Payments,
        Self::History,
    ];

    /// The stores the role needs set up before it starts. Every role also needs RabbitMQ, but
    /// reconnects to it on its own, so a broker that is down only delays its first message.
    pub fn needs(self) -> &'static [Store] {
        match self {
            Self::Relay | Self::Orchestrator | Self::Payments => &[Store::Postgres],
            Self::Inventory => &[Store::Postgres, Store::Redis],
            Self::History => &[Store::Mongodb],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::Orchestrator => "orchestrator",
            Self::Inventory => "inventory",
            Self::Payments => "payments",
            Self::History => "history",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == raw.trim())
            .ok_or_else(|| {
                format!("unknown role {raw:?} (expected relay, orchestrator, inventory, payments or history)")
            })
    }
}

/// What every role needs.
#[derive(Clone)]
pub struct RoleContext {
    pub stores: Stores,
    pub topology: Topology,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
}

impl RoleContext {
    pub fn policy(&self) -> Policy {
        let step_timeout = chrono::Duration::from_std(self.settings.step_timeout)
            .unwrap_or(chrono::Duration::seconds(10));
        Policy {
            step_timeout,
            max_wait: step_timeout * 6,
            max_attempts: self.settings.step_max_attempts.max(1),
        }
    }
}

/// The stores `roles` need between them, and RabbitMQ, which every role uses: what a worker
/// running them reports on `/readyz`.
pub fn needs(roles: &[Role]) -> Vec<Store> {
    let mut stores: Vec<Store> = roles.iter().flat_map(|r| r.needs()).copied().collect();
    if !roles.is_empty() {
        stores.push(Store::Rabbitmq);
    }
    stores.sort();
    stores.dedup();
    stores
}

/// Starts `roles` as tasks, each once the stores it needs are set up, that run until `shutdown`
/// turns true, then drain and return.
pub fn spawn(
    context: RoleContext,
    roles: &[Role],
    readiness: &Readiness,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    for &role in roles {
        let context = context.clone();
        let shutdown = shutdown.clone();
        let mut tasks = RoleTasks {
            tasks: &mut *tasks,
            readiness,
            needs: role.needs(),
            shutdown: shutdown.clone(),
        };
        match role {
            Role::Relay => {
                let relay = context.clone();
                tasks.lead(&context, Duty::Relay, move |stop| {
                    relay::run(relay.clone(), stop)
                });
            }
            Role::Orchestrator => {
                let orchestrator = Arc::new(orchestrator::Orchestrator::new(context.clone()));
                let sweeper = orchestrator.clone();
                tasks.lead(&context, Duty::DeadlineSweep, move |stop| {
                    sweeper.clone().run_sweeper(stop)
                });
                tasks.spawn(consume_forever(
                    context,
                    Queue::Orchestrator,
                    orchestrator,
                    shutdown,
                ));
            }
            Role::Inventory => {
                let inventory = inventory::Inventory::new(context.clone());
                let recovery = inventory.clone();
                tasks.lead(&context, Duty::StockRecovery, move |stop| {
                    recovery.clone().run_recovery(stop)
                });
                tasks.spawn(consume_forever(
                    context,
                    Queue::Inventory,
                    Arc::new(inventory),
                    shutdown,
                ));
            }
            Role::Payments => {
                let handler = Arc::new(payments::Payments::new(context.clone()));
                tasks.spawn(consume_forever(context, Queue::Payments, handler, shutdown));
            }
            Role::History => {
                let handler = Arc::new(history::History::new(context.clone()));
                tasks.spawn(consume_forever(context, Queue::History, handler, shutdown));
            }
        }
    }
}

/// Spawns a role's tasks so that each starts once the role's stores are set up.
struct RoleTasks<'a> {
    tasks: &'a mut JoinSet<()>,
    readiness: &'a Readiness,
    needs: &'static [Store],
    shutdown: watch::Receiver<bool>,
}

impl RoleTasks<'_> {
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(readiness::when_set_up(
            self.readiness.clone(),
            self.needs,
            self.shutdown.clone(),
            task,
        ));
    }

    /// Spawns `work` under `duty`'s lease: it runs in this process only while it holds it.
    fn lead<W, F>(&mut self, context: &RoleContext, duty: Duty, work: W)
    where
        W: Fn(watch::Receiver<bool>) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let lead = lease::lead(context.clone(), duty, self.shutdown.clone(), work);
        self.spawn(lead);
    }
}

/// Consumes `queue` until shutdown, reconnecting with backoff whenever RabbitMQ goes away.
async fn consume_forever<H: Handler>(
    context: RoleContext,
    queue: Queue,
    handler: Arc<H>,
    shutdown: watch::Receiver<bool>,
) {
    let name = format!("orderly-{}", queue.as_str());
    let mut backoff = Backoff::default();
    while !*shutdown.borrow() {
        let started = Instant::now();
        let outcome = async {
            let connection = context.stores.broker.amqp().connect(&name).await?;
            let channel = connection.create_channel().await?;
            context.topology.declare(&channel).await?;
            let _ = channel.close(200, "declared").await;
            tracing::info!(queue = queue.as_str(), "consuming");
            let consumed = consumer::consume(
                &connection,
                &context.topology,
                queue,
                context.settings.prefetch,
                context.settings.batching,
                handler.clone(),
                context.metrics.clone(),
                shutdown.clone(),
            )
            .await;
            let _ = connection.close(200, "stopping").await;
            consumed
        }
        .await;
        match outcome {
            // The stream also ends when RabbitMQ cancels the consumer (its queue was deleted,
            // a node left): that is not a shutdown, so consume again.
            Ok(()) if *shutdown.borrow() => break,
            Ok(()) => {
                tracing::warn!(
                    queue = queue.as_str(),
                    "RabbitMQ cancelled the consumer; resubscribing"
                );
                backoff.wait(started.elapsed(), &shutdown).await;
            }
            Err(e) => {
                tracing::warn!(queue = queue.as_str(), error = %e, "consumer lost RabbitMQ; reconnecting");
                backoff.wait(started.elapsed(), &shutdown).await;
            }
        }
    }
    tracing::info!(queue = queue.as_str(), "consumer stopped");
}
