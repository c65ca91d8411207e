//! The queue tables stay bounded: the inbox forgets ids after a day, and the log of an ended saga
//! goes once older than its retention, while a running saga keeps its whole log.

use orderly::roles::{Role, orchestrator::Orchestrator};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with_roles};

async fn count(app: &TestApp, sql: &str, saga: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(saga)
        .fetch_one(&app.stores.pg)
        .await
        .unwrap()
}

#[tokio::test]
async fn old_inbox_ids_and_the_old_log_of_ended_sagas_are_pruned() {
    // No payments role: a saga with stock waits at charge_payment, still running; one without
    // is rejected, ended.
    let roles = [
        Role::Relay,
        Role::Orchestrator,
        Role::Inventory,
        Role::History,
    ];
    let app = spawn_app_with_roles(&[("ORDERLY_SAGA_LOG_RETENTION_DAYS", "7")], &roles).await;
    let product = app.create_product(1_000, 10).await;
    let sold_out = app.create_product(1_000, 0).await;
    let (_, token) = app.create_customer(100_000).await;
    let ended = app
        .place_order(&token, "ended", &[(sold_out, 1)])
        .await
        .body;
    let ended_order = ended["id"].as_str().unwrap().to_owned();
    assert_eq!(app.settled_order(&ended_order).await["status"], "rejected");
    let ended_saga: Uuid = ended["saga"]["id"].as_str().unwrap().parse().unwrap();

    // Eight days pass for everything written so far.
    for sql in [
        "UPDATE saga_log SET at = at - interval '8 days'",
        "UPDATE inbox SET processed_at = processed_at - interval '8 days'",
    ] {
        sqlx::query(sql).execute(&app.stores.pg).await.unwrap();
    }
    let log = "SELECT count(*) FROM saga_log WHERE saga_id = $1";
    assert!(count(&app, log, ended_saga).await > 0);
    let inbox_before: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&app.stores.pg)
        .await
        .unwrap();
    assert!(inbox_before > 0);

    // A saga still running keeps its log, however old.
    let running = app
        .place_order(&token, "running", &[(product, 1)])
        .await
        .body;
    let running_saga: Uuid = running["saga"]["id"].as_str().unwrap().parse().unwrap();
    app.order_when(running["id"].as_str().unwrap(), |o| {
        o["saga"]["steps"][1]["status"] == "running"
    })
    .await;
    sqlx::query("UPDATE saga_log SET at = at - interval '8 days' WHERE saga_id = $1")
        .bind(running_saga)
        .execute(&app.stores.pg)
        .await
        .unwrap();

    Orchestrator::new(app.role_context()).prune().await;
    assert_eq!(
        count(&app, log, ended_saga).await,
        0,
        "the ended saga's old log"
    );
    assert!(
        count(&app, log, running_saga).await > 0,
        "the running saga's log"
    );
    let old_ids: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inbox WHERE processed_at < now() - interval '1 day'",
    )
    .fetch_one(&app.stores.pg)
    .await
    .unwrap();
    assert_eq!(old_ids, 0);
}
