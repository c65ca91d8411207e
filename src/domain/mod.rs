//! The domain: values that validate themselves and the pure rules of money, stock and reviews.
//!
//! Nothing here does I/O. A handler parses raw input into these types once; everything past the
//! edge can then trust them.

pub mod customer;
pub mod money;
pub mod order;
pub mod payment;
pub mod product;
pub mod reservation;
pub mod review;
pub mod saga;
pub mod stock;
pub mod version;

use thiserror::Error;

/// One reason a value was refused, in words a client can show.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// A refused field of a request, named by its path (`items[0].quantity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub message: String,
}

/// Collects every violation of a request so a client learns all of them at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records the error of `result` under `field` and returns its value when it had one.
    pub fn check<T>(&mut self, field: &str, result: Result<T, Invalid>) -> Option<T> {
        result
            .map_err(|Invalid(message)| {
                self.0.push(FieldViolation {
                    field: field.to_owned(),
                    message,
                })
            })
            .ok()
    }

    /// `Ok(value)` when nothing was recorded, otherwise every violation.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self.0)
        }
    }
}

/// Trims `raw` and checks its length in characters (not bytes) against `min..=max`.
pub(crate) fn bounded_text(raw: &str, min: usize, max: usize) -> Result<String, Invalid> {
    let trimmed = raw.trim();
    let chars = trimmed.chars().count();
    if chars < min {
        return Err(Invalid::new(if min == 1 {
            "must not be empty".to_owned()
        } else {
            format!("must be at least {min} characters")
        }));
    }
    if chars > max {
        return Err(Invalid::new(format!("must be at most {max} characters")));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Invalid::new("must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_counts_characters_not_bytes() {
        assert_eq!(bounded_text(" héllo ", 1, 5).unwrap(), "héllo");
        assert!(bounded_text("héllo!", 1, 5).is_err());
        assert!(bounded_text("   ", 1, 5).is_err());
        assert!(bounded_text("a\u{0}b", 1, 5).is_err());
        assert_eq!(
            bounded_text("a\r\nb", 1, 5).unwrap(),
            "a\r\nb",
            "textareas send CRLF"
        );
    }

    #[test]
    fn violations_collect_every_field() {
        let mut v = Violations::default();
        assert_eq!(v.check("a", Ok::<_, Invalid>(1)), Some(1));
        assert_eq!(v.check::<i32>("b", Err(Invalid::new("bad"))), None);
        let errors = v.finish(|| ()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "b");
    }
}
