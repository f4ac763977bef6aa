//! The `mizan-render` command line.

use anyhow::{Context as _, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use mizan_render::cache::Keys;
use mizan_render::cache::key::PageKeyParts;
use mizan_render::cache::purge::{ModeName, PurgeRequest, PurgeTarget};
use mizan_render::config::{Resolved, Settings, Source};
use mizan_render::manifest::{Manifest, Router};
use mizan_render::node::live::Live;
use mizan_render::node::{Node, NodeConfig};
use mizan_render::origin::OriginConfig;
use serde_json::{Map, Value};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "mizan-render", version, about = "Self-hosted Mizan render node")]
struct Cli {
    /// A TOML config file: every setting of `serve` by its flag's name (`--memory-mb` is
    /// `memory_mb`); flags and MIZAN_* variables override it (docs/mizan.example.toml).
    #[arg(long, global = true, env = "MIZAN_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of text (`--log-json=false` turns a config file's off).
    #[arg(long, global = true, env = "MIZAN_LOG_JSON", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    log_json: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

/// Where the protocol secret comes from.
#[derive(clap::Args)]
struct SecretArgs {
    /// The protocol secret (32 bytes or more), shared with the edge and the origin. Prefer
    /// --secret-file or the environment: a command line is visible to every local user.
    #[arg(long = "secret", env = "MIZAN_SECRET", hide_env_values = true, global = true)]
    secret: Option<String>,
    /// A file holding the protocol secret (one trailing newline is ignored).
    #[arg(long = "secret-file", env = "MIZAN_SECRET_FILE", global = true, conflicts_with = "secret")]
    secret_file: Option<PathBuf>,
    /// Development mode: accept the published example secret.
    #[arg(long, global = true)]
    dev: bool,
}

impl SecretArgs {
    /// The secret's bytes, from the flag or environment, else the secret file (the flag's,
    /// else the config file's `secret_file`); and where it came from, for `config check`.
    fn read(&self, config_file_secret: Option<&Path>) -> anyhow::Result<(Vec<u8>, String)> {
        if let Some(secret) = &self.secret {
            return Ok((secret.as_bytes().to_vec(), "MIZAN_SECRET (or --secret)".into()));
        }
        let Some(path) = self.secret_file.as_deref().or(config_file_secret) else {
            bail!("no secret: set MIZAN_SECRET, or --secret-file / MIZAN_SECRET_FILE / secret_file in the config file");
        };
        let mut bytes = std::fs::read(path).with_context(|| format!("reading the secret file {}", path.display()))?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        Ok((bytes, format!("the file {}", path.display())))
    }

    fn bytes(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.read(None)?.0)
    }

    fn keys(&self) -> anyhow::Result<Keys> {
        Ok(Keys::from_secret(&self.bytes()?, self.dev)?)
    }
}

/// The settings of `serve`, `prerender` and `config check`.
#[derive(clap::Args)]
struct NodeArgs {
    #[command(flatten)]
    settings: Settings,
    #[command(flatten)]
    secret: SecretArgs,
}

/// The node's configuration from the resolved settings and the secret.
fn node_config(resolved: &Resolved, secret: &SecretArgs) -> anyhow::Result<(NodeConfig, String)> {
    let (bytes, from) = secret.read(resolved.settings.secret_file.as_deref())?;
    let dev = secret.dev || resolved.settings.dev == Some(true);
    Keys::from_secret(&bytes, dev).with_context(|| format!("the secret from {from}"))?;
    let described = format!("from {from}, {} bytes{}", bytes.len(), if dev { " (dev mode)" } else { "" });
    Ok((resolved.node_config(bytes, dev)?, described))
}

#[derive(Subcommand)]
enum Command {
    /// Serve pages: the self-hosted render Worker.
    Serve {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Check a config file, the manifest, the bundles (loaded in an isolate) and the store
    /// without serving; print the settings in effect with secrets redacted.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Exit 0 when a node answers `/_mizan/health` with 200 (ok or degraded), 1 otherwise: a
    /// container's HEALTHCHECK without curl in the image.
    Health {
        /// The node's base URL [default: the node's listen address (MIZAN_LISTEN, else the
        /// config file's, else 127.0.0.1:8080), 0.0.0.0 asked as 127.0.0.1].
        #[arg(long, env = "MIZAN_HEALTH_URL")]
        url: Option<String>,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Ask a running node to load its manifest and bundles again (a signed POST
    /// /_mizan/reload; SIGHUP does the same locally).
    Reload {
        /// The node's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        node: String,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Render and store every route the manifest can enumerate (its `prerender` lists).
    Prerender {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Render one page to stdout, from captured origin answers (for SSR parity tests).
    Render {
        /// The edge manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// The request path and query, e.g. /products/42.
        #[arg(long, required_unless_present = "case", conflicts_with = "case")]
        url: Option<String>,
        /// JSON file of origin answers by context: {"ctx": {"data": ...} | {"error": {...}}}.
        #[arg(long, conflicts_with = "case")]
        data: Option<PathBuf>,
        /// A case file (what `capture` writes): the URL, headers and origin answers in one.
        #[arg(long)]
        case: Option<PathBuf>,
        /// Print {status, headers, html} as JSON instead of the HTML alone.
        #[arg(long)]
        json: bool,
        /// Render this many more times after the first and print their times (median, p90,
        /// best; in the isolate, warm) to stderr: how long the page takes, without HTTP.
        #[arg(long, default_value_t = 0)]
        repeat: u32,
    },
    /// Record, for each page, what the origin answers, as case files for `parity`.
    Capture {
        /// The edge manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// The origin's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        origin: String,
        /// A file of URLs, one per line (default: every URL the manifest's `prerender` lists
        /// enumerate).
        #[arg(long)]
        urls: Option<PathBuf>,
        /// The directory the case files go to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Render every case with the same bundle here and in other runtimes; report every page
    /// that is not byte for byte the same, and exit non-zero if any.
    Parity {
        /// The edge manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// The directory of case files.
        #[arg(long)]
        cases: PathBuf,
        /// The runtimes to compare with.
        #[arg(long, value_delimiter = ',', default_value = "node,workerd")]
        runtimes: Vec<String>,
        /// Fix Date.now()/new Date() and seed Math.random and crypto's random values, the same
        /// in every runtime.
        #[arg(long)]
        deterministic: bool,
        /// The report: text, json or junit.
        #[arg(long, default_value = "text")]
        format: String,
        /// Write the report to this file instead of stdout (the summary still goes to stderr).
        #[arg(long)]
        report: Option<PathBuf>,
        /// workerd's compatibility date (default: the render Worker's).
        #[arg(long)]
        compatibility_date: Option<String>,
        /// workerd's compatibility flags, comma-separated (default: the render Worker's).
        #[arg(long, value_delimiter = ',')]
        compatibility_flags: Option<Vec<String>>,
        /// A wrangler.toml or wrangler.jsonc to take the compatibility date and flags from.
        #[arg(long)]
        wrangler: Option<PathBuf>,
        /// The node binary (default: found on PATH or in node_modules/.bin).
        #[arg(long)]
        node: Option<PathBuf>,
        /// The workerd binary.
        #[arg(long)]
        workerd: Option<PathBuf>,
        /// The deno binary.
        #[arg(long)]
        deno: Option<PathBuf>,
        /// The bun binary.
        #[arg(long)]
        bun: Option<PathBuf>,
    },
    /// Compute a cache key by hand.
    Key {
        #[command(subcommand)]
        kind: KeyKind,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Send a signed purge to a node's /_mizan/purge.
    Purge {
        /// The node's base URL, e.g. http://127.0.0.1:8080.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        node: String,
        /// The context to purge.
        context: String,
        /// The params subset as a JSON object (default: the whole context).
        #[arg(default_value = "{}")]
        params: String,
        /// Mark stale instead of removing.
        #[arg(long)]
        soft: bool,
        #[command(flatten)]
        secret: SecretArgs,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate everything `serve` would load, then print the settings in effect.
    Check {
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand)]
enum KeyKind {
    /// The data key of a context and its params: `key data product_detail '{"id": 42}'`.
    Data {
        /// The context name.
        context: String,
        /// Its params, a JSON object.
        params: String,
    },
    /// The page key of a request: `key page /products/42 --manifest m.json`.
    Page {
        /// The request path and query.
        url: String,
        /// The manifest (site id, declared query and vary).
        #[arg(long)]
        manifest: PathBuf,
        /// The request method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// A request header, `Name: value`; repeat for several.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let file = match &cli.config {
        Some(path) => Some((path.clone(), Settings::from_file(path)?)),
        None => None,
    };
    // The subcommand's own matches: they say whether a setting came from a flag or the
    // environment.
    let mut leaf = &matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    let flags = match &cli.command {
        Command::Serve { node }
        | Command::Prerender { node }
        | Command::Config { action: ConfigAction::Check { node } } => node.settings.clone(),
        _ => Settings::default(),
    };
    let resolved = Resolved::new(flags, |key| source_of(leaf, key), file);
    if matches!(cli.command, Command::Parity { .. }) {
        // This node's isolates take the time zone and locale from the environment, as the
        // other runtimes do (which parity starts with the same two): fixed, so that a page
        // differs for what it does, not for where it runs.
        // SAFETY: no other thread exists yet.
        unsafe {
            std::env::set_var("TZ", "UTC");
            std::env::set_var("LC_ALL", "C.UTF-8");
            std::env::remove_var("LANG");
        }
    }
    if let Some(flags) = &resolved.settings.v8_flags {
        // Read by `js::init_v8` when the first isolate starts.
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("MIZAN_V8_FLAGS", flags) };
    }
    let filter = match (std::env::var("MIZAN_LOG"), &resolved.settings.log) {
        (Ok(env), _) => EnvFilter::try_new(env).context("MIZAN_LOG")?,
        (Err(_), Some(file)) => EnvFilter::try_new(file).context("log in the config file")?,
        (Err(_), None) => EnvFilter::new(mizan_render::config::DEFAULT_LOG),
    };
    // Colour only for a person at a terminal: files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Lines are written to stderr by a thread of their own, so a request never waits on a
    // write(2) for its access line; a full buffer (128 Ki lines) makes the writers wait rather
    // than lose lines. The thread takes the lines waiting, one write for all of them (the
    // BufWriter, flushed when it has taken them all). Dropping the guard, when main returns,
    // writes what is left.
    let batched = std::io::BufWriter::with_capacity(64 << 10, std::io::stderr());
    let (stderr, _flush_on_exit) =
        tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(batched);
    let json = cli.log_json.or(resolved.settings.log_json).unwrap_or(false);
    mizan_render::server::access::write_to(stderr.clone(), json);
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(stderr).with_ansi(ansi);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(run(cli.command, resolved))
}

/// Whether setting `key` of a subcommand came from its flag or its environment variable.
fn source_of(matches: &ArgMatches, key: &str) -> Option<Source> {
    match matches.try_get_raw(key).ok().flatten().and(matches.value_source(key)) {
        Some(ValueSource::CommandLine) => Some(Source::Flag),
        Some(ValueSource::EnvVariable) => Some(Source::Env),
        _ => None,
    }
}

/// Reloads on each SIGHUP.
async fn hangups(live: Arc<Live>, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the manifest and bundles");
        // The outcome is logged by the reload.
        let _ = live.reload().await;
    }
}

/// POSTs `body` to `url`, signed with `keys`; the answer's text.
async fn signed_post(url: &str, keys: &Keys, body: Vec<u8>) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let signature = mizan_render::cache::signature::sign(keys, now, &body);
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-mizan-signature", signature)
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{url} answered {status}: {text}");
    }
    Ok(text)
}

/// Resolves on Ctrl-C or SIGTERM (what service managers and container runtimes send).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

fn params_object(text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str(text).with_context(|| format!("params {text:?} are not JSON"))? {
        Value::Object(map) => Ok(map),
        _ => bail!("params must be a JSON object"),
    }
}

async fn run(command: Command, resolved: Resolved) -> anyhow::Result<()> {
    match command {
        Command::Serve { node } => {
            let (config, _) = node_config(&resolved, &node.secret)?;
            let (listen, grace) = (resolved.listen(), resolved.grace());
            let (manifest, origin) = (config.manifest.clone(), mizan_render::node::redact_url(&config.origin.base));
            let store = config.store.redacted();
            let live = Live::new(Node::start(config.clone()).await?, config);
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
            let url = format!("http://{}", listener.local_addr()?);
            let workers = live.node().pool.workers();
            // Before the node says it serves: from then on SIGHUP reloads instead of ending it.
            let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("listening for SIGHUP")?;
            tokio::spawn(hangups(live.clone(), hangup));
            tracing::info!(%url, manifest = %manifest.display(), %origin, %store, workers, "serving");
            println!("mizan-render serving {url} (open {url}/products)");
            let metrics_listen = resolved.settings.metrics_listen;
            if let Some(address) = metrics_listen {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("listening on {address} (metrics_listen)"))?;
                tracing::info!(url = %format!("http://{}/metrics", listener.local_addr()?), "metrics");
                let metrics = mizan_render::server::observe::metrics_app(live.node().metrics.clone());
                tokio::spawn(async move { axum::serve(listener, metrics).await });
            }
            let app = mizan_render::server::app_with(live.clone(), metrics_listen.is_none())
                .into_make_service_with_connect_info::<SocketAddr>();
            let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
            let signalled = stopping.clone();
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
                shutdown_signal().await;
                tracing::info!("stopping: no new connections; finishing what is in flight");
                signalled.notify_one();
            });
            let grace_over = async {
                stopping.notified().await;
                tokio::time::sleep(grace).await;
            };
            // In-flight requests, then the background renders and their store writes, within
            // the grace period from the signal.
            let started = tokio::select! {
                served = serving => { served?; None }
                () = grace_over => Some(()),
            };
            let drained = match started {
                Some(()) => false,
                None => tokio::time::timeout(grace, live.node().settle_flights()).await.is_ok(),
            };
            if drained {
                tracing::info!("stopped");
            } else {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "stopped with work still in flight: the grace period ended"
                );
            }
        }
        Command::Config { action: ConfigAction::Check { node } } => {
            let (mut config, secret) = node_config(&resolved, &node.secret)?;
            // One worker is enough to load every bundle in an isolate.
            config.pool.workers = 1;
            let checked = Node::start(config).await.context("the configuration does not start")?;
            print!("{}", resolved.to_toml(&secret));
            let m = &checked.manifest;
            eprintln!(
                "ok: site {:?}, {} routes, {} bundles loaded, store {} opened",
                m.site,
                m.routes.len(),
                m.bundles.len(),
                checked.store.name()
            );
        }
        Command::Health { url, timeout_ms } => {
            let url = match url {
                Some(url) => url,
                None => {
                    let from_env = std::env::var("MIZAN_LISTEN").ok().and_then(|l| l.parse::<SocketAddr>().ok());
                    let mut listen = from_env.unwrap_or_else(|| resolved.listen());
                    if listen.ip().is_unspecified() {
                        listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    format!("http://{listen}")
                }
            };
            let url = format!("{}/_mizan/health", url.trim_end_matches('/'));
            let client = reqwest::Client::builder().timeout(Duration::from_millis(timeout_ms)).build()?;
            let response = client.get(&url).send().await.with_context(|| format!("GET {url}"))?;
            let status = response.status();
            println!("{}", response.text().await.unwrap_or_default());
            if !status.is_success() {
                bail!("{url} answered {status}");
            }
        }
        Command::Reload { node, secret } => {
            let url = format!("{}/_mizan/reload", node.trim_end_matches('/'));
            // A body of its own, so that two reloads in one second are not a replay.
            let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
            let body = serde_json::to_vec(&serde_json::json!({ "at": at }))?;
            println!("{}", signed_post(&url, &secret.keys()?, body).await?);
        }
        Command::Prerender { node } => {
            let (config, _) = node_config(&resolved, &node.secret)?;
            let node = Node::start(config).await?;
            let report = mizan_render::prerender::run(&node).await;
            eprintln!("prerendered {} pages, {} failed", report.ok, report.failed.len());
            for (url, error) in &report.failed {
                eprintln!("  {url}: {error}");
            }
            if !report.failed.is_empty() {
                bail!("{} pages failed to prerender", report.failed.len());
            }
        }
        Command::Render { manifest, url, data, case, json, repeat } => {
            let renders = match (&case, &url) {
                (Some(case), _) => mizan_render::oneshot::render_case(&manifest, case, repeat)
                    .await
                    .with_context(|| format!("rendering case {}", case.display()))?,
                (None, Some(url)) => mizan_render::oneshot::render(&manifest, url, data.as_deref(), repeat)
                    .await
                    .with_context(|| format!("rendering {url}"))?,
                (None, None) => bail!("--url or --case is required"),
            };
            if let Some(summary) = renders.summary() {
                eprintln!("{summary}");
            }
            let rendered = renders.page;
            let mut out = std::io::stdout().lock();
            if json {
                let value = serde_json::json!({
                    "status": rendered.status,
                    "headers": rendered.headers,
                    "html": rendered.html,
                });
                writeln!(out, "{value}")?;
            } else {
                out.write_all(rendered.html.as_bytes())?;
            }
        }
        Command::Capture { manifest, origin, urls, out } => {
            let manifest_file = manifest;
            let manifest = Manifest::load(&manifest_file)?;
            let urls = match urls {
                Some(file) => std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect(),
                None => Vec::new(),
            };
            let config =
                OriginConfig { base: origin, timeout: Duration::from_secs(30), max_body: 8 << 20, max_concurrent: 8 };
            let captured = mizan_render::parity::capture::capture(&manifest, config, &urls, &out).await?;
            eprintln!("captured {} pages into {}", captured.written.len(), out.display());
            for (url, error) in &captured.failed {
                eprintln!("  {url}: {error}");
            }
            if !captured.failed.is_empty() {
                bail!("{} pages could not be captured", captured.failed.len());
            }
        }
        Command::Parity {
            manifest,
            cases,
            runtimes,
            deterministic,
            format,
            report,
            compatibility_date,
            compatibility_flags,
            wrangler,
            node,
            workerd,
            deno,
            bun,
        } => {
            use mizan_render::parity::{self, runtimes::Runtime};
            let manifest = Manifest::load(&manifest)?;
            let loaded = parity::case::load_dir(&cases, &manifest)?;
            let runtimes = runtimes.iter().map(|r| Runtime::parse(r)).collect::<anyhow::Result<Vec<_>>>()?;
            let binaries =
                [(Runtime::Node, node), (Runtime::Workerd, workerd), (Runtime::Deno, deno), (Runtime::Bun, bun)]
                    .into_iter()
                    .filter_map(|(r, b)| b.map(|b| (r, b)))
                    .collect();
            let workerd = parity::wrangler::settings(wrangler.as_deref(), compatibility_date, compatibility_flags)?;
            let work_dir = std::env::temp_dir().join(format!("mizan-parity-{}", std::process::id()));
            let options = parity::Options { runtimes, binaries, deterministic, workerd, work_dir: work_dir.clone() };
            let run = parity::run(&manifest, &loaded, &options).await;
            let _ = std::fs::remove_dir_all(&work_dir);
            let run = run?;
            let names: Vec<String> = options.runtimes.iter().map(|r| r.name().to_string()).collect();
            let text = parity::report::text(&run.verdicts, &names);
            let rendered = match format.as_str() {
                "text" => text.clone(),
                "json" => parity::report::json(&run.verdicts, &run.versions) + "\n",
                "junit" => parity::report::junit(&run.verdicts, &names),
                other => bail!("--format {other}: text, json or junit"),
            };
            match &report {
                Some(file) => std::fs::write(file, rendered).with_context(|| format!("writing {}", file.display()))?,
                None => print!("{rendered}"),
            }
            if format != "text" || report.is_some() {
                eprint!("{}", text.lines().last().map(|l| format!("{l}\n")).unwrap_or_default());
            }
            let differing = run.verdicts.iter().filter(|v| v.difference.is_some()).count();
            if differing > 0 {
                bail!("{differing} pages differ");
            }
        }
        Command::Key { kind: KeyKind::Data { context, params }, secret } => {
            println!("{}", secret.keys()?.data_key(&context, &params_object(&params)?));
        }
        Command::Key { kind: KeyKind::Page { url, manifest, method, headers }, secret } => {
            let manifest = Manifest::load(&manifest)?;
            let router = Router::new(&manifest).map_err(|(i, m)| anyhow::anyhow!("routes[{i}]: {m}"))?;
            let (path, query) = url.split_once('?').unwrap_or((&url, ""));
            let normalized = mizan_render::cache::key::normalize_path(path)?;
            let route = &manifest.routes[router.route(&manifest, &normalized)?.index];
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|h| {
                    let (n, v) = h.split_once(':').with_context(|| format!("header {h:?} is not `Name: value`"))?;
                    Ok((n.trim().to_ascii_lowercase(), v.trim().to_string()))
                })
                .collect::<anyhow::Result<_>>()?;
            let lookup = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
            let parts = PageKeyParts::new(&manifest.site, &method, path, query, &route.query, &route.vary, lookup)?;
            println!("{}", secret.keys()?.page_key(&parts));
        }
        Command::Purge { node, context, params, soft, secret } => {
            let keys = secret.keys()?;
            let request = PurgeRequest {
                purge: vec![PurgeTarget { context, params: params_object(&params)? }],
                mode: if soft { ModeName::Soft } else { ModeName::Hard },
            };
            let url = format!("{}/_mizan/purge", node.trim_end_matches('/'));
            let text = signed_post(&url, &keys, serde_json::to_vec(&request)?).await?;
            println!("{text}");
        }
    }
    Ok(())
}
