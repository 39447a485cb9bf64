//! kvq-worker: applies queued writes. Configuration: README, "Configuration".
//!
//! Without arguments it runs the worker. `kvq-worker dead-letters list` and
//! `kvq-worker dead-letters replay (--all | ID...)` inspect and replay the dead-letter stream
//! (see `kvq::worker::dead_letters`).

use std::process::ExitCode;

use kvq::config::Settings;
use kvq::store::Store;
use kvq::worker::app::WorkerApp;
use kvq::worker::dead_letters::{self, Command};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match Command::parse(&args) {
        Ok(c) => c,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvq-worker: {e}");
            return ExitCode::from(2);
        }
    };
    if command != Command::Run {
        let store = Store::from_settings(&settings);
        return ExitCode::from(dead_letters::run(&store, command).await);
    }
    kvq::telemetry::init(settings.log.format);
    if let Err(why) = kvq::store::refuse_wrong_layout(&Store::from_settings(&settings)).await {
        eprintln!("kvq-worker: {why}");
        return ExitCode::from(2);
    }
    let app = match WorkerApp::build(&settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("kvq-worker: cannot listen on {}: {e}", settings.worker.bind);
            return ExitCode::from(1);
        }
    };
    tracing::info!(bind = %settings.worker.bind, consumer = app.worker().consumer(), "kvq-worker started");
    match app.run_until_stopped(kvq::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "kvq-worker failed");
            ExitCode::from(1)
        }
    }
}
