//! MongoDB: each order's history, projected from the saga's events.
//!
//! An event's `_id` is its `(order, seq)`, so projecting an event twice (a redelivery) is a
//! duplicate-key error that is ignored, and two events can never share a seq.

use futures::TryStreamExt;
use mongodb::{
    Collection, Database, IndexModel,
    bson::{self, doc},
    error::ErrorKind,
    options::InsertManyOptions,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreError;
use crate::messaging::envelope::{HistoryEvent, OrderEvents};

/// The collection holding every order's history events (the load test reads it directly).
pub const HISTORY: &str = "order_history";
const DUPLICATE_KEY: i32 = 11000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventDoc {
    /// `<order>/<seq>`, the seq zero-padded so ids sort like seqs.
    #[serde(rename = "_id")]
    id: String,
    order_id: String,
    seq: i32,
    #[serde(rename = "type")]
    kind: String,
    at: bson::DateTime,
    data: bson::Bson,
}

#[derive(Clone)]
pub struct OrderHistory {
    events: Collection<EventDoc>,
}

impl OrderHistory {
    pub fn new(db: &Database) -> Self {
        Self {
            events: db.collection(HISTORY),
        }
    }

    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.events
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "order_id": 1, "seq": 1 })
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// Stores the events of several orders in one `insert_many`, skipping those already stored.
    pub async fn append_many<'a>(
        &self,
        orders: impl IntoIterator<Item = &'a OrderEvents>,
    ) -> Result<(), StoreError> {
        let docs: Vec<EventDoc> = orders
            .into_iter()
            .flat_map(|OrderEvents { order_id, events }| {
                events.iter().map(move |e| EventDoc {
                    id: format!("{order_id}/{:010}", e.seq),
                    order_id: order_id.to_string(),
                    seq: e.seq,
                    kind: e.kind.clone(),
                    at: bson::DateTime::from_millis(e.at.timestamp_millis()),
                    data: bson::to_bson(&e.data).unwrap_or(bson::Bson::Null),
                })
            })
            .collect();
        if docs.is_empty() {
            return Ok(());
        }
        let options = InsertManyOptions::builder().ordered(false).build();
        match self.events.insert_many(docs).with_options(options).await {
            Ok(_) => Ok(()),
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(failure)
                    if failure.write_concern_error.is_none()
                        && failure
                            .write_errors
                            .iter()
                            .flatten()
                            .all(|w| w.code == DUPLICATE_KEY) =>
                {
                    Ok(())
                }
                _ => Err(e.into()),
            },
        }
    }

    /// The order's events in seq order, up to the first gap: an event still on its way is not
    /// skipped over, so what is returned is always contiguous from 1.
    pub async fn events(&self, order_id: Uuid) -> Result<Vec<HistoryEvent>, StoreError> {
        let docs: Vec<EventDoc> = self
            .events
            .find(doc! { "order_id": order_id.to_string() })
            .sort(doc! { "seq": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .into_iter()
            .zip(1..)
            .take_while(|(d, expected)| d.seq == *expected)
            .map(|(d, _)| HistoryEvent {
                seq: d.seq,
                kind: d.kind,
                at: chrono::DateTime::from_timestamp_millis(d.at.timestamp_millis())
                    .unwrap_or_default(),
                data: d.data.into_relaxed_extjson(),
            })
            .collect())
    }
}
