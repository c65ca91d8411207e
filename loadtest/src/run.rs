//! One run, start to finish: a fresh namespace, orderly's processes, the scenario's world,
//! the store baselines, the load, quiet, verification, the report, and cleanup.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sqlx::PgPool;

use crate::baseline::{self, Baseline};
use crate::client::Api;
use crate::cpu::{self, CpuTimes};
use crate::driver::{self, Model};
use crate::report::{CpuReport, Machine, Report, Throughput, WorkerCpu};
use crate::scenario::{Load, Scenario, Shape, World};
use crate::stats::{Percentiles, Stats};
use crate::system::{Layout, Namespace, StoreUrls, System};
use crate::verify::{self, Stores};
use crate::work;

/// How long in-flight iterations may take to finish after the load stops.
const DRAIN: Duration = Duration::from_secs(60);
/// How long the system may take to go quiet (every saga ended, history projected).
const QUIET: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub scenario: Scenario,
    pub shape: Shape,
    pub model: Model,
    pub warmup: Duration,
    pub duration: Duration,
    pub seed: u64,
    pub layout: Layout,
    /// Each worker's CPU quota in thousandths of a CPU, for layouts with workers.
    pub worker_millicpu: Option<u32>,
    /// The `orderly` binary to run.
    pub binary: PathBuf,
    pub urls: StoreUrls,
    /// Where the report, chart and process logs go.
    pub out_dir: PathBuf,
    /// Seconds per store baseline; 0 skips them.
    pub baseline_secs: f64,
    /// Keep the run's stores (database, keys, queues) for inspection instead of removing them.
    pub keep: bool,
    /// The command line, quoted in the report.
    pub command: String,
}

/// A finished run: its report, and the namespace its data is in if `keep` was set.
pub struct Outcome {
    pub report: Report,
    pub namespace: Namespace,
}

pub async fn run(config: RunConfig) -> anyhow::Result<Outcome> {
    let tag = format!(
        "{}_{}",
        Utc::now().format("%Y%m%d%H%M%S"),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let namespace = Namespace::new("orderly_lt", &tag);
    let result = run_in(&config, &namespace).await;
    if !config.keep {
        namespace.remove(&config.urls).await;
    }
    Ok(Outcome {
        report: result?,
        namespace,
    })
}

async fn run_in(config: &RunConfig, namespace: &Namespace) -> anyhow::Result<Report> {
    let mut system = System::start(
        &config.binary,
        namespace.clone(),
        config.urls.clone(),
        config.layout,
        &config.out_dir.join("logs"),
        &[],
    )
    .await?;
    let result = load_and_verify(config, &mut system).await;
    let shutdown = system.stop_checked().await;
    let mut report = result?;
    report.verification.checks.push(shutdown);
    report.write(&config.out_dir)?;
    Ok(report)
}

async fn load_and_verify(config: &RunConfig, system: &mut System) -> anyhow::Result<Report> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let api = Api::new(&system.base_url, config.model.connections() + 16)?;
    let world = World::create(
        &api,
        &system.admin_token,
        config.shape.clone(),
        &mut rng,
        16,
    )
    .await?;
    let stores = Stores::connect(&system.namespace, &system.urls).await?;
    // Autovacuum would analyze the new catalog within a minute; the run starts seconds after
    // it was created, when the planner still takes its 1,000 products for a handful and sorts
    // them all for every page.
    sqlx::query("ANALYZE").execute(&stores.pg).await?;
    // Statements per saga, where Postgres preloads pg_stat_statements (scripts/loadtest does);
    // elsewhere the view stays unreadable and the report leaves the figure out.
    let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&stores.pg)
        .await;

    let baselines: Vec<Baseline> = if config.baseline_secs > 0.0 {
        baseline::measure_all(&system.namespace, &system.urls, config.baseline_secs).await?
    } else {
        Vec::new()
    };

    let start = Instant::now();
    let started_at = Utc::now();
    let measure_from = start + config.warmup;
    let until = measure_from + config.duration;
    let window = (
        started_at + config.warmup,
        started_at + config.warmup + config.duration,
    );
    let load = Arc::new(Load {
        api: api.clone(),
        world,
        stats: std::sync::Mutex::new(Stats::new(start, config.warmup)),
    });
    let pids = system.pids();
    let (pg, database, metrics, quotas) = (
        stores.pg.clone(),
        system.namespace.database.clone(),
        system.metrics_urls(),
        system.quotas(),
    );
    let window_samples = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let (cpu_before, work_before, quotas_before) = (
            cpu::sample(&pids),
            work::Sample::take(&pg, &database, &metrics).await,
            sample_quotas(&quotas),
        );
        tokio::time::sleep_until(until.into()).await;
        let cpu = cpu::sample(&pids).since(&cpu_before);
        let workers = quotas
            .iter()
            .zip(sample_quotas(&quotas).into_iter().zip(quotas_before))
            .map(
                |((name, _, cpus, _), ((cpu_after, after), (cpu_before, before)))| {
                    let throttling = after.since(&before);
                    WorkerCpu {
                        name: name.clone(),
                        quota_cpus: *cpus,
                        cpu_s: cpu_after - cpu_before,
                        throttled_share: throttling.throttled_periods as f64
                            / throttling.periods.max(1) as f64,
                        throttled_s: throttling.throttled_s,
                    }
                },
            )
            .collect::<Vec<_>>();
        (
            cpu,
            work_before,
            work::Sample::take(&pg, &database, &metrics).await,
            workers,
        )
    });
    let driven = driver::drive(load.clone(), config.model, until, DRAIN, config.seed).await;
    let (cpu_seconds, work_before, work_after, workers) = window_samples.await?;
    system.check_alive()?;

    let quiet_after = verify::wait_until_quiet(&stores, QUIET).await?;
    let verification = verify::verify(
        &stores,
        Some((&api, system.admin_token.as_str())),
        quiet_after,
    )
    .await?;

    let mut measured = load.stats.lock().expect("stats lock").summary();
    let completed_by_second = completed_by_second(&stores.pg, started_at).await?;
    for point in &mut measured.timeline {
        point.sagas_completed_db = completed_by_second
            .get(&(point.second as i64))
            .copied()
            .unwrap_or(0);
    }
    let seconds = config.duration.as_secs_f64();
    let covered = coverage(
        config,
        load.stats.lock().expect("stats lock").load_reached(),
    );
    let sagas_completed = completed_between(&stores.pg, window).await?;
    let in_window = |endpoint: Option<&str>, status: Option<&str>| -> u64 {
        measured
            .endpoints
            .iter()
            .filter(|(name, _)| endpoint.is_none_or(|e| e == name.as_str()))
            .flat_map(|(_, e)| e.by_status.iter())
            .filter(|(s, _)| status.is_none_or(|want| want == s.as_str()))
            .map(|(_, n)| n)
            .sum()
    };
    // A rate over a window the load did not fill would be a smaller number for a lighter load.
    let throughput = (covered >= seconds).then(|| Throughput {
        requests_per_s: in_window(None, None) as f64 / seconds,
        orders_accepted_per_s: in_window(Some(crate::stats::POST_ORDERS), Some("202")) as f64
            / seconds,
        sagas_completed_per_s: sagas_completed as f64 / seconds,
        sagas_completed,
    });
    let cpu = cpu_report(cpu_seconds, throughput.as_ref().map(|t| t.sagas_completed));
    let work = work::WorkReport::between(
        &work_before,
        &work_after,
        seconds,
        throughput.as_ref().map(|t| t.sagas_completed),
    );

    Ok(Report {
        scenario: config.scenario.name().to_owned(),
        command: config.command.clone(),
        started_at: started_at.to_rfc3339(),
        machine: Machine::this(),
        layout: config.layout.describe(),
        load: config.model,
        warmup_s: config.warmup.as_secs_f64(),
        duration_s: seconds,
        seed: config.seed,
        shape: config.shape.clone(),
        iterations: driven.iterations,
        abandoned_iterations: driven.abandoned,
        load_covered_s: covered,
        throughput,
        outcomes: outcomes(&stores.pg).await?,
        saga_duration_server: server_saga_duration(&stores.pg, window).await?,
        measured,
        cpu,
        work,
        workers,
        baselines,
        verification,
    })
}

/// Seconds of the measured window the load covered: all of it once requests were still being
/// sent in its last moments (allowing one gap between arrivals in the open model), else up to
/// the last request sent.
fn coverage(config: &RunConfig, reached: Duration) -> f64 {
    covered(config.model, config.duration, reached)
}

fn covered(model: Model, duration: Duration, reached: Duration) -> f64 {
    let window = duration.as_secs_f64();
    let slack = match model {
        Model::Open { rate, .. } => (2.0 / rate).max(1.0),
        Model::Closed { .. } => 1.0,
    };
    let reached = reached.as_secs_f64();
    if reached + slack >= window {
        window
    } else {
        reached
    }
}

/// Each quota'd worker's CPU seconds so far and its throttling.
fn sample_quotas(
    quotas: &[(String, u32, f64, crate::quota::QuotaReader)],
) -> Vec<(f64, crate::quota::Throttling)> {
    quotas
        .iter()
        .map(|(_, pid, _, reader)| {
            (
                cpu::process_seconds(*pid).unwrap_or(0.0),
                reader.throttling(),
            )
        })
        .collect()
}

/// CPU per completed saga, when the sagas of the window are known (the load covered it).
fn cpu_report(seconds: CpuTimes, sagas: Option<u64>) -> CpuReport {
    let total = seconds.system_total();
    CpuReport {
        per_saga_ms: sagas.filter(|&n| n > 0).map(|n| total * 1000.0 / n as f64),
        seconds,
    }
}

/// Every order's final state, counted: `status` or `status/reason`.
pub async fn outcomes(pg: &PgPool) -> anyhow::Result<BTreeMap<String, u64>> {
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT status, reason, count(*) FROM orders GROUP BY status, reason ORDER BY 1, 2",
    )
    .fetch_all(pg)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(status, reason, n)| {
            let label = reason.map_or(status.clone(), |r| format!("{status}/{r}"));
            (label, n as u64)
        })
        .collect())
}

async fn completed_between(
    pg: &PgPool,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sagas WHERE kind = 'checkout' AND finished_at >= $1 AND finished_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pg)
    .await?;
    Ok(n as u64)
}

async fn completed_by_second(
    pg: &PgPool,
    start: DateTime<Utc>,
) -> anyhow::Result<BTreeMap<i64, u64>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT floor(extract(epoch FROM finished_at - $1))::bigint AS s, count(*)
         FROM sagas WHERE kind = 'checkout' AND finished_at >= $1 GROUP BY s",
    )
    .bind(start)
    .fetch_all(pg)
    .await?;
    Ok(rows.into_iter().map(|(s, n)| (s, n as u64)).collect())
}

async fn server_saga_duration(
    pg: &PgPool,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> anyhow::Result<Percentiles> {
    #[allow(clippy::type_complexity)]
    let row: (
        i64,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    ) = sqlx::query_as(
        "WITH d AS (SELECT extract(epoch FROM finished_at - started_at)::float8 * 1000 AS ms
                        FROM sagas WHERE kind = 'checkout' AND started_at >= $1 AND started_at < $2
                          AND finished_at IS NOT NULL)
             SELECT count(*), avg(ms),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
                    percentile_cont(0.9) WITHIN GROUP (ORDER BY ms),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY ms),
                    percentile_cont(0.999) WITHIN GROUP (ORDER BY ms),
                    max(ms)
             FROM d",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pg)
    .await?;
    let v = |x: Option<f64>| x.unwrap_or(0.0);
    Ok(Percentiles {
        count: row.0 as u64,
        mean_ms: v(row.1),
        p50_ms: v(row.2),
        p90_ms: v(row.3),
        p99_ms: v(row.4),
        p999_ms: v(row.5),
        max_ms: v(row.6),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_as_covered_only_if_the_load_reached_its_end() {
        let closed = Model::Closed { users: 4 };
        let window = Duration::from_secs(240);
        assert_eq!(
            covered(closed, window, Duration::from_secs_f64(239.5)),
            240.0
        );
        assert_eq!(covered(closed, window, Duration::from_secs(55)), 55.0);
        let slow = Model::Open {
            rate: 0.5,
            max_in_flight: 10,
        };
        assert_eq!(covered(slow, window, Duration::from_secs(237)), 240.0);
        assert_eq!(covered(slow, window, Duration::from_secs(200)), 200.0);
    }
}
