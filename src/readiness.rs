//! Which stores a process can use yet, and setting each one up in the background.
//!
//! A process starts with whatever stores answer. Setting a store up — Postgres's database and
//! migrations, MongoDB's indexes, a first answer from Redis and from RabbitMQ — is tried once at
//! start and then retried with jittered backoff until it succeeds, so a process started during
//! an outage waits for the store instead of exiting. Meanwhile the API serves (answering `503`
//! where it needs Postgres's tables), each worker role starts once the stores it needs are set
//! up, and `/readyz` names the stores still missing. Once set up, losing a store again is each
//! caller's business: a request answers `503`, a consumer retries its message.

use std::{fmt, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinSet};

use crate::{
    config::Settings,
    services::Stores,
    store::{StoreError, history::OrderHistory, postgres},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Store {
    Postgres,
    Redis,
    Mongodb,
    Rabbitmq,
}

impl Store {
    pub const ALL: [Self; 4] = [Self::Postgres, Self::Redis, Self::Mongodb, Self::Rabbitmq];

    /// The name in `/readyz`, logs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Mongodb => "mongodb",
            Self::Rabbitmq => "rabbitmq",
        }
    }
}

/// How long one attempt to set a store up may take before it counts as failed.
const ATTEMPT: Duration = Duration::from_secs(10);

/// Whether each store has been set up in this process. Cheap to clone.
#[derive(Clone)]
pub struct Readiness {
    set_up: Arc<[watch::Sender<bool>; 4]>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            set_up: Arc::new(std::array::from_fn(|_| watch::Sender::new(false))),
        }
    }
}

impl Readiness {
    pub fn is_set_up(&self, store: Store) -> bool {
        *self.set_up[store as usize].borrow()
    }

    /// The stores of `stores` not set up yet.
    pub fn missing(&self, stores: &[Store]) -> Vec<Store> {
        stores
            .iter()
            .copied()
            .filter(|&s| !self.is_set_up(s))
            .collect()
    }

    /// Waits until every store of `stores` is set up; `false` if shutdown came first.
    pub async fn wait_for(&self, stores: &[Store], shutdown: &watch::Receiver<bool>) -> bool {
        let mut shutdown = shutdown.clone();
        for &store in stores {
            let mut set_up = self.set_up[store as usize].subscribe();
            tokio::select! {
                done = set_up.wait_for(|up| *up) => if done.is_err() { return false },
                _ = shutdown.wait_for(|stop| *stop) => return false,
            }
        }
        !*shutdown.borrow()
    }

    fn mark_set_up(&self, store: Store) {
        self.set_up[store as usize].send_replace(true);
    }

    /// Tries to set up each of `stores` once, all at the same time; returns those that failed.
    /// A process calls this before it starts serving, so on healthy stores it starts set up.
    pub async fn try_set_up(
        &self,
        stores: &Stores,
        settings: &Settings,
        which: &[Store],
    ) -> Vec<(Store, SetupError)> {
        let attempts = which.iter().map(|&store| async move {
            match set_up(store, stores, settings).await {
                Ok(()) => {
                    self.mark_set_up(store);
                    None
                }
                Err(e) => Some((store, e)),
            }
        });
        futures::future::join_all(attempts)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Keeps setting up each of `stores` that is not yet, with jittered backoff, until it
    /// succeeds or shutdown comes.
    pub fn spawn_set_up(
        &self,
        stores: &Stores,
        settings: &Arc<Settings>,
        which: &[Store],
        shutdown: &watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) {
        for store in self.missing(which) {
            let (readiness, stores, settings) = (self.clone(), stores.clone(), settings.clone());
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let mut backoff = Backoff::default();
                while !*shutdown.borrow() {
                    match set_up(store, &stores, &settings).await {
                        Ok(()) => {
                            tracing::info!(store = store.as_str(), "store set up");
                            readiness.mark_set_up(store);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(store = store.as_str(), error = %e, "store not set up yet; retrying");
                            backoff.wait(Duration::ZERO, &shutdown).await;
                        }
                    }
                }
            });
        }
    }
}

/// Runs `task` once `stores` are set up, unless shutdown comes first.
pub async fn when_set_up(
    readiness: Readiness,
    stores: &'static [Store],
    shutdown: watch::Receiver<bool>,
    task: impl Future<Output = ()>,
) {
    if readiness.wait_for(stores, &shutdown).await {
        task.await;
    }
}

/// Why a store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no answer within {}s", ATTEMPT.as_secs())]
    TimedOut,
}

/// One attempt at making `store` usable by this process.
async fn set_up(store: Store, stores: &Stores, settings: &Settings) -> Result<(), SetupError> {
    match store {
        // Not bounded here: a migration may rightly take long, and cutting one short would only
        // start it over (`migrate` bounds reaching Postgres itself).
        Store::Postgres => Ok(postgres::migrate(settings)
            .await
            .map_err(StoreError::from)?),
        Store::Redis => bounded(stores.stock.ping()).await,
        Store::Mongodb => {
            bounded(async {
                stores.docs.ensure_indexes().await?;
                OrderHistory::new(stores.docs.database())
                    .ensure_indexes()
                    .await
            })
            .await
        }
        Store::Rabbitmq => bounded(stores.broker.ping()).await,
    }
}

/// `attempt`, failed if it takes longer than [`ATTEMPT`].
async fn bounded(attempt: impl Future<Output = Result<(), StoreError>>) -> Result<(), SetupError> {
    tokio::time::timeout(ATTEMPT, attempt)
        .await
        .map_err(|_| SetupError::TimedOut)?
        .map_err(SetupError::from)
}

/// A store this process has not set up yet, as the cause of a `503`.
#[derive(Debug)]
pub struct NotSetUp(pub Store);

impl fmt::Display for NotSetUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not set up yet", self.0.as_str())
    }
}

impl std::error::Error for NotSetUp {}

impl From<NotSetUp> for StoreError {
    fn from(e: NotSetUp) -> Self {
        StoreError::Unavailable {
            store: e.0.as_str(),
            source: Box::new(e),
        }
    }
}

/// Exponential backoff between attempts to reach a store: 100 ms doubling to 5 s, each wait
/// drawn between half and all of that (jitter, so processes that lost a store together do not
/// come back in step). It starts over only once a connection has stayed up for
/// [`Backoff::HEALTHY`]: a store that accepts a connection and drops it at once must not be
/// retried ten times a second.
#[derive(Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub const HEALTHY: Duration = Duration::from_secs(30);

    /// The longest delay before the next attempt, after a connection that lasted `lasted`.
    fn next(&mut self, lasted: Duration) -> Duration {
        if lasted >= Self::HEALTHY {
            self.failures = 0;
        }
        let delay =
            Duration::from_millis(100 * (1 << self.failures.min(6))).min(Duration::from_secs(5));
        self.failures += 1;
        delay
    }

    /// Sleeps for the next delay, or less if shutdown comes first.
    pub async fn wait(&mut self, lasted: Duration, shutdown: &watch::Receiver<bool>) {
        let delay = self.next(lasted).mul_f64(rand::random_range(0.5..=1.0));
        let mut shutdown = shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_until_a_connection_stays_up() {
        let mut backoff = Backoff::default();
        let brief = Duration::from_millis(10);
        let delays: Vec<u128> = (0..8).map(|_| backoff.next(brief).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff.next(Backoff::HEALTHY).as_millis(), 100);
        assert_eq!(backoff.next(brief).as_millis(), 200);
    }

    #[tokio::test]
    async fn waiting_ends_when_every_store_is_set_up_or_at_shutdown() {
        let readiness = Readiness::default();
        let (stop, shutdown) = watch::channel(false);
        let waiting = tokio::spawn({
            let readiness = readiness.clone();
            let shutdown = shutdown.clone();
            async move {
                readiness
                    .wait_for(&[Store::Postgres, Store::Mongodb], &shutdown)
                    .await
            }
        });
        readiness.mark_set_up(Store::Mongodb);
        assert_eq!(
            readiness.missing(&Store::ALL),
            [Store::Postgres, Store::Redis, Store::Rabbitmq]
        );
        readiness.mark_set_up(Store::Postgres);
        assert!(waiting.await.unwrap());

        let never = readiness.clone();
        let shut = tokio::spawn(async move { never.wait_for(&[Store::Redis], &shutdown).await });
        stop.send_replace(true);
        assert!(!shut.await.unwrap());
    }
}
