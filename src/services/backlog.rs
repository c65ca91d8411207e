//! Admission control for checkout.
//!
//! When more orders are waiting to settle than the workers clear in a few seconds, a new
//! checkout is refused (`503`, `Retry-After`) instead of joining the queue: an order accepted
//! now would wait minutes, and an unbounded queue only slows every order behind it. A refused
//! checkout changes nothing, so the buyer may retry it with the same `Idempotency-Key`.
//!
//! The count comes from Postgres five times a second, so it holds across any number of API
//! processes. The bound is soft: between two reads, checkouts may pass it by what arrives in
//! 200 ms. Counting accepted orders locally in between would be tighter, but it counts orders
//! that have already settled, and refused checkouts that it should have taken.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::store::postgres::orders;

/// How often the pending count is read again.
const REFRESH: Duration = Duration::from_millis(200);

pub struct Backlog {
    /// Pending orders at which checkouts are refused; 0 turns admission control off.
    limit: i64,
    /// The last count read, also served as the `orderly_orders_pending` metric.
    pending: Gauge,
}

impl Backlog {
    pub fn new(limit: i64, pending: Gauge) -> Self {
        Self { limit, pending }
    }

    /// Whether a new order may be accepted now.
    pub fn admits(&self) -> bool {
        self.limit <= 0 || self.pending.get() < self.limit
    }

    /// Reads the pending count every [`REFRESH`] until shutdown. While Postgres does not answer
    /// the last count stands: checkouts would fail on Postgres anyway.
    pub async fn run_watch(&self, pg: PgPool, mut shutdown: watch::Receiver<bool>) {
        if self.limit <= 0 {
            return;
        }
        loop {
            match orders::pending_count(&pg).await {
                Ok(n) => {
                    self.pending.set(n);
                }
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
        let pending = Gauge::default();
        let backlog = Backlog::new(2, pending.clone());
        pending.set(1);
        assert!(backlog.admits());
        pending.set(2);
        assert!(!backlog.admits());
        let off = Backlog::new(0, pending.clone());
        pending.set(1_000);
        assert!(off.admits());
    }
}
