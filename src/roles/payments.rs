//! The payments role: charges a wallet once per order and refunds it once, never below zero.
//!
//! Each message is handled in one transaction with its inbox row, its effect and its reply.
//! The `payments` row claims the order first, so a second charge (a retried attempt with a new
//! message id) finds it and answers as the first did; a refund that overtakes its charge leaves
//! a `voided` row and the charge is then refused. The wallet moves under its version: a writer
//! that loses re-reads the balance and decides again.

use uuid::Uuid;

use crate::{
    domain::{order::OrderReason, saga::Reply},
    messaging::{
        self,
        consumer::{HandleError, Handler},
        envelope::{Body, Envelope},
    },
    store::postgres::{
        inbox, outbox,
        payments::{self, PaymentStatus},
    },
};

use super::RoleContext;

const CONSUMER: &str = "payments";

pub struct Payments {
    context: RoleContext,
}

impl Payments {
    pub fn new(context: RoleContext) -> Self {
        Self { context }
    }
}

impl Handler for Payments {
    async fn handle(&self, command: Envelope) -> Result<(), HandleError> {
        let mut tx = self.context.stores.pg.begin().await?;
        if !inbox::claim(&mut tx, CONSUMER, command.message_id).await? {
            return Ok(());
        }
        let reply = match command.body {
            Body::ChargePayment {
                customer_id,
                amount_minor,
            } => charge(&mut tx, command.order_id, customer_id, amount_minor).await?,
            Body::RefundPayment { customer_id } => {
                refund(&mut tx, command.order_id, customer_id).await?
            }
            ref other => {
                return Err(HandleError::Permanent(format!(
                    "payments does not handle {}",
                    other.kind()
                )));
            }
        };
        let traceparent = messaging::child_traceparent(command.traceparent.as_deref());
        outbox::enqueue(
            &mut tx,
            &[command.reply(reply).with_traceparent(Some(traceparent))],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn charge(
    tx: &mut sqlx::PgConnection,
    order_id: Uuid,
    customer_id: Uuid,
    amount: i64,
) -> Result<Reply, HandleError> {
    let declined = Reply::PaymentDeclined {
        reason: OrderReason::InsufficientFunds,
    };
    if !payments::claim_charge(tx, order_id, customer_id, amount).await? {
        let (status, _) = payments::lock(tx, order_id)
            .await?
            .ok_or_else(|| HandleError::Transient("payment row vanished".into()))?;
        return Ok(match status {
            PaymentStatus::Charged => Reply::PaymentCharged,
            _ => declined,
        });
    }
    loop {
        let (balance, version) = payments::wallet(tx, customer_id)
            .await?
            .ok_or_else(|| HandleError::Permanent(format!("no customer {customer_id}")))?;
        if balance < amount {
            payments::mark(tx, order_id, PaymentStatus::Declined).await?;
            return Ok(declined);
        }
        if payments::move_wallet(tx, customer_id, -amount, version).await? {
            return Ok(Reply::PaymentCharged);
        }
    }
}

async fn refund(
    tx: &mut sqlx::PgConnection,
    order_id: Uuid,
    customer_id: Uuid,
) -> Result<Reply, HandleError> {
    if payments::claim_void(tx, order_id, customer_id).await? {
        return Ok(Reply::PaymentRefunded);
    }
    let Some((PaymentStatus::Charged, amount)) = payments::lock(tx, order_id).await? else {
        // Declined, voided or refunded already: nothing to give back.
        return Ok(Reply::PaymentRefunded);
    };
    loop {
        let (_, version) = payments::wallet(tx, customer_id)
            .await?
            .ok_or_else(|| HandleError::Permanent(format!("no customer {customer_id}")))?;
        if payments::move_wallet(tx, customer_id, amount, version).await? {
            payments::mark(tx, order_id, PaymentStatus::Refunded).await?;
            return Ok(Reply::PaymentRefunded);
        }
    }
}
