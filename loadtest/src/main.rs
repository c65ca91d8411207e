//! `orderly-loadtest`: see `orderly-loadtest --help` and docs/performance.md.

use std::process::ExitCode;

use clap::Parser;
use orderly_loadtest::cli::{Cli, Command};
use orderly_loadtest::report::Report;
use orderly_loadtest::run::run;
use orderly_loadtest::scale::scale;
use orderly_loadtest::system::Layout;
use orderly_loadtest::verify::Verification;

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
                Layout::Split {
                    workers,
                    worker_millicpu: None,
                }
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
