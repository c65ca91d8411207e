//! Stock adjustments: the HTTP endpoint, crash recovery, script reloading, and a property test
//! of `adjust.lua` against real Redis and the Postgres ledger.

use orderly::{
    domain::stock::{self, AdjustmentReason},
    services::stock::{Settlement, StockAdjuster},
    store::postgres::stock_ledger::{self, PendingAdjustment},
};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};

async fn assert_consistent(app: &TestApp, product: Uuid) -> i64 {
    let available = app.stores.stock.available(&[product]).await.unwrap()[0];
    let on_hand = stock_ledger::on_hand(&app.stores.pg, product)
        .await
        .unwrap();
    let ledger = stock_ledger::applied_total(&app.stores.pg, product)
        .await
        .unwrap();
    assert!(available >= 0);
    // No orders hold stock yet, so everything on hand is available.
    assert_eq!(available, on_hand, "Redis agrees with Postgres");
    assert_eq!(on_hand, ledger, "on hand is the sum of the ledger");
    available
}

#[tokio::test]
async fn adjustments_move_stock_and_refuse_to_go_below_zero() {
    let app = spawn_app().await;
    let product = app.create_product(100, 10).await;
    let path = format!("/products/{product}/stock-adjustments");

    let up = app
        .post(
            &path,
            app.admin(),
            &json!({"delta": 5, "reason": "restock"}),
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(
        up.body,
        json!({"product_id": product.to_string(), "stock": 15, "on_hand": 15})
    );

    let down = app
        .post(
            &path,
            app.admin(),
            &json!({"delta": -15, "reason": "damage"}),
        )
        .await;
    assert_eq!(down.body["stock"], 0);

    let before = app.snapshot().await;
    let refused = app
        .post(
            &path,
            app.admin(),
            &json!({"delta": -1, "reason": "correction"}),
        )
        .await;
    refused.assert_problem(409, "insufficient_stock");
    assert_eq!(refused.body["available"], 0);
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused adjustment leaves no trace"
    );
    assert_eq!(assert_consistent(&app, product).await, 0);

    let missing = format!("/products/{}/stock-adjustments", Uuid::now_v7());
    app.post(
        &missing,
        app.admin(),
        &json!({"delta": 1, "reason": "restock"}),
    )
    .await
    .assert_problem(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_removals_never_oversell() {
    let app = spawn_app().await;
    let product = app.create_product(100, 25).await;
    let path = format!("/products/{product}/stock-adjustments");
    let body = json!({"delta": -1, "reason": "damage"});
    let replies =
        futures::future::join_all((0..60).map(|_| app.post(&path, app.admin(), &body))).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies.iter().filter(|r| r.status == 409).count();
    assert_eq!((ok, refused), (25, 35));
    assert_eq!(assert_consistent(&app, product).await, 0);
}

#[tokio::test]
async fn an_adjustment_a_crash_left_pending_is_settled_exactly_once() {
    let app = spawn_app().await;
    let product = app.create_product(100, 4).await;
    let adjuster = StockAdjuster::new(app.stores.clone());

    // Crash after recording, before Redis: the row is pending, Redis untouched.
    let before_redis = PendingAdjustment {
        id: Uuid::now_v7(),
        product_id: product,
        delta: 3,
    };
    // Crash after Redis applied it, before Postgres settled it.
    let after_redis = PendingAdjustment {
        id: Uuid::now_v7(),
        product_id: product,
        delta: 2,
    };
    let mut conn = app.stores.pg.acquire().await.unwrap();
    for adjustment in [before_redis, after_redis] {
        stock_ledger::record_pending(&mut conn, adjustment, AdjustmentReason::Restock)
            .await
            .unwrap();
    }
    drop(conn);
    app.stores
        .stock
        .adjust(product, after_redis.id, after_redis.delta)
        .await
        .unwrap();
    assert_eq!(
        app.stores.stock.available(&[product]).await.unwrap(),
        vec![6]
    );

    assert_eq!(adjuster.settle_pending().await.unwrap(), 2);
    assert_eq!(
        adjuster.settle_pending().await.unwrap(),
        0,
        "nothing left to settle"
    );
    assert_eq!(
        assert_consistent(&app, product).await,
        9,
        "4 + 3 + 2, each once"
    );
    assert_eq!(adjuster.settle(after_redis.id, false).await.unwrap(), None);
}

#[tokio::test]
async fn scripts_are_reloaded_after_redis_forgets_them() {
    let app = spawn_app().await;
    let product = app.create_product(100, 1).await;
    let mut redis = app.stores.stock.connection();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis)
        .await
        .unwrap();
    let path = format!("/products/{product}/stock-adjustments");
    let reply = app
        .post(
            &path,
            app.admin(),
            &json!({"delta": 2, "reason": "restock"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["stock"], 3);
}

#[tokio::test]
async fn the_script_is_idempotent_per_adjustment_id() {
    let app = spawn_app().await;
    let product = app.create_product(100, 5).await;
    let stock = &app.stores.stock;
    let id = Uuid::now_v7();
    let first = stock.adjust(product, id, -3).await.unwrap();
    let replay = stock.adjust(product, id, -3).await.unwrap();
    assert_eq!(
        first,
        orderly::store::stock::AdjustOutcome::Applied { available: 2 }
    );
    assert_eq!(replay, first);
    let refused_id = Uuid::now_v7();
    let refused = stock.adjust(product, refused_id, -9).await.unwrap();
    assert_eq!(
        refused,
        orderly::store::stock::AdjustOutcome::Refused { available: 2 }
    );
    stock.adjust(product, Uuid::now_v7(), 20).await.unwrap();
    // Once refused, always refused: a replay does not apply it now that there is stock.
    assert_eq!(
        stock.adjust(product, refused_id, -9).await.unwrap(),
        orderly::store::stock::AdjustOutcome::Refused { available: 22 }
    );
}

#[derive(Debug, Clone)]
enum Step {
    /// Adjust through the service, as the API does.
    Adjust(i64),
    /// Record, then crash before touching Redis; settled later by recovery.
    CrashBeforeRedis(i64),
    /// Record and apply in Redis, then crash before settling in Postgres.
    CrashAfterRedis(i64),
    /// Re-run the script for an adjustment Redis has already applied (a lost reply).
    Replay(usize),
    /// The recovery loop runs.
    Recover,
}

fn step() -> impl Strategy<Value = Step> {
    let delta = prop_oneof![-30i64..=-1, 1i64..=30];
    prop_oneof![
        4 => delta.clone().prop_map(Step::Adjust),
        1 => delta.clone().prop_map(Step::CrashBeforeRedis),
        1 => delta.prop_map(Step::CrashAfterRedis),
        1 => any::<usize>().prop_map(Step::Replay),
        1 => Just(Step::Recover),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random sequences of adjustments, crashes, replays and recoveries: Redis never goes below
    /// zero, matches the pure model, and always agrees with the Postgres ledger once settled.
    #[test]
    fn adjust_lua_agrees_with_the_ledger(steps in prop::collection::vec(step(), 1..40), concurrent in prop::collection::vec(-10i64..=10, 0..12)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let app = spawn_app().await;
            let product = app.create_product(1, 0).await;
            let adjuster = StockAdjuster::new(app.stores.clone());
            let mut model: i64 = 0;
            let mut unsettled: Vec<(PendingAdjustment, bool)> = Vec::new();

            for step in steps {
                match step {
                    Step::Adjust(delta) => {
                        match adjuster.adjust(product, delta, AdjustmentReason::Correction).await {
                            Ok(level) => {
                                model = stock::apply(model, delta).expect("the model agrees it fits");
                                assert_eq!(level.available, model);
                            }
                            Err(orderly::services::ServiceError::InsufficientStock { available }) => {
                                assert_eq!(available, model);
                                assert!(stock::apply(model, delta).is_err());
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    Step::CrashBeforeRedis(delta) | Step::CrashAfterRedis(delta) => {
                        let adjustment = PendingAdjustment { id: Uuid::now_v7(), product_id: product, delta };
                        let mut conn = app.stores.pg.acquire().await.unwrap();
                        stock_ledger::record_pending(&mut conn, adjustment, AdjustmentReason::Correction).await.unwrap();
                        drop(conn);
                        if matches!(step, Step::CrashAfterRedis(_)) {
                            let outcome = app.stores.stock.adjust(product, adjustment.id, delta).await.unwrap();
                            if let orderly::store::stock::AdjustOutcome::Applied { .. } = outcome {
                                model += delta;
                            }
                        }
                        unsettled.push((adjustment, matches!(step, Step::CrashAfterRedis(_))));
                    }
                    Step::Replay(n) => {
                        // Only an adjustment Redis has seen and Postgres has not settled can be
                        // run again (by recovery); once settled, only pending rows are ever run.
                        let seen: Vec<_> = unsettled.iter().filter(|(_, redis_done)| *redis_done).collect();
                        if !seen.is_empty() {
                            let (adjustment, _) = seen[n % seen.len()];
                            app.stores.stock.adjust(product, adjustment.id, adjustment.delta).await.unwrap();
                        }
                    }
                    Step::Recover => {
                        for (adjustment, redis_done) in unsettled.drain(..) {
                            let settled = adjuster.settle(adjustment.id, false).await.unwrap();
                            if !redis_done && let Ok(after) = stock::apply(model, adjustment.delta) {
                                // Recovery applies it now, against the stock of this moment.
                                model = after;
                            }
                            match settled {
                                Some(Settlement::Applied { available, .. }) => assert_eq!(available, model),
                                Some(Settlement::Refused { available }) => assert_eq!(available, model),
                                None => panic!("a pending adjustment was not settled"),
                            }
                        }
                    }
                }
                let available = app.stores.stock.available(&[product]).await.unwrap()[0];
                assert!(available >= 0, "never below zero");
                assert_eq!(available, model, "Redis follows the model");
            }

            // Concurrent adjustments race each other through the real path.
            let results = futures::future::join_all(concurrent.iter().filter(|d| **d != 0).map(|&d| {
                let adjuster = adjuster.clone();
                async move { adjuster.adjust(product, d, AdjustmentReason::Correction).await }
            })).await;
            for result in results {
                assert!(matches!(result, Ok(_) | Err(orderly::services::ServiceError::InsufficientStock { .. })));
            }

            adjuster.settle_pending().await.unwrap();
            assert_consistent(&app, product).await;
        });
    }
}
