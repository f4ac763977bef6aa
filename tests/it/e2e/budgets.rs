//! One bad page never slows the good ones (issue 14): CPU budgets, quarantine, health.

use super::harness::{Backend, Harness};
use crate::common::{DEADLINE, wait_until};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_urls_gets_503s_not_a_flood_of_origin_calls() {
    let h = std::sync::Arc::new(Harness::start_configured(Backend::Memory, |c| c.origin.max_concurrent = 1).await);
    h.origin.gate("product_detail").await;
    // One fetch holds the only origin slot (held at the origin's gate) ...
    let first = {
        let h = h.clone();
        tokio::spawn(async move { h.get("/products/1").await })
    };
    wait_until("the first fetch to reach the origin", DEADLINE, || {
        let h = h.clone();
        async move { h.origin.waiting("product_detail").await == 1 }
    })
    .await;
    // ... one more may wait for it ...
    let second = {
        let h = h.clone();
        tokio::spawn(async move { h.get("/products/2").await })
    };
    wait_until("the second fetch to wait for a slot", DEADLINE, || std::future::ready(h.node.origin.waiting() == 1))
        .await;
    // ... and the rest are refused at once.
    for id in 3..8 {
        let refused = h.get(&format!("/products/{id}")).await;
        assert_eq!((refused.status, refused.header("retry-after")), (503, "1"), "/products/{id}");
    }
    h.origin.release("product_detail").await;
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    assert_eq!(h.origin.calls("product_detail").await, 2, "the refused pages never reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_timeout_bounds_each_wait_not_the_whole_download() {
    let h = Harness::start_with(Backend::Memory, Duration::from_millis(400)).await;
    // Eight chunks 150 ms apart: 1 s in all, more than twice the origin timeout, yet no wait
    // for the next bytes is longer than it.
    let got = h.get("/api/slow?chunks=8&gap_ms=150").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.lines().count(), 8, "the whole answer arrives: {:?}", got.body);
    assert!(got.body.ends_with("chunk 7\n"));
}
