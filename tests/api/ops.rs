use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_answers_while_the_process_runs() {
    let app = spawn_app().await;
    let reply = app.get("/healthz", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_names_every_store() {
    let app = spawn_app().await;
    let reply = app.get("/readyz", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for store in ["postgres", "redis", "mongodb", "rabbitmq"] {
        assert_eq!(reply.body[store], "ok", "{}", reply.body);
    }
}

#[tokio::test]
async fn an_api_whose_broker_is_down_stays_ready_takes_orders_and_says_what_is_down() {
    // Nothing listens on port 1: RabbitMQ is "down" for this app only. Checkout needs only
    // Postgres (the outbox keeps each command until the broker is back), so the API must stay
    // in its Service and say what is down in the body and the metrics.
    let app = spawn_app_with(&[("ORDERLY_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")]).await;
    let reply = app.get("/readyz", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["postgres"], "ok");
    assert!(
        reply.body["rabbitmq"]
            .as_str()
            .unwrap()
            .starts_with("down: "),
        "{}",
        reply.body
    );
    assert!(
        !reply.body.to_string().contains("guest:guest"),
        "no credentials in the body"
    );
    let text = app.metrics().await;
    assert!(
        text.contains(r#"orderly_store_up{store="rabbitmq"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"orderly_store_up{store="postgres"} 1"#),
        "{text}"
    );

    let product = app.create_product(10_000, 5).await;
    let (_, token) = app.create_customer(100_000).await;
    let placed = app
        .place_order(&token, "broker-down", &[(product, 1)])
        .await;
    assert_eq!(placed.status, 202, "{}", placed.body);
}

#[tokio::test]
async fn an_api_whose_postgres_is_gone_is_not_ready() {
    let app = spawn_app().await;
    assert_eq!(app.get("/readyz", None).await.status, 200);
    app.stores.pg.close().await;
    let reply = app.get("/readyz", None).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply.body["postgres"]
            .as_str()
            .unwrap()
            .starts_with("down: ")
    );
    assert_eq!(reply.body["redis"], "ok");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    app.get("/products", None).await;
    app.get(&format!("/products/{}", uuid::Uuid::now_v7()), None)
        .await;
    let text = app.metrics().await;
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends in # EOF: {text}"
    );
    assert!(
        text.contains(
            r#"orderly_http_requests_total{method="GET",route="/products",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"orderly_http_requests_total{method="GET",route="/products/{id}",status="404"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"orderly_http_request_duration_seconds_count{method="GET",route="/products/{id}",status="404"} 1"#
        ),
        "{text}"
    );
    // Made-up methods share one label value, so they cannot grow the metrics without bound.
    for method in ["FOO", "BAR", "BAZ"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        app.send(m, "/products", None, None)
            .await
            .assert_problem(405, "method_not_allowed");
    }
    let text = app.metrics().await;
    assert!(
        text.contains(r#"method="OTHER",route="/products",status="405"} 3"#),
        "{text}"
    );
    assert!(!text.contains("FOO"));
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = spawn_app().await;
    let reply = app.get("/openapi.json", None).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = reply.body["paths"].as_object().unwrap();
    for path in [
        "/customers",
        "/customers/{id}",
        "/customers/{id}/deposits",
        "/products",
        "/products/{id}",
        "/products/{id}/stock-adjustments",
        "/products/{id}/reviews",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(path), "missing {path}");
    }
    assert!(paths["/products/{id}"].get("patch").is_some());
    // The saga search names its states and kinds.
    let params = paths["/sagas"]["get"]["parameters"].as_array().unwrap();
    let values =
        |name: &str| params.iter().find(|p| p["name"] == name).unwrap()["schema"]["enum"].clone();
    assert_eq!(
        values("state"),
        serde_json::json!([
            "running",
            "compensating",
            "completed",
            "compensated",
            "failed"
        ])
    );
    assert_eq!(
        values("kind"),
        serde_json::json!(["checkout", "cancellation"])
    );
    let text = reply.body.to_string();
    let schemas = reply.body["components"]["schemas"].as_object().unwrap();
    for reference in text.split("#/components/schemas/").skip(1) {
        let name: String = reference
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        assert!(
            schemas.contains_key(&name),
            "$ref to {name}, which is not in components"
        );
    }
    for (path, operations) in paths.iter().filter(|(p, _)| p.contains("{id}")) {
        for (method, operation) in operations.as_object().unwrap() {
            let declares_id = operation["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "id" && p["in"] == "path"));
            assert!(
                declares_id,
                "{method} {path} does not declare its id parameter"
            );
        }
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let app = spawn_app().await;
    app.get("/nowhere", None)
        .await
        .assert_problem(404, "not_found");
    app.send(reqwest::Method::PUT, "/products", app.admin(), None)
        .await
        .assert_problem(405, "method_not_allowed");
    app.send(reqwest::Method::DELETE, "/healthz", None, None)
        .await
        .assert_problem(405, "method_not_allowed");
}

/// The alert rules and the Grafana dashboard name only metrics orderly serves: a renamed
/// metric would otherwise leave an alert that never fires and a panel that stays empty.
#[tokio::test]
async fn alert_rules_and_the_dashboard_name_only_metrics_orderly_serves() {
    let app = spawn_app().await;
    // A family is listed once it has a sample: one saga gives every family the files name one.
    let product = app.create_product(500, 3).await;
    let (_, token) = app.create_customer(10_000).await;
    let placed = app.place_order(&token, "metrics", &[(product, 1)]).await;
    let order = placed.body["id"].as_str().unwrap();
    assert_eq!(app.settled_order(order).await["status"], "confirmed");
    let text = app.metrics().await;
    let served: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for file in [
        "deploy/prometheus/orderly-alerts.yml",
        "deploy/grafana/orderly.json",
    ] {
        let body = std::fs::read_to_string(format!("{}/{file}", crate::helpers::repository_root()))
            .unwrap();
        let mut named = 0;
        for (at, _) in body.match_indices("orderly_") {
            let name: String = body[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // Samples carry suffixes their family's TYPE line does not.
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| served.contains(base))
                .unwrap_or(&name);
            assert!(
                served.contains(family),
                "{file} names {name}, which /metrics does not serve"
            );
            named += 1;
        }
        assert!(named > 3, "{file} names {named} metrics");
    }
}
