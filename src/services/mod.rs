//! Operations the HTTP layer calls: each joins the stores for one use case and returns typed
//! results or a [`ServiceError`]. Handlers stay a few lines because the work is here.

pub mod backlog;
pub mod catalog;
pub mod customers;
pub mod descriptions;
pub mod orders;
pub mod page;
pub mod ratings;
pub mod reconcile;
pub mod reviews;
pub mod stock;

use std::sync::Arc;

use thiserror::Error;

use crate::{
    domain::FieldViolation,
    store::{
        StoreError, broker::Broker, documents::CatalogDocuments, ratings::RatingCache,
        stock::StockCounters,
    },
};

/// Every store handle, cheap to clone.
#[derive(Clone)]
pub struct Stores {
    pub pg: sqlx::PgPool,
    pub stock: StockCounters,
    pub docs: CatalogDocuments,
    pub ratings: RatingCache,
    pub broker: Arc<Broker>,
}

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the resource is at version {current}")]
    VersionMismatch { current: i64 },
    /// The resource is in a state that does not allow the change (a second cancel).
    #[error("{0}")]
    InvalidTransition(String),
    #[error("this idempotency key was used with a different request")]
    IdempotencyKeyReused,
    /// Too many orders are waiting to settle to take another now.
    #[error("too many orders are waiting to settle")]
    Overloaded,
    /// This customer has too many orders waiting to settle to place another now.
    #[error("too many of this customer's orders are waiting to settle")]
    RateLimited,
    #[error("only {available} units are available")]
    InsufficientStock { available: i64 },
    /// Input that is well-formed but breaks a rule (a limit, a reference).
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

impl ServiceError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation {
            field: field.to_owned(),
            message: message.into(),
        }])
    }
}
