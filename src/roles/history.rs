//! The history role: projects each order's history events into MongoDB. Events carry their
//! seq, assigned in Postgres, and are stored under `(order, seq)`, so a copy is a no-op. A batch
//! of messages, each the events one transaction recorded for its orders, is one unordered
//! `insert_many`.

use crate::{
    messaging::{
        consumer::{HandleError, Handler},
        envelope::{Envelope, HistoryBatch},
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
    type Message = HistoryBatch;

    async fn handle(&self, message: Envelope<HistoryBatch>) -> Result<(), HandleError> {
        Ok(self.history.append_many(&message.body.orders).await?)
    }

    async fn handle_batch(
        &self,
        batch: Vec<Envelope<HistoryBatch>>,
    ) -> Vec<Result<(), HandleError>> {
        let orders = batch.iter().flat_map(|m| &m.body.orders);
        if self.history.append_many(orders).await.is_ok() {
            return batch.iter().map(|_| Ok(())).collect();
        }
        // The store refused something: each message on its own, so only what fails is retried.
        futures::future::join_all(batch.into_iter().map(|m| self.handle(m))).await
    }
}
