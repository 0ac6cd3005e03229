//! The `collector` binary: serves by default; `config show`, `backup`, `restore` for operators.

use clap::Parser;
use collector::config::{Cli, Command, ConfigAction};
use collector::{app, telemetry, Application};
use std::process::ExitCode;

// Ingest allocates and frees small objects on every beacon across threads; glibc's malloc was over a fifth of the
// collector's CPU in the ingest profile (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.config.log_format);
    // No transparent huge pages for this process, whatever the host's setting: with them a request thread's first
    // touch of fresh allocator memory zeroed 2 MiB inside the page fault, was preempted there, and its connections
    // waited milliseconds (docs/benchmarks.md). The allocator is built not to ask for them either (Cargo.toml).
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(error = %e, "cannot turn transparent huge pages off for this process");
    }
    let result = match cli.command {
        Some(Command::Config {
            action: ConfigAction::Show,
        }) => collector::config::show(&cli.config).map(|text| print!("{text}")),
        Some(Command::Backup { to }) => {
            storage::embedded::backup::backup(&cli.config.data_dir, &to)
                .map(|rows| {
                    println!(
                        "backed up {rows} rows from {} to {}",
                        cli.config.data_dir.display(),
                        to.display()
                    )
                })
                .map_err(anyhow::Error::from)
        }
        Some(Command::Migrate) => collector::storage_select::migrate(&cli.config)
            .await
            .map(|text| print!("{text}")),
        Some(Command::Restore { from, force }) => {
            storage::embedded::backup::restore(&from, &cli.config.data_dir, force)
                .map(|rows| {
                    println!(
                        "restored {rows} rows from {} into {}",
                        from.display(),
                        cli.config.data_dir.display()
                    )
                })
                .map_err(anyhow::Error::from)
        }
        None => {
            async {
                let app = Application::build(cli.config).await?;
                app.run_until_stopped(app::shutdown_signal()).await
            }
            .await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "collector failed");
            eprintln!("collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
