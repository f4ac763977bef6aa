//! Hydration in a real browser: every page of the React, Vue and Svelte fixture apps, served
//! by the node over HTTP, is opened in headless Chromium (Debian's, driven by playwright-core:
//! tests/hydrate/check.mjs). The client takes over (the adapter's `data-mizan-hydrated` marker),
//! the console shows no hydration warning or error, and the page's buttons work, which they
//! do only once it has hydrated: the header's cart button opens the mini cart, and on a
//! product page "Add to cart" counts. Negative controls per framework show that the check
//! fails when the HTML does not match what the client renders, and when the client never
//! runs.
//!
//! The list page's screenshot goes to scratch; with `MIZAN_SCREENSHOTS=<dir>` (relative to the
//! repository) to `<dir>/<framework>-products.png` instead: `MIZAN_SCREENSHOTS=docs/screenshots`
//! renews the committed ones.

use super::harness::{App, Backend, Harness};
use crate::common::{root, scratch};
use serde_json::Value;
use std::time::Duration;

/// The app's framework, as file names and messages say it.
fn name(app: App) -> &'static str {
    match app {
        App::React => "react",
        App::Vue => "vue",
        App::Svelte => "svelte",
    }
}

/// Every page of the apps that hydrates, with its status: the list, a product whose data is
/// full of characters that break naive escaping, a missing product (the app's 404 page), the
/// cart of a visitor who is not signed in (the app's 403 page), a page without data, one that
/// varies on Accept-Language, and one whose cookie the node drops. (The fault fixtures,
/// /broken, /huge, /spin and /hog, are the node's error pages or never render.)
const PAGES: [(&str, u64); 7] = [
    ("/products", 200),
    ("/products/7", 200),
    ("/products/9999", 404),
    ("/cart", 403),
    ("/about", 200),
    ("/search?q=kettle", 200),
    ("/promo", 200),
];

/// Runs check.mjs on `paths` of the node `h` with `options`; returns its report.
async fn check(h: &Harness, paths: &[&str], options: &[&str]) -> Value {
    let mut command = tokio::process::Command::new("node");
    command.arg(root().join("tests/hydrate/check.mjs")).arg(&h.url).args(paths).args(options).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("check.mjs finishes within 3 minutes")
        .expect("node is on PATH (scripts/setup)");
    assert!(
        out.status.success(),
        "check.mjs failed (scripts/setup installs chromium and playwright-core): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check.mjs printed no report ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The report of `path` in a check.mjs report.
fn page<'a>(report: &'a Value, path: &str) -> &'a Value {
    report["pages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in {report}"))
}

/// The names of a page's interactions that worked.
fn worked(page: &Value) -> Vec<&str> {
    page["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["ok"] == true)
        .map(|i| i["name"].as_str().unwrap())
        .collect()
}

/// Asserts that `path` hydrated with the client bundle of `app`, with no hydration message and
/// no error, and that its interactions worked.
fn assert_hydrated(app: App, report: &Value, path: &str, status: u64) {
    let p = page(report, path);
    let what = format!("{} {path}: {p:#}", name(app));
    assert_eq!(p["status"], status, "{what}");
    assert_eq!(p["hydrated"], true, "the page did not hydrate: {what}");
    assert_eq!(p["hydration"], serde_json::json!([]), "hydration warnings: {what}");
    assert_eq!(p["errors"], serde_json::json!([]), "errors: {what}");
    let mut expected = vec!["open the mini cart"];
    if path == "/products/7" {
        expected.push("add to cart twice");
    }
    assert_eq!(worked(p), expected, "interactions: {what}");
    assert_eq!(p["ok"], true, "{what}");
    let clients = p["clients"].as_array().unwrap();
    let prefix = format!("/_mizan/assets/{}/client.", app.bundle());
    assert!(
        clients.len() == 1 && clients[0].as_str().is_some_and(|src| src.starts_with(&prefix) && src.ends_with(".js")),
        "the page loads its client bundle from the node: {what}"
    );
}

/// Every page of `app` hydrates in Chromium, the cart of a signed-in visitor too; the client
/// bundle is served immutable; the list page's screenshot is taken.
async fn every_page_hydrates(app: App) {
    let h = Harness::start_app(Backend::Memory, app).await;
    let screenshot = match std::env::var_os("MIZAN_SCREENSHOTS") {
        Some(dir) => root().join(dir).join(format!("{}-products.png", name(app))),
        None => scratch(&format!("hydrate-{}-products.png", name(app))),
    };
    let _ = std::fs::remove_file(&screenshot);
    let paths: Vec<&str> = PAGES.iter().map(|(path, _)| *path).collect();
    let report = check(&h, &paths, &["--screenshot", &format!("/products={}", screenshot.display())]).await;
    for (path, status) in PAGES {
        assert_hydrated(app, &report, path, status);
    }
    assert_eq!(report["ok"], true);
    let png = std::fs::read(&screenshot).unwrap_or_else(|e| panic!("{}: {e}", screenshot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{}: not a screenshot", screenshot.display());

    let signed_in = check(&h, &["/cart"], &["--cookie", "user=u2"]).await;
    assert_hydrated(app, &signed_in, "/cart", 200);

    let src = page(&report, "/products")["clients"][0].as_str().unwrap().to_string();
    let asset = h.client.get(format!("{}{src}", h.url)).send().await.unwrap();
    assert_eq!(asset.status(), 200);
    assert_eq!(asset.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(asset.headers()["content-type"], "text/javascript; charset=utf-8");
    let missing = h.get(&format!("/_mizan/assets/{}/client.0000000000000000.js", app.bundle())).await;
    assert_eq!(missing.status, 404);
}

/// The negative controls of `app`: `find` replaced by `replace` in the HTML of /products/7 on
/// its way to the browser makes the page differ from what the client renders, and the check
/// reports `expected` (one per message); and a page whose client script never runs neither
/// hydrates nor responds to a click.
async fn mismatches_and_dead_pages_fail_the_check(app: App, find: &str, replace: &str, expected: &[&str]) {
    let h = Harness::start_app(Backend::Memory, app).await;
    let report = check(&h, &["/products/7"], &["--tamper-find", find, "--tamper-replace", replace]).await;
    let p = page(&report, "/products/7");
    assert_eq!(p["tampered"], true, "{p:#}");
    assert_eq!(p["ok"], false, "{p:#}");
    let messages = p["hydration"].as_array().unwrap();
    for needle in expected {
        assert!(
            messages.iter().filter_map(Value::as_str).any(|m| m.contains(needle)),
            "{}: no hydration message with {needle:?}: {p:#}",
            name(app)
        );
    }

    // The client bundle is not run: no marker, and the buttons do nothing.
    let dead = check(
        &h,
        &["/products/7"],
        &[
            "--timeout",
            "1000",
            "--tamper-find",
            "<script defer src=",
            "--tamper-replace",
            r#"<script type="text/plain" src="#,
        ],
    )
    .await;
    let p = page(&dead, "/products/7");
    assert_eq!(
        (&p["tampered"], &p["hydrated"], &p["ok"]),
        (&Value::Bool(true), &Value::Bool(false), &Value::Bool(false)),
        "{p:#}"
    );
    assert_eq!(p["interactions"].as_array().unwrap().len(), 2, "both interactions were tried: {p:#}");
    assert!(worked(p).is_empty(), "a button worked on a page that never hydrated: {p:#}");
}

/// The product's price in its HTML, and another one: the client renders €154.75 from the
/// hydration payload, which is left as it is.
const PRICE: &str = r#"<p class="price">€154.75</p>"#;
const OTHER_PRICE: &str = r#"<p class="price">€1.00</p>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn react_pages_hydrate_in_chromium() {
    every_page_hydrates(App::React).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vue_pages_hydrate_in_chromium() {
    every_page_hydrates(App::Vue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svelte_pages_hydrate_in_chromium() {
    every_page_hydrates(App::Svelte).await;
}

/// React's production build reports a text mismatch as error #418 ("Hydration failed because
/// the server rendered text didn't match the client"), which the adapter logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_react_page_whose_text_does_not_match_fails_the_hydration_check() {
    mismatches_and_dead_pages_fail_the_check(App::React, PRICE, OTHER_PRICE, &["Minified React error #418"]).await;
}

/// Vue's production build says only that hydration found mismatches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vue_page_whose_text_does_not_match_fails_the_hydration_check() {
    mismatches_and_dead_pages_fail_the_check(
        App::Vue,
        PRICE,
        OTHER_PRICE,
        &["Hydration completed but contains mismatches."],
    )
    .await;
}

/// Svelte does not compare text (it keeps the server's), so the page gets an element the
/// client does not render: Svelte warns, the adapter's `hydrate` (with `recover: false`) logs
/// Svelte's hydration_failed and mounts the page afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_svelte_page_whose_elements_do_not_match_fails_the_hydration_check() {
    let stock = r#"<p class="stock">8 in stock</p>"#;
    let extra = format!(r#"{stock}<p class="tampered">not rendered by the client</p>"#);
    mismatches_and_dead_pages_fail_the_check(
        App::Svelte,
        stock,
        &extra,
        &["https://svelte.dev/e/hydration_mismatch", "https://svelte.dev/e/hydration_failed"],
    )
    .await;
}
