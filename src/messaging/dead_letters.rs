//! The dead-letter queues, for operators: list what waits there and why, put a message back on
//! its queue as it was (replay), or drop it (purge). Used by `orderly dlq` and by the admin's
//! `/dead-letters` endpoints.
//!
//! RabbitMQ has no way to read a queue without taking from it, so every operation takes the
//! dead letters one by one without acking them, decides each, and hands back the ones it keeps
//! (a `nack` with requeue, or the channel closing if anything fails on the way): nothing is lost
//! to an operation that breaks off. A replay publishes the message to its queue with publisher
//! confirms before its dead letter is acked. Replaying twice changes nothing twice: the roles
//! dedupe by message id (inbox), by order (the stock scripts), or by `(order, seq)` (history).

use lapin::{
    BasicProperties, Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions},
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    consumer::{FAILURES_HEADER, FIRST_FAILURE_HEADER, LAST_FAILURE_HEADER, REASON_HEADER},
    publisher::{PublishError, Publisher},
    topology::{Queue, Topology},
};
use crate::store::StoreError;

/// Dead letters looked at per operation, at most: a queue longer than that is a matter for
/// `--all`, not for reading one by one.
pub const MAX_LISTED: usize = 1_000;

/// A message in a dead-letter queue, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The message's id, or `sha256-…` of its body for a message that came without one.
    pub id: String,
    /// The queue it failed on, and goes back to on replay.
    pub queue: String,
    /// Why it was dead-lettered.
    pub reason: Option<String>,
    /// Transient failures before it was given up on (0 for one dead-lettered at once).
    pub failures: u32,
    /// When it first and last failed (RFC 3339), where known.
    pub first_failed_at: Option<String>,
    pub last_failed_at: Option<String>,
    /// The message type (`charge_payment`, …), where it had one.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The body: its JSON, or its text when it is not JSON.
    #[schema(value_type = Object)]
    pub message: serde_json::Value,
}

impl DeadLetter {
    fn of(queue: Queue, delivery: &Delivery) -> Self {
        let header = |name: &str| {
            delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(name).cloned())
        };
        let text = |name: &str| match header(name) {
            Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
            _ => None,
        };
        let failures = match header(FAILURES_HEADER) {
            Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(u32::MAX),
            Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(u32::MAX),
            _ => 0,
        };
        let id = match delivery.properties.message_id() {
            Some(id) => id.to_string(),
            None => format!("sha256-{:x}", Sha256::digest(&delivery.data))[..23].to_owned(),
        };
        Self {
            id,
            queue: queue.as_str().to_owned(),
            reason: text(REASON_HEADER),
            failures,
            first_failed_at: text(FIRST_FAILURE_HEADER),
            last_failed_at: text(LAST_FAILURE_HEADER),
            kind: delivery.properties.kind().as_ref().map(|k| k.to_string()),
            message: serde_json::from_slice(&delivery.data).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&delivery.data).into())
            }),
        }
    }
}

/// What an operation does with one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Keep,
    Replay,
    Purge,
}

/// The dead-letter queues of one topology.
#[derive(Clone)]
pub struct DeadLetters {
    amqp: super::Amqp,
    topology: Topology,
}

impl DeadLetters {
    pub fn new(amqp: super::Amqp, topology: Topology) -> Self {
        Self { amqp, topology }
    }

    /// The dead letters of `queue` (or of every queue), oldest first per queue.
    pub async fn list(&self, queue: Option<Queue>) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self
            .visit(queue, |_| Action::Keep)
            .await?
            .into_iter()
            .map(|(letter, _)| letter)
            .collect())
    }

    pub async fn find(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        Ok(self.list(None).await?.into_iter().find(|l| l.id == id))
    }

    /// Replays or purges the dead letter `id` (its first copy, if it has several); `None` when
    /// there is none.
    pub async fn settle_one(
        &self,
        id: &str,
        action: Action,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let mut done = false;
        let visited = self
            .visit(None, |letter| {
                if !done && letter.id == id {
                    done = true;
                    action
                } else {
                    Action::Keep
                }
            })
            .await?;
        Ok(visited
            .into_iter()
            .find(|(_, a)| *a != Action::Keep)
            .map(|(letter, _)| letter))
    }

    /// Replays or purges every dead letter of `queue` (or of every queue); returns them.
    pub async fn settle_all(
        &self,
        queue: Option<Queue>,
        action: Action,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self
            .visit(queue, |_| action)
            .await?
            .into_iter()
            .map(|(letter, _)| letter)
            .collect())
    }

    /// Takes the dead letters one by one, decides each, and does what was decided; the ones
    /// kept go back. Returns each letter looked at with what was done to it.
    async fn visit(
        &self,
        queue: Option<Queue>,
        mut decide: impl FnMut(&DeadLetter) -> Action,
    ) -> Result<Vec<(DeadLetter, Action)>, StoreError> {
        let connection = self.amqp.connect("orderly-dead-letters").await?;
        let outcome = async {
            let channel = connection.create_channel().await?;
            // The queues may not exist yet when no worker ever ran.
            self.topology.declare(&channel).await?;
            let publisher = Publisher::open(&connection, self.topology.clone()).await?;
            let queues = match queue {
                Some(q) => vec![q],
                None => Queue::ALL.to_vec(),
            };
            let mut visited = Vec::new();
            for queue in queues {
                self.visit_queue(&channel, &publisher, queue, &mut decide, &mut visited)
                    .await?;
            }
            publisher.close().await;
            let _ = channel.close(200, "done").await;
            Ok::<_, StoreError>(visited)
        }
        .await;
        let _ = connection.close(200, "done").await;
        outcome
    }

    async fn visit_queue(
        &self,
        channel: &Channel,
        publisher: &Publisher,
        queue: Queue,
        decide: &mut impl FnMut(&DeadLetter) -> Action,
        visited: &mut Vec<(DeadLetter, Action)>,
    ) -> Result<(), StoreError> {
        let dead = self.topology.dead_letter_queue(queue);
        let mut kept = Vec::new();
        while visited.len() < MAX_LISTED {
            let Some(got) = channel
                .basic_get(&dead, BasicGetOptions { no_ack: false })
                .await?
            else {
                break;
            };
            let delivery = got.delivery;
            let letter = DeadLetter::of(queue, &delivery);
            let action = decide(&letter);
            match action {
                Action::Keep => kept.push(delivery),
                Action::Replay => {
                    publisher
                        .to_queue(
                            &self.topology.queue(queue),
                            &delivery.data,
                            as_first_sent(&delivery.properties),
                        )
                        .await
                        .map_err(|e| match e {
                            PublishError::Broker(e) => StoreError::from(e),
                            refused => StoreError::Unavailable {
                                store: "rabbitmq",
                                source: Box::new(refused),
                            },
                        })?;
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                }
                Action::Purge => delivery.acker.ack(BasicAckOptions::default()).await?,
            }
            visited.push((letter, action));
        }
        for delivery in kept {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await?;
        }
        Ok(())
    }
}

/// The message's properties as it was first sent: without what failing added to it (orderly's
/// `x-orderly-*` headers, RabbitMQ's delivery count), so a replay starts with no failures.
fn as_first_sent(properties: &BasicProperties) -> BasicProperties {
    let Some(headers) = properties.headers() else {
        return properties.clone();
    };
    let mut kept = FieldTable::default();
    for (name, value) in headers.inner() {
        let name = name.as_str();
        if !name.starts_with("x-orderly-") && name != "x-delivery-count" {
            kept.insert(name.into(), value.clone());
        }
    }
    properties.clone().with_headers(kept)
}
