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
        envelope::{Body, Envelope},
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
    async fn handle(&self, command: Envelope) -> Result<(), HandleError> {
        let mut outcomes = self.run(&[command]).await;
        outcomes.pop().unwrap_or(Ok(()))
    }

    async fn handle_batch(&self, batch: Vec<Envelope>) -> Vec<Result<(), HandleError>> {
        let outcomes = self.run(&batch).await;
        if batch.len() == 1
            || outcomes
                .iter()
                .all(|o| !matches!(o, Err(HandleError::Transient(_))))
        {
            return outcomes;
        }
        // A store failed the batch: each message on its own, so only what fails is retried.
        futures::future::join_all(batch.into_iter().map(|m| self.handle(m))).await
    }
}

impl Inventory {
    /// Runs every command's script in one Redis round trip, then records the reserves' answers
    /// and queues every reply in one Postgres transaction.
    async fn run(&self, batch: &[Envelope]) -> Vec<Result<(), HandleError>> {
        let lines: Vec<Vec<(Uuid, i64)>> = batch
            .iter()
            .map(|m| match &m.body {
                Body::ReserveStock { items } | Body::ReleaseStock { items } => {
                    items.iter().map(|l| (l.product_id, l.quantity)).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        let products: Vec<Vec<Uuid>> = lines
            .iter()
            .map(|l| l.iter().map(|(p, _)| *p).collect())
            .collect();
        let mut ops = Vec::with_capacity(batch.len());
        let mut outcomes: Vec<Result<(), HandleError>> = Vec::with_capacity(batch.len());
        for (i, command) in batch.iter().enumerate() {
            match &command.body {
                Body::ReserveStock { .. } => ops.push(StockOp::Reserve {
                    order_id: command.order_id,
                    lines: &lines[i],
                }),
                Body::ReleaseStock { .. } => ops.push(StockOp::Release {
                    order_id: command.order_id,
                    products: &products[i],
                }),
                other => {
                    outcomes.push(Err(HandleError::Permanent(format!(
                        "inventory does not handle {}",
                        other.kind()
                    ))));
                    continue;
                }
            }
            outcomes.push(Ok(()));
        }
        let answers = match self.context.stores.stock.run(&ops).await {
            Ok(answers) => answers,
            Err(e) => return fail(outcomes, &e),
        };
        let mut replies = Vec::with_capacity(answers.len());
        let mut decided = Vec::new();
        let commands = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| o.is_ok())
            .map(|(c, _)| c);
        for (command, answer) in commands.zip(answers) {
            let (reply, record) = reply(answer);
            if let Some(record) = record {
                decided.push((command.order_id, record));
            }
            let traceparent = messaging::child_traceparent(command.traceparent.as_deref());
            replies.push(command.reply(reply).with_traceparent(Some(traceparent)));
        }
        let recorded = async {
            let mut tx = self.context.stores.pg.begin().await?;
            stock_ledger::record_reservations(&mut tx, &decided).await?;
            outbox::enqueue(&mut tx, &replies).await?;
            tx.commit().await
        };
        match recorded.await {
            Ok(()) => outcomes,
            Err(e) => fail(outcomes, &e.into()),
        }
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

/// Every message that was to be done fails with `error`; the ones refused already stay so.
fn fail(
    outcomes: Vec<Result<(), HandleError>>,
    error: &StoreError,
) -> Vec<Result<(), HandleError>> {
    outcomes
        .into_iter()
        .map(|o| o.and_then(|()| Err(HandleError::Transient(error.to_string()))))
        .collect()
}
