//! The orchestrator: applies replies, cancels and deadlines to sagas.
//!
//! Events are decided in batches, each one transaction: claim every message id in the inbox at
//! once; lock the orders, then the sagas, the batch names (in id order, as every writer of both
//! does, so two batches never wait on each other in a circle); apply each saga's events to it
//! in memory in delivery order; write every saga, order, log entry, new saga and outbox row with
//! one statement each, under the versions read; commit. A single message, and the sweeper's
//! deadlines, go the same way as a batch of their own. If a row moved anyway (a version check
//! lost), or the batch fails, nothing of it is written, and its events are decided again one by
//! one on what is there now: a batch is a unit of cost, never of failure.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    domain::{
        order::OrderLine,
        saga::{Command, Policy, Saga, SagaEvent, Transition},
    },
    messaging::{
        self,
        consumer::{HandleError, Handler, Unwritten},
        envelope::{Envelope, Message, SagaReply},
        sends::{Addressee, NewEvent, Sends, fact_event},
    },
    metrics::{OutcomeLabels, SagaLabels, StepLabels},
    store::postgres::{
        inbox,
        orders::{self, OrderRecord, OrderRow},
        outbox,
        sagas::{self, LogEntry, SagaRow},
    },
};

use super::RoleContext;

const CONSUMER: &str = "orchestrator";
/// Times an event is decided again on its own after losing a version race.
const MAX_RACES: usize = 20;
/// How often a sweeper prunes the inbox and the saga log.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How long message ids are kept for dedupe: far past any redelivery or retry (minutes), and
/// every effect is idempotent per order besides.
const INBOX_RETENTION: Duration = Duration::from_secs(86_400);
/// Sagas past their deadline driven per sweep transaction.
const SWEEP_BATCH: i64 = 200;

/// One event for a saga, and what caused it (for the inbox, the log and the trace).
#[derive(Debug, Clone, Copy)]
struct Incoming<'a> {
    saga_id: Uuid,
    order_id: Uuid,
    event: SagaEvent,
    /// `None` for a deadline the sweeper found.
    message_id: Option<Uuid>,
    label: &'a str,
    traceparent: Option<&'a str>,
}

impl<'a> Incoming<'a> {
    fn of(message: &'a Envelope<SagaReply>) -> Self {
        Self {
            saga_id: message.saga_id,
            order_id: message.order_id,
            event: message.body.event(),
            message_id: Some(message.message_id),
            label: message.body.kind(),
            traceparent: message.traceparent.as_deref(),
        }
    }
}

pub struct Orchestrator {
    context: RoleContext,
}

impl Handler for Orchestrator {
    type Message = SagaReply;

    async fn handle(&self, message: Envelope<SagaReply>) -> Result<(), HandleError> {
        self.decide_one(Incoming::of(&message)).await
    }

    async fn handle_batch(&self, batch: Vec<Envelope<SagaReply>>) -> Vec<Result<(), HandleError>> {
        let incoming: Vec<Incoming<'_>> = batch.iter().map(Incoming::of).collect();
        match self.decide(&incoming).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                if let Unwritten::Failed(e) = &e {
                    tracing::warn!(error = %e, size = incoming.len(), "an orchestrator batch failed; deciding its events one by one");
                }
                // In delivery order: events of one saga must meet it in the order they came.
                let mut outcomes = Vec::with_capacity(incoming.len());
                for i in incoming {
                    outcomes.push(self.decide_one(i).await);
                }
                outcomes
            }
        }
    }
}

impl Orchestrator {
    pub fn new(context: RoleContext) -> Self {
        Self { context }
    }

    /// One event in a transaction of its own, decided again while it loses version races.
    async fn decide_one(&self, incoming: Incoming<'_>) -> Result<(), HandleError> {
        for _ in 0..MAX_RACES {
            match self.decide(&[incoming]).await {
                Ok(mut outcomes) => return outcomes.pop().unwrap_or(Ok(())),
                Err(Unwritten::Raced) => continue,
                Err(Unwritten::Failed(e)) => return Err(e),
            }
        }
        Err(HandleError::Transient(format!(
            "lost {MAX_RACES} version races in a row on saga {}",
            incoming.saga_id
        )))
    }

    /// Decides a batch of events in one transaction; one outcome per event, in order.
    async fn decide(
        &self,
        batch: &[Incoming<'_>],
    ) -> Result<Vec<Result<(), HandleError>>, Unwritten> {
        let policy = self.context.policy();
        let now = Utc::now();
        let mut tx = self.context.stores.pg.begin().await?;
        let ids: Vec<Uuid> = batch.iter().filter_map(|i| i.message_id).collect();
        let claimed = inbox::claim_many(&mut tx, CONSUMER, &ids).await?;
        let mut order_ids: Vec<Uuid> = batch.iter().map(|i| i.order_id).collect();
        order_ids.sort();
        order_ids.dedup();
        let mut saga_ids: Vec<Uuid> = batch.iter().map(|i| i.saga_id).collect();
        saga_ids.sort();
        saga_ids.dedup();
        let orders: HashMap<Uuid, OrderRow> = orders::lock(&mut tx, &order_ids)
            .await?
            .into_iter()
            .map(|o| (o.id, o))
            .collect();
        let sagas: HashMap<Uuid, SagaRow> = sagas::lock(&mut tx, &saga_ids)
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect();

        // Load → apply, per saga, in delivery order.
        let mut decisions: Vec<Decision> = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut failed = Vec::new();
        for incoming in batch {
            // A copy of a message an earlier delivery did changes nothing.
            if incoming.message_id.is_some_and(|id| !claimed.contains(&id)) {
                outcomes.push(Ok(()));
                continue;
            }
            let Some(row) = sagas.get(&incoming.saga_id) else {
                failed.extend(incoming.message_id);
                outcomes.push(Err(HandleError::Permanent(format!(
                    "no saga {}",
                    incoming.saga_id
                ))));
                continue;
            };
            // An order's decision covers all of its sagas: they share its history and status.
            let Some(order) = orders.get(&row.order_id) else {
                failed.extend(incoming.message_id);
                outcomes.push(Err(HandleError::Permanent(format!(
                    "saga {} names order {}, not the order its message names",
                    row.id, incoming.order_id
                ))));
                continue;
            };
            let at = match decisions.iter().position(|d| d.order.id == order.id) {
                Some(at) => at,
                None => {
                    decisions.push(Decision::new(order.clone()));
                    decisions.len() - 1
                }
            };
            decisions[at].apply(row, incoming, now, &policy);
            outcomes.push(Ok(()));
        }

        // Record: every write is one statement for the whole batch.
        let needs_lines: Vec<Uuid> = decisions
            .iter()
            .filter(|d| d.moves_stock())
            .map(|d| d.order.id)
            .collect();
        let lines = orders::lines(&mut *tx, &needs_lines).await?;
        let mut writes = Writes::default();
        let mut sends = Sends::default();
        for decision in &decisions {
            decision.record(&lines, now, &mut sends, &mut writes);
        }
        if !sagas::save_many(&mut tx, &writes.saves).await? {
            return Err(Unwritten::Raced);
        }
        sagas::insert_many(&mut tx, &writes.started).await?;
        sagas::log_many(&mut tx, &writes.log).await?;
        if !orders::record_many(&mut tx, &writes.orders).await? {
            return Err(Unwritten::Raced);
        }
        outbox::enqueue(&mut tx, &sends.finish()).await?;
        inbox::unclaim(&mut tx, CONSUMER, &failed).await?;
        tx.commit().await?;
        for decision in &decisions {
            self.observe(decision);
        }
        Ok(outcomes)
    }

    fn observe(&self, decision: &Decision) {
        let metrics = &self.context.metrics;
        for applied in &decision.applied {
            if applied.stale_reply {
                metrics.stale_replies.inc();
            }
            if let Some(step) = applied.retried {
                metrics
                    .step_retries
                    .get_or_create(&StepLabels {
                        step: step.as_str(),
                    })
                    .inc();
            }
        }
        for (_, saga) in decision.sagas.values() {
            if saga.is_new {
                metrics
                    .sagas_started
                    .get_or_create(&SagaLabels {
                        kind: saga.saga.kind.as_str(),
                    })
                    .inc();
            }
            if let (Some(change), Some(finished)) = (saga.finished, saga.saga.finished_at) {
                let labels = OutcomeLabels {
                    kind: saga.saga.kind.as_str(),
                    outcome: change.status.as_str(),
                    reason: change.reason.map_or("", |r| r.as_str()),
                };
                metrics.sagas_finished.get_or_create(&labels).inc();
                let seconds = (finished - saga.saga.started_at)
                    .num_microseconds()
                    .unwrap_or(0) as f64
                    / 1e6;
                metrics
                    .saga_duration
                    .get_or_create(&labels)
                    .observe(seconds);
            }
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

    /// One pass of the sweeper, as one batch; returns how many sagas it looked at.
    pub async fn sweep(&self) -> Result<usize, HandleError> {
        let due = sagas::due(&self.context.stores.pg, SWEEP_BATCH).await?;
        let batch: Vec<Incoming<'_>> = due
            .iter()
            .map(|&(saga_id, order_id)| Incoming {
                saga_id,
                order_id,
                event: SagaEvent::DeadlinePassed,
                message_id: None,
                label: "deadline_passed",
                traceparent: None,
            })
            .collect();
        if let Err(e) = self.decide(&batch).await {
            if let Unwritten::Failed(e) = &e {
                tracing::warn!(error = %e, "a sweep batch failed; driving its sagas one by one");
            }
            // One saga that keeps failing must not hold back every deadline behind it.
            for incoming in batch {
                if let Err(e) = self.decide_one(incoming).await {
                    tracing::warn!(saga_id = %incoming.saga_id, error = %e, "could not drive a saga past its deadline");
                }
            }
        }
        Ok(due.len())
    }
}

/// What a batch decided for one order and its sagas, before anything is written.
struct Decision {
    /// The order as read (its version is the one the write checks) and as it now stands.
    order: OrderRow,
    change: Option<crate::domain::saga::OrderChange>,
    in_charge: Uuid,
    /// The order's sagas this batch touched, by id, with the version read.
    sagas: HashMap<Uuid, (i64, Touched)>,
    /// Commands to send: `(saga, command)`.
    commands: Vec<(Uuid, Command)>,
    /// The history events, each naming the saga in charge when it was recorded.
    events: Vec<NewEvent>,
    log: Vec<(Uuid, String, Option<Uuid>, bool)>,
    applied: Vec<Applied>,
    /// The trace of the last event applied: what the order's sends continue.
    trace: Option<String>,
}

/// A saga as the batch leaves it.
struct Touched {
    saga: Saga,
    /// Started by this batch (a cancellation): inserted, not updated.
    is_new: bool,
    /// Changed by a transition that was not stale.
    changed: bool,
    /// The order change it finished with, if it finished in this batch.
    finished: Option<crate::domain::saga::OrderChange>,
}

/// What one applied event is counted as.
struct Applied {
    stale_reply: bool,
    retried: Option<crate::domain::saga::StepName>,
}

/// The batch's writes, one list per statement.
#[derive(Default)]
struct Writes<'a> {
    saves: Vec<(Uuid, &'a Saga, i64)>,
    started: Vec<(Uuid, Uuid, &'a Saga)>,
    log: Vec<LogEntry<'a>>,
    orders: Vec<OrderRecord>,
}

impl Decision {
    fn new(order: OrderRow) -> Self {
        Self {
            in_charge: order.saga_id,
            order,
            change: None,
            sagas: HashMap::new(),
            commands: Vec::new(),
            events: Vec::new(),
            log: Vec::new(),
            applied: Vec::new(),
            trace: None,
        }
    }

    /// Applies one event to its saga as this batch has left it so far.
    fn apply(
        &mut self,
        row: &SagaRow,
        incoming: &Incoming<'_>,
        now: DateTime<Utc>,
        policy: &Policy,
    ) {
        let cancel_recorded = self.order.cancel_requested_at.is_some();
        let (_, touched) = self.sagas.entry(row.id).or_insert_with(|| {
            let mut saga = row.saga.clone();
            // The cancel flag is the order's, read under its lock: every saga of it sees it.
            saga.cancel_requested |= cancel_recorded;
            (
                row.version,
                Touched {
                    saga,
                    is_new: false,
                    changed: false,
                    finished: None,
                },
            )
        });
        let transition = touched.saga.apply(incoming.event, now, policy);
        let is_reply = matches!(incoming.event, SagaEvent::Reply(_));
        if transition.stale {
            // A sweeper that lost the race to a reply: nothing worth logging.
            if incoming.message_id.is_some() {
                self.log
                    .push((row.id, incoming.label.to_owned(), incoming.message_id, true));
                self.applied.push(Applied {
                    stale_reply: is_reply,
                    retried: None,
                });
                tracing::info!(event = incoming.label, saga_id = %row.id, "stale event recorded and ignored");
            }
            return;
        }
        touched.changed = true;
        // A reply that arrived to find a recorded cancel took that cancel, but itself applied
        // to nothing: logged (and counted) as the stale reply it is.
        self.log.push((
            row.id,
            incoming.label.to_owned(),
            incoming.message_id,
            transition.event_stale,
        ));
        self.applied.push(Applied {
            stale_reply: transition.event_stale && is_reply,
            retried: transition.retried,
        });
        if let Some(change) = transition.order {
            touched.finished = Some(change);
        }
        self.trace = Some(messaging::child_traceparent(incoming.traceparent));
        self.take_transition(row.id, &transition, now, policy);
    }

    /// Adds a transition's commands, events and order change; starts the cancellation saga it
    /// asks for.
    fn take_transition(
        &mut self,
        saga_id: Uuid,
        transition: &Transition,
        now: DateTime<Utc>,
        policy: &Policy,
    ) {
        for command in &transition.commands {
            self.commands.push((saga_id, *command));
        }
        for fact in &transition.facts {
            self.events.push(fact_event(*fact, self.in_charge));
        }
        if let Some(change) = transition.order {
            self.change = Some(change);
        }
        if transition.start_cancellation {
            let (cancellation, first) = Saga::cancellation(now, policy);
            let id = Uuid::now_v7();
            self.in_charge = id;
            for command in &first.commands {
                self.commands.push((id, *command));
            }
            for fact in &first.facts {
                self.events.push(fact_event(*fact, id));
            }
            if let Some(change) = first.order {
                self.change = Some(change);
            }
            self.sagas.insert(
                id,
                (
                    0,
                    Touched {
                        saga: cancellation,
                        is_new: true,
                        changed: true,
                        finished: first.order,
                    },
                ),
            );
        }
    }

    fn moves_stock(&self) -> bool {
        self.commands.iter().any(|(_, c)| c.action.moves_stock())
    }

    fn changed(&self) -> bool {
        self.sagas.values().any(|(_, t)| t.changed)
    }

    /// Adds this order's writes and sends to the batch's.
    fn record<'a>(
        &'a self,
        lines: &HashMap<Uuid, Vec<OrderLine>>,
        now: DateTime<Utc>,
        sends: &mut Sends,
        writes: &mut Writes<'a>,
    ) {
        for (saga_id, event, message_id, stale) in &self.log {
            writes.log.push(LogEntry {
                saga_id: *saga_id,
                event,
                message_id: *message_id,
                stale: *stale,
            });
        }
        if !self.changed() {
            return;
        }
        for (&id, (seen, touched)) in &self.sagas {
            if touched.is_new {
                writes.started.push((id, self.order.id, &touched.saga));
            } else if touched.changed {
                writes.saves.push((id, &touched.saga, *seen));
            }
        }
        let order = &self.order;
        let to = Addressee {
            order_id: order.id,
            saga_id: self.in_charge,
            customer_id: order.customer_id,
            amount_minor: order.total_minor,
            lines: lines.get(&order.id).map_or(&[], Vec::as_slice),
        };
        let trace = self
            .trace
            .clone()
            .unwrap_or_else(messaging::new_traceparent);
        let last_seq = sends.record_transition(
            &to,
            order.last_seq,
            &self.commands,
            self.events.clone(),
            now,
            &trace,
        );
        writes.orders.push(OrderRecord {
            id: order.id,
            seen_version: order.version,
            change: self.change,
            saga_id: self.in_charge,
            last_seq,
        });
    }
}
