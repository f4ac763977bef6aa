//! `mizan-render capture`: for each URL (default: every URL the manifest's `prerender` lists
//! enumerate), asks the origin for every context the page reads, as the node would, and writes
//! one case file per page. An answer the node would refuse (schema, size, origin down) is an
//! error naming the URL and the context; the other pages are still written.

use super::case::{Case, file_name};
use crate::manifest::{Manifest, Router};
use crate::oneshot::OriginAnswer;
use crate::origin::{Answer, Origin, OriginConfig};
use anyhow::{Context as _, anyhow};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a capture wrote and what failed.
#[derive(Debug, Default)]
pub struct Captured {
    /// Case files written.
    pub written: Vec<PathBuf>,
    /// URLs that could not be captured, with why.
    pub failed: Vec<(String, String)>,
}

/// Captures `urls` (all enumerable URLs when empty) from the origin at `origin` into `out`.
pub async fn capture(
    manifest: &Manifest,
    origin: OriginConfig,
    urls: &[String],
    out: &Path,
) -> anyhow::Result<Captured> {
    let router = Router::new(manifest).map_err(|(i, m)| anyhow!("routes[{i}]: {m}"))?;
    let client = Origin::new(origin, manifest).map_err(|e| anyhow!("origin: {e}"))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let urls = if urls.is_empty() { crate::prerender::urls(manifest) } else { urls.to_vec() };
    let mut captured = Captured::default();
    let mut names = BTreeMap::<String, usize>::new();
    for url in urls {
        match capture_one(manifest, &router, &client, &url).await {
            Ok(case) => {
                let base = file_name(&url);
                let n = names.entry(base.clone()).or_default();
                *n += 1;
                let name = if *n == 1 { base } else { format!("{base}-{n}") };
                let file = out.join(format!("{name}.json"));
                let text = serde_json::to_string_pretty(&case)? + "\n";
                std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
                captured.written.push(file);
            }
            Err(e) => captured.failed.push((url, format!("{e:#}"))),
        }
    }
    Ok(captured)
}

async fn capture_one(manifest: &Manifest, router: &Router, origin: &Origin, url: &str) -> anyhow::Result<Case> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let path = crate::cache::key::normalize_path(path)?;
    let matched = router.route(manifest, &format!("{path}?{query}"))?;
    let route = &manifest.routes[matched.index];
    let mut answers = BTreeMap::new();
    for (context, params) in &matched.deps {
        let fetched = origin.fetch(context, params, &[]).await.with_context(|| format!("context {context}"))?;
        let answer = match fetched.answer {
            Answer::Data(data) => OriginAnswer::Data(data.to_value()),
            Answer::Error(error) => OriginAnswer::Error(error),
        };
        answers.insert(context.clone(), answer);
    }
    Ok(Case {
        url: url.to_string(),
        headers: BTreeMap::new(),
        route: Some(route.path.clone()),
        page: Some(route.page.clone()),
        answers,
    })
}
