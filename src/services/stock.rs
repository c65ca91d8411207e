//! Stock adjustments: recorded in Postgres, applied to Redis, settled back in Postgres.
//!
//! Two stores cannot commit together, so an adjustment moves through three steps, each safe to
//! repeat:
//!
//! 1. **record**: the adjustment is committed to `stock_adjustments` as `pending`. From here it
//!    cannot be lost.
//! 2. **apply**: under a row lock on that pending row, `adjust.lua` applies the delta to Redis,
//!    at most once per adjustment id (the script keeps an outcome marker), never below zero.
//! 3. **settle**: in the same transaction the row becomes `applied` and `on_hand` moves by the
//!    delta — or, if Redis refused it, the row is deleted. After the commit the Redis marker is
//!    dropped; that is safe because only pending rows are ever applied, under the lock.
//!
//! A crash or Redis error after step 1 leaves the row `pending`; the recovery loop (every API
//! process runs one) settles it later. Running the script again returns its first outcome
//! instead of applying twice, so nothing is lost and nothing is applied twice.

use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::{ServiceError, Stores};
use crate::{
    domain::stock::AdjustmentReason,
    store::{
        postgres::{products, stock_ledger, stock_ledger::PendingAdjustment},
        stock::AdjustOutcome,
    },
};

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

    /// Adjusts a live product's stock by `delta`.
    pub async fn adjust(
        &self,
        product_id: Uuid,
        delta: i64,
        reason: AdjustmentReason,
    ) -> Result<StockLevel, ServiceError> {
        if !products::is_live(&self.stores.pg, product_id).await? {
            return Err(ServiceError::NotFound("product"));
        }
        let adjustment = PendingAdjustment {
            id: Uuid::now_v7(),
            product_id,
            delta,
        };
        let mut conn = self.stores.pg.acquire().await?;
        stock_ledger::record_pending(&mut conn, adjustment, reason).await?;
        drop(conn);

        match self.settle(adjustment.id, false).await? {
            Some(Settlement::Applied { available, on_hand }) => Ok(StockLevel {
                product_id,
                available,
                on_hand,
            }),
            Some(Settlement::Refused { available }) => {
                Err(ServiceError::InsufficientStock { available })
            }
            // The recovery loop settled it between our two steps; report what it decided.
            None => {
                let level = self.level(product_id).await?;
                if stock_ledger::is_applied(&self.stores.pg, adjustment.id).await? {
                    Ok(level)
                } else {
                    Err(ServiceError::InsufficientStock {
                        available: level.available,
                    })
                }
            }
        }
    }

    /// Steps 2 and 3 for one pending adjustment; `None` when it is no longer pending (or, with
    /// `skip_locked`, when another process is settling it right now).
    pub async fn settle(
        &self,
        id: Uuid,
        skip_locked: bool,
    ) -> Result<Option<Settlement>, ServiceError> {
        let mut tx = self.stores.pg.begin().await?;
        let Some(adjustment) = stock_ledger::lock_pending(&mut tx, id, skip_locked).await? else {
            return Ok(None);
        };
        // On a Redis error the transaction rolls back on drop and the row stays pending.
        let outcome = self
            .stores
            .stock
            .adjust(adjustment.product_id, adjustment.id, adjustment.delta)
            .await?;
        let settlement = match outcome {
            AdjustOutcome::Applied { available } => Settlement::Applied {
                available,
                on_hand: stock_ledger::mark_applied(&mut tx, adjustment).await?,
            },
            AdjustOutcome::Refused { available } => {
                stock_ledger::discard(&mut tx, adjustment.id).await?;
                Settlement::Refused { available }
            }
        };
        tx.commit().await?;
        if let Err(e) = self
            .stores
            .stock
            .forget_adjustment(adjustment.product_id, adjustment.id)
            .await
        {
            // Harmless: the marker only costs a few bytes and is never consulted again.
            tracing::warn!(error = %e, adjustment_id = %id, "could not drop a settled stock marker");
        }
        Ok(Some(settlement))
    }

    /// Settles every adjustment left pending; returns how many it settled.
    pub async fn settle_pending(&self) -> Result<usize, ServiceError> {
        let mut settled = 0;
        for id in stock_ledger::pending_ids(&self.stores.pg, 100).await? {
            if self.settle(id, true).await?.is_some() {
                settled += 1;
            }
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
