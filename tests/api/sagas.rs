//! The orchestrator's step statements under races: a decision taken on a saga or an order that
//! another writer moved meanwhile writes nothing, and a message is claimed once.

use chrono::Utc;
use orderly::{
    domain::saga::{Policy, Reply, SagaEvent},
    messaging::envelope::{Body, Envelope},
    store::postgres::sagas::{self, Advance, Claimed},
};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with_roles};

const CONSUMER: &str = "orchestrator";

/// Claims `message` for the saga and writes what `StockReserved` decides, in one transaction;
/// `bump_order` runs between the read and the write, standing in for another writer.
async fn step(app: &TestApp, saga_id: Uuid, message: Uuid, bump_order: bool) -> Option<bool> {
    let mut tx = app.stores.pg.begin().await.unwrap();
    let Claimed {
        fresh,
        saga: row,
        order,
    } = sagas::claim_and_find(&mut tx, CONSUMER, Some(message), saga_id)
        .await
        .unwrap()
        .expect("the saga exists");
    if !fresh {
        return None;
    }
    if bump_order {
        sqlx::query("UPDATE orders SET version = version + 1 WHERE id = $1")
            .bind(order.id)
            .execute(&app.stores.pg)
            .await
            .unwrap();
    }
    let mut saga = row.saga.clone();
    let transition = saga.apply(
        SagaEvent::Reply(Reply::StockReserved),
        Utc::now(),
        &Policy::default(),
    );
    assert!(!transition.stale);
    let outgoing = [Envelope::new(saga_id, order.id, 1, Body::StockReserved)];
    let advanced = sagas::advance(
        &mut tx,
        &Advance {
            saga_id,
            saga: &saga,
            seen_version: row.version,
            event: "stock_reserved",
            message_id: Some(message),
            order_id: order.id,
            order_seen_version: order.version,
            change: transition.order,
            in_charge: saga_id,
            last_seq: order.last_seq,
            started: None,
            outgoing: &outgoing,
        },
    )
    .await
    .unwrap();
    if advanced {
        tx.commit().await.unwrap();
    }
    Some(advanced)
}

#[tokio::test]
async fn a_step_decided_on_a_moved_order_writes_nothing_and_a_message_is_claimed_once() {
    // No worker roles: the saga waits at its first step for the test to drive it.
    let app = spawn_app_with_roles(&[], &[]).await;
    let product = app.create_product(500, 5).await;
    let (_, token) = app.create_customer(5_000).await;
    let placed = app.place_order(&token, "k", &[(product, 1)]).await;
    assert_eq!(placed.status, 202, "{}", placed.body);
    let saga: Uuid = placed.body["saga"]["id"].as_str().unwrap().parse().unwrap();
    let message = Uuid::now_v7();

    // The order moved between the read and the write: the write reports it, and rolled back,
    // nothing of it stays (the out-of-band bump aside).
    let bumped = {
        let before = app.snapshot().await;
        assert_eq!(step(&app, saga, message, true).await, Some(false));
        let mut after = app.snapshot().await;
        after["postgres"]["orders"] = before["postgres"]["orders"].clone();
        assert_eq!(
            after, before,
            "a lost race leaves the saga, log, inbox and outbox alone"
        );
        after
    };

    // Decided again on what is there now, it goes through: saga, log, inbox and outbox move.
    assert_eq!(step(&app, saga, message, false).await, Some(true));
    let after = app.snapshot().await;
    for table in ["sagas", "saga_log", "inbox", "outbox", "orders"] {
        assert_ne!(
            after["postgres"][table], bumped["postgres"][table],
            "{table} was written"
        );
    }
    // The same message again is a duplicate and changes nothing.
    assert_eq!(step(&app, saga, message, false).await, None);
    assert_eq!(app.snapshot().await, after);
}
