//! The payments role: charges a wallet once per order and refunds it once, never below zero.
//!
//! A batch of commands is one transaction: claim every message id in the inbox at once, lock
//! the payments and wallets the batch touches, decide every command in memory in delivery order
//! (the rules are [`crate::domain::payment`]), write the new payments, statuses and balances
//! with one statement each, queue every reply, commit. A single message is a batch of one. A
//! batch whose decision no longer holds when written (another worker created a payment it
//! could not lock) or that fails is done again message by message, so only what keeps failing
//! is retried.

use crate::{
    domain::payment::{Instruction, Ledger},
    messaging::{
        self,
        consumer::{HandleError, Handler, Unwritten},
        envelope::{Envelope, PaymentCommand},
    },
    store::postgres::{inbox, outbox, payments},
};

use super::RoleContext;

const CONSUMER: &str = "payments";
/// Times one message is decided again when another worker created its payment meanwhile.
const MAX_RACES: usize = 5;

pub struct Payments {
    context: RoleContext,
}

impl Payments {
    pub fn new(context: RoleContext) -> Self {
        Self { context }
    }

    /// Decides and writes `batch` in one transaction. `Err(Raced)` when the decision no longer
    /// held at writing time (nothing was written); a store error likewise writes nothing.
    async fn settle(
        &self,
        batch: &[Envelope<PaymentCommand>],
    ) -> Result<Vec<Result<(), HandleError>>, Unwritten> {
        let mut tx = self.context.stores.pg.begin().await?;
        let ids: Vec<_> = batch.iter().map(|m| m.message_id).collect();
        let claimed = inbox::claim_many(&mut tx, CONSUMER, &ids).await?;
        let mut orders: Vec<_> = batch.iter().map(|m| m.order_id).collect();
        orders.sort();
        orders.dedup();
        let mut customers: Vec<_> = batch.iter().map(|m| m.body.customer_id()).collect();
        customers.sort();
        customers.dedup();
        let existing = payments::lock(&mut tx, &orders).await?;
        let wallets = payments::lock_wallets(&mut tx, &customers).await?;

        let mut ledger = Ledger::new(existing, wallets);
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut replies = Vec::new();
        let mut failed = Vec::new();
        for message in batch {
            // A copy of a message an earlier delivery did changes nothing.
            if !claimed.contains(&message.message_id) {
                outcomes.push(Ok(()));
                continue;
            }
            match ledger.apply(instruction(message)) {
                Ok(reply) => {
                    let traceparent = messaging::child_traceparent(message.traceparent.as_deref());
                    replies.push(
                        message
                            .reply(reply)
                            .with_traceparent(Some(traceparent))
                            .outbound(),
                    );
                    outcomes.push(Ok(()));
                }
                Err(e) => {
                    failed.push(message.message_id);
                    outcomes.push(Err(HandleError::Permanent(e.to_string())));
                }
            }
        }
        let created = ledger.created();
        if payments::insert(&mut tx, &created).await? < created.len() as u64 {
            return Err(Unwritten::Raced);
        }
        payments::set_status(&mut tx, &ledger.changed()).await?;
        payments::set_balances(&mut tx, &ledger.balances()).await?;
        outbox::enqueue(&mut tx, &replies).await?;
        inbox::unclaim(&mut tx, CONSUMER, &failed).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// One message in a transaction of its own, decided again if it loses a race.
    async fn settle_one(&self, message: Envelope<PaymentCommand>) -> Result<(), HandleError> {
        let batch = [message];
        for _ in 0..MAX_RACES {
            match self.settle(&batch).await {
                Ok(mut outcomes) => return outcomes.pop().unwrap_or(Ok(())),
                Err(Unwritten::Raced) => continue,
                Err(Unwritten::Failed(e)) => return Err(e),
            }
        }
        Err(HandleError::Transient(format!(
            "lost {MAX_RACES} races for the payment of order {}",
            batch[0].order_id
        )))
    }
}

impl Handler for Payments {
    type Message = PaymentCommand;

    async fn handle(&self, command: Envelope<PaymentCommand>) -> Result<(), HandleError> {
        self.settle_one(command).await
    }

    async fn handle_batch(
        &self,
        batch: Vec<Envelope<PaymentCommand>>,
    ) -> Vec<Result<(), HandleError>> {
        match self.settle(&batch).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                if let Unwritten::Failed(e) = &e {
                    tracing::warn!(error = %e, size = batch.len(), "a payments batch failed; doing its messages one by one");
                }
                let mut outcomes = Vec::with_capacity(batch.len());
                for message in batch {
                    outcomes.push(self.settle_one(message).await);
                }
                outcomes
            }
        }
    }
}

fn instruction(message: &Envelope<PaymentCommand>) -> Instruction {
    match message.body {
        PaymentCommand::ChargePayment {
            customer_id,
            amount_minor,
        } => Instruction::Charge {
            order_id: message.order_id,
            customer_id,
            amount_minor,
        },
        PaymentCommand::RefundPayment { customer_id } => Instruction::Refund {
            order_id: message.order_id,
            customer_id,
        },
    }
}
