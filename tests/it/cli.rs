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
