//! Cursor pagination: `?limit=` (1..200, default 50) and an opaque `?cursor=`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use uuid::Uuid;

use crate::domain::Invalid;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// A page of results and the cursor of the next one, if any.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `rows` were fetched with `limit + 1`: an extra row proves there is a next page, which
    /// starts after the last row kept.
    pub fn from_overfetch(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> Uuid) -> Self {
        let limit = usize::try_from(limit).unwrap_or(0);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode(key(last)))
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

pub fn limit(raw: Option<i64>) -> Result<i64, Invalid> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(Invalid::new(format!("must be between 1 and {MAX_LIMIT}"))),
    }
}

/// Cursors are the last id seen, wrapped so clients treat them as opaque.
pub fn encode(last: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{last}"))
}

pub fn decode(cursor: &str) -> Result<Uuid, Invalid> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("v1:")?.parse().ok())
        .ok_or_else(|| Invalid::new("is not a cursor this server issued"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn cursors_round_trip(bytes in any::<[u8; 16]>()) {
            let id = Uuid::from_bytes(bytes);
            prop_assert_eq!(decode(&encode(id)).unwrap(), id);
        }

        #[test]
        fn garbage_is_refused_not_panicked_on(raw in "\\PC{0,80}") {
            let _ = decode(&raw);
        }
    }

    #[test]
    fn overfetch_sets_the_next_cursor() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = Page::from_overfetch(ids.clone(), 2, |id| *id);
        assert_eq!(page.items, ids[..2]);
        assert_eq!(
            decode(page.next_cursor.as_deref().unwrap()).unwrap(),
            ids[1]
        );
        let last = Page::from_overfetch(ids[..2].to_vec(), 2, |id| *id);
        assert!(last.next_cursor.is_none());
    }

    #[test]
    fn limits() {
        assert_eq!(limit(None), Ok(DEFAULT_LIMIT));
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(201)).is_err());
    }
}
