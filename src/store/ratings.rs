//! Redis: each product's rating totals, cached so that a catalog page does not aggregate
//! reviews in MongoDB on every read.
//!
//! Totals are always recomputed from MongoDB, never incremented, so one lost write is repaired
//! by the next. `rating.lua` keeps whichever totals have the larger count (reviews are only
//! added), so a slow writer cannot put older totals over newer ones. The time to live bounds
//! the one case nothing else repairs: an API process that stopped between inserting a review
//! and caching the new totals.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use redis::{Script, aio::ConnectionManager};
use uuid::Uuid;

use super::StoreError;
use crate::domain::review::RatingTotals;

/// How long cached totals live; the longest a review can go uncounted after a crash.
pub const TOTALS_TTL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct RatingCache {
    redis: ConnectionManager,
    prefix: Arc<str>,
}

// One copy per process (see the stock scripts).
static STORE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/rating.lua")));

impl RatingCache {
    pub fn new(redis: ConnectionManager, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.into(),
        }
    }

    /// `{prefix}rating:{<product>}`, holding `count:sum`; the hash tag matches the product's
    /// stock keys.
    pub fn key(&self, product_id: Uuid) -> String {
        format!("{}rating:{{{product_id}}}", self.prefix)
    }

    /// Cached totals in the order of `product_ids`; `None` where nothing (readable) is cached.
    pub async fn get(&self, product_ids: &[Uuid]) -> Result<Vec<Option<RatingTotals>>, StoreError> {
        let keys: Vec<String> = product_ids.iter().map(|&id| self.key(id)).collect();
        let values: Vec<Option<String>> = super::mget(&self.redis, &keys).await?;
        Ok(values
            .iter()
            .map(|v| v.as_deref().and_then(decode))
            .collect())
    }

    /// Caches `totals` unless totals with at least as many reviews are already cached.
    pub async fn put(&self, product_id: Uuid, totals: RatingTotals) -> Result<(), StoreError> {
        let _stored: i64 = STORE
            .key(self.key(product_id))
            .arg(totals.count)
            .arg(totals.sum)
            .arg(TOTALS_TTL.as_millis() as u64)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }
}

fn decode(raw: &str) -> Option<RatingTotals> {
    let (count, sum) = raw.split_once(':')?;
    Some(RatingTotals {
        count: count.parse().ok()?,
        sum: sum.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_script_writes() {
        assert_eq!(decode("3:11"), Some(RatingTotals { count: 3, sum: 11 }));
        assert_eq!(decode("0:0"), Some(RatingTotals::default()));
        assert_eq!(decode("garbage"), None);
        assert_eq!(decode("1:x"), None);
    }
}
