use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn customers_review_and_the_rating_follows() {
    let app = spawn_app().await;
    let product = app.create_product(100, 1).await;
    let (alice, alice_token) = app.create_customer(0).await;
    let (_, bob_token) = app.create_customer(0).await;
    let path = format!("/products/{product}/reviews");

    let first = app
        .post(
            &path,
            Some(&alice_token),
            &json!({"rating": 5, "comment": "Keren banget!"}),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["customer_id"], alice.to_string());
    assert_eq!(first.body["product_id"], product.to_string());
    assert_eq!(first.body["verified_purchase"], false);
    let crlf = app
        .post(
            &path,
            Some(&bob_token),
            &json!({"rating": 4, "comment": "Bagus.\r\nPengiriman cepat."}),
        )
        .await;
    assert_eq!(
        crlf.status, 201,
        "a textarea's line breaks are fine: {}",
        crlf.body
    );

    let shown = app.get(&format!("/products/{product}"), None).await;
    assert_eq!(shown.body["rating"], json!({"average": 4.5, "count": 2}));
    let reviews = shown.body["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 2);
    assert_eq!(reviews[0]["rating"], 4, "newest first");
    assert_eq!(reviews[1]["comment"], "Keren banget!");

    let listed = app.get("/products", None).await;
    assert_eq!(listed.body["items"][0]["rating"]["count"], 2);
}

#[tokio::test]
async fn the_review_list_pages_newest_first() {
    let app = spawn_app().await;
    let product = app.create_product(100, 1).await;
    let (_, token) = app.create_customer(0).await;
    let path = format!("/products/{product}/reviews");
    for n in 1..=5 {
        let r = app
            .post(
                &path,
                Some(&token),
                &json!({"rating": n, "comment": format!("#{n}")}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let first = app.get(&format!("{path}?limit=2"), None).await;
    let comments = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["comment"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(comments(&first.body), ["#5", "#4"]);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = app
        .get(&format!("{path}?limit=2&cursor={cursor}"), None)
        .await;
    assert_eq!(comments(&second.body), ["#3", "#2"]);
    let cursor = second.body["next_cursor"].as_str().unwrap();
    let last = app
        .get(&format!("{path}?limit=2&cursor={cursor}"), None)
        .await;
    assert_eq!(comments(&last.body), ["#1"]);
    assert!(last.body["next_cursor"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rating_stays_exact_under_concurrent_reviews() {
    let app = spawn_app().await;
    let product = app.create_product(100, 1).await;
    let path = format!("/products/{product}/reviews");
    let mut tokens = Vec::new();
    for _ in 0..8 {
        tokens.push(app.create_customer(0).await.1);
    }
    let ratings: Vec<i64> = (0..40).map(|n| n % 5 + 1).collect();
    let replies = futures::future::join_all(ratings.iter().enumerate().map(|(n, &rating)| {
        let (app, path, token) = (&app, &path, &tokens[n % tokens.len()]);
        async move {
            app.post(path, Some(token), &json!({"rating": rating}))
                .await
        }
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == 201));
    let shown = app.get(&format!("/products/{product}"), None).await;
    let expected = ratings.iter().sum::<i64>() as f64 / ratings.len() as f64;
    assert_eq!(shown.body["rating"]["count"], 40);
    assert_eq!(
        shown.body["rating"]["average"].as_f64().unwrap(),
        (expected * 100.0).round() / 100.0
    );
}

#[tokio::test]
async fn reviews_of_missing_products_are_not_found() {
    let app = spawn_app().await;
    let (_, token) = app.create_customer(0).await;
    let path = format!("/products/{}/reviews", uuid::Uuid::now_v7());
    app.post(&path, Some(&token), &json!({"rating": 3}))
        .await
        .assert_problem(404, "not_found");
    app.get(&path, None).await.assert_problem(404, "not_found");
}

#[tokio::test]
async fn rating_totals_are_cached_never_regress_and_are_rebuilt_when_lost() {
    use orderly::domain::review::RatingTotals;

    let app = spawn_app().await;
    let product = app.create_product(100, 1).await;
    let path = format!("/products/{product}/reviews");
    for rating in [5, 3] {
        let (_, token) = app.create_customer(0).await;
        let r = app
            .post(&path, Some(&token), &json!({"rating": rating}))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let cached = |app: &crate::helpers::TestApp| {
        let ratings = app.stores.ratings.clone();
        async move { ratings.get(&[product]).await.unwrap()[0] }
    };
    assert_eq!(
        cached(&app).await,
        Some(RatingTotals { count: 2, sum: 8 }),
        "each review recomputes the totals into Redis"
    );

    // A writer that aggregated before the second review arrives late: it must not win.
    app.stores
        .ratings
        .put(product, RatingTotals { count: 1, sum: 5 })
        .await
        .unwrap();
    assert_eq!(cached(&app).await, Some(RatingTotals { count: 2, sum: 8 }));

    let key = app.stores.ratings.key(product);
    let mut redis = app.stores.stock.connection();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 60_000,
        "cached totals expire (ttl {ttl} ms)"
    );

    // Lost (expired, flushed): the next read aggregates MongoDB again and caches the result.
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let listed = app.get("/products", None).await;
    assert_eq!(
        listed.body["items"][0]["rating"],
        json!({"average": 4.0, "count": 2})
    );
    assert_eq!(cached(&app).await, Some(RatingTotals { count: 2, sum: 8 }));

    // A product nobody reviewed is cached too, as zero, so its pages skip MongoDB as well.
    let quiet = app.create_product(100, 1).await;
    let shown = app.get(&format!("/products/{quiet}"), None).await;
    assert_eq!(shown.body["rating"], json!({"average": null, "count": 0}));
    assert_eq!(
        app.stores.ratings.get(&[quiet]).await.unwrap()[0],
        Some(RatingTotals::default())
    );
}

/// The value of a counter in the app's metrics.
async fn counter(app: &crate::helpers::TestApp, name: &str) -> u64 {
    let metrics = app.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in the metrics"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn pages_that_miss_the_rating_cache_together_aggregate_once() {
    let app = spawn_app().await;
    for _ in 0..20 {
        app.create_product(100, 1).await;
    }
    // Cold: every product's totals gone, as after a restart of Redis or their expiry.
    let mut redis = app.stores.stock.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}rating:*", app.settings.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let before = counter(&app, "orderly_rating_aggregations_total").await;

    let pages =
        futures::future::join_all((0..16).map(|_| app.get("/products?limit=100", None))).await;
    for page in &pages {
        assert_eq!(page.status, 200);
        assert_eq!(page.body["items"].as_array().unwrap().len(), 20);
    }
    assert_eq!(
        counter(&app, "orderly_rating_aggregations_total").await - before,
        1,
        "the first page aggregated; the fifteen that missed with it read what it cached"
    );
}
