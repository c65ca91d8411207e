//! Publishing with publisher confirms: a publish succeeds only once RabbitMQ has taken
//! responsibility for the message (written it to its quorum queues).

use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    publisher_confirm::Confirmation,
    types::{AMQPValue, FieldTable},
};
use thiserror::Error;

use super::{
    envelope::{Exchange, Head, Outbound},
    topology::Topology,
};

#[derive(Debug, Error)]
pub enum PublishError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error("RabbitMQ refused a message")]
    Refused,
}

/// The AMQP properties of an envelope: persistent, typed, with its ids and trace context as
/// headers so tools can route and trace without parsing the body.
pub fn properties(head: &Head) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in [
        ("saga_id", head.saga_id.to_string()),
        ("order_id", head.order_id.to_string()),
    ] {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    headers.insert(
        "attempt".into(),
        AMQPValue::LongLongInt(i64::from(head.attempt)),
    );
    if let Some(traceparent) = &head.traceparent {
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(traceparent.as_str().into()),
        );
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(head.message_id.to_string().into())
        .with_type(head.kind.as_str().into())
        .with_headers(headers)
}

/// A message ready to publish: an encoded envelope and where it goes.
pub struct Outgoing {
    pub exchange: Exchange,
    pub routing_key: String,
    pub payload: Vec<u8>,
    pub properties: BasicProperties,
}

impl Outgoing {
    /// An outbox row as a message. Its properties come from the envelope's head; a body this
    /// build cannot read (another version wrote it) is sent as it is, with its id, and the
    /// consumer dead-letters it with the reason rather than have it stall the rows behind it.
    pub fn new(message: Outbound) -> Self {
        let properties = match serde_json::from_str::<Head>(&message.body) {
            Ok(head) => properties(&head),
            Err(e) => {
                tracing::error!(message_id = %message.message_id, error = %e, "relaying a message this build cannot read");
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(message.message_id.to_string().into())
            }
        };
        Self {
            exchange: message.exchange,
            routing_key: message.routing_key,
            payload: message.body.into_bytes(),
            properties,
        }
    }
}

/// Messages published and not yet known to be confirmed.
pub struct InFlight(Vec<lapin::publisher_confirm::PublisherConfirm>);

impl InFlight {
    /// Waits for every confirm; an error if RabbitMQ refused any message.
    pub async fn confirmed(self) -> Result<(), PublishError> {
        for confirm in self.0 {
            if let Confirmation::Nack(_) = confirm.await? {
                return Err(PublishError::Refused);
            }
        }
        Ok(())
    }
}

/// A channel in confirm mode.
pub struct Publisher {
    channel: Channel,
    topology: Topology,
}

impl Publisher {
    pub async fn open(connection: &Connection, topology: Topology) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self { channel, topology })
    }

    /// Publishes every message, then waits for all the confirms at once (one round trip for
    /// the batch, not one per message).
    pub async fn publish_all(&self, messages: &[Outgoing]) -> Result<(), PublishError> {
        self.publish(messages).await?.confirmed().await
    }

    /// Publishes every message and returns without waiting for RabbitMQ to confirm them: the
    /// caller awaits [`InFlight::confirmed`] when it needs to know, and may publish more
    /// meanwhile.
    pub async fn publish(&self, messages: &[Outgoing]) -> Result<InFlight, PublishError> {
        let mut confirms = Vec::with_capacity(messages.len());
        for message in messages {
            let confirm = self
                .channel
                .basic_publish(
                    &self.topology.exchange(message.exchange),
                    &message.routing_key,
                    BasicPublishOptions::default(),
                    &message.payload,
                    message.properties.clone(),
                )
                .await?;
            confirms.push(confirm);
        }
        Ok(InFlight(confirms))
    }

    /// Publishes raw bytes straight to a queue (retry and dead-letter queues).
    pub async fn to_queue(
        &self,
        queue: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let confirm = self
            .channel
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                payload,
                properties,
            )
            .await?;
        match confirm.await? {
            Confirmation::Nack(_) => Err(PublishError::Refused),
            _ => Ok(()),
        }
    }

    pub async fn close(&self) {
        let _ = self.channel.close(200, "done").await;
    }
}
