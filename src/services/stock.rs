//! Stock adjustments: recorded in Postgres, applied to Redis, settled back in Postgres.
//!
//! Two stores cannot commit together, so an adjustment moves through three steps, each safe to
//! repeat:
//!
//! 1. **record**: the adjustment is committed to `stock_adjustments` as `pending`. From here it
//!    cannot be lost.
//! 2. **apply**: under the lock on the product's `stock_levels` row, each of the product's
//!    pending adjustments, oldest first, goes through `adjust.lua`, which applies it to Redis at
//!    most once per adjustment id (it keeps an outcome marker) and never below zero.
//! 3. **settle**: in the same transaction each row becomes `applied` and `on_hand` moves by its
//!    delta — or, if Redis refused it, the row is deleted.
//!
//! A crash or store error after step 1 leaves rows `pending`. The next adjustment of the product
//! settles them first, and the inventory role's recovery loop settles the rest; running
//! the script again returns its first outcome, so nothing is lost and nothing is applied twice.
//! Because one lock orders both stores, `on_hand` only takes values Redis's counter took.
//!
//! A client that sends an `Idempotency-Key` gets an adjustment id derived from it, so a retry
//! after a lost answer or a `503` finds the same row instead of adjusting twice.

use std::{collections::HashMap, time::Duration};

use tokio::sync::watch;
use uuid::Uuid;

use super::{ServiceError, Stores};
use crate::{
    domain::stock::AdjustmentReason,
    store::{
        postgres::{
            products,
            stock_ledger::{self, PendingAdjustment, Recorded},
        },
        stock::AdjustOutcome,
    },
};

/// Namespace of adjustment ids derived from idempotency keys.
const IDEMPOTENT_ADJUSTMENTS: Uuid = Uuid::from_u128(0x6f72_6465_726c_7900_0000_0000_0000_0001);

/// A product's stock after an adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLevel {
    pub product_id: Uuid,
    /// Units available for sale now (Redis).
    pub available: i64,
    /// Units physically on hand (Postgres).
    pub on_hand: i64,
}

/// How a pending adjustment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    Applied { available: i64, on_hand: i64 },
    Refused { available: i64 },
}

#[derive(Clone)]
pub struct StockAdjuster {
    stores: Stores,
}

impl StockAdjuster {
    pub fn new(stores: Stores) -> Self {
        Self { stores }
    }

    /// Adjusts a live product's stock by `delta`, at most once per `idempotency_key`.
    pub async fn adjust(
        &self,
        product_id: Uuid,
        delta: i64,
        reason: AdjustmentReason,
        idempotency_key: Option<&str>,
    ) -> Result<StockLevel, ServiceError> {
        if !products::is_live(&self.stores.pg, product_id).await? {
            return Err(ServiceError::NotFound("product"));
        }
        let id = match idempotency_key {
            Some(key) => Uuid::new_v5(
                &IDEMPOTENT_ADJUSTMENTS,
                format!("{product_id}/{key}").as_bytes(),
            ),
            None => Uuid::now_v7(),
        };
        let adjustment = PendingAdjustment {
            id,
            product_id,
            delta,
        };
        let mut conn = self.stores.pg.acquire().await?;
        match stock_ledger::record_pending(&mut conn, adjustment, reason).await? {
            Recorded::New => {}
            Recorded::Existing {
                delta: d,
                reason: r,
            } if d == delta && r == reason => {}
            Recorded::Existing { .. } => return Err(ServiceError::IdempotencyKeyReused),
        }
        drop(conn);

        let settled = self
            .settle_product(product_id, false)
            .await?
            .unwrap_or_default();
        match settled.get(&id) {
            Some(Settlement::Applied { available, on_hand }) => Ok(StockLevel {
                product_id,
                available: *available,
                on_hand: *on_hand,
            }),
            Some(Settlement::Refused { available }) => Err(ServiceError::InsufficientStock {
                available: *available,
            }),
            // Settled already: by another adjustment of this product, by the recovery loop, or
            // by this key's first request.
            None => {
                let level = self.level(product_id).await?;
                if stock_ledger::is_applied(&self.stores.pg, id).await? {
                    Ok(level)
                } else {
                    Err(ServiceError::InsufficientStock {
                        available: level.available,
                    })
                }
            }
        }
    }

    /// Steps 2 and 3 for every pending adjustment of a product, oldest first, under the
    /// product's lock. `None` when `skip_locked` and another process holds the lock.
    pub async fn settle_product(
        &self,
        product_id: Uuid,
        skip_locked: bool,
    ) -> Result<Option<HashMap<Uuid, Settlement>>, ServiceError> {
        let mut tx = self.stores.pg.begin().await?;
        if !stock_ledger::lock_level(&mut tx, product_id, skip_locked).await? {
            return Ok(None);
        }
        let pending = stock_ledger::pending_for(&mut tx, product_id).await?;
        let mut settled = HashMap::with_capacity(pending.len());
        for adjustment in &pending {
            // On a store error the transaction rolls back on drop: every row stays pending, and
            // those Redis did apply are replayed, not re-applied, next time.
            let settlement = match self
                .stores
                .stock
                .adjust(product_id, adjustment.id, adjustment.delta)
                .await?
            {
                AdjustOutcome::Applied { available } => Settlement::Applied {
                    available,
                    on_hand: stock_ledger::mark_applied(&mut tx, *adjustment).await?,
                },
                AdjustOutcome::Refused { available } => {
                    stock_ledger::discard(&mut tx, adjustment.id).await?;
                    Settlement::Refused { available }
                }
            };
            settled.insert(adjustment.id, settlement);
        }
        tx.commit().await?;
        for adjustment in &pending {
            if let Err(e) = self
                .stores
                .stock
                .retire_marker(product_id, adjustment.id)
                .await
            {
                // Harmless: the marker then stays until Redis is flushed; it is never wrong.
                tracing::warn!(error = %e, adjustment_id = %adjustment.id, "could not retire a stock marker");
            }
        }
        Ok(Some(settled))
    }

    /// Settles what crashes and store errors left pending; returns how many it settled.
    pub async fn settle_pending(&self) -> Result<usize, ServiceError> {
        let mut settled = 0;
        for product_id in stock_ledger::products_with_pending(&self.stores.pg, 100).await? {
            settled += self
                .settle_product(product_id, true)
                .await?
                .map_or(0, |s| s.len());
        }
        Ok(settled)
    }

    /// Runs [`Self::settle_pending`] every `interval` until `shutdown` turns true.
    pub async fn run_recovery(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.settle_pending().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(settled = n, "settled pending stock adjustments"),
                Err(e) => tracing::warn!(error = %e, "stock recovery pass failed; will retry"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    pub async fn level(&self, product_id: Uuid) -> Result<StockLevel, ServiceError> {
        let (available, on_hand) = tokio::try_join!(
            async { Ok::<_, ServiceError>(self.stores.stock.available(&[product_id]).await?[0]) },
            async { Ok(stock_ledger::on_hand(&self.stores.pg, product_id).await?) },
        )?;
        Ok(StockLevel {
            product_id,
            available,
            on_hand,
        })
    }
}
