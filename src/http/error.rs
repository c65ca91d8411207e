//! The one error type of the HTTP edge, rendered as `application/problem+json` (RFC 9457).
//!
//! Policy: inner modules return their own typed errors; they become an [`ApiError`] here and
//! nowhere else. A 5xx logs its full cause chain and shows the client nothing internal.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{domain::FieldViolation, services::ServiceError, store::StoreError};

#[derive(Debug)]
pub enum ApiError {
    /// Well-formed input that breaks a rule: `400` for the wrong shape, `422` for wrong values.
    Validation {
        status: StatusCode,
        detail: String,
        errors: Vec<FieldViolation>,
    },
    MalformedJson(String),
    UnsupportedMediaType,
    PayloadTooLarge,
    Unauthorized,
    Forbidden,
    NotFound(String),
    MethodNotAllowed,
    Conflict(String),
    InvalidTransition(String),
    InsufficientStock {
        available: i64,
    },
    PreconditionRequired,
    VersionMismatch {
        current: i64,
    },
    IdempotencyKeyReused,
    /// Checkout refused while the saga backlog is full; retrying later is safe.
    Overloaded,
    /// Checkout refused while the customer's own orders fill its bound; retrying later is safe.
    RateLimited,
    Unavailable(StoreError),
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

/// The problem document. Extra members (`current_version`, `available`) are allowed by the RFC.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
}

/// The problems any operation may answer, for the OpenAPI document (`responses(…, Problems)`).
/// Which of them an operation can really produce depends on its auth and body; `code` says
/// which one it is.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its derived description is used
pub enum Problems {
    #[response(
        status = 400,
        description = "malformed_json or validation_failed (wrong shape)",
        content_type = "application/problem+json"
    )]
    BadRequest(Problem),
    #[response(
        status = 401,
        description = "unauthorized: no or unknown bearer token",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    #[response(
        status = 403,
        description = "forbidden: the token's role may not do this",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    #[response(
        status = 404,
        description = "not_found",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    #[response(
        status = 405,
        description = "method_not_allowed",
        content_type = "application/problem+json"
    )]
    MethodNotAllowed(Problem),
    #[response(
        status = 409,
        description = "conflict, insufficient_stock or invalid_transition",
        content_type = "application/problem+json"
    )]
    Conflict(Problem),
    #[response(
        status = 412,
        description = "version_mismatch, with current_version",
        content_type = "application/problem+json"
    )]
    PreconditionFailed(Problem),
    #[response(
        status = 413,
        description = "payload_too_large",
        content_type = "application/problem+json"
    )]
    PayloadTooLarge(Problem),
    #[response(
        status = 415,
        description = "unsupported_media_type",
        content_type = "application/problem+json"
    )]
    UnsupportedMediaType(Problem),
    #[response(
        status = 422,
        description = "validation_failed (values that break a rule) or idempotency_key_reused",
        content_type = "application/problem+json"
    )]
    Unprocessable(Problem),
    #[response(
        status = 428,
        description = "precondition_required: send If-Match",
        content_type = "application/problem+json"
    )]
    PreconditionRequired(Problem),
    #[response(
        status = 429,
        description = "rate_limited: (checkout) this customer has too many orders pending; see Retry-After",
        content_type = "application/problem+json"
    )]
    TooManyRequests(Problem),
    #[response(
        status = 500,
        description = "internal",
        content_type = "application/problem+json"
    )]
    Internal(Problem),
    #[response(
        status = 503,
        description = "unavailable: a store is not answering, or (checkout) too many orders are waiting to settle; see Retry-After",
        content_type = "application/problem+json"
    )]
    Unavailable(Problem),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemField {
    pub field: String,
    pub message: String,
}

impl ApiError {
    /// A `400 validation_failed` about one field.
    pub fn bad_field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation {
            status: StatusCode::BAD_REQUEST,
            detail: "the request is not valid".into(),
            errors: vec![FieldViolation {
                field: field.to_owned(),
                message: message.into(),
            }],
        }
    }

    /// A `422 validation_failed` listing every rule the input broke.
    pub fn unprocessable(errors: Vec<FieldViolation>) -> Self {
        Self::Validation {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            detail: "the request breaks one or more rules".into(),
            errors,
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        use ApiError::*;
        match self {
            Validation { status, detail, .. } => (
                *status,
                "validation_failed",
                "Validation failed",
                detail.clone(),
            ),
            MalformedJson(detail) => (
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "Malformed JSON",
                detail.clone(),
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                "send the body as application/json".into(),
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                "the body is larger than this server accepts".into(),
            ),
            Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "send a valid bearer token in the Authorization header".into(),
            ),
            Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "this token may not do that".into(),
            ),
            NotFound(detail) => (
                StatusCode::NOT_FOUND,
                "not_found",
                "Not found",
                detail.clone(),
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
                "this resource does not support that method".into(),
            ),
            Conflict(detail) => (StatusCode::CONFLICT, "conflict", "Conflict", detail.clone()),
            InvalidTransition(detail) => (
                StatusCode::CONFLICT,
                "invalid_transition",
                "Invalid transition",
                detail.clone(),
            ),
            InsufficientStock { available } => (
                StatusCode::CONFLICT,
                "insufficient_stock",
                "Insufficient stock",
                format!("only {available} units are available"),
            ),
            PreconditionRequired => (
                StatusCode::PRECONDITION_REQUIRED,
                "precondition_required",
                "Precondition required",
                "send If-Match with the version you last read".into(),
            ),
            VersionMismatch { current } => (
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                "Version mismatch",
                format!("the resource has changed; it is now at version {current}"),
            ),
            IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
                "this Idempotency-Key was already used with a different request".into(),
            ),
            Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                "too many orders are waiting to settle; retry shortly with the same Idempotency-Key"
                    .into(),
            ),
            RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
                "too many of your orders are waiting to settle; retry shortly with the same \
                 Idempotency-Key"
                    .into(),
            ),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                "a backing store is not answering; try again shortly".into(),
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "something went wrong on our side".into(),
            ),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(what) => Self::NotFound(format!("no such {what}")),
            ServiceError::Conflict(detail) => Self::Conflict(detail),
            ServiceError::InvalidTransition(detail) => Self::InvalidTransition(detail),
            ServiceError::VersionMismatch { current } => Self::VersionMismatch { current },
            ServiceError::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            ServiceError::InsufficientStock { available } => Self::InsufficientStock { available },
            ServiceError::Overloaded => Self::Overloaded,
            ServiceError::RateLimited => Self::RateLimited,
            ServiceError::Invalid(errors) => Self::unprocessable(errors),
            ServiceError::Store(e @ StoreError::Unavailable { .. }) => Self::Unavailable(e),
            ServiceError::Store(e) => Self::Internal(Box::new(e)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Unavailable(e) => tracing::warn!(error = %chain(e), "store unavailable"),
            Self::Internal(e) => tracing::error!(error = %chain(e.as_ref()), "internal error"),
            _ => {}
        }
        let (status, code, title, detail) = self.parts();
        let problem = Problem {
            kind: format!("https://orderly.dev/problems/{code}"),
            title,
            status: status.as_u16(),
            detail,
            code,
            errors: match &self {
                Self::Validation { errors, .. } => errors
                    .iter()
                    .map(|v| ProblemField {
                        field: v.field.clone(),
                        message: v.message.clone(),
                    })
                    .collect(),
                _ => Vec::new(),
            },
            current_version: match self {
                Self::VersionMismatch { current } => Some(current),
                _ => None,
            },
            available: match self {
                Self::InsufficientStock { available } => Some(available),
                _ => None,
            },
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// `error: cause: cause …`, for logs only.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
