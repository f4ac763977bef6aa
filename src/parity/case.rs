//! Parity cases: one JSON file per page, what `capture` writes and `parity` and `render
//! --case` read. A case holds the request (`url`, and the `headers` a route varies on) and
//! what the origin answered for each context the page reads, in the origin protocol's own
//! shape; the page input is derived from them with the manifest, as the node derives it.
//! `route` and `page` are recorded for the reader and checked against the manifest, so a case
//! that no longer routes where it did says so.
//!
//! ```json
//! {"url": "/products/7", "route": "/products/:id", "page": "ProductDetail",
//!  "answers": {"product_detail": {"data": {"id": 7, "name": "…"}}}}
//! ```

use crate::abi::PageInput;
use crate::manifest::Manifest;
use crate::oneshot::{OriginAnswer, page_input_with_headers};
use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One page to render: the request and the origin's answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// The request path and query, e.g. `/products/7` or `/search?q=kettle`.
    pub url: String,
    /// Request headers (those the route declares in `vary` reach the render).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The route pattern it matched when captured (checked, if present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The page it rendered when captured (checked, if present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// What the origin answered, by context: `{"data": …}` or `{"error": {…}}`.
    pub answers: BTreeMap<String, OriginAnswer>,
}

/// A case read from a file, with where it came from and the input it gives.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The case's name: its file name without `.json`.
    pub name: String,
    /// The file.
    pub file: PathBuf,
    /// The case.
    pub case: Case,
    /// The manifest's bundle for its route.
    pub bundle: String,
    /// The page it renders.
    pub page: String,
    /// The render input.
    pub input: PageInput,
}

impl Case {
    /// Reads `file`; an error names the file, the line and the JSON path.
    pub fn read(file: &Path) -> anyhow::Result<Case> {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading case {}", file.display()))?;
        let mut json = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let inner = e.inner();
            anyhow::anyhow!("case {}:{}: {}: {inner}", file.display(), inner.line(), e.path())
        })
    }

    /// The bundle, page and input this case renders with `manifest`; refused if it routes
    /// elsewhere than it did when captured.
    pub fn input(&self, manifest: &Manifest) -> anyhow::Result<(String, String, PageInput)> {
        let (bundle, page, input) = page_input_with_headers(manifest, &self.url, &self.headers, &self.answers)?;
        if let Some(route) = &self.route
            && *route != input.route
        {
            bail!("{} was captured on route {route}; the manifest now routes it to {}", self.url, input.route);
        }
        if let Some(captured) = &self.page
            && *captured != page
        {
            bail!("{} was captured as page {captured}; the manifest now renders {page}", self.url);
        }
        Ok((bundle, page, input))
    }
}

/// Every `*.json` case in `dir`, by name, each with its input; the first error names the file.
pub fn load_dir(dir: &Path, manifest: &Manifest) -> anyhow::Result<Vec<Loaded>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading the cases directory {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no case (*.json): write some with `mizan-render capture`", dir.display());
    }
    files
        .into_iter()
        .map(|file| {
            let case = Case::read(&file)?;
            let (bundle, page, input) = case.input(manifest).with_context(|| format!("case {}", file.display()))?;
            let name = file.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            Ok(Loaded { name, file, case, bundle, page, input })
        })
        .collect()
}

/// A file name for the case of `url`: its path and query with every run of other characters
/// than `[A-Za-z0-9_-]` made one `-` (`/products/7` → `products-7`, `/` → `index`).
pub fn file_name(url: &str) -> String {
    let mut name = String::new();
    for c in url.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_end_matches('-');
    if name.is_empty() { "index".into() } else { name.chars().take(100).collect() }
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn names_files_after_urls() {
        assert_eq!(file_name("/products/7"), "products-7");
        assert_eq!(file_name("/"), "index");
        assert_eq!(file_name("/search?q=kettle&page=2"), "search-q-kettle-page-2");
        assert_eq!(file_name("/a/../b%20c"), "a-b-20c");
    }
}
