//! What one transaction sends, built in one place for checkout, cancel and the orchestrator:
//! the commands a transition asks for, addressed with the order's lines and wallet, and the
//! history events it recorded, numbered after the order's last seq. Every order's events of
//! the transaction travel in one `history_batch` message.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::envelope::{
    Envelope, HistoryBatch, HistoryEvent, Message, OrderEvents, Outbound, ParticipantCommand,
};
use crate::domain::{
    order::OrderLine,
    saga::{Command, Fact},
};

/// The order a transition's commands and events are for.
#[derive(Debug, Clone, Copy)]
pub struct Addressee<'a> {
    pub order_id: Uuid,
    /// The saga in charge of the order once the transition is recorded.
    pub saga_id: Uuid,
    pub customer_id: Uuid,
    pub amount_minor: i64,
    /// Needed only for the commands that move stock.
    pub lines: &'a [OrderLine],
}

/// A history event before the transaction numbers it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: &'static str,
    pub data: Value,
}

/// The event a saga's fact is in the order's history.
pub fn fact_event(fact: Fact, saga_id: Uuid) -> NewEvent {
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
    NewEvent {
        kind: fact.kind.as_str(),
        data,
    }
}

/// The outbox rows of one transaction, in the order they were recorded; the history batch last.
#[derive(Debug, Default)]
pub struct Sends {
    outgoing: Vec<Outbound>,
    history: Vec<OrderEvents>,
    /// Saga, order and trace the history batch's envelope names: its first order's.
    history_head: Option<(Uuid, Uuid, String)>,
}

impl Sends {
    /// Sends a message as it is (a participant's reply, a cancel request).
    pub fn send<B: Message>(&mut self, envelope: &Envelope<B>) {
        self.outgoing.push(envelope.outbound());
    }

    /// Records one transition of an order: each `(saga, command)` as the participant's
    /// command, and `events` numbered from `last_seq + 1`, all under `trace`. Returns the
    /// order's last seq after them.
    pub fn record_transition(
        &mut self,
        to: &Addressee<'_>,
        last_seq: i32,
        commands: &[(Uuid, Command)],
        events: Vec<NewEvent>,
        at: DateTime<Utc>,
        trace: &str,
    ) -> i32 {
        for &(saga_id, command) in commands {
            let body =
                ParticipantCommand::of(command.action, to.lines, to.customer_id, to.amount_minor);
            self.outgoing.push(body.outbound(
                saga_id,
                to.order_id,
                command.attempt,
                Some(trace.to_owned()),
            ));
        }
        if events.is_empty() {
            return last_seq;
        }
        let events: Vec<HistoryEvent> = events
            .into_iter()
            .zip(last_seq + 1..)
            .map(|(event, seq)| HistoryEvent {
                seq,
                kind: event.kind.to_owned(),
                at,
                data: event.data,
            })
            .collect();
        let last = events.last().map_or(last_seq, |e| e.seq);
        self.history_head
            .get_or_insert_with(|| (to.saga_id, to.order_id, trace.to_owned()));
        match self.history.iter_mut().find(|o| o.order_id == to.order_id) {
            Some(order) => order.events.extend(events),
            None => self.history.push(OrderEvents {
                order_id: to.order_id,
                events,
            }),
        }
        last
    }

    /// Every row to queue: what was sent and recorded, then one history batch if any order
    /// recorded events.
    pub fn finish(mut self) -> Vec<Outbound> {
        if let Some((saga_id, order_id, trace)) = self.history_head {
            let batch = HistoryBatch {
                orders: self.history,
            };
            self.outgoing.push(
                Envelope::new(saga_id, order_id, 1, batch)
                    .with_traceparent(Some(trace))
                    .outbound(),
            );
        }
        self.outgoing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::saga::{Action, FactKind},
        messaging::envelope::{Exchange, InventoryCommand, SagaReply},
    };

    fn line() -> OrderLine {
        OrderLine {
            product_id: Uuid::now_v7(),
            quantity: 2,
        }
    }

    fn event(kind: &'static str) -> NewEvent {
        NewEvent {
            kind,
            data: json!({}),
        }
    }

    #[test]
    fn events_are_numbered_after_the_last_seq_and_batched_per_transaction() {
        let lines = [line()];
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let to = |order_id| Addressee {
            order_id,
            saga_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            amount_minor: 500,
            lines: &lines,
        };
        let (to_a, to_b) = (to(a), to(b));
        let mut sends = Sends::default();
        let now = Utc::now();
        let reserve = Command {
            action: Action::ReserveStock,
            attempt: 1,
        };
        let last = sends.record_transition(
            &to_a,
            3,
            &[(to_a.saga_id, reserve)],
            vec![event("step_started"), event("step_succeeded")],
            now,
            "trace-a",
        );
        assert_eq!(last, 5);
        assert_eq!(
            sends.record_transition(&to_b, 0, &[], vec![event("order_placed")], now, "trace-b"),
            1
        );
        assert_eq!(
            sends.record_transition(&to_a, last, &[], vec![event("order_confirmed")], now, "t"),
            6
        );
        assert_eq!(
            sends.record_transition(&to_b, 1, &[], Vec::new(), now, "t"),
            1
        );

        let rows = sends.finish();
        assert_eq!(rows.len(), 2, "one command and one history batch");
        let command: Envelope<InventoryCommand> = serde_json::from_str(&rows[0].body).unwrap();
        assert_eq!(
            command.body,
            InventoryCommand::ReserveStock {
                items: lines.to_vec()
            }
        );
        assert_eq!((command.saga_id, command.order_id), (to_a.saga_id, a));
        assert_eq!(command.traceparent.as_deref(), Some("trace-a"));
        assert_eq!(rows[0].exchange, Exchange::Commands);

        let history: Envelope<HistoryBatch> = serde_json::from_str(&rows[1].body).unwrap();
        assert_eq!((history.saga_id, history.order_id), (to_a.saga_id, a));
        let seqs: Vec<(Uuid, Vec<i32>)> = history
            .body
            .orders
            .iter()
            .map(|o| (o.order_id, o.events.iter().map(|e| e.seq).collect()))
            .collect();
        assert_eq!(seqs, [(a, vec![4, 5, 6]), (b, vec![1])]);
    }

    #[test]
    fn a_transaction_without_events_sends_no_history() {
        let mut sends = Sends::default();
        let reply = Envelope::new(Uuid::now_v7(), Uuid::now_v7(), 1, SagaReply::StockReleased);
        sends.send(&reply);
        let rows = sends.finish();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].routing_key, "saga.stock_released");
    }

    #[test]
    fn a_fact_names_its_saga_step_and_reason() {
        let saga = Uuid::now_v7();
        let fact = Fact {
            kind: FactKind::PaymentDeclined,
            step: Some(crate::domain::saga::StepName::ChargePayment),
            attempt: Some(2),
            reason: Some(crate::domain::order::OrderReason::InsufficientFunds),
        };
        let e = fact_event(fact, saga);
        assert_eq!(e.kind, "payment_declined");
        assert_eq!(
            e.data,
            json!({"saga_id": saga, "step": "charge_payment", "attempt": 2, "reason": "insufficient_funds"})
        );
    }
}
