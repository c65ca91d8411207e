//! `GET /sagas`: the admin's search of sagas, newest first, by every filter.

use orderly::roles::Role;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app_with_roles};

/// The ids of the sagas a search answers, in order, after checking it answered `200`.
async fn found(app: &TestApp, query: &str) -> Vec<String> {
    let reply = app.get(&format!("/sagas?{query}"), app.admin()).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
    ids(&reply.body)
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sagas_are_found_newest_first_by_every_filter() {
    // Payments is down, so a checkout with stock waits at charge_payment, still running.
    let roles = [
        Role::Relay,
        Role::Orchestrator,
        Role::Inventory,
        Role::History,
    ];
    let mut app = spawn_app_with_roles(&[], &roles).await;
    let in_stock = app.create_product(500, 5).await;
    let sold_out = app.create_product(500, 0).await;
    let (waiting_customer, waiting_token) = app.create_customer(10_000).await;
    let (refused_customer, refused_token) = app.create_customer(10_000).await;

    let placed = app
        .place_order(&waiting_token, "waits", &[(in_stock, 1)])
        .await;
    let waiting_order = placed.body["id"].as_str().unwrap().to_owned();
    let waiting = placed.body["saga"].clone();
    app.order_when(&waiting_order, |o| {
        o["saga"]["steps"][0]["status"] == "succeeded"
    })
    .await;
    let placed = app
        .place_order(&refused_token, "refused", &[(sold_out, 1)])
        .await;
    let refused_order = placed.body["id"].as_str().unwrap().to_owned();
    let refused = app
        .order_when(&refused_order, |o| o["status"] == "rejected")
        .await["saga"]
        .clone();
    let (w, r) = (
        waiting["id"].as_str().unwrap().to_owned(),
        refused["id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(refused["state"], "failed", "{refused}");

    assert_eq!(
        found(&app, "").await,
        [r.as_str(), w.as_str()],
        "newest first"
    );
    assert_eq!(found(&app, "state=running").await, [w.as_str()]);
    assert_eq!(found(&app, "state=failed").await, [r.as_str()]);
    assert!(found(&app, "state=completed").await.is_empty());
    assert_eq!(found(&app, "kind=checkout").await, [r.as_str(), w.as_str()]);
    assert!(found(&app, "kind=cancellation").await.is_empty());
    assert_eq!(
        found(&app, &format!("order_id={waiting_order}")).await,
        [w.as_str()]
    );
    assert_eq!(
        found(&app, &format!("customer_id={refused_customer}")).await,
        [r.as_str()]
    );
    assert_eq!(
        found(
            &app,
            &format!("customer_id={waiting_customer}&state=failed")
        )
        .await,
        Vec::<String>::new(),
        "every filter must hold"
    );
    let started = |s: &Value| s["started_at"].as_str().unwrap().to_owned();
    assert_eq!(
        found(&app, &format!("started_after={}", started(&waiting))).await,
        [r.as_str()]
    );
    assert_eq!(
        found(&app, &format!("started_before={}", started(&refused))).await,
        [w.as_str()]
    );
    // Stuck: not ended, unchanged for at least this long.
    assert_eq!(found(&app, "stuck_for=0").await, [w.as_str()]);
    assert!(found(&app, "stuck_for=3600").await.is_empty());

    // Pages of one, like every list.
    let first = app.get("/sagas?limit=1", app.admin()).await;
    assert_eq!(ids(&first.body), [r.as_str()]);
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = app
        .get(&format!("/sagas?limit=1&cursor={cursor}"), app.admin())
        .await;
    assert_eq!(ids(&second.body), [w.as_str()]);
    assert!(second.body["next_cursor"].is_null());

    // Payments comes back: the waiting saga completes, and is found as such.
    app.start_workers(&[Role::Payments]);
    app.order_when(&waiting_order, |o| o["status"] == "confirmed")
        .await;
    assert_eq!(found(&app, "state=completed").await, [w.as_str()]);
    assert!(found(&app, "state=running").await.is_empty());
    assert!(found(&app, "stuck_for=0").await.is_empty());
}

#[tokio::test]
async fn only_the_admin_searches_sagas_and_bad_filters_are_refused() {
    let app = spawn_app_with_roles(&[], &[]).await;
    let (_, token) = app.create_customer(100).await;
    assert_eq!(
        app.get("/sagas", Some(&token)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/sagas", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    for query in [
        "state=stuck",
        "kind=refund",
        "order_id=42",
        "customer_id=nobody",
        "started_after=yesterday",
        "started_before=2026-13-01T00:00:00Z",
        "stuck_for=-1",
        "stuck_for=1e3",
        "stuck_for=99999999999",
        "limit=0",
        "cursor=%%%",
    ] {
        let reply = app.get(&format!("/sagas?{query}"), app.admin()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.body
        );
        assert_eq!(reply.body["code"], "validation_failed", "{query}");
    }
}
