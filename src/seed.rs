//! Demo data: three categories, three products with stock, descriptions and reviews, and a demo
//! customer with a funded wallet. Idempotent: products are matched by SKU, the customer by
//! email, reviews by (product, customer); a second run only issues the demo customer a new token.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use uuid::Uuid;

use crate::{
    domain::{order::OrderLine, product::Sku, saga::Policy},
    metrics::Metrics,
    services::{
        ServiceError, Stores,
        catalog::{Catalog, NewProductInput},
        customers::Customers,
        orders::Orders,
        ratings::Ratings,
        reviews::Reviews,
    },
    store::postgres::products,
};

pub const DEMO_EMAIL: &str = "demo@orderly.dev";
pub const DEMO_BALANCE_MINOR: i64 = 10_000_000;
/// The demo customer's one order, placed under this idempotency key: every run finds the same.
pub const DEMO_ORDER_KEY: &str = "demo-order";

struct DemoProduct {
    sku: &'static str,
    name: &'static str,
    price_minor: i64,
    category: &'static str,
    stock: i64,
    description: &'static str,
    review: Option<(u8, &'static str)>,
}

const CATEGORIES: [&str; 3] = ["Baju", "Elektronik", "Otomotif"];

const PRODUCTS: [DemoProduct; 3] = [
    DemoProduct {
        sku: "BAJU-HMIF",
        name: "Baju HMIF",
        price_minor: 135_000,
        category: "Baju",
        stock: 15,
        description: "Kaos eksklusif acara HMIF. Bahan adem dan premium.",
        review: Some((5, "Keren banget!")),
    },
    DemoProduct {
        sku: "EARPHONE-WIRELESS",
        name: "Earphone Wireless",
        price_minor: 150_000,
        category: "Elektronik",
        stock: 40,
        description: "Earphone nirkabel dengan bass mantap.",
        review: Some((4, "Enak suaranya")),
    },
    DemoProduct {
        sku: "HELM-NJS",
        name: "Helm NJS",
        price_minor: 500_000,
        category: "Otomotif",
        stock: 20,
        description: "Helm full face, cocok buat touring jauh.",
        review: None,
    },
];

pub struct DemoCredentials {
    pub customer_id: Uuid,
    pub customer_token: String,
    /// One "Baju HMIF" for the demo customer: its saga runs once the worker roles do.
    pub order_id: Uuid,
}

pub async fn run(
    stores: &Stores,
    currency: &str,
    policy: Policy,
) -> Result<DemoCredentials, ServiceError> {
    // A one-off command: nothing scrapes its metrics.
    let ratings = Ratings::new(stores.clone(), Counter::default());
    let catalog = Catalog::new(stores.clone(), currency.to_owned(), ratings.clone());
    let customers = Customers::new(stores.clone(), currency.to_owned());
    let reviews = Reviews::new(stores.clone(), ratings);

    let mut conn = stores.pg.acquire().await?;
    for category in CATEGORIES {
        products::ensure_category(&mut conn, category).await?;
    }
    drop(conn);

    let (customer_id, customer_token) = match customers.find_by_email(DEMO_EMAIL).await? {
        Some(existing) => (existing.id, customers.rotate_token(existing.id).await?),
        None => {
            let (customer, token) = customers
                .create("Demo Customer", DEMO_EMAIL, DEMO_BALANCE_MINOR)
                .await?;
            (customer.id, token)
        }
    };

    let mut first_product = None;
    for demo in &PRODUCTS {
        let product_id = match products::find_live_by_sku(&stores.pg, demo.sku).await? {
            Some(row) => row.id,
            None => {
                let input = NewProductInput {
                    sku: Sku::parse(demo.sku).expect("demo SKUs are valid"),
                    name: demo.name.to_owned(),
                    price_minor: demo.price_minor,
                    category: demo.category.to_owned(),
                    description: Some(demo.description.to_owned()),
                    initial_stock: demo.stock,
                };
                catalog.create(input).await?.row.id
            }
        };
        first_product.get_or_insert(product_id);
        if let Some((rating, comment)) = demo.review
            && !stores.docs.has_review_by(product_id, customer_id).await?
        {
            reviews
                .create(product_id, customer_id, rating, comment.to_owned())
                .await?;
        }
    }
    let orders = Orders::new(
        stores.clone(),
        currency.to_owned(),
        policy,
        Arc::new(Metrics::default()),
        0,
        0,
    );
    let demo_line = [OrderLine::new(
        first_product.expect("the demo catalog is not empty"),
        1,
    )];
    let (order, _) = orders
        .checkout(customer_id, DEMO_ORDER_KEY, &demo_line)
        .await?;
    Ok(DemoCredentials {
        customer_id,
        customer_token,
        order_id: order.order.id,
    })
}
