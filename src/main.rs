use clap::{Parser, Subcommand};
use orderly::{app, config::Settings, telemetry};

/// orderly: a concurrency-safe order processing engine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process (today: the HTTP API and its background tasks).
    Run,
    /// Run only the HTTP API.
    Api,
    /// Apply the Postgres migrations (creating the database if needed) and exit.
    Migrate,
    /// Load the demo catalog and demo customer (idempotent) and print the demo credentials.
    Seed,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format, &settings.log_filter);
    match cli.command {
        Command::Run | Command::Api => app::serve(settings).await,
        Command::Migrate => app::migrate(&settings).await,
        Command::Seed => app::seed(&settings).await,
    }
}
