//! What the stores alone can do on this machine, measured in the same run, on the run's own
//! namespace, each for a few seconds with `CONCURRENCY` clients:
//!
//! - Postgres: commits of a transaction shaped like a saga step (inbox insert, versioned update,
//!   log insert, outbox insert);
//! - Redis: `reserve.lua` calls, two lines each, each for a new order;
//! - RabbitMQ: persistent messages published with confirms into a quorum queue and consumed with
//!   acks;
//! - MongoDB: single-document inserts shaped like history events.
//!
//! orderly's saga rate is then read against these: a saga is several of each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use mongodb::bson::doc;
use orderly::domain::order::OrderLine;
use orderly::store::stock::{ReserveOutcome, StockCounters};
use serde::Serialize;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::system::{Namespace, StoreUrls};

const CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub store: &'static str,
    pub operation: &'static str,
    pub per_second: f64,
    pub concurrency: usize,
    pub seconds: f64,
}

pub async fn measure_all(
    namespace: &Namespace,
    urls: &StoreUrls,
    seconds: f64,
) -> anyhow::Result<Vec<Baseline>> {
    let window = Duration::from_secs_f64(seconds);
    Ok(vec![
        postgres(namespace, urls, window).await?,
        redis(namespace, urls, window).await?,
        rabbitmq(namespace, urls, window).await?,
        mongodb(namespace, urls, window).await?,
    ])
}

/// Runs `CONCURRENCY` copies of `op` until `window` ends; returns completed operations per second.
async fn rate<F, Fut>(window: Duration, op: F) -> anyhow::Result<f64>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<u64>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + window;
    let mut workers = JoinSet::new();
    for worker in 0..CONCURRENCY as u64 {
        let (op, done) = (op.clone(), done.clone());
        workers.spawn(async move {
            let mut i = worker << 32;
            while Instant::now() < until {
                done.fetch_add(op(i).await?, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        });
    }
    while let Some(worker) = workers.join_next().await {
        worker??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

fn baseline(
    store: &'static str,
    operation: &'static str,
    per_second: f64,
    window: Duration,
) -> Baseline {
    Baseline {
        store,
        operation,
        per_second,
        concurrency: CONCURRENCY,
        seconds: window.as_secs_f64(),
    }
}

async fn postgres(
    namespace: &Namespace,
    urls: &StoreUrls,
    window: Duration,
) -> anyhow::Result<Baseline> {
    let pool = namespace.postgres(urls, CONCURRENCY as u32).await?;
    for ddl in [
        "DROP SCHEMA IF EXISTS baseline CASCADE",
        "CREATE SCHEMA baseline",
        "CREATE TABLE baseline.sagas (id bigint PRIMARY KEY, version bigint NOT NULL, steps jsonb NOT NULL)",
        "CREATE TABLE baseline.saga_log (saga_id bigint NOT NULL, entry bigserial, event text NOT NULL,
             at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (saga_id, entry))",
        "CREATE TABLE baseline.inbox (message_id uuid PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE baseline.outbox (id bigserial PRIMARY KEY, body jsonb NOT NULL)",
        "INSERT INTO baseline.sagas SELECT g, 1, '[]' FROM generate_series(0, 1023) g",
    ] {
        sqlx::query(ddl).execute(&pool).await?;
    }
    let steps = serde_json::json!([
        {"name": "reserve_stock", "status": "succeeded", "attempts": 1},
        {"name": "charge_payment", "status": "running", "attempts": 1},
        {"name": "confirm_order", "status": "pending", "attempts": 0}
    ]);
    let body =
        serde_json::json!({"type": "charge_payment", "amount_minor": 135000, "lines": [1, 2]});
    let per_second = rate(window, {
        let pool = pool.clone();
        move |i| {
            let (pool, steps, body) = (pool.clone(), steps.clone(), body.clone());
            async move {
                let saga = (i % 1024) as i64;
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO baseline.inbox (message_id) VALUES ($1)")
                    .bind(Uuid::new_v4())
                    .execute(&mut *tx)
                    .await?;
                let version: i64 =
                    sqlx::query_scalar("SELECT version FROM baseline.sagas WHERE id = $1")
                        .bind(saga)
                        .fetch_one(&mut *tx)
                        .await?;
                let updated = sqlx::query(
                    "UPDATE baseline.sagas SET version = version + 1, steps = $3 WHERE id = $1 AND version = $2",
                )
                .bind(saga)
                .bind(version)
                .bind(&steps)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query("INSERT INTO baseline.saga_log (saga_id, event) VALUES ($1, 'payment_charged')")
                    .bind(saga)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO baseline.outbox (body) VALUES ($1)")
                    .bind(&body)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(updated)
            }
        }
    })
    .await?;
    sqlx::query("DROP SCHEMA baseline CASCADE")
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(baseline(
        "postgres",
        "saga-step transaction (inbox + versioned update + log + outbox), commits",
        per_second,
        window,
    ))
}

async fn redis(
    namespace: &Namespace,
    urls: &StoreUrls,
    window: Duration,
) -> anyhow::Result<Baseline> {
    let prefix = format!("{}baseline:", namespace.redis_prefix);
    // Through orderly's own adapter, so the baseline runs exactly the call the inventory role
    // makes, with the same keys.
    let stock = StockCounters::connect(&urls.redis, &prefix).await?;
    let products: Vec<Uuid> = (0..64).map(|_| Uuid::new_v4()).collect();
    for &product in &products {
        redis::cmd("SET")
            .arg(stock.available_key(product))
            .arg(i64::MAX / 2)
            .query_async::<()>(&mut stock.connection())
            .await?;
    }
    let per_second = rate(window, {
        let (stock, products) = (stock.clone(), Arc::new(products));
        move |i| {
            let (stock, products) = (stock.clone(), products.clone());
            async move {
                let lines = [
                    OrderLine::new(products[(i % 64) as usize], 1),
                    OrderLine::new(products[((i + 1) % 64) as usize], 2),
                ];
                let outcome = stock.reserve(Uuid::new_v4(), &lines).await?;
                Ok(u64::from(outcome == ReserveOutcome::Reserved))
            }
        }
    })
    .await?;
    let client = redis::Client::open(urls.redis.as_str())?;
    let conn = client.get_multiplexed_async_connection().await?;
    crate::system::delete_keys(&mut conn.clone(), &prefix).await?;
    Ok(baseline(
        "redis",
        "reserve.lua, 2 lines, a new order each call",
        per_second,
        window,
    ))
}

async fn rabbitmq(
    namespace: &Namespace,
    urls: &StoreUrls,
    window: Duration,
) -> anyhow::Result<Baseline> {
    const BATCH: usize = 64;
    let connection = orderly::messaging::connect(&urls.amqp, "orderly-loadtest-baseline").await?;
    let queue = format!("{}.baseline", namespace.amqp_prefix);
    let setup = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    setup.queue_declare(&queue, durable, args).await?;

    let consumed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer_channel = connection.create_channel().await?;
    consumer_channel
        .basic_qos(256, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            &queue,
            "baseline",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consuming = tokio::spawn({
        let consumed = consumed.clone();
        async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                delivery.ack(BasicAckOptions::default()).await?;
                consumed.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }
    });

    let body = serde_json::to_vec(&serde_json::json!({
        "message_id": Uuid::new_v4(), "type": "reserve_stock",
        "lines": [{"product_id": Uuid::new_v4(), "quantity": 2}]
    }))?;
    let start = Instant::now();
    let mut publishers = JoinSet::new();
    for _ in 0..CONCURRENCY / 4 {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (queue, body, stop) = (queue.clone(), body.clone(), stop.clone());
        publishers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut confirms = Vec::with_capacity(BATCH);
                for _ in 0..BATCH {
                    confirms.push(
                        channel
                            .basic_publish(
                                "",
                                &queue,
                                BasicPublishOptions::default(),
                                &body,
                                BasicProperties::default().with_delivery_mode(2),
                            )
                            .await?,
                    );
                }
                for confirm in confirms {
                    confirm.await?;
                }
            }
            anyhow::Ok(())
        });
    }
    tokio::time::sleep(window).await;
    let measured = consumed.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    while let Some(publisher) = publishers.join_next().await {
        publisher??;
    }
    // Closing the consumer's channel cancels its consumer; only then is the queue deleted, so
    // the broker never cancels a consumer the client still waits on.
    let _ = consumer_channel.close(200, "baseline done").await;
    consuming.abort();
    setup
        .queue_delete(&queue, QueueDeleteOptions::default())
        .await?;
    let _ = connection.close(200, "baseline done").await;
    Ok(baseline(
        "rabbitmq",
        "persistent message into a quorum queue: published with confirms (batches of 64), consumed and acked",
        measured,
        window,
    ))
}

async fn mongodb(
    namespace: &Namespace,
    urls: &StoreUrls,
    window: Duration,
) -> anyhow::Result<Baseline> {
    let db = namespace.mongodb(urls).await?;
    let collection = db.collection::<mongodb::bson::Document>("baseline");
    let order = Uuid::new_v4().to_string();
    let per_second = rate(window, {
        let (collection, order) = (collection.clone(), order.clone());
        move |i| {
            let (collection, order) = (collection.clone(), order.clone());
            async move {
                collection
                    .insert_one(doc! {
                        "_id": format!("{order}/{i:020}"), "order_id": &order, "seq": i as i64,
                        "type": "payment_charged", "at": mongodb::bson::DateTime::now(),
                        "data": { "amount_minor": 135000_i64 },
                    })
                    .await?;
                Ok(1)
            }
        }
    })
    .await?;
    collection.drop().await?;
    Ok(baseline(
        "mongodb",
        "insert_one of a history-event document",
        per_second,
        window,
    ))
}
