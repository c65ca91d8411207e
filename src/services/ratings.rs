//! Products' ratings: read from the Redis cache of totals, aggregated from MongoDB's reviews
//! where nothing is cached, and recomputed after every new review.

use std::collections::HashMap;

use uuid::Uuid;

use super::Stores;
use crate::{
    domain::review::{RatingSummary, RatingTotals},
    store::StoreError,
};

/// The rating of each of `product_ids`, in order: one Redis round trip, plus one aggregation
/// over the products nothing was cached for.
pub async fn summaries(
    stores: &Stores,
    product_ids: &[Uuid],
) -> Result<Vec<RatingSummary>, StoreError> {
    let cached = stores.ratings.get(product_ids).await?;
    let missing: Vec<Uuid> = product_ids
        .iter()
        .zip(&cached)
        .filter(|(_, totals)| totals.is_none())
        .map(|(&id, _)| id)
        .collect();
    let fresh = aggregate_and_cache(stores, &missing).await?;
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
pub async fn refresh(stores: &Stores, product_id: Uuid) -> Result<(), StoreError> {
    aggregate_and_cache(stores, &[product_id]).await?;
    Ok(())
}

/// Totals straight from the reviews, cached on the way, a product without reviews included
/// (as zero) so that it too is served from the cache next time.
async fn aggregate_and_cache(
    stores: &Stores,
    product_ids: &[Uuid],
) -> Result<HashMap<Uuid, RatingTotals>, StoreError> {
    if product_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut totals = stores.docs.rating_totals(product_ids).await?;
    for &id in product_ids {
        totals.entry(id).or_default();
    }
    futures::future::try_join_all(totals.iter().map(|(&id, &t)| stores.ratings.put(id, t))).await?;
    Ok(totals)
}
