//! `/products`: the unified catalog and its stock adjustments.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    AppState,
    auth::Admin,
    error::{ApiError, Problems},
    extract::{Id, IdempotencyKey, IfMatch, JsonBody, Query, etag, validated},
    page::{self, PageBody},
    reviews::ReviewBody,
};
use crate::{
    domain::{Invalid, Violations, money, product, stock},
    services::{
        catalog::{NewProductInput, ProductPatch, ProductView},
        stock::StockLevel,
    },
};

#[derive(Serialize, ToSchema)]
pub struct RatingBody {
    /// Mean of the ratings, two decimals; null without reviews.
    pub average: Option<f64>,
    pub count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ProductBody {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub category: String,
    pub description: Option<String>,
    /// Units available to sell now.
    pub stock: i64,
    pub rating: RatingBody,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ProductView> for ProductBody {
    fn from(v: ProductView) -> Self {
        Self {
            id: v.row.id,
            sku: v.row.sku,
            name: v.row.name,
            price_minor: v.row.price_minor,
            currency: v.row.currency,
            category: v.row.category,
            description: v.description,
            stock: v.stock,
            rating: RatingBody {
                average: v.rating.average,
                count: v.rating.count,
            },
            version: v.row.version,
            created_at: v.row.created_at,
            updated_at: v.row.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProductDetailBody {
    #[serde(flatten)]
    pub product: ProductBody,
    /// The latest 10 reviews, newest first.
    pub reviews: Vec<ReviewBody>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub sku: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_minor: i64,
    #[schema(min_length = 1, max_length = 64)]
    pub category: String,
    #[schema(max_length = 5000)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub initial_stock: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_minor: Option<i64>,
    #[schema(min_length = 1, max_length = 64)]
    pub category: Option<String>,
    #[schema(max_length = 5000)]
    pub description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustment {
    /// Non-zero; negative removes stock.
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    pub delta: i64,
    /// `restock`, `correction` or `damage`.
    #[schema(pattern = "^(restock|correction|damage)$")]
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct StockLevelBody {
    pub product_id: Uuid,
    /// Units available to sell now.
    pub stock: i64,
    /// Units physically on hand (available plus held by orders).
    pub on_hand: i64,
}

impl From<StockLevel> for StockLevelBody {
    fn from(level: StockLevel) -> Self {
        Self {
            product_id: level.product_id,
            stock: level.available,
            on_hand: level.on_hand,
        }
    }
}

/// Unknown query parameters are ignored (cache busters and tracking tags are common); unknown
/// body fields are not.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListProductsQuery {
    pub category: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// A page of live products, joined from Postgres, Redis and MongoDB.
#[utoipa::path(get, path = "/products", tag = "products", params(ListProductsQuery),
    responses((status = 200, body = PageBody<ProductBody>), Problems))]
pub async fn list_products(
    State(state): State<AppState>,
    Query(query): Query<ListProductsQuery>,
) -> Result<Json<PageBody<ProductBody>>, ApiError> {
    let (limit, after) = page::params(query.limit, query.cursor.as_deref())?;
    let category = query
        .category
        .as_deref()
        .map(product::category)
        .transpose()
        .map_err(|Invalid(message)| ApiError::bad_field("category", message))?;
    let products = state
        .catalog
        .list(category.as_deref(), after, limit)
        .await?;
    Ok(Json(PageBody::from_page(products)))
}

/// One live product with its latest reviews.
#[utoipa::path(get, path = "/products/{id}", params(Id), tag = "products",
    responses((status = 200, body = ProductDetailBody), Problems))]
pub async fn get_product(
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<impl IntoResponse, ApiError> {
    let (view, reviews) = state.catalog.get(id).await?;
    let version = view.row.version;
    let body = ProductDetailBody {
        product: view.into(),
        reviews: reviews.into_iter().map(ReviewBody::from).collect(),
    };
    Ok((etag(version), Json(body)))
}

/// Creates a product (admin).
#[utoipa::path(post, path = "/products", tag = "products", request_body = CreateProduct,
    security(("bearer" = [])),
    responses((status = 201, body = ProductBody), Problems))]
pub async fn create_product(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<CreateProduct>,
) -> Result<impl IntoResponse, ApiError> {
    let mut v = Violations::default();
    let sku = v.check("sku", product::Sku::parse(&body.sku));
    let name = v.check("name", product::name(&body.name));
    let price_minor = v.check("price_minor", money::price(body.price_minor));
    let category = v.check("category", product::category(&body.category));
    let description = body
        .description
        .as_deref()
        .and_then(|d| v.check("description", product::description(d)));
    let initial_stock = v.check("initial_stock", stock::initial(body.initial_stock));
    let input = validated(v.finish(|| NewProductInput {
        sku: sku.unwrap(),
        name: name.unwrap(),
        price_minor: price_minor.unwrap(),
        category: category.unwrap(),
        description,
        initial_stock: initial_stock.unwrap(),
    }))?;
    let body = ProductBody::from(state.catalog.create(input).await?);
    let location = [(header::LOCATION, format!("/products/{}", body.id))];
    Ok((
        StatusCode::CREATED,
        etag(body.version),
        location,
        Json(body),
    ))
}

/// Changes any of name, price, category and description (admin, `If-Match` required).
#[utoipa::path(patch, path = "/products/{id}", tag = "products", request_body = UpdateProduct,
    security(("bearer" = [])),
    params(Id, ("If-Match" = String, Header, description = "the version last read, e.g. \"3\"")),
    responses((status = 200, body = ProductBody), Problems))]
pub async fn update_product(
    State(state): State<AppState>,
    _: Admin,
    Id(id): Id,
    IfMatch(precondition): IfMatch,
    JsonBody(body): JsonBody<UpdateProduct>,
) -> Result<impl IntoResponse, ApiError> {
    let mut v = Violations::default();
    let patch = ProductPatch {
        name: body
            .name
            .as_deref()
            .and_then(|n| v.check("name", product::name(n))),
        price_minor: body
            .price_minor
            .and_then(|p| v.check("price_minor", money::price(p))),
        category: body
            .category
            .as_deref()
            .and_then(|c| v.check("category", product::category(c))),
        description: body
            .description
            .as_deref()
            .and_then(|d| v.check("description", product::description(d))),
    };
    let patch = validated(v.finish(|| patch))?;
    if patch.name.is_none()
        && patch.price_minor.is_none()
        && patch.category.is_none()
        && patch.description.is_none()
    {
        return Err(ApiError::bad_field(
            "body",
            "name, price_minor, category or description must be given",
        ));
    }
    let body = ProductBody::from(state.catalog.update(id, &precondition, patch).await?);
    Ok((etag(body.version), Json(body)))
}

/// Removes a product from the catalog (admin). Orders already placed keep it.
#[utoipa::path(delete, path = "/products/{id}", params(Id), tag = "products", security(("bearer" = [])),
    responses((status = 204), Problems))]
pub async fn delete_product(
    State(state): State<AppState>,
    _: Admin,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    state.catalog.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes available and on-hand stock (admin).
///
/// With an `Idempotency-Key`, a retry (after a lost answer or a `503`) returns the first
/// outcome instead of adjusting again.
#[utoipa::path(post, path = "/products/{id}/stock-adjustments", tag = "products",
    params(Id, ("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")),
    request_body = StockAdjustment, security(("bearer" = [])),
    responses((status = 200, body = StockLevelBody), Problems))]
pub async fn adjust_stock(
    State(state): State<AppState>,
    _: Admin,
    Id(id): Id,
    idempotency_key: Option<IdempotencyKey>,
    JsonBody(body): JsonBody<StockAdjustment>,
) -> Result<Json<StockLevelBody>, ApiError> {
    let mut v = Violations::default();
    let delta = v.check("delta", stock::delta(body.delta));
    let reason = v.check(
        "reason",
        stock::AdjustmentReason::parse_requested(&body.reason),
    );
    let (delta, reason) = validated(v.finish(|| (delta.unwrap(), reason.unwrap())))?;
    let key = idempotency_key.as_ref().map(|IdempotencyKey(k)| k.as_str());
    let level = state.catalog.stock().adjust(id, delta, reason, key).await?;
    Ok(Json(level.into()))
}
