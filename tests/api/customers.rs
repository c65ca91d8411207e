use orderly::store::postgres::customers;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_customer_is_created_with_a_token_shown_once_and_can_read_itself() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/customers",
            app.admin(),
            &json!({"name": " Siti ", "email": "Siti@Example.com", "balance_minor": 50_000}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap();
    let token = created.body["token"].as_str().unwrap();
    assert_eq!(created.body["name"], "Siti");
    assert_eq!(created.body["email"], "siti@example.com");
    assert_eq!(created.body["balance_minor"], 50_000);
    assert_eq!(created.body["currency"], "IDR");
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.headers["location"], format!("/customers/{id}"));

    let own = app.get(&format!("/customers/{id}"), Some(token)).await;
    assert_eq!(own.status, 200);
    assert_eq!(own.body["balance_minor"], 50_000);
    assert!(
        own.body.get("token").is_none(),
        "the token is shown only once"
    );
    assert_eq!(own.headers["etag"], "\"1\"");

    let by_admin = app.get(&format!("/customers/{id}"), app.admin()).await;
    assert_eq!(by_admin.status, 200);

    // Only the hash is stored: the token text appears nowhere in the row.
    let row: (Vec<u8>,) = sqlx::query_as("SELECT token_hash FROM customers WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.stores.pg)
        .await
        .unwrap();
    assert_eq!(row.0.len(), 32);
    assert!(!String::from_utf8_lossy(&row.0).contains(token));
}

#[tokio::test]
async fn deposits_raise_the_balance_and_are_recorded() {
    let app = spawn_app().await;
    let (id, _) = app.create_customer(1_000).await;
    let reply = app
        .post(
            &format!("/customers/{id}/deposits"),
            app.admin(),
            &json!({"amount_minor": 2_500}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["balance_minor"], 3_500);
    assert_eq!(reply.body["version"], 2);
    assert_eq!(
        customers::deposited(&app.stores.pg, id).await.unwrap(),
        3_500
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deposits_are_never_lost() {
    let app = spawn_app().await;
    let (id, _) = app.create_customer(0).await;
    let path = format!("/customers/{id}/deposits");
    let replies = futures::future::join_all((1..=20).map(|n| {
        let (app, path) = (&app, &path);
        async move {
            app.post(path, app.admin(), &json!({"amount_minor": n}))
                .await
        }
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == 200));
    let customer = app.get(&format!("/customers/{id}"), app.admin()).await;
    assert_eq!(customer.body["balance_minor"], (1..=20).sum::<i64>());
    assert_eq!(customer.body["version"], 21);
    assert_eq!(customers::deposited(&app.stores.pg, id).await.unwrap(), 210);
}

#[tokio::test]
async fn an_absent_or_null_opening_balance_is_zero() {
    let app = spawn_app().await;
    for body in [
        json!({"name": "A", "email": "a@example.com"}),
        json!({"name": "B", "email": "b@example.com", "balance_minor": null}),
    ] {
        let reply = app.post("/customers", app.admin(), &body).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        assert_eq!(reply.body["balance_minor"], 0);
    }
}

#[tokio::test]
async fn a_duplicate_email_is_a_conflict() {
    let app = spawn_app().await;
    let body = json!({"name": "Budi", "email": "budi@example.com"});
    assert_eq!(app.post("/customers", app.admin(), &body).await.status, 201);
    let again = json!({"name": "Budi 2", "email": "BUDI@example.com"});
    app.post("/customers", app.admin(), &again)
        .await
        .assert_problem(409, "conflict");
}

#[tokio::test]
async fn deposits_to_unknown_customers_and_past_the_cap_are_refused() {
    let app = spawn_app().await;
    let unknown = format!("/customers/{}/deposits", uuid::Uuid::now_v7());
    app.post(&unknown, app.admin(), &json!({"amount_minor": 1}))
        .await
        .assert_problem(404, "not_found");

    let (id, _) = app.create_customer(0).await;
    // Put the wallet just under the cap directly; a thousand maximal deposits would take long.
    sqlx::query("UPDATE customers SET balance_minor = $2 WHERE id = $1")
        .bind(id)
        .bind(orderly::domain::money::MAX_BALANCE_MINOR - 5)
        .execute(&app.stores.pg)
        .await
        .unwrap();
    let path = format!("/customers/{id}/deposits");
    assert_eq!(
        app.post(&path, app.admin(), &json!({"amount_minor": 5}))
            .await
            .status,
        200
    );
    let over = app
        .post(&path, app.admin(), &json!({"amount_minor": 1}))
        .await;
    over.assert_problem(422, "validation_failed");
    assert_eq!(over.body["errors"][0]["field"], "amount_minor");
    let customer = app.get(&format!("/customers/{id}"), app.admin()).await;
    assert_eq!(
        customer.body["balance_minor"],
        orderly::domain::money::MAX_BALANCE_MINOR
    );
}
