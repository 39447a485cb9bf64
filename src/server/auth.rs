//! API authentication and key-prefix authorization (README, "Authentication"): the token file,
//! its reload, the `/v1` gate and the caller's grant that handlers check keys against.
//!
//! The file holds the SHA-256 of each token, never the token: a leaked file or Secret grants
//! nothing. A presented token is hashed and compared with every entry in constant time.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use poem::http::{header, HeaderMap, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthMode, AuthSettings};
use crate::metrics::{AuthRefusalLabels, Metrics};

use super::problem::{ApiError, Problem};

/// How often the token file is checked for a change (a Secret update lands within a minute or
/// two of the change; this adds at most a few seconds).
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// The name of the security scheme in the OpenAPI document.
pub const SCHEME: &str = "bearerAuth";
/// `WWW-Authenticate` realm.
const CHALLENGE: &str = "Bearer realm=\"kvq\"";
const CHALLENGE_INVALID: &str = "Bearer realm=\"kvq\", error=\"invalid_token\"";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

/// Why a request was refused: the `reason` label of `kvq_auth_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No `Authorization: Bearer` header (or page cookie).
    MissingToken,
    /// A token that is in no entry of the file.
    UnknownToken,
    /// A known token without the scope the operation needs.
    Scope,
    /// A known token used on a key (or listing prefix) outside its prefixes.
    Prefix,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::UnknownToken => "unknown_token",
            Reason::Scope => "scope",
            Reason::Prefix => "prefix",
        }
    }
}

/// One entry of the token file, checked.
#[derive(Debug)]
pub struct Client {
    /// Who holds the token: named in refusals and the file's errors, never the token.
    pub name: String,
    hash: [u8; 32],
    read: bool,
    write: bool,
    /// The key prefixes it may touch; `None`: every key.
    prefixes: Option<Vec<String>>,
}

/// Every valid token of the file.
#[derive(Debug, Default)]
pub struct TokenSet {
    clients: Vec<Arc<Client>>,
}

/// The file as written (README, "Authentication"):
///
/// ```yaml
/// tokens:
///   - name: billing
///     sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
///     scopes: [read, write]
///     prefixes: ["billing/"]
/// ```
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    /// Read as any YAML value: an unquoted all-digit hash would otherwise fail as a number, and
    /// the parser's message would quote it.
    sha256: serde_yaml_ng::Value,
    scopes: Vec<String>,
    #[serde(default)]
    prefixes: Option<Vec<String>>,
}

impl TokenSet {
    /// Parses and checks a token file. The error is one line naming the entry at fault (its
    /// position and name), never a hash.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TokenFile = serde_yaml_ng::from_str(text).map_err(|e| {
            let e = one_line(&e.to_string());
            if e.contains("unknown field `token`") {
                format!("{e} (the file holds the token's sha256, never the token itself)")
            } else {
                e
            }
        })?;
        if file.tokens.is_empty() {
            return Err("tokens: no entries, so every request would be refused; add a token (or set auth.mode \
                        to none explicitly)"
                .into());
        }
        let mut clients: Vec<Arc<Client>> = Vec::with_capacity(file.tokens.len());
        for (i, e) in file.tokens.into_iter().enumerate() {
            let at = format!("tokens[{i}] (name '{}')", one_line(&e.name));
            let client = check_entry(e).map_err(|why| format!("{at}: {why}"))?;
            if clients.iter().any(|c| c.name == client.name) {
                return Err(format!("{at}: name: another entry has this name"));
            }
            if clients.iter().any(|c| c.hash == client.hash) {
                return Err(format!("{at}: sha256: another entry has the same token"));
            }
            clients.push(Arc::new(client));
        }
        Ok(Self { clients })
    }

    /// Parses several files into one set: names and tokens must be unique across them. Errors
    /// name the file and the entry.
    pub fn parse_files(paths: &[String], texts: &[Vec<u8>]) -> Result<Self, String> {
        let mut clients: Vec<Arc<Client>> = Vec::new();
        for (path, bytes) in paths.iter().zip(texts) {
            let text = std::str::from_utf8(bytes).map_err(|e| format!("tokens file {path}: {e}"))?;
            let set = Self::parse(text).map_err(|e| format!("tokens file {path}: {e}"))?;
            for c in set.clients {
                if clients.iter().any(|o| o.name == c.name) {
                    return Err(format!("tokens file {path}: name '{}': another file has this name", c.name));
                }
                if clients.iter().any(|o| o.hash == c.hash) {
                    return Err(format!("tokens file {path}: name '{}': another file has the same token", c.name));
                }
                clients.push(c);
            }
        }
        Ok(Self { clients })
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The entry of `token`: the token's SHA-256 compared with every entry's in constant time,
    /// with no early exit, so timing tells nothing about how close a guess came or which entry
    /// matched.
    pub fn find(&self, token: &str) -> Option<Arc<Client>> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for c in &self.clients {
            if bool::from(c.hash.ct_eq(&hash)) {
                found = Some(c.clone());
            }
        }
        found
    }
}

fn check_entry(e: Entry) -> Result<Client, String> {
    if e.name.is_empty() || e.name.len() > 128 || e.name.chars().any(char::is_control) {
        return Err("name: must be 1 to 128 characters without control characters".into());
    }
    let hash = e
        .sha256
        .as_str()
        .and_then(decode_sha256)
        .ok_or("sha256: must be a string of 64 hex characters (the SHA-256 of the token)")?;
    if e.scopes.is_empty() {
        return Err("scopes: must list read, write or both".into());
    }
    let (mut read, mut write) = (false, false);
    for s in &e.scopes {
        match s.as_str() {
            "read" => read = true,
            "write" => write = true,
            other => return Err(format!("scopes: '{}' is not a scope; use read or write", one_line(other))),
        }
    }
    if let Some(prefixes) = &e.prefixes {
        if prefixes.is_empty() {
            return Err("prefixes: empty list; omit it to allow every key".into());
        }
        if prefixes.iter().any(String::is_empty) {
            return Err("prefixes: an empty prefix would allow every key; omit prefixes instead".into());
        }
    }
    Ok(Client { name: e.name, hash, read, write, prefixes: e.prefixes })
}

fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The token file could not be used at start.
#[derive(Debug, thiserror::Error)]
#[error("auth: {0}")]
pub struct AuthError(String);

/// The server's authentication: the mode, the current token set and the refusal counter.
pub struct Auth {
    mode: AuthMode,
    /// The token files, merged (the chart mounts its own and, optionally, the user's Secret).
    paths: Vec<String>,
    tokens: RwLock<Arc<TokenSet>>,
    refusals: Family<AuthRefusalLabels, Counter>,
}

impl Auth {
    /// Reads the token file (in `tokens` mode). A missing or bad file is an error: the server
    /// stops with its one line rather than start refusing (or allowing) everyone.
    pub fn load(settings: &AuthSettings, metrics: &Metrics) -> Result<Self, AuthError> {
        let refusals = metrics.auth_refusals.clone();
        let paths = settings.tokens_files();
        let tokens = match settings.mode {
            AuthMode::None => TokenSet::default(),
            AuthMode::Tokens => {
                if paths.is_empty() {
                    return Err(AuthError(
                        "auth.tokens_file (KVQ__AUTH__TOKENS_FILE) is required when auth.mode is tokens; set \
                         auth.mode=none (KVQ__AUTH__MODE=none) to run without authentication"
                            .into(),
                    ));
                }
                let texts = paths
                    .iter()
                    .map(|p| std::fs::read(p).map_err(|e| AuthError(format!("tokens file {p}: {e}"))))
                    .collect::<Result<Vec<_>, _>>()?;
                TokenSet::parse_files(&paths, &texts).map_err(AuthError)?
            }
        };
        // Every reason from the start at 0, so a rate over it exists before the first refusal
        // (and the dashboard's panel has a series, 0, with authentication off).
        for reason in [Reason::MissingToken, Reason::UnknownToken, Reason::Scope, Reason::Prefix] {
            let _ = refusals.get_or_create(&AuthRefusalLabels { reason: reason.label() });
        }
        Ok(Self { mode: settings.mode, paths, tokens: RwLock::new(Arc::new(tokens)), refusals })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    fn current(&self) -> Arc<TokenSet> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count(&self, reason: Reason) {
        self.refusals.get_or_create(&AuthRefusalLabels { reason: reason.label() }).inc();
    }

    /// The caller presenting `token` (None: no token at all). With auth off, everyone may do
    /// everything.
    pub fn authenticate(self: &Arc<Self>, token: Option<&str>) -> Result<Caller, Reason> {
        if self.mode == AuthMode::None {
            return Ok(Caller { client: None, auth: self.clone() });
        }
        let reason = match token {
            None => Reason::MissingToken,
            Some(t) => match self.current().find(t) {
                Some(client) => return Ok(Caller { client: Some(client), auth: self.clone() }),
                None => Reason::UnknownToken,
            },
        };
        self.count(reason);
        Err(reason)
    }

    /// Re-reads the token file every `RELOAD_EVERY` until dropped; a changed file that is valid
    /// replaces the set, a bad one is logged once (one line naming the entry) and the previous
    /// set stays.
    pub async fn watch(self: Arc<Self>) {
        if self.mode != AuthMode::Tokens || self.paths.is_empty() {
            return;
        }
        let read_all = |paths: &[String]| -> Result<Vec<Vec<u8>>, String> {
            paths.iter().map(|p| std::fs::read(p).map_err(|e| format!("{p}: {e}"))).collect()
        };
        let digest = |texts: &[Vec<u8>]| -> [u8; 32] {
            let mut h = Sha256::new();
            for t in texts {
                h.update((t.len() as u64).to_le_bytes());
                h.update(t);
            }
            h.finalize().into()
        };
        // What was last seen (applied or refused), so a change is parsed and logged once.
        let mut seen: Option<[u8; 32]> = read_all(&self.paths).ok().map(|t| digest(&t));
        let mut unreadable = false;
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let paths = self.paths.clone();
            let texts = match tokio::task::spawn_blocking(move || read_all(&paths)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    if !unreadable {
                        tracing::warn!("tokens file unreadable, keeping the current tokens: {e}");
                    }
                    unreadable = true;
                    continue;
                }
                Err(_) => continue,
            };
            unreadable = false;
            let d = digest(&texts);
            if seen == Some(d) {
                continue;
            }
            seen = Some(d);
            match TokenSet::parse_files(&self.paths, &texts) {
                Ok(set) => {
                    let n = set.len();
                    *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                    tracing::info!(tokens = n, "tokens file reloaded");
                }
                Err(e) => tracing::warn!("tokens file not reloaded, keeping the previous tokens: {e}"),
            }
        }
    }
}

/// Who is calling, once authenticated: what the handlers check keys against. An operation that
/// takes a `Caller` is declared in the OpenAPI document as needing the bearer token.
#[derive(Clone)]
pub struct Caller {
    /// `None` with auth off.
    client: Option<Arc<Client>>,
    auth: Arc<Auth>,
}

impl Caller {
    /// The name of the token's entry (None with auth off).
    pub fn name(&self) -> Option<&str> {
        self.client.as_deref().map(|c| c.name.as_str())
    }

    fn refuse(&self, reason: Reason, detail: String) -> ApiError {
        self.auth.count(reason);
        ApiError::forbidden(detail)
    }

    fn has(&self, scope: Scope) -> bool {
        self.client.as_deref().is_none_or(|c| match scope {
            Scope::Read => c.read,
            Scope::Write => c.write,
        })
    }

    fn covers(&self, key: &str) -> bool {
        self.client
            .as_deref()
            .and_then(|c| c.prefixes.as_ref())
            .is_none_or(|ps| ps.iter().any(|p| key.starts_with(p.as_str())))
    }

    fn prefix_list(&self) -> String {
        self.client
            .as_deref()
            .and_then(|c| c.prefixes.as_ref())
            .map(|ps| ps.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    }

    /// 403 unless the token has `scope` and `key` is within its prefixes.
    pub fn require(&self, scope: Scope, key: &str) -> Result<(), ApiError> {
        self.require_scope(scope)?;
        if !self.covers(key) {
            return Err(self.refuse(
                Reason::Prefix,
                format!("key: this token may only use keys starting with {}", self.prefix_list()),
            ));
        }
        Ok(())
    }

    /// 403 unless the token has `scope`.
    pub fn require_scope(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            return Ok(());
        }
        Err(self.refuse(Reason::Scope, format!("scope: this token lacks the '{}' scope", scope.as_str())))
    }

    /// Listing: the token needs `read`, and with prefixes the listed prefix must lie within one
    /// of them (403 otherwise, rather than a silently filtered, surprising page).
    pub fn require_listing(&self, prefix: &str) -> Result<(), ApiError> {
        self.require_scope(Scope::Read)?;
        if !self.covers(prefix) {
            return Err(self.refuse(
                Reason::Prefix,
                format!("prefix: this token may only list with a prefix starting with {}", self.prefix_list()),
            ));
        }
        Ok(())
    }

    /// Whether the token could read `key` (tasks are shown only to those).
    pub fn may_read(&self, key: &str) -> bool {
        self.has(Scope::Read) && self.covers(key)
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The 401 of a missing or unknown token.
pub fn unauthorized(reason: Reason) -> Response {
    let (detail, challenge) = match reason {
        Reason::UnknownToken => ("Authorization: the bearer token is not valid", CHALLENGE_INVALID),
        _ => ("Authorization: send a token as `Authorization: Bearer <token>`", CHALLENGE),
    };
    ApiError::Unauthorized(Json(Problem::new(StatusCode::UNAUTHORIZED, detail)), challenge.to_string()).into_response()
}

/// Gate of the `/v1` routes: a valid bearer token (only the header: the pages' cookie does not
/// count here, so a browser session cannot be ridden into the API) or 401, before anything of
/// the request is read.
pub struct RequireToken(pub Arc<Auth>);

impl<E: Endpoint> Middleware<E> for RequireToken {
    type Output = RequireTokenEndpoint<E>;
    fn transform(&self, ep: E) -> Self::Output {
        RequireTokenEndpoint { inner: ep, auth: self.0.clone() }
    }
}

pub struct RequireTokenEndpoint<E> {
    inner: E,
    auth: Arc<Auth>,
}

impl<E: Endpoint> Endpoint for RequireTokenEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        match self.auth.authenticate(bearer(req.headers())) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                self.inner.call(req).await.map(IntoResponse::into_response)
            }
            Err(reason) => Ok(unauthorized(reason)),
        }
    }
}

impl<'a> ApiExtractor<'a> for Caller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            SCHEME,
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "A token from the server's tokens file (`auth.tokens_file`). Scopes: `read` for GETs, \
                     `write` for PUT and DELETE; a token may be limited to key prefixes. Not needed when \
                     the server runs with `auth.mode: none`.",
                ),
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![SCHEME]
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut poem::RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        // `RequireToken` put it there; without it, fail closed.
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| poem::Error::from_response(unauthorized(Reason::MissingToken)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(token: &str) -> String {
        Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_token_is_found_by_its_hash_only() {
        let text = format!(
            "tokens:\n  - name: a\n    sha256: {}\n    scopes: [read]\n  - name: b\n    sha256: {}\n    scopes: [read, write]\n    prefixes: [\"b/\"]\n",
            sha("alpha"),
            sha("beta").to_uppercase()
        );
        let set = TokenSet::parse(&text).unwrap();
        assert_eq!(set.find("alpha").unwrap().name, "a");
        assert_eq!(set.find("beta").unwrap().name, "b");
        assert!(set.find("gamma").is_none());
        assert!(set.find(&sha("alpha")).is_none(), "the hash itself is no token");
    }

    #[test]
    fn bad_entries_are_named_without_their_hash() {
        let good = sha("x");
        let cases = [
            (format!("tokens:\n  - name: ok\n    sha256: {good}\n    scopes: [read]\n  - name: ci\n    sha256: abc\n    scopes: [read]\n"), "tokens[1] (name 'ci'): sha256"),
            (format!("tokens:\n  - name: ci\n    sha256: {good}\n    scopes: [admin]\n"), "tokens[0] (name 'ci'): scopes: 'admin'"),
            (format!("tokens:\n  - name: ci\n    sha256: {good}\n    scopes: []\n"), "tokens[0] (name 'ci'): scopes"),
            (format!("tokens:\n  - name: ci\n    sha256: {good}\n    scopes: [read]\n    prefixes: []\n"), "tokens[0] (name 'ci'): prefixes"),
            (format!("tokens:\n  - name: a\n    sha256: {good}\n    scopes: [read]\n  - name: b\n    sha256: {good}\n    scopes: [read]\n"), "tokens[1] (name 'b'): sha256: another"),
            (format!("tokens:\n  - name: a\n    sha256: {good}\n    scopes: [read]\n  - name: a\n    sha256: {}\n    scopes: [read]\n", sha("y")), "tokens[1] (name 'a'): name"),
            ("tokens:\n  - name: ci\n    token: hunter2\n    scopes: [read]\n".to_string(), "never the token itself"),
            ("tokens: []\n".to_string(), "no entries"),
            (format!("tokens:\n  - name: digits\n    sha256: {}\n    scopes: [read]\n", "1".repeat(64)), "tokens[0] (name 'digits'): sha256: must be a string"),
        ];
        for (text, expected) in cases {
            let err = TokenSet::parse(&text).unwrap_err();
            assert!(err.contains(expected), "{err} should contain {expected}");
            assert!(!err.contains('\n'), "one line: {err}");
            assert!(!err.contains(&good) && !err.contains(&"1".repeat(20)), "no hash in {err}");
        }
    }

    #[test]
    fn several_files_are_merged_and_must_not_repeat_a_name_or_token() {
        let entry = |name: &str, token: &str| {
            format!("tokens:\n  - name: {name}\n    sha256: {}\n    scopes: [read]\n", sha(token))
        };
        let paths = ["/chart/tokens.yaml".to_string(), "/user/tokens.yaml".to_string()];
        let set = TokenSet::parse_files(&paths, &[entry("a", "ta").into(), entry("b", "tb").into()]).unwrap();
        assert_eq!((set.find("ta").unwrap().name.as_str(), set.find("tb").unwrap().name.as_str()), ("a", "b"));
        let err = TokenSet::parse_files(&paths, &[entry("a", "ta").into(), entry("a", "tb").into()]).unwrap_err();
        assert!(err.starts_with("tokens file /user/tokens.yaml: name 'a'"), "{err}");
        let err = TokenSet::parse_files(&paths, &[entry("a", "ta").into(), entry("b", "ta").into()]).unwrap_err();
        assert!(err.contains("same token"), "{err}");
    }

    #[test]
    fn bearer_reads_the_scheme_case_insensitively() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
