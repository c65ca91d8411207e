//! The relay: moves outbox rows to RabbitMQ.
//!
//! A pass deletes a batch of the oldest rows, skipping rows other relays hold (so any number
//! of relays share the work without waiting on each other), publishes them, and commits the
//! delete only once RabbitMQ has confirmed them. Passes overlap: while one batch waits for its
//! confirms, the next is taken and published, up to [`WINDOW`] batches in flight, each
//! committed as its confirms arrive, oldest first. The next batch is taken at once only while
//! the last one came back full (a backlog); otherwise the relay first waits for the confirms it
//! has in flight, so that rows gather meanwhile and the next pass takes many, not one. A crash between a confirm and its commit
//! publishes that batch again later: consumers dedupe by message id. The relay sleeps until
//! Postgres notifies it of new rows (`LISTEN orderly_outbox`), or a short poll interval passes
//! in case a notification was lost while reconnecting; every notification already queued is
//! answered by one pass, not one pass each.

use std::{collections::VecDeque, time::Instant};

use thiserror::Error;
use tokio::sync::watch;

use crate::{
    messaging::{
        envelope::{Exchange, Outbound},
        publisher::{InFlight, Outgoing, PublishError, Publisher},
    },
    metrics::RelayPassLabels,
    store::postgres::{self, outbox},
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
    let connection = context
        .stores
        .broker
        .amqp()
        .connect("orderly-relay")
        .await?;
    let channel = connection.create_channel().await?;
    context.topology.declare(&channel).await?;
    let _ = channel.close(200, "declared").await;
    let publisher = Publisher::open(&connection, context.topology.clone()).await?;
    // A connection of its own: a listener holds its connection for good, and the roles' pool
    // is kept small on purpose (see `ORDERLY_WORKER_PG_MAX_CONNECTIONS`).
    let mut listener = postgres::listener(&context.settings).await?;
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
        // Take while the window has room and the last take found a backlog: those rows go out
        // before the last batch's confirms are awaited.
        if in_flight.len() < WINDOW && in_flight.back().is_none_or(|b| b.full) {
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
    /// It took as many rows as a batch may: more are likely waiting.
    full: bool,
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
    let found = if rows.is_empty() { "empty" } else { "rows" };
    context
        .metrics
        .relay_passes
        .get_or_create(&RelayPassLabels { found })
        .inc();
    if rows.is_empty() {
        return Ok(None);
    }
    context.metrics.relay_published.inc_by(rows.len() as u64);
    let full = rows.len() as i64 >= context.settings.relay_batch;
    let messages: Vec<Outgoing> = rows
        .into_iter()
        .map(|row| {
            Outgoing::new(Outbound {
                message_id: row.message_id,
                // The column's CHECK allows only the exchanges there are.
                exchange: Exchange::parse(&row.exchange).unwrap_or(Exchange::Events),
                routing_key: row.routing_key,
                body: row.body,
            })
        })
        .collect();
    let published = publisher.publish(&messages).await?;
    Ok(Some(Batch {
        tx,
        published,
        full,
    }))
}
