//! The inventory role: reserves and releases stock in Redis (`reserve.lua`, `release.lua`) and
//! settles stock adjustments a crash left half-applied.
//!
//! The scripts make each effect idempotent per order, so this role keeps no inbox: a
//! redelivered command gets the first answer again, under the same reply id.

use crate::{
    domain::{order::OrderReason, saga::Reply},
    messaging::{
        self,
        consumer::{HandleError, Handler},
        envelope::{Body, Envelope},
    },
    services::stock::StockAdjuster,
    store::stock::ReserveOutcome,
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
        let reply = match &command.body {
            Body::ReserveStock { items } => {
                let lines: Vec<_> = items.iter().map(|l| (l.product_id, l.quantity)).collect();
                match stock.reserve(command.order_id, &lines).await? {
                    ReserveOutcome::Reserved => Reply::StockReserved,
                    ReserveOutcome::Short { line, available } => {
                        tracing::info!(line, available, "stock refused");
                        Reply::StockRejected {
                            reason: OrderReason::InsufficientStock,
                        }
                    }
                    // Only a saga that already gave up on this step releases before it
                    // reserves, so this answer is stale by the time it arrives.
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
        self.context
            .reply(command.reply(reply).with_traceparent(Some(traceparent)))
            .await
    }
}
