//! The command line, run as a user runs it.

use crate::common::root;
use serde_json::Value;
use std::process::Command;

fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mizan-render"));
    command.env_remove("MIZAN_SECRET").env("RUST_BACKTRACE", "0");
    command
}

/// `mizan-render serve` of the fixture app against `origin`, one worker, the memory store.
fn serve_command(origin: &crate::e2e::harness::Origin) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mizan-render"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--origin", &origin.url(), "--manifest"]);
    command.arg(root().join("fixtures/manifests/react.json"));
    command.env("MIZAN_SECRET", crate::e2e::harness::SECRET).env("MIZAN_STORE", "memory");
    command
}

/// Starts `mizan-render serve` (`command`) and returns it with the URL it serves, once ready.
pub(crate) fn serve(command: Command) -> (std::process::Child, String) {
    let url = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = url.clone();
    let child = mizan_render::testing::spawn_ready(command, "mizan-render serve", move |line| {
        let found = line.strip_prefix("mizan-render serving ").and_then(|rest| rest.split(' ').next());
        if let Some(found) = found {
            *seen.lock().unwrap() = found.to_string();
        }
        found.is_some()
    });
    let url = url.lock().unwrap().clone();
    (child, url)
}

fn vectors() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("tests/vectors/keys.json")).unwrap()).unwrap()
}

#[test]
fn key_data_prints_the_pinned_key() {
    let v = vectors();
    let vector = &v["data"][0];
    let out = cli()
        .args(["key", "data", vector["context"].as_str().unwrap(), vector["params"].as_str().unwrap()])
        .env("MIZAN_SECRET", v["secret"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), vector["key"].as_str().unwrap());
}

#[test]
fn key_page_drops_undeclared_query_and_uses_the_manifest_site() {
    let secret = vectors()["secret"].as_str().unwrap().to_string();
    let key = |url: &str| {
        let manifest = root().join("fixtures/manifests/react.json");
        let out =
            cli().args(["key", "page", url, "--manifest"]).arg(&manifest).args(["--secret", &secret]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    // The key a library call derives from the canonical parts, with the manifest's site.
    let keys = mizan_render::cache::Keys::from_secret(secret.as_bytes(), false).unwrap();
    let expected = |site: &str, path: &str, query: &str| {
        let parts = mizan_render::cache::key::PageKeyParts {
            site: site.into(),
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            vary: String::new(),
        };
        keys.page_key(&parts)
    };
    assert_eq!(key("/products/%34%32?utm_source=mail"), expected("example", "/products/42", ""));
    assert_ne!(key("/products/42"), expected("another-site", "/products/42", ""), "the manifest's site is in the key");
    assert_ne!(key("/products/42"), key("/products/43"));
    assert_eq!(key("/search?utm=1&q=b+c&q=a"), expected("example", "/search", "q=a&q=b%20c"), "declared query only");
}

#[test]
fn a_secret_file_gives_the_same_keys_as_the_secret_and_neither_is_printed() {
    let secret = vectors()["secret"].as_str().unwrap().to_string();
    let file = crate::common::scratch("secret-file");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let from_flag = cli().args(["key", "data", "c", "{}", "--secret", &secret]).output().unwrap();
    let from_file = cli().args(["key", "data", "c", "{}", "--secret-file"]).arg(&file).output().unwrap();
    assert!(from_file.status.success(), "{}", String::from_utf8_lossy(&from_file.stderr));
    assert_eq!(from_flag.stdout, from_file.stdout, "one trailing newline is not part of the secret");
    let missing = cli().args(["key", "data", "c", "{}", "--secret-file", "/nonexistent/secret"]).output().unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("reading the secret file /nonexistent/secret"));
}

#[test]
fn a_short_secret_is_refused_with_the_reason() {
    let out = cli().args(["key", "data", "c", "{}", "--secret", "too-short"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("MIZAN_SECRET is 9 bytes; at least 32 are required"), "{stderr}");
    assert!(!stderr.contains("too-short"), "the secret never reaches the output");
}

#[test]
fn render_prints_the_page() {
    let out = cli()
        .args(["render", "--url", "/products/9999", "--json", "--manifest"])
        .arg(root().join("fixtures/manifests/react.json"))
        .arg("--data")
        .arg(root().join("fixtures/data/answers/product_404.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["status"], 404);
    assert!(page["html"].as_str().unwrap().contains("Product not found"));
}

#[test]
fn render_sees_the_url_as_the_node_does() {
    let out = cli()
        .args(["render", "--url", "/x/../products/%37?ref=%3Cb%3E", "--manifest"])
        .arg(root().join("fixtures/manifests/react.json"))
        .arg("--data")
        .arg(root().join("fixtures/data/answers/product_7.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = String::from_utf8(out.stdout).unwrap();
    let payload: Value = serde_json::from_str(crate::common::hydration_payload(&html)).unwrap();
    assert_eq!((&payload["url"], &payload["query"]), (&Value::from("/products/7"), &serde_json::json!({})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_node_from_its_flags() {
    let origin = crate::e2e::harness::Origin::start();
    let (mut child, url) = serve(serve_command(&origin));
    let first = reqwest::get(format!("{url}/products/5")).await.unwrap();
    assert_eq!(first.headers()["x-mizan-cache"], "MISS");
    let second = reqwest::get(format!("{url}/products/5")).await.unwrap();
    assert_eq!(second.headers()["x-mizan-cache"], "HIT");
    let health: Value = reqwest::get(format!("{url}/_mizan/health")).await.unwrap().json().await.unwrap();
    assert_eq!((health["store"].as_str(), health["workers"].as_u64()), (Some("memory"), Some(1)));
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_no_secret_and_no_colour_into_a_file() {
    let password = "redis-password-that-must-not-be-logged";
    let redis = mizan_render::testing::RedisServer::start_with_password(password);
    let origin = crate::e2e::harness::Origin::start();
    let (log, secret_file) = (crate::common::scratch("serve.log"), crate::common::scratch("serve-secret"));
    std::fs::write(&secret_file, crate::e2e::harness::SECRET).unwrap();
    // The log goes to a file, as under a service manager: no terminal.
    let mut command = Command::new("sh");
    command.args(["-c", "exec \"$0\" \"$@\" 2>\"$LOG\"", env!("CARGO_BIN_EXE_mizan-render")]);
    command.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--origin", &origin.url(), "--manifest"]);
    command.arg(root().join("fixtures/manifests/react.json")).arg("--secret-file").arg(&secret_file);
    command.args(["--store", &redis.url()]).env("LOG", &log).env_remove("MIZAN_SECRET");
    let (mut child, url) = serve(command);
    let page = reqwest::get(format!("{url}/products/5")).await.unwrap();
    assert_eq!(page.headers()["x-mizan-cache"], "MISS", "the node reached Redis with the password");
    // SIGTERM, as a service manager stops it: the log's last lines are written before it exits.
    // SAFETY: signalling a child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("serving") && text.contains("redis://***@127.0.0.1"), "{text}");
    assert!(!text.contains(password), "the Redis password was logged: {text}");
    assert!(!text.contains(crate::e2e::harness::SECRET), "the secret was logged");
    assert!(!text.contains('\x1b'), "colour codes in a log file: {text}");
}

#[test]
fn serve_refuses_a_bad_manifest_with_its_path() {
    let dir = crate::common::scratch("bad-manifest");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("m.json");
    std::fs::write(&manifest, r#"{"version": 1, "site": "s", "contexts": {}, "bundles": {}, "routes": []}"#).unwrap();
    let out = cli()
        .args(["serve", "--listen", "127.0.0.1:0", "--secret", crate::e2e::harness::SECRET, "--manifest"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("m.json: bundles: at least one bundle is required"), "{stderr}");
}

#[test]
fn a_bundle_that_does_not_parse_is_reported_with_its_place_and_nothing_else() {
    let dir = crate::common::scratch("syntax-error-manifest");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("m.json");
    let bundle = root().join("tests/fixtures/bundles/syntax_error.mjs");
    let text = serde_json::json!({
        "version": 1, "site": "s", "contexts": {},
        "bundles": {"app": {"framework": "react", "file": bundle}},
        "routes": [{"path": "/", "bundle": "app", "page": "Home"}]
    });
    std::fs::write(&manifest, text.to_string()).unwrap();
    let out = cli().args(["render", "--url", "/", "--manifest"]).arg(&manifest).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SyntaxError: Unexpected token '}'"), "{stderr}");
    assert!(stderr.contains("syntax_error.mjs:6:2"), "file, line and column: {stderr}");
    assert!(!stderr.contains("leaked"), "V8's own noise reaches the user: {stderr}");
}

/// A bundle that imports a module (here a Node built-in, as Svelte's asynchronous rendering
/// does) is refused at load with the import named and the fix, not "Module loading is not
/// supported".
#[test]
fn a_bundle_that_imports_a_module_is_refused_with_the_import_named() {
    let dir = crate::common::scratch("imports-node-manifest");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("m.json");
    let bundle = root().join("tests/fixtures/bundles/imports_node.mjs");
    let text = serde_json::json!({
        "version": 1, "site": "s", "contexts": {},
        "bundles": {"app": {"framework": "svelte", "file": bundle}},
        "routes": [{"path": "/", "bundle": "app", "page": "Home"}]
    });
    std::fs::write(&manifest, text.to_string()).unwrap();
    let out = cli().args(["render", "--url", "/", "--manifest"]).arg(&manifest).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"bundle "app" failed to load: cannot import "node:async_hooks""#), "{stderr}");
    assert!(stderr.contains("self-contained") && stderr.contains("asynchronous rendering"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_what_is_in_flight_and_exits_cleanly() {
    let origin = crate::e2e::harness::Origin::start();
    let (mut child, url) = serve(serve_command(&origin));
    // A request in flight: its data held at the origin's gate.
    origin.gate("product_detail").await;
    let in_flight = tokio::spawn(reqwest::get(format!("{url}/products/6")));
    let reached = || async { origin.waiting("product_detail").await == 1 };
    crate::common::wait_until("the request to reach the origin", crate::common::DEADLINE, reached).await;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    origin.release("product_detail").await;
    let page = in_flight.await.unwrap().unwrap();
    assert_eq!((page.status().as_u16(), page.headers()["x-mizan-cache"].to_str().unwrap()), (200, "MISS"));
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status}");
}

/// A request that never finishes (its data held at the origin for good): SIGTERM stops the
/// node once the grace period is over, with a warning that says so, instead of waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_up_on_work_still_in_flight_when_the_grace_period_ends() {
    let origin = crate::e2e::harness::Origin::start();
    let log = crate::common::scratch("grace.log");
    let mut command = Command::new("sh");
    command.args(["-c", "exec \"$0\" \"$@\" 2>\"$LOG\"", env!("CARGO_BIN_EXE_mizan-render")]);
    command.args(serve_command(&origin).get_args()).arg("--grace-ms").arg("300").env("LOG", &log);
    command.env("MIZAN_SECRET", crate::e2e::harness::SECRET).env("MIZAN_STORE", "memory");
    let (mut child, url) = serve(command);
    origin.gate("product_detail").await;
    let stuck = tokio::spawn(reqwest::get(format!("{url}/products/6")));
    let reached = || async { origin.waiting("product_detail").await == 1 };
    crate::common::wait_until("the request to reach the origin", crate::common::DEADLINE, reached).await;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let exited = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + crate::common::DEADLINE;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        None
    });
    let status = exited.await.unwrap().expect("the node kept waiting for the stuck request past its grace period");
    assert!(status.success(), "exit status {status}");
    assert!(stuck.await.unwrap().is_err(), "the stuck request was cut when the node stopped");
    origin.release("product_detail").await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the grace period ended"), "{text}");
}
