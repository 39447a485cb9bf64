//! The one place that knows how to reach the Redis master, standalone or through Sentinel.
//!
//! redis-rs resolves a sentinel master once and keeps talking to that address after a failover
//! and never re-resolves it. So kvq keeps one shared multiplexed connection per process and drops it
//! on I/O errors, timeouts and `READONLY` replies; the next caller re-resolves the master through
//! the sentinels. No lock is held across an await on the fast path, and every wait is bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError};

use crate::config::{parse_host_port, RedisMode, RedisSettings};

/// Time allowed to open a TCP connection and authenticate.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Time allowed for any non-blocking command's reply.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(2000);

/// Why Redis could not be used; every variant maps to 503 at the HTTP edge.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no sentinel knows a writable master named '{name}' ({why})")]
    NoMaster { name: String, why: String },
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("timed out waiting for a redis connection")]
    Timeout,
    #[error("the server a sentinel named is not a master")]
    NotMaster,
}

/// A live connection to the current master, tagged with the generation it belongs to.
#[derive(Clone)]
pub struct Conn {
    pub conn: MultiplexedConnection,
    /// A sibling connection to the same server for `WAIT` (present when
    /// `redis.min_replicas_ack > 0`): `WAIT` blocks the connection it runs on, so it must not run
    /// on the one every request shares.
    pub ack: Option<MultiplexedConnection>,
    /// Increases each time kvq connects anew, so an error only drops the connection it came from.
    pub generation: u64,
}

/// Shared handle to Redis; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RedisSettings,
    current: RwLock<Option<Conn>>,
    /// Single-flight for reconnects: one caller resolves, the others wait a bounded time.
    reconnect: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    /// Address of the master the shared connection last reached, and how often it differed from
    /// the one before (a failover or switchover, as this process saw it; for `/metrics`).
    master: std::sync::Mutex<Option<String>>,
    master_changes: AtomicU64,
}

impl Redis {
    /// Creates the handle without connecting: the process starts even while Redis is down.
    pub fn new(settings: RedisSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                current: RwLock::new(None),
                reconnect: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
                master: std::sync::Mutex::new(None),
                master_changes: AtomicU64::new(0),
            }),
        }
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.inner.settings
    }

    /// The shared connection to the master, connecting (and resolving the master) if needed.
    pub async fn get(&self) -> Result<Conn, ConnectError> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let budget = CONNECT_TIMEOUT * 3;
        let _guard =
            tokio::time::timeout(budget, self.inner.reconnect.lock()).await.map_err(|_| ConnectError::Timeout)?;
        // Another caller may have connected while this one waited.
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let (info, conn, ack) =
            tokio::time::timeout(budget, self.open_pair()).await.map_err(|_| ConnectError::Timeout)??;
        self.note_master(&info);
        let conn = Conn { conn, ack, generation: self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1 };
        *self.inner.current.write().expect("poisoned") = Some(conn.clone());
        Ok(conn)
    }

    fn cached(&self) -> Option<Conn> {
        self.inner.current.read().expect("poisoned").clone()
    }

    /// Reports an error seen on a connection of `generation`; drops that connection when the
    /// error means the master is gone or has become a replica, so the next `get` re-resolves.
    pub fn report(&self, generation: u64, err: &RedisError) {
        if needs_reconnect(err) {
            let mut current = self.inner.current.write().expect("poisoned");
            if current.as_ref().is_some_and(|c| c.generation == generation) {
                tracing::warn!(error = %err, "dropping redis connection; the master will be re-resolved");
                *current = None;
            }
        }
    }

    /// A connection of its own, for blocking reads and pub/sub, with the given reply timeout.
    pub async fn dedicated(&self, response_timeout: Option<Duration>) -> Result<MultiplexedConnection, ConnectError> {
        tokio::time::timeout(CONNECT_TIMEOUT * 3, self.open(response_timeout))
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    /// Connection info of the current master (resolving it through the sentinels if needed).
    pub async fn master_info(&self) -> Result<ConnectionInfo, ConnectError> {
        Ok(self.connect_master(Some(RESPONSE_TIMEOUT)).await?.0)
    }

    /// The shared connection and, when writes await replicas, its sibling for `WAIT`, both to
    /// the one master resolved here.
    /// Times the shared connection found a different master than the one before.
    pub fn master_changes(&self) -> u64 {
        self.inner.master_changes.load(Ordering::Relaxed)
    }

    fn note_master(&self, info: &ConnectionInfo) {
        let addr = info.addr().to_string();
        let mut last = self.inner.master.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref().is_some_and(|a| *a != addr) {
            self.inner.master_changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(master = %addr, previous = %last.as_deref().unwrap_or_default(), "the redis master changed");
        }
        *last = Some(addr);
    }

    async fn open_pair(
        &self,
    ) -> Result<(ConnectionInfo, MultiplexedConnection, Option<MultiplexedConnection>), ConnectError> {
        let (info, conn) = self.connect_master(Some(RESPONSE_TIMEOUT)).await?;
        let ack = match self.inner.settings.min_replicas_ack {
            0 => None,
            _ => Some(self.connect(info.clone(), Some(RESPONSE_TIMEOUT)).await?),
        };
        Ok((info, conn, ack))
    }

    async fn open(&self, response_timeout: Option<Duration>) -> Result<MultiplexedConnection, ConnectError> {
        Ok(self.connect_master(response_timeout).await?.1)
    }

    /// Connects to the master: the URL in standalone mode; in sentinel mode the first address a
    /// sentinel names that really is a master. A stale sentinel (one that still names a replica,
    /// or a server that is gone) must not stop kvq while another sentinel knows the master.
    async fn connect_master(
        &self,
        response_timeout: Option<Duration>,
    ) -> Result<(ConnectionInfo, MultiplexedConnection), ConnectError> {
        let s = &self.inner.settings;
        if s.mode == RedisMode::Standalone {
            let info = with_password(s.url.as_str().into_connection_info()?, s.password.as_ref().map(|p| p.expose()));
            let conn = self.connect(info.clone(), response_timeout).await?;
            return Ok((info, conn));
        }
        let mut tried = Vec::new();
        let mut why = String::from("no sentinel configured");
        for sentinel in &s.sentinels {
            let addr = match self.ask_sentinel(sentinel).await {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    why = format!("sentinel {sentinel} does not monitor it");
                    continue;
                }
                Err(e) => {
                    if is_auth_error(&e) {
                        tracing::warn!(%sentinel, error = %e, "sentinel refused kvq's credentials");
                    } else {
                        tracing::debug!(%sentinel, error = %e, "sentinel did not answer");
                    }
                    why = format!("sentinel {sentinel}: {e}");
                    continue;
                }
            };
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            let info = with_password(
                ConnectionAddr::Tcp(addr.0.clone(), addr.1).into_connection_info()?,
                s.password.as_ref().map(|p| p.expose()),
            );
            match self.connect(info.clone(), response_timeout).await {
                Ok(conn) => return Ok((info, conn)),
                Err(e) => {
                    if let ConnectError::Redis(re) = &e {
                        if is_auth_error(re) {
                            tracing::warn!(master = %format!("{}:{}", addr.0, addr.1), error = %re, "redis refused kvq's credentials");
                        }
                    }
                    tracing::debug!(%sentinel, master = %format!("{}:{}", addr.0, addr.1), error = %e, "not a usable master");
                    why = format!("sentinel {sentinel} names {}:{}: {e}", addr.0, addr.1);
                }
            }
        }
        Err(ConnectError::NoMaster { name: s.master_name.clone(), why })
    }

    async fn connect(
        &self,
        info: ConnectionInfo,
        response_timeout: Option<Duration>,
    ) -> Result<MultiplexedConnection, ConnectError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(response_timeout);
        let client = redis::Client::open(info)?;
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        if self.inner.settings.mode == RedisMode::Sentinel {
            // A sentinel may answer with a stale address during a failover: trust only a master.
            let role: redis::Value = redis::cmd("ROLE").query_async(&mut conn).await?;
            if !is_master_role(&role) {
                return Err(ConnectError::NotMaster);
            }
        }
        Ok(conn)
    }

    async fn ask_sentinel(&self, sentinel: &str) -> Result<Option<(String, u16)>, RedisError> {
        let s = &self.inner.settings;
        let (host, port) = parse_host_port(sentinel).expect("validated at start");
        let info = with_password(
            ConnectionAddr::Tcp(host, port).into_connection_info()?,
            s.sentinel_password.as_ref().map(|p| p.expose()),
        );
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT / 2))
            .set_response_timeout(Some(CONNECT_TIMEOUT / 2));
        let mut conn = redis::Client::open(info)?.get_multiplexed_async_connection_with_config(&config).await?;
        let addr: Option<(String, String)> =
            redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(&s.master_name).query_async(&mut conn).await?;
        Ok(addr.and_then(|(h, p)| Some((h, p.parse().ok()?))))
    }
}

/// Wrong password or user: worth a warning, unlike an unreachable server during a failover.
fn is_auth_error(err: &RedisError) -> bool {
    let text = err.to_string();
    matches!(err.kind(), redis::ErrorKind::AuthenticationFailed)
        || ["WRONGPASS", "NOAUTH", "NOPERM", "invalid password", "invalid username-password"]
            .iter()
            .any(|needle| text.contains(needle))
}

fn with_password(info: ConnectionInfo, password: Option<&str>) -> ConnectionInfo {
    match password {
        Some(p) if !p.is_empty() => {
            let redis = info.redis_settings().clone().set_password(p);
            info.set_redis_settings(redis)
        }
        _ => info,
    }
}

fn is_master_role(role: &redis::Value) -> bool {
    match role {
        redis::Value::Array(items) => {
            matches!(
                items.first(),
                Some(redis::Value::BulkString(b)) if b == b"master"
            ) || matches!(items.first(), Some(redis::Value::SimpleString(s)) if s == "master")
        }
        _ => false,
    }
}

/// Errors after which the connection must not be reused: the master may have moved.
pub fn needs_reconnect(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || matches!(
            err.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
        )
        || err.to_string().contains("NOREPLICAS")
}

/// Errors that mean "Redis is unavailable right now" rather than "this request is bad".
pub fn is_unavailable(err: &RedisError) -> bool {
    needs_reconnect(err) || err.to_string().contains("LOADING") || err.to_string().contains("BUSY ")
}
