//! Review values and the rating aggregate.

use super::{Invalid, bounded_text};

pub const MAX_COMMENT_CHARS: usize = 2_000;

/// A star rating, 1 to 5.
pub fn rating(raw: i64) -> Result<u8, Invalid> {
    match u8::try_from(raw) {
        Ok(stars @ 1..=5) => Ok(stars),
        _ => Err(Invalid::new("must be an integer from 1 to 5")),
    }
}

/// A comment of up to 2,000 characters; empty is allowed.
pub fn comment(raw: &str) -> Result<String, Invalid> {
    bounded_text(raw, 0, MAX_COMMENT_CHARS)
}

/// The count and sum of a product's ratings: what is aggregated and cached, and all a summary
/// needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RatingTotals {
    pub count: u64,
    pub sum: i64,
}

impl RatingTotals {
    pub fn summary(self) -> RatingSummary {
        RatingSummary::from_totals(self.sum, self.count)
    }
}

/// The average and count of a product's ratings, derived from the reviews themselves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatingSummary {
    pub average: Option<f64>,
    pub count: u64,
}

impl RatingSummary {
    pub const NONE: Self = Self {
        average: None,
        count: 0,
    };

    /// From the sum and count of ratings; the average is rounded to two decimals for display.
    pub fn from_totals(sum: i64, count: u64) -> Self {
        if count == 0 {
            return Self::NONE;
        }
        let average = sum as f64 / count as f64;
        Self {
            average: Some((average * 100.0).round() / 100.0),
            count,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ratings() {
        assert_eq!(rating(5), Ok(5));
        for bad in [0, 6, -1, 256, i64::MAX] {
            assert!(rating(bad).is_err());
        }
    }

    proptest! {
        #[test]
        fn the_average_lies_between_the_extremes(stars in prop::collection::vec(1i64..=5, 1..200)) {
            let summary = RatingSummary::from_totals(stars.iter().sum(), stars.len() as u64);
            let avg = summary.average.unwrap();
            prop_assert!(avg >= *stars.iter().min().unwrap() as f64 - 0.005);
            prop_assert!(avg <= *stars.iter().max().unwrap() as f64 + 0.005);
            prop_assert_eq!(summary.count, stars.len() as u64);
        }
    }

    #[test]
    fn no_reviews_no_average() {
        assert_eq!(RatingSummary::from_totals(0, 0), RatingSummary::NONE);
    }
}
