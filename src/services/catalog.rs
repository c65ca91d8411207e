//! The unified catalog: a product's row in Postgres, its available stock in Redis, its
//! description and rating from MongoDB (through the caches in [`super::descriptions`] and
//! [`super::ratings`]), joined on read in a fixed number of round trips per page.

use std::sync::Arc;

use uuid::Uuid;

use super::{
    ServiceError, Stores,
    descriptions::DescriptionCache,
    page::Page,
    ratings::Ratings,
    stock::{Settlement, StockAdjuster},
};
use crate::{
    domain::{product::Sku, review::RatingSummary, stock::AdjustmentReason, version::Precondition},
    store::{
        StoreError,
        documents::ReviewDoc,
        is_unique_violation,
        postgres::{
            products::{self, NewProduct, ProductChanges, ProductRow},
            stock_ledger::{self, PendingAdjustment},
        },
    },
};

/// Reviews shown on a product page.
pub const LATEST_REVIEWS: i64 = 10;

/// A product as the catalog shows it.
#[derive(Debug, Clone)]
pub struct ProductView {
    pub row: ProductRow,
    pub description: Option<String>,
    pub stock: i64,
    pub rating: RatingSummary,
}

pub struct NewProductInput {
    pub sku: Sku,
    pub name: String,
    pub price_minor: i64,
    pub category: String,
    pub description: Option<String>,
    pub initial_stock: i64,
}

#[derive(Default)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub price_minor: Option<i64>,
    pub category: Option<String>,
    pub description: Option<String>,
}

#[derive(Clone)]
pub struct Catalog {
    stores: Stores,
    stock: StockAdjuster,
    currency: String,
    descriptions: Arc<DescriptionCache>,
    ratings: Ratings,
}

impl Catalog {
    pub fn new(stores: Stores, currency: String, ratings: Ratings) -> Self {
        Self {
            stock: StockAdjuster::new(stores.clone()),
            stores,
            currency,
            descriptions: Arc::default(),
            ratings,
        }
    }

    /// One page of live products: one Postgres query, then the caches (Redis, memory)
    /// concurrently, reaching MongoDB only for what they miss.
    pub async fn list(
        &self,
        category: Option<&str>,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Page<ProductView>, ServiceError> {
        let rows = products::list_live(&self.stores.pg, category, after, limit + 1).await?;
        let page = Page::from_overfetch(rows, limit, |row| row.id);
        let items = self.join(page.items).await?;
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }

    /// A live product with its latest reviews.
    pub async fn get(&self, id: Uuid) -> Result<(ProductView, Vec<ReviewDoc>), ServiceError> {
        let row = products::find_live(&self.stores.pg, id)
            .await?
            .ok_or(ServiceError::NotFound("product"))?;
        let (mut views, reviews) = tokio::try_join!(self.join(vec![row]), async {
            Ok(self.stores.docs.reviews(id, None, LATEST_REVIEWS).await?)
        },)?;
        Ok((views.remove(0), reviews))
    }

    /// Creates a product. The description is written inside the Postgres transaction, after the
    /// insert has succeeded, so a refused SKU leaves MongoDB untouched; the opening stock is a
    /// ledger adjustment like any other.
    pub async fn create(&self, input: NewProductInput) -> Result<ProductView, ServiceError> {
        let id = Uuid::now_v7();
        let mut tx = self.stores.pg.begin().await?;
        let category_id = products::ensure_category(&mut tx, &input.category).await?;
        let new = NewProduct {
            id,
            sku: input.sku.as_str(),
            name: &input.name,
            price_minor: input.price_minor,
            currency: &self.currency,
            category_id,
        };
        let row = products::insert(&mut tx, new).await.map_err(|e| {
            if is_unique_violation(&e, products::SKU_CONSTRAINT) {
                ServiceError::Conflict(format!(
                    "a product with sku {} already exists",
                    input.sku.as_str()
                ))
            } else {
                e.into()
            }
        })?;
        stock_ledger::open_level(&mut tx, id).await?;
        if let Some(description) = &input.description {
            self.stores
                .docs
                .put_description(id, description, row.version)
                .await?;
        }
        let opening = PendingAdjustment {
            id: Uuid::now_v7(),
            product_id: id,
            delta: input.initial_stock,
        };
        if input.initial_stock > 0 {
            stock_ledger::record_pending(&mut tx, opening, AdjustmentReason::Initial).await?;
        }
        tx.commit().await?;

        let mut stock = 0;
        if input.initial_stock > 0 {
            match self.stock.settle_product(id, false).await {
                Ok(Some(settled)) => {
                    if let Some(Settlement::Applied { available, .. }) = settled.get(&opening.id) {
                        stock = *available;
                    }
                }
                Ok(None) => {}
                // The product exists and its opening stock is recorded; recovery will apply it.
                Err(e) => {
                    tracing::warn!(error = %e, product_id = %id, "opening stock left pending")
                }
            }
        }
        Ok(ProductView {
            row,
            description: input.description,
            stock,
            rating: RatingSummary::NONE,
        })
    }

    /// Applies `patch` if the product's version meets the `If-Match` precondition.
    pub async fn update(
        &self,
        id: Uuid,
        precondition: &Precondition,
        patch: ProductPatch,
    ) -> Result<ProductView, ServiceError> {
        let mut tx = self.stores.pg.begin().await?;
        let category_id = match &patch.category {
            Some(name) => Some(products::ensure_category(&mut tx, name).await?),
            None => None,
        };
        let changes = ProductChanges {
            name: patch.name.as_deref(),
            price_minor: patch.price_minor,
            category_id,
        };
        let Some(row) = products::update(&mut tx, id, precondition.versions(), changes).await?
        else {
            return Err(match products::live_version(&mut tx, id).await? {
                Some(current) => ServiceError::VersionMismatch { current },
                None => ServiceError::NotFound("product"),
            });
        };
        // Written before the commit so a failed write leaves the version unchanged; the version
        // guard keeps an older writer from overwriting a newer description.
        if let Some(description) = &patch.description {
            self.stores
                .docs
                .put_description(id, description, row.version)
                .await?;
        }
        tx.commit().await?;
        Ok(self.join(vec![row]).await?.remove(0))
    }

    pub async fn delete(&self, id: Uuid) -> Result<(), ServiceError> {
        if products::soft_delete(&self.stores.pg, id).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound("product"))
        }
    }

    pub fn stock(&self) -> &StockAdjuster {
        &self.stock
    }

    /// Adds stock, description and rating to rows: a fixed number of concurrent round trips,
    /// whatever the count.
    async fn join(&self, rows: Vec<ProductRow>) -> Result<Vec<ProductView>, ServiceError> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let (stock, descriptions, ratings) = tokio::try_join!(
            self.stores.stock.available(&ids),
            self.descriptions(&rows),
            self.ratings.summaries(&ids),
        )?;
        Ok(rows
            .into_iter()
            .zip(stock)
            .zip(descriptions)
            .zip(ratings)
            .map(|(((row, stock), description), rating)| ProductView {
                description,
                rating,
                stock,
                row,
            })
            .collect())
    }

    /// Descriptions of `rows`, in order: from memory for versions already read, one MongoDB
    /// query for the rest.
    async fn descriptions(&self, rows: &[ProductRow]) -> Result<Vec<Option<String>>, StoreError> {
        let mut texts = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            match self.descriptions.get(row.id, row.version) {
                Some(text) => texts.push(text),
                None => {
                    texts.push(None);
                    missing.push(i);
                }
            }
        }
        if missing.is_empty() {
            return Ok(texts);
        }
        let ids: Vec<Uuid> = missing.iter().map(|&i| rows[i].id).collect();
        let mut found = self.stores.docs.descriptions(&ids).await?;
        for i in missing {
            let text = found.remove(&rows[i].id);
            self.descriptions
                .put(rows[i].id, rows[i].version, text.clone());
            texts[i] = text;
        }
        Ok(texts)
    }
}
