//! Hydration: pages the node rendered, with the client bundle the node served, hydrate in a
//! DOM (jsdom, tests/hydrate/check.mjs) without a mismatch or an error; and a page whose HTML
//! does not match its data fails that check, so a passing check means something.

use super::harness::{Backend, Harness, price};
use crate::common::{hydration_payload, root, scratch};
use serde_json::Value;

/// Hydrates `html` in jsdom with the client bundle it references, as the node serves it, and
/// returns check.mjs's report `{hydrated, unchanged, errors}`. `name` names the scratch files.
async fn hydrate(h: &Harness, name: &str, html: &str) -> Value {
    let open = r#"<script defer src=""#;
    let start = html.find(open).unwrap_or_else(|| panic!("{name}: no client script")) + open.len();
    let src = &html[start..start + html[start..].find('"').unwrap()];
    assert!(src.starts_with("/_mizan/assets/react_app/client.") && src.ends_with(".js"), "{name}: {src}");

    let asset = h.client.get(format!("{}{src}", h.url)).send().await.unwrap();
    assert_eq!(asset.status(), 200);
    assert_eq!(asset.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(asset.headers()["content-type"], "text/javascript; charset=utf-8");
    let client = asset.bytes().await.unwrap();

    let (html_file, client_file) = (scratch(&format!("hydrate-{name}.html")), scratch(&format!("hydrate-{name}.js")));
    std::fs::write(&html_file, html).unwrap();
    std::fs::write(&client_file, &client).unwrap();
    let out = tokio::process::Command::new("node")
        .arg(root().join("tests/hydrate/check.mjs"))
        .arg(&html_file)
        .arg(&client_file)
        .output()
        .await
        .expect("node is on PATH (scripts/setup)");
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_pages_hydrate_with_the_served_client_bundle() {
    let h = Harness::start(Backend::Memory).await;
    for (n, path) in ["/products/7", "/products", "/products/9999", "/about"].iter().enumerate() {
        let page = h.get(path).await;
        let report = hydrate(&h, &format!("page-{n}"), &page.body).await;
        assert_eq!(report["errors"], serde_json::json!([]), "{path}: hydration reported errors");
        assert_eq!(report["hydrated"], true, "{path}: the page did not hydrate");
        assert_eq!(report["unchanged"], true, "{path}: hydration changed the server's HTML");
    }
    let missing = h.get("/_mizan/assets/react_app/client.0000000000000000.js").await;
    assert_eq!(missing.status, 404);
}

/// The negative control of the test above: the server HTML shows another price than the
/// hydration payload the client renders from, so hydration must report a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_html_does_not_match_its_payload_fails_the_hydration_check() {
    let h = Harness::start(Backend::Memory).await;
    let page = h.get("/products/7").await;
    assert_eq!(price(&page.body), "€154.75");
    let tampered = page.body.replacen(r#"<p class="price">€154.75</p>"#, r#"<p class="price">€1.00</p>"#, 1);
    assert_eq!(price(&tampered), "€1.00");
    assert_eq!(hydration_payload(&tampered), hydration_payload(&page.body), "the payload is left untouched");
    assert!(hydration_payload(&tampered).contains(r#""price":154.75"#), "the client renders €154.75");

    let report = hydrate(&h, "tampered", &tampered).await;
    let errors = report["errors"].as_array().unwrap();
    // React reports a text mismatch as error #418 in production builds ("Hydration failed
    // because the server rendered text didn't match the client" in development ones).
    assert!(
        errors
            .iter()
            .filter_map(Value::as_str)
            .any(|e| e.contains("react.dev/errors/418") || e.contains("Hydration failed")),
        "no hydration mismatch reported: {report}"
    );
    assert_eq!(report["unchanged"], false, "React re-rendered the root on the client: {report}");
}
