//! Extractors whose rejections are [`ApiError`]s, so every malformed request gets a problem
//! body with the right `code` instead of axum's plain-text defaults.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use crate::domain::{FieldViolation, Invalid, version::Precondition};

/// A JSON body: `application/json` (or `…+json`), within the body limit, valid UTF-8 JSON whose
/// shape matches `T` exactly (request types deny unknown fields).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        // `Bytes` honours the router's `DefaultBodyLimit`; its only 413 is that limit.
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::MalformedJson("the body could not be read".into())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a body, telling broken JSON (`malformed_json`) from JSON of the wrong shape
/// (`validation_failed`, naming the field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would also build a struct from a JSON array; the contract says objects.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ApiError::bad_field("body", "the body must be a JSON object"),
                Err(e) => json_error(e, "body"),
            },
        );
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let field = match error.path().to_string() {
            path if path == "." || path.is_empty() => "body".to_owned(),
            path => path,
        };
        json_error(error.into_inner(), &field)
    })?;
    deserializer.end().map_err(|e| json_error(e, "body"))?;
    Ok(value)
}

fn json_error(error: serde_json::Error, field: &str) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => ApiError::bad_field(field, strip_position(&error.to_string())),
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::MalformedJson(format!("the body is not valid JSON: {error}"))
        }
    }
}

/// serde_json appends " at line 1 column 9" to data errors; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// A UUID path segment (`/products/{id}`); anything else is a `400`, not a `404` or a `500`.
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::bad_field("id", "must be a UUID"))?;
        raw.parse()
            .map(Id)
            .map_err(|_| ApiError::bad_field("id", "must be a UUID"))
    }
}

/// Describes the `{id}` segment in the OpenAPI document (`params(Id)` on a path).
impl utoipa::IntoParams for Id {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::{
            KnownFormat, ObjectBuilder, SchemaFormat, Type,
            path::{ParameterBuilder, ParameterIn},
        };
        vec![
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(utoipa::openapi::Required::True)
                .description(Some("the resource's UUID"))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                ))
                .build(),
        ]
    }
}

/// The OpenAPI schema of a query parameter that takes one of `values`.
pub fn string_enum<const N: usize>(values: [&str; N]) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values))
        .build()
}

/// Query parameters, rejecting unknown types with `400 validation_failed`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| ApiError::bad_field("query", rejection.body_text()))
    }
}

/// The `If-Match` precondition of an update: missing → `428`, malformed → `400`.
pub struct IfMatch(pub Precondition);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(header::IF_MATCH).iter().peekable();
        if values.peek().is_none() {
            return Err(ApiError::PreconditionRequired);
        }
        let joined = values
            .map(|v| v.to_str().map_err(|_| ()))
            .collect::<Result<Vec<_>, _>>()
            .map(|vs| vs.join(","))
            .map_err(|()| ApiError::bad_field("If-Match", "must be visible ASCII"))?;
        Precondition::parse_if_match(&joined)
            .map(IfMatch)
            .map_err(|Invalid(message)| ApiError::bad_field("If-Match", message))
    }
}

/// An optional `Idempotency-Key` header (`Option<IdempotencyKey>`): 1..255 visible ASCII
/// characters.
pub struct IdempotencyKey(pub String);

const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn idempotency_key(parts: &Parts) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(raw) = parts.headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bytes = raw.as_bytes();
    if (1..=255).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b)) {
        Ok(Some(IdempotencyKey(
            String::from_utf8_lossy(bytes).into_owned(),
        )))
    } else {
        Err(ApiError::bad_field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ))
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, ApiError> {
        idempotency_key(parts)
    }
}

/// A required `Idempotency-Key` header: missing → `400`.
pub struct RequiredIdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequiredIdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        match idempotency_key(parts)? {
            Some(IdempotencyKey(key)) => Ok(Self(key)),
            None => Err(ApiError::bad_field(
                "Idempotency-Key",
                "this request requires an Idempotency-Key header",
            )),
        }
    }
}

/// The ETag of a resource at `version`.
pub fn etag(version: i64) -> [(header::HeaderName, String); 1] {
    [(header::ETAG, format!("\"{version}\""))]
}

/// Turns collected domain violations into a `422`.
pub fn validated<T>(result: Result<T, Vec<FieldViolation>>) -> Result<T, ApiError> {
    result.map_err(ApiError::unprocessable)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        quantity: i64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Line>,
    }

    fn code(result: Result<Body, ApiError>) -> (&'static str, Option<String>) {
        match result.unwrap_err() {
            ApiError::Validation { errors, .. } => {
                ("validation_failed", Some(errors[0].field.clone()))
            }
            ApiError::MalformedJson(_) => ("malformed_json", None),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn tells_broken_json_from_wrong_shapes() {
        assert_eq!(code(parse_json(b"{\"items\": [")).0, "malformed_json");
        assert_eq!(
            code(parse_json(br#"{"items": []} trailing"#)).0,
            "malformed_json"
        );
        assert_eq!(code(parse_json(b"\xff\xfe")).0, "malformed_json");
        assert_eq!(
            code(parse_json(br#"{"items": [{"quantity": "two"}]}"#)),
            ("validation_failed", Some("items[0].quantity".into()))
        );
        assert_eq!(
            code(parse_json(br#"{"items": [], "extra": 1}"#)).0,
            "validation_failed"
        );
        assert_eq!(code(parse_json(br#"{}"#)).0, "validation_failed");
        assert_eq!(
            code(parse_json(br#"[[{"quantity": 1}]]"#)).0,
            "validation_failed"
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_json::<Body>(deep.as_bytes()).is_err());
        assert!(parse_json::<serde_json::Value>(deep.as_bytes()).is_err());
    }

    #[test]
    fn json_content_types() {
        let v = |s: &'static str| header::HeaderValue::from_static(s);
        assert!(is_json(Some(&v("application/json"))));
        assert!(is_json(Some(&v("Application/JSON; charset=utf-8"))));
        assert!(is_json(Some(&v("application/merge-patch+json"))));
        assert!(!is_json(Some(&v("text/plain"))));
        assert!(!is_json(None));
    }
}
