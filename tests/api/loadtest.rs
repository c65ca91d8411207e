//! The load test's smoke run: a few seconds of checkout load against `orderly api` and one
//! `orderly worker`, ending in a verified report; then the same verifier, pointed at stores broken
//! on purpose, must name exactly what was broken.

use std::time::Duration;

use orderly_loadtest::driver::Model;
use orderly_loadtest::run::{RunConfig, run};
use orderly_loadtest::scenario::Scenario;
use orderly_loadtest::system::{Layout, StoreUrls};
use orderly_loadtest::verify::{Stores, verify};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_checkout_run_passes_verification_and_a_broken_store_fails_it() {
    let urls = StoreUrls::from_env();
    let out = std::env::temp_dir().join(format!("orderly-smoke-{}", Uuid::new_v4().simple()));
    let mut shape = Scenario::Checkout.default_shape();
    shape.products = 4;
    shape.stock_per_product = 150;
    shape.customers = 12;
    shape.short_of_funds = 0.25;
    shape.cancel = 0.2;
    let config = RunConfig {
        scenario: Scenario::Checkout,
        shape,
        model: Model::Closed { users: 6 },
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(3),
        seed: 7,
        layout: Layout::Split {
            workers: 1,
            worker_millicpu: None,
        },
        worker_millicpu: None,
        binary: env!("CARGO_BIN_EXE_orderly").into(),
        urls: urls.clone(),
        out_dir: out.clone(),
        baseline_secs: 0.2,
        keep: true,
        command: "cargo test loadtest".into(),
    };
    let outcome = run(config).await.expect("the smoke run completes");
    let namespace = outcome.namespace.clone();
    let report = outcome.report;

    let result = std::panic::AssertUnwindSafe(async {
        assert!(report.passed(), "{}", report.markdown());
        assert!(
            report
                .throughput
                .as_ref()
                .is_some_and(|t| t.sagas_completed > 0),
            "{}",
            report.markdown()
        );
        assert_eq!(report.load_covered_s, report.duration_s);
        assert!(
            report.outcomes.contains_key("confirmed"),
            "{:?}",
            report.outcomes
        );
        assert_eq!(report.baselines.len(), 4);
        assert!(report.baselines.iter().all(|b| b.per_second > 0.0));
        for file in ["report.md", "report.json", "chart.svg"] {
            assert!(out.join(file).exists(), "{file} written");
        }

        // Break two invariants behind orderly's back: one wallet gains money from nowhere, and
        // one product gains available units no stock adjustment accounts for.
        let stores = Stores::connect(&namespace, &urls).await.unwrap();
        sqlx::query(
            "UPDATE customers SET balance_minor = balance_minor + 1
             WHERE id = (SELECT id FROM customers ORDER BY id LIMIT 1)",
        )
        .execute(&stores.pg)
        .await
        .unwrap();
        let product: Uuid = sqlx::query_scalar("SELECT id FROM products LIMIT 1")
            .fetch_one(&stores.pg)
            .await
            .unwrap();
        redis::cmd("INCR")
            .arg(stores.stock.available_key(product))
            .query_async::<i64>(&mut stores.stock.connection())
            .await
            .unwrap();
        let broken = verify(&stores, None, Duration::ZERO).await.unwrap();
        let failed: Vec<&str> = broken.violations().map(|c| c.name).collect();
        assert_eq!(failed, ["no_oversell", "money_is_conserved"]);
    });
    let result = futures::FutureExt::catch_unwind(result).await;
    namespace.remove(&urls).await;
    let _ = std::fs::remove_dir_all(&out);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
