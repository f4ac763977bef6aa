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

// `mizan-render capture` and `mizan-render parity`, with the runtimes pinned in
// tests/parity/package.json (scripts/setup installs them).

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mizan-render"))
}

/// `--node/--workerd/--deno/--bun` with the pinned binaries: never whatever is on PATH.
fn runtime_flags(command: &mut Command) -> &mut Command {
    command.args(["--runtimes", "node,workerd,deno,bun"]);
    for runtime in ["workerd", "deno", "bun"] {
        let binary = root().join("tests/parity/node_modules/.bin").join(runtime);
        assert!(binary.exists(), "{} is missing: run scripts/setup (npm ci in tests/parity)", binary.display());
        command.arg(format!("--{runtime}")).arg(binary);
    }
    command
}

/// Captures every enumerable page of `app` from the Django origin, renders each captured case
/// with `render --case`, and runs parity across this node, Node, workerd, Deno and Bun.
fn every_captured_page_is_identical_in_every_runtime(app: App) {
    let origin = crate::e2e::harness::Origin::start();
    let cases = scratch(&format!("parity-captured-{}", app.bundle()));
    let _ = std::fs::remove_dir_all(&cases);
    let manifest = root().join(app.manifest());
    let out = cli()
        .arg("capture")
        .arg("--manifest")
        .arg(&manifest)
        .args(["--origin", &origin.url()])
        .arg("--out")
        .arg(&cases)
        .output()
        .unwrap();
    assert!(out.status.success(), "capture: {}", String::from_utf8_lossy(&out.stderr));
    let enumerated = std::fs::read_dir(&cases).unwrap().count();
    assert!(enumerated >= 20, "every prerender URL is captured: {enumerated}");
    // The pages no `prerender` list enumerates, from a file of URLs (comments and blank lines
    // skipped): a 404 from the origin, pages without data, a query.
    let urls = scratch(&format!("parity-urls-{}.txt", app.bundle()));
    std::fs::write(&urls, "# more pages\n/products/9999\n/about\n/promo\n\n/search?q=kettle\n").unwrap();
    let mut capture = cli();
    capture.arg("capture").arg("--manifest").arg(&manifest).args(["--origin", &origin.url()]);
    let out = capture.arg("--urls").arg(&urls).arg("--out").arg(&cases).output().unwrap();
    assert!(out.status.success(), "capture --urls: {}", String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<_> = std::fs::read_dir(&cases).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), enumerated + 4, "{files:?}");
    let missing: Value =
        serde_json::from_str(&std::fs::read_to_string(cases.join("products-9999.json")).unwrap()).unwrap();
    assert_eq!(missing["answers"]["product_detail"]["error"]["status"], 404, "{missing}");
    let case = files.iter().find(|f| f.ends_with("products-7.json")).expect("product 7's case");
    let text: Value = serde_json::from_str(&std::fs::read_to_string(case).unwrap()).unwrap();
    assert_eq!(
        (&text["url"], &text["route"], &text["page"]),
        (&json!("/products/7"), &json!("/products/:id"), &json!("ProductDetail"))
    );
    let rendered = cli().arg("render").arg("--manifest").arg(&manifest).arg("--case").arg(case).output().unwrap();
    assert!(rendered.status.success(), "render --case: {}", String::from_utf8_lossy(&rendered.stderr));
    assert!(String::from_utf8_lossy(&rendered.stdout).contains(r#"<p class="price">€154.75</p>"#));

    let report = scratch(&format!("parity-{}.xml", app.bundle()));
    let mut parity = cli();
    parity.arg("parity").arg("--manifest").arg(&manifest).arg("--cases").arg(&cases);
    parity.args(["--deterministic", "--format", "junit", "--report"]).arg(&report);
    let out = runtime_flags(&mut parity).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{app:?}: {stderr}\n{}", std::fs::read_to_string(&report).unwrap_or_default());
    assert!(
        stderr.contains(&format!("{} cases × 4 runtimes", files.len())) && stderr.contains(" 0 differ"),
        "{stderr}"
    );
    let junit = std::fs::read_to_string(&report).unwrap();
    assert_eq!(junit.matches("<testsuite ").count(), 4, "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");
}

#[test]
fn every_captured_react_page_is_identical_in_every_runtime() {
    every_captured_page_is_identical_in_every_runtime(App::React);
}

#[test]
fn every_captured_vue_page_is_identical_in_every_runtime() {
    every_captured_page_is_identical_in_every_runtime(App::Vue);
}

#[test]
fn every_captured_svelte_page_is_identical_in_every_runtime() {
    every_captured_page_is_identical_in_every_runtime(App::Svelte);
}

/// A one-page manifest of the test bundle `bundle` (route `/`, no data) and its one case, in
/// a scratch directory of its own named `name`; returns the directory.
fn one_page(bundle: &str, name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    std::fs::create_dir_all(dir.join("cases")).unwrap();
    let file = root().join(format!("tests/fixtures/bundles/{bundle}.mjs"));
    let text = json!({
        "version": 1, "site": "s", "contexts": {},
        "bundles": {"app": {"framework": "react", "file": file}},
        "routes": [{"path": "/", "bundle": "app", "page": "Home"}]
    });
    std::fs::write(dir.join("manifest.json"), text.to_string()).unwrap();
    // Twice the same page: with `--deterministic`, each render starts from the same clock and
    // random sequences, in this node's one isolate as in every other runtime.
    std::fs::write(dir.join("cases/home.json"), r#"{"url": "/", "answers": {}}"#).unwrap();
    std::fs::write(dir.join("cases/home-again.json"), r#"{"url": "/", "answers": {}}"#).unwrap();
    dir
}

/// Runs parity on [`one_page`] of `bundle`; returns whether it passed, and stdout.
fn parity_of(bundle: &str, extra: &[&str]) -> (bool, String) {
    let dir = one_page(bundle, &format!("parity-{bundle}-{}", extra.join("")));
    let manifest = dir.join("manifest.json");
    let mut parity = cli();
    parity.arg("parity").arg("--manifest").arg(&manifest).arg("--cases").arg(dir.join("cases")).args(extra);
    let out = runtime_flags(&mut parity).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Node, Deno and Bun give a bundle Node's globals; the edge's workerd (its default flags) and
/// this node do not. Parity names each runtime and the offset, and fails.
#[test]
fn parity_catches_a_bundle_that_reads_node_globals() {
    let (passed, report) = parity_of("reads_process", &[]);
    assert!(!passed, "{report}");
    for runtime in ["node", "deno", "bun"] {
        assert!(report.contains(&format!("DIFFERS home in {runtime}: HTML differs at byte 39")), "{runtime}: {report}");
    }
    assert!(!report.contains("in workerd:"), "workerd runs without Node globals, as the edge does: {report}");
    assert!(report.contains("+process: object</p>"), "{report}");
}

/// Intl output depends on each runtime's ICU data: the report names the runtime and the
/// Intl calls it made with what they returned.
#[test]
fn parity_catches_intl_formatting_and_shows_the_calls() {
    let (passed, report) = parity_of("formats_date", &["--deterministic"]);
    assert!(!passed, "{report}");
    assert!(report.contains("DIFFERS home in node: HTML differs at byte"), "{report}");
    assert!(
        report.contains(r#"Intl calls in "node": [{"call":"Intl.DateTimeFormat#format","locale":"en-CA""#),
        "{report}"
    );
}

/// Randomness differs everywhere unless `--deterministic` seeds it the same in every runtime.
#[test]
fn parity_catches_randomness_unless_deterministic() {
    let (passed, report) = parity_of("random", &[]);
    assert!(!passed);
    for runtime in ["node", "workerd", "deno", "bun"] {
        // Two random numbers share their first digits now and then: the offset varies.
        assert!(report.contains(&format!("DIFFERS home in {runtime}: HTML differs at byte ")), "{runtime}: {report}");
    }
    let (passed, report) = parity_of("random", &["--deterministic"]);
    assert!(passed, "{report}");
    assert!(report.contains("2 cases × 4 runtimes (node, workerd, deno, bun): 8 identical, 0 differ"), "{report}");
}

/// A runtime asked for and not found is an error that says how to install it.
#[test]
fn a_missing_runtime_is_an_error_that_says_how_to_install_it() {
    let dir = one_page("random", "parity-missing-runtime");
    // With nothing on PATH and no node_modules here: `(succeeded, stderr)`.
    let parity = |runtimes: &str| {
        let out = cli()
            .arg("parity")
            .arg("--manifest")
            .arg(dir.join("manifest.json"))
            .arg("--cases")
            .arg(dir.join("cases"))
            .args(["--runtimes", runtimes])
            .env("PATH", "/nonexistent")
            .current_dir(&dir)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (passed, stderr) = parity("node,bun");
    assert!(!passed);
    assert!(stderr.contains("node not found on PATH") && stderr.contains("leave node out of --runtimes"), "{stderr}");
    let (passed, stderr) = parity("bun");
    assert!(!passed && stderr.contains("npm i -D bun"), "{stderr}");
}

/// An answer the node would refuse (here one that breaks its context's schema) is not
/// captured: the error names the URL, the context and the schema path, the other pages are
/// written, and the exit is non-zero.
#[test]
fn capture_refuses_an_answer_the_node_would_refuse_and_keeps_the_rest() {
    let origin = crate::e2e::harness::Origin::start();
    let dir = scratch("parity-capture-broken");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("urls.txt"), "/broken\n/about\n").unwrap();
    let out = cli()
        .arg("capture")
        .arg("--manifest")
        .arg(root().join(App::React.manifest()))
        .args(["--origin", &origin.url()])
        .arg("--urls")
        .arg(dir.join("urls.txt"))
        .arg("--out")
        .arg(dir.join("cases"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/broken: context broken_list"), "{stderr}");
    assert!(stderr.contains("/properties/products/items/properties/price/type"), "{stderr}");
    assert!(dir.join("cases/about.json").exists() && !dir.join("cases/broken.json").exists());
}
