//! Worker scaling: one scenario against `orderly api` plus 1, 2, 4… `orderly worker` processes,
//! each step a full verified run, tabulated side by side.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::report::Report;
use crate::run::{RunConfig, run};
use crate::system::Layout;

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub workers: usize,
    pub report: Report,
}

/// Runs `config` once per worker count; store baselines only in the first step.
pub async fn scale(config: &RunConfig, workers: &[usize]) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (i, &n) in workers.iter().enumerate() {
        let mut step = config.clone();
        step.layout = Layout::Split {
            workers: n,
            worker_millicpu: config.worker_millicpu,
        };
        step.out_dir = config.out_dir.join(format!("workers-{n}"));
        if i > 0 {
            step.baseline_secs = 0.0;
        }
        eprintln!("==> {} with {n} worker process(es)", config.scenario.name());
        let report = run(step).await?.report;
        eprintln!(
            "    {} sagas/s, verification {}",
            sagas_per_s(&report),
            if report.passed() { "passed" } else { "FAILED" }
        );
        steps.push(Step { workers: n, report });
    }
    write(&config.out_dir, &steps)?;
    Ok(steps)
}

/// Completed sagas per second, or why there is no such figure.
fn sagas_per_s(report: &Report) -> String {
    report.throughput.as_ref().map_or_else(
        || format!("– (load covered {:.1} s)", report.load_covered_s),
        |t| format!("{:.1}", t.sagas_completed_per_s),
    )
}

fn write(dir: &Path, steps: &[Step]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("scale.json"), serde_json::to_string_pretty(steps)?)?;
    std::fs::write(dir.join("scale.md"), markdown(steps))?;
    Ok(())
}

pub fn markdown(steps: &[Step]) -> String {
    let mut md = String::new();
    let Some(first) = steps.first() else {
        return md;
    };
    let r = &first.report;
    let _ = writeln!(md, "# Worker scaling: `{}`\n", r.scenario);
    let _ = writeln!(md, "- Command: `{}`", r.command);
    let _ = writeln!(
        md,
        "- Machine: {} CPUs ({}), {} GiB; every store on the same machine",
        r.machine.cpus, r.machine.cpu_model, r.machine.memory_gib
    );
    let _ = writeln!(
        md,
        "- Load: {}; {} s warm-up, {} s measured per step\n",
        r.load.describe(),
        r.warmup_s,
        r.duration_s
    );
    let _ = writeln!(
        md,
        "| workers | sagas completed/s | orders accepted/s | POST /orders p50 / p99 ms | saga p50 / p99 ms | CPU ms/saga | verified |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---|");
    for step in steps {
        let r = &step.report;
        let post = r
            .measured
            .endpoints
            .get(crate::stats::POST_ORDERS)
            .map(|e| format!("{:.1} / {:.1}", e.latency.p50_ms, e.latency.p99_ms))
            .unwrap_or_else(|| "–".into());
        let saga = &r.measured.saga_completion;
        let cpu = r
            .cpu
            .per_saga_ms
            .map_or_else(|| "–".into(), |ms| format!("{ms:.2}"));
        let accepted = r
            .throughput
            .as_ref()
            .map_or_else(|| "–".into(), |t| format!("{:.1}", t.orders_accepted_per_s));
        let _ = writeln!(
            md,
            "| {} | {} | {accepted} | {post} | {:.1} / {:.1} | {cpu} | {} |",
            step.workers,
            sagas_per_s(r),
            saga.p50_ms,
            saga.p99_ms,
            if r.passed() { "✅" } else { "❌" }
        );
    }
    let _ = writeln!(
        md,
        "\n| workers | Postgres tx/saga | statements/saga | relay passes (empty) | messages per relay pass | messages per batch: orchestrator, inventory, payments, history | wake-ups/s |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---|---:|");
    for step in steps {
        let w = &step.report.work;
        let per = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"));
        let batch = |q: &str| per(w.batches.get(q).and_then(|b| b.mean));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} ({:.0}) | {} | {}, {}, {}, {} | {:.0} |",
            step.workers,
            per(w.transactions_per_saga),
            per(w.statements_per_saga),
            w.relay_passes,
            w.relay_empty_passes,
            per(w.relay_messages_per_pass),
            batch("orchestrator"),
            batch("inventory"),
            batch("payments"),
            batch("history"),
            w.wakeups_per_s
        );
    }
    if steps.iter().any(|s| !s.report.workers.is_empty()) {
        let _ = writeln!(
            md,
            "\n| workers | CPUs used per worker (quota) | periods throttled | stores' CPU s (postgres, rabbitmq, mongodb, redis) | bound by |"
        );
        let _ = writeln!(md, "|---:|---|---|---|---|");
        for step in steps {
            let r = &step.report;
            let used: Vec<String> = r
                .workers
                .iter()
                .map(|w| {
                    format!(
                        "{:.3} ({:.3})",
                        w.cpu_s / r.duration_s.max(1e-9),
                        w.quota_cpus
                    )
                })
                .collect();
            let throttled: Vec<String> = r
                .workers
                .iter()
                .map(|w| format!("{:.0} %", w.throttled_share * 100.0))
                .collect();
            let store = |g: &str| r.cpu.seconds.0.get(g).copied().unwrap_or(0.0);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1}, {:.1}, {:.1}, {:.1} | {} |",
                step.workers,
                used.join(", "),
                throttled.join(", "),
                store("postgres"),
                store("rabbitmq"),
                store("mongodb"),
                store("redis"),
                r.bound_by().unwrap_or_default()
            );
        }
    }
    let _ = writeln!(md, "\nEach step's full report is in `workers-N/report.md`.");
    md
}
