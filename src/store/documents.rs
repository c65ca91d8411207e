//! MongoDB: product descriptions and reviews.
//!
//! A product's rating totals are not stored here: they are aggregated from its reviews (one
//! `$group` per batch of products, served by the `product_id, rating` index) and cached in
//! Redis by [`super::ratings`], so concurrent reviews can never leave them wrong.

use std::collections::HashMap;

use futures::TryStreamExt;
use mongodb::{
    Client, Collection, Database, IndexModel,
    bson::{self, Document, doc},
    error::{ErrorKind, WriteFailure},
    options::ClientOptions,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreError;
use crate::domain::review::RatingTotals;

const DESCRIPTIONS: &str = "product_descriptions";
const REVIEWS: &str = "reviews";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DescriptionDoc {
    #[serde(rename = "_id")]
    product_id: String,
    description: String,
    /// The product version that wrote this text; an older writer never overwrites a newer one.
    version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewDoc {
    /// A UUIDv7 as text: its string order is its time order, so `_id` sorts newest first.
    #[serde(rename = "_id")]
    pub id: String,
    pub product_id: String,
    pub customer_id: String,
    pub rating: i32,
    pub comment: String,
    pub verified_purchase: bool,
    pub created_at: bson::DateTime,
}

#[derive(Clone)]
pub struct CatalogDocuments {
    db: Database,
    descriptions: Collection<DescriptionDoc>,
    reviews: Collection<ReviewDoc>,
}

impl CatalogDocuments {
    pub async fn connect(url: &str, database: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(url).await?;
        options.app_name = Some("orderly".to_owned());
        options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        let db = Client::with_options(options)?.database(database);
        Ok(Self {
            descriptions: db.collection(DESCRIPTIONS),
            reviews: db.collection(REVIEWS),
            db,
        })
    }

    /// Creates the indexes reads depend on; idempotent, run at start.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.reviews
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "product_id": 1, "_id": -1 })
                    .build(),
            )
            .await?;
        self.reviews
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "product_id": 1, "rating": 1 })
                    .build(),
            )
            .await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Descriptions of the given products in one query; a product without one is absent.
    pub async fn descriptions(
        &self,
        product_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, String>, StoreError> {
        if product_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let docs: Vec<DescriptionDoc> = self
            .descriptions
            .find(doc! { "_id": { "$in": id_strings(product_ids) } })
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .into_iter()
            .filter_map(|d| Some((d.product_id.parse().ok()?, d.description)))
            .collect())
    }

    /// Writes the description of `version` unless a newer version's is already there.
    pub async fn put_description(
        &self,
        product_id: Uuid,
        description: &str,
        version: i64,
    ) -> Result<(), StoreError> {
        let result = self
            .descriptions
            .update_one(
                doc! { "_id": product_id.to_string(), "version": { "$lte": version } },
                doc! { "$set": { "description": description, "version": version } },
            )
            .upsert(true)
            .await;
        match result {
            Ok(_) => Ok(()),
            // The filter missed because a newer version is stored, so the upsert tried to insert
            // a second document with the same _id: the newer text rightly stays.
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Rating totals of the given products in one aggregation; products without reviews are
    /// absent.
    pub async fn rating_totals(
        &self,
        product_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, RatingTotals>, StoreError> {
        if product_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let pipeline = [
            doc! { "$match": { "product_id": { "$in": id_strings(product_ids) } } },
            doc! { "$group": { "_id": "$product_id", "sum": { "$sum": "$rating" }, "count": { "$sum": 1 } } },
        ];
        let groups: Vec<Document> = self
            .reviews
            .aggregate(pipeline)
            .await?
            .try_collect()
            .await?;
        Ok(groups
            .iter()
            .filter_map(|g| {
                let id = g.get_str("_id").ok()?.parse().ok()?;
                let sum = number(g.get("sum")?)?;
                let count = number(g.get("count")?)?;
                let count = count.try_into().ok()?;
                Some((id, RatingTotals { count, sum }))
            })
            .collect())
    }

    pub async fn insert_review(&self, review: &ReviewDoc) -> Result<(), StoreError> {
        self.reviews.insert_one(review).await?;
        Ok(())
    }

    /// Whether the customer has reviewed the product (keeps the demo seed idempotent).
    pub async fn has_review_by(
        &self,
        product_id: Uuid,
        customer_id: Uuid,
    ) -> Result<bool, StoreError> {
        let filter =
            doc! { "product_id": product_id.to_string(), "customer_id": customer_id.to_string() };
        Ok(self.reviews.find_one(filter).await?.is_some())
    }

    /// A product's reviews, newest first, older than `before` when given.
    pub async fn reviews(
        &self,
        product_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<ReviewDoc>, StoreError> {
        let mut filter = doc! { "product_id": product_id.to_string() };
        if let Some(before) = before {
            filter.insert("_id", doc! { "$lt": before.to_string() });
        }
        Ok(self
            .reviews
            .find(filter)
            .sort(doc! { "_id": -1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }
}

fn id_strings(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(Uuid::to_string).collect()
}

/// `$sum` yields an int32 or an int64 depending on magnitude.
fn number(value: &bson::Bson) -> Option<i64> {
    match value {
        bson::Bson::Int32(n) => Some(i64::from(*n)),
        bson::Bson::Int64(n) => Some(*n),
        bson::Bson::Double(n) => Some(*n as i64),
        _ => None,
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}
