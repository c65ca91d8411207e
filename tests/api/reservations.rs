//! `reserve.lua` and `release.lua` against real Redis, with random orders run concurrently.
//!
//! Scripts are atomic, so a concurrent batch equals some serial order, which the test cannot
//! predict; it checks what must hold for every order: available stock never negative, each
//! product's `available + held` equal to its opening stock, `held` equal to what live
//! reservations record, a replay of any call changing nothing and answering as the record says,
//! and a release that came first refusing the late reserve.

use std::collections::HashMap;

use futures::future::join_all;
use orderly::{
    domain::order::OrderLine,
    store::stock::{ReserveOutcome, StockCounters},
};
use proptest::prelude::*;
use uuid::Uuid;

const PRODUCTS: usize = 3;
const ORDERS: usize = 6;

#[derive(Debug, Clone, Copy)]
enum Call {
    Reserve(usize),
    Release(usize),
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        3 => (0..ORDERS).prop_map(Call::Reserve),
        1 => (0..ORDERS).prop_map(Call::Release),
    ]
}

/// Each order: 1..=3 lines over distinct products, 1..=4 units each.
fn orders() -> impl Strategy<Value = Vec<Vec<(usize, i64)>>> {
    prop::collection::vec(
        prop::collection::btree_map(0..PRODUCTS, 1..=4i64, 1..=3)
            .prop_map(|lines| lines.into_iter().collect::<Vec<_>>()),
        ORDERS,
    )
}

struct Fixture {
    stock: StockCounters,
    products: Vec<Uuid>,
    orders: Vec<Uuid>,
    lines: Vec<Vec<OrderLine>>,
}

impl Fixture {
    async fn run(&self, call: Call) -> Option<ReserveOutcome> {
        match call {
            Call::Reserve(o) => Some(
                self.stock
                    .reserve(self.orders[o], &self.lines[o])
                    .await
                    .unwrap(),
            ),
            Call::Release(o) => {
                let products: Vec<Uuid> = self.lines[o].iter().map(|l| l.product_id).collect();
                self.stock.release(self.orders[o], &products).await.unwrap();
                None
            }
        }
    }

    async fn counters(&self) -> (Vec<i64>, Vec<i64>) {
        (
            self.stock.available(&self.products).await.unwrap(),
            self.stock.held(&self.products).await.unwrap(),
        )
    }

    async fn state(&self, order: usize) -> Option<String> {
        redis::cmd("HGET")
            .arg(self.stock.reservation_key(self.orders[order]))
            .arg("state")
            .query_async(&mut self.stock.connection())
            .await
            .unwrap()
    }
}

async fn check(f: &Fixture, opening: &[i64]) {
    let (available, held) = f.counters().await;
    let mut recorded = [0i64; PRODUCTS];
    for o in 0..ORDERS {
        if f.state(o).await.as_deref() == Some("reserved") {
            for &OrderLine {
                product_id: product,
                quantity,
            } in &f.lines[o]
            {
                let p = f.products.iter().position(|&id| id == product).unwrap();
                recorded[p] += quantity;
            }
        }
    }
    for p in 0..PRODUCTS {
        assert!(available[p] >= 0, "available went negative: {available:?}");
        assert_eq!(available[p] + held[p], opening[p], "stock is conserved");
        assert_eq!(held[p], recorded[p], "held = what live reservations record");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn reservations_conserve_stock_under_concurrent_random_calls(
        opening in prop::collection::vec(0..=8i64, PRODUCTS),
        lines in orders(),
        batches in prop::collection::vec(prop::collection::vec(call(), 1..6), 1..6),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let prefix = format!("orderly_t:{}:", Uuid::new_v4().simple());
            let url = std::env::var("ORDERLY_REDIS_URL")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
            let stock = StockCounters::connect(&url, &prefix).await.unwrap();
            let products: Vec<Uuid> = (0..PRODUCTS).map(|_| Uuid::new_v4()).collect();
            for (p, &n) in products.iter().zip(&opening) {
                if n > 0 {
                    stock.adjust(*p, Uuid::new_v4(), n).await.unwrap();
                }
            }
            let orders: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::now_v7()).collect();
            let lines: Vec<Vec<OrderLine>> = lines
                .iter()
                .map(|ls| ls.iter().map(|&(p, q)| OrderLine::new(products[p], q)).collect())
                .collect();
            let f = Fixture { stock, products, orders, lines };

            let mut released_first: HashMap<usize, bool> = HashMap::new();
            for batch in &batches {
                for call in batch {
                    if let Call::Release(o) = *call {
                        released_first.entry(o).or_insert(f.state(o).await.is_none());
                    }
                }
                join_all(batch.iter().map(|&c| f.run(c))).await;
                check(&f, &opening).await;

                // Replays answer as the record says and change nothing.
                let before = f.counters().await;
                for &call in batch {
                    let outcome = f.run(call).await;
                    if let (Call::Reserve(o), Some(outcome)) = (call, outcome) {
                        match (f.state(o).await.as_deref(), outcome) {
                            (Some("reserved"), ReserveOutcome::Reserved)
                            | (Some("rejected"), ReserveOutcome::Short { .. })
                            | (Some("released"), ReserveOutcome::Tombstoned) => {}
                            (state, outcome) => panic!("a replay answered {outcome:?} for {state:?}"),
                        }
                    }
                }
                assert_eq!(f.counters().await, before, "a replay changed the counters");
            }
            // An order released before anything reserved it can never reserve.
            for (&o, &first) in &released_first {
                if first {
                    assert_eq!(f.state(o).await.as_deref(), Some("released"));
                    assert_eq!(f.run(Call::Reserve(o)).await, Some(ReserveOutcome::Tombstoned));
                }
            }
            check(&f, &opening).await;

            let mut redis = f.stock.connection();
            let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut redis).await.unwrap();
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL").arg(keys).query_async(&mut redis).await.unwrap();
            }
        });
    }
}

#[tokio::test]
async fn a_release_that_overtakes_its_reserve_leaves_a_tombstone() {
    let url = std::env::var("ORDERLY_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let prefix = format!("orderly_t:{}:", Uuid::new_v4().simple());
    let stock = StockCounters::connect(&url, &prefix).await.unwrap();
    let product = Uuid::new_v4();
    stock.adjust(product, Uuid::new_v4(), 5).await.unwrap();
    let order = Uuid::now_v7();
    assert!(
        !stock.release(order, &[product]).await.unwrap(),
        "nothing to give back"
    );
    assert_eq!(
        stock
            .reserve(order, &[OrderLine::new(product, 2)])
            .await
            .unwrap(),
        ReserveOutcome::Tombstoned
    );
    assert_eq!(stock.available(&[product]).await.unwrap(), [5]);
    assert_eq!(stock.held(&[product]).await.unwrap(), [0]);

    // And the normal way round: reserve, release once, a second release gives nothing back.
    let second = Uuid::now_v7();
    assert_eq!(
        stock
            .reserve(second, &[OrderLine::new(product, 5)])
            .await
            .unwrap(),
        ReserveOutcome::Reserved
    );
    assert_eq!(
        stock
            .reserve(Uuid::now_v7(), &[OrderLine::new(product, 1)])
            .await
            .unwrap(),
        ReserveOutcome::Short {
            line: 0,
            available: 0
        }
    );
    assert!(stock.release(second, &[product]).await.unwrap());
    assert!(!stock.release(second, &[product]).await.unwrap());
    assert_eq!(stock.available(&[product]).await.unwrap(), [5]);
    // No key orderly wrote may expire on its own: only the saga ends a reservation.
    let mut redis = stock.connection();
    for key in [stock.reservation_key(order), stock.reservation_key(second)] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(ttl, -1, "{key} has no TTL");
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut redis)
        .await
        .unwrap();
}
