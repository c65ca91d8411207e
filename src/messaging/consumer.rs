//! The consumer loop every role shares: decode, trace, handle, then ack — or retry later, or
//! dead-letter with the reason. A role only says what one message does.
//!
//! The ack is sent only after the handler returned, that is after its effect was committed, so
//! a crash in between redelivers the message; handlers are idempotent (inbox rows or the Lua
//! scripts' own records) and the copy changes nothing.

use std::{future::Future, sync::Arc};

use futures::{StreamExt, TryStreamExt};
use lapin::{
    BasicProperties, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use thiserror::Error;
use tokio::sync::watch;
use tracing::Instrument;

use super::{
    envelope::Envelope,
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

const FAILURES_HEADER: &str = "x-orderly-failures";

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

/// What a role does with one message.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, envelope: Envelope) -> impl Future<Output = Result<(), HandleError>> + Send;
}

#[derive(Debug, Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Consumes `queue` with at most `prefetch` messages in flight until `shutdown` turns true,
/// then finishes the messages in flight and returns. Returns an error when the connection is
/// lost; the caller reconnects.
pub async fn consume<H: Handler>(
    connection: &Connection,
    topology: &Topology,
    queue: Queue,
    prefetch: u16,
    handler: Arc<H>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConsumeError> {
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
    let outcome = consumer
        .take_until(stop)
        .map_err(ConsumeError::from)
        .try_for_each_concurrent(usize::from(prefetch), |delivery| {
            let handler = handler.clone();
            let context = &context;
            async move { context.process(delivery, handler.as_ref()).await }
        })
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
    async fn process(
        &self,
        delivery: Delivery,
        handler: &impl Handler,
    ) -> Result<(), ConsumeError> {
        let labels = QueueLabels {
            queue: self.queue.as_str(),
        };
        self.metrics.messages_consumed.get_or_create(&labels).inc();
        if delivery.redelivered {
            self.metrics
                .messages_redelivered
                .get_or_create(&labels)
                .inc();
        }
        let envelope = match serde_json::from_slice::<Envelope>(&delivery.data) {
            Ok(envelope) => envelope,
            Err(e) => {
                return self
                    .dead_letter(&delivery, &format!("malformed message: {e}"))
                    .await;
            }
        };
        let span = tracing::info_span!(
            "message",
            queue = self.queue.as_str(),
            kind = envelope.body.kind(),
            message_id = %envelope.message_id,
            order_id = %envelope.order_id,
            saga_id = %envelope.saga_id,
            attempt = envelope.attempt,
            traceparent = envelope.traceparent.as_deref().unwrap_or(""),
        );
        let sent_once = envelope.body.is_sent_once();
        match handler.handle(envelope).instrument(span.clone()).await {
            Ok(()) => {}
            Err(HandleError::Permanent(reason)) => {
                span.in_scope(|| tracing::error!(%reason, "dead-lettering a message"));
                return self.dead_letter(&delivery, &reason).await;
            }
            Err(HandleError::Transient(reason)) => {
                let failures = failures(&delivery.properties) + 1;
                if failures >= MAX_FAILURES && !sent_once {
                    span.in_scope(|| tracing::error!(%reason, failures, "giving up on a message"));
                    return self
                        .dead_letter(&delivery, &format!("failed {failures} times: {reason}"))
                        .await;
                }
                span.in_scope(|| tracing::warn!(%reason, failures, "will retry a message"));
                let properties = with_header(
                    delivery.properties.clone(),
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
        delivery.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Moves a message to the queue's dead-letter queue with the reason, then acks it. If the
    /// move fails the message is not acked, so it comes back rather than vanish.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), ConsumeError> {
        let properties = with_header(
            delivery.properties.clone(),
            "x-orderly-reason",
            AMQPValue::LongString(reason.into()),
        );
        let properties = with_header(
            properties,
            "x-orderly-queue",
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
        delivery.ack(BasicAckOptions::default()).await?;
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

fn with_header(properties: BasicProperties, name: &str, value: AMQPValue) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(name.into(), value);
    properties.with_headers(headers)
}
