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
        step.layout = Layout::Split { workers: n };
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
    let _ = writeln!(md, "\nEach step's full report is in `workers-N/report.md`.");
    md
}
