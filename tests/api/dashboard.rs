//! `/dashboard` in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/e2e/dashboard.mjs`), both installed by `scripts/test`.

use lapin::BasicProperties;
use orderly::messaging::topology::{Queue, Topology};
use reqwest::StatusCode;

use crate::helpers::spawn_app;

#[tokio::test]
async fn an_operator_finds_an_order_reads_its_timeline_and_replays_a_dead_letter() {
    let app = spawn_app().await;

    // The page is served whole, from the binary.
    let page = app.get("/dashboard", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // An order to find, settled.
    let product = app.create_product(700, 5).await;
    let (_, token) = app.create_customer(10_000).await;
    let placed = app.place_order(&token, "dashboard", &[(product, 2)]).await;
    let order = placed.body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.settled_order(&order).await["status"], "confirmed");

    // A poisoned message, dead-lettered by the payments consumer.
    let topology = Topology::new(&app.settings.amqp_prefix);
    app.publish(
        &topology.queue(Queue::Payments),
        b"{\"poisoned\": true}",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await;
    let poison = app.dead_letters_when("payments", 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let root = crate::helpers::repository_root();
    assert!(
        std::path::Path::new(&format!("{root}/tests/e2e/node_modules/playwright-core")).exists(),
        "playwright-core is missing: scripts/test installs it (npm ci in tests/e2e), and Chromium"
    );
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{root}/target"));
    let screenshots = format!("{target}/e2e/dashboard");
    let run = tokio::process::Command::new("node")
        .arg("tests/e2e/dashboard.mjs")
        .current_dir(&root)
        .env("ORDERLY_URL", format!("http://{}", app.addr))
        .env("ORDERLY_ADMIN_TOKEN", &app.admin_token)
        .env("ORDER_ID", &order)
        .env("POISON_ID", &poison)
        .env("SCREENSHOTS", &screenshots)
        .output()
        .await
        .expect("node runs");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    for shot in [
        "1-dashboard-1280.png",
        "2-timeline-1280.png",
        "3-dead-letters-1280.png",
        "4-dashboard-390.png",
    ] {
        assert!(
            std::path::Path::new(&format!("{screenshots}/{shot}")).exists(),
            "{shot}"
        );
    }
    // The replay reached the consumer, which dead-lettered the message again.
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"orderly_messages_dead_lettered_total{queue="payments"} 2"#),
        "{metrics}"
    );
}
