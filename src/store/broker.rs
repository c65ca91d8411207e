//! RabbitMQ, as the API and `/readyz` see it: whether the broker answers. The roles open
//! connections of their own (see [`crate::messaging`]).

use lapin::{Connection, options::QueueDeclareOptions, types::FieldTable};
use tokio::sync::Mutex;

use crate::messaging::Amqp;

pub struct Broker {
    amqp: Amqp,
    connection: Mutex<Option<Connection>>,
}

impl Broker {
    /// Does not connect yet: the API must start (and say "not ready") while RabbitMQ is down.
    pub fn new(amqp: Amqp) -> Self {
        Self {
            amqp,
            connection: Mutex::new(None),
        }
    }

    /// Where RabbitMQ is: the roles open connections of their own there.
    pub fn amqp(&self) -> &Amqp {
        &self.amqp
    }

    /// Succeeds when a connection is open, opening a new one if the last was lost.
    pub async fn ping(&self) -> Result<(), super::StoreError> {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_some_and(|c| c.status().connected()) {
            return Ok(());
        }
        *slot = Some(self.amqp.connect("orderly").await?);
        Ok(())
    }

    /// Messages waiting in each queue, in order; `None` for a queue that does not exist (yet:
    /// the roles declare the topology). A passive declare on a missing queue closes its
    /// channel, so such a queue gets a fresh channel for the next.
    pub async fn queue_depths(
        &self,
        queues: &[String],
    ) -> Result<Vec<Option<u32>>, super::StoreError> {
        self.ping().await?;
        let connection = self.connection.lock().await;
        let Some(connection) = connection.as_ref() else {
            return Ok(vec![None; queues.len()]);
        };
        let mut depths = Vec::with_capacity(queues.len());
        let mut channel = connection.create_channel().await?;
        for queue in queues {
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            match channel
                .queue_declare(queue, passive, FieldTable::default())
                .await
            {
                Ok(declared) => depths.push(Some(declared.message_count())),
                Err(_) => {
                    depths.push(None);
                    channel = connection.create_channel().await?;
                }
            }
        }
        let _ = channel.close(200, "counted").await;
        Ok(depths)
    }

    pub async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.close(200, "shutting down").await;
        }
    }
}
