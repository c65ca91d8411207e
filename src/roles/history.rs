//! The history role: projects each order's history events into MongoDB. Events carry their
//! seq, assigned in Postgres, and are stored under `(order, seq)`, so a copy is a no-op.

use crate::{
    messaging::{
        consumer::{HandleError, Handler},
        envelope::{Body, Envelope},
    },
    store::history::OrderHistory,
};

use super::RoleContext;

pub struct History {
    history: OrderHistory,
}

impl History {
    pub fn new(context: RoleContext) -> Self {
        Self {
            history: OrderHistory::new(context.stores.docs.database()),
        }
    }
}

impl Handler for History {
    async fn handle(&self, message: Envelope) -> Result<(), HandleError> {
        match &message.body {
            Body::History { events } => Ok(self.history.append(message.order_id, events).await?),
            other => Err(HandleError::Permanent(format!(
                "history does not handle {}",
                other.kind()
            ))),
        }
    }
}
