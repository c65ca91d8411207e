use std::collections::HashSet;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_product_joins_postgres_redis_and_mongodb() {
    let app = spawn_app().await;
    let body = json!({
        "sku": "BAJU-HMIF", "name": "Baju HMIF", "price_minor": 135_000,
        "category": "Baju", "description": "Kaos eksklusif.", "initial_stock": 15
    });
    let created = app.post("/products", app.admin(), &body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(created.headers["location"], format!("/products/{id}"));
    assert_eq!(created.headers["etag"], "\"1\"");
    for (field, value) in [
        ("sku", json!("BAJU-HMIF")),
        ("name", json!("Baju HMIF")),
        ("price_minor", json!(135_000)),
        ("currency", json!("IDR")),
        ("category", json!("Baju")),
        ("description", json!("Kaos eksklusif.")),
        ("stock", json!(15)),
        ("rating", json!({"average": null, "count": 0})),
        ("version", json!(1)),
    ] {
        assert_eq!(created.body[field], value, "{field}");
    }

    let fetched = app.get(&format!("/products/{id}"), None).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["stock"], 15);
    assert_eq!(fetched.body["description"], "Kaos eksklusif.");
    assert_eq!(fetched.body["reviews"], json!([]));
    assert!(fetched.body["created_at"].as_str().unwrap().ends_with('Z'));

    // The stock really lives in Redis and the description in MongoDB.
    let product_id: Uuid = id.parse().unwrap();
    assert_eq!(
        app.stores.stock.available(&[product_id]).await.unwrap(),
        vec![15]
    );
    let descriptions = app.stores.docs.descriptions(&[product_id]).await.unwrap();
    assert_eq!(descriptions[&product_id], "Kaos eksklusif.");
}

#[tokio::test]
async fn a_duplicate_sku_is_a_conflict_and_writes_nothing() {
    let app = spawn_app().await;
    let body = json!({"sku": "DUP-1", "name": "A", "price_minor": 1, "category": "Baju"});
    assert_eq!(app.post("/products", app.admin(), &body).await.status, 201);
    let before = app.snapshot().await;
    let again = json!({"sku": "DUP-1", "name": "B", "price_minor": 2, "category": "New",
                       "description": "x", "initial_stock": 3});
    app.post("/products", app.admin(), &again)
        .await
        .assert_problem(409, "conflict");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn listing_pages_through_every_product_with_a_category_filter() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for n in 0..7 {
        let category = if n % 2 == 0 { "Baju" } else { "Elektronik" };
        let body = json!({"sku": format!("P-{n}"), "name": format!("P {n}"), "price_minor": 1000 + n,
                          "category": category, "description": format!("d{n}"), "initial_stock": n});
        let reply = app.post("/products", app.admin(), &body).await;
        created.push(reply.body["id"].as_str().unwrap().to_owned());
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/products?limit=3&cursor={c}"),
            None => "/products?limit=3".to_owned(),
        };
        let page = app.get(&path, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for item in page.body["items"].as_array().unwrap() {
            let n: i64 = item["sku"].as_str().unwrap()[2..].parse().unwrap();
            assert_eq!(item["stock"], n, "stock joined from Redis");
            assert_eq!(
                item["description"],
                format!("d{n}"),
                "description joined from MongoDB"
            );
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, created, "every product once, in creation order");

    let baju = app.get("/products?category=Baju&limit=200", None).await;
    let names: Vec<&str> = baju.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["category"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Baju"; 4]);
    assert_eq!(baju.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn patch_changes_fields_and_bumps_the_version() {
    let app = spawn_app().await;
    let id = app.create_product(100, 2).await;
    let path = format!("/products/{id}");

    app.patch(
        &path,
        "\"1\"",
        &json!({"name": "Kaos Baru", "price_minor": 120, "category": "Promo",
                                       "description": "Lebih adem."}),
    )
    .await;
    let after = app.get(&path, None).await;
    assert_eq!(after.body["name"], "Kaos Baru");
    assert_eq!(after.body["price_minor"], 120);
    assert_eq!(after.body["category"], "Promo");
    assert_eq!(after.body["description"], "Lebih adem.");
    assert_eq!(after.body["version"], 2);
    assert_eq!(after.headers["etag"], "\"2\"");
    assert_eq!(after.body["stock"], 2);

    let stale = app.patch(&path, "\"1\"", &json!({"name": "Lama"})).await;
    stale.assert_problem(412, "version_mismatch");
    assert_eq!(stale.body["current_version"], 2);

    let missing = app
        .raw(
            reqwest::Method::PATCH,
            &path,
            app.admin(),
            &[("content-type", "application/json")],
            Some(br#"{"name": "x"}"#.to_vec()),
        )
        .await;
    missing.assert_problem(428, "precondition_required");
    assert_eq!(app.get(&path, None).await.body["name"], "Kaos Baru");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_with_the_same_version_have_exactly_one_winner() {
    let app = spawn_app().await;
    let id = app.create_product(100, 0).await;
    let path = format!("/products/{id}");
    let replies = futures::future::join_all((0..12).map(|n| {
        let body = json!({"name": format!("writer {n}"), "description": format!("by writer {n}")});
        let path = path.clone();
        let app = &app;
        async move { app.patch(&path, "\"1\"", &body).await }
    }))
    .await;
    let winners: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(winners.len(), 1, "exactly one PATCH wins");
    for loser in replies.iter().filter(|r| r.status != 200) {
        loser.assert_problem(412, "version_mismatch");
        assert_eq!(loser.body["current_version"], 2);
    }
    // The winner's name and description are both what is stored: no mixed state.
    let stored = app.get(&path, None).await;
    let winner = winners[0].body["name"].as_str().unwrap();
    assert_eq!(stored.body["name"], winner);
    assert_eq!(stored.body["description"], format!("by {winner}"));
    assert_eq!(stored.body["version"], 2);
}

#[tokio::test]
async fn a_deleted_product_leaves_the_catalog_and_its_sku_is_free_again() {
    let app = spawn_app().await;
    let body = json!({"sku": "GONE", "name": "A", "price_minor": 1, "category": "Baju"});
    let id = app.post("/products", app.admin(), &body).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/products/{id}");

    let deleted = app
        .send(reqwest::Method::DELETE, &path, app.admin(), None)
        .await;
    assert_eq!(deleted.status, 204);
    app.get(&path, None).await.assert_problem(404, "not_found");
    app.send(reqwest::Method::DELETE, &path, app.admin(), None)
        .await
        .assert_problem(404, "not_found");
    app.patch(&path, "\"2\"", &json!({"name": "x"}))
        .await
        .assert_problem(404, "not_found");
    let list = app.get("/products", None).await;
    assert!(list.body["items"].as_array().unwrap().is_empty());

    // The row stays for the orders that reference it.
    let kept: bool =
        sqlx::query_scalar("SELECT deleted_at IS NOT NULL FROM products WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.stores.pg)
            .await
            .unwrap();
    assert!(kept);
    assert_eq!(app.post("/products", app.admin(), &body).await.status, 201);
}

#[tokio::test]
async fn a_large_page_joins_every_product_correctly() {
    let app = spawn_app().await;
    let mut ids = HashSet::new();
    for n in 0..60 {
        ids.insert(app.create_product(n, n % 7).await.to_string());
    }
    let page = app.get("/products?limit=200", None).await;
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 60);
    for item in items {
        assert!(ids.contains(item["id"].as_str().unwrap()));
        assert_eq!(item["stock"], item["price_minor"].as_i64().unwrap() % 7);
        assert_eq!(item["description"], "Bahan adem.");
    }
}

#[tokio::test]
async fn a_description_changed_by_another_process_is_served_at_its_new_version() {
    use orderly::{
        domain::version::Precondition,
        services::{
            catalog::{Catalog, ProductPatch},
            ratings::Ratings,
        },
    };

    let app = spawn_app().await;
    let id = app.create_product(100, 2).await;
    let path = format!("/products/{id}");
    // Read once through this app, so its memory holds the description at version 1.
    let before = app.get(&path, None).await;
    assert_eq!(before.body["version"], 1);
    let listed = app.get("/products", None).await;
    assert_eq!(
        listed.body["items"][0]["description"],
        before.body["description"]
    );

    // Another API process (its own catalog, its own memory) changes the text.
    let other = Catalog::new(
        app.stores.clone(),
        "IDR".into(),
        Ratings::new(app.stores.clone(), Default::default()),
    );
    let patch = ProductPatch {
        description: Some("Ditulis di proses lain.".into()),
        ..ProductPatch::default()
    };
    other
        .update(id, &Precondition::parse_if_match("\"1\"").unwrap(), patch)
        .await
        .unwrap();

    let after = app.get(&path, None).await;
    assert_eq!(after.body["version"], 2);
    assert_eq!(after.body["description"], "Ditulis di proses lain.");
    let listed = app.get("/products", None).await;
    assert_eq!(
        listed.body["items"][0]["description"],
        "Ditulis di proses lain."
    );
}
