//! `orderly reconcile`: Redis's stock rebuilt from Postgres after Redis lost it, and checked for
//! drift, on orders in every state a saga leaves stock in.

use std::collections::BTreeMap;

use orderly::{roles::Role, services::reconcile::Reconciler};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with_roles};

const PRICE: i64 = 1_000;

fn id(body: &Value) -> String {
    body["id"].as_str().unwrap().to_owned()
}

/// Every counter and reservation record under the app's prefix, as what they mean: a record's
/// state, and for a live reservation the units it holds. Adjustment markers are left out (a
/// rebuild drops them on purpose), as are the fields a spent record keeps but never reads.
async fn stock_keys(app: &TestApp) -> BTreeMap<String, String> {
    let mut redis = app.stores.stock.connection();
    let prefix = &app.settings.redis_prefix;
    let mut state = BTreeMap::new();
    for pattern in ["stock:*", "reservation:*"] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}{pattern}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        for key in keys.into_iter().filter(|k| !k.contains(":adj:")) {
            let value = if key.starts_with(&format!("{prefix}reservation:")) {
                let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                if fields["state"] == "reserved" {
                    format!("{fields:?}")
                } else {
                    fields["state"].clone()
                }
            } else {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<String>(&mut redis)
                    .await
                    .unwrap()
            };
            state.insert(key, value);
        }
    }
    state
}

/// What a Redis restart with nothing on disk does to the app's stock.
async fn lose_redis_data(app: &TestApp) {
    let mut redis = app.stores.stock.connection();
    for pattern in ["stock:*", "reservation:*"] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}{pattern}", app.settings.redis_prefix))
            .query_async(&mut redis)
            .await
            .unwrap();
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut redis)
                .await
                .unwrap();
        }
    }
}

/// An app running every role but the orchestrator: replies wait in its queue, each saga's step
/// still running.
async fn without_orchestrator() -> TestApp {
    let roles: Vec<Role> = Role::ALL
        .into_iter()
        .filter(|r| *r != Role::Orchestrator)
        .collect();
    spawn_app_with_roles(&[], &roles).await
}

/// Waits until the inventory role has recorded what `reserve.lua` answered for the order: its
/// reply is then on its way to the saga.
async fn decided(app: &TestApp, order: &str, outcome: &str) {
    let order_id: Uuid = order.parse().unwrap();
    for _ in 0..200 {
        let recorded: Option<String> =
            sqlx::query_scalar("SELECT outcome FROM stock_reservations WHERE order_id = $1")
                .bind(order_id)
                .fetch_optional(&app.stores.pg)
                .await
                .unwrap();
        if let Some(recorded) = recorded {
            assert_eq!(recorded, outcome);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no answer recorded for order {order}");
}

/// Waits until the cancellation saga of a confirmed order has finished.
async fn cancelled(app: &TestApp, order: &str) {
    app.order_when(order, |o| {
        o["saga"]["kind"] == "cancellation" && o["saga"]["state"] == "completed"
    })
    .await;
}

#[tokio::test]
async fn redis_is_rebuilt_exactly_from_postgres_after_losing_its_data() {
    let app = spawn_app().await;
    let a = app.create_product(PRICE, 10).await;
    let b = app.create_product(PRICE, 3).await;
    let (_, rich) = app.create_customer(1_000_000).await;
    let (_, poor) = app.create_customer(PRICE / 2).await;

    let kept = id(&app.place_order(&rich, "kept", &[(a, 2), (b, 1)]).await.body);
    let regretted = id(&app
        .place_order(&rich, "regret", &[(a, 1), (b, 1)])
        .await
        .body);
    let declined = id(&app.place_order(&poor, "broke", &[(a, 1)]).await.body);
    let refused = id(&app.place_order(&rich, "greedy", &[(b, 5)]).await.body);
    assert_eq!(app.settled_order(&kept).await["status"], "confirmed");
    assert_eq!(app.settled_order(&regretted).await["status"], "confirmed");
    assert_eq!(
        app.settled_order(&declined).await["reason"],
        "insufficient_funds"
    );
    assert_eq!(
        app.settled_order(&refused).await["reason"],
        "insufficient_stock"
    );
    let cancel = app
        .post(
            &format!("/orders/{regretted}/cancel"),
            Some(&rich),
            &Value::Null,
        )
        .await;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    cancelled(&app, &regretted).await;
    assert_eq!(app.adjust_stock(a, 4, "restock").await.status, 200);

    let reconciler = Reconciler::new(app.stores.clone());
    let intact = reconciler.check().await.unwrap();
    assert!(intact.drift.is_empty(), "{:?}", intact.drift);
    assert_eq!((intact.orders, intact.holding), (4, 1));
    let before = stock_keys(&app).await;
    assert_eq!(before.len(), 2 * 2 + 4, "{before:?}");

    lose_redis_data(&app).await;
    let lost = reconciler.check().await.unwrap();
    // Four records missing, and both products' counters read zero.
    assert_eq!(lost.drift.len(), 4 + 2, "{:?}", lost.drift);

    let rebuilt = reconciler.rebuild().await.unwrap();
    assert_eq!(
        (rebuilt.products, rebuilt.orders, rebuilt.holding),
        (2, 4, 1)
    );
    assert_eq!(stock_keys(&app).await, before);
    assert!(reconciler.check().await.unwrap().drift.is_empty());
    assert_eq!(app.available(a).await, 10 + 4 - 2);
    assert_eq!(app.held(b).await, 1);

    // The rebuilt records work as the scripts' own: cancelling the kept order gives its units
    // back, and a new order can take them.
    let cancel = app
        .post(&format!("/orders/{kept}/cancel"), Some(&rich), &Value::Null)
        .await;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    cancelled(&app, &kept).await;
    assert_eq!(app.available(b).await, 3);
    let last = id(&app.place_order(&rich, "last", &[(b, 3)]).await.body);
    assert_eq!(app.settled_order(&last).await["status"], "confirmed");
    assert!(reconciler.check().await.unwrap().drift.is_empty());
}

#[tokio::test]
async fn a_reservation_whose_reply_is_still_queued_survives_the_rebuild() {
    // No orchestrator: the reserve lands and its `stock_reserved` reply waits in the queue, the
    // saga's step still running.
    let mut app = without_orchestrator().await;
    let product = app.create_product(PRICE, 4).await;
    let (_, token) = app.create_customer(1_000_000).await;
    let order = id(&app
        .place_order(&token, "queued", &[(product, 3)])
        .await
        .body);
    decided(&app, &order, "reserved").await;
    assert_eq!(app.held(product).await, 3);

    lose_redis_data(&app).await;
    let reconciler = Reconciler::new(app.stores.clone());
    assert_eq!(reconciler.rebuild().await.unwrap().holding, 1);
    assert_eq!(app.available(product).await, 1);

    // The reply is applied: the order confirms holding units that Redis still counts as held,
    // so they cannot be sold a second time.
    app.start_workers(&[Role::Orchestrator]);
    assert_eq!(app.settled_order(&order).await["status"], "confirmed");
    assert_eq!(app.held(product).await, 3);
    let (_, other) = app.create_customer(1_000_000).await;
    let late = id(&app.place_order(&other, "late", &[(product, 2)]).await.body);
    assert_eq!(
        app.settled_order(&late).await["reason"],
        "insufficient_stock"
    );
    assert!(reconciler.check().await.unwrap().drift.is_empty());
}

#[tokio::test]
async fn a_reserve_refused_while_its_reply_is_still_queued_is_rebuilt_as_refused() {
    // No orchestrator: both answers wait in the queue, both sagas' reserve steps still running.
    let mut app = without_orchestrator().await;
    let product = app.create_product(PRICE, 4).await;
    let (_, token) = app.create_customer(1_000_000).await;
    let kept = id(&app.place_order(&token, "kept", &[(product, 3)]).await.body);
    decided(&app, &kept, "reserved").await;
    let refused = id(&app
        .place_order(&token, "refused", &[(product, 2)])
        .await
        .body);
    decided(&app, &refused, "rejected").await;
    let reconciler = Reconciler::new(app.stores.clone());

    // Counting the refused order as held would take 5 of the 4 units on hand: the rebuild
    // would refuse to run.
    lose_redis_data(&app).await;
    let rebuilt = reconciler.rebuild().await.unwrap();
    assert_eq!(rebuilt.holding, 1);
    assert_eq!(
        (app.available(product).await, app.held(product).await),
        (1, 3)
    );

    // With enough on hand for both, counting it as held would succeed and keep its 2 units
    // for good: the refusal, once applied, releases nothing.
    assert_eq!(app.adjust_stock(product, 4, "restock").await.status, 200);
    lose_redis_data(&app).await;
    reconciler.rebuild().await.unwrap();
    assert_eq!(
        (app.available(product).await, app.held(product).await),
        (5, 3)
    );

    app.start_workers(&[Role::Orchestrator]);
    assert_eq!(app.settled_order(&kept).await["status"], "confirmed");
    assert_eq!(
        app.settled_order(&refused).await["reason"],
        "insufficient_stock"
    );
    assert_eq!(
        (app.available(product).await, app.held(product).await),
        (5, 3)
    );
    assert!(reconciler.check().await.unwrap().drift.is_empty());
}

#[tokio::test]
async fn drift_is_named_and_nothing_is_changed_by_a_check() {
    let app = spawn_app().await;
    let product = app.create_product(PRICE, 5).await;
    let (_, token) = app.create_customer(1_000_000).await;
    let order = id(&app.place_order(&token, "one", &[(product, 2)]).await.body);
    assert_eq!(app.settled_order(&order).await["status"], "confirmed");

    let mut redis = app.stores.stock.connection();
    redis::cmd("SET")
        .arg(app.stores.stock.available_key(product))
        .arg(9)
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let order_id: Uuid = order.parse().unwrap();
    redis::cmd("HSET")
        .arg(app.stores.stock.reservation_key(order_id))
        .arg("state")
        .arg("released")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let before = app.snapshot().await;

    let report = Reconciler::new(app.stores.clone()).check().await.unwrap();
    let named: Vec<String> = report.drift.iter().map(ToString::to_string).collect();
    assert_eq!(
        named,
        [
            format!("order {order}: reservation record released, expected reserved"),
            format!("product {product}: available 9 held 2 in Redis, expected available 3 held 2"),
        ]
    );
    assert_eq!(app.snapshot().await, before);
}
