//! What every list endpoint shares: parsing `?limit=&cursor=` and the page body.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use crate::{
    domain::Invalid,
    services::page::{self, Page},
};

/// `{"items": [...], "next_cursor": "..." | null}`.
#[derive(Serialize, ToSchema)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

impl<T> PageBody<T> {
    pub fn from_page<U: Into<T>>(page: Page<U>) -> Self {
        let page = page.map(Into::into);
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}

/// The page size and the id to continue after, each refused as a `400` naming the parameter.
pub fn params(limit: Option<i64>, cursor: Option<&str>) -> Result<(i64, Option<Uuid>), ApiError> {
    let limit = page::limit(limit).map_err(|e| bad("limit", e))?;
    let after = cursor
        .map(page::decode)
        .transpose()
        .map_err(|e| bad("cursor", e))?;
    Ok((limit, after))
}

fn bad(name: &str, Invalid(message): Invalid) -> ApiError {
    ApiError::bad_field(name, message)
}
