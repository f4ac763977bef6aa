//! Hydration: pages the node rendered, with the client bundle the node served, hydrate in a
//! DOM (jsdom, tests/hydrate/check.mjs) without a mismatch or an error.

use super::harness::{Backend, Harness};
use crate::common::{root, scratch};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_pages_hydrate_with_the_served_client_bundle() {
    let h = Harness::start(Backend::Memory).await;
    for (n, path) in ["/products/7", "/products", "/products/9999", "/about"].iter().enumerate() {
        let page = h.get(path).await;
        let open = r#"<script defer src=""#;
        let start = page.body.find(open).unwrap_or_else(|| panic!("{path}: no client script")) + open.len();
        let src = &page.body[start..start + page.body[start..].find('"').unwrap()];
        assert!(src.starts_with("/_mizan/assets/react_app/client.") && src.ends_with(".js"), "{src}");

        let asset = h.client.get(format!("{}{src}", h.url)).send().await.unwrap();
        assert_eq!(asset.status(), 200);
        assert_eq!(asset.headers()["cache-control"], "public, max-age=31536000, immutable");
        assert_eq!(asset.headers()["content-type"], "text/javascript; charset=utf-8");
        let client = asset.bytes().await.unwrap();

        let (html_file, client_file) = (scratch(&format!("hydrate-{n}.html")), scratch("hydrate-client.js"));
        std::fs::write(&html_file, &page.body).unwrap();
        std::fs::write(&client_file, &client).unwrap();
        let out = tokio::process::Command::new("node")
            .arg(root().join("tests/hydrate/check.mjs"))
            .arg(&html_file)
            .arg(&client_file)
            .output()
            .await
            .expect("node is on PATH (scripts/setup)");
        assert!(out.status.success(), "{path}: {}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["errors"], serde_json::json!([]), "{path}: hydration reported errors");
        assert_eq!(report["hydrated"], true, "{path}: the page did not hydrate");
        assert_eq!(report["unchanged"], true, "{path}: hydration changed the server's HTML");
    }
    let missing = h.get("/_mizan/assets/react_app/client.0000000000000000.js").await;
    assert_eq!(missing.status, 404);
}
