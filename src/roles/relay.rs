//! The relay: moves outbox rows to RabbitMQ.
//!
//! A pass deletes a batch of the oldest rows, skipping rows other relays hold (so any number
//! of relays share the work without waiting on each other), publishes them, and commits the
//! delete only once RabbitMQ has confirmed them. Passes overlap: while one batch waits for its
//! confirms, the next is taken and published, up to [`WINDOW`] batches in flight, each
//! committed as its confirms arrive, oldest first. A crash between a confirm and its commit
//! publishes that batch again later: consumers dedupe by message id. The relay sleeps until
//! Postgres notifies it of new rows (`LISTEN orderly_outbox`), or a short poll interval passes
//! in case a notification was lost while reconnecting; every notification already queued is
//! answered by one pass, not one pass each.

use std::{collections::VecDeque, time::Instant};

use lapin::BasicProperties;
use sqlx::postgres::PgListener;
use thiserror::Error;
use tokio::sync::watch;

use crate::{
    messaging::{
        self,
        envelope::{Envelope, Exchange},
        publisher::{self, InFlight, Outgoing, PublishError, Publisher},
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
    let mut in_flight: VecDeque<Batch> = VecDeque::new();
    let outcome = loop {
        if *shutdown.borrow() {
            break Ok(());
        }
        // Every notification that came while the last pass ran is for rows this pass takes.
        while listener.next_buffered().is_some() {}
        // Take while the window has room: rows that came while the last batch was published
        // go out before its confirms are awaited.
        if in_flight.len() < WINDOW {
            match take(context, &publisher).await {
                Ok(Some(batch)) => {
                    in_flight.push_back(batch);
                    continue;
                }
                Ok(None) => {}
                Err(e) => break Err(e),
            }
        }
        if let Some(oldest) = in_flight.pop_front() {
            if let Err(e) = oldest.settle().await {
                break Err(e);
            }
            continue;
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
    // What is published and unsettled is confirmed and committed before stopping, if it can be;
    // otherwise its delete rolls back and it is published again later.
    for batch in in_flight {
        if batch.settle().await.is_err() {
            break;
        }
    }
    publisher.close().await;
    let _ = connection.close(200, "stopping").await;
    outcome
}

/// Batches published and waiting for their confirms at once, at most.
const WINDOW: usize = 2;

/// A batch taken from the outbox and published: its delete commits once RabbitMQ confirms it.
struct Batch {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    published: InFlight,
}

impl Batch {
    async fn settle(self) -> Result<(), RelayError> {
        self.published.confirmed().await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// Takes and publishes one batch; `None` when the outbox had nothing for this relay.
async fn take(context: &RoleContext, publisher: &Publisher) -> Result<Option<Batch>, RelayError> {
    let mut tx = context.stores.pg.begin().await?;
    let rows = outbox::take(&mut tx, context.settings.relay_batch).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let messages: Vec<Outgoing> = rows.into_iter().map(outgoing).collect();
    let published = publisher.publish(&messages).await?;
    Ok(Some(Batch { tx, published }))
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
