//! What the broker may do to us: a participant that never answers, messages delivered twice,
//! and a message nobody can process.

use std::time::Duration;

use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions},
};
use orderly::{
    domain::order::OrderLine,
    messaging::{
        self,
        envelope::{Envelope, InventoryCommand, PaymentCommand, SagaReply},
        publisher::{Outgoing, Publisher},
        topology::{Queue, Topology},
    },
    roles::Role,
};
use uuid::Uuid;

use crate::helpers::{POISON, TestApp, spawn_app, spawn_app_with_roles};

async fn publisher(app: &TestApp) -> (lapin::Connection, Publisher) {
    let connection = messaging::connect(&app.settings.amqp_url, "test")
        .await
        .unwrap();
    let publisher = Publisher::open(&connection, Topology::new(&app.settings.amqp_prefix))
        .await
        .unwrap();
    (connection, publisher)
}

#[tokio::test]
async fn a_step_nobody_answers_is_retried_then_timed_out_and_compensated() {
    let overrides = [
        ("ORDERLY_STEP_TIMEOUT_MS", "300"),
        ("ORDERLY_STEP_MAX_ATTEMPTS", "2"),
        ("ORDERLY_SWEEP_INTERVAL_MS", "100"),
    ];
    // Payments is down: charge_payment is never answered.
    let roles = [
        Role::Relay,
        Role::Orchestrator,
        Role::Inventory,
        Role::History,
    ];
    let mut app = spawn_app_with_roles(&overrides, &roles).await;
    let product = app.create_product(500, 3).await;
    let (customer, token) = app.create_customer(10_000).await;
    let placed = app.place_order(&token, "slow", &[(product, 1)]).await;
    let order = placed.body["id"].as_str().unwrap().to_owned();

    let compensating = app
        .order_when(&order, |o| o["saga"]["state"] == "compensating")
        .await;
    let charge = &compensating["saga"]["steps"][1];
    assert_eq!(charge["name"], "charge_payment");
    assert_eq!(charge["attempts"], 2, "{compensating}");
    assert_eq!(charge["status"], "compensating");
    let metrics = app.metrics().await;
    assert!(metrics.contains("orderly_saga_step_retries_total{step=\"charge_payment\"}"));
    // The compensating saga is in flight; the payments step holds it there.
    assert!(
        metrics.contains(r#"orderly_sagas_in_flight{kind="checkout",state="compensating"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"orderly_sagas_in_flight{kind="checkout",state="running"} 0"#),
        "{metrics}"
    );

    // Payments comes back: the charges and the refund meet; whatever their order, no money moves.
    app.start_workers(&[Role::Payments]);
    let done = app.order_when(&order, |o| o["status"] != "pending").await;
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["reason"], "timed_out");
    assert_eq!(app.balance(customer).await, 10_000);
    assert_eq!(app.available(product).await, 3);
    assert_eq!(app.held(product).await, 0);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"orderly_sagas_in_flight{kind="checkout",state="compensating"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn commands_delivered_again_change_nothing() {
    let app = spawn_app().await;
    let product = app.create_product(700, 5).await;
    let (customer, token) = app.create_customer(10_000).await;
    let placed = app.place_order(&token, "once", &[(product, 2)]).await;
    let order: Uuid = placed.body["id"].as_str().unwrap().parse().unwrap();
    let done = app.settled_order(&order.to_string()).await;
    assert_eq!(done["status"], "confirmed");
    let saga: Uuid = done["saga"]["id"].as_str().unwrap().parse().unwrap();

    // A retried attempt of each step (new message ids), and one of them twice (same id).
    let consumed_before = consumed(&app).await;
    let (connection, publisher) = publisher(&app).await;
    let charge = Envelope::new(
        saga,
        order,
        2,
        PaymentCommand::ChargePayment {
            customer_id: customer,
            amount_minor: 1_400,
        },
    );
    let reserve = Envelope::new(
        saga,
        order,
        2,
        InventoryCommand::ReserveStock {
            items: vec![OrderLine {
                product_id: product,
                quantity: 2,
            }],
        },
    );
    publisher
        .publish_all(&[charge.outbound(), charge.outbound(), reserve.outbound()].map(Outgoing::new))
        .await
        .unwrap();
    let _ = connection.close(200, "done").await;

    let log_entries = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM saga_log WHERE saga_id = $1")
            .bind(saga)
            .fetch_one(&app.stores.pg)
            .await
            .unwrap()
    };
    let before = log_entries().await;
    // Every copy was taken and answered: payments took both charges, inventory the reserve,
    // and the orchestrator the two replies they sent. Only then can "nothing changed" mean
    // that the copies changed nothing.
    let mut consumed_now = consumed_before.clone();
    for _ in 0..100 {
        consumed_now = consumed(&app).await;
        if consumed_now["payments"] >= consumed_before["payments"] + 2
            && consumed_now["inventory"] > consumed_before["inventory"]
            && consumed_now["orchestrator"] >= consumed_before["orchestrator"] + 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        [
            consumed_now["payments"] - consumed_before["payments"],
            consumed_now["inventory"] - consumed_before["inventory"],
            consumed_now["orchestrator"] - consumed_before["orchestrator"],
        ],
        [2, 1, 2],
        "the copies were consumed"
    );
    assert_eq!(app.balance(customer).await, 10_000 - 1_400, "charged once");
    assert_eq!(app.available(product).await, 3, "reserved once");
    assert_eq!(app.held(product).await, 2);
    let order_now = app.get(&format!("/orders/{order}"), app.admin()).await;
    assert_eq!(order_now.body["status"], "confirmed");
    assert_eq!(
        order_now.body["version"], done["version"],
        "the order did not move"
    );
    // The replies carried the first replies' ids, so the orchestrator's inbox dropped them.
    assert_eq!(log_entries().await, before);
}

/// Messages each of the app's queues has consumed so far, from its metrics.
async fn consumed(app: &TestApp) -> std::collections::HashMap<String, u64> {
    let text = app.metrics().await;
    ["payments", "inventory", "orchestrator"]
        .into_iter()
        .map(|queue| {
            let series = format!("orderly_messages_consumed_total{{queue=\"{queue}\"}} ");
            let n = text
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .map_or(0, |n| n.trim().parse().unwrap());
            (queue.to_owned(), n)
        })
        .collect()
}

/// The first message in `queue`'s dead-letter queue, waiting up to five seconds for one.
async fn dead_letter(
    channel: &lapin::Channel,
    topology: &Topology,
    queue: Queue,
) -> lapin::message::BasicGetMessage {
    for _ in 0..50 {
        if let Some(dead) = channel
            .basic_get(
                &topology.dead_letter_queue(queue),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "nothing reached the dead-letter queue of {}",
        queue.as_str()
    );
}

/// The payments queue's poison message (`POISON`) reached its dead-letter queue, unchanged,
/// with its reason.
async fn assert_poison_dead_lettered(channel: &lapin::Channel, topology: &Topology) {
    let dead = dead_letter(channel, topology, Queue::Payments).await;
    let headers = dead.delivery.properties.headers().clone().unwrap();
    let Some(lapin::types::AMQPValue::LongString(reason)) = headers.inner().get("x-orderly-reason")
    else {
        panic!("no reason header: {headers:?}");
    };
    let reason = String::from_utf8_lossy(reason.as_bytes());
    assert!(reason.starts_with("malformed message"), "{reason}");
    assert_eq!(dead.delivery.data, POISON.as_bytes());
}

#[tokio::test]
async fn an_outbox_row_the_relay_cannot_decode_moves_on_and_holds_nothing_back() {
    let app = spawn_app().await;
    let (connection, channel, topology) = app.broker().await;
    // Ahead of every message the order below writes, as a row from another version would be.
    sqlx::query(
        "INSERT INTO outbox (message_id, exchange, routing_key, body) \
         VALUES ($1, 'commands', 'payments.charge_payment', $2::jsonb)",
    )
    .bind(Uuid::now_v7())
    .bind(POISON)
    .execute(&app.stores.pg)
    .await
    .unwrap();

    let product = app.create_product(500, 3).await;
    let (_, token) = app.create_customer(10_000).await;
    let placed = app.place_order(&token, "behind", &[(product, 1)]).await;
    let order = placed.body["id"].as_str().unwrap();
    assert_eq!(app.settled_order(order).await["status"], "confirmed");

    assert_poison_dead_lettered(&channel, &topology).await;
    let _ = connection.close(200, "done").await;
}

#[tokio::test]
async fn a_message_nobody_can_process_is_dead_lettered_with_its_reason() {
    let app = spawn_app().await;
    let (connection, channel, topology) = app.broker().await;
    channel
        .basic_publish(
            "",
            &topology.queue(Queue::Payments),
            BasicPublishOptions::default(),
            POISON.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // The gauge counts what waits in the dead-letter queue, read from RabbitMQ when scraped.
    let waiting = r#"orderly_dead_letters{queue="payments"} 1"#;
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = app.metrics().await;
        if metrics.contains(waiting) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(waiting), "{metrics}");
    assert_poison_dead_lettered(&channel, &topology).await;
    let _ = connection.close(200, "done").await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"orderly_dead_letters{queue="payments"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("orderly_messages_dead_lettered_total{queue=\"payments\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn saga_metrics_count_starts_outcomes_and_durations() {
    let app = spawn_app().await;
    let product = app.create_product(100, 1).await;
    let (_, token) = app.create_customer(1_000).await;
    for key in ["a", "b"] {
        let placed = app.place_order(&token, key, &[(product, 1)]).await;
        app.settled_order(placed.body["id"].as_str().unwrap()).await;
    }
    let metrics = app.metrics().await;
    for line in [
        "orderly_sagas_started_total{kind=\"checkout\"} 2",
        "orderly_sagas_finished_total{kind=\"checkout\",outcome=\"confirmed\",reason=\"\"} 1",
        "orderly_sagas_finished_total{kind=\"checkout\",outcome=\"rejected\",reason=\"insufficient_stock\"} 1",
        "orderly_saga_duration_seconds_count{kind=\"checkout\",outcome=\"confirmed\",reason=\"\"} 1",
        "orderly_outbox_backlog ",
        "orderly_messages_consumed_total{queue=\"orchestrator\"}",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_retried_message_returns_to_its_queue_when_its_delay_runs_out() {
    // No payments consumer, so the message stays where the delay queue puts it back.
    let roles: Vec<Role> = Role::ALL
        .into_iter()
        .filter(|r| *r != Role::Payments)
        .collect();
    let app = spawn_app_with_roles(&[], &roles).await;
    let (connection, channel, topology) = app.broker().await;
    channel
        .basic_publish(
            "",
            &topology.retry_queue(Queue::Payments, 1),
            BasicPublishOptions::default(),
            b"later",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let mut back = None;
    for _ in 0..50 {
        back = channel
            .basic_get(
                &topology.queue(Queue::Payments),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        if back.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back.expect("back in its queue").delivery.data, b"later");
    let _ = connection.close(200, "done").await;
}

#[tokio::test]
async fn a_poison_message_inside_a_batch_is_dead_lettered_alone() {
    // Long enough a linger that the four messages below are one batch.
    let app = spawn_app_with_roles(&[("ORDERLY_BATCH_LINGER_MS", "500")], &[Role::Payments]).await;
    let (first, _) = app.create_customer(10_000).await;
    let (second, _) = app.create_customer(10_000).await;
    let (connection, channel, topology) = app.broker().await;
    let charge = |customer, amount| {
        Envelope::new(
            Uuid::now_v7(),
            Uuid::now_v7(),
            1,
            PaymentCommand::ChargePayment {
                customer_id: customer,
                amount_minor: amount,
            },
        )
    };
    let (a, b) = (charge(first, 1_000), charge(second, 2_000));
    // A reply sent to payments by mistake: well-formed, but not a payments message.
    let stray = Envelope::new(Uuid::now_v7(), Uuid::now_v7(), 1, SagaReply::StockReserved);
    let queue = topology.queue(Queue::Payments);
    for payload in [
        serde_json::to_vec(&a).unwrap(),
        POISON.as_bytes().to_vec(),
        serde_json::to_vec(&stray).unwrap(),
        serde_json::to_vec(&b).unwrap(),
    ] {
        channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // The two charges went through, each once...
    for _ in 0..100 {
        if app.balance(first).await == 9_000 && app.balance(second).await == 8_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (app.balance(first).await, app.balance(second).await),
        (9_000, 8_000)
    );
    // ...and the two messages nobody could process went to the dead letters, each with its own
    // reason, while the batch was acked whole.
    let mut reasons = Vec::new();
    for _ in 0..2 {
        let dead = dead_letter(&channel, &topology, Queue::Payments).await;
        let headers = dead.delivery.properties.headers().clone().unwrap();
        if let Some(lapin::types::AMQPValue::LongString(reason)) =
            headers.inner().get("x-orderly-reason")
        {
            reasons.push(String::from_utf8_lossy(reason.as_bytes()).into_owned());
        }
    }
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.starts_with("malformed message: ")),
        "{reasons:?}"
    );
    // The misrouted one fails to decode as a payments message, and says why.
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unknown variant `stock_reserved`")),
        "{reasons:?}"
    );
    let waiting = channel
        .queue_declare(
            &queue,
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    assert_eq!(waiting, 0, "nothing left in the queue");
    // The refused message's inbox claim was taken back: a later copy is not taken for done.
    let claimed: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1")
        .bind(stray.message_id)
        .fetch_one(&app.stores.pg)
        .await
        .unwrap();
    assert_eq!(claimed, 0);
    let _ = connection.close(200, "done").await;
}
