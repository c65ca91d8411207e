//! The inventory role: reserves and releases stock in Redis (`reserve.lua`, `release.lua`) and
//! settles stock adjustments a crash left half-applied.
//!
//! The scripts make each effect idempotent per order, so this role keeps no inbox: a
//! redelivered command gets the first answer again, under the same reply id. What a reserve
//! decided is also written to Postgres with its reply, so `orderly reconcile` knows the answer a
//! saga has not heard yet.

use crate::{
    domain::{order::OrderReason, reservation::Record, saga::Reply},
    messaging::{
        self,
        consumer::{HandleError, Handler},
        envelope::{Body, Envelope},
    },
    services::stock::StockAdjuster,
    store::{
        postgres::{outbox, stock_ledger},
        stock::ReserveOutcome,
    },
};

use super::RoleContext;

#[derive(Clone)]
pub struct Inventory {
    context: RoleContext,
}

impl Inventory {
    pub fn new(context: RoleContext) -> Self {
        Self { context }
    }

    /// Settles pending stock adjustments every few seconds until shutdown.
    pub async fn run_recovery(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        StockAdjuster::new(self.context.stores.clone())
            .run_recovery(self.context.settings.stock_recovery_interval, shutdown)
            .await;
    }
}

impl Handler for Inventory {
    async fn handle(&self, command: Envelope) -> Result<(), HandleError> {
        let stock = &self.context.stores.stock;
        // The record a reserve leaves that a rebuild of Redis could not otherwise know.
        let mut decided = None;
        let reply = match &command.body {
            Body::ReserveStock { items } => {
                let lines: Vec<_> = items.iter().map(|l| (l.product_id, l.quantity)).collect();
                match stock.reserve(command.order_id, &lines).await? {
                    ReserveOutcome::Reserved => {
                        decided = Some(Record::Reserved);
                        Reply::StockReserved
                    }
                    ReserveOutcome::Short { line, available } => {
                        tracing::info!(line, available, "stock refused");
                        decided = Some(Record::Rejected);
                        Reply::StockRejected {
                            reason: OrderReason::InsufficientStock,
                        }
                    }
                    // Only a saga that already gave up on this step releases before it
                    // reserves, so this answer is stale by the time it arrives (and the
                    // saga's compensating step tells a rebuild the record is released).
                    ReserveOutcome::Tombstoned => Reply::StockRejected {
                        reason: OrderReason::InsufficientStock,
                    },
                }
            }
            Body::ReleaseStock { items } => {
                let products: Vec<_> = items.iter().map(|l| l.product_id).collect();
                stock.release(command.order_id, &products).await?;
                Reply::StockReleased
            }
            other => {
                return Err(HandleError::Permanent(format!(
                    "inventory does not handle {}",
                    other.kind()
                )));
            }
        };
        let traceparent = messaging::child_traceparent(command.traceparent.as_deref());
        let reply = command.reply(reply).with_traceparent(Some(traceparent));
        let Some(outcome) = decided else {
            return self.context.reply(reply).await;
        };
        let mut tx = self.context.stores.pg.begin().await?;
        stock_ledger::record_reservation(&mut tx, command.order_id, outcome).await?;
        outbox::enqueue(&mut tx, &[reply]).await?;
        tx.commit().await?;
        Ok(())
    }
}
