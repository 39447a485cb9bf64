//! Wiring of the worker process: its health/metrics listener and the consumer loop.

use std::future::Future;
use std::sync::Arc;

use poem::listener::TcpAcceptor;
use poem::{EndpointExt, Route, Server};

use crate::config::Settings;
use crate::http;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::worker::Worker;

pub struct WorkerApp {
    acceptor: TcpAcceptor,
    port: u16,
    worker: Worker,
    store: Store,
    metrics: Arc<Metrics>,
}

impl WorkerApp {
    /// Binds the health listener (port 0 picks a free port). Does not need Redis to be up.
    pub async fn build(settings: &Settings) -> std::io::Result<Self> {
        let (acceptor, port) = http::bind(settings.worker.bind).await?;
        let store = Store::from_settings(settings);
        let metrics = Arc::new(Metrics::new());
        let worker = Worker::new(settings, store.clone(), metrics.clone());
        Ok(Self { acceptor, port, worker, store, metrics })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Serves health endpoints and consumes tasks until `stop` resolves; then drains.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let routes = http::with_probes(Route::new()).data(self.store.clone()).data(self.metrics.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            let _ = stop_tx.send(true);
        });
        let mut worker_stop = stop_rx.clone();
        let mut http_stop = stop_rx;
        let consumer = tokio::spawn(self.worker.run(async move {
            let _ = worker_stop.wait_for(|s| *s).await;
        }));
        let http = Server::new_with_acceptor(self.acceptor).run_with_graceful_shutdown(
            routes,
            async move {
                let _ = http_stop.wait_for(|s| *s).await;
            },
            Some(std::time::Duration::from_secs(5)),
        );
        let (http_result, _) = tokio::join!(http, consumer);
        http_result
    }
}
