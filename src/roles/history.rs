//! The history role: projects each order's history events into MongoDB. Events carry their
//! seq, assigned in Postgres, and are stored under `(order, seq)`, so a copy is a no-op. A batch
//! of messages is one unordered `insert_many`.

use crate::{
    messaging::{
        consumer::{HandleError, Handler},
        envelope::{Body, Envelope, HistoryEvent},
    },
    store::history::OrderHistory,
};

use uuid::Uuid;

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
        let events = events(&message)?;
        Ok(self.history.append(message.order_id, events).await?)
    }

    async fn handle_batch(&self, batch: Vec<Envelope>) -> Vec<Result<(), HandleError>> {
        let orders: Vec<(Uuid, &[HistoryEvent])> = batch
            .iter()
            .filter_map(|m| events(m).ok().map(|e| (m.order_id, e)))
            .collect();
        if self.history.append_many(&orders).await.is_ok() {
            return batch.iter().map(|m| events(m).map(drop)).collect();
        }
        // The store refused something: each message on its own, so only what fails is retried.
        futures::future::join_all(batch.into_iter().map(|m| self.handle(m))).await
    }
}

/// The events a message carries; any other message is not for this role.
fn events(message: &Envelope) -> Result<&[HistoryEvent], HandleError> {
    match &message.body {
        Body::History { events } => Ok(events),
        other => Err(HandleError::Permanent(format!(
            "history does not handle {}",
            other.kind()
        ))),
    }
}
