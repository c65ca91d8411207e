//! The bad-input battery: every write endpoint, fed every kind of bad body, answers a 4xx
//! problem with the right code — and no store changes.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

struct Endpoint {
    method: Method,
    path: String,
    /// The same path with a malformed id, when it has one.
    bad_id_path: Option<String>,
    token: String,
    valid: Value,
    /// Fields that may not be left out.
    required: Vec<&'static str>,
    /// (field, a value of the wrong JSON type)
    wrong_types: Vec<(&'static str, Value)>,
    /// (field, a value of the right type that breaks a rule)
    bad_values: Vec<(&'static str, Value)>,
}

async fn endpoints(app: &TestApp) -> Vec<Endpoint> {
    let product = app.create_product(100, 5).await;
    let (customer, customer_token) = app.create_customer(100).await;
    let admin = app.admin_token.clone();
    let long = |n: usize| Value::String("x".repeat(n));
    vec![
        Endpoint {
            method: Method::POST,
            path: "/customers".into(),
            bad_id_path: None,
            token: admin.clone(),
            required: vec!["name", "email"],
            valid: json!({"name": "Budi", "email": "budi@example.com", "balance_minor": 10}),
            wrong_types: vec![
                ("name", json!(5)),
                ("email", json!(["a"])),
                ("balance_minor", json!("10")),
            ],
            bad_values: vec![
                ("name", long(201)),
                ("name", json!("   ")),
                ("email", json!("not-an-email")),
                (
                    "email",
                    Value::String(format!("{}@example.com", "a".repeat(300))),
                ),
                ("balance_minor", json!(-1)),
            ],
        },
        Endpoint {
            method: Method::POST,
            path: format!("/customers/{customer}/deposits"),
            bad_id_path: Some("/customers/not-a-uuid/deposits".into()),
            token: admin.clone(),
            required: vec!["amount_minor"],
            valid: json!({"amount_minor": 10}),
            wrong_types: vec![("amount_minor", json!(1.5)), ("amount_minor", json!(null))],
            bad_values: vec![
                ("amount_minor", json!(0)),
                ("amount_minor", json!(-5)),
                ("amount_minor", json!(i64::MAX)),
            ],
        },
        Endpoint {
            method: Method::POST,
            path: "/products".into(),
            bad_id_path: None,
            token: admin.clone(),
            required: vec!["sku", "name", "price_minor", "category"],
            valid: json!({"sku": "NEW-1", "name": "Baru", "price_minor": 5, "category": "Baju",
                          "description": "d", "initial_stock": 2}),
            wrong_types: vec![
                ("sku", json!(1)),
                ("price_minor", json!("5")),
                ("price_minor", json!(1e300)),
                ("initial_stock", json!(true)),
                ("description", json!({"a": 1})),
            ],
            bad_values: vec![
                ("sku", json!("has spaces")),
                ("name", long(201)),
                ("category", long(65)),
                ("description", long(5001)),
                ("price_minor", json!(-1)),
                ("initial_stock", json!(-3)),
                ("initial_stock", json!(1_000_001)),
            ],
        },
        Endpoint {
            method: Method::PATCH,
            path: format!("/products/{product}"),
            bad_id_path: Some("/products/12345".into()),
            token: admin.clone(),
            required: vec![],
            valid: json!({"name": "Nama Baru"}),
            wrong_types: vec![("name", json!(false)), ("price_minor", json!([1]))],
            bad_values: vec![
                ("name", long(201)),
                ("price_minor", json!(-10)),
                ("description", long(5001)),
            ],
        },
        Endpoint {
            method: Method::POST,
            path: format!("/products/{product}/stock-adjustments"),
            bad_id_path: Some("/products/zzz/stock-adjustments".into()),
            token: admin.clone(),
            required: vec!["delta", "reason"],
            valid: json!({"delta": 3, "reason": "restock"}),
            wrong_types: vec![("delta", json!("3")), ("reason", json!(1))],
            bad_values: vec![
                ("delta", json!(0)),
                ("delta", json!(5_000_000)),
                ("reason", json!("theft")),
                ("reason", json!("initial")),
            ],
        },
        Endpoint {
            method: Method::POST,
            path: "/orders".into(),
            bad_id_path: None,
            token: customer_token.clone(),
            required: vec!["items"],
            valid: json!({"items": [{"product_id": product, "quantity": 1}]}),
            wrong_types: vec![("items", json!("all of them")), ("items", json!({"a": 1}))],
            bad_values: vec![
                ("items", json!([])),
                (
                    "items",
                    Value::Array(
                        (0..51)
                            .map(|_| json!({"product_id": uuid::Uuid::new_v4(), "quantity": 1}))
                            .collect(),
                    ),
                ),
            ],
        },
        Endpoint {
            method: Method::POST,
            path: format!("/products/{product}/reviews"),
            bad_id_path: Some(format!("/products/{}x/reviews", &product.to_string()[..8])),
            token: customer_token,
            required: vec!["rating"],
            valid: json!({"rating": 4, "comment": "ok"}),
            wrong_types: vec![("rating", json!("4")), ("comment", json!(4))],
            bad_values: vec![
                ("rating", json!(0)),
                ("rating", json!(6)),
                ("comment", long(2001)),
            ],
        },
    ]
}

async fn send(
    app: &TestApp,
    e: &Endpoint,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> crate::helpers::Reply {
    app.write(
        e.method.clone(),
        path,
        Some(&e.token),
        content_type,
        Some(body),
    )
    .await
}

fn with(valid: &Value, field: &str, value: Value) -> Vec<u8> {
    let mut body = valid.clone();
    body[field] = value;
    body.to_string().into_bytes()
}

#[tokio::test]
async fn every_write_endpoint_refuses_bad_input_and_changes_nothing() {
    let app = spawn_app().await;
    let endpoints = endpoints(&app).await;
    let before = app.snapshot().await;
    let json_ct = Some("application/json");
    for e in &endpoints {
        let label = format!("{} {}", e.method, e.path);
        let check = |reply: crate::helpers::Reply, status: u16, code: &str, case: &str| {
            assert_eq!(
                reply.status.as_u16(),
                status,
                "{label} {case}: {}",
                reply.body
            );
            reply.assert_problem(status, code);
        };

        let trailing = format!("{} {{}}", e.valid).into_bytes();
        for broken in [
            &b"{"[..],
            b"{\"na",
            b"",
            b"{,}",
            b"nul",
            trailing.as_slice(),
        ] {
            check(
                send(&app, e, &e.path, json_ct, broken.to_vec()).await,
                400,
                "malformed_json",
                "broken json",
            );
        }
        check(
            send(&app, e, &e.path, json_ct, b"{\"\xff\xfe\": 1}".to_vec()).await,
            400,
            "malformed_json",
            "non-utf8",
        );
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes();
        let reply = send(&app, e, &e.path, json_ct, deep).await;
        assert!(
            matches!(reply.status.as_u16(), 400 | 422),
            "{label} deep nesting"
        );
        assert_eq!(reply.content_type(), "application/problem+json");
        let deep_object = format!("{}{}", "{\"a\":".repeat(5000), "}".repeat(5000)).into_bytes();
        let reply = send(&app, e, &e.path, json_ct, deep_object).await;
        assert_eq!(reply.status.as_u16(), 400, "{label} deep object");

        check(
            send(&app, e, &e.path, json_ct, b"[1, 2]".to_vec()).await,
            400,
            "validation_failed",
            "array body",
        );
        check(
            send(
                &app,
                e,
                &e.path,
                json_ct,
                with(&e.valid, "surprise", json!(1)),
            )
            .await,
            400,
            "validation_failed",
            "unknown field",
        );
        // The wrong JSON type is a 400; a right type with a wrong value is a 422.
        for (cases, status) in [(&e.wrong_types, 400), (&e.bad_values, 422)] {
            for (field, value) in cases {
                let body = with(&e.valid, field, value.clone());
                let reply = send(&app, e, &e.path, json_ct, body).await;
                assert_eq!(
                    reply.body["errors"][0]["field"], *field,
                    "{label} {field}: {}",
                    reply.body
                );
                check(reply, status, "validation_failed", field);
            }
        }
        for field in &e.required {
            let mut missing = e.valid.clone();
            missing.as_object_mut().unwrap().remove(*field);
            let reply = send(&app, e, &e.path, json_ct, missing.to_string().into_bytes()).await;
            check(reply, 400, "validation_failed", &format!("missing {field}"));
        }
        check(
            send(&app, e, &e.path, json_ct, b"\"just a string\"".to_vec()).await,
            400,
            "validation_failed",
            "string body",
        );

        let huge = json!({"name": "x".repeat(70 * 1024)})
            .to_string()
            .into_bytes();
        check(
            send(&app, e, &e.path, json_ct, huge).await,
            413,
            "payload_too_large",
            "over the limit",
        );

        let valid = e.valid.to_string().into_bytes();
        check(
            send(&app, e, &e.path, Some("text/plain"), valid.clone()).await,
            415,
            "unsupported_media_type",
            "text/plain",
        );
        check(
            send(
                &app,
                e,
                &e.path,
                Some("application/x-www-form-urlencoded"),
                valid.clone(),
            )
            .await,
            415,
            "unsupported_media_type",
            "form",
        );
        check(
            send(&app, e, &e.path, None, valid.clone()).await,
            415,
            "unsupported_media_type",
            "no content type",
        );

        if let Some(bad_path) = &e.bad_id_path {
            check(
                send(&app, e, bad_path, json_ct, valid).await,
                400,
                "validation_failed",
                "bad uuid",
            );
        }
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "no bad request changed any store"
    );
}

#[tokio::test]
async fn bad_query_parameters_are_refused() {
    let app = spawn_app().await;
    let product = app.create_product(1, 1).await;
    for path in [
        "/products?limit=0".to_owned(),
        "/products?limit=201".to_owned(),
        "/products?limit=ten".to_owned(),
        "/products?cursor=garbage".to_owned(),
        format!("/products/{product}/reviews?limit=-1"),
        format!("/products/{product}/reviews?cursor=%FF"),
        "/products/not-a-uuid".to_owned(),
        "/products?category=%00".to_owned(),
        format!("/products?category={}", "x".repeat(65)),
    ] {
        app.get(&path, None)
            .await
            .assert_problem(400, "validation_failed");
    }
    app.send(
        reqwest::Method::DELETE,
        "/products/not-a-uuid",
        app.admin(),
        None,
    )
    .await
    .assert_problem(400, "validation_failed");
    // Unknown query parameters are ignored, not refused: cache busters must keep working.
    let busted = app.get("/products?_=1700000000&utm_source=x", None).await;
    assert_eq!(busted.status, 200);
    assert_eq!(busted.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_malformed_if_match_is_refused() {
    let app = spawn_app().await;
    let product = app.create_product(1, 1).await;
    let path = format!("/products/{product}");
    app.patch(&path, "banana", &json!({"name": "x"}))
        .await
        .assert_problem(400, "validation_failed");
    app.patch(&path, "\"1", &json!({"name": "x"}))
        .await
        .assert_problem(400, "validation_failed");
    app.patch(&path, "\"1\"", &json!({}))
        .await
        .assert_problem(400, "validation_failed");
    assert_eq!(app.get(&path, None).await.body["version"], 1);
}

#[tokio::test]
async fn if_match_compares_strongly_and_accepts_lists_and_any() {
    let app = spawn_app().await;
    let product = app.create_product(1, 1).await;
    let path = format!("/products/{product}");
    for never in ["\"0\"", "W/\"1\"", "\"one\""] {
        let reply = app.patch(&path, never, &json!({"name": "x"})).await;
        reply.assert_problem(412, "version_mismatch");
        assert_eq!(reply.body["current_version"], 1);
    }
    let listed = app
        .patch(&path, "\"7\", \"1\"", &json!({"name": "listed"}))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["version"], 2);
    let any = app.patch(&path, "*", &json!({"name": "any"})).await;
    assert_eq!(any.body["version"], 3);
    let gone = format!("/products/{}", uuid::Uuid::now_v7());
    app.patch(&gone, "*", &json!({"name": "x"}))
        .await
        .assert_problem(404, "not_found");
}
