//! TLS and ACL credentials for every connection kvq opens: to the master, its `WAIT` sibling,
//! the pub/sub and blocking connections, and the sentinels.
//!
//! The CA bundle, client certificate and key are read from disk on every new connection, so a
//! renewed certificate (cert-manager rewrites the mounted Secret) is used from the next
//! reconnect on without a restart; connections already open keep the session they verified.
//! There is no plaintext fallback: a `rediss://` target whose certificate does not verify is
//! an error, never a retry without TLS.

use std::path::Path;

use redis::{ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};

use crate::config::RedisSettings;

/// How to reach one server: its address, whether over TLS, and who to authenticate as.
pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: bool,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
}

/// Installs the process-wide rustls crypto provider (ring) once; later calls are no-ops.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for `target` with the TLS material read from disk now.
pub fn client(settings: &RedisSettings, target: &Target<'_>) -> Result<redis::Client, TlsError> {
    let addr = match target.tls {
        true => ConnectionAddr::TcpTls {
            host: target.host.to_string(),
            port: target.port,
            insecure: false,
            tls_params: None,
        },
        false => ConnectionAddr::Tcp(target.host.to_string(), target.port),
    };
    let info = with_auth(addr.into_connection_info().map_err(TlsError::Redis)?, target.username, target.password);
    if !target.tls {
        return redis::Client::open(info).map_err(TlsError::Redis);
    }
    redis::Client::build_with_tls(info, certificates(settings)?).map_err(TlsError::Redis)
}

/// The standalone URL's client: its host, port and database, TLS if the scheme says so.
pub fn url_client(settings: &RedisSettings) -> Result<redis::Client, TlsError> {
    let info = settings.url.as_str().into_connection_info().map_err(TlsError::Redis)?;
    let info = with_auth(info, settings.username.as_deref(), settings.password.as_ref().map(|p| p.expose()));
    match info.addr() {
        ConnectionAddr::TcpTls { .. } => {
            redis::Client::build_with_tls(info, certificates(settings)?).map_err(TlsError::Redis)
        }
        _ => redis::Client::open(info).map_err(TlsError::Redis),
    }
}

/// The cluster client for the seed nodes, with the same TLS material and credentials as
/// `client` (the TLS material is read now: every new cluster client reads it anew).
pub fn cluster_client(
    settings: &RedisSettings,
    response_timeout: Option<std::time::Duration>,
) -> Result<redis::cluster::ClusterClient, TlsError> {
    let mut seeds = Vec::with_capacity(settings.nodes.len());
    for node in &settings.nodes {
        let (host, port) = crate::config::parse_host_port(node).expect("validated at start");
        let addr = match settings.tls {
            true => ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None },
            false => ConnectionAddr::Tcp(host, port),
        };
        seeds.push(addr.into_connection_info().map_err(TlsError::Redis)?);
    }
    let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
        .connection_timeout(super::CONNECT_TIMEOUT)
        // Redirections and a failover are retried within a bounded time, then answered 503.
        .retries(6)
        .min_retry_wait(50)
        .max_retry_wait(1000)
        .response_timeout(response_timeout.unwrap_or(super::RESPONSE_TIMEOUT))
        .overall_response_timeout(Some(
            response_timeout.unwrap_or(super::RESPONSE_TIMEOUT) + super::CLUSTER_RETRY_BUDGET,
        ));
    if let Some(password) = settings.password.as_ref().map(|p| p.expose()).filter(|p| !p.is_empty()) {
        builder = builder.password(password);
        if let Some(user) = &settings.username {
            builder = builder.username(user);
        }
    }
    if settings.tls {
        builder = builder.tls(redis::TlsMode::Secure).certs(certificates(settings)?);
    }
    builder.build().map_err(TlsError::Redis)
}

/// Why a TLS connection could not be set up before a byte was sent.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {setting} {path}: {error}")]
    File { setting: &'static str, path: String, error: std::io::Error },
    #[error("{0}")]
    Redis(redis::RedisError),
}

fn certificates(settings: &RedisSettings) -> Result<TlsCertificates, TlsError> {
    let root_cert = match &settings.tls_ca_file {
        Some(path) => Some(read(path, "the CA file (KVQ__REDIS__TLS_CA_FILE)")?),
        None => None,
    };
    let client_tls = match (&settings.tls_cert_file, &settings.tls_key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(cert, "the client certificate (KVQ__REDIS__TLS_CERT_FILE)")?,
            client_key: read(key, "the client key (KVQ__REDIS__TLS_KEY_FILE)")?,
        }),
        _ => None,
    };
    Ok(TlsCertificates { client_tls, root_cert })
}

fn read(path: &Path, setting: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::File { setting, path: path.display().to_string(), error })
}

fn with_auth(info: ConnectionInfo, username: Option<&str>, password: Option<&str>) -> ConnectionInfo {
    let mut redis = info.redis_settings().clone();
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        redis = redis.set_password(p);
        if let Some(u) = username {
            redis = redis.set_username(u);
        }
    }
    info.set_redis_settings(redis)
}

/// Whether an error comes from the TLS layer (handshake, certificate, key): a configuration
/// problem an operator must fix, unlike a server that is restarting.
pub fn is_tls_error(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    ["certificate", "handshake", "received fatal alert", "private key", "peer is incompatible", "peer misbehaved"]
        .iter()
        .any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::is_tls_error;

    #[test]
    fn tls_failures_are_told_apart_from_a_server_that_is_down() {
        for tls in [
            "invalid peer certificate: UnknownIssuer",
            "received fatal alert: CertificateRequired",
            "Unable to extract private key from PEM file",
        ] {
            assert!(is_tls_error(tls), "{tls}");
        }
        for other in ["Connection refused (os error 111)", "timed out", "WRONGPASS invalid username-password pair"] {
            assert!(!is_tls_error(other), "{other}");
        }
    }
}
