//! The edge manifest: contexts, bundles, routes and proxy paths, as codegen emits them.
//!
//! A manifest is validated completely when it is loaded; every error names the exact JSON
//! path (`routes[1].data[0].context`) and what was wrong, and a manifest that loaded is one
//! every later stage can trust. See `docs/manifest.md` for the format.

mod route;

pub use route::{MAX_URL_LEN, RouteError, RouteMatch, Router};

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("manifest {}: cannot read: {source}", path.display())]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON of the manifest's shape.
    #[error("manifest {}: {at}: {message}", path.display())]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// The JSON path of the offending value (`.` for the document).
        at: String,
        /// What was wrong.
        message: String,
    },
}

/// A validated manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version; this node reads 1.
    pub version: u32,
    /// The site id used in page keys (never the Host header).
    pub site: String,
    /// Origin contexts by name.
    pub contexts: BTreeMap<String, Context>,
    /// SSR bundles by name.
    pub bundles: BTreeMap<String, Bundle>,
    /// Page routes, matched most specific first.
    pub routes: Vec<Route>,
    /// Origin path prefixes that are reverse-proxied (mutations and the like).
    #[serde(default)]
    pub proxy: Vec<String>,
    /// Directory the manifest was loaded from; bundle files are relative to it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// A typed origin function (a Django `@client` function).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// JSON Schema of its params object.
    #[serde(default = "any_object")]
    pub params: Value,
    /// JSON Schema of the data it returns.
    #[serde(default = "any_value")]
    pub returns: Value,
    /// Cache lifetimes, or `false` for `@client(cache=False)`: never cached.
    #[serde(default)]
    pub cache: CachePolicy,
}

fn any_object() -> Value {
    serde_json::json!({"type": "object"})
}

fn any_value() -> Value {
    serde_json::json!({})
}

/// `{ttl, swr, sie}` in seconds, or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CachePolicy {
    /// Cached with these lifetimes.
    Cached(CacheTimes),
    /// `false`: never cached, and neither is a page that depends on it.
    Never(NeverCached),
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy::Cached(CacheTimes::default())
    }
}

/// The literal `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeverCached;

impl<'de> Deserialize<'de> for NeverCached {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match bool::deserialize(d)? {
            false => Ok(NeverCached),
            true => Err(serde::de::Error::custom("cache must be false or {ttl, swr, sie}")),
        }
    }
}

/// Cache lifetimes of a context, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheTimes {
    /// Fresh for this long.
    #[serde(default = "default_ttl")]
    pub ttl: u64,
    /// Then served stale for this long while one re-render runs.
    #[serde(default)]
    pub swr: u64,
    /// Then served stale for this long when the origin or render fails.
    #[serde(default)]
    pub sie: u64,
}

fn default_ttl() -> u64 {
    60
}

impl Default for CacheTimes {
    fn default() -> Self {
        Self { ttl: default_ttl(), swr: 0, sie: 0 }
    }
}

/// A framework SSR bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The framework its adapter is for.
    pub framework: Framework,
    /// The ES module file, relative to the manifest.
    pub file: PathBuf,
    /// The client bundle that hydrates its pages (a classic script), relative to the manifest.
    /// The node serves it under `/_mizan/assets/` by its content hash.
    #[serde(default)]
    pub client: Option<PathBuf>,
    /// What its renders share: `"module"` (default: module state persists between renders,
    /// as in Workers) or `"render"` (each render starts from a fresh isolate).
    #[serde(default)]
    pub isolation: crate::pool::Isolation,
}

/// Frameworks with a Mizan wrapper layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    /// React 19.
    React,
    /// Vue 3.
    Vue,
    /// Svelte 5.
    Svelte,
}

/// A page route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Path pattern with `:name` segments, e.g. `/products/:id`.
    pub path: String,
    /// The bundle that renders it.
    pub bundle: String,
    /// The page name inside the bundle.
    pub page: String,
    /// Dependencies fetched before the render.
    #[serde(default)]
    pub data: Vec<DataDependency>,
    /// Query parameter names the page reads; all others are dropped.
    #[serde(default)]
    pub query: Vec<String>,
    /// Request headers the page varies on.
    #[serde(default)]
    pub vary: Vec<String>,
    /// Route parameters of the pages `mizan-render prerender` renders ahead of traffic.
    #[serde(default)]
    pub prerender: Vec<serde_json::Map<String, Value>>,
    /// CPU time one render of this route may use, in milliseconds (default: the node's
    /// `--render-cpu-ms`): for pages known to be heavy.
    #[serde(default)]
    pub cpu_ms: Option<u64>,
    /// A miss streams the page to the visitor as it renders (the bundle's
    /// `renderStream(input)`); a bundle without it renders such a route buffered.
    #[serde(default)]
    pub stream: bool,
}

/// One context a route reads, with how its params are built from the request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataDependency {
    /// The context name.
    pub context: String,
    /// Param name -> where its value comes from.
    #[serde(default)]
    pub params: BTreeMap<String, ParamSource>,
}

/// Where a context param's value comes from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum ParamSource {
    /// A `:name` segment of the route path.
    Route(String),
    /// A declared query parameter.
    Query(String),
    /// A constant JSON value.
    Const(Value),
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.into(), source })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_json(&text, path, base_dir)
    }

    /// Parses and validates manifest JSON; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path, base_dir: PathBuf) -> Result<Self, ManifestError> {
        let invalid = |at: String, message: String| ManifestError::Invalid { path: path.into(), at, message };
        let de = &mut serde_json::Deserializer::from_str(text);
        let mut manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let message = e.into_inner().to_string();
            invalid(at, message)
        })?;
        manifest.base_dir = base_dir;
        manifest.validate().map_err(|(at, message)| invalid(at, message))?;
        Ok(manifest)
    }

    /// The file of bundle `name`, resolved against the manifest's directory.
    pub fn bundle_path(&self, name: &str) -> Option<PathBuf> {
        self.bundles.get(name).map(|b| self.base_dir.join(&b.file))
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if self.version != 1 {
            return Err(("version".into(), format!("unsupported version {} (this node reads 1)", self.version)));
        }
        if self.site.is_empty() {
            return Err(("site".into(), "must not be empty".into()));
        }
        for (name, context) in &self.contexts {
            if !is_identifier(name) {
                return Err((
                    format!("contexts.{name}"),
                    "context names are identifiers ([A-Za-z_][A-Za-z0-9_]*)".into(),
                ));
            }
            if !context.params.is_object() {
                return Err((format!("contexts.{name}.params"), "must be a JSON Schema object".into()));
            }
        }
        if self.bundles.is_empty() {
            return Err(("bundles".into(), "at least one bundle is required".into()));
        }
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            let names = route::pattern_params(&route.path).map_err(|m| (format!("{at}.path"), m))?;
            if !self.bundles.contains_key(&route.bundle) {
                return Err((format!("{at}.bundle"), unknown("bundle", &route.bundle, self.bundles.keys())));
            }
            if route.page.is_empty() {
                return Err((format!("{at}.page"), "must not be empty".into()));
            }
            for (j, dep) in route.data.iter().enumerate() {
                let at = format!("{at}.data[{j}]");
                if !self.contexts.contains_key(&dep.context) {
                    return Err((format!("{at}.context"), unknown("context", &dep.context, self.contexts.keys())));
                }
                for (param, source) in &dep.params {
                    let at = format!("{at}.params.{param}");
                    match source {
                        ParamSource::Route(n) if !names.contains(n) => {
                            return Err((at, format!("route parameter \":{n}\" is not in path \"{}\"", route.path)));
                        }
                        ParamSource::Query(n) if !route.query.contains(n) => {
                            return Err((at, format!("query parameter \"{n}\" is not in this route's \"query\" list")));
                        }
                        _ => {}
                    }
                }
            }
            if let Some(ms) = route.cpu_ms
                && !(1..=60_000).contains(&ms)
            {
                return Err((format!("{at}.cpu_ms"), format!("{ms} is not between 1 and 60000 (milliseconds)")));
            }
            for (j, name) in route.vary.iter().enumerate() {
                let at = format!("{at}.vary[{j}]");
                if !is_header_name(name) {
                    return Err((
                        at,
                        format!("\"{name}\" is not an HTTP header name (a token: letters, digits and !#$%&'*+-.^_`|~)"),
                    ));
                }
                if let Some(k) = route.vary[..j].iter().position(|earlier| earlier.eq_ignore_ascii_case(name)) {
                    return Err((at, format!("header \"{name}\" is already named at vary[{k}] (names ignore case)")));
                }
                if CREDENTIAL_HEADERS.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                    return Err((
                        at,
                        format!(
                            "\"{name}\" carries a visitor's credentials: a stored page cannot vary on it (declare the context cache: false instead)"
                        ),
                    ));
                }
            }
        }
        for (i, prefix) in self.proxy.iter().enumerate() {
            if !prefix.starts_with('/') {
                return Err((format!("proxy[{i}]"), format!("\"{prefix}\" must start with '/'")));
            }
        }
        Router::new(self).map(|_| ()).map_err(|(i, m)| (format!("routes[{i}].path"), m))
    }
}

/// Headers that identify a visitor: never part of a shared page's key, never sent to the
/// origin for one.
const CREDENTIAL_HEADERS: [&str; 3] = ["cookie", "authorization", "proxy-authorization"];

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` is an HTTP field name (RFC 9110 §5.1: a token), which its lower-case form
/// then is too: vary headers are keyed and looked up lower-cased.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&str> = known.map(String::as_str).collect();
    format!("unknown {what} \"{name}\" (known: {})", known.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<Manifest, ManifestError> {
        Manifest::from_json(json, Path::new("m.json"), PathBuf::new())
    }

    const GOOD: &str = r#"{
        "version": 1, "site": "shop",
        "contexts": {"product_detail": {"params": {"type": "object", "properties": {"id": {"type": "integer"}}}}},
        "bundles": {"app": {"framework": "react", "file": "server.mjs"}},
        "routes": [{"path": "/products/:id", "bundle": "app", "page": "Detail",
                    "data": [{"context": "product_detail", "params": {"id": {"route": "id"}}}]}]
    }"#;

    #[test]
    fn accepts_a_valid_manifest() {
        let m = load(GOOD).unwrap();
        assert_eq!(m.routes[0].data[0].params["id"], ParamSource::Route("id".into()));
        assert_eq!(m.contexts["product_detail"].cache, CachePolicy::Cached(CacheTimes::default()));
    }

    #[test]
    fn names_the_path_of_a_structural_error() {
        let bad = GOOD.replace(r#""framework": "react""#, r#""framework": "angular""#);
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.starts_with("manifest m.json: bundles.app.framework: unknown variant `angular`"), "{err}");
    }

    #[test]
    fn names_an_unknown_context() {
        let bad = GOOD.replace(r#""context": "product_detail""#, r#""context": "product_detial""#);
        let err = load(&bad).unwrap_err().to_string();
        assert_eq!(
            err,
            "manifest m.json: routes[0].data[0].context: unknown context \"product_detial\" (known: product_detail)"
        );
    }

    #[test]
    fn refuses_a_param_from_a_missing_route_segment() {
        let bad = GOOD.replace(r#"{"route": "id"}"#, r#"{"route": "slug"}"#);
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("routes[0].data[0].params.id: route parameter \":slug\" is not in path"), "{err}");
    }

    #[test]
    fn refuses_cache_true() {
        let bad = GOOD.replace(r#""params": {"type": "object""#, r#""cache": true, "params": {"type": "object""#);
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("contexts.product_detail"), "{err}");
    }

    #[test]
    fn refuses_a_vary_header_named_twice_or_not_a_header_name() {
        let with_vary =
            |vary: &str| GOOD.replace(r#""page": "Detail","#, &format!(r#""page": "Detail", "vary": {vary},"#));
        let err = load(&with_vary(r#"["x-ok", "Cookie"]"#)).unwrap_err().to_string();
        assert!(err.contains("routes[0].vary[1]: \"Cookie\" carries a visitor's credentials"), "{err}");
        let m = load(&with_vary(r#"["Accept-Language", "x-currency"]"#)).unwrap();
        assert_eq!(m.routes[0].vary, ["Accept-Language", "x-currency"]);
        let err = load(&with_vary(r#"["Accept-Language", "x-currency", "accept-language"]"#)).unwrap_err().to_string();
        assert_eq!(
            err,
            "manifest m.json: routes[0].vary[2]: header \"accept-language\" is already named at vary[0] (names ignore case)"
        );
        for bad in [r#""""#, r#""x currency""#, r#""x-currency:""#, r#""accept-langüage""#, r#""a\nb""#] {
            let err = load(&with_vary(&format!(r#"["x-ok", {bad}]"#))).unwrap_err().to_string();
            assert!(err.starts_with("manifest m.json: routes[0].vary[1]: "), "{bad}: {err}");
            assert!(err.contains("is not an HTTP header name"), "{bad}: {err}");
        }
    }

    #[test]
    fn refuses_conflicting_routes() {
        let bad =
            GOOD.replace(r#""routes": ["#, r#""routes": [{"path": "/products/:slug", "bundle": "app", "page": "X"},"#);
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("routes[1].path"), "{err}");
    }
}
