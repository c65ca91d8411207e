//! The consumer loop every role shares: take a batch, decode, handle, then ack — or retry
//! later, or dead-letter with the reason. A role says what one message does and, where it pays,
//! how a batch of them is done at once.
//!
//! A batch is what is waiting: up to [`Batching::size`] deliveries, or what arrived within
//! [`Batching::linger`] of the first. The handler decides every message of it (set-based where it
//! can: one transaction, one Redis round trip, one `insert_many`) and returns an outcome per
//! message; a message that failed is retried or dead-lettered on its own, never the batch. The
//! batch is then acked with one `multiple` ack, only after every effect was committed, so a crash
//! in between redelivers it; handlers are idempotent (inbox rows or the Lua scripts' own
//! records) and the copies change nothing. Batches of one consumer run one after another, which
//! is what makes the `multiple` ack safe; the next batch waits in the prefetch meanwhile.

use std::{future::Future, sync::Arc};

use futures::StreamExt;
use lapin::{
    BasicProperties, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use thiserror::Error;
use tokio::sync::watch;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    envelope::{Envelope, Message},
    publisher::{PublishError, Publisher},
    topology::{Queue, Topology},
};
use crate::{
    metrics::{Metrics, QueueLabels},
    store::StoreError,
};

/// Failures before a message goes to the dead-letter queue: with the delays of
/// [`super::topology::RETRY_DELAYS_MS`] about four minutes of retrying.
pub const MAX_FAILURES: u32 = 10;

/// Headers the consumer adds to a message it retries or dead-letters: how often it failed,
/// when first and last (RFC 3339), why (dead letters), and the queue it came from.
pub const FAILURES_HEADER: &str = "x-orderly-failures";
pub const FIRST_FAILURE_HEADER: &str = "x-orderly-first-failure";
pub const LAST_FAILURE_HEADER: &str = "x-orderly-last-failure";
pub const REASON_HEADER: &str = "x-orderly-reason";
pub const QUEUE_HEADER: &str = "x-orderly-queue";

#[derive(Debug, Error)]
pub enum HandleError {
    /// Worth trying again later (a store did not answer).
    #[error("{0}")]
    Transient(String),
    /// Will never succeed (a malformed or unknown message): dead-letter it at once.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for HandleError {
    fn from(e: StoreError) -> Self {
        // An unexpected store error may be a bug, but it may also pass (a deadlock victim, a
        // failover): retry it, and the dead-letter queue catches it if it never passes.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Transient(message)
    }
}

impl From<sqlx::Error> for HandleError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

/// What a role does with one message, and with several at once.
pub trait Handler: Send + Sync + 'static {
    /// The messages of the role's queue; anything else on it is dead-lettered undecoded.
    type Message: Message;

    fn handle(
        &self,
        envelope: Envelope<Self::Message>,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;

    /// Handles messages taken together, in delivery order, no two with the same id; returns one
    /// outcome per message, in the same order. The default handles them one by one, all at the same time (as many as
    /// the batch holds); a role overrides it where set-based statements pay.
    fn handle_batch(
        &self,
        batch: Vec<Envelope<Self::Message>>,
    ) -> impl Future<Output = Vec<Result<(), HandleError>>> + Send {
        futures::future::join_all(batch.into_iter().map(|envelope| self.handle(envelope)))
    }
}

/// Why a batch a role decided in one transaction wrote nothing; the role then does its messages
/// one by one.
pub enum Unwritten {
    /// A row the batch decided on moved (or appeared) after it was read.
    Raced,
    Failed(HandleError),
}

impl<E: Into<HandleError>> From<E> for Unwritten {
    fn from(e: E) -> Self {
        Self::Failed(e.into())
    }
}

/// How a consumer groups deliveries.
///
/// A batch waits for its next delivery at least `linger`, and longer when deliveries have
/// been coming about as often as that longer wait (twice the usual gap between them, if that
/// is within `max_linger`), but never past `max_linger` after its first delivery, nor past
/// `size` messages. So a lone message waits `linger`, a busy queue fills its batches as fast as
/// they come, and a queue split among many consumers, each seeing a message every few
/// milliseconds, still gathers several per transaction instead of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Deliveries handled together at most.
    pub size: usize,
    /// How long a batch waits for its next delivery at least.
    pub linger: std::time::Duration,
    /// How long after its first delivery a batch is handled at the latest.
    pub max_linger: std::time::Duration,
}

/// The usual gap between deliveries, as a moving average over the last few.
#[derive(Debug, Default)]
struct Arrivals {
    last: Option<std::time::Instant>,
    gap: Option<std::time::Duration>,
}

impl Arrivals {
    fn arrived(&mut self, at: std::time::Instant) {
        if let Some(last) = self.last {
            // An idle spell counts as a second at most, so the average is back within reach of
            // the bound a dozen deliveries after traffic resumes.
            let gap = at
                .saturating_duration_since(last)
                .min(std::time::Duration::from_secs(1));
            // An eighth of each new gap: a burst or a pause moves it, one odd gap does not.
            self.gap = Some(match self.gap {
                Some(usual) => (usual * 7 + gap) / 8,
                None => gap,
            });
        }
        self.last = Some(at);
    }

    /// How long to wait for the next delivery (see [`Batching`]).
    fn wait_for_next(&self, batching: &Batching) -> std::time::Duration {
        match self.gap {
            Some(gap) if gap * 2 <= batching.max_linger => (gap * 2).max(batching.linger),
            _ => batching.linger,
        }
    }
}

#[derive(Debug, Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Consumes `queue` in batches, with at most `prefetch` messages delivered and not yet acked,
/// until `shutdown` turns true, then finishes the batch in hand and returns. Returns an error
/// when the connection is lost; the caller reconnects.
#[allow(clippy::too_many_arguments)] // the consumer's whole configuration, each read once
pub async fn consume<H: Handler>(
    connection: &Connection,
    topology: &Topology,
    queue: Queue,
    prefetch: u16,
    batching: Batching,
    handler: Arc<H>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConsumeError> {
    // Every counter of the queue is listed from the start, at zero: a rate or an alert over a
    // series that appears only with its first increase misses that increase.
    let labels = QueueLabels {
        queue: queue.as_str(),
    };
    for family in [
        &metrics.messages_consumed,
        &metrics.messages_redelivered,
        &metrics.messages_retried,
        &metrics.messages_dead_lettered,
    ] {
        let _ = family.get_or_create(&labels);
    }
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let publisher = Publisher::open(connection, topology.clone()).await?;
    let consumer = channel
        .basic_consume(
            &topology.queue(queue),
            &format!("orderly-{}-{}", queue.as_str(), uuid::Uuid::now_v7()),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let context = Context {
        queue,
        topology,
        publisher: &publisher,
        metrics: &metrics,
    };
    let mut deliveries = std::pin::pin!(consumer.take_until(stop));
    let outcome = async {
        let mut arrivals = Arrivals::default();
        while let Some(first) = deliveries.next().await {
            let mut batch = vec![first?];
            let opened = tokio::time::Instant::now();
            arrivals.arrived(opened.into_std());
            let closes = opened + batching.max_linger.max(batching.linger);
            while batch.len() < batching.size.max(1) {
                let wait = arrivals.wait_for_next(&batching);
                let deadline = (tokio::time::Instant::now() + wait).min(closes);
                tokio::select! {
                    biased;
                    next = deliveries.next() => match next {
                        Some(delivery) => {
                            batch.push(delivery?);
                            arrivals.arrived(std::time::Instant::now());
                        }
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            context.process(batch, handler.as_ref()).await?;
        }
        Ok(())
    }
    .await;
    // Messages prefetched but not started go back to the queue when the channel closes.
    let _ = channel.close(200, "stopping").await;
    publisher.close().await;
    outcome
}

struct Context<'a> {
    queue: Queue,
    topology: &'a Topology,
    publisher: &'a Publisher,
    metrics: &'a Metrics,
}

impl Context<'_> {
    /// Handles one batch and acks it whole, once every message is done: handled, or moved to a
    /// retry or dead-letter queue.
    async fn process<H: Handler>(
        &self,
        batch: Vec<Delivery>,
        handler: &H,
    ) -> Result<(), ConsumeError> {
        let labels = QueueLabels {
            queue: self.queue.as_str(),
        };
        self.metrics
            .messages_consumed
            .get_or_create(&labels)
            .inc_by(batch.len() as u64);
        self.metrics
            .batch_size
            .get_or_create(&labels)
            .observe(batch.len() as f64);
        let redelivered = batch.iter().filter(|d| d.redelivered).count();
        if redelivered > 0 {
            self.metrics
                .messages_redelivered
                .get_or_create(&labels)
                .inc_by(redelivered as u64);
        }
        let mut decoded = Vec::with_capacity(batch.len());
        let mut envelopes = Vec::with_capacity(batch.len());
        for delivery in &batch {
            match serde_json::from_slice::<Envelope<H::Message>>(&delivery.data) {
                // A second copy of a message in the same batch (a redelivery that caught up with
                // the first) is done when the first is: the batch's ack takes both.
                Ok(envelope)
                    if envelopes
                        .iter()
                        .any(|e: &Envelope<_>| e.message_id == envelope.message_id) => {}
                Ok(envelope) => {
                    decoded.push(delivery);
                    envelopes.push(envelope);
                }
                Err(e) => {
                    self.dead_letter(delivery, &format!("malformed message: {e}"))
                        .await?;
                }
            }
        }
        let facts: Vec<(Uuid, Uuid, Uuid, bool)> = envelopes
            .iter()
            .map(|e| (e.message_id, e.order_id, e.saga_id, e.body.is_sent_once()))
            .collect();
        let span = tracing::info_span!("batch", queue = self.queue.as_str(), size = facts.len());
        let outcomes = if envelopes.is_empty() {
            Vec::new()
        } else {
            handler.handle_batch(envelopes).instrument(span).await
        };
        for ((delivery, (message_id, order_id, saga_id, sent_once)), outcome) in
            decoded.into_iter().zip(facts).zip(outcomes)
        {
            let span = tracing::info_span!(
                "message",
                queue = self.queue.as_str(),
                %message_id,
                %order_id,
                %saga_id,
            );
            match outcome {
                Ok(()) => {}
                Err(HandleError::Permanent(reason)) => {
                    span.in_scope(|| tracing::error!(%reason, "dead-lettering a message"));
                    self.dead_letter(delivery, &reason).await?;
                }
                Err(HandleError::Transient(reason)) => {
                    let failures = failures(&delivery.properties) + 1;
                    if failures >= MAX_FAILURES && !sent_once {
                        span.in_scope(
                            || tracing::error!(%reason, failures, "giving up on a message"),
                        );
                        self.dead_letter(delivery, &format!("failed {failures} times: {reason}"))
                            .await?;
                        continue;
                    }
                    span.in_scope(|| tracing::warn!(%reason, failures, "will retry a message"));
                    let properties = with_header(
                        failed_now(delivery.properties.clone()),
                        FAILURES_HEADER,
                        AMQPValue::LongLongInt(i64::from(failures)),
                    );
                    self.publisher
                        .to_queue(
                            &self.topology.retry_queue(self.queue, failures),
                            &delivery.data,
                            properties,
                        )
                        .await?;
                    self.metrics.messages_retried.get_or_create(&labels).inc();
                }
            }
        }
        // One ack for the batch: every delivery before it on this channel is done too, since
        // batches run one after another.
        if let Some(last) = batch.last() {
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
    }

    /// Moves a message to the queue's dead-letter queue with the reason; the batch's ack then
    /// takes it off its queue. If the move fails the batch is not acked, so the message comes
    /// back rather than vanish.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), ConsumeError> {
        let properties = with_header(
            failed_now(delivery.properties.clone()),
            REASON_HEADER,
            AMQPValue::LongString(reason.into()),
        );
        let properties = with_header(
            properties,
            QUEUE_HEADER,
            AMQPValue::LongString(self.topology.queue(self.queue).into()),
        );
        self.publisher
            .to_queue(
                &self.topology.dead_letter_queue(self.queue),
                &delivery.data,
                properties,
            )
            .await?;
        self.metrics
            .messages_dead_lettered
            .get_or_create(&QueueLabels {
                queue: self.queue.as_str(),
            })
            .inc();
        Ok(())
    }
}

fn failures(properties: &BasicProperties) -> u32 {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(FAILURES_HEADER))
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            _ => None,
        })
        .unwrap_or(0)
}

/// Stamps a failure's time: the first one is kept, the last one moves.
fn failed_now(properties: BasicProperties) -> BasicProperties {
    let now = AMQPValue::LongString(
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    let first_known = properties
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().contains_key(FIRST_FAILURE_HEADER));
    let properties = if first_known {
        properties
    } else {
        with_header(properties, FIRST_FAILURE_HEADER, now.clone())
    };
    with_header(properties, LAST_FAILURE_HEADER, now)
}

fn with_header(properties: BasicProperties, name: &str, value: AMQPValue) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(name.into(), value);
    properties.with_headers(headers)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const BATCHING: Batching = Batching {
        size: 100,
        linger: Duration::from_millis(2),
        max_linger: Duration::from_millis(40),
    };

    fn after_gaps(ms: &[u64]) -> Duration {
        let mut arrivals = Arrivals::default();
        let mut at = Instant::now();
        arrivals.arrived(at);
        for gap in ms {
            at += Duration::from_millis(*gap);
            arrivals.arrived(at);
        }
        arrivals.wait_for_next(&BATCHING)
    }

    #[test]
    fn a_batch_waits_longer_only_while_deliveries_come_within_the_bound() {
        // Nothing known, or deliveries far apart: the base linger.
        assert_eq!(after_gaps(&[]), BATCHING.linger);
        assert_eq!(after_gaps(&[1_000, 1_000]), BATCHING.linger);
        // Every 4 ms: wait 8 ms for the next, which is likely to come.
        assert_eq!(after_gaps(&[4; 20]).as_millis(), 8);
        // Dense: never less than the base linger.
        assert_eq!(after_gaps(&[0; 20]), BATCHING.linger);
        // Every 30 ms: twice that is past the bound, so back to the base linger.
        assert_eq!(after_gaps(&[30; 20]), BATCHING.linger);
    }
}
