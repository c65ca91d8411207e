//! `/products/{id}/reviews`.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    AppState,
    auth::CustomerCaller,
    error::{ApiError, Problems},
    extract::{Id, JsonBody, Query, validated},
    page::{self, PageBody},
};
use crate::{
    domain::{Violations, review},
    store::documents::ReviewDoc,
};

#[derive(Serialize, ToSchema)]
pub struct ReviewBody {
    pub id: String,
    pub product_id: String,
    pub customer_id: String,
    pub rating: i32,
    pub comment: String,
    /// True when the customer has a confirmed order containing the product.
    pub verified_purchase: bool,
    pub created_at: DateTime<Utc>,
}

impl From<ReviewDoc> for ReviewBody {
    fn from(r: ReviewDoc) -> Self {
        Self {
            created_at: DateTime::from_timestamp_millis(r.created_at.timestamp_millis())
                .unwrap_or_default(),
            id: r.id,
            product_id: r.product_id,
            customer_id: r.customer_id,
            rating: r.rating,
            comment: r.comment,
            verified_purchase: r.verified_purchase,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReview {
    /// 1 to 5 stars.
    #[schema(minimum = 1, maximum = 5)]
    pub rating: i64,
    /// Up to 2,000 characters.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub comment: String,
}

/// Unknown query parameters are ignored, as on every list endpoint.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Reviews a product (customer).
#[utoipa::path(post, path = "/products/{id}/reviews", params(Id), tag = "reviews", request_body = CreateReview,
    security(("bearer" = [])),
    responses((status = 201, body = ReviewBody), Problems))]
pub async fn create_review(
    State(state): State<AppState>,
    CustomerCaller(customer_id): CustomerCaller,
    Id(product_id): Id,
    JsonBody(body): JsonBody<CreateReview>,
) -> Result<impl IntoResponse, ApiError> {
    let mut v = Violations::default();
    let rating = v.check("rating", review::rating(body.rating));
    let comment = v.check("comment", review::comment(&body.comment));
    let (rating, comment) = validated(v.finish(|| (rating.unwrap(), comment.unwrap())))?;
    let review = state
        .reviews
        .create(product_id, customer_id, rating, comment)
        .await?;
    Ok((StatusCode::CREATED, Json(ReviewBody::from(review))))
}

/// A product's reviews, newest first.
#[utoipa::path(get, path = "/products/{id}/reviews", tag = "reviews", params(Id, PageQuery),
    responses((status = 200, body = PageBody<ReviewBody>), Problems))]
pub async fn list_reviews(
    State(state): State<AppState>,
    Id(product_id): Id,
    Query(query): Query<PageQuery>,
) -> Result<Json<PageBody<ReviewBody>>, ApiError> {
    let (limit, before) = page::params(query.limit, query.cursor.as_deref())?;
    let reviews = state.reviews.list(product_id, before, limit).await?;
    Ok(Json(PageBody::from_page(reviews)))
}
