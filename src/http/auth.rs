//! Who is calling: the admin (one shared token from settings) or a customer (a token whose
//! SHA-256 is on file). Missing or unknown token → `401`; known token, wrong role → `403`.

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{AppState, error::ApiError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Customer(Uuid),
}

impl Caller {
    /// Admins may see everything; a customer only what is theirs.
    pub fn may_see(self, owner: Uuid) -> bool {
        match self {
            Self::Admin => true,
            Self::Customer(id) => id == owner,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or(ApiError::Unauthorized)?;
        // Digests compared in constant time: timing reveals neither how much of a guess was right
        // nor the token's length.
        let digest = |t: &str| Sha256::digest(t.as_bytes());
        if bool::from(digest(token).ct_eq(&digest(&state.admin_token))) {
            return Ok(Self::Admin);
        }
        match state.customers.authenticate(token).await? {
            Some(id) => Ok(Self::Customer(id)),
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Only the admin passes.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin => Ok(Self),
            Caller::Customer(_) => Err(ApiError::Forbidden),
        }
    }
}

/// Only a customer passes (the admin acts for nobody in particular).
pub struct CustomerCaller(pub Uuid);

impl FromRequestParts<AppState> for CustomerCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Customer(id) => Ok(Self(id)),
            Caller::Admin => Err(ApiError::Forbidden),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
