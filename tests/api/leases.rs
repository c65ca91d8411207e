//! Once per cluster: the relay, the deadline sweep and the stock recovery run in one process
//! at a time, under a lease another process takes over when the holder dies.

use std::time::{Duration, Instant};

use orderly::roles::Role;

use crate::helpers::{Worker, spawn_app_with_roles};

const PRICE: i64 = 5_000;

/// Whether a worker's `/metrics` text says it holds `duty`'s lease.
fn holds(metrics: &str, duty: &str) -> bool {
    let line = format!("orderly_lease_held{{duty=\"{duty}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .is_some_and(|value| value.trim() == "1")
}

/// Waits until every one of `workers` answers and exactly one holds every duty of `duties`, for
/// up to 30 s; returns its index.
async fn one_holder(workers: &[&Worker], duties: &[&str]) -> usize {
    for _ in 0..300 {
        let mut answering = 0;
        let mut holders = Vec::new();
        for (i, worker) in workers.iter().enumerate() {
            let Some(metrics) = worker.metrics().await else {
                continue;
            };
            answering += 1;
            if duties.iter().all(|duty| holds(&metrics, duty)) {
                holders.push(i);
            }
        }
        if holders.len() == 1 && answering == workers.len() {
            return holders[0];
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no single holder of {duties:?} within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_runs_the_clusters_duties_and_another_takes_over_when_it_is_killed() {
    // The API and the consumers here; the relay, the deadline sweep and the stock recovery only
    // in the two worker processes, which contend for them.
    let app = spawn_app_with_roles(&[], &[Role::Payments, Role::History]).await;
    let duties = ["relay", "deadline_sweep", "stock_recovery"];
    let first = app.spawn_worker("relay,orchestrator,inventory", &[]);
    // The first takes every lease before the second starts, so one process holds them all.
    one_holder(&[&first], &duties).await;
    let second = app.spawn_worker("relay,orchestrator,inventory", &[]);
    let mut workers = [first, second];
    let holder = one_holder(&[&workers[0], &workers[1]], &duties).await;
    assert_eq!(holder, 0, "the second worker took a lease the first held");

    let product = app.create_product(PRICE, 10).await;
    let (_, token) = app.create_customer(10 * PRICE).await;
    let placed = app.place_order(&token, "before", &[(product, 1)]).await;
    let order = placed.body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.settled_order(&order).await["status"], "confirmed");

    // kill -9: no shutdown, no unlock; Postgres ends the session with the socket.
    let killed = Instant::now();
    workers[0].process.0.kill().unwrap();
    let _ = workers[0].process.0.wait();
    let survivor = &workers[1];
    one_holder(&[survivor], &duties).await;
    let took_over = killed.elapsed();

    let placed = app.place_order(&token, "after", &[(product, 1)]).await;
    let order = placed.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.settled_order(&order).await["status"],
        "confirmed",
        "the survivor relays; see {}",
        survivor.log.display()
    );
    let text = survivor.metrics().await.unwrap();
    assert!(
        text.contains(r#"orderly_leases_taken_total{duty="relay"} 1"#),
        "{text}"
    );
    eprintln!("the survivor took the leases over {took_over:?} after the kill");
    for worker in &workers {
        let _ = std::fs::remove_file(&worker.log);
    }
}
