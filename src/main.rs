use clap::{Parser, Subcommand};
use orderly::{app, config::Settings, roles::Role, telemetry};

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
