//! The `collector` binary: `collector` serves; `collector config` prints the effective configuration.

use clap::Parser;
use collector::config::{Cli, Command};
use collector::{app, telemetry, Application};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.config.log_format);
    if let Some(Command::Config) = cli.command {
        println!("{:#?}", cli.config);
        return std::process::ExitCode::SUCCESS;
    }
    let result = async {
        let app = Application::build(cli.config).await?;
        app.run_until_stopped(app::shutdown_signal()).await
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "collector failed");
            eprintln!("collector: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
