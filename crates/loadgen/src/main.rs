//! `onlychat-loadgen`: a load generator for onlychat and the servers it is compared with.
//!
//! The coordinator (this process) starts worker processes of the same binary, each holding a
//! slice of the connections (a process may hold at most 20,000 open files here), and merges
//! their outcomes into one report. See docs/loadgen.md.

mod cli;
mod conn;
mod coordinator;
mod exchange;
mod fields;
mod outbox;
mod peer;
mod plan;
mod report;
mod resume;
mod rooms;
mod seen;
mod stamp;
mod stats;
mod storm;
mod worker;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let worker = std::env::var(coordinator::WORKER_ENV).ok();
    // Workers run single-threaded: the server under test needs the other cores.
    let runtime = match worker {
        Some(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("onlychat-loadgen: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match worker.as_deref().and_then(|w| w.split_once('/')) {
            Some((me, of)) => {
                let prefix = std::env::var(coordinator::PREFIX_ENV).unwrap_or_else(|_| "lg".into());
                let (me, of) = (me.parse()?, of.parse()?);
                worker::run(cli, prefix, me, of).await
            }
            None => coordinator::run(cli).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onlychat-loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
