//! The load models: a closed one (N users, each starting its next iteration when the last one
//! ends) and an open one (iterations start on a fixed schedule, whether or not the system keeps
//! up). In the open model latency is measured from the scheduled start, so a slow answer that
//! delays the requests behind it is counted against them too (no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::scenario;

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

/// What driving the load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Driven {
    /// Iterations finished (closed model) or started (open model).
    pub iterations: u64,
    /// Iterations still running when the drain ran out, and dropped.
    pub abandoned: usize,
}

/// Runs the load until `until`, then lets the iterations in flight finish, until `drain` after
/// `until` at the latest.
pub async fn drive<L: Iteration>(
    load: Arc<L>,
    model: Model,
    until: Instant,
    drain: Duration,
    seed: u64,
) -> Driven {
    let mut tasks = JoinSet::new();
    let mut started = 0u64;
    // Counted as each iteration ends, so a user still running when the drain runs out loses
    // only the iteration in flight from the count.
    let finished = Arc::new(AtomicU64::new(0));
    match model {
        Model::Closed { users } => {
            for user in 0..users {
                let (load, finished) = (load.clone(), finished.clone());
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(user as u64));
                tasks.spawn(async move {
                    while Instant::now() < until {
                        load.run(&mut rng, Instant::now()).await;
                        finished.fetch_add(1, Ordering::Relaxed);
                    }
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
                    load.run(&mut rng, intended).await;
                });
                started += 1;
                // Reap finished iterations as we go so the set does not grow with the run.
                while let Some(done) = tasks.try_join_next() {
                    let _ = done;
                }
            }
        }
    }
    // The drain is measured from `until`, not from now: in the closed model this point comes
    // right after the users start, and a drain timed from here cut every run at its length.
    let _ = tokio::time::timeout_at((until + drain).into(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Driven {
        iterations: match model {
            Model::Closed { .. } => finished.load(Ordering::Relaxed),
            Model::Open { .. } => started,
        },
        abandoned: tasks.len(),
    }
}

/// One virtual user's turn; what the load models repeat.
pub trait Iteration: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        rng: &'a mut StdRng,
        intended: Instant,
    ) -> impl Future<Output = ()> + Send + 'a;
}

impl Iteration for scenario::Load {
    fn run<'a>(
        &'a self,
        rng: &'a mut StdRng,
        intended: Instant,
    ) -> impl Future<Output = ()> + Send + 'a {
        scenario::iterate(&self.api, &self.world, &self.stats, rng, intended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An iteration that takes 10 ms and counts when the last one started.
    #[derive(Default)]
    struct Nap {
        last_start: std::sync::Mutex<Option<Instant>>,
        runs: AtomicU64,
    }

    impl Iteration for Nap {
        async fn run(&self, _: &mut StdRng, _: Instant) {
            *self.last_start.lock().unwrap() = Some(Instant::now());
            self.runs.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_closed_model_runs_until_the_end_however_short_the_drain() {
        let nap = Arc::new(Nap::default());
        let start = Instant::now();
        let until = start + Duration::from_millis(400);
        let model = Model::Closed { users: 2 };
        let driven = drive(nap.clone(), model, until, Duration::from_millis(100), 1).await;
        assert_eq!(driven.abandoned, 0);
        assert_eq!(driven.iterations, nap.runs.load(Ordering::Relaxed));
        let last = nap.last_start.lock().unwrap().unwrap();
        assert!(
            last + Duration::from_millis(50) >= until,
            "the load stopped early"
        );
    }
}
