//! Fixtures shared by the integration tests.

use mizan_render::abi::PageInput;
use mizan_render::manifest::Manifest;
use mizan_render::oneshot::{OriginAnswer, page_input};
use mizan_render::pool::{BundleSource, Pool, PoolConfig};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use mizan_render::testing::{DEADLINE, wait_until};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture app: the same pages in each framework, on the same origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    React,
    Vue,
    Svelte,
}

impl App {
    /// Its manifest, relative to the repository root.
    pub fn manifest(self) -> &'static str {
        match self {
            App::React => "fixtures/manifests/react.json",
            App::Vue => "fixtures/manifests/vue.json",
            App::Svelte => "fixtures/manifests/svelte.json",
        }
    }

    /// Its bundle's name in the manifest.
    pub fn bundle(self) -> &'static str {
        match self {
            App::React => "react_app",
            App::Vue => "vue_app",
            App::Svelte => "svelte_app",
        }
    }

    /// Its manifest, loaded.
    pub fn load(self) -> Manifest {
        Manifest::load(&root().join(self.manifest())).expect("fixture manifest loads")
    }

    /// Its server bundle; built by `scripts/setup` (npm ci + esbuild).
    pub fn server_bundle(self) -> BundleSource {
        let path = self.load().bundle_path(self.bundle()).unwrap();
        assert!(path.exists(), "{} is missing: run scripts/setup, which builds the fixture apps", path.display());
        BundleSource::read(self.bundle(), &path).unwrap()
    }

    /// `(bundle, page, input)` for a URL of the app, with the fixture origin's answers.
    pub fn page(self, url: &str) -> (String, String, PageInput) {
        let id = url.strip_prefix("/products/").and_then(|id| id.parse().ok());
        page_input(&self.load(), url, &origin_answers(id)).unwrap()
    }
}

/// The fixture React app's server bundle; built by `scripts/setup` (npm ci + esbuild).
pub fn react_bundle() -> BundleSource {
    App::React.server_bundle()
}

/// A hand-written test bundle from `tests/fixtures/bundles/`.
pub fn test_bundle(name: &str) -> BundleSource {
    BundleSource::read(name, &root().join(format!("tests/fixtures/bundles/{name}.mjs"))).unwrap()
}

/// A pool of `workers` isolates holding `bundles`.
pub fn pool(workers: usize, bundles: &[BundleSource]) -> Pool {
    Pool::start(PoolConfig { workers, queue: 256, ..PoolConfig::default() }, bundles).expect("pool starts")
}

/// The fixture catalogue (`fixtures/data/products.json`).
pub fn products() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("fixtures/data/products.json")).unwrap();
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(doc["products"].take()).unwrap()
}

/// What the origin answers for the fixture contexts, as `mizan-render render --data` reads it.
pub fn origin_answers(product_id: Option<u64>) -> BTreeMap<String, OriginAnswer> {
    let products = products();
    let list: Vec<Value> = products
        .iter()
        .map(|p| json!({"id": p["id"], "name": p["name"], "price": p["price"], "category": p["category"], "stock": p["stock"]}))
        .collect();
    let detail = match product_id.and_then(|id| products.iter().find(|p| p["id"] == id)) {
        Some(product) => json!({"data": product}),
        None => json!({"error": {"type": "NotFound", "status": 404, "message": "No product with that id"}}),
    };
    serde_json::from_value(json!({"product_list": {"data": {"products": list}}, "product_detail": detail})).unwrap()
}

/// `(bundle, page, input)` for a URL of the fixture React app.
pub fn react_page(url: &str) -> (String, String, PageInput) {
    App::React.page(url)
}

/// The text of the element `<script type="application/json" id="__mizan_data">`.
pub fn hydration_payload(html: &str) -> &str {
    let open = r#"<script type="application/json" id="__mizan_data">"#;
    let start = html.find(open).expect("hydration payload present") + open.len();
    let end = start + html[start..].find("</script>").expect("payload element closes");
    &html[start..end]
}

/// Absolute path under the test binary's scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// A SQLite file under the scratch directory that no other test case is given
/// ([`mizan_render::testing::unique_db`]).
pub fn scratch_db(prefix: &str) -> PathBuf {
    mizan_render::testing::unique_db(Path::new(env!("CARGO_TARGET_TMPDIR")), prefix)
}
