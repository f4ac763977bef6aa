//! One bad page never slows the good ones (issue 14): CPU budgets, quarantine, health.

use super::harness::{Backend, Harness};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn health(h: &Harness) -> (u16, Value) {
    let response = h.client.get(format!("{}/_mizan/health", h.url)).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_page_is_stopped_by_its_cpu_budget_then_quarantined() {
    let h = Harness::start(Backend::Memory).await;
    // /spin loops for ever; its route allows 150 ms of CPU.
    for n in 0..3 {
        let spin = h.get("/spin").await;
        assert_eq!(spin.status, 500, "render {n}: {}", spin.body);
        assert!(spin.body.contains("more computing time than allowed"), "{}", spin.body);
    }
    let failed = h.node.pool.stats().failed.load(Ordering::Relaxed);
    assert_eq!(failed, 3);
    // Quarantined: refused at once, without taking a worker.
    for _ in 0..5 {
        let refused = h.get("/spin").await;
        assert_eq!((refused.status, refused.header("retry-after")), (503, "10"));
    }
    assert_eq!(h.node.pool.stats().failed.load(Ordering::Relaxed), failed, "no render was attempted");
    // The good pages are served meanwhile.
    let good = h.get("/products/2").await;
    assert_eq!((good.status, good.cache()), (200, "MISS"));
    let (status, report) = health(&h).await;
    assert_eq!((status, report["status"].as_str()), (200, Some("degraded")));
    assert_eq!(report["quarantined_routes"], serde_json::json!(["/spin"]));
    // After the cool-down one probe renders; it fails, and the next quarantine is longer.
    h.node.clock.advance(Duration::from_secs(11));
    assert_eq!(h.get("/spin").await.status, 500, "the probe");
    let refused = h.get("/spin").await;
    assert_eq!((refused.status, refused.header("retry-after")), (503, "20"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_looping_requests_do_not_hold_the_workers() {
    let h = std::sync::Arc::new(Harness::start(Backend::Memory).await);
    // Six distinct URLs (not coalesced) of a looping page, as in the report: each is cut by
    // its CPU budget, and the route is quarantined after three.
    let spins: Vec<_> = (0..6)
        .map(|n| {
            let h = h.clone();
            tokio::spawn(async move { h.get(&format!("/spin?n={n}")).await.status })
        })
        .collect();
    let good = h.get("/products/3").await;
    assert_eq!(good.status, 200);
    let mut statuses: Vec<u16> = Vec::new();
    for spin in spins {
        statuses.push(spin.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 500 || *s == 503), "{statuses:?}");
    assert!(h.node.pool.stats().failed.load(Ordering::Relaxed) <= 6);
    let (_, report) = health(&h).await;
    assert_eq!(report["alive_workers"], 2, "every worker is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_degraded_while_the_store_fails() {
    let mut h = Harness::start(Backend::Redis).await;
    let (status, report) = health(&h).await;
    assert_eq!((status, report["status"].as_str()), (200, Some("ok")), "{report}");
    h.redis.as_mut().unwrap().kill();
    assert_eq!(h.get("/products/4").await.status, 200, "served without the cache");
    let (status, report) = health(&h).await;
    assert_eq!((status, report["status"].as_str()), (200, Some("degraded")), "{report}");
    assert!(report["reasons"][0].as_str().unwrap().contains("the redis store failed"), "{report}");
}
