//! The node's settings from three places, with one precedence: flags, then `MIZAN_*`
//! environment variables (clap reads both into [`Settings`]), then a TOML file (`--config`,
//! `MIZAN_CONFIG`), then the defaults. Every flag `--foo-bar` is the file key `foo_bar` and the
//! variable `MIZAN_FOO_BAR`. The secret is never a file key: it comes from `MIZAN_SECRET`,
//! `--secret-file` or the file's `secret_file`. [`Resolved`] is the outcome, printable with
//! its secrets redacted (`mizan-render config check`).

use crate::node::{NodeConfig, SharedConfig, StoreConfig, default_render_lock_ms, redact_url};
use crate::origin::OriginConfig;
use crate::origin::proxy::Forwarding;
use crate::pool::PoolConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

// The defaults, used both to build the configuration and to print it (`config check`). The
// flags' help texts repeat them in words.
const DEFAULT_ORIGIN: &str = "http://127.0.0.1:8000";
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MEMORY_MB: u64 = 256;
const DEFAULT_RENDER_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_RENDER_CPU_MS: u64 = 500;
const DEFAULT_MAX_HEAP_MB: usize = 256;
const DEFAULT_ORIGIN_TIMEOUT_MS: u64 = 5000;
const DEFAULT_ORIGIN_CONCURRENCY: usize = 64;
const DEFAULT_ORIGIN_MAX_BODY: usize = 8 << 20;
const DEFAULT_GRACE_MS: u64 = 10_000;
/// The log filter when neither `MIZAN_LOG` nor the file sets one.
pub const DEFAULT_LOG: &str = "info";

/// Why the settings do not hold.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("reading the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What and where (line, column, key), from the TOML parser.
        message: String,
    },
    /// A setting is missing or its value is refused.
    #[error("{setting}: {message}")]
    Invalid {
        /// The setting, as its flag and where it came from.
        setting: String,
        /// Why.
        message: String,
    },
}

/// Every setting of `serve` and `prerender`, as flags and `MIZAN_*` variables and as the keys
/// of the config file. `None`: not given here.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The edge manifest. In the file, relative to the file's folder.
    #[arg(long, env = "MIZAN_MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// The origin's base URL [default: http://127.0.0.1:8000].
    #[arg(long, env = "MIZAN_ORIGIN")]
    pub origin: Option<String>,
    /// The cache store: memory, sqlite:<path>, or Redis by URL: redis://host:port/db,
    /// rediss:// (TLS), redis+cluster://h:p,h:p, redis+sentinel://h:p/service
    /// (docs/operations.md, "Redis") [default: memory].
    #[arg(long, env = "MIZAN_STORE")]
    pub store: Option<String>,
    /// Memory for the node's caches, in MiB: the memory store and (a sixteenth of it) the
    /// request-target memo [default: 256].
    #[arg(long, env = "MIZAN_MEMORY_MB")]
    pub memory_mb: Option<u64>,
    /// Memory tier in front of a Redis store, in MiB: pages and data served from this node's
    /// memory, kept honest by Redis's purge log (Redis stores only) [default: 0, none].
    #[arg(long, env = "MIZAN_L1_MB")]
    pub l1_mb: Option<u64>,
    /// How long a page's render lock lasts, in milliseconds: one node renders a missed page
    /// while the others sharing its Redis wait for it; 0 turns the locks off [default: origin
    /// timeout + render timeout + 1000].
    #[arg(long, env = "MIZAN_RENDER_LOCK_MS")]
    pub render_lock_ms: Option<u64>,
    /// The public URL of the site (`https://shop.example`) when a TLS terminator or load
    /// balancer sits in front: the proxy's `X-Forwarded-Proto` and `-Host` come from it.
    #[arg(long, env = "MIZAN_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A peer whose `X-Forwarded-For` the proxy believes and appends to (a load balancer's
    /// address); repeat for several. Any other peer's chain is replaced by its address.
    #[arg(long = "trusted-proxy", env = "MIZAN_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// Render threads [default: the number of cores].
    #[arg(long, env = "MIZAN_WORKERS")]
    pub workers: Option<usize>,
    /// Renders that may wait for a worker before requests are refused with 503 [default: 64
    /// per worker].
    #[arg(long, env = "MIZAN_QUEUE")]
    pub queue: Option<usize>,
    /// Longest a render may take, in milliseconds; past it the page fails and the isolate is
    /// replaced [default: 10000].
    #[arg(long, env = "MIZAN_RENDER_TIMEOUT_MS")]
    pub render_timeout_ms: Option<u64>,
    /// CPU time one render may use, in milliseconds (waiting does not count); past it the page
    /// fails and the isolate is replaced. A route's `cpu_ms` overrides it [default: 500].
    #[arg(long, env = "MIZAN_RENDER_CPU_MS")]
    pub render_cpu_ms: Option<u64>,
    /// JS heap of each render isolate, in MiB; a render that needs more fails and the isolate
    /// is replaced [default: 256].
    #[arg(long, env = "MIZAN_MAX_HEAP_MB")]
    pub max_heap_mb: Option<usize>,
    /// Origin timeout per request, in milliseconds [default: 5000].
    #[arg(long, env = "MIZAN_ORIGIN_TIMEOUT_MS")]
    pub origin_timeout_ms: Option<u64>,
    /// Context requests in flight to the origin at once (as many more may wait; beyond that
    /// pages answer 503) [default: 64].
    #[arg(long, env = "MIZAN_ORIGIN_CONCURRENCY")]
    pub origin_concurrency: Option<usize>,
    /// Largest origin answer accepted, in bytes [default: 8388608].
    #[arg(long, env = "MIZAN_ORIGIN_MAX_BODY")]
    pub origin_max_body: Option<usize>,
    /// Address to serve on [default: 127.0.0.1:8080].
    #[arg(long, env = "MIZAN_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve `/metrics` on this address only (not on --listen), so it is not public.
    #[arg(long, env = "MIZAN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// On SIGTERM or Ctrl-C: how long in-flight requests and background renders may take to
    /// finish, in milliseconds, before the node exits anyway [default: 10000].
    #[arg(long, env = "MIZAN_GRACE_MS")]
    pub grace_ms: Option<u64>,
    /// Extra V8 flags for every isolate, space-separated (for experiments and diagnosis).
    #[arg(long, env = "MIZAN_V8_FLAGS")]
    pub v8_flags: Option<String>,
    /// File key only (the flag and variable are `--secret-file`, `MIZAN_SECRET_FILE`).
    #[arg(skip)]
    pub secret_file: Option<PathBuf>,
    /// File key only (the flag is `--dev`).
    #[arg(skip)]
    pub dev: Option<bool>,
    /// File key only (the flag and variable are `--log-json`, `MIZAN_LOG_JSON`).
    #[arg(skip)]
    pub log_json: Option<bool>,
    /// File key only (the variable is `MIZAN_LOG`): the log filter, `info`, `debug`, ...
    #[arg(skip)]
    pub log: Option<String>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// A `MIZAN_*` environment variable.
    Env,
    /// The config file.
    File,
    /// Built in.
    Default,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "config file",
            Source::Default => "default",
        }
    }
}

impl Settings {
    /// Reads and checks a config file; relative paths in it are made relative to its folder.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut settings: Settings = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: match e.message() {
                m if m.starts_with("unknown field `secret`") => format!(
                    "{}the secret is not a config file key: set MIZAN_SECRET, or secret_file (a file holding it)",
                    location(&text, e.span())
                ),
                _ => e.to_string().trim_end().to_string(),
            },
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &mut Option<PathBuf>| {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = dir.join(&*p);
            }
        };
        rel(&mut settings.manifest);
        rel(&mut settings.secret_file);
        if let Some(file) = settings.store.as_deref().and_then(|s| s.strip_prefix("sqlite:"))
            && Path::new(file).is_relative()
        {
            settings.store = Some(format!("sqlite:{}", dir.join(file).display()));
        }
        Ok(settings)
    }
}

/// `line N, column M: ` of a byte span of `text`.
fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}: ")
}

/// The settings in effect, each with where it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Flags and environment over the file.
    pub settings: Settings,
    /// Where each setting (by file key) came from.
    pub sources: BTreeMap<&'static str, Source>,
    /// The config file, if any.
    pub file: Option<PathBuf>,
}

macro_rules! merge {
    ($cli:ident, $file:ident, $source:ident, $sources:ident, [$($field:ident),* $(,)?]) => {
        Settings {$(
            $field: match ($cli.$field, $file.$field) {
                (Some(value), _) => {
                    $sources.insert(stringify!($field), $source(stringify!($field)).unwrap_or(Source::Flag));
                    Some(value)
                }
                (None, Some(value)) => {
                    $sources.insert(stringify!($field), Source::File);
                    Some(value)
                }
                (None, None) => None,
            },
        )*}
    };
}

impl Resolved {
    /// `cli` (flags and environment; `source` tells which for a key) over `file`.
    pub fn new(cli: Settings, source: impl Fn(&str) -> Option<Source>, file: Option<(PathBuf, Settings)>) -> Resolved {
        let (path, file) = match file {
            Some((path, settings)) => (Some(path), settings),
            None => (None, Settings::default()),
        };
        let mut sources = BTreeMap::new();
        let settings = merge!(
            cli,
            file,
            source,
            sources,
            [
                manifest,
                origin,
                store,
                memory_mb,
                l1_mb,
                render_lock_ms,
                public_url,
                trusted_proxies,
                workers,
                queue,
                render_timeout_ms,
                render_cpu_ms,
                max_heap_mb,
                origin_timeout_ms,
                origin_concurrency,
                origin_max_body,
                listen,
                metrics_listen,
                grace_ms,
                v8_flags,
                secret_file,
                dev,
                log_json,
                log,
            ]
        );
        Resolved { settings, sources, file: path }
    }

    /// Where `key` came from.
    pub fn source(&self, key: &str) -> Source {
        self.sources.get(key).copied().unwrap_or(Source::Default)
    }

    /// `setting` refused for `message`, named as the flag and where its value came from.
    fn invalid(&self, key: &str, message: impl std::fmt::Display) -> ConfigError {
        let place = match (self.source(key), &self.file) {
            (Source::File, Some(file)) => format!("{key} in {}", file.display()),
            (Source::Env, _) => format!("MIZAN_{}", key.to_ascii_uppercase()),
            _ => format!("--{}", key.replace('_', "-")),
        };
        ConfigError::Invalid { setting: place, message: message.to_string() }
    }

    /// The address to serve on.
    pub fn listen(&self) -> SocketAddr {
        self.settings.listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("the default address parses"))
    }

    /// The grace period on SIGTERM.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.settings.grace_ms.unwrap_or(DEFAULT_GRACE_MS))
    }

    /// The node's configuration, with `secret` (read by the caller from the flag, the
    /// environment or a secret file).
    pub fn node_config(&self, secret: Vec<u8>, dev: bool) -> Result<NodeConfig, ConfigError> {
        let s = &self.settings;
        let manifest = s.manifest.clone().ok_or_else(|| self.invalid("manifest", "is required"))?;
        let store: StoreConfig =
            s.store.as_deref().unwrap_or("memory").parse().map_err(|e: String| self.invalid("store", e))?;
        let mut pool = PoolConfig::default();
        if let Some(workers) = s.workers {
            if workers == 0 {
                return Err(self.invalid("workers", "must be at least 1"));
            }
            pool.workers = workers;
            pool.queue = 64 * workers;
        }
        if let Some(queue) = s.queue {
            pool.queue = queue;
        }
        pool.render_timeout = Duration::from_millis(s.render_timeout_ms.unwrap_or(DEFAULT_RENDER_TIMEOUT_MS));
        pool.cpu_budget = Duration::from_millis(s.render_cpu_ms.unwrap_or(DEFAULT_RENDER_CPU_MS).max(1));
        pool.max_heap = s.max_heap_mb.unwrap_or(DEFAULT_MAX_HEAP_MB) << 20;
        // The memo's bound counts against the memory the operator gave the node.
        let memory = s.memory_mb.unwrap_or(DEFAULT_MEMORY_MB) << 20;
        let memo_bytes = (memory / 16) as usize;
        let store = match store {
            StoreConfig::Memory(_) => StoreConfig::Memory(memory - memo_bytes as u64),
            other => other,
        };
        let l1_mb = s.l1_mb.unwrap_or(0);
        if l1_mb > 0 && !matches!(store, StoreConfig::Redis(_)) {
            return Err(self.invalid(
                "l1_mb",
                format!(
                    "a memory tier sits in front of a Redis store, and the store is {}: use a Redis store, or leave l1_mb at 0",
                    store.redacted()
                ),
            ));
        }
        let l1_bytes = l1_mb.checked_mul(1 << 20).ok_or_else(|| self.invalid("l1_mb", "is too large"))?;
        let public = match &s.public_url {
            Some(url) => Some(Forwarding::public_url(url).map_err(|e| self.invalid("public_url", e))?),
            None => None,
        };
        let base = s.origin.clone().unwrap_or_else(|| DEFAULT_ORIGIN.into());
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(self.invalid("origin", format!("{:?} is not an http:// or https:// URL", redact_url(&base))));
        }
        Ok(NodeConfig {
            manifest,
            origin: OriginConfig {
                base,
                timeout: Duration::from_millis(s.origin_timeout_ms.unwrap_or(DEFAULT_ORIGIN_TIMEOUT_MS)),
                max_body: s.origin_max_body.unwrap_or(DEFAULT_ORIGIN_MAX_BODY),
                max_concurrent: s.origin_concurrency.unwrap_or(DEFAULT_ORIGIN_CONCURRENCY).max(1),
            },
            store,
            pool,
            secret,
            dev,
            forwarding: Forwarding { public, trusted: s.trusted_proxies.clone().unwrap_or_default() },
            memo_bytes,
            metrics: None,
            shared: SharedConfig { l1_bytes, render_lock_ms: s.render_lock_ms },
        })
    }

    /// The settings in effect as a config file, secrets redacted, each key commented with
    /// where its value came from; `secret` says where the secret came from.
    pub fn to_toml(&self, secret: &str) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(out, "# The settings in effect (precedence: flag > environment > config file > default).");
        if let Some(file) = &self.file {
            let _ = writeln!(out, "# config file: {}", file.display());
        }
        let _ = writeln!(out, "# secret: {secret}");
        let quote = |v: &str| toml::Value::String(v.to_string()).to_string();
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| quote(&p.display().to_string()));
        let store = printable_store(s.store.as_deref().unwrap_or("memory"));
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let rows: Vec<(&'static str, Option<String>, String)> = vec![
            ("manifest", path(&s.manifest), "(required)".into()),
            ("origin", s.origin.as_deref().map(|o| quote(&redact_url(o))), quote(DEFAULT_ORIGIN)),
            ("store", s.store.as_ref().map(|_| quote(&store)), quote("memory")),
            ("memory_mb", s.memory_mb.map(|v| v.to_string()), DEFAULT_MEMORY_MB.to_string()),
            ("l1_mb", s.l1_mb.map(|v| v.to_string()), "0".into()),
            ("render_lock_ms", s.render_lock_ms.map(|v| v.to_string()), {
                let ms = |v: Option<u64>, d| Duration::from_millis(v.unwrap_or(d));
                default_render_lock_ms(
                    ms(s.origin_timeout_ms, DEFAULT_ORIGIN_TIMEOUT_MS),
                    ms(s.render_timeout_ms, DEFAULT_RENDER_TIMEOUT_MS),
                )
                .to_string()
            }),
            ("public_url", s.public_url.as_deref().map(quote), "(none)".into()),
            (
                "trusted_proxies",
                s.trusted_proxies
                    .as_ref()
                    .map(|v| format!("[{}]", v.iter().map(|ip| quote(&ip.to_string())).collect::<Vec<_>>().join(", "))),
                "[]".into(),
            ),
            ("workers", s.workers.map(|v| v.to_string()), cpus.to_string()),
            ("queue", s.queue.map(|v| v.to_string()), (64 * s.workers.unwrap_or(cpus)).to_string()),
            ("render_timeout_ms", s.render_timeout_ms.map(|v| v.to_string()), DEFAULT_RENDER_TIMEOUT_MS.to_string()),
            ("render_cpu_ms", s.render_cpu_ms.map(|v| v.to_string()), DEFAULT_RENDER_CPU_MS.to_string()),
            ("max_heap_mb", s.max_heap_mb.map(|v| v.to_string()), DEFAULT_MAX_HEAP_MB.to_string()),
            ("origin_timeout_ms", s.origin_timeout_ms.map(|v| v.to_string()), DEFAULT_ORIGIN_TIMEOUT_MS.to_string()),
            ("origin_concurrency", s.origin_concurrency.map(|v| v.to_string()), DEFAULT_ORIGIN_CONCURRENCY.to_string()),
            ("origin_max_body", s.origin_max_body.map(|v| v.to_string()), DEFAULT_ORIGIN_MAX_BODY.to_string()),
            ("listen", s.listen.map(|v| quote(&v.to_string())), quote(DEFAULT_LISTEN)),
            ("metrics_listen", s.metrics_listen.map(|v| quote(&v.to_string())), "(none: /metrics on listen)".into()),
            ("grace_ms", s.grace_ms.map(|v| v.to_string()), DEFAULT_GRACE_MS.to_string()),
            ("v8_flags", s.v8_flags.as_deref().map(quote), "(none)".into()),
            ("secret_file", path(&s.secret_file), "(none)".into()),
            ("dev", s.dev.map(|v| v.to_string()), "false".into()),
            ("log_json", s.log_json.map(|v| v.to_string()), "false".into()),
            ("log", s.log.as_deref().map(quote), quote(DEFAULT_LOG)),
        ];
        for (key, value, default) in rows {
            match value {
                Some(value) => {
                    let _ = writeln!(out, "{key} = {value}  # {}", self.source(key).as_str());
                }
                None if default.starts_with('(') => {
                    let _ = writeln!(out, "# {key}: {default}");
                }
                None => {
                    let _ = writeln!(out, "{key} = {default}  # default");
                }
            }
        }
        out
    }
}

/// The store setting as it may be printed: parsed and redacted, or, when it does not parse,
/// only its scheme.
fn printable_store(text: &str) -> String {
    match text.parse::<StoreConfig>() {
        Ok(StoreConfig::Memory(_)) => "memory".into(),
        Ok(store) => store.redacted(),
        Err(_) => crate::cache::redis::Target::redact(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(settings: Settings) -> Result<NodeConfig, ConfigError> {
        let settings = Settings { manifest: Some("m.json".into()), ..settings };
        Resolved::new(settings, |_| Some(Source::Flag), None).node_config(b"x".repeat(32), false)
    }

    #[test]
    fn a_memory_tier_needs_a_redis_store() {
        for store in [None, Some("memory"), Some("sqlite:/tmp/x.db")] {
            let settings = Settings { l1_mb: Some(64), store: store.map(String::from), ..Settings::default() };
            let error = resolve(settings).unwrap_err().to_string();
            assert!(error.starts_with("--l1-mb: ") && error.contains("use a Redis store"), "{error}");
        }
        let settings = Settings { l1_mb: Some(64), store: Some("redis://h:6379/".into()), ..Settings::default() };
        assert_eq!(resolve(settings).unwrap().shared.l1_bytes, 64 << 20);
        assert_eq!(resolve(Settings::default()).unwrap().shared, SharedConfig::default(), "no tier, derived locks");
    }

    #[test]
    fn the_render_lock_defaults_to_the_longest_render_and_zero_turns_it_off() {
        let settings = Settings { render_lock_ms: Some(0), ..Settings::default() };
        assert_eq!(resolve(settings).unwrap().shared.render_lock_ms, Some(0));
        let settings = Settings { origin_timeout_ms: Some(2000), render_timeout_ms: Some(3000), ..Settings::default() };
        let config = resolve(settings.clone()).unwrap();
        assert_eq!(config.shared.render_lock_ms, None, "derived when the node starts");
        assert_eq!(default_render_lock_ms(config.origin.timeout, config.pool.render_timeout), 6000);
        let printed = Resolved::new(settings, |_| Some(Source::Flag), None).to_toml("test");
        assert!(printed.contains("render_lock_ms = 6000  # default"), "{printed}");
        assert!(printed.contains("l1_mb = 0  # default"), "{printed}");
    }
}
