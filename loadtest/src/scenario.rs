//! The scenarios: what the catalog and the buyers look like, and what one virtual user does in
//! one iteration.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt, stream};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::index::sample;
use serde::Serialize;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::client::Api;
use crate::stats::{self, Stats};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// One hot product with limited stock and thousands of buyers, one unit each.
    FlashSale,
    /// Many products, multi-line orders, some buyers short of funds, some cancellations.
    Checkout,
    /// Product list pages and product pages.
    Browse,
    /// Four browses to every checkout.
    Mixed,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::FlashSale => "flash-sale",
            Self::Checkout => "checkout",
            Self::Browse => "browse",
            Self::Mixed => "mixed",
        }
    }

    pub fn default_shape(self) -> Shape {
        let checkout = Shape {
            products: 200,
            stock_per_product: 1_000_000,
            customers: 1_000,
            short_of_funds: 0.10,
            cancel: 0.05,
            max_lines: 4,
            max_quantity: 3,
            browse_share: 0.0,
            product_pages: 0.5,
        };
        match self {
            Self::FlashSale => Shape {
                products: 1,
                stock_per_product: 500,
                customers: 5_000,
                short_of_funds: 0.0,
                cancel: 0.0,
                max_lines: 1,
                max_quantity: 1,
                ..checkout
            },
            Self::Checkout => checkout,
            Self::Browse => Shape {
                products: 1_000,
                customers: 0,
                browse_share: 1.0,
                ..checkout
            },
            Self::Mixed => Shape {
                products: 500,
                browse_share: 0.8,
                ..checkout
            },
        }
    }
}

/// The catalog, the buyers, and the mix of actions.
#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    pub products: usize,
    pub stock_per_product: i64,
    pub customers: usize,
    /// Share of customers whose wallet cannot pay for any order.
    pub short_of_funds: f64,
    /// Share of accepted orders the buyer cancels: half at once (racing the saga), half after.
    pub cancel: f64,
    pub max_lines: usize,
    pub max_quantity: u32,
    /// Share of iterations that browse instead of buying.
    pub browse_share: f64,
    /// Share of browses that open one product's page rather than a list page.
    pub product_pages: f64,
}

const PRICE_MIN: i64 = 5_000;
const PRICE_MAX: i64 = 250_000;
/// Enough for any order of any run; a short customer's balance is below the cheapest line.
const RICH: i64 = 1_000_000_000_000;
const POOR: i64 = PRICE_MIN - 1;
/// The longest an order's follow-up waits in one request (api.md caps `wait` at 30).
const WAIT_SECS: u32 = 30;

pub struct Customer {
    pub id: Uuid,
    pub token: String,
}

/// What the scenario set up through the API before the load started.
pub struct World {
    pub shape: Shape,
    pub products: Vec<Uuid>,
    pub customers: Vec<Customer>,
    /// The flash sale gives each buyer one turn, in order, before any buyer comes back.
    next_buyer: AtomicUsize,
    /// Product list cursors seen so far, so browsers also read pages past the first.
    cursors: Mutex<Vec<String>>,
}

impl World {
    /// Creates the catalog and the customers through the API, `parallel` requests at a time.
    pub async fn create(
        api: &Api,
        admin: &str,
        shape: Shape,
        rng: &mut StdRng,
        parallel: usize,
    ) -> anyhow::Result<Self> {
        let run = Uuid::new_v4().simple().to_string();
        let categories = ["books", "games", "garden", "kitchen", "toys", "tools"];
        let products: Vec<(String, i64, &str)> = (0..shape.products)
            .map(|i| {
                (
                    format!("LT-{}-{i:05}", &run[..8]),
                    rng.random_range(PRICE_MIN..=PRICE_MAX),
                    categories[i % categories.len()],
                )
            })
            .collect();
        let products = stream::iter(products)
            .map(|(sku, price, category)| async move {
                api.create_product(admin, &sku, price, category, shape.stock_per_product)
                    .await
            })
            .buffered(parallel)
            .try_collect()
            .await
            .context("creating the catalog")?;

        let short = (shape.customers as f64 * shape.short_of_funds).round() as usize;
        let customers = stream::iter(0..shape.customers)
            .map(|i| {
                let email = format!("buyer-{i}-{run}@load.test");
                let balance = if i % shape.customers.max(1) < short {
                    POOR
                } else {
                    RICH
                };
                async move {
                    let (id, token) = api.create_customer(admin, &email, balance).await?;
                    anyhow::Ok(Customer { id, token })
                }
            })
            .buffered(parallel)
            .try_collect()
            .await
            .context("creating the customers")?;
        Ok(Self {
            shape,
            products,
            customers,
            next_buyer: AtomicUsize::new(0),
            cursors: Mutex::new(Vec::new()),
        })
    }
}

/// One virtual user's iteration: browse or buy, per the shape.
pub async fn iterate(
    api: &Api,
    world: &World,
    stats: &std::sync::Mutex<Stats>,
    rng: &mut StdRng,
    intended: Instant,
) {
    let browse = world.customers.is_empty() || rng.random_bool(world.shape.browse_share);
    if browse {
        self::browse(api, world, stats, rng, intended).await;
    } else {
        checkout(api, world, stats, rng, intended).await;
    }
}

/// Times one request into the stats, returning its answer when there was one.
async fn timed<F>(
    stats: &std::sync::Mutex<Stats>,
    endpoint: stats::Endpoint,
    intended: Instant,
    request: F,
) -> Option<crate::client::Answer>
where
    F: Future<Output = reqwest::Result<crate::client::Answer>>,
{
    let sent = Instant::now();
    let answer = request.await.ok();
    let done = Instant::now();
    let status = answer.as_ref().map(|a| a.status);
    stats
        .lock()
        .expect("stats lock")
        .request(endpoint, status, intended, sent, done);
    answer
}

async fn browse(
    api: &Api,
    world: &World,
    stats: &std::sync::Mutex<Stats>,
    rng: &mut StdRng,
    intended: Instant,
) {
    if rng.random_bool(world.shape.product_pages) {
        let id = world.products[rng.random_range(0..world.products.len())];
        timed(stats, stats::GET_PRODUCT, intended, api.product(id)).await;
        return;
    }
    let cursor = {
        let cursors = world.cursors.lock().await;
        (!cursors.is_empty() && rng.random_bool(0.5))
            .then(|| cursors[rng.random_range(0..cursors.len())].clone())
    };
    let page = timed(
        stats,
        stats::GET_PRODUCTS,
        intended,
        api.products_page(cursor.as_deref()),
    )
    .await;
    if let Some(next) = page.and_then(|p| p.next_cursor()) {
        let mut cursors = world.cursors.lock().await;
        if cursors.len() < 64 && !cursors.contains(&next) {
            cursors.push(next);
        }
    }
}

async fn checkout(
    api: &Api,
    world: &World,
    stats: &std::sync::Mutex<Stats>,
    rng: &mut StdRng,
    intended: Instant,
) {
    let shape = &world.shape;
    let buyer = if shape.products == 1 {
        world.next_buyer.fetch_add(1, Ordering::Relaxed) % world.customers.len()
    } else {
        rng.random_range(0..world.customers.len())
    };
    let customer = &world.customers[buyer];
    let lines = rng.random_range(1..=shape.max_lines.min(world.products.len()));
    let order: Vec<(Uuid, u32)> = sample(rng, world.products.len(), lines)
        .into_iter()
        .map(|i| (world.products[i], rng.random_range(1..=shape.max_quantity)))
        .collect();
    let key = Uuid::new_v4().to_string();
    let Some(placed) = timed(
        stats,
        stats::POST_ORDERS,
        intended,
        api.place_order(&customer.token, &key, &order),
    )
    .await
    else {
        return;
    };
    let accepted = Instant::now();
    let Some(id) = placed.id().filter(|_| placed.status == 202) else {
        return;
    };

    let cancel = rng.random_bool(shape.cancel);
    let cancel_at_once = cancel && rng.random_bool(0.5);
    if cancel_at_once {
        cancel_order(api, stats, &customer.token, id).await;
    }
    let Some(outcome) = follow(api, stats, &customer.token, id).await else {
        return;
    };
    stats
        .lock()
        .expect("stats lock")
        .saga_settled(accepted, Instant::now(), &outcome);
    if cancel && !cancel_at_once && outcome == "confirmed" {
        // The cancellation saga runs on; the verifier checks that it ended and undid everything.
        cancel_order(api, stats, &customer.token, id).await;
    }
}

async fn cancel_order(api: &Api, stats: &std::sync::Mutex<Stats>, token: &str, id: Uuid) {
    timed(
        stats,
        stats::POST_CANCEL,
        Instant::now(),
        api.cancel(token, id),
    )
    .await;
}

/// Long-polls the order until it leaves `pending`; its final state, or `None` if it never did.
async fn follow(
    api: &Api,
    stats: &std::sync::Mutex<Stats>,
    token: &str,
    id: Uuid,
) -> Option<String> {
    for _ in 0..4 {
        let answer = timed(
            stats,
            stats::GET_ORDER_WAIT,
            Instant::now(),
            api.order_when_settled(token, id, WAIT_SECS),
        )
        .await?;
        if answer.status != 200 {
            return None;
        }
        if let Some(settled) = answer.settled_as() {
            return Some(settled);
        }
    }
    None
}

/// Shared by all virtual users of a run.
pub struct Load {
    pub api: Api,
    pub world: World,
    pub stats: std::sync::Mutex<Stats>,
}
