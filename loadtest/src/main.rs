//! `orderly-loadtest`: see `orderly-loadtest --help` and the README's Performance section.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use orderly_loadtest::chaos::{ChaosConfig, FaultMode};
use orderly_loadtest::driver::Model;
use orderly_loadtest::report::Report;
use orderly_loadtest::run::{RunConfig, run};
use orderly_loadtest::scale::scale;
use orderly_loadtest::scenario::Scenario;
use orderly_loadtest::system::{Layout, StoreUrls};
use orderly_loadtest::verify::Verification;

/// Concurrent load against orderly, then a verification of every invariant. Exits 1 when an
/// invariant is violated or the load did not cover the measured window, 2 when the run itself
/// could not be done.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
struct ChaosArgs {
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
    fn config(self) -> anyhow::Result<ChaosConfig> {
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
fn orderly_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
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
fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| if i == 0 { "orderly-loadtest".into() } else { a })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Args)]
struct LoadArgs {
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
}

impl LoadArgs {
    fn config(&self, layout: Layout, out_suffix: &str) -> anyhow::Result<RunConfig> {
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

/// Names every violated check on stderr, with its examples.
fn print_violations(verification: &Verification) {
    for check in verification.violations() {
        eprintln!(
            "VIOLATION {}: {} ({} of {})",
            check.name, check.invariant, check.violations, check.checked
        );
        for example in &check.examples {
            eprintln!("    {example}");
        }
    }
}

fn verdict(report: &Report, out: &std::path::Path) -> bool {
    print_violations(&report.verification);
    match &report.throughput {
        Some(t) => eprintln!(
            "{}: {:.1} sagas completed/s, {:.0} requests/s; report in {}",
            report.scenario,
            t.sagas_completed_per_s,
            t.requests_per_s,
            out.display()
        ),
        None => eprintln!(
            "{}: NO THROUGHPUT: the load covered only {:.1} of {} s; report in {}",
            report.scenario,
            report.load_covered_s,
            report.duration_s,
            out.display()
        ),
    }
    report.passed() && report.throughput.is_some()
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run { load, workers } => {
            let layout = if workers == 0 {
                Layout::Single
            } else {
                Layout::Split { workers }
            };
            match load.config(layout, "") {
                Ok(config) => {
                    let out = config.out_dir.clone();
                    run(config).await.map(|o| verdict(&o.report, &out))
                }
                Err(e) => Err(e),
            }
        }
        Command::Chaos(args) => match args.config() {
            Ok(config) => {
                let out = config.out_dir.clone();
                orderly_loadtest::chaos::chaos(config).await.map(|report| {
                    print_violations(&report.verification);
                    eprintln!(
                        "chaos: {} faults, {} orders accepted, {}; report in {}",
                        report.faults.len(),
                        report.clients.accepted,
                        if report.passed() {
                            "every check passed"
                        } else {
                            "FAILED"
                        },
                        out.display()
                    );
                    report.passed()
                })
            }
            Err(e) => Err(e),
        },
        Command::Scale { load, workers } => match load.config(Layout::Single, "-scale") {
            Ok(config) => scale(&config, &workers).await.map(|steps| {
                println!("{}", orderly_loadtest::scale::markdown(&steps));
                steps.iter().all(|s| {
                    verdict(
                        &s.report,
                        &config.out_dir.join(format!("workers-{}", s.workers)),
                    )
                })
            }),
            Err(e) => Err(e),
        },
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
