//! The other runtimes a parity run renders in: Node, Deno and Bun run the embedded runner
//! script (`runtime-js/parity/runner.mjs`) on a request file; workerd serves the embedded
//! worker (`runtime-js/parity/worker.mjs`) with the bundle as its second module, from a
//! generated config, and gets the request by HTTP. Each answers the same JSON: the runtime,
//! its version and one result per case. Binaries are found on `PATH`, in a
//! `node_modules/.bin` of the working directory or one above it, or given by flag; a missing
//! one is an error that says how to install it.

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RUNNER: &str = include_str!("../../runtime-js/parity/runner.mjs");
const WORKER: &str = include_str!("../../runtime-js/parity/worker.mjs");
const WORKERD_CONFIG: &str = include_str!("../../runtime-js/parity/workerd.capnp.tmpl");
/// Records the Intl calls a render makes; a classic script the runners evaluate first.
const INTL: &str = include_str!("../../runtime-js/parity/intl.js");
/// What the runner and the worker share: results, errors and the render deadline.
const RESULTS: &str = include_str!("../../runtime-js/parity/results.mjs");
/// The determinism prelude: a classic script, also evaluated by this node's own isolates.
pub const DETERMINISM: &str = include_str!("../../runtime-js/parity/determinism.js");

/// A runtime other than this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Runtime {
    /// Node.js.
    Node,
    /// workerd, the edge's runtime.
    Workerd,
    /// Deno.
    Deno,
    /// Bun.
    Bun,
}

impl Runtime {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Node => "node",
            Runtime::Workerd => "workerd",
            Runtime::Deno => "deno",
            Runtime::Bun => "bun",
        }
    }

    /// Parses a `--runtimes` item.
    pub fn parse(name: &str) -> anyhow::Result<Runtime> {
        match name.trim() {
            "node" => Ok(Runtime::Node),
            "workerd" => Ok(Runtime::Workerd),
            "deno" => Ok(Runtime::Deno),
            "bun" => Ok(Runtime::Bun),
            other => bail!("unknown runtime \"{other}\" (known: node, workerd, deno, bun)"),
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Runtime::Node => "install Node.js (https://nodejs.org, or your system's package)",
            Runtime::Workerd => "npm i -D workerd",
            Runtime::Deno => "npm i -D deno",
            Runtime::Bun => "npm i -D bun",
        }
    }
}

/// Finds `runtime`'s binary: `explicit` if given, else on `PATH`, else in `node_modules/.bin`
/// of the working directory or one of its parents.
pub fn find(runtime: Runtime, explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            // Absolute: workerd runs in its work directory.
            return std::fs::canonicalize(path).with_context(|| format!("{}", path.display()));
        }
        bail!("{}: the {} binary given does not exist", path.display(), runtime.name());
    }
    let name = runtime.name();
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()))
        .unwrap_or_default();
    if let Some(found) = on_path {
        return Ok(found);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    for dir in cwd.ancestors() {
        let candidate = dir.join("node_modules/.bin").join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name} not found on PATH nor in a node_modules/.bin here or above: {} (or pass --{name} <binary>, \
         or leave {name} out of --runtimes)",
        runtime.install_hint()
    )
}

/// What the runners get: the bundle, whether to run deterministically, the cases.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    /// Absolute path of the bundle.
    pub bundle: &'a Path,
    /// Fix the clock and seed the random sources.
    pub deterministic: bool,
    /// The cases, in order.
    pub cases: Vec<RequestCase<'a>>,
}

/// One case of a [`Request`].
#[derive(Debug, Clone, Serialize)]
pub struct RequestCase<'a> {
    /// Its name.
    pub name: &'a str,
    /// The render input, with `page`.
    pub input: Value,
}

/// What a runner answers.
#[derive(Debug, Deserialize)]
pub struct Response {
    /// The runtime's version.
    pub version: String,
    /// One per case, in order.
    pub results: Vec<Outcome>,
}

/// One case's result in a runtime.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Outcome {
    /// The page.
    Rendered {
        /// Status.
        status: u16,
        /// Headers, in order.
        headers: Vec<(String, String)>,
        /// The document.
        html: String,
        /// Intl calls the render made (the first few).
        #[serde(default)]
        intl: Vec<Value>,
    },
    /// The render threw.
    Error {
        /// The error and its stack.
        error: String,
        /// Intl calls the render made before it threw.
        #[serde(default)]
        intl: Vec<Value>,
    },
}

/// How workerd runs the bundle: its compatibility date and flags.
#[derive(Debug, Clone)]
pub struct Workerd {
    /// `compatibilityDate`.
    pub compatibility_date: String,
    /// `compatibilityFlags`.
    pub flags: Vec<String>,
}

/// Renders `request` in `runtime` (binary `binary`), working in `dir`.
pub async fn run(
    runtime: Runtime,
    binary: &Path,
    request: &Request<'_>,
    workerd: &Workerd,
    dir: &Path,
) -> anyhow::Result<Response> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_scripts(dir)?;
    // Every runtime reads the bundle from the work directory: Bun cannot import a path with a
    // `?`, and Deno may read only there.
    let bundle = dir.join("bundle.mjs");
    std::fs::copy(request.bundle, &bundle).with_context(|| format!("copying {}", request.bundle.display()))?;
    let copied = Request { bundle: &bundle, deterministic: request.deterministic, cases: request.cases.clone() };
    let body = serde_json::to_vec(&copied)?;
    let response = match runtime {
        Runtime::Workerd => run_workerd(binary, &body, workerd, dir).await?,
        _ => run_script(runtime, binary, &body, dir).await?,
    };
    let parsed: Response = serde_json::from_slice(&response).with_context(|| {
        let text = String::from_utf8_lossy(&response);
        format!("{} answered something else than results: {}", runtime.name(), &text[..text.len().min(500)])
    })?;
    if parsed.results.len() != request.cases.len() {
        bail!("{} answered {} results for {} cases", runtime.name(), parsed.results.len(), request.cases.len());
    }
    Ok(parsed)
}

/// Writes the runners' scripts into `dir`.
fn write_scripts(dir: &Path) -> anyhow::Result<()> {
    for (name, text) in [
        ("runner.mjs", RUNNER),
        ("worker.mjs", WORKER),
        ("intl.js", INTL),
        ("results.mjs", RESULTS),
        ("determinism.js", DETERMINISM),
    ] {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    Ok(())
}

/// A runtime's process: in `dir`, with the time zone and locale fixed (Node, Deno, workerd
/// and V8 take both from the environment).
fn command(binary: &Path, dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command.current_dir(dir).env("TZ", "UTC").env("LC_ALL", "C.UTF-8").env_remove("LANG").kill_on_drop(true);
    command
}

async fn run_script(runtime: Runtime, binary: &Path, body: &[u8], dir: &Path) -> anyhow::Result<Vec<u8>> {
    let runner = dir.join("runner.mjs");
    let request = dir.join("request.json");
    std::fs::write(&request, body)?;
    let mut command = command(binary, dir);
    match runtime {
        // No user deno.json or lock file, no prompt, and reading the work directory only.
        Runtime::Deno => {
            command.args(["run", "--no-config", "--no-lock", "--no-prompt"]);
            command.arg(format!("--allow-read={}", dir.display()));
        }
        // No .env file of the working directory, no auto-install.
        Runtime::Bun => {
            command.args(["--no-env-file", "--no-install"]);
        }
        Runtime::Node | Runtime::Workerd => {}
    }
    command.arg(&runner).arg(&request);
    let out = command.output().await.with_context(|| format!("running {}", binary.display()))?;
    if !out.status.success() {
        bail!("{} exited with {}: {}", runtime.name(), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out.stdout)
}

async fn run_workerd(binary: &Path, body: &[u8], workerd: &Workerd, dir: &Path) -> anyhow::Result<Vec<u8>> {
    let version = command(binary, dir).arg("--version").output().await;
    let version =
        version.map(|o| String::from_utf8_lossy(&o.stdout).trim().replace(['"', '\\'], "")).unwrap_or_default();
    let version = version.strip_prefix("workerd ").unwrap_or(&version).to_string();
    let port = crate::testing::free_port();
    let address = format!("127.0.0.1:{port}");
    let flags = workerd.flags.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ");
    let config = WORKERD_CONFIG
        .replace("{{COMPAT_DATE}}", &workerd.compatibility_date)
        .replace("{{COMPAT_FLAGS}}", &flags)
        .replace("{{ADDRESS}}", &address)
        .replace("{{WORKER}}", "worker.mjs")
        .replace("{{BUNDLE}}", "bundle.mjs")
        .replace("{{INTL}}", "intl.js")
        .replace("{{RESULTS}}", "results.mjs")
        .replace("{{DETERMINISM}}", "determinism.js")
        .replace("{{VERSION}}", &version);
    let config_file = dir.join("config.capnp");
    std::fs::write(&config_file, config)?;
    let mut child = command(binary, dir)
        .arg("serve")
        .arg(&config_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    // Ready when it accepts connections; an exit before that is a config or start error.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use tokio::io::AsyncReadExt as _;
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            bail!("workerd exited with {status} before serving: {}", stderr.trim());
        }
        if tokio::net::TcpStream::connect(&address).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("workerd did not listen on {address} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("http://{address}/"))
        .body(body.to_vec())
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .map_err(|e| anyhow!("workerd: {e}"))?;
    let status = answer.status();
    let bytes = answer.bytes().await.map_err(|e| anyhow!("workerd: {e}"))?;
    let _ = child.kill().await;
    if !status.is_success() {
        bail!("workerd answered {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(bytes.to_vec())
}
