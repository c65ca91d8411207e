//! After the load: every invariant of `design.md`, checked by reading Postgres, Redis, MongoDB and
//! RabbitMQ directly, and a sample of orders through the API.
//!
//! The checks run once the system is quiet (no saga running, the outbox empty, history caught up),
//! so each invariant can be stated exactly rather than as a bound.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use mongodb::bson::{Document, doc};
use orderly::messaging::topology::{Queue, Topology};
use orderly::store::history::HISTORY;
use orderly::store::stock::StockCounters;
use rand::seq::IndexedRandom;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::client::Api;
use crate::system::{Namespace, StoreUrls};

/// At most this many examples are kept per failed check.
const EXAMPLES: usize = 10;
/// Orders read back through the API.
const API_SAMPLE: usize = 25;

/// One invariant's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub invariant: &'static str,
    pub checked: u64,
    pub violations: u64,
    pub examples: Vec<String>,
    /// What was seen that is not a violation but a reader should know (explained dead letters).
    pub notes: Vec<String>,
}

impl Check {
    pub fn new(name: &'static str, invariant: &'static str) -> Self {
        Self {
            name,
            invariant,
            checked: 0,
            violations: 0,
            examples: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn expect(&mut self, holds: bool, example: impl FnOnce() -> String) {
        self.checked += 1;
        if !holds {
            self.violate(example);
        }
    }

    /// Counts a violation, keeping its description among the first few.
    pub fn violate(&mut self, example: impl FnOnce() -> String) {
        self.violations += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(example());
        }
    }

    pub fn passed(&self) -> bool {
        self.violations == 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub checks: Vec<Check>,
    pub quiet_after_ms: u64,
}

impl Verification {
    pub fn violations(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed())
    }

    pub fn passed(&self) -> bool {
        self.violations().next().is_none()
    }
}

/// Direct handles on the run's stores.
pub struct Stores {
    pub pg: PgPool,
    pub stock: StockCounters,
    pub mongo: mongodb::Database,
    pub urls: StoreUrls,
    pub namespace: Namespace,
}

impl Stores {
    pub async fn connect(namespace: &Namespace, urls: &StoreUrls) -> anyhow::Result<Self> {
        Ok(Self {
            pg: namespace.postgres(urls, 4).await?,
            stock: StockCounters::connect(&urls.redis, &namespace.redis_prefix).await?,
            mongo: namespace.mongodb(urls).await?,
            urls: urls.clone(),
            namespace: namespace.clone(),
        })
    }

    async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pg).await?)
    }

    async fn history_events(&self) -> anyhow::Result<u64> {
        Ok(self
            .mongo
            .collection::<Document>(HISTORY)
            .estimated_document_count()
            .await?)
    }
}

/// Waits until no saga runs or is about to (an accepted cancel), the outbox is empty and MongoDB holds every history event Postgres
/// numbered; returns how long that took. Past `limit` it returns anyway: the checks then name
/// whatever did not finish.
pub async fn wait_until_quiet(stores: &Stores, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    // Quiet must hold for a while, not at one instant: a request the server still works on
    // after its client gave up (a checkout or cancel waiting for a connection during a fault)
    // may land just after a first quiet look, and start a saga then.
    let mut quiet_since: Option<Instant> = None;
    loop {
        let running = stores
            .count("SELECT count(*) FROM sagas WHERE state IN ('running', 'compensating')")
            .await?;
        // A cancel accepted for a confirmed order runs no saga until the orchestrator takes
        // its message off the queue: in between the order looks settled.
        let cancels_in_flight = stores
            .count(
                "SELECT count(*) FROM orders o WHERE o.cancel_requested_at IS NOT NULL \
                   AND o.status = 'confirmed' AND NOT EXISTS \
                   (SELECT 1 FROM sagas s WHERE s.order_id = o.id AND s.kind = 'cancellation')",
            )
            .await?;
        let outbox = stores.count("SELECT count(*) FROM outbox").await?;
        let numbered = stores
            .count("SELECT COALESCE(SUM(last_seq), 0)::bigint FROM orders")
            .await?;
        let projected = stores.history_events().await?;
        if running == 0 && cancels_in_flight == 0 && outbox == 0 && projected as i64 >= numbered {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET_FOR {
                return Ok(since.duration_since(start));
            }
        } else {
            quiet_since = None;
        }
        if start.elapsed() > limit {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long the system must stay quiet before it is verified.
const QUIET_FOR: Duration = Duration::from_secs(2);

/// Runs every check. With `api` (the API and an admin token), a sample of orders is also read
/// back through HTTP.
pub async fn verify(
    stores: &Stores,
    api: Option<(&Api, &str)>,
    quiet_after: Duration,
) -> anyhow::Result<Verification> {
    let orders = load_orders(&stores.pg).await?;
    let mut checks = vec![
        every_saga_ends(stores).await?,
        no_oversell(stores).await?,
        reservations_agree(stores, &orders).await?,
        money_is_conserved(stores).await?,
        payments_agree(stores).await?,
        history_is_complete(stores, &orders).await?,
        a_recorded_cancel_wins(stores).await?,
        nothing_is_lost(stores).await?,
    ];
    if let Some((api, admin)) = api {
        checks.push(api_agrees(api, admin, &orders).await?);
    }
    Ok(Verification {
        checks,
        quiet_after_ms: quiet_after.as_millis() as u64,
    })
}

struct OrderRow {
    status: String,
    last_seq: i32,
}

async fn load_orders(pg: &PgPool) -> anyhow::Result<HashMap<Uuid, OrderRow>> {
    let rows: Vec<(Uuid, String, i32)> = sqlx::query_as("SELECT id, status, last_seq FROM orders")
        .fetch_all(pg)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, status, last_seq)| (id, OrderRow { status, last_seq }))
        .collect())
}

async fn every_saga_ends(stores: &Stores) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "every_saga_ends",
        "every order leaves `pending` and every saga reaches a final state",
    );
    let open: Vec<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT s.order_id, s.kind, s.state, o.status FROM sagas s JOIN orders o ON o.id = s.order_id
         WHERE s.state IN ('running', 'compensating') OR o.status = 'pending'",
    )
    .fetch_all(&stores.pg)
    .await?;
    let total = stores.count("SELECT count(*) FROM sagas").await?;
    check.checked = total as u64;
    for (order, kind, state, status) in open {
        check.violate(|| format!("order {order}: {kind} saga {state}, order {status}"));
    }
    Ok(check)
}

async fn no_oversell(stores: &Stores) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "no_oversell",
        "available ≥ 0 and on hand = available + held; held = units of confirmed orders",
    );
    let products: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT product_id, on_hand FROM stock_levels ORDER BY product_id")
            .fetch_all(&stores.pg)
            .await?;
    let sold: HashMap<Uuid, i64> = sqlx::query_as(
        "SELECT i.product_id, SUM(i.quantity)::bigint FROM order_items i
         JOIN orders o ON o.id = i.order_id WHERE o.status = 'confirmed' GROUP BY i.product_id",
    )
    .fetch_all(&stores.pg)
    .await?
    .into_iter()
    .collect();
    let pending_adjustments = stores
        .count("SELECT count(*) FROM stock_adjustments WHERE status = 'pending'")
        .await?;
    check.expect(pending_adjustments == 0, || {
        format!("{pending_adjustments} stock adjustments still pending")
    });
    for chunk in products.chunks(500) {
        let ids: Vec<Uuid> = chunk.iter().map(|(id, _)| *id).collect();
        let available = stores.stock.available(&ids).await?;
        let held = stores.stock.held(&ids).await?;
        for (((id, on_hand), available), held) in chunk.iter().zip(available).zip(held) {
            let sold = sold.get(id).copied().unwrap_or(0);
            check.expect(
                available >= 0 && held >= 0 && available + held == *on_hand && held == sold,
                || {
                    format!(
                        "product {id}: on hand {on_hand}, available {available}, held {held}, \
                         confirmed units {sold}"
                    )
                },
            );
        }
    }
    Ok(check)
}

async fn reservations_agree(
    stores: &Stores,
    orders: &HashMap<Uuid, OrderRow>,
) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "reservations_agree",
        "Redis holds a live reservation for exactly the confirmed orders",
    );
    let ids: Vec<&Uuid> = orders.keys().collect();
    let mut redis = stores.stock.connection();
    for chunk in ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.hget(stores.stock.reservation_key(**id), "state");
        }
        let states: Vec<Option<String>> = pipe.query_async(&mut redis).await?;
        for (id, state) in chunk.iter().zip(states) {
            let status = &orders[*id].status;
            let reserved = state.as_deref() == Some("reserved");
            check.expect(reserved == (status == "confirmed"), || {
                format!("order {id} is {status} but its reservation is {state:?}")
            });
        }
    }
    Ok(check)
}

async fn money_is_conserved(stores: &Stores) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "money_is_conserved",
        "every wallet ≥ 0 and balance = deposits − charges + refunds",
    );
    let wallets: Vec<(Uuid, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT c.id, c.balance_minor,
                COALESCE(d.total, 0)::bigint,
                COALESCE(p.charged, 0)::bigint,
                COALESCE(p.refunded, 0)::bigint
         FROM customers c
         LEFT JOIN (SELECT customer_id, SUM(amount_minor) AS total FROM deposits
                    GROUP BY customer_id) d ON d.customer_id = c.id
         LEFT JOIN (SELECT customer_id,
                           SUM(amount_minor) FILTER (WHERE status IN ('charged', 'refunded')) AS charged,
                           SUM(amount_minor) FILTER (WHERE status = 'refunded') AS refunded
                    FROM payments GROUP BY customer_id) p ON p.customer_id = c.id",
    )
    .fetch_all(&stores.pg)
    .await?;
    for (id, balance, deposits, charges, refunds) in wallets {
        check.expect(
            balance >= 0 && balance == deposits - charges + refunds,
            || {
                format!(
                    "customer {id}: balance {balance}, deposits {deposits}, charges {charges}, \
                     refunds {refunds}"
                )
            },
        );
    }
    Ok(check)
}

async fn payments_agree(stores: &Stores) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "payments_agree",
        "each confirmed order is charged its total once; no other order keeps a charge",
    );
    // order, its status and total, its payment's status and amount
    type Row = (Uuid, String, i64, Option<String>, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT o.id, o.status, o.total_minor, p.status, p.amount_minor
         FROM orders o LEFT JOIN payments p ON p.order_id = o.id",
    )
    .fetch_all(&stores.pg)
    .await?;
    for (id, status, total, payment, amount) in rows {
        let charged = payment.as_deref() == Some("charged");
        let holds = if status == "confirmed" {
            charged && amount == Some(total)
        } else {
            !charged
        };
        check.expect(holds, || {
            format!("order {id} is {status} (total {total}) with payment {payment:?} of {amount:?}")
        });
    }
    Ok(check)
}

async fn history_is_complete(
    stores: &Stores,
    orders: &HashMap<Uuid, OrderRow>,
) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "history_is_complete",
        "MongoDB holds seq 1..n for every order, n as Postgres numbered, ending in its final status",
    );
    let mut events: HashMap<Uuid, BTreeMap<i64, String>> = HashMap::new();
    let mut cursor = stores
        .mongo
        .collection::<Document>(HISTORY)
        .find(doc! {})
        .projection(doc! { "_id": 0, "order_id": 1, "seq": 1, "type": 1 })
        .batch_size(10_000)
        .await?;
    let mut strays = 0u64;
    while let Some(event) = cursor.try_next().await? {
        let order = event.get_str("order_id").ok().and_then(|s| s.parse().ok());
        let seq = event
            .get_i64("seq")
            .or_else(|_| event.get_i32("seq").map(i64::from))
            .ok();
        let kind = event.get_str("type").unwrap_or_default().to_owned();
        match (order, seq) {
            (Some(order), Some(seq)) => {
                events.entry(order).or_default().insert(seq, kind);
            }
            _ => strays += 1,
        }
    }
    check.expect(strays == 0, || {
        format!("{strays} history documents without an order id or seq")
    });
    for (id, order) in orders {
        let seen = events.remove(id).unwrap_or_default();
        let contiguous = seen.keys().copied().eq(1..=i64::from(order.last_seq));
        let last = seen.values().next_back().map(String::as_str);
        let expected_last = match order.status.as_str() {
            "confirmed" => Some("order_confirmed"),
            "rejected" => Some("order_rejected"),
            "cancelled" => Some("order_cancelled"),
            _ => None,
        };
        check.expect(contiguous && last == expected_last, || {
            format!(
                "order {id} ({}, last_seq {}): MongoDB has seqs {:?}, last event {last:?}",
                order.status,
                order.last_seq,
                seen.keys().collect::<Vec<_>>()
            )
        });
    }
    for id in events.keys() {
        check.violate(|| format!("history for order {id}, unknown to Postgres"));
    }
    Ok(check)
}

async fn a_recorded_cancel_wins(stores: &Stores) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "a_recorded_cancel_wins",
        "every order whose cancel was recorded ends cancelled/cancelled_by_customer",
    );
    let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT id, status, reason FROM orders WHERE cancel_requested_at IS NOT NULL",
    )
    .fetch_all(&stores.pg)
    .await?;
    for (id, status, reason) in rows {
        check.expect(
            status == "cancelled" && reason.as_deref() == Some("cancelled_by_customer"),
            || format!("order {id} had its cancel recorded but ended {status}/{reason:?}"),
        );
    }
    Ok(check)
}

async fn api_agrees(
    api: &Api,
    admin: &str,
    orders: &HashMap<Uuid, OrderRow>,
) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "api_agrees",
        "a sample of orders reads the same through the API as in the stores",
    );
    let ids: Vec<&Uuid> = orders.keys().collect();
    let sample: Vec<&&Uuid> = ids.choose_multiple(&mut rand::rng(), API_SAMPLE).collect();
    for id in sample {
        let order = &orders[*id];
        let seen = api.get(admin, &format!("/orders/{id}")).await?;
        let status = seen
            .body
            .get("status")
            .and_then(|s| s.as_str())
            .unwrap_or_default();
        check.expect(seen.status == 200 && status == order.status, || {
            format!(
                "GET /orders/{id} answered {} with status {status:?}; Postgres says {}",
                seen.status, order.status
            )
        });
        let history = api.get(admin, &format!("/orders/{id}/history")).await?;
        let events = history
            .body
            .get("events")
            .and_then(|e| e.as_array())
            .map_or(0, Vec::len);
        check.expect(
            history.status == 200 && events == order.last_seq as usize,
            || {
                format!(
                    "GET /orders/{id}/history answered {} with {events} events; Postgres numbered {}",
                    history.status, order.last_seq
                )
            },
        );
    }
    Ok(check)
}

/// Nothing accepted is lost: the outbox is drained, no queue still holds work, and every
/// dead-lettered message carries its reason.
async fn nothing_is_lost(stores: &Stores) -> anyhow::Result<Check> {
    let mut check = Check::new(
        "nothing_is_lost",
        "the outbox and work queues are empty; every dead letter carries its reason",
    );
    let outbox = stores.count("SELECT count(*) FROM outbox").await?;
    check.expect(outbox == 0, || {
        format!("{outbox} messages still in the outbox")
    });

    let connection =
        orderly::messaging::connect(&stores.urls.amqp, "orderly-loadtest-verify").await?;
    let channel = connection.create_channel().await?;
    let topology = Topology::new(&stores.namespace.amqp_prefix);
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    for queue in Queue::ALL {
        let name = topology.queue(queue);
        let waiting = channel
            .queue_declare(&name, passive, FieldTable::default())
            .await?
            .message_count();
        check.expect(waiting == 0, || {
            format!("{waiting} messages still waiting in {name}")
        });

        let dead = topology.dead_letter_queue(queue);
        let count = channel
            .queue_declare(&dead, passive, FieldTable::default())
            .await?
            .message_count();
        // Read (without acking) what is there; closing the channel puts it all back.
        for _ in 0..count.min(50) {
            let Some(message) = channel
                .basic_get(&dead, BasicGetOptions { no_ack: false })
                .await?
            else {
                break;
            };
            let reason = message
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-orderly-reason").cloned());
            let reason = match reason {
                Some(AMQPValue::LongString(s)) => Some(s.to_string()),
                Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
                _ => None,
            };
            check.expect(reason.is_some(), || {
                format!("a message in {dead} carries no reason")
            });
            if let Some(reason) = reason {
                check.notes.push(format!("dead letter in {dead}: {reason}"));
            }
        }
    }
    let _ = channel.close(200, "verified").await;
    let _ = connection.close(200, "verified").await;
    Ok(check)
}
