//! SSR parity: every fixture page of each app (React, Vue, Svelte) rendered with the same
//! bundle in our pool and in real Node must be byte-identical. One test per app: a process
//! holds isolates of one snapshot family at a time.

use crate::common::{App, pool, root, scratch};
use serde_json::{Value, json};
use std::process::Command;

const PAGES: &[&str] = &[
    "/products",
    "/products/1",
    "/products/7",
    "/products/13",
    "/products/300",
    "/products/9999",
    "/about",
    "/promo",
    "/search?q=kettle",
];

#[tokio::test]
async fn every_react_page_is_byte_identical_to_node() {
    every_page_is_byte_identical_to_node(App::React).await;
}

#[tokio::test]
async fn every_vue_page_is_byte_identical_to_node() {
    every_page_is_byte_identical_to_node(App::Vue).await;
}

#[tokio::test]
async fn every_svelte_page_is_byte_identical_to_node() {
    every_page_is_byte_identical_to_node(App::Svelte).await;
}

async fn every_page_is_byte_identical_to_node(app: App) {
    let bundle = app.server_bundle();
    let pool = pool(2, std::slice::from_ref(&bundle));
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for url in PAGES {
        let (name, page, input) = app.page(url);
        let out = pool.render(&name, &page, &input).await.unwrap();
        ours.push(json!({"status": out.status, "headers": out.headers, "html": out.html}));
        cases.push(json!({"bundle": bundle.path, "page": page, "input": input}));
    }
    let cases_file = scratch(&format!("parity-cases-{}.json", app.bundle()));
    std::fs::write(&cases_file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let node = Command::new("node")
        .arg(root().join("tests/parity/render.mjs"))
        .arg(&cases_file)
        .output()
        .expect("node is on PATH (scripts/setup installs it); parity needs real Node");
    assert!(node.status.success(), "node failed: {}", String::from_utf8_lossy(&node.stderr));
    let theirs: Vec<Value> = serde_json::from_slice(&node.stdout).unwrap();
    assert_eq!(theirs.len(), PAGES.len());
    for ((url, ours), theirs) in PAGES.iter().zip(&ours).zip(&theirs) {
        assert!(theirs.get("error").is_none(), "{app:?} {url}: node threw {}", theirs["error"]);
        assert_eq!(ours["status"], theirs["status"], "{url}: status differs");
        assert_eq!(ours["headers"], theirs["headers"], "{url}: headers differ");
        let (a, b) = (ours["html"].as_str().unwrap(), theirs["html"].as_str().unwrap());
        if a != b {
            let at = a.bytes().zip(b.bytes()).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            panic!(
                "{app:?} {url}: HTML differs at byte {at}: ours {:?} vs node {:?}",
                &a[at.saturating_sub(40)..(at + 40).min(a.len())],
                &b[at.saturating_sub(40)..(at + 40).min(b.len())]
            );
        }
    }
}

/// The three fixture manifests are one manifest with another bundle: same contexts, routes and
/// lifetimes, so the suites that run on each app test the same thing.
#[test]
fn the_fixture_manifests_differ_only_in_their_bundle() {
    let read = |app: App| -> Value {
        let text = std::fs::read_to_string(root().join(app.manifest())).unwrap();
        let mut doc: Value = serde_json::from_str(&text).unwrap();
        let bundles = doc["bundles"].as_object_mut().unwrap();
        let bundle = bundles.remove(app.bundle()).expect("the app's bundle");
        assert!(bundles.is_empty(), "{app:?}: one bundle");
        for route in doc["routes"].as_array_mut().unwrap() {
            assert_eq!(route["bundle"], app.bundle(), "{app:?}: {}", route["path"]);
            route["bundle"] = json!("app");
        }
        let name = app.bundle().trim_end_matches("_app");
        let dist = format!("../apps/{name}/dist/");
        assert_eq!(
            bundle,
            json!({"framework": name, "file": format!("{dist}server.mjs"), "client": format!("{dist}client.js")})
        );
        doc
    };
    let react = read(App::React);
    assert_eq!(read(App::Vue), react, "vue.json drifted from react.json");
    assert_eq!(read(App::Svelte), react, "svelte.json drifted from react.json");
}
