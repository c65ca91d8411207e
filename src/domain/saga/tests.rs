//! The saga against a model of its participants and of an unreliable network.
//!
//! Participants follow the same rules as `reserve.lua`/`release.lua` and the payments role:
//! first outcome wins per order, and an undo that arrives first leaves a tombstone. The network
//! delivers in any order, duplicates and loses messages; the customer may cancel at any moment;
//! deadlines fire whenever the test says so. The orchestrator may also take several messages as
//! one batch: applied to copies of the sagas in delivery order and written back at once, unless
//! another event moved one of those sagas meanwhile (a lost version race), and then each message
//! is applied again on its own. Whatever happens, once the network is drained every saga has
//! ended, stock and money are conserved, and the order's status agrees with them; a cancel the
//! API recorded ends the order `cancelled/cancelled_by_customer`.

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;

const STOCK: i64 = 5;
const BALANCE: i64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    None,
    Reserved,
    Rejected,
    Released,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paid {
    None,
    Charged,
    Declined,
    Voided,
    Refunded,
}

#[derive(Debug, Clone, Copy)]
enum Message {
    /// A command from saga `.0` (0 = checkout, 1 = cancellation) to a participant.
    Command(usize, Action),
    Reply(usize, Reply),
    Cancel,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Deliver(usize),
    Duplicate(usize),
    Lose(usize),
    Cancel,
    Tick,
    /// The orchestrator takes up to `size` of its messages as one batch; with `race`, the
    /// message at `racer` is delivered while the batch is being decided.
    Batch {
        size: usize,
        race: bool,
        racer: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<usize>().prop_map(Op::Deliver),
        2 => any::<usize>().prop_map(Op::Duplicate),
        1 => any::<usize>().prop_map(Op::Lose),
        1 => Just(Op::Cancel),
        1 => Just(Op::Tick),
        3 => (2..=4usize, any::<bool>(), any::<usize>())
            .prop_map(|(size, race, racer)| Op::Batch { size, race, racer }),
    ]
}

struct World {
    policy: Policy,
    now: DateTime<Utc>,
    sagas: Vec<Saga>,
    order: OrderChange,
    /// The API recorded the customer's cancel on the order (it accepts one, while the order has
    /// not ended); every saga is loaded with it from then on.
    cancel_recorded: bool,
    network: Vec<Message>,
    quantity: i64,
    total: i64,
    available: i64,
    held: Held,
    balance: i64,
    paid: Paid,
}

impl World {
    fn new(quantity: i64, total: i64) -> Self {
        let policy = Policy::default();
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
        let (saga, t) = Saga::checkout(now, &policy);
        let mut world = Self {
            policy,
            now,
            sagas: vec![saga],
            order: OrderChange {
                status: OrderStatus::Pending,
                reason: None,
            },
            cancel_recorded: false,
            network: Vec::new(),
            quantity,
            total,
            available: STOCK,
            held: Held::None,
            balance: BALANCE,
            paid: Paid::None,
        };
        world.record(0, t);
        world
    }

    fn record(&mut self, saga: usize, t: Transition) {
        for c in &t.commands {
            self.network.push(Message::Command(saga, c.action));
        }
        if let Some(change) = t.order {
            assert!(
                !self.order.status.is_final(),
                "a {:?} order changed again",
                self.order.status
            );
            self.order = change;
        }
        if t.start_cancellation {
            assert_eq!(self.sagas.len(), 1, "a second cancellation saga");
            let (saga, t) = Saga::cancellation(self.now, &self.policy);
            self.sagas.push(saga);
            self.record(1, t);
        }
    }

    fn apply(&mut self, saga: usize, event: SagaEvent) {
        self.sagas[saga].cancel_requested |= self.cancel_recorded;
        let t = self.sagas[saga].apply(event, self.now, &self.policy);
        self.record(saga, t);
    }

    fn participate(&mut self, action: Action) -> Reply {
        match action {
            Action::ReserveStock => match self.held {
                Held::None if self.available >= self.quantity => {
                    self.available -= self.quantity;
                    self.held = Held::Reserved;
                    Reply::StockReserved
                }
                Held::None => {
                    self.held = Held::Rejected;
                    Reply::StockRejected {
                        reason: OrderReason::InsufficientStock,
                    }
                }
                Held::Reserved => Reply::StockReserved,
                Held::Rejected | Held::Released => Reply::StockRejected {
                    reason: OrderReason::InsufficientStock,
                },
            },
            Action::ReleaseStock => {
                if self.held == Held::Reserved {
                    self.available += self.quantity;
                }
                self.held = Held::Released;
                Reply::StockReleased
            }
            Action::ChargePayment => match self.paid {
                Paid::None if self.balance >= self.total => {
                    self.balance -= self.total;
                    self.paid = Paid::Charged;
                    Reply::PaymentCharged
                }
                Paid::None => {
                    self.paid = Paid::Declined;
                    Reply::PaymentDeclined {
                        reason: OrderReason::InsufficientFunds,
                    }
                }
                Paid::Charged => Reply::PaymentCharged,
                Paid::Declined | Paid::Voided | Paid::Refunded => Reply::PaymentDeclined {
                    reason: OrderReason::InsufficientFunds,
                },
            },
            Action::RefundPayment => {
                match self.paid {
                    Paid::Charged => {
                        self.balance += self.total;
                        self.paid = Paid::Refunded;
                    }
                    Paid::None => self.paid = Paid::Voided,
                    Paid::Declined | Paid::Voided | Paid::Refunded => {}
                }
                Reply::PaymentRefunded
            }
        }
    }

    fn deliver(&mut self, message: Message) {
        match message {
            Message::Command(saga, action) => {
                let reply = self.participate(action);
                self.network.push(Message::Reply(saga, reply));
            }
            Message::Reply(saga, reply) => self.apply(saga, SagaEvent::Reply(reply)),
            // The orchestrator applies a cancel to the order's newest saga.
            Message::Cancel => self.apply(self.sagas.len() - 1, SagaEvent::Cancel),
        }
    }

    fn tick(&mut self) {
        self.now += Duration::hours(1);
        for saga in 0..self.sagas.len() {
            self.apply(saga, SagaEvent::DeadlinePassed);
        }
    }

    fn step(&mut self, op: Op) {
        let n = self.network.len();
        match op {
            Op::Deliver(i) if n > 0 => {
                let m = self.network.remove(i % n);
                self.deliver(m);
            }
            Op::Duplicate(i) if n > 0 => {
                let m = self.network[i % n];
                self.deliver(m);
            }
            // A command or a reply may be lost (its participant died before answering; the
            // deadline sends it again). The customer's cancel is not: it is in the outbox
            // before the API answers, and the orchestrator never dead-letters it.
            Op::Lose(i) if n > 0 && !matches!(self.network[i % n], Message::Cancel) => {
                self.network.remove(i % n);
            }
            // The API accepts one cancel, and none for an order that has ended.
            Op::Cancel if !self.cancel_recorded && !self.order.status.is_final() => {
                self.cancel_recorded = true;
                self.network.push(Message::Cancel);
            }
            Op::Tick => self.tick(),
            Op::Batch { size, race, racer } => self.batch(size, race, racer),
            _ => {}
        }
    }

    /// The orchestrator's batch: up to `size` replies and cancels, decided on copies of the
    /// sagas in delivery order, written back together; or, if `race` delivers a message that
    /// moves one of those sagas first, dropped and each message decided again on its own.
    fn batch(&mut self, size: usize, race: bool, racer: usize) {
        let mut taken = Vec::new();
        let mut i = 0;
        while i < self.network.len() && taken.len() < size {
            if matches!(self.network[i], Message::Reply(..) | Message::Cancel) {
                taken.push(self.network.remove(i));
            } else {
                i += 1;
            }
        }
        let mut copies = self.sagas.clone();
        let mut decided = Vec::new();
        for &message in &taken {
            let saga = match message {
                Message::Reply(saga, _) => saga,
                _ => copies.len() - 1,
            };
            let event = match message {
                Message::Reply(_, reply) => SagaEvent::Reply(reply),
                _ => SagaEvent::Cancel,
            };
            copies[saga].cancel_requested |= self.cancel_recorded;
            decided.push((saga, copies[saga].apply(event, self.now, &self.policy)));
        }
        if race && !self.network.is_empty() {
            let before = self.sagas.clone();
            let m = self.network.remove(racer % self.network.len());
            self.deliver(m);
            let moved = decided
                .iter()
                .any(|(saga, _)| self.sagas.get(*saga) != before.get(*saga));
            if moved {
                // Lost the version race: nothing of the batch is written.
                for m in taken {
                    self.deliver(m);
                }
                return;
            }
        }
        for (saga, copy) in copies.into_iter().enumerate() {
            self.sagas[saga] = copy;
        }
        for (saga, transition) in decided {
            self.record(saga, transition);
        }
    }

    /// Delivers everything, firing deadlines whenever the network falls quiet, until every saga
    /// has ended and nothing is in flight.
    fn drain(&mut self) {
        for _ in 0..100 {
            while !self.network.is_empty() {
                let m = self.network.remove(0);
                self.deliver(m);
            }
            if self.sagas.iter().all(|s| s.state.is_terminal()) {
                return;
            }
            self.tick();
        }
        panic!("the sagas never ended: {:#?}", self.sagas);
    }

    fn check(&self) {
        for saga in &self.sagas {
            assert!(saga.state.is_terminal(), "{saga:#?}");
            assert!(saga.in_flight().is_none() && saga.deadline.is_none());
        }
        let held = if self.held == Held::Reserved {
            self.quantity
        } else {
            0
        };
        assert_eq!(self.available + held, STOCK, "stock is conserved");
        let charged = if self.paid == Paid::Charged {
            self.total
        } else {
            0
        };
        assert_eq!(self.balance + charged, BALANCE, "money is conserved");
        match self.order.status {
            OrderStatus::Confirmed => {
                assert_eq!((self.held, self.paid), (Held::Reserved, Paid::Charged));
                assert!(self.order.reason.is_none());
            }
            OrderStatus::Rejected | OrderStatus::Cancelled => {
                assert_ne!(self.held, Held::Reserved, "a dead order holds stock");
                assert_ne!(self.paid, Paid::Charged, "a dead order kept the money");
                assert!(self.order.reason.is_some());
            }
            OrderStatus::Pending => panic!("the order is still pending"),
        }
        if self.cancel_recorded {
            assert_eq!(
                (self.order.status, self.order.reason),
                (
                    OrderStatus::Cancelled,
                    Some(OrderReason::CancelledByCustomer)
                ),
                "a recorded cancel wins"
            );
        }
        if self.order.status == OrderStatus::Rejected {
            assert_eq!(
                self.held,
                Held::Rejected,
                "rejected means nothing needed undoing"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_saga_ends_with_stock_and_money_conserved(
        quantity in 1..=7i64,
        total in 0..=1_500i64,
        ops in prop::collection::vec(op(), 0..60),
    ) {
        let mut world = World::new(quantity, total);
        for op in ops {
            world.step(op);
        }
        world.drain();
        world.check();
        // Whatever is still in flight after the end (duplicates) changes nothing.
        let late: Vec<_> = world.network.drain(..).collect();
        for m in late {
            world.deliver(m);
        }
        world.drain();
        world.check();
    }
}

fn reply(world: &mut World, r: Reply) {
    world.apply(0, SagaEvent::Reply(r));
}

#[test]
fn the_happy_path_confirms() {
    let mut w = World::new(2, 100);
    w.drain();
    w.check();
    assert_eq!(w.order.status, OrderStatus::Confirmed);
    let steps: Vec<_> = w.sagas[0].steps.iter().map(|s| s.status).collect();
    assert_eq!(steps, [StepStatus::Succeeded; 3]);
    assert_eq!(w.sagas[0].state, SagaState::Completed);
}

#[test]
fn lack_of_stock_rejects_without_compensation() {
    let mut w = World::new(STOCK + 1, 100);
    w.drain();
    w.check();
    assert_eq!(w.order.status, OrderStatus::Rejected);
    assert_eq!(w.order.reason, Some(OrderReason::InsufficientStock));
    assert_eq!(w.sagas[0].state, SagaState::Failed);
    let steps: Vec<_> = w.sagas[0].steps.iter().map(|s| s.status).collect();
    assert_eq!(
        steps,
        [StepStatus::Failed, StepStatus::Skipped, StepStatus::Skipped]
    );
}

#[test]
fn a_declined_payment_releases_the_stock() {
    let mut w = World::new(1, BALANCE + 1);
    w.drain();
    w.check();
    assert_eq!(w.order.status, OrderStatus::Cancelled);
    assert_eq!(w.order.reason, Some(OrderReason::InsufficientFunds));
    assert_eq!(w.sagas[0].state, SagaState::Compensated);
    assert_eq!(w.sagas[0].steps[0].status, StepStatus::Compensated);
    assert_eq!(w.held, Held::Released);
}

#[test]
fn cancelling_a_confirmed_order_runs_a_cancellation_saga() {
    let mut w = World::new(1, 10);
    w.drain();
    w.step(Op::Cancel);
    w.drain();
    w.check();
    assert_eq!(w.order.status, OrderStatus::Cancelled);
    assert_eq!(w.order.reason, Some(OrderReason::CancelledByCustomer));
    assert_eq!(w.sagas[1].kind, SagaKind::Cancellation);
    assert_eq!(w.sagas[1].state, SagaState::Completed);
    assert_eq!((w.held, w.paid), (Held::Released, Paid::Refunded));
}

#[test]
fn a_reply_for_a_step_no_longer_in_flight_is_stale() {
    let mut w = World::new(1, 10);
    reply(&mut w, Reply::StockReserved);
    let before = w.sagas[0].clone();
    let t = w.sagas[0].apply(SagaEvent::Reply(Reply::StockReserved), w.now, &w.policy);
    assert!(t.stale && t.commands.is_empty() && t.facts.is_empty());
    assert_eq!(w.sagas[0], before);
    let t = w.sagas[0].apply(SagaEvent::Reply(Reply::PaymentRefunded), w.now, &w.policy);
    assert!(t.stale);
}

#[test]
fn deadlines_retry_with_growing_waits_then_time_out() {
    let policy = Policy::default();
    let mut now = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
    let (mut saga, _) = Saga::checkout(now, &policy);
    let early = saga.apply(SagaEvent::DeadlinePassed, now, &policy);
    assert!(early.stale, "a deadline not yet reached");
    let mut waits = Vec::new();
    for attempt in 2..=policy.max_attempts {
        let due = saga.deadline.unwrap();
        waits.push(due - now);
        now = due;
        let t = saga.apply(SagaEvent::DeadlinePassed, now, &policy);
        assert_eq!(
            t.commands,
            [Command {
                action: Action::ReserveStock,
                attempt
            }]
        );
        assert_eq!(t.retried, Some(StepName::ReserveStock));
    }
    waits.push(saga.deadline.unwrap() - now);
    assert!(waits.windows(2).all(|w| w[0] < w[1]), "{waits:?}");
    now = saga.deadline.unwrap();
    let t = saga.apply(SagaEvent::DeadlinePassed, now, &policy);
    assert_eq!(saga.reason, Some(OrderReason::TimedOut));
    assert_eq!(saga.state, SagaState::Compensating);
    assert_eq!(
        t.commands,
        [Command {
            action: Action::ReleaseStock,
            attempt: 1
        }]
    );
}

#[test]
fn names_agree_with_their_json() {
    let json = |v: serde_json::Value| v.as_str().unwrap().to_owned();
    for k in [SagaKind::Checkout, SagaKind::Cancellation] {
        assert_eq!(k.as_str(), json(serde_json::to_value(k).unwrap()));
    }
    for s in [
        SagaState::Running,
        SagaState::Compensating,
        SagaState::Completed,
        SagaState::Compensated,
        SagaState::Failed,
    ] {
        assert_eq!(s.as_str(), json(serde_json::to_value(s).unwrap()));
    }
    for s in StepStatus::ALL {
        assert_eq!(s.as_str(), json(serde_json::to_value(s).unwrap()));
    }
}

/// Delivers the network's messages at these positions, one after another.
fn deliver_at(w: &mut World, positions: &[usize]) {
    for &i in positions {
        let m = w.network.remove(i);
        w.deliver(m);
    }
}

#[test]
fn a_cancel_recorded_while_a_failure_is_compensated_ends_cancelled_by_the_customer() {
    let mut w = World::new(1, BALANCE + 1);
    // reserve, its reply, the declined charge, its reply: the saga now releases the stock.
    deliver_at(&mut w, &[0, 0, 0, 0]);
    assert_eq!(w.sagas[0].state, SagaState::Compensating);
    assert_eq!(w.sagas[0].reason, Some(OrderReason::InsufficientFunds));
    w.step(Op::Cancel);
    // The release and its reply overtake the cancel's own message.
    deliver_at(&mut w, &[0, 1]);
    assert_eq!(
        (w.order.status, w.order.reason),
        (
            OrderStatus::Cancelled,
            Some(OrderReason::CancelledByCustomer)
        )
    );
    w.drain();
    w.check();
}

#[test]
fn a_refusal_that_overtakes_a_recorded_cancel_still_ends_cancelled_by_the_customer() {
    let mut w = World::new(STOCK + 1, 100);
    w.step(Op::Cancel);
    // The refused reserve's reply reaches the saga before the cancel's message.
    deliver_at(&mut w, &[0, 1]);
    assert_eq!(
        w.sagas[0].state,
        SagaState::Compensating,
        "{:?}",
        w.sagas[0]
    );
    w.drain();
    w.check();
    assert_eq!(w.order.status, OrderStatus::Cancelled);
    assert_eq!(w.order.reason, Some(OrderReason::CancelledByCustomer));
    assert_eq!(w.held, Held::Released);
}
