//! The command line: `orderly run|api|worker|migrate|seed|reconcile|dlq`. In the library so the
//! binary stays a few lines and a test can parse every command the docs show.

use clap::{Parser, Subcommand};

use crate::{app::Which, messaging::topology::Queue, roles::Role};

/// orderly: a concurrency-safe order processing engine.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run every role in one process: the HTTP API and all worker roles.
    Run,
    /// Run only the HTTP API (run the worker roles with `orderly worker`).
    Api,
    /// Run worker roles without the API; any number of copies may run side by side.
    Worker {
        /// Comma-separated roles: relay, orchestrator, inventory, payments, history.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "relay,orchestrator,inventory,payments,history"
        )]
        roles: Vec<Role>,
    },
    /// Apply the Postgres migrations (creating the database if needed) and exit.
    Migrate,
    /// Load the demo catalog and demo customer (idempotent) and print the demo credentials.
    Seed,
    /// Rebuild Redis's stock counters and reservation records from Postgres (after Redis lost
    /// its data; stop the API and workers first), or with --check only report drift.
    Reconcile {
        /// Compare and report; change nothing. Exits non-zero when Redis has drifted.
        #[arg(long)]
        check: bool,
    },
    /// The dead-letter queues: list, show, replay or purge what failed, with why.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Every dead letter (of one queue), with its failures and reason.
    List {
        #[arg(long, value_parser = queue)]
        queue: Option<Queue>,
    },
    /// One dead letter, whole, as JSON.
    Show { id: String },
    /// Put a dead letter, or --all of them, back on its queue as first sent.
    Replay {
        #[command(flatten)]
        target: Target,
    },
    /// Drop a dead letter, or --all of them, for good (asks for --yes).
    Purge {
        #[command(flatten)]
        target: Target,
        /// Yes, drop them: they cannot be brought back.
        #[arg(long)]
        yes: bool,
    },
}

/// One dead letter by id, or `--all` (of one `--queue`).
#[derive(clap::Args)]
pub struct Target {
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    id: Option<String>,
    #[arg(long)]
    all: bool,
    /// With --all: only this queue's.
    #[arg(long, value_parser = queue, requires = "all")]
    queue: Option<Queue>,
}

impl Target {
    pub fn which(self) -> Which {
        match self.id {
            Some(id) => Which::One(id),
            None => Which::All(self.queue),
        }
    }
}

fn queue(raw: &str) -> Result<Queue, String> {
    Queue::parse(raw)
        .ok_or_else(|| "expected inventory, payments, orchestrator or history".to_owned())
}
