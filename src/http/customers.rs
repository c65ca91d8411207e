//! `/customers`: identities and wallets.

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
    auth::{Admin, Caller},
    error::{ApiError, Problems},
    extract::{Id, JsonBody, etag, validated},
};
use crate::{
    domain::{Violations, customer, money},
    store::postgres::customers::CustomerRow,
};

#[derive(Serialize, ToSchema)]
pub struct CustomerBody {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub balance_minor: i64,
    pub currency: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
}

impl From<CustomerRow> for CustomerBody {
    fn from(c: CustomerRow) -> Self {
        Self {
            id: c.id,
            name: c.name,
            email: c.email,
            balance_minor: c.balance_minor,
            currency: c.currency,
            version: c.version,
            created_at: c.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct NewCustomerBody {
    #[serde(flatten)]
    pub customer: CustomerBody,
    /// The customer's bearer token. Shown only here, once.
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// Opening balance; absent or null means 0.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub balance_minor: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deposit {
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount_minor: i64,
}

/// Creates a customer and returns its token once (admin).
#[utoipa::path(post, path = "/customers", tag = "customers", request_body = CreateCustomer,
    security(("bearer" = [])),
    responses((status = 201, body = NewCustomerBody), Problems))]
pub async fn create_customer(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<CreateCustomer>,
) -> Result<impl IntoResponse, ApiError> {
    let mut v = Violations::default();
    let name = v.check("name", customer::name(&body.name));
    let email = v.check("email", customer::email(&body.email));
    let balance = v.check(
        "balance_minor",
        money::opening_balance(body.balance_minor.unwrap_or(0)),
    );
    let (name, email, balance) =
        validated(v.finish(|| (name.unwrap(), email.unwrap(), balance.unwrap())))?;
    let (customer, token) = state.customers.create(&name, &email, balance).await?;
    let location = [(header::LOCATION, format!("/customers/{}", customer.id))];
    let body = NewCustomerBody {
        token,
        customer: customer.into(),
    };
    Ok((
        StatusCode::CREATED,
        etag(body.customer.version),
        location,
        Json(body),
    ))
}

/// A customer and their wallet (admin, or that customer).
#[utoipa::path(get, path = "/customers/{id}", params(Id), tag = "customers", security(("bearer" = [])),
    responses((status = 200, body = CustomerBody), Problems))]
pub async fn get_customer(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<impl IntoResponse, ApiError> {
    // Another customer's record is "not found", not "forbidden": ids are not to be probed.
    if !caller.may_see(id) {
        return Err(ApiError::NotFound("no such customer".into()));
    }
    let customer = state.customers.get(id).await?;
    Ok((etag(customer.version), Json(CustomerBody::from(customer))))
}

/// Adds money to a wallet (admin).
#[utoipa::path(post, path = "/customers/{id}/deposits", params(Id), tag = "customers", request_body = Deposit,
    security(("bearer" = [])),
    responses((status = 200, body = CustomerBody), Problems))]
pub async fn deposit(
    State(state): State<AppState>,
    _: Admin,
    Id(id): Id,
    JsonBody(body): JsonBody<Deposit>,
) -> Result<impl IntoResponse, ApiError> {
    let mut v = Violations::default();
    let amount = v.check("amount_minor", money::deposit(body.amount_minor));
    let amount = validated(v.finish(|| amount.unwrap()))?;
    let customer = state.customers.deposit(id, amount).await?;
    Ok((etag(customer.version), Json(CustomerBody::from(customer))))
}
