//! The checkout saga end to end through every store and RabbitMQ, one outcome per test.
//! Assertions check stock (Redis), wallets (Postgres) and history (MongoDB), not just statuses.

use std::collections::HashSet;

use futures::{TryStreamExt, future::join_all};
use orderly::roles::Role;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with_roles};

const PRICE: i64 = 135_000;

fn id(body: &Value) -> String {
    body["id"].as_str().expect("an id").to_owned()
}

/// The order's history once it holds `n` events (the projection is asynchronous).
async fn history(app: &TestApp, order: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let reply = app
            .get(&format!("/orders/{order}/history"), app.admin())
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let events = reply.body["events"].as_array().unwrap().clone();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the history of {order} never reached {n} events");
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Asserts that MongoDB holds the order's history exactly as Postgres numbered it: seqs 1 to the
/// order's last seq, none missing and none extra. Read from the collection itself: the API stops
/// at the first gap, so a history read through it could never show one.
async fn assert_contiguous(app: &TestApp, order: &str) {
    let id: Uuid = order.parse().unwrap();
    let last_seq: i32 = sqlx::query_scalar("SELECT last_seq FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(&app.stores.pg)
        .await
        .unwrap();
    let stored: Vec<i32> = app
        .stores
        .docs
        .database()
        .collection::<mongodb::bson::Document>(orderly::store::history::HISTORY)
        .find(mongodb::bson::doc! { "order_id": order })
        .sort(mongodb::bson::doc! { "seq": 1 })
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|d| d.get_i32("seq").unwrap())
        .collect();
    assert_eq!(
        stored,
        (1..=last_seq).collect::<Vec<_>>(),
        "the history of {order} as stored, against Postgres's numbering"
    );
}

fn step_statuses(saga: &Value) -> Vec<(&str, &str)> {
    saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_checkout_reserves_charges_and_confirms() {
    let app = spawn_app().await;
    let product = app.create_product(PRICE, 10).await;
    let (customer, token) = app.create_customer(1_000_000).await;

    let placed = app.place_order(&token, "k1", &[(product, 2)]).await;
    assert_eq!(placed.status, 202, "{}", placed.body);
    let order = id(&placed.body);
    assert_eq!(
        placed.headers["location"].to_str().unwrap(),
        format!("/orders/{order}")
    );
    assert_eq!(placed.body["status"], "pending");
    assert_eq!(placed.body["customer_id"], customer.to_string());
    assert_eq!(placed.body["items"][0]["price_minor"], PRICE);
    assert_eq!(placed.body["total_minor"], 2 * PRICE);
    assert_eq!(placed.body["currency"], "IDR");
    assert_eq!(placed.body["saga"]["state"], "running");
    assert!(Uuid::parse_str(&order).unwrap().get_version_num() == 7);

    let done = app.settled_order(&order).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    assert_eq!(done["reason"], Value::Null);
    assert_eq!(done["saga"]["state"], "completed");
    assert_eq!(done["saga"]["kind"], "checkout");
    assert_eq!(
        step_statuses(&done["saga"]),
        [
            ("reserve_stock", "succeeded"),
            ("charge_payment", "succeeded"),
            ("confirm_order", "succeeded")
        ]
    );
    assert!(done["version"].as_i64().unwrap() > 1);

    assert_eq!(app.balance(customer).await, 1_000_000 - 2 * PRICE);
    assert_eq!(app.available(product).await, 8);
    assert_eq!(app.held(product).await, 2);

    let events = history(&app, &order, 4).await;
    assert_contiguous(&app, &order).await;
    assert_eq!(
        types(&events),
        [
            "order_placed",
            "stock_reserved",
            "payment_charged",
            "order_confirmed"
        ]
    );

    // The saga endpoint shows the same saga to its owner and the admin only.
    let saga_id = done["saga"]["id"].as_str().unwrap();
    let saga = app.get(&format!("/sagas/{saga_id}"), Some(&token)).await;
    assert_eq!(saga.status, 200);
    assert_eq!(saga.body["order_id"], order.as_str());
    assert_eq!(saga.body["state"], "completed");
    assert!(saga.body["finished_at"].is_string());
    let (_, stranger) = app.create_customer(0).await;
    app.get(&format!("/sagas/{saga_id}"), Some(&stranger))
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("/orders/{order}"), Some(&stranger))
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("/orders/{order}/history"), Some(&stranger))
        .await
        .assert_problem(404, "not_found");
    app.get(&format!("/sagas/{saga_id}"), None)
        .await
        .assert_problem(401, "unauthorized");

    // A confirmed order makes the customer's review a verified purchase.
    let review = app
        .post(
            &format!("/products/{product}/reviews"),
            Some(&token),
            &serde_json::json!({"rating": 5}),
        )
        .await;
    assert_eq!(review.body["verified_purchase"], true, "{}", review.body);
    let other = app
        .post(
            &format!("/products/{product}/reviews"),
            Some(&stranger),
            &serde_json::json!({"rating": 1}),
        )
        .await;
    assert_eq!(other.body["verified_purchase"], false);
}

#[tokio::test]
async fn lack_of_stock_on_one_line_rejects_the_whole_order() {
    let app = spawn_app().await;
    let plenty = app.create_product(1_000, 5).await;
    let scarce = app.create_product(2_000, 1).await;
    let (customer, token) = app.create_customer(100_000).await;

    let placed = app
        .place_order(&token, "all-or-nothing", &[(plenty, 2), (scarce, 3)])
        .await;
    assert_eq!(placed.status, 202, "{}", placed.body);
    let done = app.settled_order(&id(&placed.body)).await;
    assert_eq!(done["status"], "rejected");
    assert_eq!(done["reason"], "insufficient_stock");
    assert_eq!(done["saga"]["state"], "failed");
    assert_eq!(
        step_statuses(&done["saga"]),
        [
            ("reserve_stock", "failed"),
            ("charge_payment", "skipped"),
            ("confirm_order", "skipped")
        ]
    );
    assert_eq!(app.available(plenty).await, 5, "no line was reserved");
    assert_eq!(app.available(scarce).await, 1);
    assert_eq!(app.held(plenty).await + app.held(scarce).await, 0);
    assert_eq!(app.balance(customer).await, 100_000);
    let events = history(&app, &id(&placed.body), 3).await;
    assert_contiguous(&app, &id(&placed.body)).await;
    assert_eq!(
        types(&events),
        ["order_placed", "stock_rejected", "order_rejected"]
    );
}

#[tokio::test]
async fn a_declined_payment_gives_the_stock_back() {
    let app = spawn_app().await;
    let product = app.create_product(PRICE, 3).await;
    let (customer, token) = app.create_customer(PRICE - 1).await;

    let placed = app.place_order(&token, "broke", &[(product, 1)]).await;
    let done = app.settled_order(&id(&placed.body)).await;
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["reason"], "insufficient_funds");
    assert_eq!(done["saga"]["state"], "compensated");
    assert_eq!(
        step_statuses(&done["saga"]),
        [
            ("reserve_stock", "compensated"),
            ("charge_payment", "failed"),
            ("confirm_order", "skipped")
        ]
    );
    assert_eq!(app.available(product).await, 3);
    assert_eq!(app.held(product).await, 0);
    assert_eq!(app.balance(customer).await, PRICE - 1);
    let events = history(&app, &id(&placed.body), 5).await;
    assert_contiguous(&app, &id(&placed.body)).await;
    assert_eq!(
        types(&events),
        [
            "order_placed",
            "stock_reserved",
            "payment_declined",
            "stock_released",
            "order_cancelled"
        ]
    );
}

#[tokio::test]
async fn cancelling_a_pending_order_undoes_what_its_saga_did() {
    // No payments role yet: the saga waits at charge_payment, stock reserved.
    let roles = [
        Role::Relay,
        Role::Orchestrator,
        Role::Inventory,
        Role::History,
    ];
    let mut app = spawn_app_with_roles(&[], &roles).await;
    let product = app.create_product(PRICE, 4).await;
    let (customer, token) = app.create_customer(10 * PRICE).await;

    let placed = app.place_order(&token, "cancel-me", &[(product, 2)]).await;
    let order = id(&placed.body);
    app.order_when(&order, |o| o["saga"]["steps"][1]["status"] == "running")
        .await;
    assert_eq!(app.available(product).await, 2);

    let cancelled = app
        .post(
            &format!("/orders/{order}/cancel"),
            Some(&token),
            &Value::Null,
        )
        .await;
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    assert_eq!(cancelled.body["id"], order.as_str());
    // A retried cancel while the first is still undoing changes nothing.
    let again = app
        .post(
            &format!("/orders/{order}/cancel"),
            Some(&token),
            &Value::Null,
        )
        .await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.body["id"], order.as_str());

    // Payments comes up and finds both the charge and its refund queued.
    app.start_workers(&[Role::Payments]);
    let done = app.order_when(&order, |o| o["status"] != "pending").await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["reason"], "cancelled_by_customer");
    assert_eq!(done["saga"]["state"], "compensated");
    assert_eq!(app.available(product).await, 4);
    assert_eq!(app.held(product).await, 0);
    assert_eq!(app.balance(customer).await, 10 * PRICE);
    let events = history(&app, &order, 6).await;
    assert_contiguous(&app, &order).await;
    let kinds = types(&events);
    assert_eq!(
        kinds[..3],
        ["order_placed", "stock_reserved", "cancel_requested"]
    );
    assert_eq!(kinds.last(), Some(&"order_cancelled"));
    assert!(kinds.contains(&"payment_refunded") && kinds.contains(&"stock_released"));
    let cancels = kinds.iter().filter(|k| **k == "cancel_requested").count();
    assert_eq!(cancels, 1, "the retried cancel recorded nothing: {kinds:?}");
}

#[tokio::test]
async fn cancelling_a_confirmed_order_refunds_and_restocks() {
    let app = spawn_app().await;
    let product = app.create_product(PRICE, 5).await;
    let (customer, token) = app.create_customer(1_000_000).await;
    let placed = app.place_order(&token, "regret", &[(product, 3)]).await;
    let order = id(&placed.body);
    assert_eq!(app.settled_order(&order).await["status"], "confirmed");
    assert_eq!(app.balance(customer).await, 1_000_000 - 3 * PRICE);

    let reply = app
        .post(
            &format!("/orders/{order}/cancel"),
            app.admin(),
            &Value::Null,
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let done = app.order_when(&order, |o| o["status"] == "cancelled").await;
    assert_eq!(done["reason"], "cancelled_by_customer");
    assert_eq!(done["saga"]["kind"], "cancellation");
    assert_eq!(
        app.order_when(&order, |o| o["saga"]["state"] == "completed")
            .await["saga"]["steps"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(app.balance(customer).await, 1_000_000);
    assert_eq!(app.available(product).await, 5);
    assert_eq!(app.held(product).await, 0);
    app.post(
        &format!("/orders/{order}/cancel"),
        Some(&token),
        &Value::Null,
    )
    .await
    .assert_problem(409, "invalid_transition");

    let events = history(&app, &order, 8).await;
    assert_contiguous(&app, &order).await;
    assert_eq!(
        types(&events)[4..],
        [
            "cancel_requested",
            "payment_refunded",
            "stock_released",
            "order_cancelled"
        ]
    );
}

#[tokio::test]
async fn a_rejected_order_cannot_be_cancelled() {
    let app = spawn_app().await;
    let product = app.create_product(PRICE, 0).await;
    let (_, token) = app.create_customer(1_000_000).await;
    let placed = app.place_order(&token, "nope", &[(product, 1)]).await;
    let order = id(&placed.body);
    assert_eq!(app.settled_order(&order).await["status"], "rejected");
    app.post(
        &format!("/orders/{order}/cancel"),
        Some(&token),
        &Value::Null,
    )
    .await
    .assert_problem(409, "invalid_transition");
}

#[tokio::test]
async fn one_key_places_one_order_however_often_it_is_sent() {
    let app = spawn_app().await;
    let product = app.create_product(PRICE, 100).await;
    let (customer, token) = app.create_customer(100 * PRICE).await;

    let line = [(product, 1)];
    let replies = join_all((0..20).map(|_| app.place_order(&token, "same-key", &line))).await;
    let ids: HashSet<String> = replies.iter().map(|r| id(&r.body)).collect();
    assert_eq!(ids.len(), 1, "one order for one key");
    assert!(
        replies
            .iter()
            .all(|r| matches!(r.status.as_u16(), 200 | 202))
    );
    assert_eq!(replies.iter().filter(|r| r.status == 202).count(), 1);
    let order = ids.into_iter().next().unwrap();
    app.settled_order(&order).await;
    assert_eq!(app.balance(customer).await, 99 * PRICE, "charged once");
    assert_eq!(app.available(product).await, 99);

    app.place_order(&token, "same-key", &[(product, 2)])
        .await
        .assert_problem(422, "idempotency_key_reused");
    let again = app.place_order(&token, "same-key", &[(product, 1)]).await;
    assert_eq!(again.status, 200);
    assert_eq!(id(&again.body), order);

    // Keys are scoped to the customer.
    let (_, other) = app.create_customer(PRICE).await;
    let theirs = app.place_order(&other, "same-key", &[(product, 1)]).await;
    assert_eq!(theirs.status, 202);
    assert_ne!(id(&theirs.body), order);

    let listed = app.get("/orders?limit=200", Some(&token)).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);

    // A retry gets its order even after a product in it left the catalog ...
    let deleted = app
        .send(
            reqwest::Method::DELETE,
            &format!("/products/{product}"),
            app.admin(),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    let retried = app.place_order(&token, "same-key", &[(product, 1)]).await;
    assert_eq!(retried.status, 200);
    assert_eq!(id(&retried.body), order);
    // ... while a refused request claims no key: fixed, it goes through under the same key.
    app.place_order(&token, "fresh-key", &[(product, 1)])
        .await
        .assert_problem(422, "validation_failed");
    let other_product = app.create_product(PRICE, 1).await;
    let fixed = app
        .place_order(&token, "fresh-key", &[(other_product, 1)])
        .await;
    assert_eq!(fixed.status, 202);
}

#[tokio::test]
async fn checkout_input_is_checked_before_anything_is_written() {
    let app = spawn_app().await;
    let product = app.create_product(PRICE, 10).await;
    let (_, token) = app.create_customer(PRICE).await;
    let before = app.snapshot().await;

    let no_key = app
        .raw(
            reqwest::Method::POST,
            "/orders",
            Some(&token),
            &[("content-type", "application/json")],
            Some(
                format!(r#"{{"items":[{{"product_id":"{product}","quantity":1}}]}}"#).into_bytes(),
            ),
        )
        .await;
    no_key.assert_problem(400, "validation_failed");
    assert_eq!(no_key.body["errors"][0]["field"], "Idempotency-Key");

    let unknown = app.place_order(&token, "u", &[(Uuid::new_v4(), 1)]).await;
    unknown.assert_problem(422, "validation_failed");
    assert_eq!(unknown.body["errors"][0]["field"], "items[0].product_id");

    for (lines, field) in [
        (vec![(product, 0)], "items[0].quantity"),
        (vec![(product, 1001)], "items[0].quantity"),
        (vec![(product, 1), (product, 2)], "items[1].product_id"),
        (vec![], "items"),
    ] {
        let reply = app.place_order(&token, "bad", &lines).await;
        reply.assert_problem(422, "validation_failed");
        assert_eq!(reply.body["errors"][0]["field"], field);
    }
    let deleted = app.create_product(PRICE, 1).await;
    assert_eq!(
        app.send(
            reqwest::Method::DELETE,
            &format!("/products/{deleted}"),
            app.admin(),
            None
        )
        .await
        .status,
        204
    );
    let before_deleted = app.snapshot().await;
    app.place_order(&token, "gone", &[(deleted, 1)])
        .await
        .assert_problem(422, "validation_failed");
    assert_eq!(app.snapshot().await, before_deleted);

    app.place_order(&app.admin_token, "admin", &[(product, 1)])
        .await
        .assert_problem(403, "forbidden");
    for path in [
        "/orders?status=shipped",
        "/orders?limit=0",
        "/orders?cursor=zzz",
    ] {
        app.get(path, Some(&token))
            .await
            .assert_problem(400, "validation_failed");
    }
    let order = Uuid::now_v7();
    for wait in ["31", "-1", "soon"] {
        app.get(&format!("/orders/{order}?wait={wait}"), Some(&token))
            .await
            .assert_problem(400, "validation_failed");
    }
    app.get(&format!("/orders/{order}"), Some(&token))
        .await
        .assert_problem(404, "not_found");
    let _ = before;
}

#[tokio::test]
async fn orders_are_listed_newest_first_to_their_owner() {
    let app = spawn_app().await;
    let product = app.create_product(10, 100).await;
    let (_, alice) = app.create_customer(1_000).await;
    let (_, bob) = app.create_customer(1_000).await;
    let mut mine = Vec::new();
    for n in 0..3 {
        mine.push(id(&app
            .place_order(&alice, &format!("a{n}"), &[(product, 1)])
            .await
            .body));
    }
    app.place_order(&bob, "b", &[(product, 1)]).await;

    let page1 = app.get("/orders?limit=2", Some(&alice)).await;
    let items = page1.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], mine[2].as_str());
    assert_eq!(items[1]["id"], mine[1].as_str());
    let cursor = page1.body["next_cursor"].as_str().unwrap();
    let page2 = app
        .get(&format!("/orders?limit=2&cursor={cursor}"), Some(&alice))
        .await;
    assert_eq!(page2.body["items"][0]["id"], mine[0].as_str());
    assert_eq!(page2.body["next_cursor"], Value::Null);

    let all = app.get("/orders?limit=200", app.admin()).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 4);
    for o in &mine {
        app.settled_order(o).await;
    }
    let confirmed = app.get("/orders?status=confirmed", Some(&alice)).await;
    assert_eq!(confirmed.body["items"].as_array().unwrap().len(), 3);
    let pending = app.get("/orders?status=pending", Some(&alice)).await;
    assert_eq!(pending.body["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn contention_sells_exactly_the_stock_there_is() {
    let app = spawn_app_with_roles(&[("ORDERLY_PG_MAX_CONNECTIONS", "16")], &Role::ALL).await;
    let product = app.create_product(PRICE, 25).await;
    let mut customers = Vec::new();
    for _ in 0..40 {
        customers.push(app.create_customer(3 * PRICE).await);
    }
    let placed = join_all((0..120).map(|n| {
        let (_, token) = &customers[n % 40];
        let app = &app;
        async move {
            app.place_order(token, &format!("buy-{n}"), &[(product, 1)])
                .await
        }
    }))
    .await;
    assert!(
        placed.iter().all(|r| r.status == 202),
        "every checkout accepted"
    );
    let settled = join_all(
        placed
            .iter()
            .map(|r| app.settled_order(r.body["id"].as_str().unwrap())),
    )
    .await;
    let confirmed: Vec<&Value> = settled
        .iter()
        .filter(|o| o["status"] == "confirmed")
        .collect();
    assert_eq!(confirmed.len(), 25, "exactly the stock was sold");
    assert!(
        settled
            .iter()
            .filter(|o| o["status"] != "confirmed")
            .all(|o| o["status"] == "rejected" && o["reason"] == "insufficient_stock")
    );
    assert_eq!(app.available(product).await, 0);
    assert_eq!(app.held(product).await, 25);
    for (customer, _) in &customers {
        let bought = confirmed
            .iter()
            .filter(|o| o["customer_id"] == customer.to_string())
            .count() as i64;
        assert_eq!(app.balance(*customer).await, 3 * PRICE - bought * PRICE);
    }
}

#[tokio::test]
async fn checkouts_past_the_pending_limit_are_refused_and_change_nothing() {
    // No worker roles: every accepted order stays pending.
    let mut app = spawn_app_with_roles(&[("ORDERLY_MAX_PENDING_ORDERS", "2")], &[]).await;
    let product = app.create_product(PRICE, 10).await;
    let (_, token) = app.create_customer(10 * PRICE).await;

    let mut first = None;
    for key in ["first", "second"] {
        let placed = app.place_order(&token, key, &[(product, 1)]).await;
        assert_eq!(placed.status, 202, "{}", placed.body);
        // The answer is built from what the checkout wrote; it must read the same afterwards.
        let read = app
            .get(&format!("/orders/{}", id(&placed.body)), Some(&token))
            .await;
        assert_eq!(placed.body, read.body);
        first.get_or_insert(placed.body);
    }
    // Admission control reads the count from Postgres five times a second.
    for _ in 0..100 {
        if app.metrics().await.contains("orderly_orders_pending 2") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let before = app.snapshot().await;
    let refused = app.place_order(&token, "third", &[(product, 1)]).await;
    refused.assert_problem(503, "unavailable");
    assert_eq!(refused.headers["retry-after"], "1");
    // A retry of a checkout that went through still gets its order, however overloaded.
    let replayed = app.place_order(&token, "first", &[(product, 1)]).await;
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    assert_eq!(Some(&replayed.body["id"]), first.as_ref().map(|o| &o["id"]));
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused checkout changes nothing"
    );
    // The token is checked first: a stranger learns nothing about the backlog.
    app.place_order("not-a-token", "fourth", &[(product, 1)])
        .await
        .assert_problem(401, "unauthorized");
    assert!(
        app.metrics()
            .await
            .contains("orderly_checkouts_refused_total 1"),
        "refusals are counted"
    );

    // Workers drain the backlog; the refused checkout, retried with its key, now goes through.
    app.start_workers(&Role::ALL);
    let mut retried = app.place_order(&token, "third", &[(product, 1)]).await;
    for _ in 0..100 {
        if retried.status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        retried = app.place_order(&token, "third", &[(product, 1)]).await;
    }
    assert_eq!(retried.status, 202, "{}", retried.body);
    let settled = app.settled_order(&id(&retried.body)).await;
    assert_eq!(settled["status"], "confirmed", "{settled}");
}

#[tokio::test]
async fn one_customer_at_its_bound_is_refused_while_others_still_buy() {
    // No worker roles: every accepted order stays pending.
    let mut app = spawn_app_with_roles(&[("ORDERLY_MAX_PENDING_PER_CUSTOMER", "2")], &[]).await;
    let product = app.create_product(PRICE, 10).await;
    let (_, eager) = app.create_customer(10 * PRICE).await;
    let (_, patient) = app.create_customer(10 * PRICE).await;

    for key in ["one", "two"] {
        let placed = app.place_order(&eager, key, &[(product, 1)]).await;
        assert_eq!(placed.status, 202, "{}", placed.body);
    }
    let before = app.snapshot().await;
    let limited = app.place_order(&eager, "three", &[(product, 1)]).await;
    limited.assert_problem(429, "rate_limited");
    assert_eq!(limited.headers["retry-after"], "1");
    assert_eq!(
        app.snapshot().await,
        before,
        "a limited checkout changes nothing"
    );
    let replayed = app.place_order(&eager, "one", &[(product, 1)]).await;
    assert_eq!(
        replayed.status, 200,
        "an accepted key still answers: {}",
        replayed.body
    );

    let other = app.place_order(&patient, "mine", &[(product, 1)]).await;
    assert_eq!(
        other.status, 202,
        "another customer is not refused: {}",
        other.body
    );
    assert!(
        app.metrics()
            .await
            .contains("orderly_checkouts_rate_limited_total 1"),
        "limits are counted"
    );

    // Once the customer's orders settle, its refused key goes through.
    app.start_workers(&Role::ALL);
    app.settled_order(&id(&replayed.body)).await;
    let mut retried = app.place_order(&eager, "three", &[(product, 1)]).await;
    for _ in 0..100 {
        if retried.status != 429 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        retried = app.place_order(&eager, "three", &[(product, 1)]).await;
    }
    assert_eq!(retried.status, 202, "{}", retried.body);
}
