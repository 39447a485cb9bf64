//! kvq-server: the HTTP API. Configuration: README, "Configuration".

use std::process::ExitCode;

use kvq::config::Settings;
use kvq::server::ServerApp;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvq-server: {e}");
            return ExitCode::from(2);
        }
    };
    kvq::telemetry::init(settings.log.format);
    if let Err(why) = kvq::store::refuse_wrong_layout(&kvq::store::Store::from_settings(&settings)).await {
        eprintln!("kvq-server: {why}");
        return ExitCode::from(2);
    }
    let app = match ServerApp::build(&settings).await {
        Ok(app) => app,
        Err(kvq::server::BuildError::Listen(e)) => {
            eprintln!("kvq-server: cannot listen on {}: {e}", settings.server.bind);
            return ExitCode::from(1);
        }
        Err(e @ kvq::server::BuildError::Auth(_)) => {
            eprintln!("kvq-server: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(bind = %settings.server.bind, port = app.port(), "kvq-server started");
    match app.run_until_stopped(kvq::shutdown::signal()).await {
        Ok(()) => {
            tracing::info!("kvq-server stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "kvq-server failed");
            ExitCode::from(1)
        }
    }
}
