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
    error::{ApiError, Problem},
    extract::{Id, IfMatch, JsonBody, Query, etag, query_value, validated},
    reviews::ReviewBody,
};
use crate::{
    domain::{Violations, money, product, stock},
    services::{
        catalog::{NewProductInput, ProductPatch, ProductView},
        page::{self, Page},
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

#[derive(Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<ProductBody>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub sku: String,
    pub name: String,
    pub price_minor: i64,
    pub category: String,
    pub description: Option<String>,
    #[serde(default)]
    pub initial_stock: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    pub name: Option<String>,
    pub price_minor: Option<i64>,
    pub category: Option<String>,
    pub description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustment {
    /// Non-zero; negative removes stock.
    pub delta: i64,
    /// `restock`, `correction` or `damage`.
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

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListProductsQuery {
    pub category: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// A page of live products, joined from Postgres, Redis and MongoDB.
#[utoipa::path(get, path = "/products", tag = "products", params(ListProductsQuery),
    responses((status = 200, body = ProductPage), (status = 400, body = Problem)))]
pub async fn list_products(
    State(state): State<AppState>,
    Query(query): Query<ListProductsQuery>,
) -> Result<Json<ProductPage>, ApiError> {
    let limit = query_value("limit", page::limit(query.limit))?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| query_value("cursor", page::decode(c)))
        .transpose()?;
    let page: Page<ProductView> = state
        .catalog
        .list(query.category.as_deref(), after, limit)
        .await?;
    let page = page.map(ProductBody::from);
    Ok(Json(ProductPage {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// One live product with its latest reviews.
#[utoipa::path(get, path = "/products/{id}", tag = "products",
    responses((status = 200, body = ProductDetailBody), (status = 404, body = Problem)))]
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
    responses((status = 201, body = ProductBody), (status = 409, body = Problem), (status = 422, body = Problem)))]
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
    params(("If-Match" = String, Header, description = "the version last read, e.g. \"3\"")),
    responses((status = 200, body = ProductBody), (status = 404, body = Problem),
        (status = 412, body = Problem), (status = 428, body = Problem)))]
pub async fn update_product(
    State(state): State<AppState>,
    _: Admin,
    Id(id): Id,
    IfMatch(version): IfMatch,
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
    let body = ProductBody::from(state.catalog.update(id, version, patch).await?);
    Ok((etag(body.version), Json(body)))
}

/// Removes a product from the catalog (admin). Orders already placed keep it.
#[utoipa::path(delete, path = "/products/{id}", tag = "products", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_product(
    State(state): State<AppState>,
    _: Admin,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    state.catalog.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes available and on-hand stock (admin).
#[utoipa::path(post, path = "/products/{id}/stock-adjustments", tag = "products",
    request_body = StockAdjustment, security(("bearer" = [])),
    responses((status = 200, body = StockLevelBody), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "insufficient_stock")))]
pub async fn adjust_stock(
    State(state): State<AppState>,
    _: Admin,
    Id(id): Id,
    JsonBody(body): JsonBody<StockAdjustment>,
) -> Result<Json<StockLevelBody>, ApiError> {
    let mut v = Violations::default();
    let delta = v.check("delta", stock::delta(body.delta));
    let reason = v.check(
        "reason",
        stock::AdjustmentReason::parse_requested(&body.reason),
    );
    let (delta, reason) = validated(v.finish(|| (delta.unwrap(), reason.unwrap())))?;
    let level = state.catalog.stock().adjust(id, delta, reason).await?;
    Ok(Json(level.into()))
}
