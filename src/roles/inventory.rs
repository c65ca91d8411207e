//! The inventory role: reserves and releases stock in Redis (`reserve.lua`, `release.lua`) and
//! settles stock adjustments a crash left half-applied.
//!
//! The scripts make each effect idempotent per order, so this role keeps no inbox: a
//! redelivered command gets the first answer again, under the same reply id. What a reserve
//! decided is also written to Postgres with its reply, so `orderly reconcile` knows the answer a
//! saga has not heard yet. A batch of commands is one Redis round trip (every script in one
//! pipeline) and one Postgres transaction (every answer and reply).

use uuid::Uuid;

use crate::{
    domain::{order::OrderReason, reservation::Record, saga::Reply},
    messaging::{
        self,
        consumer::{HandleError, Handler},
        envelope::{Envelope, InventoryCommand},
    },
    services::stock::StockAdjuster,
    store::{
        StoreError,
        postgres::{outbox, stock_ledger},
        stock::{ReserveOutcome, StockAnswer, StockOp},
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
    type Message = InventoryCommand;

    async fn handle(&self, command: Envelope<InventoryCommand>) -> Result<(), HandleError> {
        Ok(self.run(&[command]).await?)
    }

    async fn handle_batch(
        &self,
        batch: Vec<Envelope<InventoryCommand>>,
    ) -> Vec<Result<(), HandleError>> {
        match self.run(&batch).await {
            Ok(()) => batch.iter().map(|_| Ok(())).collect(),
            Err(e) if batch.len() == 1 => vec![Err(e.into())],
            // A store failed the batch: each message on its own, so only what fails is retried.
            Err(_) => futures::future::join_all(batch.into_iter().map(|m| self.handle(m))).await,
        }
    }
}

impl Inventory {
    /// Runs every command's script in one Redis round trip, then records the reserves' answers
    /// and queues every reply in one Postgres transaction.
    async fn run(&self, batch: &[Envelope<InventoryCommand>]) -> Result<(), StoreError> {
        let products: Vec<Vec<Uuid>> = batch
            .iter()
            .map(|m| match &m.body {
                InventoryCommand::ReleaseStock { items } => {
                    items.iter().map(|l| l.product_id).collect()
                }
                InventoryCommand::ReserveStock { .. } => Vec::new(),
            })
            .collect();
        let ops: Vec<StockOp<'_>> = batch
            .iter()
            .zip(&products)
            .map(|(command, products)| match &command.body {
                InventoryCommand::ReserveStock { items } => StockOp::Reserve {
                    order_id: command.order_id,
                    lines: items,
                },
                InventoryCommand::ReleaseStock { .. } => StockOp::Release {
                    order_id: command.order_id,
                    products,
                },
            })
            .collect();
        let answers = self.context.stores.stock.run(&ops).await?;
        let mut replies = Vec::with_capacity(answers.len());
        let mut decided = Vec::new();
        for (command, answer) in batch.iter().zip(answers) {
            let (reply, record) = reply(answer);
            if let Some(record) = record {
                decided.push((command.order_id, record));
            }
            let traceparent = messaging::child_traceparent(command.traceparent.as_deref());
            replies.push(
                command
                    .reply(reply)
                    .with_traceparent(Some(traceparent))
                    .outbound(),
            );
        }
        let mut tx = self.context.stores.pg.begin().await?;
        stock_ledger::record_reservations(&mut tx, &decided).await?;
        outbox::enqueue(&mut tx, &replies).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The reply to a script's answer, and the record a rebuild of Redis must know of, if any.
fn reply(answer: StockAnswer) -> (Reply, Option<Record>) {
    let refused = Reply::StockRejected {
        reason: OrderReason::InsufficientStock,
    };
    match answer {
        StockAnswer::Reserve(ReserveOutcome::Reserved) => {
            (Reply::StockReserved, Some(Record::Reserved))
        }
        StockAnswer::Reserve(ReserveOutcome::Short { line, available }) => {
            tracing::info!(line, available, "stock refused");
            (refused, Some(Record::Rejected))
        }
        // Only a saga that already gave up on this step releases before it reserves, so this
        // answer is stale by the time it arrives (and the saga's compensating step tells a
        // rebuild the record is released).
        StockAnswer::Reserve(ReserveOutcome::Tombstoned) => (refused, None),
        StockAnswer::Release(_) => (Reply::StockReleased, None),
    }
}
