//! The system under test: orderly's processes, started from its binary on a namespace of its own
//! (a fresh Postgres database, Redis key prefix, MongoDB database and RabbitMQ names), so a run
//! never mixes with another run, the tests, or a `scripts/up` server on the same stores.

use crate::quota::{CpuQuota, QuotaReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mongodb::Database;
use orderly::messaging::topology::Topology;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};

use crate::client::Api;

/// Where the stores are: the same variables, and defaults, as orderly's own settings.
#[derive(Debug, Clone)]
pub struct StoreUrls {
    /// A Postgres server URL without a database (`postgres://postgres@127.0.0.1:5432`).
    pub postgres: String,
    pub redis: String,
    pub mongodb: String,
    pub amqp: String,
}

impl StoreUrls {
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.into())
        };
        let database = var(
            "ORDERLY_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/orderly",
        );
        let server = database.split('?').next().unwrap_or_default();
        let server = server.rsplit_once('/').map_or(server, |(s, _)| s);
        Self {
            postgres: server.to_owned(),
            redis: var("ORDERLY_REDIS_URL", "redis://127.0.0.1:6379"),
            mongodb: var("ORDERLY_MONGODB_URL", "mongodb://127.0.0.1:27017"),
            amqp: var("ORDERLY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        }
    }
}

/// One run's names in every store.
#[derive(Debug, Clone)]
pub struct Namespace {
    pub database: String,
    pub redis_prefix: String,
    pub mongodb_database: String,
    pub amqp_prefix: String,
}

impl Namespace {
    /// Names derived from `tag` (letters, digits and `_` only), prefixed by `kind` (`orderly_lt`
    /// for load runs, `orderly_t` for tests) so a cleanup script can find leftovers.
    pub fn new(kind: &str, tag: &str) -> Self {
        Self {
            database: format!("{kind}_{tag}"),
            redis_prefix: format!("{kind}:{tag}:"),
            mongodb_database: format!("{kind}_{tag}"),
            amqp_prefix: format!("{kind}.{tag}"),
        }
    }

    pub fn database_url(&self, urls: &StoreUrls) -> String {
        format!("{}/{}", urls.postgres, self.database)
    }

    /// The settings that point an orderly process at this namespace.
    pub fn env(&self, urls: &StoreUrls) -> Vec<(String, String)> {
        [
            ("ORDERLY_DATABASE_URL", self.database_url(urls)),
            ("ORDERLY_REDIS_URL", urls.redis.clone()),
            ("ORDERLY_REDIS_PREFIX", self.redis_prefix.clone()),
            ("ORDERLY_MONGODB_URL", urls.mongodb.clone()),
            ("ORDERLY_MONGODB_DATABASE", self.mongodb_database.clone()),
            ("ORDERLY_AMQP_URL", urls.amqp.clone()),
            ("ORDERLY_AMQP_PREFIX", self.amqp_prefix.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Removes everything the namespace holds in every store. Best effort: a store that is down
    /// keeps its leftovers, which `scripts/test` sweeps up later.
    pub async fn remove(&self, urls: &StoreUrls) {
        if let Ok(mut conn) = PgConnection::connect(&format!("{}/postgres", urls.postgres)).await {
            let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database);
            let _ = sqlx::query(&drop).execute(&mut conn).await;
        }
        if let Ok(client) = redis::Client::open(urls.redis.as_str())
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
        {
            let _ = delete_keys(&mut conn, &self.redis_prefix).await;
        }
        if let Ok(connection) = orderly::messaging::connect(&urls.amqp, "orderly-cleanup").await {
            if let Ok(channel) = connection.create_channel().await {
                let _ = Topology::new(&self.amqp_prefix).delete(&channel).await;
            }
            let _ = connection.close(200, "done").await;
        }
        if let Ok(client) = mongodb::Client::with_uri_str(&urls.mongodb).await {
            let _ = client.database(&self.mongodb_database).drop().await;
        }
    }

    pub async fn postgres(&self, urls: &StoreUrls, connections: u32) -> anyhow::Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(connections)
            .connect(&self.database_url(urls))
            .await?)
    }

    pub async fn mongodb(&self, urls: &StoreUrls) -> anyhow::Result<Database> {
        let client = mongodb::Client::with_uri_str(&urls.mongodb).await?;
        Ok(client.database(&self.mongodb_database))
    }
}

/// Deletes every key under `prefix`, scanning rather than blocking Redis with `KEYS`.
pub async fn delete_keys(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> redis::RedisResult<()> {
    loop {
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<String> = redis::cmd("SCAN")
                .cursor_arg(0)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .clone()
                .iter_async(conn)
                .await?;
            let mut keys = Vec::new();
            while let Some(key) = futures::StreamExt::next(&mut iter).await {
                keys.push(key?);
                if keys.len() == 1000 {
                    break;
                }
            }
            keys
        };
        if keys.is_empty() {
            return Ok(());
        }
        redis::cmd("DEL").arg(&keys).query_async::<()>(conn).await?;
    }
}

/// How orderly's roles are laid out over processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `orderly run`: the API and every role in one process.
    Single,
    /// `orderly api` plus this many `orderly worker` processes, each running every role, and
    /// each in a CPU quota of its own of `worker_millicpu` thousandths of a CPU when given (as a
    /// pod's CPU limit would hold it).
    Split {
        workers: usize,
        worker_millicpu: Option<u32>,
    },
}

impl Layout {
    pub fn describe(self) -> String {
        match self {
            Self::Single => "1 × `orderly run` (API and all roles in one process)".into(),
            Self::Split {
                workers,
                worker_millicpu: None,
            } => format!("`orderly api` + {workers} × `orderly worker` (all roles)"),
            Self::Split {
                workers,
                worker_millicpu: Some(m),
            } => format!(
                "`orderly api` + {workers} × `orderly worker` (all roles), each limited to {:.3} CPU",
                f64::from(m) / 1000.0
            ),
        }
    }
}

/// orderly's processes for one run, on their own namespace.
pub struct System {
    pub namespace: Namespace,
    pub urls: StoreUrls,
    pub admin_token: String,
    pub base_url: String,
    binary: PathBuf,
    port: u16,
    /// Settings every process gets on top of the namespace's.
    settings: Vec<(String, String)>,
    processes: Vec<Running>,
    log_dir: PathBuf,
}

/// One orderly process: its name (`api`, `worker-1`, …), how it was started, and it.
struct Running {
    name: String,
    args: Vec<String>,
    child: Child,
    /// Where it serves `/metrics`.
    metrics: String,
    /// Settings of its own (a worker's metrics address), kept for a restart.
    env: Vec<(&'static str, String)>,
    /// Its CPU quota, if the layout gives it one; a restart goes back into it.
    quota: Option<CpuQuota>,
}

impl System {
    /// Migrates a fresh database and starts the processes, ready to serve when this returns.
    /// The processes reach the stores at `urls`, which may be proxies in front of them, with
    /// `settings` (`ORDERLY_*` pairs) on top of the namespace's.
    pub async fn start(
        binary: &Path,
        namespace: Namespace,
        urls: StoreUrls,
        layout: Layout,
        log_dir: &Path,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut system = Self {
            admin_token: format!("load-test-admin-{}", uuid::Uuid::new_v4().simple()),
            base_url: format!("http://127.0.0.1:{port}"),
            namespace,
            urls,
            binary: binary.to_owned(),
            port,
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            processes: Vec::new(),
            log_dir: log_dir.to_owned(),
        };
        let migrate = system
            .command("migrate", &["migrate"], false)?
            .status()
            .await?;
        if !migrate.success() {
            bail!(
                "orderly migrate failed ({migrate}); see {}",
                log_dir.join("migrate.log").display()
            );
        }
        match layout {
            Layout::Single => system.spawn("run", &["run"])?,
            Layout::Split {
                workers,
                worker_millicpu,
            } => {
                system.spawn("api", &["api"])?;
                for i in 1..=workers {
                    let name = format!("worker-{i}");
                    system.spawn(&name, &["worker"])?;
                    if let Some(m) = worker_millicpu {
                        let cgroup = format!("{}-{name}", system.namespace.database);
                        let quota = CpuQuota::create(&cgroup, f64::from(m) / 1000.0)?;
                        let running = system.process(&name)?;
                        if let Some(pid) = running.child.id() {
                            quota.add(pid)?;
                        }
                        running.quota = Some(quota);
                    }
                }
            }
        }
        system.wait_ready().await?;
        Ok(system)
    }

    /// The command for one process; `append` keeps the log of an earlier run of it.
    fn command(&self, name: &str, args: &[&str], append: bool) -> anyhow::Result<Command> {
        let path = self.log_dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(path)?;
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .envs(self.namespace.env(&self.urls))
            .env("ORDERLY_HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            .env("ORDERLY_ADMIN_TOKEN", &self.admin_token)
            .env("ORDERLY_DEV_MODE", "false")
            .env(
                "ORDERLY_LOG",
                std::env::var("ORDERLY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.settings.iter().cloned())
            .stdin(Stdio::null())
            // orderly logs to stdout; a crash's message goes to stderr.
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        Ok(command)
    }

    fn spawn(&mut self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        // The API's metrics are on its HTTP port; a worker serves its own on a port of its own.
        let (metrics, extra) = if args.first() == Some(&"worker") {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            (
                format!("http://127.0.0.1:{port}/metrics"),
                vec![("ORDERLY_WORKER_METRICS_ADDR", format!("127.0.0.1:{port}"))],
            )
        } else {
            (format!("{}/metrics", self.base_url), Vec::new())
        };
        let child = self
            .command(name, args, false)?
            .envs(extra.clone())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.processes.push(Running {
            name: name.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child,
            metrics,
            env: extra,
            quota: None,
        });
        Ok(())
    }

    /// Each worker in a CPU quota: its name, pid, quota and a reader of its throttling.
    pub fn quotas(&self) -> Vec<(String, u32, f64, QuotaReader)> {
        self.processes
            .iter()
            .filter_map(|p| {
                let quota = p.quota.as_ref()?;
                Some((p.name.clone(), p.child.id()?, quota.cpus, quota.reader()))
            })
            .collect()
    }

    /// Where each process serves `/metrics`.
    pub fn metrics_urls(&self) -> Vec<String> {
        self.processes.iter().map(|p| p.metrics.clone()).collect()
    }

    /// The names of the processes, in start order (`api` first in a split layout).
    pub fn names(&self) -> Vec<String> {
        self.processes.iter().map(|p| p.name.clone()).collect()
    }

    /// SIGKILL to the named process: it dies at once, mid-whatever it was doing.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let process = self.process(name)?;
        process.child.kill().await?;
        Ok(())
    }

    /// Starts the named process again, as it was started first, if it is not running.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let (args, env) = {
            let process = self.process(name)?;
            if process.child.try_wait()?.is_none() {
                return Ok(());
            }
            (process.args.clone(), process.env.clone())
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = self
            .command(name, &args, true)?
            .envs(env)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let running = self.process(name)?;
        if let (Some(quota), Some(pid)) = (&running.quota, child.id()) {
            quota.add(pid)?;
        }
        running.child = child;
        Ok(())
    }

    fn process(&mut self, name: &str) -> anyhow::Result<&mut Running> {
        self.processes
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no process named {name}"))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let api = Api::new(&self.base_url, 1)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            for Running { name, child, .. } in &mut self.processes {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "orderly {name} exited during start-up ({status}); see {}",
                        self.log_dir.join(format!("{name}.log")).display()
                    );
                }
            }
            if api.ready().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("orderly was not ready within 60 s")
    }

    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().filter_map(|p| p.child.id()).collect()
    }

    /// Fails if a process has died: a run that lost a process measured something else.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for Running { name, child, .. } in &mut self.processes {
            if let Some(status) = child.try_wait()? {
                bail!("orderly {name} exited during the run ({status})");
            }
        }
        Ok(())
    }

    /// Stops every process (see [`Self::stop`]) and judges how: every one must drain and exit
    /// 0 on SIGTERM.
    pub async fn stop_checked(&mut self) -> crate::verify::Check {
        let mut shutdown = crate::verify::Check::new(
            "clean_shutdown",
            "every orderly process drains and exits 0 on SIGTERM",
        );
        shutdown.checked = 1;
        for problem in self.stop().await {
            shutdown.violate(|| problem);
        }
        shutdown
    }

    /// SIGTERM to every process, then waits for each to drain (SIGKILL after 30 s).
    pub async fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for Running { child, .. } in &self.processes {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
        }
        for Running {
            name, mut child, ..
        } in self.processes.drain(..)
        {
            match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => problems.push(format!("orderly {name} exited with {status}")),
                Ok(Err(e)) => problems.push(format!("orderly {name}: {e}")),
                Err(_) => {
                    let _ = child.kill().await;
                    problems.push(format!(
                        "orderly {name} did not stop within 30 s of SIGTERM"
                    ));
                }
            }
        }
        problems
    }
}
