//! kvq-worker: applies queued writes. Configuration as in design §5.

use std::process::ExitCode;

use kvq::config::Settings;
use kvq::worker::app::WorkerApp;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvq-worker: {e}");
            return ExitCode::from(2);
        }
    };
    kvq::telemetry::init(settings.log.format);
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
