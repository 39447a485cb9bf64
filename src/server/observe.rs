//! Per-request span, access log and metrics.

use std::sync::Arc;
use std::time::Instant;

use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use tracing::Instrument;

use crate::http::PROBE_PATHS;
use crate::metrics::{Metrics, RequestLabels, RouteLabels};

pub use super::routes::route_of;

pub struct Observe(pub Arc<Metrics>);

impl<E: Endpoint> Middleware<E> for Observe {
    type Output = ObserveEndpoint<E>;
    fn transform(&self, ep: E) -> Self::Output {
        ObserveEndpoint { inner: ep, metrics: self.0.clone() }
    }
}

pub struct ObserveEndpoint<E> {
    inner: E,
    metrics: Arc<Metrics>,
}

impl<E: Endpoint> Endpoint for ObserveEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let method = method_label(req.method());
        let route = route_of(req.uri().path());
        let span = tracing::info_span!(
            "request",
            method = %method,
            route,
            status = tracing::field::Empty,
            task_id = tracing::field::Empty,
            key = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self.inner.call(req).instrument(span.clone()).await;
        let response = match result {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        };
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        span.record("status", status);
        self.metrics.http_requests.get_or_create(&RequestLabels { method, route, status }).inc();
        self.metrics.http_duration.get_or_create(&RouteLabels { method, route }).observe(elapsed.as_secs_f64());
        span.in_scope(|| {
            let ms = elapsed.as_secs_f64() * 1000.0;
            if PROBE_PATHS.contains(&route) {
                tracing::debug!(status, ms, "served");
            } else if status >= 500 {
                tracing::warn!(status, ms, "served");
            } else {
                tracing::info!(status, ms, "served");
            }
        });
        Ok(response)
    }
}

/// The method as a static label (no allocation per request; unusual methods share one label).
fn method_label(m: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *m {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}
