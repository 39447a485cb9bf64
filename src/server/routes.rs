//! Every path the server routes. The router registers these constants and `route_of` derives the
//! metric label of a request from the same table, so a new route is added here and where the
//! router mounts it. The API's own paths are declared on its handlers (poem-openapi takes
//! literals); a unit test checks each appears here.

use std::sync::LazyLock;

use crate::http::PROBE_PATHS;

pub const HOME: &str = "/";
pub const HEALTHZ: &str = PROBE_PATHS[0];
pub const READYZ: &str = PROBE_PATHS[1];
pub const METRICS: &str = PROBE_PATHS[2];
pub const SPEC: &str = "/openapi.json";
/// Swagger UI, and whatever it loads below it.
pub const DOCS: &str = "/docs";
const DOCS_TREE: &str = "/docs/*";
/// Where the API (poem-openapi, `prefix_path`) is mounted.
pub const API: &str = "/v1";
pub const API_KEYS: &str = "/v1/keys";
pub const API_KEY: &str = "/v1/keys/:key";
pub const API_TASK: &str = "/v1/tasks/:id";
/// `/v1/keys/` with an empty key, which the API's router would call a 404.
pub const EMPTY_KEY: &str = "/v1/keys/";
pub const UI_LOOKUP: &str = "/ui/keys";
pub const UI_KEY: &str = "/ui/keys/:key";
pub const UI_TASK: &str = "/ui/tasks/:id";
/// The pages' login form (GET) and login (POST), and logout (POST).
pub const UI_LOGIN: &str = "/ui/login";
pub const UI_LOGOUT: &str = "/ui/logout";
/// Any other page under `/ui/` (an HTML 404; labelled `other`).
pub const UI_OTHER: &str = "/ui/*";

/// The routes that get a metric label of their own (everything else is `other`).
const LABELLED: [&str; 15] = [
    HOME, HEALTHZ, READYZ, METRICS, SPEC, DOCS, DOCS_TREE, API_KEYS, API_KEY, API_TASK, UI_LOOKUP, UI_KEY, UI_TASK,
    UI_LOGIN, UI_LOGOUT,
];

/// The label of a route pattern: `:name` becomes `{name}` (as in the OpenAPI document) and a
/// tree `/p/*` is labelled `/p`.
fn label(pattern: &str) -> String {
    if let Some(tree) = pattern.strip_suffix("/*") {
        return tree.to_string();
    }
    pattern
        .split('/')
        .map(|s| s.strip_prefix(':').map_or_else(|| s.to_string(), |p| format!("{{{p}}}")))
        .collect::<Vec<_>>()
        .join("/")
}

/// `(pattern, label)`, labels made once (they are `'static` metric label values).
static LABELS: LazyLock<Vec<(&'static str, &'static str)>> =
    LazyLock::new(|| LABELLED.iter().map(|p| (*p, &*label(p).leak())).collect());

/// Whether `path` is served by `pattern`: a parameter (`:name`, always last here) takes the rest
/// of the path, a tree (`/p/*`) everything below `/p/`, anything else must match exactly.
fn matches(pattern: &str, path: &str) -> bool {
    if let Some(tree) = pattern.strip_suffix('*') {
        return path.starts_with(tree);
    }
    match pattern.find(':') {
        Some(i) => path.starts_with(&pattern[..i]),
        None => path == pattern,
    }
}

/// The label of one of the labelled route patterns above (e.g. `API_TASK` -> `/v1/tasks/{id}`).
pub fn label_of(pattern: &str) -> &'static str {
    LABELS.iter().find(|(p, _)| *p == pattern).map_or("other", |(_, label)| label)
}

/// The route label of a path, for metrics and logs (bounded cardinality).
pub fn route_of(path: &str) -> &'static str {
    LABELS.iter().find(|(pattern, _)| matches(pattern, path)).map_or("other", |(_, label)| label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_get_their_route_label() {
        let cases = [
            ("/", "/"),
            ("/healthz", "/healthz"),
            ("/readyz", "/readyz"),
            ("/metrics", "/metrics"),
            ("/openapi.json", "/openapi.json"),
            ("/docs", "/docs"),
            ("/docs/x.js", "/docs"),
            ("/docsx", "other"),
            ("/v1/keys", "/v1/keys"),
            ("/v1/keys/", "/v1/keys/{key}"),
            ("/v1/keys/a/b", "/v1/keys/{key}"),
            ("/v1/tasks/abc", "/v1/tasks/{id}"),
            ("/v1/tasks", "other"),
            ("/ui/keys", "/ui/keys"),
            ("/ui/keys/a", "/ui/keys/{key}"),
            ("/ui/tasks/a", "/ui/tasks/{id}"),
            ("/ui/login", "/ui/login"),
            ("/ui/logout", "/ui/logout"),
            ("/ui/other", "other"),
            ("/healthz/x", "other"),
            ("/nope", "other"),
        ];
        for (path, label) in cases {
            assert_eq!(route_of(path), label, "{path}");
        }
        assert_eq!(label_of(API_KEY), "/v1/keys/{key}");
        assert_eq!(label_of(UI_TASK), "/ui/tasks/{id}");
    }

    /// The API declares its paths on its handlers; each must have its label here.
    #[test]
    fn every_api_path_has_a_label() {
        let settings = crate::config::Settings::load_from(Vec::<(String, String)>::new()).unwrap();
        let spec: serde_json::Value = serde_json::from_str(&super::super::openapi_spec(&settings)).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        assert!(!paths.is_empty());
        for path in paths.keys() {
            assert!(LABELS.iter().any(|(_, l)| l == path), "{path} has no route label");
        }
    }
}
