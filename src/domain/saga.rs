//! The saga state machine: pure code, no I/O.
//!
//! A saga is a list of steps run in order. A step is either remote (a command to a participant,
//! answered by a reply) or local (done by the orchestrator the moment it is reached). When a step
//! fails, times out or the customer cancels, every step that succeeded — and the one still in
//! flight, whose effect may yet land — is compensated, newest first. Participants keep
//! tombstones (`release.lua`, a voided payment), so compensating a step whose command has not
//! arrived yet is safe: the late command is refused.
//!
//! [`Saga::apply`] takes one event and returns a [`Transition`]: the commands to send, the facts
//! for the order's history and the order's new status, if it changed. The orchestrator stores the
//! result under the saga's version; this module decides, it never writes.
//!
//! **A recorded cancel wins.** The API records a customer's cancel on the order while the order
//! is still `pending` or `confirmed`, and only then; from that moment the order must end
//! `cancelled/cancelled_by_customer`, whatever failure its saga meets afterwards or was already
//! compensating. The saga is loaded with that flag ([`Saga::cancel_requested`]), so the first
//! event that reaches it — the cancel's own message, or a reply or deadline that overtook it —
//! takes the cancel before anything else: a running checkout stops and undoes what it did, a
//! compensating one keeps undoing under the customer's reason, a completed one starts its
//! cancellation saga. Interrupting always compensates the step in flight, so a checkout that took
//! a cancel never ends `rejected`. The orchestrator writes the order under its version and the
//! API records the cancel with a version bump, so no transition can settle the order without
//! having seen a cancel recorded before it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::order::{OrderReason, OrderStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaKind {
    /// Reserve stock, charge the wallet, confirm the order.
    Checkout,
    /// Undo a confirmed order: refund, release the stock, cancel the order.
    Cancellation,
}

impl SagaKind {
    pub const ALL: [Self; 2] = [Self::Checkout, Self::Cancellation];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The name used in JSON, in Postgres and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkout => "checkout",
            Self::Cancellation => "cancellation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaState {
    Running,
    Compensating,
    Completed,
    Compensated,
    /// Ended before anything needed undoing.
    Failed,
}

impl SagaState {
    pub const ALL: [Self; 5] = [
        Self::Running,
        Self::Compensating,
        Self::Completed,
        Self::Compensated,
        Self::Failed,
    ];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// The name used in JSON and in Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    ReserveStock,
    ChargePayment,
    ConfirmOrder,
    RefundPayment,
    ReleaseStock,
    CancelOrder,
}

impl StepName {
    /// The participant command that performs the step; `None` for a local step.
    pub fn action(self) -> Option<Action> {
        match self {
            Self::ReserveStock => Some(Action::ReserveStock),
            Self::ChargePayment => Some(Action::ChargePayment),
            Self::RefundPayment => Some(Action::RefundPayment),
            Self::ReleaseStock => Some(Action::ReleaseStock),
            Self::ConfirmOrder | Self::CancelOrder => None,
        }
    }

    /// The command that undoes the step, for steps that can be undone.
    pub fn compensation(self) -> Option<Action> {
        match self {
            Self::ReserveStock => Some(Action::ReleaseStock),
            Self::ChargePayment => Some(Action::RefundPayment),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReserveStock => "reserve_stock",
            Self::ChargePayment => "charge_payment",
            Self::ConfirmOrder => "confirm_order",
            Self::RefundPayment => "refund_payment",
            Self::ReleaseStock => "release_stock",
            Self::CancelOrder => "cancel_order",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Compensating,
    Compensated,
    Skipped,
}

impl StepStatus {
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Compensating,
        Self::Compensated,
        Self::Skipped,
    ];

    /// The name used in JSON, in Postgres and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
            Self::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: StepName,
    pub status: StepStatus,
    /// Commands sent for the step itself (1 + retries).
    pub attempts: u32,
    /// Commands sent to undo it.
    #[serde(default)]
    pub compensation_attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

impl Step {
    fn new(name: StepName) -> Self {
        Self {
            name,
            status: StepStatus::Pending,
            attempts: 0,
            compensation_attempts: 0,
            started_at: None,
            finished_at: None,
            error: None,
        }
    }
}

/// A participant command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    ReserveStock,
    ReleaseStock,
    ChargePayment,
    RefundPayment,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReserveStock => "reserve_stock",
            Self::ReleaseStock => "release_stock",
            Self::ChargePayment => "charge_payment",
            Self::RefundPayment => "refund_payment",
        }
    }

    /// Does the command act on stock (and so carry the order's lines)?
    pub fn moves_stock(self) -> bool {
        matches!(self, Self::ReserveStock | Self::ReleaseStock)
    }
}

/// A command to send, with its attempt number (1 for the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    pub action: Action,
    pub attempt: u32,
}

/// A participant's answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    StockReserved,
    StockRejected { reason: OrderReason },
    StockReleased,
    PaymentCharged,
    PaymentDeclined { reason: OrderReason },
    PaymentRefunded,
}

impl Reply {
    /// The command this answers.
    pub fn action(self) -> Action {
        match self {
            Self::StockReserved | Self::StockRejected { .. } => Action::ReserveStock,
            Self::StockReleased => Action::ReleaseStock,
            Self::PaymentCharged | Self::PaymentDeclined { .. } => Action::ChargePayment,
            Self::PaymentRefunded => Action::RefundPayment,
        }
    }

    /// Why the step failed, for a refusal.
    pub fn refusal(self) -> Option<OrderReason> {
        match self {
            Self::StockRejected { reason } | Self::PaymentDeclined { reason } => Some(reason),
            _ => None,
        }
    }

    pub fn fact(self) -> FactKind {
        match self {
            Self::StockReserved => FactKind::StockReserved,
            Self::StockRejected { .. } => FactKind::StockRejected,
            Self::StockReleased => FactKind::StockReleased,
            Self::PaymentCharged => FactKind::PaymentCharged,
            Self::PaymentDeclined { .. } => FactKind::PaymentDeclined,
            Self::PaymentRefunded => FactKind::PaymentRefunded,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.fact().as_str()
    }
}

/// The kinds of event in an order's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactKind {
    OrderPlaced,
    CancelRequested,
    StockReserved,
    StockRejected,
    StockReleased,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    OrderConfirmed,
    OrderRejected,
    OrderCancelled,
    StepRetried,
    StepTimedOut,
}

impl FactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderPlaced => "order_placed",
            Self::CancelRequested => "cancel_requested",
            Self::StockReserved => "stock_reserved",
            Self::StockRejected => "stock_rejected",
            Self::StockReleased => "stock_released",
            Self::PaymentCharged => "payment_charged",
            Self::PaymentDeclined => "payment_declined",
            Self::PaymentRefunded => "payment_refunded",
            Self::OrderConfirmed => "order_confirmed",
            Self::OrderRejected => "order_rejected",
            Self::OrderCancelled => "order_cancelled",
            Self::StepRetried => "step_retried",
            Self::StepTimedOut => "step_timed_out",
        }
    }
}

/// Something the saga recorded, for the order's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact {
    pub kind: FactKind,
    pub step: Option<StepName>,
    pub attempt: Option<u32>,
    pub reason: Option<OrderReason>,
}

impl Fact {
    fn new(kind: FactKind) -> Self {
        Self {
            kind,
            step: None,
            attempt: None,
            reason: None,
        }
    }
}

/// What drives a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaEvent {
    Reply(Reply),
    /// The customer asked to cancel the order.
    Cancel,
    /// The sweeper found the saga's deadline in the past.
    DeadlinePassed,
}

/// Step timeouts and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long the first attempt of a step may take; each retry doubles it, up to `max_wait`.
    pub step_timeout: Duration,
    pub max_wait: Duration,
    /// Attempts of a forward step before the saga gives up and compensates (`timed_out`).
    /// Compensations never give up: undoing must finish for the saga to end.
    pub max_attempts: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            step_timeout: Duration::seconds(10),
            max_wait: Duration::seconds(60),
            max_attempts: 3,
        }
    }
}

impl Policy {
    fn wait(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        (self.step_timeout * (1 << doublings)).min(self.max_wait)
    }
}

/// The order's new status, when a transition settles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderChange {
    pub status: OrderStatus,
    pub reason: Option<OrderReason>,
}

/// What one event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transition {
    /// The event did not apply to the saga as it is now (a stale or duplicate reply, a deadline
    /// already met). It is recorded and changes nothing.
    pub stale: bool,
    /// The event itself did not apply, though taking a recorded cancel on its arrival changed
    /// the saga (`stale` is then false): it is recorded as stale all the same.
    pub event_stale: bool,
    pub commands: Vec<Command>,
    pub facts: Vec<Fact>,
    pub order: Option<OrderChange>,
    /// A cancel reached a completed checkout: a cancellation saga must start.
    pub start_cancellation: bool,
    /// The step whose command was sent again after its deadline passed.
    pub retried: Option<StepName>,
}

impl Transition {
    fn stale() -> Self {
        Self {
            stale: true,
            event_stale: true,
            ..Self::default()
        }
    }

    /// This transition followed by `next`, applied to the saga as this one left it.
    fn then(mut self, next: Self) -> Self {
        self.stale &= next.stale;
        self.commands.extend(next.commands);
        self.facts.extend(next.facts);
        self.order = next.order.or(self.order);
        self.start_cancellation |= next.start_cancellation;
        self.retried = next.retried.or(self.retried);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saga {
    pub kind: SagaKind,
    pub state: SagaState,
    pub steps: Vec<Step>,
    /// Why the saga is compensating or failed; on a completed checkout, `cancelled_by_customer`
    /// once its cancellation has been started.
    pub reason: Option<OrderReason>,
    /// The customer's cancel is recorded on the order. Not a column of the saga: the orchestrator
    /// sets it from the order it locked before every event, so the saga learns of the cancel
    /// from whichever event comes first.
    pub cancel_requested: bool,
    /// When the step in flight is due; `None` once the saga has ended.
    pub deadline: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Saga {
    /// A checkout saga, started: its first command is `reserve_stock`.
    pub fn checkout(now: DateTime<Utc>, policy: &Policy) -> (Self, Transition) {
        Self::start(
            SagaKind::Checkout,
            &[
                StepName::ReserveStock,
                StepName::ChargePayment,
                StepName::ConfirmOrder,
            ],
            now,
            policy,
        )
    }

    /// The saga that undoes a confirmed order: refund, release, cancel.
    pub fn cancellation(now: DateTime<Utc>, policy: &Policy) -> (Self, Transition) {
        Self::start(
            SagaKind::Cancellation,
            &[
                StepName::RefundPayment,
                StepName::ReleaseStock,
                StepName::CancelOrder,
            ],
            now,
            policy,
        )
    }

    fn start(
        kind: SagaKind,
        steps: &[StepName],
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> (Self, Transition) {
        let mut saga = Self {
            kind,
            state: SagaState::Running,
            steps: steps.iter().copied().map(Step::new).collect(),
            reason: (kind == SagaKind::Cancellation).then_some(OrderReason::CancelledByCustomer),
            cancel_requested: kind == SagaKind::Cancellation,
            deadline: None,
            started_at: now,
            finished_at: None,
        };
        let mut transition = Transition::default();
        saga.advance(0, now, policy, &mut transition);
        (saga, transition)
    }

    pub fn apply(&mut self, event: SagaEvent, now: DateTime<Utc>, policy: &Policy) -> Transition {
        if event == SagaEvent::Cancel {
            self.cancel_requested = true;
        }
        // A recorded cancel is taken first, by whichever event finds it not yet taken; the event
        // itself then applies to the saga as the cancel left it.
        let taken = if self.cancel_requested && !self.cancel_taken() {
            self.take_cancel(now, policy)
        } else {
            Transition::stale()
        };
        let applied = match event {
            SagaEvent::Reply(reply) => self.on_reply(reply, now, policy),
            // Taken above, or by an event before it.
            SagaEvent::Cancel => return taken,
            SagaEvent::DeadlinePassed => self.on_deadline(now, policy),
        };
        let event_stale = applied.stale;
        Transition {
            event_stale,
            ..taken.then(applied)
        }
    }

    /// Whether nothing is left for a customer's cancel to do: a cancellation saga is the cancel,
    /// a checkout took it once its reason says so, and an ended checkout that did not take one
    /// was settled before any cancel was recorded (the API refuses it then).
    fn cancel_taken(&self) -> bool {
        self.kind == SagaKind::Cancellation
            || self.reason == Some(OrderReason::CancelledByCustomer)
            || matches!(self.state, SagaState::Failed | SagaState::Compensated)
    }

    /// The step with a command in flight, if any (there is at most one).
    pub fn in_flight(&self) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| matches!(s.status, StepStatus::Running | StepStatus::Compensating))
    }

    fn on_reply(&mut self, reply: Reply, now: DateTime<Utc>, policy: &Policy) -> Transition {
        let Some(i) = self.in_flight() else {
            return Transition::stale();
        };
        let step = &self.steps[i];
        let mut t = Transition::default();
        match step.status {
            StepStatus::Running if step.name.action() == Some(reply.action()) => {
                let mut fact = Fact::new(reply.fact());
                fact.step = Some(step.name);
                fact.reason = reply.refusal();
                t.facts.push(fact);
                let step = &mut self.steps[i];
                step.finished_at = Some(now);
                match reply.refusal() {
                    None => {
                        step.status = StepStatus::Succeeded;
                        self.advance(i + 1, now, policy, &mut t);
                    }
                    Some(reason) => {
                        step.status = StepStatus::Failed;
                        step.error = Some(reason.as_str().to_owned());
                        self.reason = Some(reason);
                        self.skip_pending();
                        self.compensate_next(now, policy, &mut t);
                    }
                }
            }
            // A compensation cannot be refused: releasing and refunding are always possible.
            StepStatus::Compensating
                if step.name.compensation() == Some(reply.action())
                    && reply.refusal().is_none() =>
            {
                let mut fact = Fact::new(reply.fact());
                fact.step = Some(step.name);
                t.facts.push(fact);
                let step = &mut self.steps[i];
                step.status = StepStatus::Compensated;
                step.finished_at = Some(now);
                self.compensate_next(now, policy, &mut t);
            }
            _ => return Transition::stale(),
        }
        t
    }

    /// The customer's cancel, on a checkout that has not taken it yet.
    fn take_cancel(&mut self, now: DateTime<Utc>, policy: &Policy) -> Transition {
        let mut t = Transition::default();
        match self.state {
            SagaState::Running => {
                self.reason = Some(OrderReason::CancelledByCustomer);
                self.interrupt(now, policy, &mut t);
            }
            // Already undoing a failure: nothing more to send, but the order ends cancelled by
            // the customer, not by the failure.
            SagaState::Compensating => self.reason = Some(OrderReason::CancelledByCustomer),
            SagaState::Completed => {
                self.reason = Some(OrderReason::CancelledByCustomer);
                t.start_cancellation = true;
            }
            SagaState::Failed | SagaState::Compensated => return Transition::stale(),
        }
        t
    }

    fn on_deadline(&mut self, now: DateTime<Utc>, policy: &Policy) -> Transition {
        let (Some(deadline), Some(i)) = (self.deadline, self.in_flight()) else {
            return Transition::stale();
        };
        if now < deadline {
            return Transition::stale();
        }
        let mut t = Transition::default();
        let step = &mut self.steps[i];
        let (action, attempt) = match step.status {
            StepStatus::Running
                if self.kind == SagaKind::Checkout && step.attempts >= policy.max_attempts =>
            {
                step.error = Some(format!("no reply after {} attempts", step.attempts));
                let mut fact = Fact::new(FactKind::StepTimedOut);
                fact.step = Some(step.name);
                fact.attempt = Some(step.attempts);
                t.facts.push(fact);
                self.reason = Some(OrderReason::TimedOut);
                self.interrupt(now, policy, &mut t);
                return t;
            }
            StepStatus::Running => {
                step.attempts += 1;
                (step.name.action(), step.attempts)
            }
            _ => {
                step.compensation_attempts += 1;
                (step.name.compensation(), step.compensation_attempts)
            }
        };
        let action = action.expect("a step in flight has a command");
        let mut fact = Fact::new(FactKind::StepRetried);
        fact.step = Some(step.name);
        fact.attempt = Some(attempt);
        t.facts.push(fact);
        t.retried = Some(step.name);
        t.commands.push(Command { action, attempt });
        self.deadline = Some(now + policy.wait(attempt));
        t
    }

    /// Starts the first pending step from `from`, running local steps on the spot; ends the
    /// saga when none is left.
    fn advance(&mut self, from: usize, now: DateTime<Utc>, policy: &Policy, t: &mut Transition) {
        for step in &mut self.steps[from..] {
            step.started_at = Some(now);
            match step.name.action() {
                Some(action) => {
                    step.status = StepStatus::Running;
                    step.attempts = 1;
                    t.commands.push(Command { action, attempt: 1 });
                    self.deadline = Some(now + policy.wait(1));
                    return;
                }
                None => {
                    step.status = StepStatus::Succeeded;
                    step.finished_at = Some(now);
                }
            }
        }
        let change = match self.kind {
            SagaKind::Checkout => OrderChange {
                status: OrderStatus::Confirmed,
                reason: None,
            },
            SagaKind::Cancellation => OrderChange {
                status: OrderStatus::Cancelled,
                reason: Some(OrderReason::CancelledByCustomer),
            },
        };
        self.finish(SagaState::Completed, change, now, t);
    }

    /// Stops the step in flight — undoing it too, since its effect may still land — and
    /// compensates the rest.
    fn interrupt(&mut self, now: DateTime<Utc>, policy: &Policy, t: &mut Transition) {
        self.skip_pending();
        if let Some(i) = self.in_flight() {
            let step = &mut self.steps[i];
            if step.name.compensation().is_some() {
                self.start_compensation(i, now, policy, t);
                return;
            }
            step.status = StepStatus::Skipped;
        }
        self.compensate_next(now, policy, t);
    }

    /// Sends the first command undoing step `i`, which has a compensation.
    fn start_compensation(
        &mut self,
        i: usize,
        now: DateTime<Utc>,
        policy: &Policy,
        t: &mut Transition,
    ) {
        let step = &mut self.steps[i];
        let action = step
            .name
            .compensation()
            .expect("only steps that can be undone");
        step.status = StepStatus::Compensating;
        step.compensation_attempts = 1;
        t.commands.push(Command { action, attempt: 1 });
        self.state = SagaState::Compensating;
        self.deadline = Some(now + policy.wait(1));
    }

    fn skip_pending(&mut self) {
        for step in &mut self.steps {
            if step.status == StepStatus::Pending {
                step.status = StepStatus::Skipped;
            }
        }
    }

    /// Undoes the newest step that succeeded and can be undone; ends the saga when none is left.
    fn compensate_next(&mut self, now: DateTime<Utc>, policy: &Policy, t: &mut Transition) {
        let next = self
            .steps
            .iter()
            .rposition(|s| s.status == StepStatus::Succeeded && s.name.compensation().is_some());
        if let Some(i) = next {
            self.start_compensation(i, now, policy, t);
            return;
        }
        let reason = self.reason;
        if self
            .steps
            .iter()
            .any(|s| s.status == StepStatus::Compensated)
        {
            let change = OrderChange {
                status: OrderStatus::Cancelled,
                reason,
            };
            self.finish(SagaState::Compensated, change, now, t);
        } else {
            let change = OrderChange {
                status: OrderStatus::Rejected,
                reason,
            };
            self.finish(SagaState::Failed, change, now, t);
        }
    }

    fn finish(
        &mut self,
        state: SagaState,
        change: OrderChange,
        now: DateTime<Utc>,
        t: &mut Transition,
    ) {
        self.state = state;
        self.deadline = None;
        self.finished_at = Some(now);
        let kind = match change.status {
            OrderStatus::Confirmed => FactKind::OrderConfirmed,
            OrderStatus::Rejected => FactKind::OrderRejected,
            _ => FactKind::OrderCancelled,
        };
        let mut fact = Fact::new(kind);
        fact.reason = change.reason;
        t.facts.push(fact);
        t.order = Some(change);
    }
}

#[cfg(test)]
mod tests;
