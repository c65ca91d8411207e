//! Stock rules. Redis applies them inside `lua/adjust.lua`; this is the same rule as pure code,
//! used to validate input and as the model the Lua script is property-tested against.

use super::Invalid;

/// The largest single change (or opening stock) accepted, in units.
pub const MAX_DELTA: i64 = 1_000_000;

/// Why stock changed. `Initial` is the opening stock of a new product; clients send the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjustmentReason {
    Restock,
    Correction,
    Damage,
    Initial,
}

impl AdjustmentReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restock => "restock",
            Self::Correction => "correction",
            Self::Damage => "damage",
            Self::Initial => "initial",
        }
    }

    /// A reason as stored by [`Self::as_str`]; the column's CHECK allows no other.
    pub fn parse_stored(raw: &str) -> Self {
        match raw {
            "restock" => Self::Restock,
            "correction" => Self::Correction,
            "damage" => Self::Damage,
            _ => Self::Initial,
        }
    }

    /// The reasons a client may give (`initial` is reserved for product creation).
    pub fn parse_requested(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "restock" => Ok(Self::Restock),
            "correction" => Ok(Self::Correction),
            "damage" => Ok(Self::Damage),
            _ => Err(Invalid::new("must be one of restock, correction, damage")),
        }
    }
}

/// A requested change of stock: non-zero, at most [`MAX_DELTA`] either way.
pub fn delta(raw: i64) -> Result<i64, Invalid> {
    if raw != 0 && raw.unsigned_abs() <= MAX_DELTA.unsigned_abs() {
        Ok(raw)
    } else {
        Err(Invalid::new(format!(
            "must be a non-zero integer between -{MAX_DELTA} and {MAX_DELTA}"
        )))
    }
}

/// The stock a new product opens with.
pub fn initial(raw: i64) -> Result<i64, Invalid> {
    if (0..=MAX_DELTA).contains(&raw) {
        Ok(raw)
    } else {
        Err(Invalid::new(format!("must be between 0 and {MAX_DELTA}")))
    }
}

/// There is less stock available than a negative adjustment would remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insufficient {
    pub available: i64,
}

/// Available stock after `delta`; refused when it would go below zero.
pub fn apply(available: i64, delta: i64) -> Result<i64, Insufficient> {
    match available.checked_add(delta) {
        Some(after) if after >= 0 => Ok(after),
        _ => Err(Insufficient { available }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(
            AdjustmentReason::parse_requested("damage"),
            Ok(AdjustmentReason::Damage)
        );
        assert!(AdjustmentReason::parse_requested("initial").is_err());
        assert!(AdjustmentReason::parse_requested("Restock").is_err());
    }

    #[test]
    fn delta_bounds() {
        assert!(delta(0).is_err());
        assert!(delta(MAX_DELTA + 1).is_err());
        assert!(delta(-MAX_DELTA).is_ok());
        assert!(delta(i64::MIN).is_err());
    }

    proptest! {
        #[test]
        fn stock_never_goes_below_zero(start in 0i64..1000, deltas in prop::collection::vec(-50i64..50, 0..100)) {
            let mut available = start;
            let mut applied = 0;
            for d in deltas {
                match apply(available, d) {
                    Ok(after) => { available = after; applied += d; }
                    Err(Insufficient { available: seen }) => prop_assert!(seen + d < 0),
                }
                prop_assert!(available >= 0);
            }
            prop_assert_eq!(available, start + applied);
        }
    }
}
