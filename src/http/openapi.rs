//! The OpenAPI document, assembled from the `#[utoipa::path]` annotations on the handlers.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{customers, error, ops, orders, products, reviews};

#[derive(OpenApi)]
#[openapi(
    info(title = "orderly", description = "A concurrency-safe order processing engine."),
    paths(
        customers::create_customer, customers::get_customer, customers::deposit,
        products::list_products, products::get_product, products::create_product,
        products::update_product, products::delete_product, products::adjust_stock,
        reviews::create_review, reviews::list_reviews,
        orders::place_order, orders::get_order, orders::list_orders, orders::cancel_order,
        orders::order_history, orders::get_saga,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(error::Problem, error::ProblemField)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
