//! The command line, run as a user runs it.

use crate::common::root;
use serde_json::Value;
use std::process::Command;

fn cli() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mizan-render"));
    command.env_remove("MIZAN_SECRET").env("RUST_BACKTRACE", "0");
    command
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
    assert_eq!(key("/products/42"), key("/products/%34%32?utm_source=mail"));
    assert_ne!(key("/products/42"), key("/products/43"));
    assert!(key("/products").starts_with("mz1:p:"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_node_from_its_flags() {
    let origin = crate::e2e::harness::Origin::start();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mizan-render"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--origin", &origin.url(), "--manifest"]);
    command.arg(root().join("fixtures/manifests/react.json"));
    command.env("MIZAN_SECRET", crate::e2e::harness::SECRET).env("MIZAN_STORE", "memory");
    let url = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = url.clone();
    let mut child = mizan_render::testing::spawn_ready(command, "mizan-render serve", move |line| {
        let found = line.strip_prefix("mizan-render serving ").and_then(|rest| rest.split(' ').next());
        if let Some(found) = found {
            *seen.lock().unwrap() = found.to_string();
        }
        found.is_some()
    });
    let url = url.lock().unwrap().clone();
    let first = reqwest::get(format!("{url}/products/5")).await.unwrap();
    assert_eq!(first.headers()["x-mizan-cache"], "MISS");
    let second = reqwest::get(format!("{url}/products/5")).await.unwrap();
    assert_eq!(second.headers()["x-mizan-cache"], "HIT");
    let health: Value = reqwest::get(format!("{url}/_mizan/health")).await.unwrap().json().await.unwrap();
    assert_eq!((health["store"].as_str(), health["workers"].as_u64()), (Some("memory"), Some(1)));
    let _ = child.kill();
    let _ = child.wait();
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
