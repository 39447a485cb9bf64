//! The one place that knows how to reach Redis: the master, standalone or through Sentinel, or
//! a Redis Cluster (where redis-rs routes each command to its slot's master and follows
//! redirections and failovers itself).
//!
//! redis-rs resolves a sentinel master once and keeps talking to that address after a failover
//! and never re-resolves it. So kvq keeps one shared multiplexed connection per process and drops it
//! on I/O errors, timeouts and `READONLY` replies; the next caller re-resolves the master through
//! the sentinels. No lock is held across an await on the fast path, and every wait is bounded.
//! TLS and ACL credentials are applied in `tls`, to every connection alike.

mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, ConnectionInfo, RedisError, RedisFuture, Value};

use crate::config::{parse_host_port, RedisMode, RedisSettings};
use tls::{is_tls_error, Target, TlsError};

/// Time allowed to open a TCP connection and authenticate.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Time allowed for any non-blocking command's reply.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(2000);
/// Cluster mode: time a request may spend past one reply timeout on redirections and retries
/// while a failover or a slot migration is under way, before it is answered 503.
pub const CLUSTER_RETRY_BUDGET: Duration = Duration::from_millis(3000);

/// A connection to one server, or to a whole cluster (commands go to their slot's master).
#[derive(Clone)]
pub enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Sends `pipe` to the master of `slot` in a cluster (its commands may name no key, or
    /// none of that slot: `CLUSTER MYID` answers for that master), or to the one server, and
    /// reads its replies as `T`.
    pub async fn query_on_slot<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
        slot: u16,
    ) -> Result<T, RedisError> {
        match self {
            Connection::Single(c) => pipe.query_async(c).await,
            Connection::Cluster(c) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                let n = pipe.cmd_iter().count();
                let values = c.route_pipeline(pipe.clone(), 0, n, route).await?;
                let values: Vec<Value> = values.into_iter().map(Value::extract_error).collect::<Result<_, _>>()?;
                Ok(T::from_redis_value(Value::Array(values))?)
            }
        }
    }
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

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
    /// TLS could not be set up or the server's certificate did not verify; never retried
    /// without TLS.
    #[error("TLS: {0}")]
    Tls(String),
}

impl From<TlsError> for ConnectError {
    fn from(e: TlsError) -> Self {
        match e {
            TlsError::Redis(e) => e.into(),
            file @ TlsError::File { .. } => ConnectError::Tls(file.to_string()),
        }
    }
}

impl ConnectError {
    /// A TLS failure or refused credentials: the operator must act, a retry alone will not help.
    fn needs_operator(&self) -> bool {
        match self {
            ConnectError::Tls(_) => true,
            ConnectError::Redis(e) => is_auth_error(e),
            ConnectError::NoMaster { why, .. } => {
                is_tls_error(why) || why.contains("WRONGPASS") || why.contains("NOPERM")
            }
            _ => false,
        }
    }
}

/// A connect error with TLS failures named as such (rustls reports them as I/O errors).
fn classify_connect(server: &str, e: RedisError) -> ConnectError {
    let text = e.to_string();
    if is_tls_error(&text) {
        let hint = if text.contains("invalid peer certificate") {
            " (is KVQ__REDIS__TLS_CA_FILE the CA that signed the server's certificate?)"
        } else if text.contains("CertificateRequired") {
            " (the server requires a client certificate: KVQ__REDIS__TLS_CERT_FILE and KVQ__REDIS__TLS_KEY_FILE)"
        } else {
            ""
        };
        ConnectError::Tls(format!("{server}: {text}{hint}"))
    } else {
        ConnectError::Redis(e)
    }
}

/// A live connection to the current master, tagged with the generation it belongs to.
#[derive(Clone)]
pub struct Conn {
    pub conn: Connection,
    /// A sibling connection to the same server for `WAIT` (present when
    /// `redis.min_replicas_ack > 0`): `WAIT` blocks the connection it runs on, so it must not run
    /// on the one every request shares.
    pub ack: Option<Connection>,
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
    /// The last connect failure logged, so a failure that persists is logged once, not per retry.
    last_failure: Mutex<Option<String>>,
}

impl Redis {
    /// Creates the handle without connecting: the process starts even while Redis is down.
    pub fn new(settings: RedisSettings) -> Self {
        tls::install_crypto_provider();
        Self {
            inner: Arc::new(Inner {
                settings,
                current: RwLock::new(None),
                reconnect: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
                master: std::sync::Mutex::new(None),
                master_changes: AtomicU64::new(0),
                last_failure: Mutex::new(None),
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
        let opened = tokio::time::timeout(budget, self.open_pair()).await.map_err(|_| ConnectError::Timeout);
        let (info, conn, ack) = self.log_outcome(opened.and_then(|r| r))?;
        if let Some(info) = &info {
            self.note_master(info);
        }
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

    /// A connection of its own, for blocking reads, with the given reply timeout.
    pub async fn dedicated(&self, response_timeout: Option<Duration>) -> Result<Connection, ConnectError> {
        let opened = tokio::time::timeout(CONNECT_TIMEOUT * 3, self.open(response_timeout))
            .await
            .map_err(|_| ConnectError::Timeout);
        self.log_outcome(opened.and_then(|r| r))
    }

    /// A connection of its own for blocking reads of the keys in `slot`: outside a cluster one
    /// to the master (as `dedicated`); in a cluster one to the node the slot map names as the
    /// slot's master, by the endpoint it announces (its hostname, which TLS certificates name).
    /// A cluster connection would open one connection per node for each reader. When the slot
    /// moves or fails over, the read answers an error and the caller asks again.
    pub async fn slot_reader(&self, slot: u16, response_timeout: Duration) -> Result<Connection, ConnectError> {
        if !self.is_cluster() {
            return self.dedicated(Some(response_timeout)).await;
        }
        let opened = tokio::time::timeout(CONNECT_TIMEOUT * 3, async {
            let mut shared = self.get().await?.conn;
            let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut shared).await?;
            let (host, port) = slot_master(&slots, slot).ok_or_else(|| ConnectError::NoMaster {
                name: format!("slot {slot}"),
                why: "no master serves it in the cluster's slot map".into(),
            })?;
            let client = self.server_client(&host, port)?;
            Ok(Connection::Single(self.connect(&client, Some(response_timeout)).await?))
        })
        .await
        .map_err(|_| ConnectError::Timeout);
        self.log_outcome(opened.and_then(|r| r))
    }

    /// Whether kvq talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.settings.mode == RedisMode::Cluster
    }

    /// Logs a connect failure once per distinct reason (error for TLS and credentials, which an
    /// operator must fix; warn otherwise) and the recovery once; retries stay quiet.
    fn log_outcome<T>(&self, result: Result<T, ConnectError>) -> Result<T, ConnectError> {
        let mut last = self.inner.last_failure.lock().expect("poisoned");
        match &result {
            Ok(_) => {
                if last.take().is_some() {
                    tracing::info!("connected to redis again");
                }
            }
            Err(e) => {
                let text = e.to_string();
                if last.as_deref() != Some(text.as_str()) {
                    if e.needs_operator() {
                        tracing::error!(error = %text, "cannot connect to redis; kvq stays unready until this is fixed");
                    } else {
                        tracing::warn!(error = %text, "cannot connect to redis; retrying");
                    }
                    *last = Some(text);
                }
            }
        }
        result
    }

    /// Where to subscribe to kvq's pub/sub channel: the current master (resolving it through
    /// the sentinels if needed); in a cluster the first seed node that answers, since a cluster
    /// delivers every message to every node.
    pub async fn pubsub_info(&self) -> Result<ConnectionInfo, ConnectError> {
        if self.is_cluster() {
            return self.first_cluster_node().await;
        }
        Ok(self.connect_master(Some(RESPONSE_TIMEOUT)).await?.0)
    }

    /// A client for one Redis server (not a sentinel) with kvq's TLS setting and credentials.
    fn server_client(&self, host: &str, port: u16) -> Result<redis::Client, TlsError> {
        let s = &self.inner.settings;
        let target = Target {
            host,
            port,
            tls: s.tls,
            username: s.username.as_deref(),
            password: s.password.as_ref().map(|p| p.expose()),
        };
        tls::client(s, &target)
    }

    async fn first_cluster_node(&self) -> Result<ConnectionInfo, ConnectError> {
        let s = &self.inner.settings;
        let mut why = ConnectError::NoMaster { name: "cluster".into(), why: "no node configured".into() };
        for node in &s.nodes {
            let (host, port) = parse_host_port(node).expect("validated at start");
            let client = self.server_client(&host, port)?;
            match self.connect(&client, Some(RESPONSE_TIMEOUT)).await {
                Ok(_) => return Ok(client.get_connection_info().clone()),
                Err(e) => why = e,
            }
        }
        Err(why)
    }

    /// A cluster connection with the given reply timeout.
    async fn connect_cluster(&self, response_timeout: Option<Duration>) -> Result<Connection, ConnectError> {
        let client = tls::cluster_client(&self.inner.settings, response_timeout)?;
        let conn = client.get_async_connection().await.map_err(|e| classify_connect("redis cluster", e))?;
        Ok(Connection::Cluster(conn))
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

    /// The shared connection and, when writes await replicas, its sibling for `WAIT` (to the
    /// same master, or a cluster connection of its own), and the master's address when there is
    /// one master.
    async fn open_pair(&self) -> Result<(Option<ConnectionInfo>, Connection, Option<Connection>), ConnectError> {
        let wants_ack = self.inner.settings.min_replicas_ack > 0;
        if self.is_cluster() {
            let conn = self.connect_cluster(Some(RESPONSE_TIMEOUT)).await?;
            let ack = match wants_ack {
                true => Some(self.connect_cluster(Some(RESPONSE_TIMEOUT)).await?),
                false => None,
            };
            return Ok((None, conn, ack));
        }
        let (info, conn) = self.connect_master(Some(RESPONSE_TIMEOUT)).await?;
        let ack = match wants_ack {
            true => Some(Connection::Single(
                self.connect(&redis::Client::open(info.clone())?, Some(RESPONSE_TIMEOUT)).await?,
            )),
            false => None,
        };
        Ok((Some(info), Connection::Single(conn), ack))
    }

    async fn open(&self, response_timeout: Option<Duration>) -> Result<Connection, ConnectError> {
        if self.is_cluster() {
            return self.connect_cluster(response_timeout).await;
        }
        Ok(Connection::Single(self.connect_master(response_timeout).await?.1))
    }

    /// Connects to the master: the URL in standalone mode; in sentinel mode the first address a
    /// sentinel names that really is a master. A stale sentinel (one that still names a replica,
    /// or a server that is gone) must not stop kvq while another sentinel knows the master.
    async fn connect_master(
        &self,
        response_timeout: Option<Duration>,
    ) -> Result<(ConnectionInfo, MultiplexedConnection), ConnectError> {
        let s = &self.inner.settings;
        if s.mode != RedisMode::Sentinel {
            let client = tls::url_client(s)?;
            let conn = self.connect(&client, response_timeout).await?;
            return Ok((client.get_connection_info().clone(), conn));
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
                    tracing::debug!(%sentinel, error = %e, "sentinel did not answer");
                    why = format!("sentinel {sentinel}: {e}");
                    continue;
                }
            };
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            let client = self.server_client(&addr.0, addr.1)?;
            match self.connect(&client, response_timeout).await {
                Ok(conn) => return Ok((client.get_connection_info().clone(), conn)),
                Err(e) => {
                    tracing::debug!(%sentinel, master = %format!("{}:{}", addr.0, addr.1), error = %e, "not a usable master");
                    why = format!("sentinel {sentinel} names {}:{}: {e}", addr.0, addr.1);
                }
            }
        }
        Err(ConnectError::NoMaster { name: s.master_name.clone(), why })
    }

    async fn connect(
        &self,
        client: &redis::Client,
        response_timeout: Option<Duration>,
    ) -> Result<MultiplexedConnection, ConnectError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(response_timeout);
        let server = client.get_connection_info().addr().to_string();
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| classify_connect(&server, e))?;
        if self.inner.settings.mode == RedisMode::Sentinel {
            // A sentinel may answer with a stale address during a failover: trust only a master.
            let role: redis::Value = redis::cmd("ROLE").query_async(&mut conn).await?;
            if !is_master_role(&role) {
                return Err(ConnectError::NotMaster);
            }
        }
        Ok(conn)
    }

    async fn ask_sentinel(&self, sentinel: &str) -> Result<Option<(String, u16)>, ConnectError> {
        let s = &self.inner.settings;
        let (host, port) = parse_host_port(sentinel).expect("validated at start");
        let target = Target {
            host: &host,
            port,
            tls: s.sentinel_tls,
            username: s.sentinel_username.as_deref(),
            password: s.sentinel_password.as_ref().map(|p| p.expose()),
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT / 2))
            .set_response_timeout(Some(CONNECT_TIMEOUT / 2));
        let mut conn = tls::client(s, &target)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| classify_connect(sentinel, e))?;
        let addr: Option<(String, String)> =
            redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(&s.master_name).query_async(&mut conn).await?;
        Ok(addr.and_then(|(h, p)| Some((h, p.parse().ok()?))))
    }
}

/// The master endpoint of `slot` in a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id,
/// ...], replicas...], ...]`.
fn slot_master(slots: &Value, slot: u16) -> Option<(String, u16)> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let Value::Array(ranges) = slots else { return None };
    ranges.iter().find_map(|range| {
        let Value::Array(parts) = range else { return None };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            return None;
        };
        if !(*start..=*end).contains(&i64::from(slot)) {
            return None;
        }
        let host = master.first().and_then(text)?;
        let port = match master.get(1)? {
            Value::Int(p) => u16::try_from(*p).ok()?,
            other => text(other)?.parse().ok()?,
        };
        Some((host, port))
    })
}

/// Wrong password or user: worth a warning, unlike an unreachable server during a failover.
fn is_auth_error(err: &RedisError) -> bool {
    let text = err.to_string();
    matches!(err.kind(), redis::ErrorKind::AuthenticationFailed)
        || ["WRONGPASS", "NOAUTH", "NOPERM", "invalid password", "invalid username-password"]
            .iter()
            .any(|needle| text.contains(needle))
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
    let text = err.to_string();
    needs_reconnect(err)
        || text.contains("LOADING")
        || text.contains("BUSY ")
        // a cluster failing over or migrating a slot, past the client's own retries
        || ["CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK ", "No connections found"].iter().any(|n| text.contains(n))
}
