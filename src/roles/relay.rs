//! The relay: moves outbox rows to RabbitMQ.
//!
//! A pass deletes a batch of the oldest rows, skipping rows other relays hold (so any number
//! of relays share the work without waiting on each other), publishes them, waits for
//! RabbitMQ's confirms and only then commits the delete. A crash between the confirm and the
//! commit publishes the batch again later: consumers dedupe by message id. The relay sleeps
//! until Postgres notifies it of new rows (`LISTEN orderly_outbox`), or a short poll interval
//! passes in case a notification was lost while reconnecting.

use sqlx::postgres::PgListener;
use thiserror::Error;
use tokio::sync::watch;

use crate::{
    messaging::{
        self,
        publisher::{PublishError, Publisher},
    },
    store::postgres::outbox,
};

use super::{Backoff, RoleContext};

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
        match relay(&context, &shutdown, &mut backoff).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "relay interrupted; reconnecting");
                backoff.wait(&shutdown).await;
            }
        }
    }
    tracing::info!("relay stopped");
}

async fn relay(
    context: &RoleContext,
    shutdown: &watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Result<(), RelayError> {
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
    backoff.reset();
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
    let envelopes = outbox::take(&mut tx, context.settings.relay_batch).await?;
    if envelopes.is_empty() {
        return Ok(0);
    }
    publisher.publish_all(&envelopes).await?;
    tx.commit().await?;
    Ok(envelopes.len())
}
