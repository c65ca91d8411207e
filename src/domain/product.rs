//! Catalog values: SKUs, names, categories and descriptions.

use super::{Invalid, bounded_text};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_CATEGORY_CHARS: usize = 64;
pub const MAX_DESCRIPTION_CHARS: usize = 5_000;
pub const MAX_SKU_CHARS: usize = 64;

/// A stock-keeping unit: 1..64 characters of `A-Z a-z 0-9 - _ .`, unique across live products.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if raw.is_empty() || raw.len() > MAX_SKU_CHARS || !raw.chars().all(ok_char) {
            return Err(Invalid::new(format!(
                "must be 1..{MAX_SKU_CHARS} characters of letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn name(raw: &str) -> Result<String, Invalid> {
    bounded_text(raw, 1, MAX_NAME_CHARS)
}

pub fn category(raw: &str) -> Result<String, Invalid> {
    bounded_text(raw, 1, MAX_CATEGORY_CHARS)
}

pub fn description(raw: &str) -> Result<String, Invalid> {
    bounded_text(raw, 0, MAX_DESCRIPTION_CHARS)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sku_rules() {
        assert!(Sku::parse("BAJU-HMIF.01_a").is_ok());
        for bad in ["", "has space", "ü", &"x".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn a_parsed_sku_round_trips(raw in "[A-Za-z0-9._-]{1,64}") {
            let sku = Sku::parse(&raw).unwrap();
            prop_assert_eq!(sku.as_str(), raw.as_str());
        }

        #[test]
        fn names_never_exceed_the_limit(raw in "\\PC{0,300}") {
            if let Ok(n) = name(&raw) {
                prop_assert!(!n.is_empty() && n.chars().count() <= MAX_NAME_CHARS);
            }
        }
    }
}
