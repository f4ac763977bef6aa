//! The isolate pool: concurrency, faults, and what it says when a bundle is wrong.

use crate::common::{pool, react_bundle, react_page, test_bundle};
use mizan_render::abi::PageInput;
use mizan_render::pool::{BundleSource, Pool, PoolConfig, RenderError};
use serde_json::Value;
use std::sync::atomic::Ordering;

fn input(url: &str) -> PageInput {
    PageInput { url: url.into(), route: url.into(), ..PageInput::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_renders_across_threads_each_get_their_own_page() {
    let pool = std::sync::Arc::new(pool(2, &[react_bundle()]));
    let ids: Vec<u64> = (1..=40).collect();
    let tasks: Vec<_> = ids
        .iter()
        .map(|&id| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let (bundle, page, input) = react_page(&format!("/products/{id}"));
                let name = input.data[0].data.to_value()["name"].as_str().unwrap().to_string();
                let out = pool.render(&bundle, &page, &input).await.unwrap();
                (id, name, out.html)
            })
        })
        .collect();
    for task in tasks {
        let (id, name, html) = task.await.unwrap();
        let title = name.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
        assert!(html.contains(&format!("<title>{title}</title>")), "page {id} has another page's title");
        assert!(html.contains(&format!(r#"product_detail:{{\"id\":{id}}}"#)), "page {id} embeds another page's data");
    }
    assert_eq!(pool.stats().rendered.load(Ordering::Relaxed), 40);
    assert_eq!(pool.workers(), 2);
}

#[tokio::test]
async fn a_bundle_that_throws_names_itself_and_the_js_stack_and_the_pool_keeps_working() {
    let pool = pool(1, &[test_bundle("faulty")]);
    let err = pool.render("faulty", "throws", &input("/a")).await.unwrap_err();
    let RenderError::Js { bundle, page, message } = &err else { panic!("{err:?}") };
    assert_eq!((bundle.as_str(), page.as_str()), ("faulty", "throws"));
    assert!(message.starts_with("Error: boom in the bundle"), "{message}");
    assert!(message.contains("at explode (file:///") && message.contains("faulty.mjs:4:"), "{message}");
    assert!(err.to_string().starts_with(r#"bundle "faulty" page "throws" threw: Error: boom in the bundle"#));

    let err = pool.render("faulty", "rejects", &input("/b")).await.unwrap_err();
    assert!(err.to_string().contains("TypeError: rejected after await"), "{err}");

    // The only worker replaced its isolate after each fault and renders again, from a
    // fresh module state (the bundle counts its renders in a module variable).
    let out = pool.render("faulty", "ok", &input("/c")).await.unwrap();
    assert_eq!(out.html, "<p>ok /c</p>");
    assert_eq!(out.headers, vec![("x-renders".to_string(), "1".to_string())]);
    assert_eq!(pool.stats().failed.load(Ordering::Relaxed), 2);
    assert_eq!(pool.stats().recycled.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn invalid_render_results_are_refused_with_the_reason() {
    let pool = pool(1, &[test_bundle("faulty")]);
    let err = pool.render("faulty", "bad_output", &input("/")).await.unwrap_err();
    assert!(matches!(&err, RenderError::BadOutput { .. }), "{err:?}");
    assert!(err.to_string().contains("render() must resolve to { status, headers, html }"), "{err}");
    let err = pool.render("faulty", "bad_status", &input("/")).await.unwrap_err();
    assert!(err.to_string().ends_with("invalid render result: status 1000 is not an HTTP status"), "{err}");
    let err = pool.render("faulty", "never", &input("/")).await.unwrap_err();
    assert!(err.to_string().contains("event loop"), "a promise that can never settle is an error, not a hang: {err}");
}

#[tokio::test]
async fn pages_come_back_as_utf8_whatever_the_strings_v8_holds() {
    let pool = pool(1, &[test_bundle("faulty")]);
    // Two-byte in V8 (one character past Latin-1), with a lone surrogate: U+FFFD, as a
    // `TextEncoder` writes it.
    let out = pool.render("faulty", "text", &input("/")).await.unwrap();
    assert_eq!(out.html, "<p>aé—\u{1F600}\u{FFFD}z</p>");
    // One-byte in V8 (Latin-1): é is two bytes of UTF-8.
    let out = pool.render("faulty", "latin1", &input("/")).await.unwrap();
    assert_eq!(out.html, format!("<p>café {}</p>", "x".repeat(100)));
    assert_eq!(out.html.len(), "<p>café </p>".len() + 100);
    // A page larger than the scratch buffer kept between renders, then a small one after it.
    let out = pool.render("faulty", "big", &input("/")).await.unwrap();
    assert_eq!((out.html.len(), out.html.ends_with("x—")), (6_000_003, true));
    let out = pool.render("faulty", "text", &input("/")).await.unwrap();
    assert_eq!(out.html, "<p>aé—\u{1F600}\u{FFFD}z</p>");
}

#[tokio::test]
async fn bundles_get_the_workers_globals() {
    let pool = pool(1, &[test_bundle("faulty")]);
    let out = pool.render("faulty", "globals", &input("/")).await.unwrap();
    let got: Value = serde_json::from_str(&out.html).unwrap();
    let want = serde_json::json!({
        "bytes": [195, 169], "decoded": "é", "clone": {"a": [1, {"b": 2}]},
        "url": "https://example.test/x?y=1#z", "search": "1", "b64": "aGk=", "unb64": "hi",
        "stream": "s", "micro": true, "abort": "function", "perf": "number",
    });
    assert_eq!(got, want);
    let out = pool.render("faulty", "timer", &input("/")).await.unwrap();
    assert_eq!(out.html, "<p>after a timer</p>");
}

#[tokio::test]
async fn a_bundle_file_that_does_not_exist_is_named() {
    let err = BundleSource::read("ghost", std::path::Path::new("/nonexistent/ghost.mjs")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bundle \"ghost\": cannot read /nonexistent/ghost.mjs: No such file or directory (os error 2)"
    );
}

#[tokio::test]
async fn rendering_a_bundle_the_pool_does_not_hold_is_an_error() {
    let pool = pool(1, &[test_bundle("faulty")]);
    let err = pool.render("react_app", "ProductList", &input("/")).await.unwrap_err();
    assert_eq!(err.to_string(), "unknown bundle \"react_app\" (loaded: faulty)");
}

#[test]
fn a_bundle_that_fails_to_load_stops_the_pool_from_starting_with_its_stack() {
    let config = PoolConfig { workers: 1, ..PoolConfig::default() };
    let err = Pool::start(config.clone(), &[test_bundle("throws_at_load")]).err().unwrap();
    let text = err.to_string();
    assert!(
        text.starts_with("bundle \"throws_at_load\" failed to load: Error: top-level failure while loading"),
        "{text}"
    );
    assert!(text.contains("throws_at_load.mjs:3:"), "{text}");

    let err = Pool::start(config, &[test_bundle("no_render")]).err().unwrap();
    assert_eq!(
        err.to_string(),
        "bundle \"no_render\" failed to load: TypeError: bundle \"no_render\": default export has no render(input) function"
    );
}

#[tokio::test]
async fn a_render_past_its_deadline_fails_and_the_pool_keeps_working() {
    let config =
        PoolConfig { workers: 1, render_timeout: std::time::Duration::from_millis(200), ..PoolConfig::default() };
    let pool = Pool::start(config, &[test_bundle("faulty")]).unwrap();
    // Stuck computing: only the watchdog can stop it.
    let err = pool.render("faulty", "spin", &input("/")).await.unwrap_err();
    assert!(matches!(err, RenderError::Timeout { ms: 200, .. }), "{err:?}");
    assert_eq!(err.to_string(), r#"bundle "faulty" page "spin" did not finish within 200 ms"#);
    // Stuck waiting: the worker's own timeout.
    let err = pool.render("faulty", "sleeps", &input("/")).await.unwrap_err();
    assert!(matches!(err, RenderError::Timeout { .. }), "{err:?}");
    let out = pool.render("faulty", "ok", &input("/after")).await.unwrap();
    assert_eq!(out.html, "<p>ok /after</p>");
    assert_eq!(pool.stats().recycled.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_render_past_the_heap_limit_fails_and_the_pool_keeps_working() {
    let config = PoolConfig { workers: 1, max_heap: 64 << 20, ..PoolConfig::default() };
    let pool = Pool::start(config, &[test_bundle("faulty")]).unwrap();
    let err = pool.render("faulty", "hog", &input("/")).await.unwrap_err();
    assert!(matches!(err, RenderError::HeapLimit { mib: 64, .. }), "{err:?}");
    assert_eq!(err.to_string(), r#"bundle "faulty" page "hog" exceeded the 64 MiB heap limit"#);
    let out = pool.render("faulty", "ok", &input("/after")).await.unwrap();
    assert_eq!(out.html, "<p>ok /after</p>");
    assert_eq!(pool.stats().recycled.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_render_past_its_cpu_budget_fails_while_one_that_waits_does_not() {
    let config = PoolConfig { workers: 1, cpu_budget: std::time::Duration::from_millis(100), ..PoolConfig::default() };
    let pool = Pool::start(config, &[test_bundle("faulty")]).unwrap();
    let err = pool.render("faulty", "spin", &input("/")).await.unwrap_err();
    assert!(matches!(err, RenderError::CpuBudget { ms: 100, .. }), "{err:?}");
    assert_eq!(err.to_string(), r#"bundle "faulty" page "spin" used more than its 100 ms CPU budget"#);
    // 300 ms of waiting on a timer is wall time, not CPU.
    assert_eq!(pool.render("faulty", "waits", &input("/")).await.unwrap().html, "<p>waited</p>");
    // A render may be given more.
    let generous = mizan_render::pool::RenderOptions {
        cpu_budget: Some(std::time::Duration::from_millis(250)),
        ..Default::default()
    };
    let err = pool.render_with("faulty", "spin", &input("/"), generous).await.unwrap_err();
    assert!(matches!(err, RenderError::CpuBudget { ms: 250, .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_spent_waiting_in_the_queue_counts_toward_the_deadline() {
    let config = PoolConfig {
        workers: 1,
        render_timeout: std::time::Duration::from_millis(300),
        cpu_budget: std::time::Duration::from_secs(60),
        ..PoolConfig::default()
    };
    let pool = Pool::start(config, &[test_bundle("faulty")]).unwrap();
    // The only worker spins until the deadline; the second render waits behind it for the
    // whole of its own deadline and is refused without running. Polling the first future
    // once queues it before the second.
    let (spin_input, ok_input) = (input("/spin"), input("/ok"));
    let mut spinning = std::pin::pin!(pool.render("faulty", "spin", &spin_input));
    assert!(futures_util::poll!(&mut spinning).is_pending());
    let waiting = pool.render("faulty", "ok", &ok_input).await.unwrap_err();
    assert!(matches!(waiting, RenderError::Timeout { .. }), "{waiting:?}");
    assert!(matches!(spinning.await, Err(RenderError::Timeout { .. })));
    assert_eq!(pool.stats().rendered.load(Ordering::Relaxed), 0, "the waiting render never ran");
}

#[tokio::test]
async fn a_worker_that_panics_is_restarted_and_the_pool_keeps_rendering() {
    let pool = pool(1, &[test_bundle("faulty")]);
    assert_eq!(pool.alive(), 1);
    pool.inject_worker_panic();
    let out = pool.render("faulty", "ok", &input("/after")).await.unwrap();
    assert_eq!(out.html, "<p>ok /after</p>");
    assert_eq!(pool.stats().restarts.load(Ordering::Relaxed), 1);
    assert_eq!(pool.alive(), 1);
}

/// What a reload does: the pool of the changed bundles is built while the old one renders,
/// both render side by side, then the old one goes. Six rounds over the three frameworks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_of_other_bundles_are_built_and_render_beside_a_busy_pool() {
    use crate::common::App;
    let mut old = std::sync::Arc::new(pool(2, &[App::React.server_bundle()]));
    let mut old_app = App::React;
    for round in 0..6 {
        let next_app = [App::Vue, App::Svelte, App::React][round % 3];
        let (busy, stop) = (old.clone(), std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let stopping = stop.clone();
        let (bundle, page, input) = old_app.page("/products");
        let load = tokio::spawn(async move {
            let mut rendered = 0;
            while !stopping.load(Ordering::Relaxed) {
                assert!(busy.render(&bundle, &page, &input).await.unwrap().html.contains("Products"));
                rendered += 1;
            }
            rendered
        });
        // A changed bundle: another snapshot, built while the old pool renders.
        let mut changed = next_app.server_bundle();
        changed.code.push_str(&format!("\n// round {round}\n"));
        changed.hash = format!("{}-{round}", changed.hash);
        let next = std::sync::Arc::new(tokio::task::spawn_blocking(move || pool(2, &[changed])).await.unwrap());
        let (bundle, page, input) = next_app.page("/products/3");
        for _ in 0..30 {
            assert!(next.render(&bundle, &page, &input).await.unwrap().html.len() > 1000);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(load.await.unwrap() > 0, "the old pool rendered while the new one was built");
        (old, old_app) = (next, next_app);
    }
}
