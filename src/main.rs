use clap::{Parser, Subcommand};
use orderly::{
    app::{self, Dlq, Which},
    config::Settings,
    messaging::topology::Queue,
    roles::Role,
    telemetry,
};

// The load test's profile put a fifth of orderly's CPU in the system allocator (many small,
// short-lived buffers per message and request); mimalloc serves those from thread-local pages.
// Built without transparent huge pages (`no_thp`): mimalloc otherwise asks for them, and every
// page it hands back and touches again costs the kernel a 2 MiB clear. That was 57% of
// orderly's CPU at 250 orders/s and stalled its threads (`POST /orders` p99 5.9 s → 76 ms).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// orderly: a concurrency-safe order processing engine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
enum DlqCommand {
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
struct Target {
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    id: Option<String>,
    #[arg(long)]
    all: bool,
    /// With --all: only this queue's.
    #[arg(long, value_parser = queue, requires = "all")]
    queue: Option<Queue>,
}

impl Target {
    fn which(self) -> Which {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format, &settings.log_filter);
    match cli.command {
        Command::Run => app::serve(settings, Role::ALL.to_vec()).await,
        Command::Api => app::serve(settings, Vec::new()).await,
        Command::Worker { roles } => app::work(settings, roles).await,
        Command::Migrate => app::migrate(&settings).await,
        Command::Seed => app::seed(&settings).await,
        Command::Dlq { command } => {
            let command = match command {
                DlqCommand::List { queue } => Dlq::List(queue),
                DlqCommand::Show { id } => Dlq::Show(id),
                DlqCommand::Replay { target } => Dlq::Replay(target.which()),
                DlqCommand::Purge { yes: false, .. } => {
                    eprintln!("purging drops messages for good: add --yes to go ahead");
                    std::process::exit(2);
                }
                DlqCommand::Purge { target, .. } => Dlq::Purge(target.which()),
            };
            if !app::dlq(&settings, command).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Reconcile { check } => {
            if !app::reconcile(&settings, check).await? {
                eprintln!(
                    "Redis has drifted from Postgres; `orderly reconcile` (with the API and workers stopped) rebuilds it"
                );
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
