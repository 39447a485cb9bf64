//! Wiring of the server process: the router, its middleware and the listener.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use poem::listener::TcpAcceptor;
use poem::{get, handler, Endpoint, EndpointExt, Response, Route, Server};
use poem_openapi::OpenApiService;

use crate::config::Settings;
use crate::http;
use crate::metrics::Metrics;
use crate::store::Store;

use super::api::{self, Api};
use super::auth::{Auth, AuthError, RequireToken};
use super::completions::Completions;
use super::pages::{self, Pages};
use super::problem::ProblemErrors;
use super::routes;
use super::state::AppState;
use super::{body_errors, observe, panics, query, replication};

/// How long in-flight requests may take to finish after a stop signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

pub struct ServerApp {
    acceptor: TcpAcceptor,
    port: u16,
    state: AppState,
    metrics: Arc<Metrics>,
    auth: Arc<Auth>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

fn api_service(state: AppState) -> OpenApiService<Api, ()> {
    OpenApiService::new(Api { state }, "kvq", env!("CARGO_PKG_VERSION"))
        .description(
            "A key-value store whose writes go through a Redis-backed task queue. Writes answer \
             202 with a task; add `?wait=N` to wait for the worker to apply them.",
        )
        .server("/")
}

/// The OpenAPI document, as served at `/openapi.json` (used by the spec snapshot test).
pub fn openapi_spec(settings: &Settings) -> String {
    let store = Store::from_settings(settings);
    complete_spec(&api_service(state_for(settings, store, Arc::default())), settings.limits.max_value_bytes)
}

/// poem-openapi's document plus what its derive cannot say: the write body takes no other
/// members (`deny_unknown_fields`), its `ttl_seconds` may be `null` (no TTL, as when absent), and
/// its value is limited by `limits.max_value_bytes`. The limit counts bytes of UTF-8; `maxLength`
/// counts characters, so it is the bound for one-byte text and a value with longer characters can
/// reach the byte limit sooner (413).
fn complete_spec(api: &OpenApiService<Api, ()>, max_value_bytes: usize) -> String {
    let mut spec: serde_json::Value = serde_json::from_str(&api.spec()).expect("poem-openapi writes valid JSON");
    if let Some(body) = spec.pointer_mut("/components/schemas/PutBody").and_then(|b| b.as_object_mut()) {
        body.insert("additionalProperties".into(), false.into());
        if let Some(value) = body.get_mut("properties").and_then(|p| p.get_mut("value")).and_then(|v| v.as_object_mut())
        {
            value.insert("maxLength".into(), max_value_bytes.into());
        }
        if let Some(ttl) =
            body.get_mut("properties").and_then(|p| p.get_mut("ttl_seconds")).and_then(|v| v.as_object_mut())
        {
            ttl.insert("nullable".into(), true.into());
        }
    }
    serde_json::to_string_pretty(&spec).expect("a JSON value serializes")
}

fn state_for(settings: &Settings, store: Store, metrics: Arc<Metrics>) -> AppState {
    AppState {
        completions: Arc::new(Completions::default()),
        max_value_bytes: settings.limits.max_value_bytes,
        replica_acks: (settings.redis.min_replicas_ack > 0).then(|| {
            Arc::new(replication::ReplicaAcks::new(store.clone(), settings.redis.min_replicas_ack, metrics.clone()))
        }),
        store,
        metrics,
        stopping: Arc::new(tokio::sync::watch::channel(false).0),
    }
}

impl ServerApp {
    /// Reads the token file and binds the listener (port 0 picks a free port). Redis need not
    /// be up.
    pub async fn build(settings: &Settings) -> Result<Self, BuildError> {
        let metrics = Arc::new(Metrics::new());
        let auth = Arc::new(Auth::load(&settings.auth, &metrics)?);
        let (acceptor, port) = http::bind(settings.server.bind).await?;
        let store = Store::from_settings(settings);
        Ok(Self { acceptor, port, state: state_for(settings, store, metrics.clone()), metrics, auth })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `stop` resolves, then drains in-flight requests.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let listener = tokio::spawn(
            self.state
                .completions
                .clone()
                .listen(self.state.store.redis.clone(), self.state.store.shards.done_channel.clone()),
        );
        let token_reload = tokio::spawn(self.auth.clone().watch());
        let body_limit = body_limit(self.state.max_value_bytes);
        let api = api_service(self.state.clone());
        let spec_json = bytes::Bytes::from(complete_spec(&api, self.state.max_value_bytes));
        let spec = poem::endpoint::make_sync(move |_| {
            Response::builder().content_type("application/json; charset=utf-8").body(spec_json.clone())
        });
        let docs = swagger_ui(self.state.clone());
        // Pages and probes read shared state from request data; the API (the hot path) holds its
        // state itself, so its requests skip those per-request insertions.
        let pages = Route::new()
            .at(routes::HOME, get(pages::home))
            .at(routes::UI_LOOKUP, get(pages::lookup))
            .at(routes::UI_KEY, get(pages::key_page))
            .at(routes::UI_TASK, get(pages::task_page))
            .at(routes::UI_LOGIN, get(pages::login_page).post(pages::login))
            .at(routes::UI_LOGOUT, poem::post(pages::logout))
            .at(routes::UI_OTHER, get(ui_not_found));
        let pages_and_probes = http::with_probes(pages)
            .data(self.state.clone())
            .data(self.state.store.clone())
            .data(self.metrics.clone())
            .data(Arc::new(Pages::new()))
            .data(self.auth.clone());
        let app = Route::new()
            .at(routes::EMPTY_KEY, api::empty_key.with(RequireToken(self.auth.clone())))
            .nest_no_strip(
                routes::API,
                api.with(body_errors::BodyErrors { max_body_bytes: body_limit })
                    .with(query::SingleValuedQuery)
                    .with(RequireToken(self.auth.clone())),
            )
            .at(routes::DOCS, docs)
            .at(routes::SPEC, spec)
            .nest("/", pages_and_probes);
        let app = with_server_middleware(app, self.metrics.clone());
        let stopping = self.state.stopping.clone();
        let stop = async move {
            stop.await;
            // Waiting requests answer 202 now, so clients can follow their tasks elsewhere.
            stopping.send_replace(true);
        };
        let result = Server::new_with_acceptor(super::transport_errors::ProblemBodies(self.acceptor))
            .run_with_graceful_shutdown(app, stop, Some(DRAIN_TIMEOUT))
            .await;
        listener.abort();
        token_reload.abort();
        result
    }
}

/// Largest PUT body read at all (413 beyond it, while reading). JSON escaping can make a body up
/// to six times its value, so the limit leaves room for that and for the rest of the object.
pub fn body_limit(max_value_bytes: usize) -> usize {
    max_value_bytes.saturating_mul(6).saturating_add(64 * 1024)
}

/// What every request passes through, outermost last: problem bodies for errors, panics answered
/// 500 (the process keeps serving), and the access log and metrics. Public so tests can wrap an
/// endpoint of their own in the exact stack the server uses.
pub fn with_server_middleware<E: Endpoint + 'static>(ep: E, metrics: Arc<Metrics>) -> impl Endpoint<Output = Response> {
    ep.with(ProblemErrors).with(panics::CatchPanics).with(observe::Observe(metrics))
}

/// Swagger UI, rendered on first use: the page inlines the 1.5 MB Swagger bundle, which would
/// otherwise sit in every server's memory from start-up. Kept for the life of the process (leaked
/// once on purpose) so each request sends it without copying.
fn swagger_ui(state: AppState) -> impl poem::Endpoint {
    let html: OnceLock<&'static str> = OnceLock::new();
    poem::endpoint::make_sync(move |_| {
        let body: &'static str = html.get_or_init(|| api_service(state.clone()).swagger_ui_html().leak());
        Response::builder().content_type("text/html; charset=utf-8").body(body)
    })
}

#[handler]
fn ui_not_found(pages: poem::web::Data<&Arc<Pages>>) -> Response {
    pages::not_found_page(&pages)
}
