//! `mizan-render render`: one page rendered from a manifest, a URL and captured origin
//! answers, without a server or an origin. The tool behind SSR parity tests.
//!
//! The data file maps context names to what the origin answered for them, in the origin
//! protocol's own shape: `{"product_detail": {"data": {...}}, "cart": {"error": {...}}}`.

use crate::abi::{DependencyData, DependencyError, OriginError, PageInput, RawJson, Rendered};
use crate::manifest::{Manifest, Router};
use crate::pool::{BundleSource, Pool, PoolConfig};
use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One origin answer: `{"data": ...}` or `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum OriginAnswer {
    /// A successful answer.
    Data(Value),
    /// An error answer.
    Error(OriginError),
}

/// Builds the page input for `url` from answers keyed by context name.
pub fn page_input(
    manifest: &Manifest,
    url: &str,
    answers: &BTreeMap<String, OriginAnswer>,
) -> anyhow::Result<(String, String, PageInput)> {
    page_input_with_headers(manifest, url, &BTreeMap::new(), answers)
}

/// [`page_input`] for a request that carried `headers`: those the route declares in `vary`
/// reach the input as the node passes them (lower-case names, canonical values); the others
/// are dropped.
pub fn page_input_with_headers(
    manifest: &Manifest,
    url: &str,
    headers: &BTreeMap<String, String>,
    answers: &BTreeMap<String, OriginAnswer>,
) -> anyhow::Result<(String, String, PageInput)> {
    let router = Router::new(manifest).map_err(|(i, m)| anyhow!("routes[{i}]: {m}"))?;
    // As the node sees it: the normalised path and the canonical declared query only.
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let path = crate::cache::key::normalize_path(path)?;
    let matched = router.route(manifest, &format!("{path}?{query}"))?;
    let route = &manifest.routes[matched.index];
    let url = matched.url(&path);
    let mut input = PageInput {
        url,
        route: route.path.clone(),
        params: matched.params,
        query: matched.query,
        ..PageInput::default()
    };
    let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    for (name, value) in crate::cache::key::vary_headers(&route.vary, header) {
        input.headers.insert(name, Value::String(value));
    }
    for (context, params) in matched.deps {
        match answers.get(&context) {
            Some(OriginAnswer::Data(data)) => {
                input.data.push(DependencyData { context, params, data: RawJson::from_value(data)? })
            }
            Some(OriginAnswer::Error(error)) => {
                input.errors.push(DependencyError { context, params, error: error.clone() })
            }
            None => bail!("the data file has no answer for context \"{context}\", which route {} reads", route.path),
        }
    }
    Ok((route.bundle.clone(), route.page.clone(), input))
}

/// Renders `url` with a one-worker pool: once, then `repeat` more times, timed.
pub async fn render(manifest_path: &Path, url: &str, data_path: Option<&Path>, repeat: u32) -> anyhow::Result<Renders> {
    let manifest = Manifest::load(manifest_path)?;
    let answers: BTreeMap<String, OriginAnswer> = match data_path {
        None => BTreeMap::new(),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading data file {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("data file {}", path.display()))?
        }
    };
    let (bundle, page, input) = page_input(&manifest, url, &answers)?;
    render_input(&manifest, &bundle, &page, input, repeat).await
}

/// Renders a case file (what `mizan-render capture` writes) with a one-worker pool: once, then
/// `repeat` more times, timed.
pub async fn render_case(manifest_path: &Path, case_path: &Path, repeat: u32) -> anyhow::Result<Renders> {
    let manifest = Manifest::load(manifest_path)?;
    let case = crate::parity::case::Case::read(case_path)?;
    let (bundle, page, input) = case.input(&manifest)?;
    render_input(&manifest, &bundle, &page, input, repeat).await
}

/// A page rendered once, and the times of the renders repeated after it.
#[derive(Debug)]
pub struct Renders {
    /// The first render's page.
    pub page: Rendered,
    /// Each repeated render's time in the isolate (the first, cold one, is not among them).
    pub times: Vec<std::time::Duration>,
}

impl Renders {
    /// `n renders after the first: median … ms, p90 … ms, best … ms` (in the isolate), or
    /// `None` without repeats.
    pub fn summary(&self) -> Option<String> {
        let mut times: Vec<f64> = self.times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        (!times.is_empty()).then(|| {
            format!(
                "{} renders after the first, in the isolate: median {:.3} ms, p90 {:.3} ms, best {:.3} ms",
                times.len(),
                at(0.5),
                at(0.9),
                times[0]
            )
        })
    }
}

async fn render_input(
    manifest: &Manifest,
    bundle: &str,
    page: &str,
    input: PageInput,
    repeat: u32,
) -> anyhow::Result<Renders> {
    let path = manifest.bundle_path(bundle).expect("validated manifest names its bundles");
    let source = BundleSource::read(bundle, &path)?;
    let pool = tokio::task::spawn_blocking(move || {
        Pool::start(PoolConfig { workers: 1, queue: 1, ..PoolConfig::default() }, &[source])
    })
    .await??;
    let first = pool.render(bundle, page, &input).await?;
    let mut times = Vec::with_capacity(repeat as usize);
    for _ in 0..repeat {
        times.push(pool.render(bundle, page, &input).await?.elapsed);
    }
    Ok(Renders { page: first, times })
}
