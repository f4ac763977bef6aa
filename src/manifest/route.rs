//! Route matching: a request path and query to a route, its typed params, its declared
//! query and the dependencies to fetch.
//!
//! Path parameters are typed by the context params schema that consumes them (an `id` that
//! a context declares as `integer` must parse as one, or the route does not match), so the
//! data layer never sees a string where the origin expects a number.

use super::{Manifest, ParamSource, Route};
use serde_json::{Map, Value};

/// Longest request target (path and query) accepted; longer ones are refused before matching.
pub const MAX_URL_LEN: usize = 4096;

/// Why a URL matched no page.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RouteError {
    /// No route pattern matches, or a typed parameter does not parse.
    #[error("no route matches {0}")]
    NotFound(String),
    /// The URL is malformed or hostile; refused before matching.
    #[error("refused URL: {0}")]
    BadUrl(&'static str),
}

/// A matched route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    /// Index of the route in the manifest.
    pub index: usize,
    /// Typed route parameters.
    pub params: Map<String, Value>,
    /// The declared query parameters present in the request: the first value of each in
    /// the canonical query's order (sorted by value), so every request that shares a page
    /// key renders the same page.
    pub query: Map<String, Value>,
    /// The canonical declared query ([`crate::cache::key::canonical_query`]): the only query
    /// a page key, a render or a hydration payload ever sees.
    pub canonical_query: String,
    /// Dependencies of the page: context and typed params.
    pub deps: Vec<(String, Map<String, Value>)>,
}

impl RouteMatch {
    /// The URL a render sees for normalised `path`: the path and the canonical declared query.
    pub fn url(&self, path: &str) -> String {
        if self.canonical_query.is_empty() { path.to_string() } else { format!("{path}?{}", self.canonical_query) }
    }
}

/// The routes of one manifest, ready to match.
#[derive(Debug, Clone)]
pub struct Router {
    inner: matchit::Router<usize>,
}

/// The `:name` parameters of a route pattern, or what is wrong with it.
pub(super) fn pattern_params(pattern: &str) -> Result<Vec<String>, String> {
    if !pattern.starts_with('/') {
        return Err(format!("\"{pattern}\" must start with '/'"));
    }
    let mut names = Vec::new();
    for segment in pattern.split('/').skip(1) {
        if let Some(name) = segment.strip_prefix(':') {
            if !super::is_identifier(name) {
                return Err(format!("\"{pattern}\": parameter \":{name}\" is not an identifier"));
            }
            if names.iter().any(|n| n == name) {
                return Err(format!("\"{pattern}\": parameter \":{name}\" appears twice"));
            }
            names.push(name.to_string());
        } else if segment.contains(['{', '}', '*', ':', '?', '#', '%']) {
            return Err(format!("\"{pattern}\": segment \"{segment}\" has a reserved character"));
        }
    }
    Ok(names)
}

impl Router {
    /// Builds the matcher; an error names the index of the conflicting route.
    pub fn new(manifest: &Manifest) -> Result<Self, (usize, String)> {
        let mut inner = matchit::Router::new();
        for (i, route) in manifest.routes.iter().enumerate() {
            let pattern: Vec<String> = route
                .path
                .split('/')
                .map(|s| s.strip_prefix(':').map_or_else(|| s.to_string(), |n| format!("{{{n}}}")))
                .collect();
            inner.insert(pattern.join("/"), i).map_err(|e| (i, format!("\"{}\": {e}", route.path)))?;
        }
        Ok(Self { inner })
    }

    /// Matches `url` (path and optional query) against the manifest's routes.
    pub fn route(&self, manifest: &Manifest, url: &str) -> Result<RouteMatch, RouteError> {
        if url.len() > MAX_URL_LEN {
            return Err(RouteError::BadUrl("longer than 4096 bytes"));
        }
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        if !path.starts_with('/') || path.starts_with("//") {
            return Err(RouteError::BadUrl("path must be absolute"));
        }
        if path.bytes().any(|b| b.is_ascii_control() || b == b'\\') {
            return Err(RouteError::BadUrl("control character or backslash in path"));
        }
        let not_found = || RouteError::NotFound(path.to_string());
        let matched = self.inner.at(path).map_err(|_| not_found())?;
        let index = *matched.value;
        let route = &manifest.routes[index];

        let mut raw_params = Map::new();
        for (name, raw) in matched.params.iter() {
            let decoded = percent_encoding::percent_decode_str(raw).decode_utf8().map_err(|_| not_found())?;
            if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') {
                return Err(RouteError::BadUrl("path parameter is empty, a dot segment or holds '/'"));
            }
            raw_params.insert(name.to_string(), Value::String(decoded.into_owned()));
        }
        let canonical_query = crate::cache::key::canonical_query(query, &route.query);
        let mut query_values = Map::new();
        for (name, value) in form_urlencoded::parse(canonical_query.as_bytes()) {
            if !query_values.contains_key(name.as_ref()) {
                query_values.insert(name.into_owned(), Value::String(value.into_owned()));
            }
        }

        let mut params = Map::new();
        let mut deps = Vec::with_capacity(route.data.len());
        for dep in &route.data {
            let schema = &manifest.contexts[&dep.context].params;
            let mut dep_params = Map::new();
            for (name, source) in &dep.params {
                let value = match source {
                    ParamSource::Const(v) => v.clone(),
                    ParamSource::Route(n) => {
                        let typed = coerce(raw_params.get(n), schema, name).ok_or_else(not_found)?;
                        params.insert(n.clone(), typed.clone());
                        typed
                    }
                    ParamSource::Query(n) => match query_values.get(n) {
                        None => continue,
                        Some(raw) => coerce(Some(raw), schema, name).ok_or_else(not_found)?,
                    },
                };
                dep_params.insert(name.clone(), value);
            }
            deps.push((dep.context.clone(), dep_params));
        }
        // Route parameters no dependency consumes reach the page as strings.
        for (name, value) in raw_params {
            params.entry(name).or_insert(value);
        }
        Ok(RouteMatch { index, params, query: query_values, canonical_query, deps })
    }
}

/// Converts a string from the URL to the type the params schema gives `name`.
fn coerce(raw: Option<&Value>, schema: &Value, name: &str) -> Option<Value> {
    let raw = raw?.as_str()?;
    let kind = schema.pointer(&format!("/properties/{}/type", name.replace('~', "~0").replace('/', "~1")));
    match kind.and_then(Value::as_str) {
        Some("integer") => {
            let canonical = raw.strip_prefix('-').unwrap_or(raw);
            let ok = !canonical.is_empty()
                && canonical.bytes().all(|b| b.is_ascii_digit())
                && (canonical == "0" || !canonical.starts_with('0'));
            ok.then(|| raw.parse::<i64>().ok().map(Value::from)).flatten()
        }
        Some("number") => {
            raw.parse::<f64>().ok().filter(|f| f.is_finite()).and_then(serde_json::Number::from_f64).map(Value::Number)
        }
        Some("boolean") => match raw {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => Some(Value::String(raw.to_string())),
    }
}

impl Route {
    /// Whether the route's page depends on `context`.
    pub fn reads(&self, context: &str) -> bool {
        self.data.iter().any(|d| d.context == context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::{Path, PathBuf};

    fn manifest() -> Manifest {
        let json = json!({
            "version": 1, "site": "shop",
            "contexts": {
                "product_list": {"params": {"type": "object", "properties": {"page": {"type": "integer"}}}},
                "product_detail": {"params": {"type": "object", "properties": {"id": {"type": "integer"}}}}
            },
            "bundles": {"app": {"framework": "react", "file": "server.mjs"}},
            "routes": [
                {"path": "/products", "bundle": "app", "page": "List", "query": ["page"],
                 "data": [{"context": "product_list", "params": {"page": {"query": "page"}}}]},
                {"path": "/products/:id", "bundle": "app", "page": "Detail",
                 "data": [{"context": "product_detail", "params": {"id": {"route": "id"}}}]},
                {"path": "/products/featured", "bundle": "app", "page": "Featured"}
            ]
        });
        Manifest::from_json(&json.to_string(), Path::new("m.json"), PathBuf::new()).unwrap()
    }

    fn route(url: &str) -> Result<RouteMatch, RouteError> {
        let m = manifest();
        Router::new(&m).unwrap().route(&m, url)
    }

    #[test]
    fn types_route_params_by_the_context_schema() {
        let m = route("/products/42").unwrap();
        assert_eq!(m.index, 1);
        assert_eq!(m.params, json!({"id": 42}).as_object().unwrap().clone());
        assert_eq!(m.deps, vec![("product_detail".to_string(), json!({"id": 42}).as_object().unwrap().clone())]);
    }

    #[test]
    fn a_param_of_the_wrong_type_matches_nothing() {
        for url in ["/products/abc", "/products/042", "/products/4.2", "/products/-", "/products/99999999999999999999"]
        {
            assert_eq!(route(url), Err(RouteError::NotFound(url.into())), "{url}");
        }
    }

    #[test]
    fn literal_segments_win_over_parameters() {
        assert_eq!(route("/products/featured").unwrap().index, 2);
    }

    #[test]
    fn only_declared_query_parameters_are_kept() {
        let m = route("/products?utm=x&page=3&page=2&cache_bust=1").unwrap();
        assert_eq!(m.query, json!({"page": "2"}).as_object().unwrap().clone(), "the first in canonical order");
        assert_eq!(m.deps[0].1, json!({"page": 2}).as_object().unwrap().clone());
        assert_eq!(m.canonical_query, "page=2&page=3");
        let swapped = route("/products?page=2&page=3").unwrap();
        assert_eq!((swapped.query, swapped.deps), (m.query, m.deps), "one key, one page");
    }

    #[test]
    fn refuses_hostile_urls_early() {
        assert!(matches!(route("/products/%2e%2e"), Err(RouteError::BadUrl(_))));
        assert!(matches!(route("//evil.example/products"), Err(RouteError::BadUrl(_))));
        assert!(matches!(route("/products/1\\x"), Err(RouteError::BadUrl(_))));
        assert!(matches!(route(&format!("/products/{}", "1".repeat(5000))), Err(RouteError::BadUrl(_))));
        assert_eq!(route("/nope"), Err(RouteError::NotFound("/nope".into())));
    }
}
