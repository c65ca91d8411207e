use clap::Parser;
use orderly::{
    app::{self, Dlq},
    cli::{Cli, Command, DlqCommand},
    config::Settings,
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
