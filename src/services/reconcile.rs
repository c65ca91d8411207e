//! `orderly reconcile`: Redis is the fast path for stock, not its record. Postgres keeps units on
//! hand and the saga tables say which orders hold stock, so Redis can be rebuilt exactly after
//! it lost its data, or checked for drift without changing anything. The rules are in
//! [`crate::domain::reservation`]; this joins the stores around them.

use std::{collections::BTreeMap, fmt};

use uuid::Uuid;

use super::{ServiceError, Stores, stock::StockAdjuster};
use crate::{
    domain::reservation::{self, Expected, Level, Overcommitted, Record},
    store::{
        postgres::{orders, sagas, stock_ledger},
        stock::RebuiltRecord,
    },
};

/// One way Redis disagrees with Postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    Record {
        order_id: Uuid,
        expected: Expected,
        found: Option<String>,
    },
    Counters {
        product_id: Uuid,
        expected: Level,
        found: Level,
    },
    /// Postgres's own reservations take more than the product has on hand.
    Overcommitted { product_id: Uuid, level: Level },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Record {
                order_id,
                expected,
                found,
            } => write!(
                f,
                "order {order_id}: reservation record {}, expected {}",
                found.as_deref().unwrap_or("missing"),
                match expected {
                    Expected::Absent => "none",
                    Expected::Settled(record) => record.as_str(),
                    Expected::Undecided | Expected::Releasing { decided: None } => "any",
                    Expected::Releasing {
                        decided: Some(Record::Rejected),
                    } => "rejected or released",
                    Expected::Releasing { .. } => "reserved or released",
                }
            ),
            Self::Counters {
                product_id,
                expected,
                found,
            } => write!(
                f,
                "product {product_id}: available {} held {} in Redis, expected available {} held {}",
                found.available, found.held, expected.available, expected.held
            ),
            Self::Overcommitted { product_id, level } => write!(
                f,
                "product {product_id}: live reservations hold {} units but only {} are on hand",
                level.held,
                level.available + level.held
            ),
        }
    }
}

/// What a check or a rebuild looked at and found.
#[derive(Debug, Default)]
pub struct Report {
    pub products: usize,
    pub orders: usize,
    /// Orders whose reservation holds stock.
    pub holding: usize,
    pub drift: Vec<Drift>,
}

pub struct Reconciler {
    stores: Stores,
}

impl Reconciler {
    pub fn new(stores: Stores) -> Self {
        Self { stores }
    }

    /// Compares Redis with what Postgres says it must hold; changes nothing. Exact on a quiet
    /// system; under traffic a write landing between the two reads can show as drift, so a
    /// drift worth acting on is one that a second check still finds.
    pub async fn check(&self) -> Result<Report, ServiceError> {
        let steps = sagas::stock_steps(&self.stores.pg).await?;
        let ids: Vec<Uuid> = steps.iter().map(|s| s.order_id).collect();
        let found = self.stores.stock.record_states(&ids).await?;
        let mut report = Report {
            orders: steps.len(),
            ..Report::default()
        };
        let mut holding = Vec::new();
        for (step, found) in steps.iter().zip(found) {
            let expected = reservation::expected(step.reserve, step.decided, step.release);
            let record = found.as_deref().and_then(Record::parse);
            if record.map(Record::as_str) != found.as_deref() || !expected.accepts(record) {
                report.drift.push(Drift::Record {
                    order_id: step.order_id,
                    expected,
                    found,
                });
            }
            // Counters follow Postgres where it has decided; where a command is in flight,
            // whatever Redis's record says is right.
            let holds = match expected {
                Expected::Settled(settled) => settled == Record::Reserved,
                Expected::Undecided | Expected::Releasing { .. } => {
                    record == Some(Record::Reserved)
                }
                Expected::Absent => false,
            };
            if holds {
                holding.push(step.order_id);
            }
        }
        report.holding = holding.len();

        let mut on_hand: BTreeMap<Uuid, i64> = stock_ledger::all_on_hand(&self.stores.pg)
            .await?
            .into_iter()
            .collect();
        // A pending adjustment is in Redis once adjust.lua applied it, before Postgres settles it.
        for pending in stock_ledger::all_pending(&self.stores.pg).await? {
            let applied = self
                .stores
                .stock
                .adjustment_applied(pending.product_id, pending.id)
                .await?;
            if applied == Some(true) {
                *on_hand.entry(pending.product_id).or_default() += pending.delta;
            }
        }
        let lines = orders::lines(&self.stores.pg, &holding).await?;
        let expected = match reservation::levels(on_hand, lines.values().flatten()) {
            Ok(levels) => levels,
            Err(Overcommitted(over)) => {
                report.drift.extend(
                    over.into_iter()
                        .map(|(product_id, level)| Drift::Overcommitted { product_id, level }),
                );
                return Ok(report);
            }
        };
        let products: Vec<Uuid> = expected.keys().copied().collect();
        let found = self.stores.stock.counters(&products).await?;
        report.products = products.len();
        for ((&product_id, &expected), found) in expected.iter().zip(found) {
            if expected != found {
                report.drift.push(Drift::Counters {
                    product_id,
                    expected,
                    found,
                });
            }
        }
        Ok(report)
    }

    /// Replaces Redis's stock keys with what Postgres says, then settles pending adjustments.
    /// Run it with the API and workers stopped: a reserve landing mid-rebuild would be lost.
    /// Refuses, writing nothing, when Postgres's own reservations overcommit a product.
    pub async fn rebuild(&self) -> Result<Report, ServiceError> {
        let steps = sagas::stock_steps(&self.stores.pg).await?;
        let records: Vec<(Uuid, Record)> = steps
            .iter()
            .filter_map(|s| {
                reservation::expected(s.reserve, s.decided, s.release)
                    .rebuilt()
                    .map(|r| (s.order_id, r))
            })
            .collect();
        let holding: Vec<Uuid> = records
            .iter()
            .filter(|(_, r)| *r == Record::Reserved)
            .map(|&(id, _)| id)
            .collect();
        let lines = orders::lines(&self.stores.pg, &holding).await?;
        let on_hand = stock_ledger::all_on_hand(&self.stores.pg).await?;
        let levels = reservation::levels(on_hand, lines.values().flatten()).map_err(|over| {
            let named: Vec<String> = over
                .0
                .iter()
                .map(|&(product_id, level)| Drift::Overcommitted { product_id, level }.to_string())
                .collect();
            ServiceError::Conflict(format!("{over}: {}", named.join("; ")))
        })?;
        let rebuilt: Vec<RebuiltRecord<'_>> = records
            .iter()
            .map(|&(order_id, record)| RebuiltRecord {
                order_id,
                record,
                lines: lines.get(&order_id).map_or(&[], Vec::as_slice),
            })
            .collect();
        self.stores.stock.rebuild(&levels, &rebuilt).await?;
        StockAdjuster::new(self.stores.clone())
            .settle_pending()
            .await?;
        Ok(Report {
            products: levels.len(),
            orders: steps.len(),
            holding: holding.len(),
            drift: Vec::new(),
        })
    }
}
