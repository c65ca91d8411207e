//! End to end with real processes: `orderly api` and two `orderly worker`s, one of them killed
//! with SIGKILL while orders pour in. Every saga must still end, nothing may be charged twice
//! and nothing oversold.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Isolation, Process, free_port, test_vars};

const STOCK: i64 = 30;
const PRICE: i64 = 1_000;
const CUSTOMERS: usize = 20;
const ORDERS_PER_WAVE: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_load_loses_nothing_and_doubles_nothing() {
    let addr = format!("127.0.0.1:{}", free_port());
    let (vars, db_name) = test_vars(&[
        ("ORDERLY_HTTP_ADDR", &addr),
        ("ORDERLY_STEP_TIMEOUT_MS", "3000"),
    ]);
    let settings = orderly::config::Settings::from_vars(&vars).unwrap();
    let _isolation = Isolation {
        settings: settings.clone(),
        db_name,
    };
    let logs = std::env::temp_dir().join(format!("orderly-e2e-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs).unwrap();
    // The API first: it creates the database and applies the migrations.
    let mut api = Process::start(&["api"], &vars, &logs.join("api.log"));
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the API never answered; see {}", logs.display());
    let mut doomed = Process::start(&["worker"], &vars, &logs.join("worker-1.log"));
    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let mut survivor_vars = vars.clone();
    survivor_vars.insert("ORDERLY_WORKER_METRICS_ADDR".into(), worker_metrics.clone());
    let mut survivor = Process::start(
        &[
            "worker",
            "--roles",
            "relay,orchestrator,inventory,payments,history",
        ],
        &survivor_vars,
        &logs.join("worker-2.log"),
    );

    let admin = settings.admin_token.clone();
    let post = |path: String, token: String, body: Value, key: Option<String>| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let mut request = client
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .json(&body);
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, product) = post(
        "/products".into(),
        admin.clone(),
        json!({"sku": "E2E-1", "name": "Kaos", "price_minor": PRICE, "category": "Baju",
               "initial_stock": STOCK}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{product}");
    let product_id = product["id"].as_str().unwrap().to_owned();
    let mut customers = Vec::new();
    for n in 0..CUSTOMERS {
        let (status, c) = post(
            "/customers".into(),
            admin.clone(),
            json!({"name": "Budi", "email": format!("e2e{n}@example.com"), "balance_minor": 4 * PRICE}),
            None,
        )
        .await;
        assert_eq!(status, 201);
        customers.push((
            c["id"].as_str().unwrap().to_owned(),
            c["token"].as_str().unwrap().to_owned(),
        ));
    }

    let wave = |from: usize| {
        join_all((from..from + ORDERS_PER_WAVE).map(|n| {
            let (_, token) = customers[n % CUSTOMERS].clone();
            let quantity = 1 + (n % 2) as i64;
            post(
                "/orders".into(),
                token,
                json!({"items": [{"product_id": product_id, "quantity": quantity}]}),
                Some(format!("order-{n}")),
            )
        }))
    };
    let first = wave(0).await;
    // Mid-load: the first wave's sagas are in flight when one worker dies without warning.
    doomed.0.kill().unwrap();
    let _ = doomed.0.wait();
    let second = wave(ORDERS_PER_WAVE).await;
    let orders: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|(status, body)| {
            assert_eq!(*status, 202, "{body}");
            body["id"].as_str().unwrap().to_owned()
        })
        .collect();

    // Every saga ends (with the step deadlines resending whatever the dead worker held).
    let settled: Vec<Value> = join_all(orders.iter().map(|id| {
        let client = client.clone();
        let url = format!("{base}/orders/{id}?wait=30");
        let admin = admin.clone();
        async move {
            for _ in 0..4 {
                let order: Value = client
                    .get(&url)
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if order["status"] != "pending" {
                    return order;
                }
            }
            panic!("order {id} never left pending");
        }
    }))
    .await;

    // No oversell: what confirmed orders hold is what left `available`, never more than stock.
    let stores = orderly::app::connect(&settings, settings.pg_max_connections)
        .await
        .unwrap();
    let product_uuid: Uuid = product_id.parse().unwrap();
    let confirmed: Vec<&Value> = settled
        .iter()
        .filter(|o| o["status"] == "confirmed")
        .collect();
    let sold: i64 = confirmed
        .iter()
        .map(|o| o["items"][0]["quantity"].as_i64().unwrap())
        .sum();
    let available = stores.stock.available(&[product_uuid]).await.unwrap()[0];
    let held = stores.stock.held(&[product_uuid]).await.unwrap()[0];
    assert!(sold <= STOCK, "oversold: {sold} > {STOCK}");
    assert_eq!(held, sold, "held = what confirmed orders bought");
    assert_eq!(available + held, STOCK, "on hand = available + held");
    assert!(!confirmed.is_empty());
    for o in &settled {
        if o["status"] != "confirmed" {
            assert!(
                ["insufficient_stock", "insufficient_funds"]
                    .contains(&o["reason"].as_str().unwrap()),
                "{o}"
            );
        }
    }

    // Money: each wallet = deposits − what its confirmed orders cost; one charge per order.
    for (customer, _) in &customers {
        let spent: i64 = confirmed
            .iter()
            .filter(|o| o["customer_id"] == customer.as_str())
            .map(|o| o["total_minor"].as_i64().unwrap())
            .sum();
        let balance: i64 = sqlx::query_scalar("SELECT balance_minor FROM customers WHERE id = $1")
            .bind(customer.parse::<Uuid>().unwrap())
            .fetch_one(&stores.pg)
            .await
            .unwrap();
        assert_eq!(balance, 4 * PRICE - spent, "customer {customer}");
    }
    let charged: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE status = 'charged'")
        .fetch_one(&stores.pg)
        .await
        .unwrap();
    assert_eq!(
        charged,
        confirmed.len() as i64,
        "charged once per confirmed order"
    );

    // History: complete, contiguous from 1, ending with the order's final status.
    let history = orderly::store::history::OrderHistory::new(stores.docs.database());
    for order in &settled {
        let id: Uuid = order["id"].as_str().unwrap().parse().unwrap();
        let last = match order["status"].as_str().unwrap() {
            "confirmed" => "order_confirmed",
            "rejected" => "order_rejected",
            _ => "order_cancelled",
        };
        let mut events = Vec::new();
        for _ in 0..100 {
            events = history.events(id).await.unwrap();
            if events.last().is_some_and(|e| e.kind == last) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            events.last().map(|e| e.kind.as_str()),
            Some(last),
            "{events:?}"
        );
        assert_eq!(events[0].kind, "order_placed");
        assert!(events.iter().zip(1..).all(|(e, seq)| e.seq == seq));
    }

    // A worker without the API still shows what it consumed.
    let scraped = client
        .get(format!("http://{worker_metrics}/metrics"))
        .send()
        .await
        .unwrap();
    crate::helpers::assert_openmetrics(&scraped);
    let scraped = scraped.text().await.unwrap();
    assert!(
        scraped.contains("orderly_messages_consumed_total{queue=\"payments\"}"),
        "{scraped}"
    );

    // Both survivors drain and exit cleanly on SIGTERM.
    assert!(survivor.terminate().success(), "see {}", logs.display());
    assert!(api.terminate().success(), "see {}", logs.display());
    let _ = std::fs::remove_dir_all(&logs);
}
