//! Admission control for checkout.
//!
//! When more orders are waiting to settle than the workers clear in a few seconds, a new
//! checkout is refused (`503`, `Retry-After`) instead of joining the queue: an order accepted
//! now would wait minutes, and an unbounded queue only slows every order behind it. A refused
//! checkout changes nothing, so the buyer may retry it with the same `Idempotency-Key`.
//!
//! The count comes from Postgres a few times a second, so it holds across any number of API
//! processes; between reads each process adds the orders it accepted itself.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use sqlx::PgPool;
use tokio::sync::watch;

use crate::store::postgres::orders;

/// How often the pending count is read again.
const REFRESH: Duration = Duration::from_millis(200);

pub struct Backlog {
    /// Pending orders at which checkouts are refused; 0 turns admission control off.
    limit: i64,
    pending: AtomicI64,
}

impl Backlog {
    pub fn new(limit: i64) -> Self {
        Self {
            limit,
            pending: AtomicI64::new(0),
        }
    }

    /// Whether a new order may be accepted now.
    pub fn admits(&self) -> bool {
        self.limit <= 0 || self.pending.load(Ordering::Relaxed) < self.limit
    }

    /// Counts an order this process just accepted, until the next read includes it.
    pub fn accepted(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the pending count every [`REFRESH`] until shutdown. While Postgres does not answer
    /// the last count stands: checkouts would fail on Postgres anyway.
    pub async fn run_watch(&self, pg: PgPool, mut shutdown: watch::Receiver<bool>) {
        if self.limit <= 0 {
            return;
        }
        loop {
            match orders::pending_count(&pg).await {
                Ok(n) => self.pending.store(n, Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "cannot count pending orders"),
            }
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_at_the_limit_and_never_when_off() {
        let backlog = Backlog::new(2);
        assert!(backlog.admits());
        backlog.accepted();
        backlog.accepted();
        assert!(!backlog.admits());
        let off = Backlog::new(0);
        for _ in 0..10 {
            off.accepted();
        }
        assert!(off.admits());
    }
}
