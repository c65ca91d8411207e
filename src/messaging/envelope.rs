//! The messages the roles exchange, one type per queue, and the envelope every one of them
//! travels in.
//!
//! Each queue's consumer decodes only its own type, so a message that reached the wrong queue
//! fails to decode and is dead-lettered with serde's reason, before any role code runs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::domain::{
    order::{OrderLine, OrderReason},
    saga::{Action, Reply, SagaEvent},
};

/// A message type: the body of one queue's envelopes.
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The exchange its messages go to, and the first word of their routing keys (what the
    /// queue binds to).
    const ROUTE: (Exchange, &'static str);

    /// The `type` tag, also the AMQP `type` property.
    fn kind(&self) -> &'static str;

    /// Exchange and routing key: `{ROUTE prefix}.{kind}`.
    fn route(&self) -> (Exchange, String) {
        (Self::ROUTE.0, format!("{}.{}", Self::ROUTE.1, self.kind()))
    }

    /// Messages nothing would send again if they were dead-lettered: a command is resent when
    /// its step's deadline passes, and a reply with it, but a cancel or a history batch is sent
    /// once. Transient failures retry these for as long as it takes.
    fn is_sent_once(&self) -> bool {
        false
    }
}

/// What the inventory role is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InventoryCommand {
    ReserveStock { items: Vec<OrderLine> },
    ReleaseStock { items: Vec<OrderLine> },
}

impl Message for InventoryCommand {
    const ROUTE: (Exchange, &'static str) = (Exchange::Commands, "inventory");

    fn kind(&self) -> &'static str {
        match self {
            Self::ReserveStock { .. } => "reserve_stock",
            Self::ReleaseStock { .. } => "release_stock",
        }
    }
}

/// What the payments role is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PaymentCommand {
    ChargePayment {
        customer_id: Uuid,
        amount_minor: i64,
    },
    RefundPayment {
        customer_id: Uuid,
    },
}

impl PaymentCommand {
    pub fn customer_id(&self) -> Uuid {
        match *self {
            Self::ChargePayment { customer_id, .. } | Self::RefundPayment { customer_id } => {
                customer_id
            }
        }
    }
}

impl Message for PaymentCommand {
    const ROUTE: (Exchange, &'static str) = (Exchange::Commands, "payments");

    fn kind(&self) -> &'static str {
        match self {
            Self::ChargePayment { .. } => "charge_payment",
            Self::RefundPayment { .. } => "refund_payment",
        }
    }
}

/// What the orchestrator hears: a participant's reply, or a customer's cancel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SagaReply {
    StockReserved,
    StockRejected { reason: OrderReason },
    StockReleased,
    PaymentCharged,
    PaymentDeclined { reason: OrderReason },
    PaymentRefunded,
    CancelRequested,
}

impl SagaReply {
    /// The event this message is to its saga.
    pub fn event(self) -> SagaEvent {
        SagaEvent::Reply(match self {
            Self::StockReserved => Reply::StockReserved,
            Self::StockRejected { reason } => Reply::StockRejected { reason },
            Self::StockReleased => Reply::StockReleased,
            Self::PaymentCharged => Reply::PaymentCharged,
            Self::PaymentDeclined { reason } => Reply::PaymentDeclined { reason },
            Self::PaymentRefunded => Reply::PaymentRefunded,
            Self::CancelRequested => return SagaEvent::Cancel,
        })
    }
}

impl From<Reply> for SagaReply {
    fn from(reply: Reply) -> Self {
        match reply {
            Reply::StockReserved => Self::StockReserved,
            Reply::StockRejected { reason } => Self::StockRejected { reason },
            Reply::StockReleased => Self::StockReleased,
            Reply::PaymentCharged => Self::PaymentCharged,
            Reply::PaymentDeclined { reason } => Self::PaymentDeclined { reason },
            Reply::PaymentRefunded => Self::PaymentRefunded,
        }
    }
}

impl Message for SagaReply {
    const ROUTE: (Exchange, &'static str) = (Exchange::Events, "saga");

    fn kind(&self) -> &'static str {
        match self {
            Self::StockReserved => "stock_reserved",
            Self::StockRejected { .. } => "stock_rejected",
            Self::StockReleased => "stock_released",
            Self::PaymentCharged => "payment_charged",
            Self::PaymentDeclined { .. } => "payment_declined",
            Self::PaymentRefunded => "payment_refunded",
            Self::CancelRequested => "cancel_requested",
        }
    }

    fn is_sent_once(&self) -> bool {
        matches!(self, Self::CancelRequested)
    }
}

/// One event of an order's history, numbered by the transaction that recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub seq: i32,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// The history events one transaction recorded for one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderEvents {
    pub order_id: Uuid,
    pub events: Vec<HistoryEvent>,
}

/// Every history event one transaction recorded, for every order it decided: one message per
/// transaction, not one per order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "history_batch")]
pub struct HistoryBatch {
    pub orders: Vec<OrderEvents>,
}

impl Message for HistoryBatch {
    const ROUTE: (Exchange, &'static str) = (Exchange::Events, "history");

    fn kind(&self) -> &'static str {
        "history_batch"
    }

    fn is_sent_once(&self) -> bool {
        true
    }
}

/// A saga action as the command its participant takes.
#[derive(Debug, Clone, PartialEq)]
pub enum ParticipantCommand {
    Inventory(InventoryCommand),
    Payment(PaymentCommand),
}

impl ParticipantCommand {
    pub fn of(action: Action, lines: &[OrderLine], customer_id: Uuid, amount_minor: i64) -> Self {
        match action {
            Action::ReserveStock => Self::Inventory(InventoryCommand::ReserveStock {
                items: lines.to_vec(),
            }),
            Action::ReleaseStock => Self::Inventory(InventoryCommand::ReleaseStock {
                items: lines.to_vec(),
            }),
            Action::ChargePayment => Self::Payment(PaymentCommand::ChargePayment {
                customer_id,
                amount_minor,
            }),
            Action::RefundPayment => Self::Payment(PaymentCommand::RefundPayment { customer_id }),
        }
    }

    /// The command as an outbox row, in an envelope of its own.
    pub fn outbound(
        self,
        saga_id: Uuid,
        order_id: Uuid,
        attempt: u32,
        traceparent: Option<String>,
    ) -> Outbound {
        match self {
            Self::Inventory(body) => Envelope::new(saga_id, order_id, attempt, body)
                .with_traceparent(traceparent)
                .outbound(),
            Self::Payment(body) => Envelope::new(saga_id, order_id, attempt, body)
                .with_traceparent(traceparent)
                .outbound(),
        }
    }
}

/// Which exchange a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// Commands to participants.
    Commands,
    /// Replies and requests for the orchestrator, history for the history role.
    Events,
}

impl Exchange {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Commands => "commands",
            Self::Events => "events",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "commands" => Some(Self::Commands),
            "events" => Some(Self::Events),
            _ => None,
        }
    }
}

/// A message with what every message carries: its id (the dedupe key), the saga and order it
/// belongs to (for a history batch, its first order's), the attempt of the step that sent it,
/// and the trace context it was sent under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<B> {
    pub message_id: Uuid,
    pub saga_id: Uuid,
    pub order_id: Uuid,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(flatten)]
    pub body: B,
}

/// What the relay reads of any envelope, whatever its body, for the AMQP properties.
#[derive(Debug, Clone, Deserialize)]
pub struct Head {
    pub message_id: Uuid,
    pub saga_id: Uuid,
    pub order_id: Uuid,
    pub attempt: u32,
    #[serde(default)]
    pub traceparent: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
}

/// An envelope encoded for the outbox: its id, where it goes and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    pub message_id: Uuid,
    pub exchange: Exchange,
    pub routing_key: String,
    pub body: String,
}

/// Namespace of reply ids: a participant answering the same command twice (a redelivery or a
/// retried attempt) sends the same id, so the orchestrator's inbox drops the copy.
const REPLY_IDS: Uuid = Uuid::from_u128(0x6f72_6465_726c_7900_0000_0000_0000_0002);

impl<B: Message> Envelope<B> {
    pub fn new(saga_id: Uuid, order_id: Uuid, attempt: u32, body: B) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            saga_id,
            order_id,
            attempt,
            traceparent: None,
            body,
        }
    }

    /// The reply to this command, with an id derived from the saga and the reply's content.
    pub fn reply(&self, reply: Reply) -> Envelope<SagaReply> {
        let body = SagaReply::from(reply);
        let key = format!(
            "{}/{}",
            self.saga_id,
            serde_json::to_string(&body).unwrap_or_default()
        );
        Envelope {
            message_id: Uuid::new_v5(&REPLY_IDS, key.as_bytes()),
            saga_id: self.saga_id,
            order_id: self.order_id,
            attempt: self.attempt,
            traceparent: self.traceparent.clone(),
            body,
        }
    }

    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// The envelope as an outbox row.
    pub fn outbound(&self) -> Outbound {
        let (exchange, routing_key) = self.body.route();
        Outbound {
            message_id: self.message_id,
            exchange,
            routing_key,
            // An envelope is plain data: serializing it cannot fail.
            body: serde_json::to_string(self).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_with_a_flat_type_tag() {
        let e = Envelope::new(
            Uuid::now_v7(),
            Uuid::now_v7(),
            2,
            SagaReply::StockRejected {
                reason: OrderReason::InsufficientStock,
            },
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "stock_rejected");
        assert_eq!(json["reason"], "insufficient_stock");
        let back: Envelope<SagaReply> = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn a_queue_decodes_only_its_own_messages() {
        let reply = Envelope::new(Uuid::now_v7(), Uuid::now_v7(), 1, SagaReply::StockReserved);
        let json = serde_json::to_string(&reply).unwrap();
        let misrouted = serde_json::from_str::<Envelope<PaymentCommand>>(&json).unwrap_err();
        assert!(
            misrouted
                .to_string()
                .contains("unknown variant `stock_reserved`"),
            "{misrouted}"
        );
        let history = serde_json::from_str::<Envelope<HistoryBatch>>(&json);
        assert!(history.is_err());
        let head: Head = serde_json::from_str(&json).unwrap();
        assert_eq!(head.kind, "stock_reserved");
        assert_eq!(head.message_id, reply.message_id);
    }

    #[test]
    fn a_history_batch_is_tagged_and_routed_to_history() {
        let batch = Envelope::new(
            Uuid::now_v7(),
            Uuid::now_v7(),
            1,
            HistoryBatch { orders: Vec::new() },
        );
        let row = batch.outbound();
        assert_eq!(row.routing_key, "history.history_batch");
        let json: serde_json::Value = serde_json::from_str(&row.body).unwrap();
        assert_eq!(json["type"], "history_batch");
        let back: Envelope<HistoryBatch> = serde_json::from_str(&row.body).unwrap();
        assert_eq!(back, batch);
    }

    #[test]
    fn a_reply_sent_twice_has_one_id() {
        let command = Envelope::new(
            Uuid::now_v7(),
            Uuid::now_v7(),
            1,
            PaymentCommand::RefundPayment {
                customer_id: Uuid::nil(),
            },
        );
        let mut retried = command.clone();
        retried.message_id = Uuid::now_v7();
        retried.attempt = 2;
        assert_eq!(
            command.reply(Reply::PaymentRefunded).message_id,
            retried.reply(Reply::PaymentRefunded).message_id
        );
        assert_ne!(
            command.reply(Reply::PaymentRefunded).message_id,
            command.reply(Reply::PaymentCharged).message_id
        );
    }

    #[test]
    fn routes() {
        let c = PaymentCommand::ChargePayment {
            customer_id: Uuid::nil(),
            amount_minor: 1,
        };
        assert_eq!(
            c.route(),
            (Exchange::Commands, "payments.charge_payment".into())
        );
        assert_eq!(
            SagaReply::CancelRequested.route(),
            (Exchange::Events, "saga.cancel_requested".into())
        );
        assert!(SagaReply::CancelRequested.is_sent_once());
        assert!(!SagaReply::StockReserved.is_sent_once());
    }
}
