use orderly::seed;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_demo_seed_is_idempotent() {
    let app = spawn_app().await;
    let policy = app.role_context().policy();
    let first = seed::run(&app.stores, "IDR", policy).await.unwrap();
    let second = seed::run(&app.stores, "IDR", policy).await.unwrap();
    assert_eq!(first.customer_id, second.customer_id);
    // One demo order, however often the seed runs; its saga runs like any other.
    assert_eq!(first.order_id, second.order_id);
    let order = app.settled_order(&first.order_id.to_string()).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(order["customer_id"], first.customer_id.to_string());
    let orders = app.get("/orders", app.admin()).await;
    assert_eq!(orders.body["items"].as_array().unwrap().len(), 1);
    // Each run issues a fresh demo token; only the newest works.
    app.get(
        &format!("/customers/{}", first.customer_id),
        Some(&first.customer_token),
    )
    .await
    .assert_problem(401, "unauthorized");
    let me = app
        .get(
            &format!("/customers/{}", second.customer_id),
            Some(&second.customer_token),
        )
        .await;
    assert_eq!(me.body["balance_minor"], seed::DEMO_BALANCE_MINOR - 135_000);

    let page = app.get("/products", None).await;
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "no duplicates after two runs");
    let by_name = |name: &str| items.iter().find(|p| p["name"] == name).unwrap().clone();

    let baju = by_name("Baju HMIF");
    assert_eq!(baju["price_minor"], 135_000);
    assert_eq!(baju["stock"], 14, "the demo order holds one");
    assert_eq!(baju["category"], "Baju");
    assert_eq!(
        baju["description"],
        "Kaos eksklusif acara HMIF. Bahan adem dan premium."
    );
    assert_eq!(
        baju["rating"],
        serde_json::json!({"average": 5.0, "count": 1})
    );

    let earphone = by_name("Earphone Wireless");
    assert_eq!(
        (earphone["price_minor"].as_i64(), earphone["stock"].as_i64()),
        (Some(150_000), Some(40))
    );
    assert_eq!(earphone["category"], "Elektronik");
    assert_eq!(earphone["rating"]["average"], 4.0);

    let helm = by_name("Helm NJS");
    assert_eq!(
        (helm["price_minor"].as_i64(), helm["stock"].as_i64()),
        (Some(500_000), Some(20))
    );
    assert_eq!(helm["category"], "Otomotif");
    assert_eq!(
        helm["rating"],
        serde_json::json!({"average": null, "count": 0})
    );

    let detail = app
        .get(&format!("/products/{}", baju["id"].as_str().unwrap()), None)
        .await;
    assert_eq!(detail.body["reviews"][0]["comment"], "Keren banget!");
}
