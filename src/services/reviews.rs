//! Reviews of live products, stored in MongoDB.

use chrono::Utc;
use mongodb::bson;
use uuid::Uuid;

use super::{ServiceError, Stores, page::Page, ratings::Ratings};
use crate::store::{
    documents::ReviewDoc,
    postgres::{orders, products},
};

#[derive(Clone)]
pub struct Reviews {
    stores: Stores,
    ratings: Ratings,
}

impl Reviews {
    pub fn new(stores: Stores, ratings: Ratings) -> Self {
        Self { stores, ratings }
    }

    pub async fn create(
        &self,
        product_id: Uuid,
        customer_id: Uuid,
        rating: u8,
        comment: String,
    ) -> Result<ReviewDoc, ServiceError> {
        self.ensure_live(product_id).await?;
        let verified_purchase =
            orders::has_confirmed_purchase(&self.stores.pg, customer_id, product_id).await?;
        let review = ReviewDoc {
            id: Uuid::now_v7().to_string(),
            product_id: product_id.to_string(),
            customer_id: customer_id.to_string(),
            rating: i32::from(rating),
            comment,
            verified_purchase,
            created_at: bson::DateTime::from_millis(Utc::now().timestamp_millis()),
        };
        self.stores.docs.insert_review(&review).await?;
        // The review is saved: failing the request now would invite a duplicate on retry. The
        // cached totals then catch up when they expire.
        if let Err(e) = self.ratings.refresh(product_id).await {
            tracing::warn!(error = %e, product_id = %product_id, "rating totals not refreshed");
        }
        Ok(review)
    }

    /// A page of a product's reviews, newest first.
    pub async fn list(
        &self,
        product_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Page<ReviewDoc>, ServiceError> {
        self.ensure_live(product_id).await?;
        let docs = self
            .stores
            .docs
            .reviews(product_id, before, limit + 1)
            .await?;
        Ok(Page::from_overfetch(docs, limit, |r| {
            r.id.parse().unwrap_or_default()
        }))
    }

    async fn ensure_live(&self, product_id: Uuid) -> Result<(), ServiceError> {
        if products::is_live(&self.stores.pg, product_id).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound("product"))
        }
    }
}
