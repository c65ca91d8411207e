//! The RabbitMQ topology, declared by every process at start (declaring is idempotent).
//!
//! ```text
//! {p}.commands (topic) ── inventory.# ──▶ {p}.inventory
//!                      └─ payments.#  ──▶ {p}.payments
//! {p}.events   (topic) ── saga.#      ──▶ {p}.orchestrator
//!                      └─ history.#   ──▶ {p}.history
//! each queue q: q.retry.1 (1 s), q.retry.2 (5 s), q.retry.3 (30 s) ── dead-letter back to q
//!               (at least once: a message leaves a retry queue only once q has it)
//!               q.dead: messages that could not be processed, with the reason in a header
//! ```
//!
//! Every queue is a durable quorum queue: replicated once RabbitMQ is a cluster, and it keeps a
//! message until a consumer acks it. The prefix `{p}` lets tests run side by side on one broker.

use lapin::{
    Channel, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};

use super::envelope::{
    Exchange, HistoryBatch, InventoryCommand, Message, PaymentCommand, SagaReply,
};

/// How long a message waits before its next try, after the first, second and later failures.
pub const RETRY_DELAYS_MS: [i64; 3] = [1_000, 5_000, 30_000];

/// A consuming queue, one per role that consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Inventory,
    Payments,
    Orchestrator,
    History,
}

impl Queue {
    pub const ALL: [Self; 4] = [
        Self::Inventory,
        Self::Payments,
        Self::Orchestrator,
        Self::History,
    ];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.as_str() == raw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inventory => "inventory",
            Self::Payments => "payments",
            Self::Orchestrator => "orchestrator",
            Self::History => "history",
        }
    }

    /// The exchange and pattern the queue binds: every message of the queue's type.
    fn binding(self) -> (Exchange, String) {
        let (exchange, prefix) = match self {
            Self::Inventory => InventoryCommand::ROUTE,
            Self::Payments => PaymentCommand::ROUTE,
            Self::Orchestrator => SagaReply::ROUTE,
            Self::History => HistoryBatch::ROUTE,
        };
        (exchange, format!("{prefix}.#"))
    }
}

#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub fn exchange(&self, exchange: Exchange) -> String {
        format!("{}.{}", self.prefix, exchange.as_str())
    }

    pub fn queue(&self, queue: Queue) -> String {
        format!("{}.{}", self.prefix, queue.as_str())
    }

    /// The delay queue for a message that failed `failures` times (1-based; the last delay
    /// repeats).
    pub fn retry_queue(&self, queue: Queue, failures: u32) -> String {
        let n = (failures as usize).clamp(1, RETRY_DELAYS_MS.len());
        format!("{}.retry.{n}", self.queue(queue))
    }

    pub fn dead_letter_queue(&self, queue: Queue) -> String {
        format!("{}.dead", self.queue(queue))
    }

    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [Exchange::Commands, Exchange::Events] {
            channel
                .exchange_declare(
                    &self.exchange(exchange),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        for queue in Queue::ALL {
            let name = self.queue(queue);
            declare_queue(channel, &name, quorum()).await?;
            let (exchange, pattern) = queue.binding();
            channel
                .queue_bind(
                    &name,
                    &self.exchange(exchange),
                    &pattern,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            for (i, delay) in RETRY_DELAYS_MS.iter().enumerate() {
                let mut args = quorum();
                args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(*delay));
                args.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString("".into()),
                );
                args.insert(
                    "x-dead-letter-routing-key".into(),
                    AMQPValue::LongString(name.as_str().into()),
                );
                // A quorum queue dead-letters at most once by default: a message whose delay
                // ran out while its queue was unreachable would be dropped. At least once keeps
                // it until the main queue confirms it (and requires reject-publish overflow).
                args.insert(
                    "x-dead-letter-strategy".into(),
                    AMQPValue::LongString("at-least-once".into()),
                );
                args.insert(
                    "x-overflow".into(),
                    AMQPValue::LongString("reject-publish".into()),
                );
                declare_queue(channel, &self.retry_queue(queue, i as u32 + 1), args).await?;
            }
            declare_queue(channel, &self.dead_letter_queue(queue), quorum()).await?;
        }
        Ok(())
    }

    /// Removes everything [`Self::declare`] made (tests clean up after themselves with this).
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for queue in Queue::ALL {
            let mut names = vec![self.queue(queue), self.dead_letter_queue(queue)];
            names.extend((1..=RETRY_DELAYS_MS.len() as u32).map(|n| self.retry_queue(queue, n)));
            for name in names {
                channel
                    .queue_delete(&name, QueueDeleteOptions::default())
                    .await?;
            }
        }
        for exchange in [Exchange::Commands, Exchange::Events] {
            channel
                .exchange_delete(&self.exchange(exchange), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    args: FieldTable,
) -> Result<(), lapin::Error> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel.queue_declare(name, options, args).await.map(drop)
}
