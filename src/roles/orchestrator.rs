//! The orchestrator: applies replies, cancels and deadlines to sagas.
//!
//! Each event is one transaction: the inbox row, the saga under its version, the order under
//! its version (status, history seq), the log entry, and the outbox rows for the next commands
//! and the history events. When another writer moved the saga or the order first, the
//! transaction is dropped and the event is decided again on what is there now.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    domain::saga::{Fact, Saga, SagaEvent, SagaKind, Transition},
    messaging::{
        self,
        consumer::{HandleError, Handler},
        envelope::{Body, Envelope, HistoryEvent, Line},
    },
    metrics::{OutcomeLabels, SagaLabels, StepLabels},
    store::postgres::{inbox, orders, outbox, sagas},
};

use super::RoleContext;

const CONSUMER: &str = "orchestrator";
/// Times an event is decided again after losing a version race before it is retried later.
const MAX_RACES: usize = 20;
/// How often a sweeper prunes the inbox and the saga log.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How long message ids are kept for dedupe: far past any redelivery or retry (minutes), and
/// every effect is idempotent per order besides.
const INBOX_RETENTION: Duration = Duration::from_secs(86_400);

/// What caused an event, for the inbox, the log and the trace.
struct Cause<'a> {
    message_id: Option<Uuid>,
    label: &'a str,
    traceparent: Option<&'a str>,
}

pub struct Orchestrator {
    context: RoleContext,
}

impl Handler for Orchestrator {
    async fn handle(&self, message: Envelope) -> Result<(), HandleError> {
        let event = match message.body {
            Body::CancelRequested => SagaEvent::Cancel,
            ref body => SagaEvent::Reply(body.reply().ok_or_else(|| {
                HandleError::Permanent(format!("the orchestrator does not handle {}", body.kind()))
            })?),
        };
        let cause = Cause {
            message_id: Some(message.message_id),
            label: message.body.kind(),
            traceparent: message.traceparent.as_deref(),
        };
        self.drive(message.saga_id, event, cause).await
    }
}

impl Orchestrator {
    pub fn new(context: RoleContext) -> Self {
        Self { context }
    }

    async fn drive(
        &self,
        saga_id: Uuid,
        event: SagaEvent,
        cause: Cause<'_>,
    ) -> Result<(), HandleError> {
        let policy = self.context.policy();
        for _ in 0..MAX_RACES {
            let mut tx = self.context.stores.pg.begin().await?;
            if let Some(id) = cause.message_id
                && !inbox::claim(&mut tx, CONSUMER, id).await?
            {
                return Ok(());
            }
            // Every saga has its order (a foreign key), so a missing row means no saga.
            let Some((row, order)) = sagas::find_with_order(&mut tx, saga_id).await? else {
                return Err(HandleError::Permanent(format!("no saga {saga_id}")));
            };
            let now = Utc::now();
            let mut saga = row.saga.clone();
            let transition = saga.apply(event, now, &policy);
            if transition.stale {
                if cause.message_id.is_none() {
                    // A sweeper that lost the race to a reply: nothing worth logging.
                    return Ok(());
                }
                sagas::log(&mut tx, saga_id, cause.label, cause.message_id, true).await?;
                tx.commit().await?;
                if matches!(event, SagaEvent::Reply(_)) {
                    self.context.metrics.stale_replies.inc();
                }
                tracing::info!(event = cause.label, "stale event recorded and ignored");
                return Ok(());
            }
            if !sagas::save(&mut tx, saga_id, &saga, row.version).await? {
                continue;
            }
            // A reply that arrived to find a recorded cancel took that cancel, but itself applied
            // to nothing: logged (and counted) as the stale reply it is.
            sagas::log(
                &mut tx,
                saga_id,
                cause.label,
                cause.message_id,
                transition.event_stale,
            )
            .await?;

            let trace = messaging::child_traceparent(cause.traceparent);
            let mut outgoing = Vec::new();
            let mut in_charge = saga_id;
            let mut started = None;
            self.commands(&mut tx, &order, saga_id, &transition, &trace, &mut outgoing)
                .await?;
            let mut facts = transition.facts.clone();
            if transition.start_cancellation {
                let (cancellation, first) = Saga::cancellation(now, &policy);
                in_charge = Uuid::now_v7();
                sagas::insert(&mut tx, in_charge, order.id, &cancellation).await?;
                self.commands(&mut tx, &order, in_charge, &first, &trace, &mut outgoing)
                    .await?;
                facts.extend(first.facts.iter().copied());
                started = Some(cancellation.kind);
            }
            let events: Vec<HistoryEvent> = facts
                .iter()
                .zip(order.last_seq + 1..)
                .map(|(fact, seq)| history_event(seq, *fact, in_charge, now))
                .collect();
            let last_seq = order.last_seq + events.len() as i32;
            if !orders::record(
                &mut tx,
                order.id,
                order.version,
                transition.order,
                in_charge,
                last_seq,
            )
            .await?
            {
                continue;
            }
            if !events.is_empty() {
                outgoing.push(
                    Envelope::new(in_charge, order.id, 1, Body::History { events })
                        .with_traceparent(Some(trace.clone())),
                );
            }
            outbox::enqueue(&mut tx, &outgoing).await?;
            tx.commit().await?;
            if transition.event_stale && matches!(event, SagaEvent::Reply(_)) {
                self.context.metrics.stale_replies.inc();
            }
            self.observe(&saga, &transition, started);
            return Ok(());
        }
        Err(HandleError::Transient(format!(
            "lost {MAX_RACES} version races in a row on saga {saga_id}"
        )))
    }

    /// The envelopes of a transition's commands, filled in with the order's lines and wallet.
    async fn commands(
        &self,
        tx: &mut sqlx::PgConnection,
        order: &orders::OrderRow,
        saga_id: Uuid,
        transition: &Transition,
        trace: &str,
        out: &mut Vec<Envelope>,
    ) -> Result<(), HandleError> {
        if transition.commands.is_empty() {
            return Ok(());
        }
        // Only stock commands carry the lines; a charge or a refund needs no read.
        let mut items: Vec<Line> = Vec::new();
        if transition.commands.iter().any(|c| c.action.moves_stock()) {
            // Read in the caller's transaction: taking a second connection while holding one
            // could exhaust the pool with every handler waiting on another.
            items = orders::items(&mut *tx, &[order.id])
                .await?
                .into_iter()
                .map(|i| Line {
                    product_id: i.product_id,
                    quantity: i64::from(i.quantity),
                })
                .collect();
        }
        for command in &transition.commands {
            let body = Body::command(command.action, &items, order.customer_id, order.total_minor);
            out.push(
                Envelope::new(saga_id, order.id, command.attempt, body)
                    .with_traceparent(Some(trace.to_owned())),
            );
        }
        Ok(())
    }

    fn observe(&self, saga: &Saga, transition: &Transition, started: Option<SagaKind>) {
        let metrics = &self.context.metrics;
        if let Some(step) = transition.retried {
            metrics
                .step_retries
                .get_or_create(&StepLabels {
                    step: step.as_str(),
                })
                .inc();
        }
        if let Some(kind) = started {
            metrics
                .sagas_started
                .get_or_create(&SagaLabels {
                    kind: kind.as_str(),
                })
                .inc();
        }
        if let (Some(change), Some(finished)) = (transition.order, saga.finished_at) {
            let labels = OutcomeLabels {
                kind: saga.kind.as_str(),
                outcome: change.status.as_str(),
                reason: change.reason.map_or("", |r| r.as_str()),
            };
            metrics.sagas_finished.get_or_create(&labels).inc();
            let seconds = (finished - saga.started_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics
                .saga_duration
                .get_or_create(&labels)
                .observe(seconds);
        }
    }

    /// Every `sweep_interval`, drives the sagas whose deadline passed; every [`PRUNE_EVERY`]
    /// forgets what the retention no longer keeps. Any number of orchestrators may sweep: the
    /// saga's version picks one winner (and pruning twice deletes nothing twice).
    pub async fn run_sweeper(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let interval = self.context.settings.sweep_interval;
        let mut pruned_at: Option<Instant> = None;
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sagas = n, "drove sagas past their deadline"),
                Err(e) => tracing::warn!(error = %e, "deadline sweep failed; will retry"),
            }
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                self.prune().await;
                pruned_at = Some(Instant::now());
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// Deletes inbox ids past [`INBOX_RETENTION`] and the log of ended sagas past the saga log's
    /// retention, so both tables hold the work of days, not of the system's whole life.
    pub async fn prune(&self) {
        let pg = &self.context.stores.pg;
        match inbox::prune(pg, INBOX_RETENTION).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned the inbox"),
            Err(e) => tracing::warn!(error = %e, "could not prune the inbox"),
        }
        let Some(retention) = self.context.settings.saga_log_retention else {
            return;
        };
        match sagas::prune_log(pg, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned the saga log"),
            Err(e) => tracing::warn!(error = %e, "could not prune the saga log"),
        }
    }

    /// One pass of the sweeper; returns how many sagas it looked at.
    pub async fn sweep(&self) -> Result<usize, HandleError> {
        let due = sagas::due(&self.context.stores.pg, 200).await?;
        for &(saga_id, _) in &due {
            let cause = Cause {
                message_id: None,
                label: "deadline_passed",
                traceparent: None,
            };
            // One saga that keeps failing must not hold back every deadline behind it.
            if let Err(e) = self.drive(saga_id, SagaEvent::DeadlinePassed, cause).await {
                tracing::warn!(saga_id = %saga_id, error = %e, "could not drive a saga past its deadline");
            }
        }
        Ok(due.len())
    }
}

fn history_event(seq: i32, fact: Fact, saga_id: Uuid, at: chrono::DateTime<Utc>) -> HistoryEvent {
    let mut data = json!({ "saga_id": saga_id });
    if let Some(step) = fact.step {
        data["step"] = json!(step.as_str());
    }
    if let Some(attempt) = fact.attempt {
        data["attempt"] = json!(attempt);
    }
    if let Some(reason) = fact.reason {
        data["reason"] = json!(reason.as_str());
    }
    HistoryEvent {
        seq,
        kind: fact.kind.as_str().to_owned(),
        at,
        data,
    }
}
