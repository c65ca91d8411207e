//! The relay: moves outbox rows to RabbitMQ.
//!
//! A pass deletes a batch of the oldest rows, skipping rows other relays hold (so any number
//! of relays share the work without waiting on each other), publishes them, waits for
//! RabbitMQ's confirms and only then commits the delete. A crash between the confirm and the
//! commit publishes the batch again later: consumers dedupe by message id. The relay sleeps
//! until Postgres notifies it of new rows (`LISTEN orderly_outbox`), or a short poll interval
//! passes in case a notification was lost while reconnecting.

use std::time::Instant;

use lapin::BasicProperties;
use sqlx::postgres::PgListener;
use thiserror::Error;
use tokio::sync::watch;

use crate::{
    messaging::{
        self,
        envelope::{Envelope, Exchange},
        publisher::{self, Outgoing, PublishError, Publisher},
    },
    store::postgres::outbox,
};

use super::RoleContext;
use crate::readiness::Backoff;

#[derive(Debug, Error)]
enum RelayError {
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Postgres(#[from] sqlx::Error),
}

pub async fn run(context: RoleContext, shutdown: watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    while !*shutdown.borrow() {
        let started = Instant::now();
        match relay(&context, &shutdown).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "relay interrupted; reconnecting");
                backoff.wait(started.elapsed(), &shutdown).await;
            }
        }
    }
    tracing::info!("relay stopped");
}

async fn relay(context: &RoleContext, shutdown: &watch::Receiver<bool>) -> Result<(), RelayError> {
    let connection = messaging::connect(&context.settings.amqp_url, "orderly-relay").await?;
    let channel = connection.create_channel().await?;
    context.topology.declare(&channel).await?;
    let _ = channel.close(200, "declared").await;
    let publisher = Publisher::open(&connection, context.topology.clone()).await?;
    // A connection of its own: a listener holds its connection for good, and the roles' pool
    // is kept small on purpose (see `ORDERLY_WORKER_PG_MAX_CONNECTIONS`).
    let mut listener = PgListener::connect(&context.settings.database_url).await?;
    listener.listen("orderly_outbox").await?;
    tracing::info!("relaying the outbox");
    let mut shutdown = shutdown.clone();
    let outcome = loop {
        if *shutdown.borrow() {
            break Ok(());
        }
        match pass(context, &publisher).await {
            Ok(n) if n as i64 >= context.settings.relay_batch => continue,
            Ok(_) => {}
            Err(e) => break Err(e),
        }
        tokio::select! {
            notified = listener.recv() => {
                if let Err(e) = notified {
                    tracing::warn!(error = %e, "outbox notifications interrupted; polling");
                    tokio::time::sleep(context.settings.relay_poll_interval).await;
                }
            }
            _ = tokio::time::sleep(context.settings.relay_poll_interval) => {}
            _ = shutdown.changed() => {}
        }
    };
    publisher.close().await;
    let _ = connection.close(200, "stopping").await;
    outcome
}

/// Publishes one batch; returns how many rows it moved.
async fn pass(context: &RoleContext, publisher: &Publisher) -> Result<usize, RelayError> {
    let mut tx = context.stores.pg.begin().await?;
    let rows = outbox::take(&mut tx, context.settings.relay_batch).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let messages: Vec<Outgoing> = rows.into_iter().map(outgoing).collect();
    publisher.publish_all(&messages).await?;
    tx.commit().await?;
    Ok(messages.len())
}

/// A row as a message. Its headers come from the envelope; a body this build cannot decode is
/// sent as it is, with its id, and the consumer dead-letters it with the reason.
fn outgoing(row: outbox::Taken) -> Outgoing {
    let properties = match serde_json::from_str::<Envelope>(&row.body) {
        Ok(envelope) => publisher::properties(&envelope),
        Err(e) => {
            tracing::error!(message_id = %row.message_id, error = %e, "relaying an outbox row this build cannot decode");
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(row.message_id.to_string().into())
        }
    };
    Outgoing {
        // The column's CHECK allows only the exchanges there are.
        exchange: Exchange::parse(&row.exchange).unwrap_or(Exchange::Events),
        routing_key: row.routing_key,
        payload: row.body.into_bytes(),
        properties,
    }
}
