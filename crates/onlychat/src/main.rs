//! `onlychat`: one binary, several processes. `main` only parses configuration, starts
//! telemetry and hands over to the subcommand in `commands.rs`.
#![forbid(unsafe_code)]

mod commands;
mod config;
mod history;
mod serve;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

/// A setting that is missing or malformed: reported in one line, exit code 2.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = config::Cli::parse();
    let _telemetry = telemetry::init();
    match commands::run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<ConfigError>() => {
            eprintln!("onlychat: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "onlychat stopped");
            eprintln!("onlychat: {e:#}");
            ExitCode::FAILURE
        }
    }
}
