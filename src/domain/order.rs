//! Orders: what a checkout may ask for, and the statuses and reasons an order moves through.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{FieldViolation, Invalid, Violations};

/// Lines per order.
pub const MAX_LINES: usize = 50;
/// Units per line.
pub const MAX_QUANTITY: i64 = 1_000;

/// One line of an order: a product and how many units. The one shape of a line from the
/// checkout to the stock scripts: the saga's commands carry it, and the stock store takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i64,
}

impl OrderLine {
    pub const fn new(product_id: Uuid, quantity: i64) -> Self {
        Self {
            product_id,
            quantity,
        }
    }
}

/// The lines of a checkout as the client sent them, once their rules hold: 1..=50 of them,
/// quantities 1..=1000, no product twice.
pub fn lines(requested: &[OrderLine]) -> Result<Vec<OrderLine>, Vec<FieldViolation>> {
    let mut violations = Violations::default();
    if requested.is_empty() || requested.len() > MAX_LINES {
        violations.check::<()>(
            "items",
            Err(Invalid::new(format!(
                "must hold between 1 and {MAX_LINES} lines"
            ))),
        );
    }
    let mut seen = HashSet::with_capacity(requested.len());
    let mut lines = Vec::with_capacity(requested.len());
    for (i, line) in requested.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            violations.check::<()>(
                &format!("items[{i}].quantity"),
                Err(Invalid::new(format!(
                    "must be an integer between 1 and {MAX_QUANTITY}"
                ))),
            );
        }
        if !seen.insert(line.product_id) {
            violations.check::<()>(
                &format!("items[{i}].product_id"),
                Err(Invalid::new("this product is already on another line")),
            );
        }
        lines.push(*line);
    }
    violations.finish(|| lines)
}

/// The total of priced lines. Cannot overflow: 50 lines × 1,000 units × the largest price.
pub fn total(priced: impl IntoIterator<Item = (i64, i64)>) -> i64 {
    priced
        .into_iter()
        .map(|(quantity, price)| quantity * price)
        .sum()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// The checkout saga is running.
    Pending,
    /// Stock is held and the wallet was charged.
    Confirmed,
    /// The saga failed before anything needed undoing.
    Rejected,
    /// Every completed step was compensated.
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [Self; 4] = [
        Self::Pending,
        Self::Confirmed,
        Self::Rejected,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| Invalid::new("must be one of pending, confirmed, rejected, cancelled"))
    }

    /// A rejected or cancelled order never changes again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Rejected | Self::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderReason {
    InsufficientStock,
    InsufficientFunds,
    CancelledByCustomer,
    TimedOut,
    ProductUnavailable,
}

impl OrderReason {
    pub const ALL: [Self; 5] = [
        Self::InsufficientStock,
        Self::InsufficientFunds,
        Self::CancelledByCustomer,
        Self::TimedOut,
        Self::ProductUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InsufficientStock => "insufficient_stock",
            Self::InsufficientFunds => "insufficient_funds",
            Self::CancelledByCustomer => "cancelled_by_customer",
            Self::TimedOut => "timed_out",
            Self::ProductUnavailable => "product_unavailable",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(quantity: i64) -> OrderLine {
        OrderLine {
            product_id: Uuid::new_v4(),
            quantity,
        }
    }

    #[test]
    fn lines_are_bounded_and_unique() {
        assert!(lines(&[line(1), line(1000)]).is_ok());
        assert_eq!(lines(&[]).unwrap_err()[0].field, "items");
        assert_eq!(lines(&vec![line(1); 51]).unwrap_err()[0].field, "items");
        let bad = lines(&[line(0), line(1001), line(-3)]).unwrap_err();
        let fields: Vec<_> = bad.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "items[0].quantity",
                "items[1].quantity",
                "items[2].quantity"
            ]
        );
        let twice = line(2);
        let dup = lines(&[twice, twice]).unwrap_err();
        assert_eq!(dup[0].field, "items[1].product_id");
    }

    #[test]
    fn statuses_and_reasons_round_trip() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Ok(s));
        }
        for r in OrderReason::ALL {
            assert_eq!(OrderReason::parse(r.as_str()), Some(r));
        }
        assert!(OrderStatus::parse("shipped").is_err());
    }

    #[test]
    fn the_largest_order_fits() {
        let max = super::super::money::MAX_AMOUNT_MINOR;
        let t = total((0..MAX_LINES).map(|_| (MAX_QUANTITY, max)));
        assert_eq!(t, 50 * 1000 * max);
    }
}
