//! The cancel contract where it races the saga: a `202` means the cancel was recorded, and a
//! cancel recorded while the order was still pending ends it `cancelled/cancelled_by_customer`
//! whatever the saga met before the cancel's own message reached it. Each test holds the saga
//! at the racing moment by running only some roles and driving the orchestrator by hand, and
//! takes one message at a time, so the orchestrator meets them in the order they were queued.

use std::time::Duration;

use lapin::{options::QueueDeclareOptions, types::FieldTable};
use orderly::{
    domain::order::OrderReason,
    messaging::{
        self,
        consumer::Handler,
        envelope::{Envelope, SagaReply},
        topology::{Queue, Topology},
    },
    roles::{Role, orchestrator::Orchestrator},
};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with_roles};

const PRICE: i64 = 20_000;
const ONE_AT_A_TIME: [(&str, &str); 1] = [("ORDERLY_PREFETCH", "1")];

/// Messages waiting in one of the app's queues, once the outbox has nothing left to send.
async fn waiting(app: &TestApp, queue: Queue) -> u32 {
    let connection = messaging::connect(&app.settings.amqp_url, "test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let name = Topology::new(&app.settings.amqp_prefix).queue(queue);
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let count = channel
        .queue_declare(&name, passive, FieldTable::default())
        .await
        .unwrap()
        .message_count();
    let _ = connection.close(200, "done").await;
    count
}

/// Waits until `n` messages wait for the orchestrator and the outbox is empty.
async fn replies_queued(app: &TestApp, n: u32) {
    for _ in 0..200 {
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&app.stores.pg)
            .await
            .unwrap();
        if outbox == 0 && waiting(app, Queue::Orchestrator).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} replies never reached the orchestrator's queue");
}

async fn cancel(app: &TestApp, token: &str, order: &str) -> crate::helpers::Reply {
    app.post(
        &format!("/orders/{order}/cancel"),
        Some(token),
        &Value::Null,
    )
    .await
}

/// The order's history once its last event is of type `last`.
async fn history_ending(app: &TestApp, order: &str, last: &str) -> Vec<Value> {
    for _ in 0..100 {
        let events = app
            .get(&format!("/orders/{order}/history"), app.admin())
            .await
            .body["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if events.last().is_some_and(|e| e["type"] == last) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the history of {order} never ended in {last}");
}

/// A declined payment being compensated, a cancel recorded after the release's reply was queued;
/// the orchestrator then meets the queued replies and the cancel with `settings`.
async fn cancel_while_compensating(settings: &[(&str, &str)]) {
    let mut app = spawn_app_with_roles(settings, &[Role::Relay, Role::History]).await;
    let product = app.create_product(PRICE, 4).await;
    let (customer, token) = app.create_customer(PRICE - 1).await;
    let placed = app.place_order(&token, "broke", &[(product, 1)]).await;
    let order = placed.body["id"].as_str().unwrap().to_owned();
    let order_id: Uuid = order.parse().unwrap();
    let saga: Uuid = placed.body["saga"]["id"].as_str().unwrap().parse().unwrap();

    // The orchestrator's part so far, by hand: reserved, then declined; it now releases.
    let orchestrator = Orchestrator::new(app.role_context());
    for body in [
        SagaReply::StockReserved,
        SagaReply::PaymentDeclined {
            reason: OrderReason::InsufficientFunds,
        },
    ] {
        orchestrator
            .handle(Envelope::new(saga, order_id, 1, body))
            .await
            .unwrap();
    }
    let compensating = app.get(&format!("/orders/{order}"), app.admin()).await;
    assert_eq!(compensating.body["saga"]["state"], "compensating");

    // Inventory reserves and releases; both replies wait for the orchestrator, ahead of the
    // cancel recorded next.
    app.start_workers(&[Role::Inventory]);
    replies_queued(&app, 2).await;
    let accepted = cancel(&app, &token, &order).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(accepted.body["status"], "pending");

    app.start_workers(&[Role::Orchestrator]);
    let done = app.settled_order(&order).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["reason"], "cancelled_by_customer", "{done}");
    assert_eq!(app.available(product).await, 4);
    assert_eq!(app.held(product).await, 0);
    assert_eq!(app.balance(customer).await, PRICE - 1);
    let events = history_ending(&app, &order, "order_cancelled").await;
    assert!(events.iter().any(|e| e["type"] == "cancel_requested"));
    assert_eq!(
        events.last().unwrap()["data"]["reason"],
        "cancelled_by_customer"
    );
}

#[tokio::test]
async fn a_cancel_recorded_while_a_failure_is_compensated_ends_cancelled_by_the_customer() {
    cancel_while_compensating(&ONE_AT_A_TIME).await;
}

#[tokio::test]
async fn a_batch_holding_a_cancel_and_the_replies_it_overtook_ends_cancelled_by_the_customer() {
    // The stale reserve reply, the release's reply and the cancel, queued before the
    // orchestrator starts, are one batch: applied in delivery order to one copy of the saga.
    cancel_while_compensating(&[("ORDERLY_BATCH_LINGER_MS", "500")]).await;
}

#[tokio::test]
async fn a_refusal_that_overtakes_a_recorded_cancel_still_ends_cancelled_by_the_customer() {
    let mut app = spawn_app_with_roles(
        &ONE_AT_A_TIME,
        &[Role::Relay, Role::Inventory, Role::History],
    )
    .await;
    let product = app.create_product(PRICE, 1).await;
    let (customer, token) = app.create_customer(10 * PRICE).await;
    let placed = app.place_order(&token, "greedy", &[(product, 2)]).await;
    let order = placed.body["id"].as_str().unwrap().to_owned();

    // The refusal waits for the orchestrator, ahead of the cancel.
    replies_queued(&app, 1).await;
    let accepted = cancel(&app, &token, &order).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);

    app.start_workers(&[Role::Orchestrator]);
    let done = app.settled_order(&order).await;
    assert_eq!(
        (done["status"].as_str(), done["reason"].as_str()),
        (Some("cancelled"), Some("cancelled_by_customer")),
        "{done}"
    );
    history_ending(&app, &order, "order_cancelled").await;
    assert_eq!(app.available(product).await, 1);
    assert_eq!(app.held(product).await, 0);
    assert_eq!(app.balance(customer).await, 10 * PRICE);
}

#[tokio::test]
async fn a_cancel_decided_after_the_order_ended_is_refused_and_records_nothing() {
    let app = spawn_app_with_roles(&[], &Role::ALL).await;
    let product = app.create_product(PRICE, 0).await;
    let (_, token) = app.create_customer(10 * PRICE).await;
    let placed = app.place_order(&token, "too-late", &[(product, 1)]).await;
    let order = placed.body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.settled_order(&order).await["status"], "rejected");
    history_ending(&app, &order, "order_rejected").await;

    let before = app.snapshot().await;
    cancel(&app, &token, &order)
        .await
        .assert_problem(409, "invalid_transition");
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused cancel records nothing"
    );
}
