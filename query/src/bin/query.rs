//! The `query` CLI: see `query --help`.

use clap::Parser;
use query::cli::{run, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(out) => {
            print!("{out}");
            std::process::ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("query: {msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
