//! `mizan-render capture` and `mizan-render parity` (docs/parity.md): record what the origin
//! answers for each page as case files, then render every case with the same bundle in this
//! node and in Node, workerd, Deno and Bun, and report every page that is not byte for byte
//! the same.

pub mod capture;
pub mod case;
pub mod report;
pub mod runtimes;
pub mod wrangler;

use crate::abi::input_json;
use crate::manifest::Manifest;
use crate::pool::{BundleSource, Pool, PoolConfig};
use anyhow::Context as _;
use case::Loaded;
use report::Verdict;
use runtimes::{Outcome, Request, RequestCase, Runtime, Workerd};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What a parity run compares, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The other runtimes, in order.
    pub runtimes: Vec<Runtime>,
    /// Binaries given by flag.
    pub binaries: BTreeMap<Runtime, PathBuf>,
    /// Fix the clock and seed the random sources in every runtime.
    pub deterministic: bool,
    /// How workerd runs.
    pub workerd: Workerd,
    /// Where the runners' files go.
    pub work_dir: PathBuf,
}

/// The outcome of a run: every verdict, and each runtime's version.
#[derive(Debug)]
pub struct Run {
    /// One per case and runtime.
    pub verdicts: Vec<Verdict>,
    /// Runtime name → version.
    pub versions: Value,
}

/// Renders every case here and in every runtime of `options`, and compares.
pub async fn run(manifest: &Manifest, cases: &[Loaded], options: &Options) -> anyhow::Result<Run> {
    // Every binary first: a missing runtime is an error before any work.
    let mut binaries = Vec::new();
    for &runtime in &options.runtimes {
        binaries.push((runtime, runtimes::find(runtime, options.binaries.get(&runtime).map(PathBuf::as_path))?));
    }
    let mut by_bundle: BTreeMap<&str, Vec<&Loaded>> = BTreeMap::new();
    for case in cases {
        by_bundle.entry(case.bundle.as_str()).or_default().push(case);
    }
    let ours = render_here(manifest, cases, options.deterministic).await?;
    let mut verdicts = Vec::new();
    let mut versions = serde_json::Map::new();
    versions.insert("mizan-render".into(), json!(env!("CARGO_PKG_VERSION")));
    for (runtime, binary) in &binaries {
        for (bundle, cases) in &by_bundle {
            let path = manifest.bundle_path(bundle).context("a case names a bundle the manifest lacks")?;
            let path = std::fs::canonicalize(&path).with_context(|| format!("bundle {}", path.display()))?;
            let mut request_cases = Vec::new();
            for case in cases {
                let input: Value = serde_json::from_str(&input_json(&case.page, &case.input)?)?;
                request_cases.push(RequestCase { name: &case.name, input });
            }
            let request = Request { bundle: &path, deterministic: options.deterministic, cases: request_cases };
            let dir = options.work_dir.join(format!("{}-{bundle}", runtime.name()));
            let response = runtimes::run(*runtime, binary, &request, &options.workerd, &dir)
                .await
                .with_context(|| format!("rendering in {}", runtime.name()))?;
            versions.insert(runtime.name().into(), json!(response.version));
            for (case, theirs) in cases.iter().zip(&response.results) {
                verdicts.push(report::compare(&case.name, runtime.name(), &ours[&case.name], theirs));
            }
        }
    }
    verdicts.sort_by(|a, b| (&a.case, &a.runtime).cmp(&(&b.case, &b.runtime)));
    Ok(Run { verdicts, versions: Value::Object(versions) })
}

/// Every case rendered by this node: one pool holding every bundle the cases use.
async fn render_here(
    manifest: &Manifest,
    cases: &[Loaded],
    deterministic: bool,
) -> anyhow::Result<BTreeMap<String, Outcome>> {
    let mut names: Vec<&str> = cases.iter().map(|c| c.bundle.as_str()).collect();
    names.sort();
    names.dedup();
    let mut sources = Vec::new();
    for name in names {
        let path = manifest.bundle_path(name).context("a case names a bundle the manifest lacks")?;
        sources.push(BundleSource::read(name, &path)?);
    }
    let prelude = deterministic.then(|| Arc::from(runtimes::DETERMINISM));
    let config = PoolConfig { workers: 1, prelude, ..PoolConfig::default() };
    let pool = tokio::task::spawn_blocking(move || Pool::start(config, &sources)).await??;
    let mut out = BTreeMap::new();
    for case in cases {
        let outcome = match pool.render(&case.bundle, &case.page, &case.input).await {
            Ok(page) => Outcome::Rendered { status: page.status, headers: page.headers, html: page.html, intl: vec![] },
            Err(e) => Outcome::Error { error: e.to_string(), intl: vec![] },
        };
        out.insert(case.name.clone(), outcome);
    }
    Ok(out)
}
