//! TLS to every store, against servers the tests own: the machine's Postgres (which serves TLS),
//! a `redis-server` of the test's own with a certificate the test makes, and TLS-terminating
//! proxies the test runs in front of MongoDB and RabbitMQ. And a certificate that the CA given
//! does not sign stops a process at start, naming the store.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use orderly_loadtest::{proxy, system::StoreUrls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};
use uuid::Uuid;

use crate::helpers::{Process, free_port, spawn_app, spawn_app_with, test_vars};

const PRICE: i64 = 10_000;

/// A certificate authority of the test's, and a server certificate it signs for `127.0.0.1`
/// and `localhost`, as PEM files in a directory removed on drop.
struct TestCa {
    dir: PathBuf,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl TestCa {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("orderly-tls-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "orderly test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let this = Self {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
            dir,
        };
        std::fs::write(&this.ca_file, ca_cert.pem()).unwrap();
        std::fs::write(&this.cert_file, server.pem()).unwrap();
        std::fs::write(&this.key_file, server_key.serialize_pem()).unwrap();
        this
    }

    fn ca(&self) -> &str {
        self.ca_file.to_str().unwrap()
    }

    fn acceptor(&self) -> TlsAcceptor {
        let certs = CertificateDer::pem_file_iter(&self.cert_file)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&self.key_file).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` that speaks only TLS, on a port of its own, killed on drop.
struct TlsRedis {
    process: std::process::Child,
    port: u16,
}

impl TlsRedis {
    async fn start(ca: &TestCa) -> Self {
        let port = free_port();
        let path = |p: &Path| p.to_str().unwrap().to_owned();
        let process = std::process::Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &path(&ca.cert_file)])
            .args(["--tls-key-file", &path(&ca.key_file)])
            .args(["--tls-ca-cert-file", &path(&ca.ca_file)])
            .args(["--tls-auth-clients", "no", "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir", &path(&ca.dir)])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        // Killed and waited for on drop, whether the port opens or not.
        let server = Self { process, port };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not open its TLS port {port}");
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Ends TLS with the test's certificate and passes the bytes on to `upstream` in clear, as a
/// managed service's TLS front does; counts the handshakes it completed.
struct TlsProxy {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    async fn start(ca: &TestCa, upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = ca.acceptor();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            addr,
            handshakes,
            task,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The settled status of an order placed for one unit of a new product, after a cancel when
/// `cancel` (so a reservation and its release both ran), with the product's stock after.
async fn checkout_and_maybe_cancel(app: &crate::helpers::TestApp, cancel: bool) -> (String, i64) {
    let product = app.create_product(PRICE, 5).await;
    let (_, token) = app.create_customer(10 * PRICE).await;
    let placed = app.place_order(&token, "tls-1", &[(product, 2)]).await;
    assert_eq!(placed.status, 202, "{}", placed.body);
    let order = placed.body["id"].as_str().unwrap().to_owned();
    let settled = app.settled_order(&order).await;
    assert_eq!(settled["status"], "confirmed", "{settled}");
    assert_eq!(app.available(product).await, 3);
    if !cancel {
        return ("confirmed".to_owned(), app.available(product).await);
    }
    let cancelled = app
        .post(
            &format!("/orders/{order}/cancel"),
            Some(&token),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    let ended = app.order_when(&order, |o| o["status"] == "cancelled").await;
    (
        ended["status"].as_str().unwrap().to_owned(),
        app.available(product).await,
    )
}

#[tokio::test]
async fn postgres_with_sslmode_require_is_encrypted_and_takes_a_checkout() {
    let (vars, _) = test_vars(&[]);
    let url = format!("{}?sslmode=require", vars["ORDERLY_DATABASE_URL"]);
    let app = spawn_app_with(&[("ORDERLY_DATABASE_URL", &url)]).await;
    let (ssl, version): (bool, Option<String>) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&app.stores.pg)
            .await
            .unwrap();
    assert!(ssl, "the app's own connection is not encrypted");
    assert!(version.is_some_and(|v| v.starts_with("TLS")));
    assert_eq!(checkout_and_maybe_cancel(&app, false).await.0, "confirmed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_reserves_and_releases_stock() {
    let ca = TestCa::new();
    let redis = TlsRedis::start(&ca).await;
    let app = spawn_app_with(&[
        ("ORDERLY_REDIS_URL", &redis.url()),
        ("ORDERLY_REDIS_CA_FILE", ca.ca()),
    ])
    .await;
    // The server has no plain port: every answer below came over TLS.
    let (status, available) = checkout_and_maybe_cancel(&app, true).await;
    assert_eq!(status, "cancelled");
    assert_eq!(available, 5, "the release gave the two units back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_and_rabbitmq_over_tls_carry_a_saga_and_its_history() {
    let ca = TestCa::new();
    let plain = StoreUrls::from_env();
    let mongo_upstream = proxy::target(&plain.mongodb, 27017).unwrap();
    let amqp_upstream = proxy::target(&plain.amqp, 5672).unwrap();
    let mongo = TlsProxy::start(&ca, mongo_upstream).await;
    let amqp = TlsProxy::start(&ca, amqp_upstream).await;
    // directConnection: the server names itself as a replica set member on its own port, which
    // the driver would go to next, around the proxy.
    let mongodb_url = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&tls=true&tlsCAFile={}",
        mongo.addr.port(),
        ca.ca()
    );
    let amqp_url = proxy::through(&plain.amqp, amqp.addr).replacen("amqp://", "amqps://", 1);
    let app = spawn_app_with(&[
        ("ORDERLY_MONGODB_URL", &mongodb_url),
        ("ORDERLY_AMQP_URL", &amqp_url),
        ("ORDERLY_AMQP_CA_FILE", ca.ca()),
    ])
    .await;
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.body["mongodb"], "ok", "{}", ready.body);
    assert_eq!(ready.body["rabbitmq"], "ok", "{}", ready.body);

    let product = app.create_product(PRICE, 5).await;
    let (_, token) = app.create_customer(10 * PRICE).await;
    let placed = app.place_order(&token, "tls-2", &[(product, 1)]).await;
    let order = placed.body["id"].as_str().unwrap().to_owned();
    assert_eq!(app.settled_order(&order).await["status"], "confirmed");
    let mut events = 0;
    for _ in 0..300 {
        let history = app
            .get(&format!("/orders/{order}/history"), app.admin())
            .await;
        events = history.body["events"].as_array().map_or(0, Vec::len);
        if events == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events, 4, "the history came through MongoDB over TLS");
    assert!(mongo.handshakes.load(Ordering::Relaxed) > 0);
    assert!(amqp.handshakes.load(Ordering::Relaxed) > 0);
}

/// Starts `orderly api` on `app`'s stores with `overrides`; returns its exit status and log once
/// it has stopped, or panics when it keeps running (as it would, retrying, for an outage).
async fn start_refused(
    app: &crate::helpers::TestApp,
    overrides: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    let s = &app.settings;
    let (mut vars, _) = test_vars(&[
        ("ORDERLY_DATABASE_URL", &s.database_url),
        ("ORDERLY_REDIS_PREFIX", &s.redis_prefix),
        ("ORDERLY_MONGODB_DATABASE", &s.mongodb_database),
        ("ORDERLY_AMQP_PREFIX", &s.amqp_prefix),
    ]);
    for (name, value) in overrides {
        vars.insert((*name).to_owned(), (*value).to_owned());
    }
    let log = std::env::temp_dir().join(format!("orderly-tls-{}.log", Uuid::new_v4()));
    let mut api = Process::start(&["api"], &vars, &log);
    for _ in 0..300 {
        if let Some(status) = api.0.try_wait().unwrap() {
            let text = std::fs::read_to_string(&log).unwrap();
            let _ = std::fs::remove_file(&log);
            return (status, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "orderly api still runs with {overrides:?}; see {}",
        log.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_ca_does_not_sign_stops_the_start_naming_the_store() {
    let app = spawn_app().await;
    let ca = TestCa::new();
    let other = TestCa::new();
    let redis = TlsRedis::start(&ca).await;

    let (status, log) = start_refused(
        &app,
        &[
            ("ORDERLY_REDIS_URL", &redis.url()),
            ("ORDERLY_REDIS_CA_FILE", other.ca()),
        ],
    )
    .await;
    assert!(!status.success());
    assert!(
        log.contains("redis: TLS: the server's certificate is not trusted"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // The machine's Postgres has a certificate of its own, which the test's CA did not sign.
    let database_url = format!("{}?sslmode=verify-ca", app.settings.database_url);
    let (status, log) = start_refused(
        &app,
        &[
            ("ORDERLY_DATABASE_URL", &database_url),
            ("ORDERLY_DATABASE_CA_FILE", other.ca()),
        ],
    )
    .await;
    assert!(!status.success());
    assert!(
        log.contains("postgres: TLS: the server's certificate is not trusted"),
        "{log}"
    );

    // A CA file that is not one stops the start before any store is tried.
    let (status, log) = start_refused(&app, &[("ORDERLY_AMQP_CA_FILE", "/etc/hostname")]).await;
    assert!(!status.success());
    assert!(
        log.contains("ORDERLY_AMQP_CA_FILE: /etc/hostname holds no PEM certificate"),
        "{log}"
    );
}
