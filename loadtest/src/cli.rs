//! The command line of `orderly-loadtest`, in the library so a test can parse every command the
//! docs show.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::chaos::{ChaosConfig, FaultMode};
use crate::driver::Model;
use crate::run::RunConfig;
use crate::scenario::Scenario;
use crate::system::{Layout, StoreUrls};

/// Concurrent load against orderly, then a verification of every invariant. Exits 1 when an
/// invariant is violated or the load did not cover the measured window, 2 when the run itself
/// could not be done.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// One verified run of a scenario.
    Run {
        #[command(flatten)]
        load: LoadArgs,
        /// `orderly worker` processes beside `orderly api`; 0 runs one `orderly run` instead.
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// `orderly api` and worker processes under retrying clients while a seeded schedule of
    /// faults hits them (kill -9, broker stopped, MongoDB frozen, Postgres restarted); then
    /// every invariant and the clients' contract is verified.
    Chaos(ChaosArgs),
    /// The same scenario against 1, 2, 4… worker processes (API apart), tabulated.
    Scale {
        #[command(flatten)]
        load: LoadArgs,
        /// Worker counts to try, in order.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        workers: Vec<usize>,
    },
}

#[derive(Args)]
pub struct ChaosArgs {
    /// `orderly worker` processes beside `orderly api`.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Concurrent retrying clients.
    #[arg(long, default_value_t = 24)]
    users: usize,
    /// Seconds of load, during which the faults come.
    #[arg(long, default_value_t = 90.0)]
    duration: f64,
    /// Seeds the fault schedule and the clients.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `proxy`: break the links through proxies of the run's own (touches nothing shared);
    /// `services`: restart Postgres, stop RabbitMQ and freeze MongoDB themselves, for every user
    /// of this machine (asked for by name, never by default).
    #[arg(long, value_enum, default_value = "proxy")]
    faults: FaultMode,
    /// Seconds a fault lasts at most.
    #[arg(long, default_value_t = 12.0)]
    fault_secs: f64,
    /// Where the report goes.
    #[arg(long, default_value = "loadtest/results/chaos")]
    out: PathBuf,
    /// Keep the run's database, keys and queues instead of removing them.
    #[arg(long)]
    keep: bool,
    /// The orderly binary (default: `orderly` beside this one).
    #[arg(long)]
    orderly_bin: Option<PathBuf>,
}

impl ChaosArgs {
    pub fn config(self) -> anyhow::Result<ChaosConfig> {
        Ok(ChaosConfig {
            workers: self.workers.max(1),
            users: self.users.max(1),
            duration: Duration::from_secs_f64(self.duration.max(10.0)),
            seed: self.seed,
            mode: self.faults,
            fault_length: Duration::from_secs_f64(self.fault_secs.max(1.0)),
            binary: orderly_binary(self.orderly_bin)?,
            urls: StoreUrls::from_env(),
            out_dir: self.out,
            settings: Vec::new(),
            keep: self.keep,
            command: command_line(),
        })
    }
}

/// The orderly binary to run: the one given, or the one beside this program.
pub fn orderly_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let binary = match given {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("orderly"),
    };
    anyhow::ensure!(
        binary.exists(),
        "no orderly binary at {} (build it, or pass --orderly-bin)",
        binary.display()
    );
    Ok(binary)
}

/// This program's command line, quoted in reports.
pub fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| if i == 0 { "orderly-loadtest".into() } else { a })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Args)]
pub struct LoadArgs {
    #[arg(value_enum)]
    scenario: Scenario,
    /// Closed model: this many concurrent users (the default model, with 64 users).
    #[arg(long, conflicts_with = "rate")]
    users: Option<usize>,
    /// Open model: iterations started per second, whether or not the system keeps up.
    #[arg(long)]
    rate: Option<f64>,
    /// Open model: iterations in flight at most (more arrivals wait in the client, counted).
    #[arg(long, default_value_t = 2_000)]
    max_in_flight: usize,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Override the scenario's product count.
    #[arg(long)]
    products: Option<usize>,
    /// Override the scenario's customer count.
    #[arg(long)]
    customers: Option<usize>,
    /// Override the scenario's units of stock per product.
    #[arg(long)]
    stock: Option<i64>,
    /// Override the share of browses that open a product page instead of a list page (0 to 1).
    #[arg(long)]
    product_pages: Option<f64>,
    /// Seconds per store baseline (Postgres, Redis, RabbitMQ, MongoDB); 0 skips them.
    #[arg(long, default_value_t = 3.0)]
    baseline_secs: f64,
    /// Where the report goes (default: loadtest/results/<scenario>, with `-rate-<R>` in the
    /// open model, so one scenario's closed and open runs keep their own reports).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the run's database, keys and queues instead of removing them.
    #[arg(long)]
    keep: bool,
    /// The orderly binary (default: `orderly` beside this one).
    #[arg(long)]
    orderly_bin: Option<PathBuf>,
    /// Each `orderly worker` in a CPU quota of its own, in CPUs (0.1 is a tenth of one), as a
    /// Kubernetes CPU limit would hold a pod; a cgroup per worker, so it needs root.
    #[arg(long)]
    worker_cpu: Option<f64>,
}

impl LoadArgs {
    pub fn config(&self, layout: Layout, out_suffix: &str) -> anyhow::Result<RunConfig> {
        let worker_millicpu = match self.worker_cpu {
            Some(cpus) if cpus > 0.0 && cpus <= 64.0 => Some((cpus * 1000.0).round() as u32),
            Some(cpus) => anyhow::bail!("--worker-cpu must be above 0 and at most 64, got {cpus}"),
            None => None,
        };
        let layout = match layout {
            Layout::Split { workers, .. } => Layout::Split {
                workers,
                worker_millicpu,
            },
            Layout::Single => Layout::Single,
        };
        let mut shape = self.scenario.default_shape();
        if let Some(products) = self.products {
            shape.products = products.max(1);
        }
        if let Some(customers) = self.customers {
            shape.customers = customers;
        }
        if let Some(stock) = self.stock {
            shape.stock_per_product = stock;
        }
        if let Some(share) = self.product_pages {
            anyhow::ensure!(
                (0.0..=1.0).contains(&share),
                "--product-pages must be from 0 to 1"
            );
            shape.product_pages = share;
        }
        let model = match self.rate {
            Some(rate) if rate > 0.0 => Model::Open {
                rate,
                max_in_flight: self.max_in_flight.max(1),
            },
            Some(_) => anyhow::bail!("--rate must be above 0"),
            None => Model::Closed {
                users: self.users.unwrap_or(64).max(1),
            },
        };
        let binary = orderly_binary(self.orderly_bin.clone())?;
        Ok(RunConfig {
            scenario: self.scenario,
            shape,
            model,
            warmup: Duration::from_secs_f64(self.warmup.max(0.0)),
            duration: Duration::from_secs_f64(self.duration.max(1.0)),
            seed: self.seed,
            layout,
            worker_millicpu,
            binary,
            urls: StoreUrls::from_env(),
            out_dir: self.out.clone().unwrap_or_else(|| {
                let open = match model {
                    Model::Open { rate, .. } => format!("-rate-{rate}"),
                    Model::Closed { .. } => String::new(),
                };
                PathBuf::from(format!(
                    "loadtest/results/{}{open}{out_suffix}",
                    self.scenario.name()
                ))
            }),
            baseline_secs: self.baseline_secs.max(0.0),
            keep: self.keep,
            command: command_line(),
        })
    }
}
