//! SSR parity: every fixture page rendered with the same bundle in our pool and in real
//! Node must be byte-identical.

use crate::common::{pool, react_bundle, react_page, root, scratch};
use serde_json::{Value, json};
use std::process::Command;

const PAGES: &[&str] = &["/products", "/products/1", "/products/7", "/products/13", "/products/300", "/products/9999"];

#[tokio::test]
async fn every_fixture_page_is_byte_identical_to_node() {
    let bundle = react_bundle();
    let pool = pool(2, std::slice::from_ref(&bundle));
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for url in PAGES {
        let (name, page, input) = react_page(url);
        let out = pool.render(&name, &page, &input).await.unwrap();
        ours.push(json!({"status": out.status, "headers": out.headers, "html": out.html}));
        cases.push(json!({"bundle": bundle.path, "page": page, "input": input}));
    }
    let cases_file = scratch("parity-cases.json");
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
        assert!(theirs.get("error").is_none(), "{url}: node threw {}", theirs["error"]);
        assert_eq!(ours["status"], theirs["status"], "{url}: status differs");
        assert_eq!(ours["headers"], theirs["headers"], "{url}: headers differ");
        let (a, b) = (ours["html"].as_str().unwrap(), theirs["html"].as_str().unwrap());
        if a != b {
            let at = a.bytes().zip(b.bytes()).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            panic!(
                "{url}: HTML differs at byte {at}: ours {:?} vs node {:?}",
                &a[at.saturating_sub(40)..(at + 40).min(a.len())],
                &b[at.saturating_sub(40)..(at + 40).min(b.len())]
            );
        }
    }
}
