//! The config file, the environment and the flags: one precedence, errors that name the key
//! and the file, `config check`, and secrets that never show.

use crate::common::{root, scratch};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SECRET: &str = crate::e2e::harness::SECRET;

/// The binary with no `MIZAN_*` variable from the test's environment.
fn bare() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mizan-render"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MIZAN_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_BACKTRACE", "0");
    command
}

/// A config file named `name` holding `text`, in a folder of its own.
fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = scratch(&format!("config-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mizan.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn manifest() -> String {
    root().join("fixtures/manifests/react.json").display().to_string()
}

/// `config check` with `config`, the extra `args` and `env`.
fn check(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = bare();
    command.arg("--config").arg(config).args(["config", "check"]).args(args);
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    let file = config_file(
        "precedence",
        &format!(
            "manifest = {:?}\nworkers = 3\nmemory_mb = 64\nqueue = 9\nrender_cpu_ms = 250\norigin_timeout_ms = 777\n",
            manifest()
        ),
    );
    let out = check(
        &file,
        &["--queue", "7", "--memory-mb", "16"],
        &[("MIZAN_SECRET", SECRET), ("MIZAN_WORKERS", "2"), ("MIZAN_MEMORY_MB", "32"), ("MIZAN_RENDER_CPU_MS", "300")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "queue = 7  # flag",                      // flag over file
        "memory_mb = 16  # flag",                 // flag over environment and file
        "workers = 2  # environment",             // environment over file
        "render_cpu_ms = 300  # environment",     // environment over file
        "origin_timeout_ms = 777  # config file", // file over default
        "render_timeout_ms = 10000  # default",   // default
        "origin = \"http://127.0.0.1:8000\"  # default",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
    }
    assert!(stderr(&out).contains("ok: site \"example\""), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_alone_configures_serve_through_mizan_config() {
    let origin = crate::e2e::harness::Origin::start();
    let secret_file = scratch("file-only-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let file = config_file(
        "file-only",
        &format!(
            "manifest = {:?}\norigin = {:?}\nlisten = \"127.0.0.1:0\"\nworkers = 1\nsecret_file = {:?}\n",
            manifest(),
            origin.url(),
            secret_file.display().to_string()
        ),
    );
    let mut command = bare();
    command.arg("serve").env("MIZAN_CONFIG", &file);
    let (mut child, url) = crate::cli::serve(command);
    let page = reqwest::get(format!("{url}/products/5")).await;
    let _ = child.kill();
    let _ = child.wait();
    let page = page.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["x-mizan-cache"], "MISS", "rendered from the origin the file names");
}

#[test]
fn an_unknown_key_is_refused_with_the_key_the_file_and_the_line() {
    let file = config_file("unknown-key", &format!("manifest = {:?}\nmemory_mib = 64\n", manifest()));
    let out = check(&file, &[], &[("MIZAN_SECRET", SECRET)]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains(&file.display().to_string()), "the file is named: {text}");
    assert!(text.contains("line 2") && text.contains("unknown field `memory_mib`"), "{text}");
    assert!(text.contains("memory_mb"), "the keys it could have been are listed: {text}");
}

#[test]
fn a_value_of_the_wrong_type_or_a_bad_value_is_refused_where_it_was_given() {
    let file = config_file("wrong-type", "workers = \"many\"\n");
    let text = stderr(&check(&file, &[], &[("MIZAN_SECRET", SECRET)]));
    assert!(text.contains(&file.display().to_string()) && text.contains("line 1"), "{text}");
    assert!(text.contains("workers") && text.contains("invalid type"), "{text}");

    let file = config_file("bad-store-file", &format!("manifest = {:?}\nstore = \"ftp://cache\"\n", manifest()));
    let text = stderr(&check(&file, &[], &[("MIZAN_SECRET", SECRET)]));
    assert!(text.contains(&format!("store in {}", file.display())) && text.contains("unknown store"), "{text}");

    // The same value from the environment is named as the variable.
    let file = config_file("bad-store-env", &format!("manifest = {:?}\n", manifest()));
    let text = stderr(&check(&file, &[], &[("MIZAN_SECRET", SECRET), ("MIZAN_STORE", "ftp://cache")]));
    assert!(text.contains("MIZAN_STORE: unknown store"), "{text}");

    let file = config_file("no-manifest", "workers = 1\n");
    let text = stderr(&check(&file, &[], &[("MIZAN_SECRET", SECRET)]));
    assert!(text.contains("--manifest: is required"), "{text}");
}

#[test]
fn the_secret_is_never_a_file_key_and_never_printed() {
    let file = config_file("secret-key", &format!("manifest = {:?}\nsecret = {SECRET:?}\n", manifest()));
    let out = check(&file, &[], &[]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("line 2") && text.contains("the secret is not a config file key"), "{text}");
    assert!(!text.contains(SECRET), "the refused secret was echoed: {text}");

    // From a secret file beside the config (relative to it), with a Redis password in the
    // store URL: the check prints neither.
    let password = "redis-password-that-must-not-be-printed";
    let redis = mizan_render::testing::RedisServer::start_with_password(password);
    let file = config_file(
        "secret-file",
        &format!("manifest = {:?}\nsecret_file = \"secret\"\nstore = {:?}\n", manifest(), redis.url()),
    );
    std::fs::write(file.with_file_name("secret"), SECRET).unwrap();
    let out = check(&file, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (text, log) = (stdout(&out), stderr(&out));
    assert!(text.contains("store = \"redis://***@127.0.0.1"), "{text}");
    assert!(text.contains(&format!("# secret: from the file {}", file.with_file_name("secret").display())), "{text}");
    for shown in [&text, &log] {
        assert!(!shown.contains(password) && !shown.contains(SECRET), "a secret was printed: {shown}");
    }
}

#[test]
fn config_check_loads_the_bundles_and_says_what_fails() {
    let dir = scratch("check-bad-bundle");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest_text = std::fs::read_to_string(root().join("fixtures/manifests/react.json")).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest_text).unwrap();
    std::fs::write(dir.join("broken.mjs"), "export function render() {}\nthrow new Error('bundle top level fails');\n")
        .unwrap();
    manifest["bundles"]["react_app"]["file"] = serde_json::Value::from(dir.join("broken.mjs").display().to_string());
    manifest["bundles"]["react_app"].as_object_mut().unwrap().remove("client");
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let file = config_file("check-bad-bundle-config", "manifest = \"../check-bad-bundle/manifest.json\"\n");
    let out = check(&file, &[], &[("MIZAN_SECRET", SECRET)]);
    assert!(!out.status.success(), "a bundle that throws is refused");
    let text = stderr(&out);
    assert!(text.contains("react_app") && text.contains("bundle top level fails"), "{text}");
}

#[test]
fn log_json_comes_from_the_file_and_the_flag_turns_it_off() {
    let file = config_file("log-json", &format!("manifest = {:?}\nlog_json = true\nworkers = 1\n", manifest()));
    let out = check(&file, &[], &[("MIZAN_SECRET", SECRET)]);
    let log = stderr(&out);
    let line = log.lines().find(|l| l.contains("snapshot ready")).unwrap_or_else(|| panic!("{log}"));
    assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "a JSON line: {line}");
    let out = check(&file, &["--log-json=false"], &[("MIZAN_SECRET", SECRET)]);
    let log = stderr(&out);
    let line = log.lines().find(|l| l.contains("snapshot ready")).unwrap_or_else(|| panic!("{log}"));
    assert!(serde_json::from_str::<serde_json::Value>(line).is_err(), "a text line: {line}");
}

#[test]
fn the_example_config_documents_every_key_and_is_valid() {
    let example = root().join("docs/mizan.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    // Every key the parser knows, from its own list.
    let bogus = config_file("all-keys", "not_a_key = 1\n");
    let refused = stderr(&check(&bogus, &[], &[]));
    let known = refused.split("expected one of").nth(1).unwrap_or_else(|| panic!("{refused}"));
    let known: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
    assert!(known.len() >= 20, "{known:?}");
    for key in &known {
        let documented = text.lines().any(|l| {
            let l = l.trim_start_matches("# ");
            l.starts_with(&format!("{key} = "))
        });
        assert!(documented, "docs/mizan.example.toml does not document `{key}`");
    }
    let out = check(&example, &["--manifest", &manifest()], &[("MIZAN_SECRET", SECRET)]);
    assert!(out.status.success(), "the example is a valid config: {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_moves_metrics_off_the_public_address() {
    let origin = crate::e2e::harness::Origin::start();
    let metrics_port = mizan_render::testing::free_port();
    let file = config_file(
        "metrics-listen",
        &format!(
            "manifest = {:?}\norigin = {:?}\nlisten = \"127.0.0.1:0\"\nworkers = 1\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n",
            manifest(),
            origin.url()
        ),
    );
    let mut command = bare();
    command.arg("--config").arg(&file).arg("serve").env("MIZAN_SECRET", SECRET);
    let (mut child, url) = crate::cli::serve(command);
    let page = reqwest::get(format!("{url}/products/5")).await.unwrap().status();
    let public = reqwest::get(format!("{url}/metrics")).await.unwrap().status();
    let private = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await.unwrap();
    let (status, text) = (private.status(), private.text().await.unwrap());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(page, 200);
    assert_eq!(public, 404, "/metrics is not on the public address");
    assert_eq!(status, 200);
    assert!(text.contains("mizan_requests_total{"), "{text}");
}
