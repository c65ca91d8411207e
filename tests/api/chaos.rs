//! A short chaos run inside the suite: `orderly api` and two `orderly worker`s under retrying
//! clients, with every kind of fault the proxy mode has — the processes killed with SIGKILL,
//! and Postgres, Redis, MongoDB and RabbitMQ cut, reset, frozen or slowed on proxies this test
//! owns — then every invariant and every promise made to the clients checked. The run has its
//! own namespace in every store and touches no server: tests beside it see nothing.

use std::collections::HashSet;
use std::time::Duration;

use orderly_loadtest::chaos::{ChaosConfig, Fault, FaultMode, chaos};
use orderly_loadtest::system::StoreUrls;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_between_orderly_and_its_stores_break_no_invariant_and_no_promise() {
    let out = std::env::temp_dir().join(format!("orderly-chaos-{}", Uuid::new_v4().simple()));
    let config = ChaosConfig {
        workers: 2,
        users: 6,
        duration: Duration::from_secs(48),
        seed: 11,
        mode: FaultMode::Proxy,
        fault_length: Duration::from_secs(4),
        binary: env!("CARGO_BIN_EXE_orderly").into(),
        urls: StoreUrls::from_env(),
        out_dir: out.clone(),
        // Steps retried within seconds, so sagas a fault interrupted end soon after it.
        settings: [
            ("ORDERLY_STEP_TIMEOUT_MS", "1500"),
            ("ORDERLY_SWEEP_INTERVAL_MS", "200"),
            ("ORDERLY_RELAY_POLL_MS", "200"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec(),
        keep: false,
        command: "cargo test chaos".into(),
    };
    let report = chaos(config).await.expect("the chaos run completes");
    let markdown = report.markdown();
    let _ = std::fs::remove_dir_all(&out);

    assert!(report.passed(), "{markdown}");
    let kinds: HashSet<String> = report
        .faults
        .iter()
        .map(|f| match f.planned.fault {
            Fault::KillWorker { .. } => "kill_worker".to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds.len(),
        7,
        "every kind of fault came: {kinds:?}\n{markdown}"
    );
    let clients = &report.clients;
    assert!(clients.accepted > 100, "{markdown}");
    assert!(
        clients.cancels_accepted > 0 && clients.cancels_refused > 0,
        "{markdown}"
    );
    assert!(
        clients.retries > 0,
        "the faults reached the clients\n{markdown}"
    );
}
