//! Money is an integer count of minor units in one currency; never a float.

use std::fmt;

use super::Invalid;

/// The largest price or single deposit accepted, in minor units. Chosen so that an order of
/// 50 lines × 1,000 units at this price still fits an `i64` with room to spare.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// The largest wallet balance; deposits that would pass it are refused instead of overflowing.
pub const MAX_BALANCE_MINOR: i64 = 1_000_000_000_000_000;

/// An ISO 4217 currency code (`IDR`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::new("must be a three-letter ISO 4217 code"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A price: zero (a free item) up to [`MAX_AMOUNT_MINOR`].
pub fn price(minor: i64) -> Result<i64, Invalid> {
    if (0..=MAX_AMOUNT_MINOR).contains(&minor) {
        Ok(minor)
    } else {
        Err(Invalid::new(format!(
            "must be between 0 and {MAX_AMOUNT_MINOR} minor units"
        )))
    }
}

/// A deposit: strictly positive, at most [`MAX_AMOUNT_MINOR`].
pub fn deposit(minor: i64) -> Result<i64, Invalid> {
    if (1..=MAX_AMOUNT_MINOR).contains(&minor) {
        Ok(minor)
    } else {
        Err(Invalid::new(format!(
            "must be between 1 and {MAX_AMOUNT_MINOR} minor units"
        )))
    }
}

/// An opening balance: zero or a valid deposit.
pub fn opening_balance(minor: i64) -> Result<i64, Invalid> {
    if minor == 0 { Ok(0) } else { deposit(minor) }
}

/// The balance after a deposit, or `None` when it would pass [`MAX_BALANCE_MINOR`].
pub fn credit(balance: i64, amount: i64) -> Option<i64> {
    balance
        .checked_add(amount)
        .filter(|&b| b <= MAX_BALANCE_MINOR)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn currency_codes() {
        assert_eq!(Currency::parse("IDR").unwrap().as_str(), "IDR");
        for bad in ["idr", "ID", "IDRR", "I1R", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn price_and_deposit_bounds() {
        assert!(price(0).is_ok());
        assert!(price(-1).is_err());
        assert!(price(MAX_AMOUNT_MINOR + 1).is_err());
        assert!(deposit(0).is_err());
        assert!(deposit(1).is_ok());
        assert_eq!(opening_balance(0), Ok(0));
    }

    #[test]
    fn largest_order_fits_an_i64() {
        assert!(MAX_AMOUNT_MINOR.checked_mul(1_000 * 50).is_some());
    }

    proptest! {
        #[test]
        fn credit_never_passes_the_cap(balance in 0..=MAX_BALANCE_MINOR, amount in 1..=MAX_AMOUNT_MINOR) {
            match credit(balance, amount) {
                Some(after) => prop_assert_eq!(after, balance + amount),
                None => prop_assert!(balance + amount > MAX_BALANCE_MINOR),
            }
        }
    }
}
