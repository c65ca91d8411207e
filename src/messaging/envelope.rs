//! The messages the roles exchange, and the envelope every one of them travels in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    order::OrderReason,
    saga::{Action, Reply},
};

/// One line of an order, as the inventory role needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: Uuid,
    pub quantity: i64,
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

/// What a message says. The `type` tag is also the AMQP `type` property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    ReserveStock {
        items: Vec<Line>,
    },
    ReleaseStock {
        items: Vec<Line>,
    },
    ChargePayment {
        customer_id: Uuid,
        amount_minor: i64,
    },
    RefundPayment {
        customer_id: Uuid,
    },
    StockReserved,
    StockRejected {
        reason: OrderReason,
    },
    StockReleased,
    PaymentCharged,
    PaymentDeclined {
        reason: OrderReason,
    },
    PaymentRefunded,
    CancelRequested,
    History {
        events: Vec<HistoryEvent>,
    },
}

impl From<Reply> for Body {
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

impl Body {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ReserveStock { .. } => "reserve_stock",
            Self::ReleaseStock { .. } => "release_stock",
            Self::ChargePayment { .. } => "charge_payment",
            Self::RefundPayment { .. } => "refund_payment",
            Self::StockReserved => "stock_reserved",
            Self::StockRejected { .. } => "stock_rejected",
            Self::StockReleased => "stock_released",
            Self::PaymentCharged => "payment_charged",
            Self::PaymentDeclined { .. } => "payment_declined",
            Self::PaymentRefunded => "payment_refunded",
            Self::CancelRequested => "cancel_requested",
            Self::History { .. } => "history",
        }
    }

    /// Where the message goes: `inventory.*` and `payments.*` on the commands exchange,
    /// `saga.*` (the orchestrator) and `history.*` on the events exchange.
    pub fn route(&self) -> (Exchange, String) {
        let kind = self.kind();
        match self {
            Self::ReserveStock { .. } | Self::ReleaseStock { .. } => {
                (Exchange::Commands, format!("inventory.{kind}"))
            }
            Self::ChargePayment { .. } | Self::RefundPayment { .. } => {
                (Exchange::Commands, format!("payments.{kind}"))
            }
            Self::History { .. } => (Exchange::Events, format!("history.{kind}")),
            _ => (Exchange::Events, format!("saga.{kind}")),
        }
    }

    /// Messages nothing would send again if they were dead-lettered: a command is resent when
    /// its step's deadline passes, and a reply with it, but a cancel or a history batch is sent
    /// once. Transient failures retry these for as long as it takes.
    pub fn is_sent_once(&self) -> bool {
        matches!(self, Self::CancelRequested | Self::History { .. })
    }

    /// The reply this body is, for the orchestrator.
    pub fn reply(&self) -> Option<Reply> {
        Some(match *self {
            Self::StockReserved => Reply::StockReserved,
            Self::StockRejected { reason } => Reply::StockRejected { reason },
            Self::StockReleased => Reply::StockReleased,
            Self::PaymentCharged => Reply::PaymentCharged,
            Self::PaymentDeclined { reason } => Reply::PaymentDeclined { reason },
            Self::PaymentRefunded => Reply::PaymentRefunded,
            _ => return None,
        })
    }

    /// The command a saga action becomes for an order.
    pub fn command(action: Action, items: &[Line], customer_id: Uuid, amount_minor: i64) -> Self {
        match action {
            Action::ReserveStock => Self::ReserveStock {
                items: items.to_vec(),
            },
            Action::ReleaseStock => Self::ReleaseStock {
                items: items.to_vec(),
            },
            Action::ChargePayment => Self::ChargePayment {
                customer_id,
                amount_minor,
            },
            Action::RefundPayment => Self::RefundPayment { customer_id },
        }
    }
}

/// A message with what every message carries: its id (the dedupe key), the saga and order it
/// belongs to, the attempt of the step that sent it, and the trace context it was sent under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub message_id: Uuid,
    pub saga_id: Uuid,
    pub order_id: Uuid,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(flatten)]
    pub body: Body,
}

/// Namespace of reply ids: a participant answering the same command twice (a redelivery or a
/// retried attempt) sends the same id, so the orchestrator's inbox drops the copy.
const REPLY_IDS: Uuid = Uuid::from_u128(0x6f72_6465_726c_7900_0000_0000_0000_0002);

impl Envelope {
    pub fn new(saga_id: Uuid, order_id: Uuid, attempt: u32, body: Body) -> Self {
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
    pub fn reply(&self, reply: Reply) -> Self {
        let body = Body::from(reply);
        let key = format!(
            "{}/{}",
            self.saga_id,
            serde_json::to_string(&body).unwrap_or_default()
        );
        Self {
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
            Body::StockRejected {
                reason: OrderReason::InsufficientStock,
            },
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "stock_rejected");
        assert_eq!(json["reason"], "insufficient_stock");
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn a_reply_sent_twice_has_one_id() {
        let command = Envelope::new(Uuid::now_v7(), Uuid::now_v7(), 1, Body::StockReleased);
        let mut retried = command.clone();
        retried.message_id = Uuid::now_v7();
        retried.attempt = 2;
        assert_eq!(
            command.reply(Reply::StockReserved).message_id,
            retried.reply(Reply::StockReserved).message_id
        );
        assert_ne!(
            command.reply(Reply::StockReserved).message_id,
            command.reply(Reply::StockReleased).message_id
        );
    }

    #[test]
    fn routes() {
        let c = Body::ChargePayment {
            customer_id: Uuid::nil(),
            amount_minor: 1,
        };
        assert_eq!(
            c.route(),
            (Exchange::Commands, "payments.charge_payment".into())
        );
        assert_eq!(
            Body::CancelRequested.route(),
            (Exchange::Events, "saga.cancel_requested".into())
        );
    }
}
