//! A run's report: JSON for tools, Markdown for people, and an SVG chart of throughput and
//! latency over time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::baseline::Baseline;
use crate::cpu::CpuTimes;
use crate::driver::Model;
use crate::scenario::Shape;
use crate::stats::{Percentiles, Summary};
use crate::verify::Verification;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub os: String,
}

impl Machine {
    pub fn this() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once([':', '=']))
                .map(|(_, v)| v.trim().trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        let meminfo = read("/proc/meminfo");
        let kib: f64 = field(&meminfo, "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: field(&read("/proc/cpuinfo"), "model name"),
            memory_gib: (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os: field(&read("/etc/os-release"), "PRETTY_NAME"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Every HTTP request answered in the measured window, per second.
    pub requests_per_s: f64,
    /// `POST /orders` answered `202` in the measured window, per second.
    pub orders_accepted_per_s: f64,
    /// Checkout sagas that reached a final state in the measured window (Postgres `finished_at`).
    pub sagas_completed_per_s: f64,
    pub sagas_completed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// CPU seconds spent in the measured window, by process group.
    pub seconds: CpuTimes,
    /// CPU milliseconds per completed saga, orderly and every store together.
    pub per_saga_ms: Option<f64>,
}

/// One worker's CPU over the measured window, against its quota.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerCpu {
    pub name: String,
    pub quota_cpus: f64,
    pub cpu_s: f64,
    /// Share of the quota's periods in which it was held back.
    pub throttled_share: f64,
    pub throttled_s: f64,
}

impl Report {
    /// What held the run back, as far as the quotas tell: the workers when they spent most
    /// periods throttled, else something else (a store, the API, the load).
    pub fn bound_by(&self) -> Option<String> {
        if self.workers.is_empty() {
            return None;
        }
        let share =
            self.workers.iter().map(|w| w.throttled_share).sum::<f64>() / self.workers.len() as f64;
        Some(if share >= 0.5 {
            format!(
                "the workers' CPU quotas (throttled in {:.0} % of periods)",
                share * 100.0
            )
        } else {
            format!(
                "not the workers' quotas (throttled in {:.0} % of periods): a store, the API or the load",
                share * 100.0
            )
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub command: String,
    pub started_at: String,
    pub machine: Machine,
    pub layout: String,
    pub load: Model,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub seed: u64,
    pub shape: Shape,
    pub iterations: u64,
    /// Iterations still running when the drain after the window ran out, and dropped.
    pub abandoned_iterations: usize,
    /// Seconds of the measured window during which the load was applied.
    pub load_covered_s: f64,
    /// `None` when the load did not cover the whole measured window: a rate over a window it
    /// left partly idle would understate what the system does.
    pub throughput: Option<Throughput>,
    /// Final states of every order placed in the run, from Postgres (`status` or `status/reason`).
    pub outcomes: BTreeMap<String, u64>,
    /// Checkout saga durations by Postgres clocks (`finished_at − started_at`), measured window.
    pub saga_duration_server: Percentiles,
    pub measured: Summary,
    pub cpu: CpuReport,
    /// Work per saga over the measured window (transactions, batches, relay passes).
    pub work: crate::work::WorkReport,
    /// Each worker's CPU against its quota, when the layout gave them quotas.
    pub workers: Vec<WorkerCpu>,
    pub baselines: Vec<Baseline>,
    pub verification: Verification,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.verification.passed()
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("chart.svg"), self.chart())?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let verdict = if self.passed() {
            "**PASSED**: every invariant holds"
        } else {
            "**FAILED**: invariants violated"
        };
        let _ = writeln!(md, "# Load test: `{}`\n\n{verdict}\n", self.scenario);
        let _ = writeln!(md, "- Command: `{}`", self.command);
        let _ = writeln!(md, "- Started: {}", self.started_at);
        let m = &self.machine;
        let _ = writeln!(
            md,
            "- Machine: {} CPUs ({}), {} GiB, {}; every store on the same machine",
            m.cpus, m.cpu_model, m.memory_gib, m.os
        );
        let _ = writeln!(md, "- orderly: {}", self.layout);
        let _ = writeln!(
            md,
            "- Load: {}; {} s warm-up, then {} s measured; seed {}",
            self.load.describe(),
            self.warmup_s,
            self.duration_s,
            self.seed
        );
        let s = &self.shape;
        let _ = writeln!(
            md,
            "- Shape: {} products ({} units each), {} customers ({:.0}% short of funds), \
             ≤{} lines × ≤{} units, {:.0}% cancelled, {:.0}% browsing \
             ({:.0}% of browses on product pages)\n",
            s.products,
            s.stock_per_product,
            s.customers,
            s.short_of_funds * 100.0,
            s.max_lines,
            s.max_quantity,
            s.cancel * 100.0,
            s.browse_share * 100.0,
            s.product_pages * 100.0
        );

        let _ = writeln!(md, "## Throughput (measured window)\n");
        match &self.throughput {
            Some(t) => {
                let _ = writeln!(
                    md,
                    "| requests/s | orders accepted/s | sagas completed/s | sagas completed |"
                );
                let _ = writeln!(md, "|---:|---:|---:|---:|");
                let _ = writeln!(
                    md,
                    "| {:.0} | {:.1} | {:.1} | {} |\n",
                    t.requests_per_s,
                    t.orders_accepted_per_s,
                    t.sagas_completed_per_s,
                    t.sagas_completed
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "**Not reported**: the load covered only {:.1} s of the {} s window, so no \
                     rate over the window would be true.\n",
                    self.load_covered_s, self.duration_s
                );
            }
        }
        if self.abandoned_iterations > 0 {
            let _ = writeln!(
                md,
                "{} iterations were still running when the drain after the window ran out.\n",
                self.abandoned_iterations
            );
        }

        let open = matches!(self.load, Model::Open { .. });
        let _ = writeln!(
            md,
            "## HTTP latency (ms{})\n",
            if open {
                "; from the scheduled start, so corrected for coordinated omission"
            } else {
                ""
            }
        );
        let _ = writeln!(
            md,
            "| endpoint | requests | p50 | p90 | p99 | p99.9 | max | statuses |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---|");
        for (name, e) in &self.measured.endpoints {
            let l = &e.latency;
            let statuses: Vec<String> = e
                .by_status
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            let _ = writeln!(
                md,
                "| `{name}` | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                e.requests,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p999_ms,
                l.max_ms,
                statuses.join(", ")
            );
        }
        let _ = writeln!(
            md,
            "\n`GET /orders/{{id}}?wait` is the long-poll that follows each order until it leaves \
             `pending`; its latency is mostly the saga's.\n"
        );

        let _ = writeln!(md, "## Saga completion (ms)\n");
        let _ = writeln!(md, "| measured | sagas | p50 | p90 | p99 | p99.9 | max |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
        for (label, p) in [
            (
                "client: `202` → not `pending`",
                &self.measured.saga_completion,
            ),
            (
                "server: saga `started_at` → `finished_at`",
                &self.saga_duration_server,
            ),
        ] {
            let _ = writeln!(
                md,
                "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
            );
        }

        let _ = writeln!(
            md,
            "\n## Outcomes (every order of the run, from Postgres)\n"
        );
        let _ = writeln!(md, "| final state | orders |");
        let _ = writeln!(md, "|---|---:|");
        for (outcome, n) in &self.outcomes {
            let _ = writeln!(md, "| {outcome} | {n} |");
        }

        let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
        for e in self.measured.endpoints.values() {
            for (status, n) in &e.by_status {
                if !status.starts_with('2') {
                    *errors.entry(status.as_str()).or_default() += n;
                }
            }
        }
        let _ = writeln!(md, "\n## Errors by status\n");
        if errors.is_empty() {
            let _ = writeln!(md, "None: every request was answered 2xx.");
        } else {
            for (status, n) in errors {
                let _ = writeln!(md, "- {status}: {n}");
            }
        }

        let cpu = &self.cpu;
        let _ = writeln!(md, "\n## CPU (measured window)\n");
        let _ = writeln!(md, "| process group | CPU seconds |");
        let _ = writeln!(md, "|---|---:|");
        for (group, secs) in &cpu.seconds.0 {
            let _ = writeln!(md, "| {group} | {secs:.2} |");
        }
        if let Some(per_saga) = cpu.per_saga_ms {
            let _ = writeln!(
                md,
                "\nCPU per completed saga, orderly and every store together (not the load \
                 generator): **{per_saga:.2} ms**, so at most {:.0} sagas/s on {} cores \
                 at this mix.",
                1000.0 * self.machine.cpus as f64 / per_saga,
                self.machine.cpus
            );
        }

        if !self.workers.is_empty() {
            let _ = writeln!(md, "\n## Workers in CPU quotas (measured window)\n");
            let _ = writeln!(
                md,
                "| worker | quota (CPUs) | CPU seconds | CPUs used | periods throttled | throttled s |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
            for w in &self.workers {
                let _ = writeln!(
                    md,
                    "| {} | {:.3} | {:.2} | {:.3} | {:.0} % | {:.2} |",
                    w.name,
                    w.quota_cpus,
                    w.cpu_s,
                    w.cpu_s / self.duration_s.max(1e-9),
                    w.throttled_share * 100.0,
                    w.throttled_s
                );
            }
            if let Some(bound) = self.bound_by() {
                let _ = writeln!(md, "\nBound by {bound}.");
            }
        }

        let work = &self.work;
        let per = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"));
        let _ = writeln!(md, "\n## Work (measured window)\n");
        let _ = writeln!(
            md,
            "- Postgres transactions per saga: {}; statements per saga: {} (`pg_stat_statements`)",
            per(work.transactions_per_saga),
            per(work.statements_per_saga)
        );
        let _ = writeln!(
            md,
            "- Relay: {:.0} passes, {:.0} of them empty; {} messages per publish round",
            work.relay_passes,
            work.relay_empty_passes,
            per(work.relay_messages_per_pass)
        );
        let _ = writeln!(
            md,
            "- Wake-ups (relay passes and consumer batches): {:.1}/s; lease holders: {:?}",
            work.wakeups_per_s, work.lease_holders
        );
        let _ = writeln!(
            md,
            "\n| queue | messages | batches | messages per batch (and per ack) |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|");
        for (queue, b) in &work.batches {
            let _ = writeln!(
                md,
                "| {queue} | {:.0} | {:.0} | {} |",
                b.messages,
                b.batches,
                per(b.mean)
            );
        }

        if !self.baselines.is_empty() {
            let _ = writeln!(md, "\n## What the stores alone do on this machine\n");
            let _ = writeln!(md, "| store | operation | per second | clients |");
            let _ = writeln!(md, "|---|---|---:|---:|");
            for b in &self.baselines {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0} | {} |",
                    b.store, b.operation, b.per_second, b.concurrency
                );
            }
        }

        let _ = writeln!(
            md,
            "\n## Verification (stores read directly, after {} ms to go quiet)\n",
            self.verification.quiet_after_ms
        );
        let _ = writeln!(md, "| check | invariant | checked | violations |");
        let _ = writeln!(md, "|---|---|---:|---:|");
        for c in &self.verification.checks {
            let _ = writeln!(
                md,
                "| {} `{}` | {} | {} | {} |",
                if c.passed() { "✅" } else { "❌" },
                c.name,
                c.invariant,
                c.checked,
                c.violations
            );
        }
        for c in &self.verification.checks {
            for line in c.examples.iter().chain(&c.notes) {
                let _ = writeln!(md, "- `{}`: {line}", c.name);
            }
        }
        let _ = writeln!(
            md,
            "\nChart: [chart.svg](chart.svg). Raw numbers: [report.json](report.json)."
        );
        md
    }

    /// Two panels over the run's seconds: throughput, then latency. Warm-up is shaded.
    pub fn chart(&self) -> String {
        let points = &self.measured.timeline;
        let series_rate: [(&str, &str, Vec<f64>); 3] = [
            (
                "requests/s",
                "#999999",
                points.iter().map(|p| p.requests as f64).collect(),
            ),
            (
                "orders accepted/s",
                "#1f77b4",
                points.iter().map(|p| p.orders_placed as f64).collect(),
            ),
            (
                "sagas completed/s",
                "#2ca02c",
                points.iter().map(|p| p.sagas_completed_db as f64).collect(),
            ),
        ];
        let gap = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let series_latency: [(&str, &str, Vec<f64>); 3] = [
            (
                "POST /orders p50 ms",
                "#1f77b4",
                points.iter().map(|p| gap(p.post_orders_p50_ms)).collect(),
            ),
            (
                "POST /orders p99 ms",
                "#d62728",
                points.iter().map(|p| gap(p.post_orders_p99_ms)).collect(),
            ),
            (
                "saga p50 ms",
                "#2ca02c",
                points.iter().map(|p| gap(p.saga_p50_ms)).collect(),
            ),
        ];
        let warmup = points.iter().filter(|p| p.warmup).count();
        let mut svg = String::new();
        let (width, height) = (960.0, 640.0);
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="10" y="18" font-size="14">orderly load test: {} ({}), {}</text>"#,
            self.scenario,
            escape(&self.load.describe()),
            escape(&self.layout)
        );
        panel(
            &mut svg,
            40.0,
            "per second",
            &series_rate,
            warmup,
            points.len(),
        );
        panel(
            &mut svg,
            340.0,
            "latency (ms)",
            &series_latency,
            warmup,
            points.len(),
        );
        svg.push_str("</svg>\n");
        svg
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('`', "")
}

/// One panel, `top` pixels down: axes, a shaded warm-up, a polyline per series, a legend.
fn panel(
    svg: &mut String,
    top: f64,
    title: &str,
    series: &[(&str, &str, Vec<f64>)],
    warmup: usize,
    seconds: usize,
) {
    let (left, width, height) = (70.0, 860.0, 230.0);
    let max = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let n = seconds.max(2) as f64 - 1.0;
    let x = |i: usize| left + width * i as f64 / n;
    let y = |v: f64| top + height - height * v / max;
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{w:.1}" height="{height}" fill="#eeeeee"/>"##,
        w = x(warmup.min(seconds)) - left
    );
    let _ = writeln!(
        svg,
        r#"<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(svg, r#"<text x="{left}" y="{}">{title}</text>"#, top - 4.0);
    for tick in 0..=4 {
        let v = max * f64::from(tick) / 4.0;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"#,
            left - 6.0,
            y(v) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end">{} s</text>"#,
        left + width,
        top + height + 16.0,
        seconds.saturating_sub(1)
    );
    for (k, (label, color, values)) in series.iter().enumerate() {
        // A second without a value (no request finished in it) breaks the line.
        let mut segments: Vec<Vec<String>> = vec![Vec::new()];
        for (i, v) in values.iter().enumerate() {
            if v.is_finite() {
                segments
                    .last_mut()
                    .expect("one segment at least")
                    .push(format!("{:.1},{:.1}", x(i), y(*v)));
            } else if !segments.last().expect("one segment at least").is_empty() {
                segments.push(Vec::new());
            }
        }
        for points in segments.iter().filter(|s| !s.is_empty()) {
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                points.join(" ")
            );
        }
        let lx = left + 10.0 + 200.0 * k as f64;
        let ly = top + height + 32.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{label}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0
        );
    }
}
