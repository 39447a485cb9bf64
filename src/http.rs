//! HTTP pieces both binaries share: binding the listener, the probe and metrics routes, and
//! small helpers.

use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::{get, Route};

use crate::{health, metrics};

/// Bound on a Redis query made to answer a probe, `/metrics` or the home page, well under a
/// probe's timeout.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(1500);

/// Seconds a client should wait before retrying while Redis is unavailable (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// `Retry-After` with `RETRY_AFTER_SECONDS`.
pub fn retry_after() -> (poem::http::HeaderName, poem::http::HeaderValue) {
    (poem::http::header::RETRY_AFTER, poem::http::HeaderValue::from(RETRY_AFTER_SECONDS))
}

/// Binds a listener (port 0 picks a free port) and returns it with the port it got.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<(TcpAcceptor, u16)> {
    let acceptor = TcpListener::bind(addr).into_acceptor().await?;
    let port = acceptor.local_addr().first().and_then(|a| a.as_socket_addr().map(|s| s.port())).unwrap_or(0);
    Ok((acceptor, port))
}

/// The paths of the probe and metrics routes.
pub const PROBE_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Adds `/healthz`, `/readyz` and `/metrics`, the routes both binaries serve. Their handlers
/// read a `Store` and an `Arc<Metrics>` from request data, which the caller attaches.
pub fn with_probes(routes: Route) -> Route {
    routes
        .at(PROBE_PATHS[0], get(health::healthz))
        .at(PROBE_PATHS[1], get(health::readyz))
        .at(PROBE_PATHS[2], get(metrics::serve))
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for links to keys.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
