//! Customer values.

use super::{Invalid, bounded_text};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_EMAIL_CHARS: usize = 254;

pub fn name(raw: &str) -> Result<String, Invalid> {
    bounded_text(raw, 1, MAX_NAME_CHARS)
}

/// An email address, lower-cased so uniqueness ignores case. Deliberately loose: one `@`, a
/// non-empty local part, a dotted domain, no spaces. Real validation is a confirmation mail.
pub fn email(raw: &str) -> Result<String, Invalid> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL_CHARS
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if valid {
        Ok(email)
    } else {
        Err(Invalid::new(
            "must be an email address like name@example.com",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(email(" Budi@Example.COM ").unwrap(), "budi@example.com");
        for bad in [
            "",
            "budi",
            "@x.com",
            "budi@",
            "budi@x",
            "a b@x.com",
            "a@b@c.com",
            "a@.com",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }
}
