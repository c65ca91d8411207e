//! Stores that are down: at start (a process waits for them instead of exiting) and while
//! serving (`503` with `Retry-After`, never `500`). Outages are made with a TCP proxy the test
//! owns, or on the test's own database's connections, never on a shared server.

use std::time::Duration;

use orderly::roles::Role;
use orderly_loadtest::proxy::{self, Link, Proxy};
use serde_json::Value;
use sqlx::Connection;

use crate::helpers::{spawn_app, spawn_app_with_roles, test_vars};

const PRICE: i64 = 5_000;

/// A proxy in front of the store `url` points at, and `url` pointed through it.
async fn proxied(url: &str, default_port: u16) -> (Proxy, String) {
    let upstream = proxy::target(url, default_port).expect("a store on an IP address");
    let proxy = Proxy::start(upstream).await.unwrap();
    let through = proxy::through(url, proxy.addr());
    (proxy, through)
}

/// GETs `url` until `done` holds for the status and body, for up to 30 s.
async fn eventually(url: &str, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut last = (0, Value::Null);
    for _ in 0..300 {
        if let Ok(r) = client.get(url).send().await {
            let status = r.status().as_u16();
            last = (status, r.json().await.unwrap_or(Value::Null));
            if done(last.0, &last.1) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never got there; last answer {} {}", last.0, last.1);
}

#[tokio::test]
async fn a_connection_postgres_terminates_is_a_503_never_a_500() {
    let app = spawn_app().await;
    let product = app.create_product(PRICE, 100).await;
    let (_, token) = app.create_customer(100 * PRICE).await;
    let mut unavailable = 0;
    for round in 0..5 {
        // What a Postgres restart does to every open connection, done only to this test's
        // database: "terminating connection due to administrator command" (57P01).
        // From a connection of the test's own: the app's pool holds connections this very
        // statement terminated a round ago.
        let mut own = sqlx::PgConnection::connect(&app.settings.database_url)
            .await
            .unwrap();
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .execute(&mut own)
        .await
        .unwrap();
        let _ = own.close().await;
        let placed = app
            .place_order(&token, &format!("k{round}"), &[(product, 1)])
            .await;
        match placed.status.as_u16() {
            202 => {}
            503 => {
                placed.assert_problem(503, "unavailable");
                assert_eq!(placed.headers["retry-after"], "1");
                assert!(!placed.body.to_string().contains("administrator"));
                unavailable += 1;
            }
            other => panic!("a terminated connection answered {other}: {}", placed.body),
        }
    }
    assert!(unavailable > 0, "no request met a terminated connection");
}

#[tokio::test]
async fn an_api_started_while_postgres_is_unreachable_answers_503_until_it_is_back() {
    let (pg_proxy, database_url) = proxied(&test_vars(&[]).0["ORDERLY_DATABASE_URL"], 5432).await;
    pg_proxy.set(Link::Cut);
    let app = spawn_app_with_roles(&[("ORDERLY_DATABASE_URL", &database_url)], &[]).await;

    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.body["postgres"], "down: not set up yet (retrying)");
    assert_eq!(ready.body["redis"], "ok");
    let text = ready.body.to_string();
    assert!(!text.contains("127.0.0.1") && !text.contains(&pg_proxy.addr().port().to_string()));
    app.get("/products", None)
        .await
        .assert_problem(503, "unavailable");
    assert_eq!(app.get("/healthz", None).await.status, 200);

    pg_proxy.set(Link::Up);
    eventually(&app.url("/readyz"), |status, _| status == 200).await;
    let page = app.get("/products", None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    // Set up through the proxy: the migrations ran, so the app works as any other.
    app.create_product(PRICE, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_while_mongodb_is_unreachable_waits_for_it_and_runs_the_rest() {
    // The API, relay and orchestrator in this process; inventory, payments and history in a
    // worker process whose MongoDB is behind a cut link.
    let app = spawn_app_with_roles(&[], &[Role::Relay, Role::Orchestrator]).await;
    let product = app.create_product(PRICE, 10).await;
    let (customer, token) = app.create_customer(10 * PRICE).await;

    let (mongo_proxy, mongodb_url) = proxied(&app.settings.mongodb_url, 27017).await;
    mongo_proxy.set(Link::Cut);
    let mut worker = app.spawn_worker(
        "inventory,payments,history",
        &[("ORDERLY_MONGODB_URL", &mongodb_url)],
    );
    let (metrics_addr, log) = (worker.metrics_addr.clone(), worker.log.clone());

    let readyz = format!("http://{metrics_addr}/readyz");
    let (_, report) = eventually(&readyz, |status, body| {
        status == 503 && body["postgres"] == "ok" && body["redis"] == "ok"
    })
    .await;
    assert_eq!(
        report["mongodb"], "down: not set up yet (retrying)",
        "{report}"
    );

    // Stock and payments run without MongoDB: the order confirms.
    let placed = app
        .place_order(&token, "no-history-yet", &[(product, 2)])
        .await;
    let order = placed.body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.settled_order(&order).await["status"], "confirmed");
    assert_eq!(app.balance(customer).await, 8 * PRICE);
    assert!(
        worker.process.running(),
        "the worker waits; see {}",
        log.display()
    );

    // MongoDB comes back: the history role starts and catches up.
    mongo_proxy.set(Link::Up);
    eventually(&readyz, |status, _| status == 200).await;
    let mut events = Value::Null;
    for _ in 0..300 {
        events = app
            .get(&format!("/orders/{order}/history"), app.admin())
            .await
            .body;
        if events["events"].as_array().map_or(0, Vec::len) == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events["events"][3]["type"], "order_confirmed", "{events}");
    assert!(
        worker.process.terminate().success(),
        "see {}",
        log.display()
    );
    let _ = std::fs::remove_file(&log);
}
