//! Product descriptions kept in memory, keyed by the product version they were read at.
//!
//! Every change to a description bumps the product's version, and the text reaches MongoDB
//! before that version commits in Postgres. So the text read for a given version does not
//! change, and an entry stays right for as long as the row it was read with keeps its version:
//! no invalidation, and any number of API processes may each keep their own.

use std::{collections::HashMap, sync::Mutex};

use uuid::Uuid;

/// Entries kept before the cache starts over; bounds memory whatever the catalog's size.
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct DescriptionCache {
    entries: Mutex<HashMap<Uuid, (i64, Option<String>)>>,
}

impl DescriptionCache {
    /// The description of `product_id` at `version`: `None` when not cached, `Some(None)` when
    /// the product is known to have none.
    pub fn get(&self, product_id: Uuid, version: i64) -> Option<Option<String>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&product_id) {
            Some((cached, text)) if *cached == version => Some(text.clone()),
            _ => None,
        }
    }

    pub fn put(&self, product_id: Uuid, version: i64, text: Option<String>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(&product_id) {
            // Dropping everything is crude but cheap; a catalog this large mostly reads MongoDB.
            entries.clear();
        }
        entries.insert(product_id, (version, text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
