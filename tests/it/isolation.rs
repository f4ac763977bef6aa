//! Isolation between renders: one bundle never sees another's globals, nothing of one render
//! (timers, intervals, microtasks, pending tasks) runs during another, module state persists
//! within a bundle unless it asks for a fresh isolate per render, and what a bundle throws is
//! reported readably.

use crate::common::{pool, test_bundle};
use mizan_render::abi::PageInput;
use mizan_render::pool::{Isolation, Pool, PoolConfig};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

fn input(url: &str) -> PageInput {
    PageInput { url: url.into(), route: url.into(), ..PageInput::default() }
}

async fn html(pool: &Pool, bundle: &str, page: &str) -> String {
    pool.render(bundle, page, &input(&format!("/{page}"))).await.unwrap().html
}

#[tokio::test]
async fn one_bundle_never_sees_another_bundles_globals_or_prototypes() {
    // One worker: both bundles' renders run on the same thread, one after the other.
    let pool = pool(1, &[test_bundle("leaky"), test_bundle("observer")]);
    assert_eq!(html(&pool, "leaky", "pollute").await, "polluted");
    assert_eq!(html(&pool, "leaky", "schedule").await, "scheduled");
    let seen: Value = serde_json::from_str(&html(&pool, "observer", "observe").await).unwrap();
    assert_eq!(seen, json!({"leaked": "undefined", "polluted": "undefined", "fromTimer": "undefined"}));
    // Within the bundle, module state persists (as in Workers): the global it set is there.
    let own: Value = serde_json::from_str(&html(&pool, "leaky", "observe").await).unwrap();
    assert_eq!(own["leaked"], "/pollute");
}

#[tokio::test]
async fn a_bundle_cannot_reach_the_runtime_internals_or_render_another_bundle() {
    let pool = pool(1, &[test_bundle("leaky"), test_bundle("observer")]);
    let seen: Value = serde_json::from_str(&html(&pool, "leaky", "internals").await).unwrap();
    assert_eq!(seen["deno"], "undefined", "Deno.core (raw timers and ops) is not a bundle's to use");
    assert_eq!(seen["other"], r#"bundle "observer" is not loaded in this isolate"#);
    assert_eq!(seen["reinit"], "this isolate already renders a bundle");
}

#[tokio::test]
async fn no_timer_interval_or_microtask_of_one_render_runs_during_the_next() {
    let pool = pool(1, &[test_bundle("leaky")]);
    assert_eq!(html(&pool, "leaky", "schedule").await, "scheduled");
    // The next render waits 30 ms on its own timer: the 5 ms timeout and the 1 ms interval
    // of the first render would fire meanwhile if they were still scheduled.
    let seen: Value = serde_json::from_str(&html(&pool, "leaky", "observe").await).unwrap();
    assert_eq!(seen["before"], seen["after"], "something of the first render ran during the second: {seen}");
    assert_eq!(seen["after"]["fromTimer"], Value::Null, "the timer was cancelled when its render settled");
    assert_eq!(seen["after"]["ticks"], 0, "the interval was cancelled when its render settled");
    // Microtasks queued as the render settled ran before it was answered, not during the next.
    assert_eq!(seen["before"]["fromMicrotask"], "/schedule");
    assert_eq!(pool.stats().recycled.load(Ordering::Relaxed), 0, "cancelled timers need no new isolate");
}

#[tokio::test]
async fn a_render_that_leaves_work_pending_gets_its_isolate_replaced() {
    let pool = pool(1, &[test_bundle("leaky")]);
    // A message in flight when the render settles is work that would land during the next.
    assert_eq!(html(&pool, "leaky", "port").await, "listening");
    let seen: Value = serde_json::from_str(&html(&pool, "leaky", "observe").await).unwrap();
    assert_eq!(seen["before"], seen["after"], "the port's message arrived during another render: {seen}");
    assert_eq!((&seen["renders"], &seen["after"]["fromPort"]), (&json!(1), &Value::Null), "a fresh isolate");
    // An unhandled rejection fails its render, and the isolate is not trusted with another.
    let err = pool.render("leaky", "rejects_late", &input("/")).await.unwrap_err().to_string();
    assert!(err.contains("Error: nobody handles this"), "{err}");
    assert_eq!(html(&pool, "leaky", "count").await, "1", "the next render starts from the snapshot");
    // One worker: the renders above were served after each replacement was made.
    assert_eq!(pool.stats().recycled.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn module_state_persists_by_default_and_strict_isolation_starts_every_render_fresh() {
    let shared = pool(1, &[test_bundle("leaky")]);
    for n in 1..=3 {
        assert_eq!(html(&shared, "leaky", "count").await, n.to_string());
    }
    let mut strict = test_bundle("leaky");
    strict.isolation = Isolation::Render;
    let strict = Pool::start(PoolConfig { workers: 1, ..PoolConfig::default() }, &[strict]).unwrap();
    assert_eq!(html(&strict, "leaky", "pollute").await, "polluted");
    for _ in 0..3 {
        assert_eq!(html(&strict, "leaky", "count").await, "1");
    }
    let seen: Value = serde_json::from_str(&html(&strict, "leaky", "observe").await).unwrap();
    assert_eq!(seen["leaked"], Value::Null, "a fresh isolate has none of an earlier render's globals");
}

#[tokio::test]
async fn a_thrown_value_that_is_not_an_error_is_shown_as_json() {
    let pool = pool(1, &[test_bundle("leaky")]);
    let err = pool.render("leaky", "throws_object", &input("/")).await.unwrap_err().to_string();
    assert!(err.contains(r#"render threw a value that is not an Error: {"code":42,"why":"not an Error"}"#), "{err}");
    let err = pool.render("leaky", "throws_string", &input("/")).await.unwrap_err().to_string();
    assert!(err.contains(r#"not an Error: "plain words""#), "{err}");
}

#[test]
fn a_bundle_that_does_not_parse_is_named_with_its_file_line_and_column() {
    let err = Pool::start(PoolConfig { workers: 1, ..PoolConfig::default() }, &[test_bundle("syntax_error")])
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with(r#"bundle "syntax_error" failed to load: SyntaxError: Unexpected token '}'"#), "{err}");
    assert!(err.contains("syntax_error.mjs:6:2"), "file, line and column: {err}");
}
