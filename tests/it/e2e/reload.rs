//! Reloads: the manifest and bundles loaded again beside the serving version, swapped in when
//! ready, with no request dropped; a bad reload refused with the old version serving; pages of
//! an unchanged bundle stay cached, those of a changed bundle render again.

use super::harness::{Backend, Harness, SECRET};
use crate::common::{DEADLINE, root, scratch};
use mizan_render::cache::Keys;
use mizan_render::cache::signature::sign;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A copy of the React fixture app's manifest and server bundle in a folder of its own, so a
/// test can change them.
struct Site {
    manifest: PathBuf,
    bundle: PathBuf,
}

impl Site {
    fn new(name: &str) -> Self {
        let dir = scratch(&format!("reload-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fixtures = root().join("fixtures/manifests");
        let mut manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures.join("react.json")).unwrap()).unwrap();
        let app = &mut manifest["bundles"]["react_app"];
        let bundle = dir.join("server.mjs");
        std::fs::copy(fixtures.join(app["file"].as_str().unwrap()), &bundle).unwrap();
        app["file"] = Value::from(bundle.display().to_string());
        let client = fixtures.join(app["client"].as_str().unwrap());
        app["client"] = Value::from(client.display().to_string());
        let site = Site { manifest: dir.join("manifest.json"), bundle };
        site.write_manifest(&manifest);
        site
    }

    fn write_manifest(&self, manifest: &Value) {
        std::fs::write(&self.manifest, serde_json::to_string_pretty(manifest).unwrap()).unwrap();
    }

    fn manifest(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(&self.manifest).unwrap()).unwrap()
    }

    /// Changes the bundle's code (not what it renders): another hash.
    fn touch_bundle(&self, mark: &str) {
        let mut code = std::fs::read_to_string(&self.bundle).unwrap();
        code.push_str(&format!("\n// {mark}\n"));
        std::fs::write(&self.bundle, code).unwrap();
    }

    async fn harness(&self) -> Harness {
        let manifest = self.manifest.clone();
        Harness::start_configured(Backend::Memory, move |config| config.manifest = manifest).await
    }
}

/// `POST /_mizan/reload`, signed with `keys`: its status and its JSON.
async fn reload_with(h: &Harness, keys: &Keys) -> (u16, Value) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // A body of its own: the same signature twice is a replay.
    static N: AtomicU64 = AtomicU64::new(0);
    let body = format!("{{\"n\":{}}}", N.fetch_add(1, Ordering::Relaxed)).into_bytes();
    let response = h
        .client
        .post(format!("{}/_mizan/reload", h.url))
        .header("x-mizan-signature", sign(keys, now, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn reload(h: &Harness) -> (u16, Value) {
    reload_with(h, &Keys::from_secret(SECRET.as_bytes(), false).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_steady_load_drop_no_request() {
    let site = Site::new("load");
    let h = site.harness().await;
    let (stop, served, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8u64)
        .map(|n| {
            let (client, url) = (h.client.clone(), h.url.clone());
            let (stop, served, failed, failures) = (stop.clone(), served.clone(), failed.clone(), failures.clone());
            tokio::spawn(async move {
                let mut i = n;
                while !stop.load(Ordering::Relaxed) {
                    // Hits and misses: 40 pages over 8 clients.
                    let path = if i % 8 == 0 { "/products".to_string() } else { format!("/products/{}", i % 40 + 1) };
                    i += 8;
                    let outcome = match client.get(format!("{url}{path}")).send().await {
                        Ok(r) if r.status() == 200 => r.bytes().await.map(|_| ()).map_err(|e| e.to_string()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    };
                    match outcome {
                        Ok(()) => served.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            failures.lock().unwrap().push(format!("{path}: {error}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    // Every reload happens while requests are in the air: some served before it, some after.
    for round in 0..6 {
        let before = served.load(Ordering::Relaxed);
        let served = served.clone();
        let enough = move || std::future::ready(served.load(Ordering::Relaxed) >= before + 20);
        mizan_render::testing::wait_until("requests served before the reload", DEADLINE, enough).await;
        if round % 2 == 1 {
            site.touch_bundle(&format!("round {round}"));
        }
        let (status, reloaded) = reload(&h).await;
        assert_eq!(status, 200, "{reloaded}");
        assert_eq!(reloaded["generation"], round + 1);
        assert_eq!(reloaded["bundles"][0]["changed"], round % 2 == 1, "{reloaded}");
    }
    let before = served.load(Ordering::Relaxed);
    let counted = served.clone();
    let enough = move || std::future::ready(counted.load(Ordering::Relaxed) >= before + 20);
    mizan_render::testing::wait_until("requests served after the last reload", DEADLINE, enough).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed during reloads: {failures:?}");
    let (_, health) = h.health().await;
    assert_eq!(health["generation"], 6);
    assert_eq!(health["status"], "ok", "{health}");
    // Every replaced generation is dropped, its isolates with it, once its requests are done;
    // all but the first, which the harness holds (`h.node`).
    let retired = || async { h.health().await.1["retiring"] == 1 };
    mizan_render::testing::wait_until("the replaced generations to retire", DEADLINE, retired).await;
    // The metrics are one registry across generations: the reloads and every request counted.
    let metrics = h.client.get(format!("{}/metrics", h.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "mizan_reloads_total{result=\"ok\"} 6"), "{metrics}");
    let pages: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("mizan_requests_total{") && l.contains("status=\"200\"") && l.contains("/products"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(pages as u64, served.load(Ordering::Relaxed), "every page served, before and after each reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_an_unchanged_bundle_stay_cached_and_a_changed_bundle_renders_them_again() {
    let site = Site::new("validity");
    let h = site.harness().await;
    assert_eq!(h.get("/products/5").await.cache(), "MISS");
    assert_eq!(h.get("/products/5").await.cache(), "HIT");
    let (status, reloaded) = reload(&h).await;
    assert_eq!((status, &reloaded["bundles"][0]["changed"]), (200, &Value::Bool(false)), "{reloaded}");
    assert_eq!(h.get("/products/5").await.cache(), "HIT", "the same bundle: the cached page stays valid");

    site.touch_bundle("v2");
    let (status, reloaded) = reload(&h).await;
    assert_eq!((status, &reloaded["bundles"][0]["changed"]), (200, &Value::Bool(true)), "{reloaded}");
    let (_, health) = h.health().await;
    assert_eq!(health["bundles"]["react_app"], reloaded["bundles"][0]["hash"], "health names the bundle serving");
    assert_eq!(h.get("/products/5").await.cache(), "MISS", "a page of the old bundle is rendered again");
    assert_eq!(h.get("/products/5").await.cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_is_refused_with_the_error_and_the_old_version_keeps_serving() {
    let site = Site::new("bad");
    let h = site.harness().await;
    assert_eq!(h.get("/products/5").await.cache(), "MISS");
    let good = site.manifest();

    // A manifest that is not JSON: the file and the line are named.
    let text = serde_json::to_string_pretty(&good).unwrap();
    std::fs::write(&site.manifest, text.replacen("\"site\"", "site", 1)).unwrap();
    let (status, refused) = reload(&h).await;
    let error = refused["error"].as_str().unwrap();
    assert_eq!(status, 422, "{refused}");
    assert!(error.contains(&site.manifest.display().to_string()) && error.contains("line 3"), "{error}");
    assert_eq!(h.get("/products/5").await.cache(), "HIT", "the old version serves its cached page");
    assert_eq!(h.get("/products/6").await.cache(), "MISS", "and renders");

    // A bundle that throws while loading: the bundle and its error are named.
    site.write_manifest(&good);
    let code = std::fs::read_to_string(&site.bundle).unwrap();
    std::fs::write(&site.bundle, format!("{code}\nthrow new Error('broken deploy');\n")).unwrap();
    let (status, refused) = reload(&h).await;
    let error = refused["error"].as_str().unwrap();
    assert_eq!(status, 422, "{refused}");
    assert!(error.contains("react_app") && error.contains("broken deploy"), "{error}");
    assert_eq!(h.get("/products/6").await.cache(), "HIT");
    assert_eq!(h.get("/products/7").await.cache(), "MISS");

    // Another site: its entries would be under other keys in a store opened for this one.
    std::fs::write(&site.bundle, &code).unwrap();
    let mut other = good.clone();
    other["site"] = Value::from("another-site");
    site.write_manifest(&other);
    let (status, refused) = reload(&h).await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("site changed"), "{refused}");

    // A forged reload changes nothing, even with a good manifest.
    site.write_manifest(&good);
    let forged = Keys::from_secret(b"a-different-secret-of-enough-length-000", false).unwrap();
    let (status, _) = reload_with(&h, &forged).await;
    assert_eq!(status, 401);
    let (_, health) = h.health().await;
    assert_eq!((health["generation"].as_u64(), health["status"].as_str()), (Some(0), Some("ok")), "{health}");

    // Fixed: the reload goes through, and the unchanged bundle keeps its pages.
    let (status, reloaded) = reload(&h).await;
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(h.get("/products/7").await.cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_serving_binary() {
    let site = Site::new("sighup");
    let origin = super::harness::Origin::start();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mizan-render"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--origin", &origin.url(), "--manifest"]);
    command.arg(&site.manifest).env("MIZAN_SECRET", SECRET).env("MIZAN_STORE", "memory");
    let (mut child, url) = crate::cli::serve(command);
    let health =
        || async { reqwest::get(format!("{url}/_mizan/health")).await.unwrap().json::<Value>().await.unwrap() };
    let before = health().await;
    site.touch_bundle("sighup");
    // SAFETY: signalling a child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    let reloaded = || async { health().await["generation"] == 1 };
    mizan_render::testing::wait_until("the reload after SIGHUP", DEADLINE, reloaded).await;
    let after = health().await;
    assert_ne!(before["bundles"]["react_app"], after["bundles"]["react_app"], "the changed bundle serves");
    let page = reqwest::get(format!("{url}/products/5")).await.unwrap();
    assert_eq!(page.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_signature_accepted_before_a_reload_is_still_a_replay_after_it() {
    let site = Site::new("replay");
    let h = site.harness().await;
    let keys = Keys::from_secret(SECRET.as_bytes(), false).unwrap();
    let body = br#"{"purge":[{"context":"product_detail","params":{"id":1}}],"mode":"hard"}"#.to_vec();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let signature = sign(&keys, now, &body);
    let purge = || {
        h.client
            .post(format!("{}/_mizan/purge", h.url))
            .header("x-mizan-signature", signature.clone())
            .body(body.clone())
            .send()
    };
    assert_eq!(purge().await.unwrap().status(), 200);
    let (status, reloaded) = reload(&h).await;
    assert_eq!(status, 200, "{reloaded}");
    let replayed = purge().await.unwrap();
    assert_eq!(replayed.status(), 401, "the new generation forgot the signatures the old one took");
    assert!(replayed.text().await.unwrap().contains("replay"));
}
