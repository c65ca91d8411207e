//! The auth matrix: no token and unknown tokens are 401, the wrong role is 403, another
//! customer's record is 404 (ids are not to be probed). Nothing changes on any refusal.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Every route that needs a token: (method, path, body, admin only).
async fn protected_routes(app: &TestApp) -> Vec<(Method, String, Option<Value>, bool)> {
    let product = app.create_product(100, 5).await;
    let (customer, _) = app.create_customer(100).await;
    vec![
        (
            Method::POST,
            "/customers".into(),
            Some(json!({"name": "X", "email": "x@example.com"})),
            true,
        ),
        (
            Method::POST,
            format!("/customers/{customer}/deposits"),
            Some(json!({"amount_minor": 5})),
            true,
        ),
        (
            Method::POST,
            "/products".into(),
            Some(json!({"sku": "S", "name": "N", "price_minor": 1, "category": "C"})),
            true,
        ),
        (
            Method::PATCH,
            format!("/products/{product}"),
            Some(json!({"name": "N"})),
            true,
        ),
        (Method::DELETE, format!("/products/{product}"), None, true),
        (
            Method::POST,
            format!("/products/{product}/stock-adjustments"),
            Some(json!({"delta": 1, "reason": "restock"})),
            true,
        ),
        (
            Method::POST,
            format!("/products/{product}/reviews"),
            Some(json!({"rating": 5})),
            false,
        ),
        (Method::GET, format!("/customers/{customer}"), None, false),
    ]
}

async fn call(
    app: &TestApp,
    method: &Method,
    path: &str,
    body: &Option<Value>,
    token: Option<&str>,
) -> crate::helpers::Reply {
    let content_type = body.as_ref().map(|_| "application/json");
    let bytes = body.as_ref().map(|b| b.to_string().into_bytes());
    app.write(method.clone(), path, token, content_type, bytes)
        .await
}

#[tokio::test]
async fn missing_and_unknown_tokens_are_unauthorized() {
    let app = spawn_app().await;
    let routes = protected_routes(&app).await;
    let before = app.snapshot().await;
    for (method, path, body, _) in &routes {
        for token in [None, Some("nope"), Some("oc_forged-token"), Some("")] {
            let reply = call(&app, method, path, body, token).await;
            reply.assert_problem(401, "unauthorized");
            assert_eq!(
                reply.headers["www-authenticate"], "Bearer",
                "{method} {path}"
            );
        }
        let basic = app
            .raw(
                method.clone(),
                path,
                None,
                &[("authorization", "Basic YWRtaW46YWRtaW4=")],
                None,
            )
            .await;
        basic.assert_problem(401, "unauthorized");
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "refused requests change nothing"
    );
}

#[tokio::test]
async fn customers_are_forbidden_on_admin_routes() {
    let app = spawn_app().await;
    let routes = protected_routes(&app).await;
    let (_, token) = app.create_customer(0).await;
    let before = app.snapshot().await;
    for (method, path, body, admin_only) in &routes {
        if *admin_only {
            call(&app, method, path, body, Some(&token))
                .await
                .assert_problem(403, "forbidden");
        }
    }
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn the_admin_is_forbidden_to_review() {
    let app = spawn_app().await;
    let product = app.create_product(100, 1).await;
    app.post(
        &format!("/products/{product}/reviews"),
        app.admin(),
        &json!({"rating": 5}),
    )
    .await
    .assert_problem(403, "forbidden");
}

#[tokio::test]
async fn a_customer_cannot_see_another_customer() {
    let app = spawn_app().await;
    let (alice, _) = app.create_customer(100).await;
    let (_, bob_token) = app.create_customer(100).await;
    let reply = app
        .get(&format!("/customers/{alice}"), Some(&bob_token))
        .await;
    reply.assert_problem(404, "not_found");
    // Indistinguishable from a customer that does not exist.
    let nobody = app
        .get(
            &format!("/customers/{}", uuid::Uuid::now_v7()),
            Some(&bob_token),
        )
        .await;
    assert_eq!(nobody.body["detail"], reply.body["detail"]);
}
