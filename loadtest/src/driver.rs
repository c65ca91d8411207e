//! The load models: a closed one (N users, each starting its next iteration when the last one
//! ends) and an open one (iterations start on a fixed schedule, whether or not the system keeps
//! up). In the open model latency is measured from the scheduled start, so a slow answer that
//! delays the requests behind it is counted against them too (no coordinated omission).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::scenario::{self, SharedLoad};

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum Model {
    Closed {
        users: usize,
    },
    Open {
        /// Iterations started per second.
        rate: f64,
        /// Iterations allowed in flight at once; past it, arrivals queue in the client (and
        /// their wait counts in their latency).
        max_in_flight: usize,
    },
}

impl Model {
    pub fn describe(self) -> String {
        match self {
            Self::Closed { users } => format!("closed, {users} concurrent users"),
            Self::Open {
                rate,
                max_in_flight,
            } => format!("open, {rate} arrivals/s (at most {max_in_flight} in flight)"),
        }
    }

    /// How many HTTP connections the client may need.
    pub fn connections(self) -> usize {
        match self {
            Self::Closed { users } => users,
            Self::Open { max_in_flight, .. } => max_in_flight,
        }
    }
}

/// Runs the load until `until`, then lets the iterations in flight finish (at most `drain`).
/// Returns how many iterations were started.
pub async fn drive(
    load: SharedLoad,
    model: Model,
    until: Instant,
    drain: Duration,
    seed: u64,
) -> u64 {
    let mut tasks = JoinSet::new();
    let mut started = 0u64;
    match model {
        Model::Closed { users } => {
            for user in 0..users {
                let load = load.clone();
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(user as u64));
                tasks.spawn(async move {
                    let mut iterations = 0u64;
                    while Instant::now() < until {
                        iterate(&load, &mut rng, Instant::now()).await;
                        iterations += 1;
                    }
                    iterations
                });
            }
        }
        Model::Open {
            rate,
            max_in_flight,
        } => {
            let permits = Arc::new(Semaphore::new(max_in_flight));
            let start = Instant::now();
            let period = Duration::from_secs_f64(1.0 / rate);
            loop {
                let intended = start + period.mul_f64(started as f64);
                if intended >= until {
                    break;
                }
                tokio::time::sleep_until(intended.into()).await;
                let load = load.clone();
                let permits = permits.clone();
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(started));
                tasks.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    iterate(&load, &mut rng, intended).await;
                    1
                });
                started += 1;
                // Reap finished iterations as we go so the set does not grow with the run.
                while let Some(done) = tasks.try_join_next() {
                    let _ = done;
                }
            }
        }
    }
    let drained = tokio::time::timeout(drain, async {
        let mut iterations = 0;
        while let Some(done) = tasks.join_next().await {
            iterations += done.unwrap_or(0);
        }
        iterations
    })
    .await;
    match (model, drained) {
        (Model::Closed { .. }, Ok(iterations)) => iterations,
        (Model::Closed { .. }, Err(_)) => 0,
        (Model::Open { .. }, _) => started,
    }
}

async fn iterate(load: &scenario::Load, rng: &mut StdRng, intended: Instant) {
    scenario::iterate(&load.api, &load.world, &load.stats, rng, intended).await;
}
