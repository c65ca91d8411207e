//! The chaos run: `orderly api` and N `orderly worker` processes under load from retrying
//! clients, while a seeded schedule of faults hits them — processes killed with SIGKILL, the
//! broker stopped, MongoDB frozen, Postgres restarted — followed, once every fault is undone,
//! by the verification of every invariant and of the contract the clients were given.
//!
//! Faults reach the stores one of two ways. `services` acts on the servers themselves
//! (`rabbitmqctl stop_app`, SIGSTOP of the MongoDB server, `pg_ctlcluster restart`): the real
//! thing, for a machine nobody else is using. `proxy` puts a TCP proxy of the run's own in front
//! of each store and breaks the link there (cut, reset, freeze, slow), so a run disturbs nothing
//! but its own processes: that is how the test suite runs it. Either way every fault is undone
//! when the run ends, however it ends.
//!
//! The clients behave as careful users of the contract: a checkout whose answer was lost or was
//! a `5xx`/`429` is sent again with the same `Idempotency-Key`, and so is a cancel. What each
//! was told is checked against what the stores hold at the end: every order answered `200`/`202`
//! exists, one per key; every cancel answered `202` ended `cancelled/cancelled_by_customer`; a
//! cancel answered `409` (with no earlier attempt that may have landed) recorded nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use uuid::Uuid;

use crate::client::{Answer, Api};
use crate::proxy::{self, Link, Proxy};
use crate::scenario::{Scenario, Shape, World};
use crate::system::{Layout, Namespace, StoreUrls, System};
use crate::verify::{self, Check, Stores, Verification};

/// How faults reach the stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// On the servers themselves: only on a machine nobody else is using.
    Services,
    /// On proxies of the run's own between orderly and each store.
    Proxy,
}

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub workers: usize,
    pub users: usize,
    /// Seconds of load; faults are scheduled inside it.
    pub duration: Duration,
    pub seed: u64,
    pub mode: FaultMode,
    /// How long a fault lasts, at most (each draws between half and all of it).
    pub fault_length: Duration,
    pub binary: PathBuf,
    pub urls: StoreUrls,
    pub out_dir: PathBuf,
    /// `ORDERLY_*` settings for every orderly process (shorter step timeouts in tests, say).
    pub settings: Vec<(String, String)>,
    pub keep: bool,
    pub command: String,
}

/// What one fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL to a worker process; it is started again when the fault ends.
    KillWorker { worker: usize },
    /// SIGKILL to the API process; it is started again when the fault ends.
    KillApi,
    /// RabbitMQ stops answering.
    BrokerDown,
    /// MongoDB stops moving bytes with its connections open.
    MongoFrozen,
    /// Postgres restarts: every connection is terminated, new ones are refused meanwhile.
    PostgresRestart,
    /// Every connection to Redis is reset at once (proxy only).
    RedisReset,
    /// Every chunk carried to or from Postgres is held 50 ms: a congested link (proxy only).
    PostgresSlow,
}

impl Fault {
    pub fn describe(self) -> String {
        match self {
            Self::KillWorker { worker } => format!("kill -9 worker-{worker}"),
            Self::KillApi => "kill -9 api".into(),
            Self::BrokerDown => "RabbitMQ stopped".into(),
            Self::MongoFrozen => "MongoDB frozen".into(),
            Self::PostgresRestart => "Postgres restarted".into(),
            Self::RedisReset => "Redis connections reset".into(),
            Self::PostgresSlow => "Postgres link slowed (each chunk held 50 ms)".into(),
        }
    }
}

/// A fault on the schedule: when it starts and how long it lasts, from the load's start.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Planned {
    #[serde(flatten)]
    pub fault: Fault,
    pub at_s: f64,
    pub lasts_s: f64,
}

/// The seeded schedule: faults one after another from the third second, every kind the mode
/// can inject before any repeats, each lasting up to `length`, with a breather between them.
pub fn schedule(
    seed: u64,
    mode: FaultMode,
    workers: usize,
    duration: Duration,
    length: Duration,
) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kinds = vec![
        Fault::KillApi,
        Fault::BrokerDown,
        Fault::MongoFrozen,
        Fault::PostgresRestart,
    ];
    kinds.extend((1..=workers).map(|worker| Fault::KillWorker { worker }));
    if mode == FaultMode::Proxy {
        kinds.extend([Fault::RedisReset, Fault::PostgresSlow]);
    }
    let end = duration.as_secs_f64() - 2.0;
    let length = length.as_secs_f64();
    let mut planned = Vec::new();
    let mut at = 3.0;
    'schedule: loop {
        kinds.shuffle(&mut rng);
        for &fault in &kinds {
            let lasts = rng.random_range(length / 2.0..=length);
            if at + lasts > end {
                break 'schedule;
            }
            planned.push(Planned {
                fault,
                at_s: at,
                lasts_s: lasts,
            });
            at += lasts + rng.random_range(1.0..=3.0);
        }
    }
    planned
}

/// What happened to one fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    #[serde(flatten)]
    pub planned: Planned,
    pub started_s: f64,
    pub ended_s: f64,
    /// Set when injecting or undoing it went wrong.
    pub error: Option<String>,
}

/// What the clients were told, in numbers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientTotals {
    pub checkouts: u64,
    pub accepted: u64,
    pub refused: u64,
    /// Checkouts answered only once the faults were over.
    pub resolved_after: u64,
    pub cancels: u64,
    pub cancels_accepted: u64,
    pub cancels_refused: u64,
    /// Requests sent again after a lost answer, a `5xx` or a `429`.
    pub retries: u64,
    /// Answers by status (`transport_error` for none).
    pub answers: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub command: String,
    pub started_at: String,
    pub mode: FaultMode,
    pub workers: usize,
    pub users: usize,
    pub duration_s: f64,
    pub seed: u64,
    pub faults: Vec<FaultRecord>,
    pub clients: ClientTotals,
    /// Final states of every order, from Postgres (`status` or `status/reason`).
    pub outcomes: BTreeMap<String, u64>,
    pub verification: Verification,
}

impl ChaosReport {
    pub fn passed(&self) -> bool {
        self.verification.passed() && self.faults.iter().all(|f| f.error.is_none())
    }

    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut md = String::new();
        let verdict = if self.passed() {
            "**PASSED**: every invariant and the clients' contract held"
        } else {
            "**FAILED**"
        };
        let _ = writeln!(md, "# Chaos run\n\n{verdict}\n");
        let _ = writeln!(md, "- Command: `{}`", self.command);
        let _ = writeln!(md, "- Started: {}", self.started_at);
        let _ = writeln!(
            md,
            "- orderly: `orderly api` + {} × `orderly worker`; {} retrying clients for {} s; \
             faults on the {:?} (seed {})\n",
            self.workers, self.users, self.duration_s, self.mode, self.seed
        );
        let _ = writeln!(
            md,
            "## Faults\n\n| from s | to s | fault | problem |\n|---:|---:|---|---|"
        );
        for f in &self.faults {
            let _ = writeln!(
                md,
                "| {:.1} | {:.1} | {} | {} |",
                f.started_s,
                f.ended_s,
                f.planned.fault.describe(),
                f.error.as_deref().unwrap_or("")
            );
        }
        let c = &self.clients;
        let _ = writeln!(
            md,
            "\n## Clients\n\n{} checkouts: {} accepted ({} only after the faults), {} refused; \
             {} cancels: {} accepted, {} refused; {} requests sent again.\n\nAnswers: {}\n",
            c.checkouts,
            c.accepted,
            c.resolved_after,
            c.refused,
            c.cancels,
            c.cancels_accepted,
            c.cancels_refused,
            c.retries,
            c.answers
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(md, "## Outcomes\n\n| final state | orders |\n|---|---:|");
        for (state, n) in &self.outcomes {
            let _ = writeln!(md, "| {state} | {n} |");
        }
        let _ = writeln!(
            md,
            "\n## Verification (after {} ms to go quiet)\n\n| check | invariant | checked | violations |\n|---|---|---:|---:|",
            self.verification.quiet_after_ms
        );
        for check in &self.verification.checks {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                check.name, check.invariant, check.checked, check.violations
            );
        }
        for check in self.verification.violations() {
            let _ = writeln!(md, "\n`{}`:", check.name);
            for example in &check.examples {
                let _ = writeln!(md, "- {example}");
            }
        }
        md
    }

    pub fn write(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        Ok(())
    }
}

/// One chaos run, start to finish; the stores are restored and the run's namespace removed
/// whatever happens (unless `keep`).
pub async fn chaos(config: ChaosConfig) -> anyhow::Result<ChaosReport> {
    let tag = format!(
        "{}_{}",
        Utc::now().format("%Y%m%d%H%M%S"),
        &Uuid::new_v4().simple().to_string()[..6]
    );
    let namespace = Namespace::new("orderly_lt", &tag);
    let injector = Injector::new(config.mode, &config.urls).await?;
    // Interrupted, the run stops where it is (its processes die with it) and the stores are
    // restored all the same.
    let result = tokio::select! {
        result = chaos_in(&config, &namespace, &injector) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    injector.restore_all().await;
    if !config.keep {
        namespace.remove(&config.urls).await;
    }
    let report = result?;
    report.write(&config.out_dir)?;
    Ok(report)
}

async fn chaos_in(
    config: &ChaosConfig,
    namespace: &Namespace,
    injector: &Injector,
) -> anyhow::Result<ChaosReport> {
    let settings: Vec<(&str, &str)> = config
        .settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut system = System::start(
        &config.binary,
        namespace.clone(),
        injector.urls(&config.urls),
        Layout::Split {
            workers: config.workers,
            worker_millicpu: None,
        },
        &config.out_dir.join("logs"),
        &settings,
    )
    .await?;
    let result = load_faults_and_verify(config, injector, &mut system).await;
    let shutdown = system.stop_checked().await;
    let mut report = result?;
    report.verification.checks.push(shutdown);
    Ok(report)
}

async fn load_faults_and_verify(
    config: &ChaosConfig,
    injector: &Injector,
    system: &mut System,
) -> anyhow::Result<ChaosReport> {
    let started_at = Utc::now();
    let mut rng = StdRng::seed_from_u64(config.seed);
    // Short enough that a request into a frozen store counts as a lost answer and is retried.
    let api = Api::with_timeout(&system.base_url, config.users + 8, Duration::from_secs(5))?;
    let world =
        Arc::new(World::create(&api, &system.admin_token, shape(config), &mut rng, 8).await?);
    let stores = Stores::connect(&system.namespace, &config.urls).await?;
    let plan = schedule(
        config.seed,
        config.mode,
        config.workers,
        config.duration,
        config.fault_length,
    );

    let start = Instant::now();
    let until = start + config.duration;
    let buyers = futures::future::join_all((0..config.users).map(|user| {
        let (api, world) = (api.clone(), world.clone());
        let rng = StdRng::seed_from_u64(config.seed.wrapping_add(1 + user as u64));
        tokio::spawn(async move { buy(&api, &world, rng, until).await })
    }));
    let (faults, traces) = tokio::join!(run_schedule(&plan, injector, system, start), buyers);
    // Whatever the schedule left undone (a failed restore) is undone now, before judging.
    injector.restore_all().await;
    for name in system.names() {
        system.restart(&name)?;
    }

    let mut traces: Vec<Trace> = traces
        .into_iter()
        .map(|t| t.context("a client task failed"))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    // A checkout with no answer yet may have been accepted: ask again, with its key, now that
    // the stores are back. Its answer is the one the client keeps.
    for trace in traces.iter_mut().filter(|t| t.placed.is_none()) {
        let buyer = &world.customers[trace.customer];
        let answer = send_until_answered(Instant::now() + Duration::from_secs(60), || {
            api.place_order(&buyer.token, &trace.key, &trace.lines)
        })
        .await;
        trace.retries += answer.retries;
        trace.placed = answer.last;
        trace.resolved_after = true;
    }

    let quiet_after = verify::wait_until_quiet(&stores, Duration::from_secs(180)).await?;
    let mut verification = verify::verify(
        &stores,
        Some((&api, system.admin_token.as_str())),
        quiet_after,
    )
    .await?;
    verification
        .checks
        .extend(contract(&stores, &traces).await?);
    Ok(ChaosReport {
        command: config.command.clone(),
        started_at: started_at.to_rfc3339(),
        mode: config.mode,
        workers: config.workers,
        users: config.users,
        duration_s: config.duration.as_secs_f64(),
        seed: config.seed,
        faults,
        clients: totals(&traces),
        outcomes: crate::run::outcomes(&stores.pg).await?,
        verification,
    })
}

/// A catalog whose stock runs out before the run ends (refusals from then on), with buyers a
/// fifth of whom cannot pay (declines), so cancels race every way a saga can end.
fn shape(config: &ChaosConfig) -> Shape {
    // Measured: a client places five to seven orders a second of about four units each, over
    // the twelve products, so this much stock lasts for about half the run.
    let demand = 0.6 * config.users as f64 * config.duration.as_secs_f64();
    Shape {
        products: 12,
        stock_per_product: (demand as i64).max(60),
        customers: 40,
        short_of_funds: 0.2,
        cancel: 0.3,
        max_lines: 3,
        max_quantity: 3,
        ..Scenario::Checkout.default_shape()
    }
}

async fn run_schedule(
    plan: &[Planned],
    injector: &Injector,
    system: &mut System,
    start: Instant,
) -> Vec<FaultRecord> {
    let mut records = Vec::new();
    for planned in plan {
        tokio::time::sleep_until((start + Duration::from_secs_f64(planned.at_s)).into()).await;
        let started_s = start.elapsed().as_secs_f64();
        tracing_line(&format!("{started_s:6.1}s  {}", planned.fault.describe()));
        let mut error = injector
            .begin(planned.fault, system)
            .await
            .err()
            .map(|e| format!("injecting: {e:#}"));
        let end = start + Duration::from_secs_f64(planned.at_s + planned.lasts_s);
        tokio::time::sleep_until(end.into()).await;
        if let Err(e) = injector.end(planned.fault, system).await {
            error.get_or_insert(format!("undoing: {e:#}"));
        }
        records.push(FaultRecord {
            planned: *planned,
            started_s,
            ended_s: start.elapsed().as_secs_f64(),
            error,
        });
    }
    records
}

/// Progress on stderr, for a person watching a long run.
fn tracing_line(line: &str) {
    eprintln!("chaos: {line}");
}

/// How the run breaks and mends the stores.
enum Injector {
    Services(Services),
    Proxies(Box<Proxies>),
}

impl Injector {
    async fn new(mode: FaultMode, urls: &StoreUrls) -> anyhow::Result<Self> {
        Ok(match mode {
            FaultMode::Services => Self::Services(Services::find(urls)?),
            FaultMode::Proxy => Self::Proxies(Box::new(Proxies::start(urls).await?)),
        })
    }

    /// Where orderly's processes find the stores.
    fn urls(&self, direct: &StoreUrls) -> StoreUrls {
        match self {
            Self::Services(_) => direct.clone(),
            Self::Proxies(p) => p.urls.clone(),
        }
    }

    async fn begin(&self, fault: Fault, system: &mut System) -> anyhow::Result<()> {
        match fault {
            Fault::KillWorker { worker } => system.kill(&format!("worker-{worker}")).await,
            Fault::KillApi => system.kill("api").await,
            _ => match self {
                Self::Services(s) => s.begin(fault).await,
                Self::Proxies(p) => {
                    p.begin(fault);
                    Ok(())
                }
            },
        }
    }

    async fn end(&self, fault: Fault, system: &mut System) -> anyhow::Result<()> {
        match fault {
            Fault::KillWorker { worker } => system.restart(&format!("worker-{worker}")),
            Fault::KillApi => system.restart("api"),
            _ => match self {
                Self::Services(s) => s.end(fault).await,
                Self::Proxies(p) => {
                    p.end(fault);
                    Ok(())
                }
            },
        }
    }

    /// Undoes every store fault, injected or not.
    async fn restore_all(&self) {
        match self {
            Self::Services(s) => s.restore_all().await,
            Self::Proxies(p) => p.restore_all(),
        }
    }
}

/// One proxy per store.
struct Proxies {
    postgres: Proxy,
    redis: Proxy,
    mongodb: Proxy,
    rabbitmq: Proxy,
    urls: StoreUrls,
}

impl Proxies {
    async fn start(direct: &StoreUrls) -> anyhow::Result<Self> {
        let start = |url: String, port: u16| async move {
            let target = proxy::target(&url, port)
                .with_context(|| format!("{url}: a proxy needs a store on an IP address"))?;
            let proxy = Proxy::start(target).await?;
            let through = proxy::through(&url, proxy.addr());
            anyhow::Ok((proxy, through))
        };
        let (postgres, pg_url) = start(direct.postgres.clone(), 5432).await?;
        let (redis, redis_url) = start(direct.redis.clone(), 6379).await?;
        let (mongodb, mongo_url) = start(direct.mongodb.clone(), 27017).await?;
        let (rabbitmq, amqp_url) = start(direct.amqp.clone(), 5672).await?;
        let urls = StoreUrls {
            postgres: pg_url,
            redis: redis_url,
            mongodb: mongo_url,
            amqp: amqp_url,
        };
        Ok(Self {
            postgres,
            redis,
            mongodb,
            rabbitmq,
            urls,
        })
    }

    fn begin(&self, fault: Fault) {
        match fault {
            Fault::BrokerDown => self.rabbitmq.set(Link::Cut),
            Fault::MongoFrozen => self.mongodb.set(Link::Frozen),
            Fault::PostgresRestart => self.postgres.set(Link::Cut),
            Fault::RedisReset => self.redis.reset(),
            Fault::PostgresSlow => self.postgres.set(Link::Slow(Duration::from_millis(50))),
            Fault::KillWorker { .. } | Fault::KillApi => {}
        }
    }

    fn end(&self, fault: Fault) {
        match fault {
            Fault::BrokerDown => self.rabbitmq.set(Link::Up),
            Fault::MongoFrozen => self.mongodb.set(Link::Up),
            Fault::PostgresRestart | Fault::PostgresSlow => self.postgres.set(Link::Up),
            Fault::RedisReset | Fault::KillWorker { .. } | Fault::KillApi => {}
        }
    }

    fn restore_all(&self) {
        for proxy in [&self.postgres, &self.redis, &self.mongodb, &self.rabbitmq] {
            proxy.set(Link::Up);
        }
    }
}

/// The servers themselves, on this machine.
struct Services {
    /// The MongoDB server's process, found by the port it listens on.
    mongodb_pid: u32,
    /// `<version>/<cluster>` for `pg_ctlcluster`.
    postgres_cluster: (String, String),
}

impl Services {
    fn find(urls: &StoreUrls) -> anyhow::Result<Self> {
        let mongodb = proxy::target(&urls.mongodb, 27017)
            .filter(|a| a.ip().is_loopback())
            .context("services mode acts on servers on this machine; MongoDB is elsewhere")?;
        let mongodb_pid = listening_pid(mongodb.port())
            .with_context(|| format!("no process of ours listens on port {}", mongodb.port()))?;
        let version = std::fs::read_dir("/etc/postgresql")
            .context("services mode restarts Postgres with pg_ctlcluster; no /etc/postgresql")?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
            .context("no Postgres cluster under /etc/postgresql")?;
        Ok(Self {
            mongodb_pid,
            postgres_cluster: (version, "main".into()),
        })
    }

    async fn begin(&self, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::BrokerDown => run("rabbitmqctl", &["stop_app"]).await,
            Fault::MongoFrozen => signal(self.mongodb_pid, "STOP").await,
            Fault::PostgresRestart => {
                let (version, cluster) = &self.postgres_cluster;
                run(
                    "pg_ctlcluster",
                    &["--skip-systemctl-redirect", version, cluster, "restart"],
                )
                .await
            }
            Fault::RedisReset | Fault::PostgresSlow => {
                anyhow::bail!("{} needs the proxy mode", fault.describe())
            }
            Fault::KillWorker { .. } | Fault::KillApi => Ok(()),
        }
    }

    async fn end(&self, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::BrokerDown => run("rabbitmqctl", &["start_app"]).await,
            Fault::MongoFrozen => signal(self.mongodb_pid, "CONT").await,
            Fault::PostgresRestart => self.ensure_postgres().await,
            _ => Ok(()),
        }
    }

    async fn ensure_postgres(&self) -> anyhow::Result<()> {
        let (version, cluster) = &self.postgres_cluster;
        let status = tokio::process::Command::new("pg_ctlcluster")
            .args([version, cluster, "status"])
            .output()
            .await?;
        if !status.status.success() {
            run(
                "pg_ctlcluster",
                &["--skip-systemctl-redirect", version, cluster, "start"],
            )
            .await?;
        }
        Ok(())
    }

    async fn restore_all(&self) {
        let _ = signal(self.mongodb_pid, "CONT").await;
        let _ = run("rabbitmqctl", &["start_app"]).await;
        let _ = self.ensure_postgres().await;
    }
}

impl Drop for Services {
    // A run that panics or is interrupted must not leave MongoDB stopped: the other faults
    // heal themselves (a restarted Postgres is up; `restore_all` restarts the broker on every
    // path that returns).
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.mongodb_pid.to_string()])
            .status();
    }
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

async fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    run("kill", &[&format!("-{name}"), &pid.to_string()]).await
}

/// The process with a socket listening on `port` (IPv4 or IPv6), from `/proc`.
fn listening_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // 0A: LISTEN.
            if local_port == Some(port) && *state == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| target.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// One checkout a client made, and what it was told.
#[derive(Debug, Clone)]
struct Trace {
    customer: usize,
    key: String,
    lines: Vec<(Uuid, u32)>,
    /// The definitive answer to the checkout (`None`: never answered).
    placed: Option<(u16, Option<Uuid>)>,
    resolved_after: bool,
    /// Every answer to the cancel, in order (`None`: lost or `5xx`).
    cancel: Vec<Option<u16>>,
    retries: u64,
    answers: Vec<String>,
}

/// The last answer to a request sent until it was answered for good.
struct Sent {
    last: Option<(u16, Option<Uuid>)>,
    retries: u64,
    /// Every answer, as a status or `transport_error`.
    answers: Vec<String>,
    /// Whether any attempt may have taken effect without the client learning it.
    ambiguous: bool,
}

/// Sends a request until it is answered with neither a `5xx` nor a `429`, or `give_up` passes.
async fn send_until_answered<F, Fut>(give_up: Instant, send: F) -> Sent
where
    F: Fn() -> Fut,
    Fut: Future<Output = reqwest::Result<Answer>>,
{
    let mut sent = Sent {
        last: None,
        retries: 0,
        answers: Vec::new(),
        ambiguous: false,
    };
    let mut wait = Duration::from_millis(100);
    loop {
        match send().await {
            Ok(answer) if answer.status < 500 && answer.status != 429 => {
                sent.answers.push(answer.status.to_string());
                sent.last = Some((answer.status, answer.id()));
                return sent;
            }
            Ok(answer) => {
                sent.answers.push(answer.status.to_string());
                sent.ambiguous |= answer.status >= 500;
            }
            Err(_) => {
                sent.answers.push("transport_error".into());
                sent.ambiguous = true;
            }
        }
        if Instant::now() + wait > give_up {
            return sent;
        }
        sent.retries += 1;
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// One client: checkouts one after another until `until`, cancelling some.
async fn buy(api: &Api, world: &World, mut rng: StdRng, until: Instant) -> Vec<Trace> {
    let mut traces = Vec::new();
    while Instant::now() < until {
        let customer = rng.random_range(0..world.customers.len());
        let token = world.customers[customer].token.clone();
        let count = rng.random_range(1..=world.shape.max_lines.min(world.products.len()));
        let lines: Vec<(Uuid, u32)> =
            rand::seq::index::sample(&mut rng, world.products.len(), count)
                .into_iter()
                .map(|i| {
                    (
                        world.products[i],
                        rng.random_range(1..=world.shape.max_quantity),
                    )
                })
                .collect();
        let key = Uuid::new_v4().to_string();
        let placed = send_until_answered(until, || api.place_order(&token, &key, &lines)).await;
        let mut trace = Trace {
            customer,
            key,
            lines,
            placed: placed.last,
            resolved_after: false,
            cancel: Vec::new(),
            retries: placed.retries,
            answers: placed.answers,
        };
        if let Some((200 | 202, Some(order))) = trace.placed
            && rng.random_bool(world.shape.cancel)
        {
            // Anywhere from at once (racing the saga) to after it has likely settled.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
            let give_up = until.max(Instant::now()) + Duration::from_secs(30);
            let cancelled = send_until_answered(give_up, || api.cancel(&token, order)).await;
            trace.retries += cancelled.retries;
            trace.answers.extend(cancelled.answers.iter().cloned());
            trace.cancel = cancelled
                .answers
                .iter()
                .map(|a| a.parse().ok().filter(|&s: &u16| s < 500))
                .collect();
        }
        traces.push(trace);
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..60))).await;
    }
    traces
}

fn totals(traces: &[Trace]) -> ClientTotals {
    let mut t = ClientTotals::default();
    for trace in traces {
        t.checkouts += 1;
        match trace.placed {
            Some((200 | 202, _)) => t.accepted += 1,
            Some(_) => t.refused += 1,
            None => {}
        }
        t.resolved_after += u64::from(trace.resolved_after && trace.placed.is_some());
        if !trace.cancel.is_empty() {
            t.cancels += 1;
            match trace.cancel.last() {
                Some(Some(202)) => t.cancels_accepted += 1,
                Some(Some(_)) => t.cancels_refused += 1,
                _ => {}
            }
        }
        t.retries += trace.retries;
        for answer in &trace.answers {
            *t.answers.entry(answer.clone()).or_default() += 1;
        }
    }
    t
}

/// What the clients were told, against what the stores hold.
async fn contract(stores: &Stores, traces: &[Trace]) -> anyhow::Result<Vec<Check>> {
    type Row = (Uuid, String, Option<String>, bool);
    let orders: HashMap<Uuid, (String, Option<String>, bool)> = sqlx::query_as::<_, Row>(
        "SELECT id, status, reason, cancel_requested_at IS NOT NULL FROM orders",
    )
    .fetch_all(&stores.pg)
    .await?
    .into_iter()
    .map(|(id, status, reason, cancel)| (id, (status, reason, cancel)))
    .collect();

    let mut accepted = Check::new(
        "accepted_orders_exist",
        "every checkout answered 200/202 is an order in Postgres, one order per key, and no \
         order exists that no answer accepted",
    );
    let mut told = std::collections::HashSet::new();
    for trace in traces {
        match trace.placed {
            Some((200 | 202, Some(id))) => {
                told.insert(id);
                accepted.expect(orders.contains_key(&id), || {
                    format!(
                        "key {} was answered with order {id}, which is gone",
                        trace.key
                    )
                });
            }
            Some((200 | 202, None)) => {
                accepted.violate(|| format!("key {} was accepted without an id", trace.key));
            }
            None => accepted.violate(|| {
                format!(
                    "key {} was never answered, even after the faults",
                    trace.key
                )
            }),
            Some(_) => accepted.checked += 1,
        }
    }
    for id in orders.keys().filter(|id| !told.contains(*id)) {
        accepted.violate(|| format!("order {id} exists, but no client was told it was accepted"));
    }

    let mut cancels = Check::new(
        "cancel_contract",
        "a cancel answered 202 ends the order cancelled/cancelled_by_customer; one answered 409 \
         (with no earlier attempt that may have landed) found the order ended and recorded nothing",
    );
    for trace in traces.iter().filter(|t| !t.cancel.is_empty()) {
        let Some((_, Some(id))) = trace.placed else {
            continue;
        };
        let Some((status, reason, recorded)) = orders.get(&id) else {
            continue;
        };
        let ended_by_customer =
            status == "cancelled" && reason.as_deref() == Some("cancelled_by_customer");
        let ambiguous = trace.cancel.iter().any(Option::is_none);
        let answers = &trace.cancel;
        match trace.cancel.last() {
            _ if trace.cancel.contains(&Some(202)) => cancels.expect(ended_by_customer, || {
                format!("order {id}: cancel answered {answers:?} but it ended {status}/{reason:?}")
            }),
            Some(Some(409)) if !ambiguous => cancels.expect(
                !recorded && !ended_by_customer && (status == "rejected" || status == "cancelled"),
                || {
                    format!(
                        "order {id}: cancel answered 409 but it ended {status}/{reason:?} \
                         (cancel recorded: {recorded})"
                    )
                },
            ),
            Some(Some(409)) => cancels.checked += 1,
            _ => cancels.violate(|| format!("order {id}: cancel answered {answers:?}")),
        }
    }
    Ok(vec![accepted, cancels])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_seeded_fits_the_run_and_holds_every_kind() {
        let plan = |seed| {
            schedule(
                seed,
                FaultMode::Proxy,
                2,
                Duration::from_secs(120),
                Duration::from_secs(6),
            )
        };
        let one = plan(7);
        let again = plan(7);
        assert_eq!(
            one.iter().map(|p| (p.fault, p.at_s)).collect::<Vec<_>>(),
            again.iter().map(|p| (p.fault, p.at_s)).collect::<Vec<_>>()
        );
        for pair in one.windows(2) {
            assert!(pair[0].at_s + pair[0].lasts_s < pair[1].at_s, "{pair:?}");
        }
        let last = one.last().unwrap();
        assert!(last.at_s + last.lasts_s <= 118.0);
        for kind in [
            Fault::KillApi,
            Fault::KillWorker { worker: 1 },
            Fault::KillWorker { worker: 2 },
            Fault::BrokerDown,
            Fault::MongoFrozen,
            Fault::PostgresRestart,
            Fault::RedisReset,
            Fault::PostgresSlow,
        ] {
            assert!(one.iter().any(|p| p.fault == kind), "{kind:?} missing");
        }
    }
}
