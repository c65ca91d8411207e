//! Stock adjustments: the HTTP endpoint, crash recovery, script reloading, and a property test
//! of `adjust.lua` against real Redis and the Postgres ledger.

use orderly::{
    domain::stock::{self, AdjustmentReason},
    services::{ServiceError, stock::StockAdjuster},
    store::{
        postgres::stock_ledger::{self, PendingAdjustment},
        stock::AdjustOutcome,
    },
};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with_roles};

/// The API alone: these tests stage crashes of stock adjustments and settle them themselves, so
/// no stock-recovery pass (the inventory role's, whenever its lease is taken) may settle them
/// first.
async fn spawn_app() -> TestApp {
    spawn_app_with_roles(&[], &[]).await
}

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

/// An adjustment whose process died right after recording it (step 1 done, nothing more).
async fn record_then_crash(app: &TestApp, product: Uuid, delta: i64) -> PendingAdjustment {
    let adjustment = PendingAdjustment {
        id: Uuid::now_v7(),
        product_id: product,
        delta,
    };
    let mut conn = app.stores.pg.acquire().await.unwrap();
    stock_ledger::record_pending(&mut conn, adjustment, AdjustmentReason::Correction)
        .await
        .unwrap();
    adjustment
}

#[tokio::test]
async fn adjustments_move_stock_and_refuse_to_go_below_zero() {
    let app = spawn_app().await;
    let product = app.create_product(100, 10).await;

    let up = app.adjust_stock(product, 5, "restock").await;
    assert_eq!(up.status, 200, "{}", up.body);
    assert_eq!(
        up.body,
        json!({"product_id": product.to_string(), "stock": 15, "on_hand": 15})
    );

    let down = app.adjust_stock(product, -15, "damage").await;
    assert_eq!(down.body["stock"], 0);

    let before = app.snapshot().await;
    let refused = app.adjust_stock(product, -1, "correction").await;
    refused.assert_problem(409, "insufficient_stock");
    assert_eq!(refused.body["available"], 0);
    // Nothing changed but one expiring Redis marker, which lets a retry get the same answer.
    let after = app.snapshot().await;
    assert_eq!(
        after["postgres"], before["postgres"],
        "the ledger keeps no refused adjustment"
    );
    assert_eq!(after["mongodb"], before["mongodb"]);
    let new_keys: Vec<&String> = after["redis"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| before["redis"].get(k.as_str()).is_none())
        .collect();
    assert_eq!(new_keys.len(), 1);
    assert!(new_keys[0].contains(":adj:"));
    assert_eq!(after["redis"][new_keys[0]], "refused");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(new_keys[0])
        .query_async(&mut app.stores.stock.connection())
        .await
        .unwrap();
    assert!(ttl > 0, "the marker expires");
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
    let replies =
        futures::future::join_all((0..60).map(|_| app.adjust_stock(product, -1, "damage"))).await;
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
    record_then_crash(&app, product, 3).await;
    // Crash after Redis applied it, before Postgres settled it.
    let after_redis = record_then_crash(&app, product, 2).await;
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
    // The Redis marker outlives settlement (it expires), so a late replay still changes nothing.
    app.stores
        .stock
        .adjust(product, after_redis.id, after_redis.delta)
        .await
        .unwrap();
    assert_eq!(assert_consistent(&app, product).await, 9);
}

#[tokio::test]
async fn the_next_adjustment_settles_what_a_crash_left_pending_first() {
    let app = spawn_app().await;
    let product = app.create_product(100, 0).await;
    // +5 reached Redis, then the process died before Postgres settled it.
    let crashed = record_then_crash(&app, product, 5).await;
    app.stores
        .stock
        .adjust(product, crashed.id, crashed.delta)
        .await
        .unwrap();

    // A removal of 4 is applied after it in Redis, so it settles after it too: on hand goes
    // 0 → 5 → 1, never through -4.
    let reply = app.adjust_stock(product, -4, "damage").await;
    assert_eq!(
        reply.body,
        json!({"product_id": product.to_string(), "stock": 1, "on_hand": 1})
    );
    assert_eq!(assert_consistent(&app, product).await, 1);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retry_return_the_first_outcome() {
    let app = spawn_app().await;
    let product = app.create_product(100, 10).await;
    let path = format!("/products/{product}/stock-adjustments");
    let send = |key: &'static str, body: serde_json::Value| {
        let (app, path) = (&app, &path);
        async move {
            app.raw(
                reqwest::Method::POST,
                path,
                app.admin(),
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                Some(body.to_string().into_bytes()),
            )
            .await
        }
    };
    let restock = json!({"delta": 7, "reason": "restock"});
    let first = send("restock-42", restock.clone()).await;
    assert_eq!(first.body["stock"], 17);
    for _ in 0..3 {
        let again = send("restock-42", restock.clone()).await;
        assert_eq!(again.status, 200);
        assert_eq!(
            again.body["stock"], 17,
            "applied once, however often it is sent"
        );
    }
    send("restock-42", json!({"delta": 8, "reason": "restock"}))
        .await
        .assert_problem(422, "idempotency_key_reused");
    let refused = send("too-many", json!({"delta": -100, "reason": "damage"})).await;
    refused.assert_problem(409, "insufficient_stock");
    send("too-many", json!({"delta": -100, "reason": "damage"}))
        .await
        .assert_problem(409, "insufficient_stock");
    send(" ", restock.clone())
        .await
        .assert_problem(400, "validation_failed");
    assert_eq!(assert_consistent(&app, product).await, 17);
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
    let reply = app.adjust_stock(product, 2, "restock").await;
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
    /// Record, then crash before touching Redis.
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

/// What settling the product does to the model: each pending adjustment, oldest first, is
/// applied if it fits — unless Redis already decided it before the crash.
fn settle_model(model: &mut i64, unsettled: &mut Vec<(PendingAdjustment, bool)>) {
    for (adjustment, redis_decided) in unsettled.drain(..) {
        if !redis_decided && let Ok(after) = stock::apply(*model, adjustment.delta) {
            *model = after;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random sequences of adjustments, crashes before and after Redis, replays and recovery
    /// passes: Redis never goes below zero and follows a pure model of the rules, and once
    /// settled it agrees with the Postgres ledger — also after concurrent adjustments.
    #[test]
    fn adjust_lua_agrees_with_the_ledger(
        steps in prop::collection::vec(step(), 1..40),
        concurrent in prop::collection::vec(prop_oneof![-10i64..=-1, 1i64..=10], 0..12),
    ) {
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
                        settle_model(&mut model, &mut unsettled);
                        match adjuster.adjust(product, delta, AdjustmentReason::Correction, None).await {
                            Ok(level) => {
                                model = stock::apply(model, delta).expect("the model agrees it fits");
                                assert_eq!(level.available, model);
                                assert!(level.on_hand >= 0);
                            }
                            Err(ServiceError::InsufficientStock { available }) => {
                                assert_eq!(available, model);
                                assert!(stock::apply(model, delta).is_err());
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    Step::CrashBeforeRedis(delta) | Step::CrashAfterRedis(delta) => {
                        let adjustment = record_then_crash(&app, product, delta).await;
                        let reached_redis = matches!(step, Step::CrashAfterRedis(_));
                        if reached_redis {
                            // Pending rows before it were applied first, under the same lock.
                            let mut earlier = std::mem::take(&mut unsettled);
                            for (pending, decided) in &mut earlier {
                                if !*decided {
                                    app.stores.stock.adjust(product, pending.id, pending.delta).await.unwrap();
                                    if let Ok(after) = stock::apply(model, pending.delta) { model = after; }
                                    *decided = true;
                                }
                            }
                            unsettled = earlier;
                            let outcome = app.stores.stock.adjust(product, adjustment.id, delta).await.unwrap();
                            if let AdjustOutcome::Applied { .. } = outcome {
                                model += delta;
                            }
                        }
                        unsettled.push((adjustment, reached_redis));
                    }
                    Step::Replay(n) => {
                        // Only what Redis has seen and Postgres has not settled is ever run again.
                        let seen: Vec<_> = unsettled.iter().filter(|(_, decided)| *decided).collect();
                        if !seen.is_empty() {
                            let (adjustment, _) = seen[n % seen.len()];
                            app.stores.stock.adjust(product, adjustment.id, adjustment.delta).await.unwrap();
                        }
                    }
                    Step::Recover => {
                        settle_model(&mut model, &mut unsettled);
                        adjuster.settle_pending().await.unwrap();
                        assert_consistent(&app, product).await;
                    }
                }
                let available = app.stores.stock.available(&[product]).await.unwrap()[0];
                assert!(available >= 0, "never below zero");
                assert_eq!(available, model, "Redis follows the model");
            }

            // Concurrent adjustments race each other through the real path.
            let results = futures::future::join_all(concurrent.iter().map(|&d| {
                let adjuster = adjuster.clone();
                async move { adjuster.adjust(product, d, AdjustmentReason::Correction, None).await }
            })).await;
            for result in results {
                assert!(matches!(result, Ok(_) | Err(ServiceError::InsufficientStock { .. })), "{result:?}");
            }

            adjuster.settle_pending().await.unwrap();
            assert_consistent(&app, product).await;
        });
    }
}
