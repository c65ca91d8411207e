//! Product descriptions kept in memory, keyed by the product version they were read at.
//!
//! Every change to a description bumps the product's version, and the text reaches MongoDB
//! before that version commits in Postgres. So the text read for a given version does not
//! change, and an entry stays right for as long as the row it was read with keeps its version:
//! no invalidation, and any number of API processes may each keep their own.

use std::{collections::HashMap, sync::Mutex};

use uuid::Uuid;

/// Text kept before the cache starts over (a description may be up to 5,000 characters, so a
/// count of entries alone would not bound memory).
const MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Default)]
pub struct DescriptionCache {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_product: HashMap<Uuid, (i64, Option<String>)>,
    /// Text bytes held, plus a small charge per entry for the key and the version.
    bytes: usize,
}

fn cost(text: &Option<String>) -> usize {
    64 + text.as_ref().map_or(0, String::len)
}

impl DescriptionCache {
    /// The description of `product_id` at `version`: `None` when not cached, `Some(None)` when
    /// the product is known to have none.
    pub fn get(&self, product_id: Uuid, version: i64) -> Option<Option<String>> {
        let entries = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match entries.by_product.get(&product_id) {
            Some((cached, text)) if *cached == version => Some(text.clone()),
            _ => None,
        }
    }

    pub fn put(&self, product_id: Uuid, version: i64, text: Option<String>) {
        let mut entries = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let added = cost(&text);
        if let Some((_, old)) = entries.by_product.remove(&product_id) {
            entries.bytes -= cost(&old);
        }
        if entries.bytes + added > MAX_BYTES {
            // Dropping everything is crude but cheap; a catalog this large mostly reads MongoDB.
            entries.by_product.clear();
            entries.bytes = 0;
        }
        entries.bytes += added;
        entries.by_product.insert(product_id, (version, text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stays_bounded() {
        let cache = DescriptionCache::default();
        let text = "x".repeat(20_000);
        for _ in 0..(2 * MAX_BYTES / text.len()) {
            cache.put(Uuid::now_v7(), 1, Some(text.clone()));
        }
        let entries = cache.inner.lock().unwrap();
        assert!(entries.bytes <= MAX_BYTES);
        let held: usize = entries.by_product.values().map(|(_, t)| cost(t)).sum();
        assert_eq!(held, entries.bytes);
    }

    #[test]
    fn an_entry_serves_only_its_version() {
        let cache = DescriptionCache::default();
        let id = Uuid::now_v7();
        assert_eq!(cache.get(id, 1), None);
        cache.put(id, 1, None);
        assert_eq!(cache.get(id, 1), Some(None));
        cache.put(id, 2, Some("new".into()));
        assert_eq!(cache.get(id, 1), None);
        assert_eq!(cache.get(id, 2), Some(Some("new".into())));
    }
}
