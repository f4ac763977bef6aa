//! `mizan-render prerender`: renders and stores every page the manifest can enumerate (each
//! route's `prerender` list of route parameters), to warm a cache before traffic arrives.

use crate::node::Node;
use crate::node::page::PageRequest;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;

/// What a prerender run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Pages rendered (or already fresh).
    pub ok: usize,
    /// Pages that failed, with why.
    pub failed: Vec<(String, String)>,
}

/// The URLs the manifest enumerates.
pub fn urls(manifest: &crate::manifest::Manifest) -> Vec<String> {
    let mut urls = Vec::new();
    for route in &manifest.routes {
        for params in &route.prerender {
            let path: Vec<String> = route
                .path
                .split('/')
                .map(|segment| match segment.strip_prefix(':') {
                    Some(name) => match params.get(name) {
                        Some(serde_json::Value::String(s)) => {
                            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
                        }
                        Some(other) => other.to_string(),
                        None => String::new(),
                    },
                    None => segment.to_string(),
                })
                .collect();
            urls.push(path.join("/"));
        }
    }
    urls
}

/// Renders every enumerable page through the node's own pipeline, with as many in flight
/// as there are render workers, and a progress bar on stderr.
pub async fn run(node: &Arc<Node>) -> Report {
    let urls = urls(&node.manifest);
    let bar = ProgressBar::new(urls.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut report = Report::default();
    let mut in_flight = futures_util::stream::iter(urls.into_iter().map(|url| {
        let node = node.clone();
        async move {
            let headers = http::HeaderMap::new();
            let request = PageRequest { path: &url, query: "", headers: &headers, stream: false };
            let outcome = node.page(&request).await.map(|_| ()).map_err(|e| e.to_string());
            (url, outcome)
        }
    }))
    .buffer_unordered(node.pool.workers().max(1));
    use futures_util::StreamExt as _;
    while let Some((url, outcome)) = in_flight.next().await {
        bar.inc(1);
        bar.set_message(url.clone());
        match outcome {
            Ok(()) => report.ok += 1,
            Err(e) => report.failed.push((url, e)),
        }
    }
    bar.finish_and_clear();
    report
}
