//! The dead letters as an operator meets them: listed with their reasons, replayed onto their
//! queue (once in effect, however often), purged; over HTTP and with `orderly dlq`.

use std::time::Duration;

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable},
};
use orderly::messaging::{
    envelope::{Envelope, PaymentCommand},
    topology::{Queue, Topology},
};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{POISON, spawn_app};

/// A charge given up on after its failures, as the payments consumer leaves it: in the
/// dead-letter queue with its reason, failure count and times.
fn given_up_charge(
    customer_id: Uuid,
    amount_minor: i64,
) -> (Envelope<PaymentCommand>, BasicProperties) {
    let charge = Envelope::new(
        Uuid::now_v7(),
        Uuid::now_v7(),
        1,
        PaymentCommand::ChargePayment {
            customer_id,
            amount_minor,
        },
    );
    let mut headers = FieldTable::default();
    for (name, value) in [
        (
            "x-orderly-reason",
            "failed 10 times: postgres is unavailable",
        ),
        ("x-orderly-first-failure", "2026-12-05T10:00:00.000Z"),
        ("x-orderly-last-failure", "2026-12-05T10:04:10.000Z"),
    ] {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    headers.insert("x-orderly-failures".into(), AMQPValue::LongLongInt(10));
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(charge.message_id.to_string().into())
        .with_type("charge_payment".into())
        .with_headers(headers);
    (charge, properties)
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_once_in_effect_and_purged_over_http() {
    let app = spawn_app().await;
    let topology = Topology::new(&app.settings.amqp_prefix);
    let (customer, token) = app.create_customer(10_000).await;

    // A message nobody can read, dead-lettered by the payments consumer itself.
    app.publish(
        &topology.queue(Queue::Payments),
        POISON.as_bytes(),
        BasicProperties::default().with_delivery_mode(2),
    )
    .await;
    let poison = app.dead_letters_when("payments", 1).await.remove(0);
    let poison_id = poison["id"].as_str().unwrap().to_owned();
    assert!(poison_id.starts_with("sha256-"), "{poison}");
    assert_eq!(poison["queue"], "payments");
    assert_eq!(poison["failures"], 0);
    assert!(
        poison["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed message")
    );
    assert!(poison["last_failed_at"].is_string(), "{poison}");
    assert_eq!(poison["message"], serde_json::json!({"not": "an envelope"}));

    // A charge given up on while Postgres was down.
    let (charge, properties) = given_up_charge(customer, 1_000);
    let body = serde_json::to_vec(&charge).unwrap();
    app.publish(
        &topology.dead_letter_queue(Queue::Payments),
        &body,
        properties.clone(),
    )
    .await;
    let id = charge.message_id.to_string();
    let shown = app.get(&format!("/dead-letters/{id}"), app.admin()).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert_eq!(shown.body["type"], "charge_payment");
    assert_eq!(shown.body["failures"], 10);
    assert_eq!(shown.body["first_failed_at"], "2026-12-05T10:00:00.000Z");
    assert_eq!(shown.body["message"]["amount_minor"], 1_000);
    assert_eq!(app.dead_letters_when("payments", 2).await.len(), 2);

    // Replayed: back on its queue, the wallet is charged; the dead letter is gone.
    let replayed = app
        .post(
            &format!("/dead-letters/{id}/replay"),
            app.admin(),
            &Value::Null,
        )
        .await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.body);
    for _ in 0..100 {
        if app.balance(customer).await == 9_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.balance(customer).await, 9_000);
    assert_eq!(
        app.get(&format!("/dead-letters/{id}"), app.admin())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // The same message dead-lettered and replayed again changes nothing again.
    app.publish(
        &topology.dead_letter_queue(Queue::Payments),
        &body,
        properties,
    )
    .await;
    let again = app
        .post(
            &format!("/dead-letters/{id}/replay"),
            app.admin(),
            &Value::Null,
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.balance(customer).await, 9_000);

    // The poison, replayed, fails again and comes back with its reason.
    let replayed = app
        .post(
            &format!("/dead-letters/{poison_id}/replay"),
            app.admin(),
            &Value::Null,
        )
        .await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.body);
    let back = app.dead_letters_when("payments", 1).await.remove(0);
    assert_eq!(back["id"], poison_id.as_str());
    // A replay starts over: what failing added to the message went with its dead letter.
    assert_eq!(back["failures"], 0, "{back}");
    assert_ne!(back["first_failed_at"], poison["first_failed_at"], "{back}");
    assert!(
        back["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed message")
    );

    // Purged: gone for good.
    let purged = app
        .delete(&format!("/dead-letters/{poison_id}"), app.admin())
        .await;
    assert_eq!(purged.status, StatusCode::NO_CONTENT);
    assert!(app.dead_letters_when("payments", 0).await.is_empty());
    assert_eq!(
        app.delete(&format!("/dead-letters/{poison_id}"), app.admin())
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // For the admin only; queues by name.
    assert_eq!(
        app.get("/dead-letters", Some(&token)).await.status,
        StatusCode::FORBIDDEN
    );
    let bad = app.get("/dead-letters?queue=nowhere", app.admin()).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["code"], "validation_failed");
}

#[tokio::test]
async fn orderly_dlq_lists_replays_and_purges_from_the_command_line() {
    let app = spawn_app().await;
    let topology = Topology::new(&app.settings.amqp_prefix);
    let (customer, _) = app.create_customer(10_000).await;
    let (charge, properties) = given_up_charge(customer, 2_500);
    app.publish(
        &topology.dead_letter_queue(Queue::Payments),
        &serde_json::to_vec(&charge).unwrap(),
        properties,
    )
    .await;
    app.publish(
        &topology.queue(Queue::Payments),
        POISON.as_bytes(),
        BasicProperties::default().with_delivery_mode(2),
    )
    .await;
    app.dead_letters_when("payments", 2).await;
    let id = charge.message_id.to_string();

    let dlq = async |args: &[&str]| app.orderly(&[&["dlq"], args].concat()).await;
    let listed = dlq(&["list", "--queue", "payments"]).await;
    assert!(listed.status.success(), "{listed:?}");
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(
        out.contains(&id) && out.contains("failed 10 times"),
        "{out}"
    );
    assert!(out.contains("2 dead letter(s)"), "{out}");

    let shown = dlq(&["show", &id]).await;
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["failures"], 10);
    assert!(!dlq(&["show", "no-such-id"]).await.status.success());

    let replayed = dlq(&["replay", &id]).await;
    assert!(replayed.status.success(), "{replayed:?}");
    for _ in 0..100 {
        if app.balance(customer).await == 7_500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.balance(customer).await, 7_500);

    // The poisoned message, replayed, fails again and comes back.
    let poison = app.dead_letters_when("payments", 1).await.remove(0);
    let poison_id = poison["id"].as_str().unwrap().to_owned();
    let replayed = dlq(&["replay", &poison_id]).await;
    assert!(replayed.status.success(), "{replayed:?}");
    let mut back = Vec::new();
    for _ in 0..100 {
        back = app.dead_letters_when("payments", 1).await;
        if back[0]["last_failed_at"] != poison["last_failed_at"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back[0]["id"], poison_id.as_str());
    assert_ne!(
        back[0]["last_failed_at"], poison["last_failed_at"],
        "{back:?}"
    );

    // Purging asks for --yes, and without it drops nothing.
    let refused = dlq(&["purge", "--all", "--queue", "payments"]).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert_eq!(app.dead_letters_when("payments", 1).await.len(), 1);
    let purged = dlq(&["purge", "--all", "--queue", "payments", "--yes"]).await;
    assert!(purged.status.success(), "{purged:?}");
    assert!(
        String::from_utf8_lossy(&purged.stdout).contains("purged 1 dead letter(s)"),
        "{purged:?}"
    );
    assert!(app.dead_letters_when("payments", 0).await.is_empty());
}
