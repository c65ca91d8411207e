//! `spawn_app()`: a real orderly on port 0, with its own Postgres database, Redis key prefix and
//! MongoDB database, all removed again when the `TestApp` is dropped.

use std::{collections::HashMap, net::SocketAddr};

use futures::TryStreamExt;
use mongodb::bson::doc;
use orderly::{
    app::Application,
    config::Settings,
    messaging::topology::Topology,
    metrics::Metrics,
    readiness::Readiness,
    roles::{Role, RoleContext},
    services::Stores,
};
use orderly_loadtest::system::{Namespace, StoreUrls};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

/// A body no role can decode, written as Postgres's `jsonb` prints it back.
pub const POISON: &str = "{\"not\": \"an envelope\"}";

pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_token: String,
    pub stores: Stores,
    pub settings: Settings,
    readiness: Readiness,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    workers: Vec<watch::Sender<bool>>,
    _isolation: Isolation,
}

/// A response's status, headers and body (JSON when it parses, `Null` otherwise).
pub struct Reply {
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a problem+json answer with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "body: {}",
            self.body
        );
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
    }
}

/// Settings for one test: the stores named by the environment's `ORDERLY_*` variables (as
/// `scripts/test` exports them; local defaults otherwise), with a database, key prefix and
/// MongoDB database of the test's own, an ephemeral port, and overrides on top.
pub fn test_settings(overrides: &[(&str, &str)]) -> (Settings, String) {
    let (vars, db_name) = test_vars(overrides);
    (
        Settings::from_vars(&vars).expect("test settings are valid"),
        db_name,
    )
}

/// The `ORDERLY_*` variables behind [`test_settings`], for tests that start real processes.
pub fn test_vars(overrides: &[(&str, &str)]) -> (HashMap<String, String>, String) {
    let id = Uuid::new_v4().simple().to_string();
    let db_name = format!("orderly_t_{id}");
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let host = env("ORDERLY_HTTP_ADDR")
        .and_then(|addr| addr.parse::<SocketAddr>().ok())
        .map_or_else(|| "127.0.0.1".to_owned(), |addr| addr.ip().to_string());
    let mut vars: HashMap<String, String> = HashMap::new();
    for name in [
        "ORDERLY_REDIS_URL",
        "ORDERLY_MONGODB_URL",
        "ORDERLY_AMQP_URL",
        "ORDERLY_ADMIN_TOKEN",
    ] {
        if let Some(value) = env(name) {
            vars.insert(name.to_owned(), value);
        }
    }
    vars.entry("ORDERLY_ADMIN_TOKEN".to_owned())
        .or_insert_with(|| format!("test-admin-{id}"));
    for (name, value) in [
        (
            "ORDERLY_HTTP_ADDR",
            SocketAddr::new(host.parse().unwrap(), 0).to_string(),
        ),
        (
            "ORDERLY_DATABASE_URL",
            format!("{}/{db_name}", StoreUrls::from_env().postgres),
        ),
        ("ORDERLY_PG_MAX_CONNECTIONS", "8".to_owned()),
        ("ORDERLY_REDIS_PREFIX", format!("orderly_t:{id}:")),
        ("ORDERLY_MONGODB_DATABASE", db_name.clone()),
        ("ORDERLY_STOCK_RECOVERY_SECS", "3600".to_owned()),
        ("ORDERLY_AMQP_PREFIX", format!("orderly_t.{id}")),
        ("ORDERLY_SWEEP_INTERVAL_MS", "200".to_owned()),
        ("ORDERLY_RELAY_POLL_MS", "200".to_owned()),
    ] {
        vars.insert(name.to_owned(), value);
    }
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    // A test may point the database elsewhere (through a proxy of its own); the database it
    // names is still the one to remove afterwards.
    let url = &vars["ORDERLY_DATABASE_URL"];
    let db_name = url.split('?').next().unwrap_or(url);
    let db_name = db_name.rsplit('/').next().unwrap_or(db_name).to_owned();
    (vars, db_name)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with_roles(overrides, &Role::ALL).await
}

/// An app running only some worker roles beside its API, so a test can hold a saga at a step.
pub async fn spawn_app_with_roles(overrides: &[(&str, &str)], roles: &[Role]) -> TestApp {
    let (settings, db_name) = test_settings(overrides);
    let app = Application::build_with_roles(settings.clone(), roles.to_vec())
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let stores = app.stores().clone();
    let readiness = app.readiness().clone();
    let settings_copy = settings.clone();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        admin_token: settings.admin_token.clone(),
        stores,
        settings,
        readiness,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        workers: Vec::new(),
        _isolation: Isolation {
            settings: settings_copy,
            db_name,
        },
    }
}

impl TestApp {
    /// Starts more worker roles on this app's stores, as another process would; they stop with
    /// the app.
    pub fn start_workers(&mut self, roles: &[Role]) {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        orderly::roles::spawn(
            self.role_context(),
            roles,
            &self.readiness,
            stopped,
            &mut tasks,
        );
        tokio::spawn(async move { while tasks.join_next().await.is_some() {} });
        self.workers.push(stop);
    }

    /// What a role of this app's needs, for a test that drives a role's handler by hand.
    pub fn role_context(&self) -> RoleContext {
        RoleContext {
            stores: self.stores.clone(),
            topology: Topology::new(&self.settings.amqp_prefix),
            metrics: std::sync::Arc::new(Metrics::default()),
            settings: std::sync::Arc::new(self.settings.clone()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request with any body bytes and headers, for the bad-input battery.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("request is sent");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body is read");
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("content-type", "application/json")]
        } else {
            &[]
        };
        self.raw(
            method,
            path,
            token,
            headers,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await
    }

    /// A write request that carries `If-Match: "1"` (so `PATCH` reaches its other checks) and the
    /// given content type, if any.
    pub async fn write(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut headers = vec![("if-match", "\"1\""), ("idempotency-key", "bad-input")];
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        self.raw(method, path, token, &headers, body).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(Method::POST, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::DELETE, path, token, None).await
    }

    /// A channel on the app's broker, with its topology declared already: the app declares it
    /// only as its consumers start.
    pub async fn broker(&self) -> (lapin::Connection, lapin::Channel, Topology) {
        let topology = Topology::new(&self.settings.amqp_prefix);
        let connection = orderly::messaging::connect(&self.settings.amqp_url, "test")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        topology.declare(&channel).await.unwrap();
        (connection, channel, topology)
    }

    /// Publishes `body` straight to `queue`, confirmed.
    pub async fn publish(&self, queue: &str, body: &[u8], properties: lapin::BasicProperties) {
        let (connection, channel, _) = self.broker().await;
        channel.confirm_select(Default::default()).await.unwrap();
        channel
            .basic_publish(
                "",
                queue,
                lapin::options::BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let _ = connection.close(200, "done").await;
    }

    /// The dead letters of `queue` through the API, once there are `count` of them (waiting up
    /// to ten seconds).
    pub async fn dead_letters_when(&self, queue: &str, count: usize) -> Vec<Value> {
        let mut items = Vec::new();
        for _ in 0..100 {
            let reply = self
                .get(&format!("/dead-letters?queue={queue}"), self.admin())
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            items = reply.body["items"].as_array().unwrap().clone();
            if items.len() == count {
                return items;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("{queue}: wanted {count} dead letters, found {items:?}");
    }

    /// Runs `orderly ARGS` against this app's stores and waits for it to exit.
    pub async fn orderly(&self, args: &[&str]) -> std::process::Output {
        let s = &self.settings;
        tokio::process::Command::new(env!("CARGO_BIN_EXE_orderly"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ORDERLY_ADMIN_TOKEN", &self.admin_token)
            .env("ORDERLY_DATABASE_URL", &s.database_url)
            .env("ORDERLY_REDIS_URL", &s.redis_url)
            .env("ORDERLY_REDIS_PREFIX", &s.redis_prefix)
            .env("ORDERLY_MONGODB_URL", &s.mongodb_url)
            .env("ORDERLY_MONGODB_DATABASE", &s.mongodb_database)
            .env("ORDERLY_AMQP_URL", &s.amqp_url)
            .env("ORDERLY_AMQP_PREFIX", &s.amqp_prefix)
            .env("ORDERLY_LOG", "warn")
            .output()
            .await
            .expect("orderly runs")
    }

    /// An `orderly worker` process running `roles` on this app's stores and names (with
    /// `overrides`), serving `/metrics` and `/readyz`; killed on drop.
    pub fn spawn_worker(&self, roles: &str, overrides: &[(&str, &str)]) -> Worker {
        let s = &self.settings;
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let (mut vars, _) = test_vars(&[
            ("ORDERLY_DATABASE_URL", &s.database_url),
            ("ORDERLY_REDIS_PREFIX", &s.redis_prefix),
            ("ORDERLY_MONGODB_DATABASE", &s.mongodb_database),
            ("ORDERLY_AMQP_PREFIX", &s.amqp_prefix),
            ("ORDERLY_ADMIN_TOKEN", &s.admin_token),
            ("ORDERLY_WORKER_METRICS_ADDR", &metrics_addr),
        ]);
        for (name, value) in overrides {
            vars.insert((*name).to_owned(), (*value).to_owned());
        }
        let log = std::env::temp_dir().join(format!("orderly-worker-{}.log", Uuid::new_v4()));
        Worker {
            process: Process::start(&["worker", "--roles", roles], &vars, &log),
            metrics_addr,
            log,
        }
    }

    pub async fn patch(&self, path: &str, if_match: &str, body: &Value) -> Reply {
        self.raw(
            Method::PATCH,
            path,
            Some(&self.admin_token),
            &[("content-type", "application/json"), ("if-match", if_match)],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub fn admin(&self) -> Option<&str> {
        Some(&self.admin_token)
    }

    /// `POST /products/{product}/stock-adjustments` as the admin.
    pub async fn adjust_stock(&self, product: Uuid, delta: i64, reason: &str) -> Reply {
        let path = format!("/products/{product}/stock-adjustments");
        self.post(
            &path,
            self.admin(),
            &json!({"delta": delta, "reason": reason}),
        )
        .await
    }

    /// The `/metrics` text, after checking it answers `200`.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_openmetrics(&response);
        response.text().await.unwrap()
    }

    /// A customer with `balance_minor` in the wallet: `(id, token)`.
    pub async fn create_customer(&self, balance_minor: i64) -> (Uuid, String) {
        let email = format!("{}@example.com", Uuid::new_v4().simple());
        let reply = self
            .post(
                "/customers",
                self.admin(),
                &json!({"name": "Budi", "email": email, "balance_minor": balance_minor}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        (
            reply.body["id"].as_str().unwrap().parse().unwrap(),
            reply.body["token"].as_str().unwrap().to_owned(),
        )
    }

    /// A product in category "Baju" with the given price and opening stock; returns its id.
    pub async fn create_product(&self, price_minor: i64, initial_stock: i64) -> Uuid {
        let body = json!({
            "sku": format!("SKU-{}", Uuid::new_v4().simple()),
            "name": "Kaos",
            "price_minor": price_minor,
            "category": "Baju",
            "description": "Bahan adem.",
            "initial_stock": initial_stock,
        });
        let reply = self.post("/products", self.admin(), &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body["id"].as_str().unwrap().parse().unwrap()
    }

    /// `POST /orders` as a customer, with an idempotency key, for `(product, quantity)` lines.
    pub async fn place_order(&self, token: &str, key: &str, lines: &[(Uuid, i64)]) -> Reply {
        let items: Vec<Value> = lines
            .iter()
            .map(|(p, q)| json!({"product_id": p, "quantity": q}))
            .collect();
        self.raw(
            Method::POST,
            "/orders",
            Some(token),
            &[
                ("content-type", "application/json"),
                ("idempotency-key", key),
            ],
            Some(json!({ "items": items }).to_string().into_bytes()),
        )
        .await
    }

    /// The order once it has left `pending` (waiting up to 30 s), as the admin sees it.
    pub async fn settled_order(&self, order_id: &str) -> Value {
        let reply = self
            .get(&format!("/orders/{order_id}?wait=30"), self.admin())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_ne!(reply.body["status"], "pending", "{}", reply.body);
        reply.body
    }

    /// The order once `done` holds for it, polling (for states `?wait=` does not wait for).
    pub async fn order_when(&self, order_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..300 {
            let reply = self.get(&format!("/orders/{order_id}"), self.admin()).await;
            if done(&reply.body) {
                return reply.body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("order {order_id} never reached the expected state");
    }

    /// A customer's wallet balance.
    pub async fn balance(&self, customer: Uuid) -> i64 {
        let reply = self
            .get(&format!("/customers/{customer}"), self.admin())
            .await;
        reply.body["balance_minor"].as_i64().unwrap()
    }

    /// What the catalog says is available (Redis).
    pub async fn available(&self, product: Uuid) -> i64 {
        let reply = self.get(&format!("/products/{product}"), None).await;
        reply.body["stock"].as_i64().unwrap()
    }

    /// Units held by live reservations (Redis).
    pub async fn held(&self, product: Uuid) -> i64 {
        self.stores.stock.held(&[product]).await.unwrap()[0]
    }

    /// Every row, key and document this app's stores hold, as one comparable value: a request
    /// that must change nothing leaves this exactly as it was.
    pub async fn snapshot(&self) -> Value {
        let pg = &self.stores.pg;
        let tables = [
            "categories",
            "products",
            "customers",
            "deposits",
            "stock_levels",
            "stock_adjustments",
            "orders",
            "order_items",
            "sagas",
            "saga_log",
            "idempotency_keys",
            "outbox",
            "inbox",
            "payments",
        ];
        let mut postgres = serde_json::Map::new();
        for table in tables {
            let rows: Vec<(String,)> = sqlx::query_as(&format!(
                "SELECT row_to_json(t)::text FROM {table} t ORDER BY 1"
            ))
            .fetch_all(pg)
            .await
            .unwrap();
            postgres.insert(
                table.into(),
                rows.into_iter().map(|(r,)| Value::String(r)).collect(),
            );
        }

        let mut redis = self.stores.stock.connection();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.settings.redis_prefix))
            .query_async(&mut redis)
            .await
            .unwrap();
        let mut redis_state = std::collections::BTreeMap::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap();
            let value = if kind == "hash" {
                let fields: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                Some(format!("{fields:?}"))
            } else {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<String>>(&mut redis)
                    .await
                    .unwrap()
            };
            redis_state.insert(key, value);
        }

        let db = self.stores.docs.database();
        let mut mongo = serde_json::Map::new();
        for name in db.list_collection_names().await.unwrap() {
            let docs: Vec<mongodb::bson::Document> = db
                .collection(&name)
                .find(doc! {})
                .sort(doc! {"_id": 1})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            mongo.insert(name, Value::String(format!("{docs:?}")));
        }
        json!({"postgres": postgres, "redis": redis_state, "mongodb": mongo})
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for stop in self.workers.drain(..) {
            let _ = stop.send(true);
        }
        // The stores are removed when `_isolation`, the last field, drops next.
    }
}

/// A test's own database, key prefix, MongoDB database and RabbitMQ names, removed on drop.
pub struct Isolation {
    pub settings: Settings,
    pub db_name: String,
}

impl Drop for Isolation {
    fn drop(&mut self) {
        let s = &self.settings;
        let namespace = Namespace {
            database: self.db_name.clone(),
            redis_prefix: s.redis_prefix.clone(),
            mongodb_database: s.mongodb_database.clone(),
            amqp_prefix: s.amqp_prefix.clone(),
        };
        // The machine's stores, not the URLs the app was given: a test may have pointed it at a
        // proxy or a TLS server of its own that is gone by now; the names are what it used.
        let urls = StoreUrls::from_env();
        // Drop cannot await; clean up on a runtime of our own, on a thread of our own (the
        // app's clients belong to the test's runtime).
        let cleanup = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(namespace.remove(&urls));
        });
        let _ = cleanup.join();
    }
}

/// An `orderly worker` a test started ([`TestApp::spawn_worker`]).
pub struct Worker {
    pub process: Process,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: String,
    pub log: std::path::PathBuf,
}

impl Worker {
    /// Its `/metrics` text, or `None` while it does not answer.
    pub async fn metrics(&self) -> Option<String> {
        let response = reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .ok()?;
        response.text().await.ok()
    }
}

/// A real `orderly` process of the test's, killed if the test ends before it stops.
pub struct Process(pub std::process::Child);

impl Process {
    /// Starts the binary with `args` and exactly `vars` (plus `PATH`), logging to `log`.
    pub fn start(args: &[&str], vars: &HashMap<String, String>, log: &std::path::Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_orderly"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars)
            .env("ORDERLY_LOG", "warn")
            // orderly logs to stdout; a crash's message goes to stderr.
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("orderly starts");
        Self(child)
    }

    /// SIGTERM, then the exit status once it has drained.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("orderly did not stop within 30 s of SIGTERM");
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The repository's root where cargo runs the tests. Not `env!`: a test binary built in another
/// checkout of the same sources is reused by cargo, with that checkout's path compiled in.
pub fn repository_root() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}

/// A `/metrics` answer says what its body is: OpenMetrics text, which ends in `# EOF`.
pub fn assert_openmetrics(response: &reqwest::Response) {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
}
