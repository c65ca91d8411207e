//! Products' ratings: read from the Redis cache of totals, aggregated from MongoDB's reviews
//! where nothing is cached, and recomputed after every new review.

use std::{collections::HashMap, sync::Arc};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::Stores;
use crate::{
    domain::review::{RatingSummary, RatingTotals},
    store::StoreError,
};

#[derive(Clone)]
pub struct Ratings {
    stores: Stores,
    /// Held while aggregating what the cache missed. Pages that miss together (a cold cache,
    /// totals expiring together) would otherwise each ask MongoDB for the same products; the
    /// ones that waited read what the first one cached.
    filling: Arc<Mutex<()>>,
    /// MongoDB aggregations run, each over every product one read missed.
    aggregations: Counter,
}

impl Ratings {
    pub fn new(stores: Stores, aggregations: Counter) -> Self {
        Self {
            stores,
            filling: Arc::default(),
            aggregations,
        }
    }

    /// The rating of each of `product_ids`, in order: one Redis round trip, plus, for what
    /// nothing was cached for, a second one and one aggregation.
    pub async fn summaries(&self, product_ids: &[Uuid]) -> Result<Vec<RatingSummary>, StoreError> {
        let mut cached = self.stores.ratings.get(product_ids).await?;
        let mut fresh = HashMap::new();
        if cached.iter().any(Option::is_none) {
            let _filling = self.filling.lock().await;
            cached = self.stores.ratings.get(product_ids).await?;
            let missing: Vec<Uuid> = product_ids
                .iter()
                .zip(&cached)
                .filter(|(_, totals)| totals.is_none())
                .map(|(&id, _)| id)
                .collect();
            fresh = self.aggregate_and_cache(&missing).await?;
        }
        Ok(product_ids
            .iter()
            .zip(cached)
            .map(|(id, totals)| {
                totals
                    .or_else(|| fresh.get(id).copied())
                    .unwrap_or_default()
                    .summary()
            })
            .collect())
    }

    /// Recomputes a product's totals after a review was added, so the next read counts it.
    pub async fn refresh(&self, product_id: Uuid) -> Result<(), StoreError> {
        self.aggregate_and_cache(&[product_id]).await?;
        Ok(())
    }

    /// Totals straight from the reviews, cached on the way, a product without reviews included
    /// (as zero) so that it too is served from the cache next time.
    async fn aggregate_and_cache(
        &self,
        product_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, RatingTotals>, StoreError> {
        if product_ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.aggregations.inc();
        let mut totals = self.stores.docs.rating_totals(product_ids).await?;
        for &id in product_ids {
            totals.entry(id).or_default();
        }
        let cache = &self.stores.ratings;
        futures::future::try_join_all(totals.iter().map(|(&id, &t)| cache.put(id, t))).await?;
        Ok(totals)
    }
}
