//! Optimistic concurrency: which versions of a resource a conditional update may apply to.

use super::Invalid;

/// The condition of an `If-Match` header (RFC 9110 §13.1.1), over integer versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `*`: any current version.
    Any,
    /// One of these versions. Weak tags and tags that are not versions never match (If-Match
    /// compares strongly), so this may be empty: such a request always fails with a `412`.
    OneOf(Vec<i64>),
}

impl Precondition {
    /// Parses `*`, or a comma-separated list of entity tags (`"3"`, `W/"3"`); a bare `3` is
    /// accepted too, for clients that forget the quotes.
    pub fn parse_if_match(raw: &str) -> Result<Self, Invalid> {
        let raw = raw.trim();
        if raw == "*" {
            return Ok(Self::Any);
        }
        let mut versions = Vec::new();
        for tag in raw.split(',').map(str::trim) {
            let (weak, opaque) = match tag.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, tag),
            };
            let inner = match opaque.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                Some(inner)
                    if inner
                        .bytes()
                        .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b)) =>
                {
                    inner
                }
                Some(_) => return Err(malformed()),
                None if !weak
                    && !opaque.is_empty()
                    && opaque.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    opaque
                }
                None => return Err(malformed()),
            };
            if !weak && let Ok(version) = inner.parse::<i64>() {
                versions.push(version);
            }
        }
        Ok(Self::OneOf(versions))
    }

    /// The versions to match, or `None` for any.
    pub fn versions(&self) -> Option<&[i64]> {
        match self {
            Self::Any => None,
            Self::OneOf(versions) => Some(versions),
        }
    }
}

fn malformed() -> Invalid {
    Invalid::new("must be * or a list of entity tags like \"3\"")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Precondition::{self, *};

    #[test]
    fn if_match_headers() {
        let parse = Precondition::parse_if_match;
        assert_eq!(parse("\"3\""), Ok(OneOf(vec![3])));
        assert_eq!(parse(" * "), Ok(Any));
        assert_eq!(parse("\"1\", \"2\""), Ok(OneOf(vec![1, 2])));
        assert_eq!(parse("W/\"1\""), Ok(OneOf(vec![])), "weak tags never match");
        assert_eq!(
            parse("\"abc\""),
            Ok(OneOf(vec![])),
            "a tag that is no version never matches"
        );
        assert_eq!(parse("7"), Ok(OneOf(vec![7])));
        for bad in ["", "banana", "\"1", "W/1", "\"1\",", "\"a b\""] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn strong_tag_lists_round_trip(versions in prop::collection::vec(0i64..i64::MAX, 1..6)) {
            let header = versions.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ");
            prop_assert_eq!(Precondition::parse_if_match(&header), Ok(OneOf(versions)));
        }

        #[test]
        fn any_header_parses_or_is_refused_without_panicking(raw in "\\PC{0,40}") {
            let _ = Precondition::parse_if_match(&raw);
        }
    }
}
