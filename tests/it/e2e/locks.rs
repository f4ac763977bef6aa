//! Render locks between nodes on one Redis (issue 19), two nodes in this process: a
//! revalidation another node runs is skipped, a holder whose page may not be stored hands the
//! lock on, a waiter renders for itself at its deadline, and a streamed page another node
//! renders is served whole. The three-process tests are in `tests/it/nodes.rs`.

use super::harness::{Backend, Beside, Got, Harness, read};
use crate::common::{DEADLINE, wait_until};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

fn n(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A's request for `path` held at the origin on `context` (A took the render lock), then B's
/// request for it: both answers, still in flight.
async fn a_then_b(h: &Harness, b: &Beside, context: &str, path: &str) -> (JoinHandle<Got>, JoinHandle<Got>) {
    h.origin.gate(context).await;
    let url = format!("{}{path}", h.url);
    let first = tokio::spawn(async move { read(reqwest::get(url).await.unwrap()).await });
    wait_until("A's render at the origin", DEADLINE, || async { h.origin.waiting(context).await == 1 }).await;
    let (client, url) = (b.client.clone(), format!("{}{path}", b.url));
    let second = tokio::spawn(async move { read(client.get(url).send().await.unwrap()).await });
    (first, second)
}

/// Waits until B's flight waits for A's render.
async fn b_waits(b: &Beside) {
    wait_until("B waiting for A", DEADLINE, || std::future::ready(n(&b.node.stats.locks.waited) == 1)).await;
}

/// `/products/7` cached by A and read by B, then both nodes' clocks past its ttl (60 s) and
/// stale-while-revalidate (300 s), within stale-if-error (a day).
async fn stale_on_both(h: &Harness, b: &Beside) {
    assert_eq!(h.get("/products/7").await.cache(), "MISS");
    assert_eq!(b.get("/products/7").await.cache(), "HIT");
    for node in [&h.node, &b.node] {
        node.clock.advance(Duration::from_secs(400));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revalidation_another_node_runs_is_skipped_and_its_page_then_served() {
    let h = Harness::start(Backend::Redis).await;
    let b = h.beside(|_| {}).await;
    assert_eq!(h.get("/products/7").await.cache(), "MISS");
    assert_eq!(b.get("/products/7").await.cache(), "HIT");
    // Both nodes past the page's ttl (60 s), within its stale-while-revalidate (300 s).
    for node in [&h.node, &b.node] {
        node.clock.advance(Duration::from_secs(90));
    }
    h.origin.gate("product_detail").await;
    assert_eq!(h.get("/products/7").await.cache(), "STALE");
    wait_until("A's revalidation at the origin", DEADLINE, || async { h.origin.waiting("product_detail").await == 1 })
        .await;
    assert_eq!(b.get("/products/7").await.cache(), "STALE");
    let skipped = || std::future::ready(n(&b.node.stats.locks.revalidations_skipped) == 1);
    wait_until("B to leave the revalidation to A", DEADLINE, skipped).await;
    h.origin.release("product_detail").await;
    h.settle().await;
    let fresh = b.get("/products/7").await;
    assert_eq!((fresh.cache(), fresh.header("age")), ("HIT", "0"), "A's revalidated page");
    assert_eq!(h.origin.calls("product_detail").await, 2, "the first render and A's revalidation");
    assert_eq!(b.node.pool.stats().rendered.load(Ordering::Relaxed), 0, "B rendered nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_page_may_not_be_stored_hands_the_lock_to_a_waiter() {
    let h = Harness::start(Backend::Redis).await;
    let b = h.beside(|_| {}).await;
    // A 403 page is served, never stored.
    h.origin.update_quietly(30, serde_json::json!({"hidden": true})).await;
    let (first, second) = a_then_b(&h, &b, "product_detail", "/products/30").await;
    b_waits(&b).await;
    h.origin.release("product_detail").await;
    assert_eq!(first.await.unwrap().status, 403);
    let got = second.await.unwrap();
    assert_eq!((got.status, got.cache()), (403, "MISS"), "B rendered it");
    let locks = &b.node.stats.locks;
    assert_eq!((n(&locks.took_over_after_release), n(&locks.waited_and_served)), (1, 0));
    assert_eq!(h.origin.calls("product_detail").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_renders_for_itself_at_its_deadline() {
    // A waits long for the origin and holds its lock long; B's own render would take at most
    // 2 s at the origin plus 1 s in the pool: it waits that long, no longer.
    let h = Harness::start_configured(Backend::Redis, |c| {
        c.origin.timeout = Duration::from_secs(30);
        c.shared.render_lock_ms = Some(60_000);
    })
    .await;
    let b = h
        .beside(|c| {
            c.origin.timeout = Duration::from_secs(2);
            c.pool.render_timeout = Duration::from_secs(1);
        })
        .await;
    let (first, second) = a_then_b(&h, &b, "product_detail", "/products/31").await;
    let gave_up = || std::future::ready(n(&b.node.stats.locks.rendered_after_deadline) == 1);
    wait_until("B's deadline", DEADLINE, gave_up).await;
    wait_until("B's own render at the origin", DEADLINE, || async { h.origin.waiting("product_detail").await == 2 })
        .await;
    h.origin.release("product_detail").await;
    let got = second.await.unwrap();
    assert_eq!((got.status, got.cache()), (200, "MISS"));
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(h.origin.calls("product_detail").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_page_another_node_renders_is_served_whole_from_the_store() {
    let h = Harness::start(Backend::Redis).await;
    let b = h.beside(|_| {}).await;
    let (first, second) = a_then_b(&h, &b, "product_list", "/products-stream").await;
    b_waits(&b).await;
    h.origin.release("product_list").await;
    let streamed = first.await.unwrap();
    let whole = second.await.unwrap();
    assert_eq!((streamed.cache(), whole.cache()), ("MISS", "HIT"));
    assert_eq!(whole.body, streamed.body, "the page A streamed, byte for byte");
    assert!(!whole.header("etag").is_empty() && whole.header("content-length") == whole.body.len().to_string());
    assert_eq!(h.origin.calls("product_list").await, 1);
    assert_eq!(n(&b.node.stats.locks.waited_and_served), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_with_a_stale_page_serves_it_when_the_holders_render_fails() {
    let mut h = Harness::start(Backend::Redis).await;
    let b = h.beside(|_| {}).await;
    stale_on_both(&h, &b).await;
    let (first, second) = a_then_b(&h, &b, "product_detail", "/products/7").await;
    b_waits(&b).await;
    // The origin goes down under A's render: A fails and releases the lock without a page.
    h.origin.stop();
    let got = first.await.unwrap();
    assert_eq!((got.status, got.cache()), (200, "STALE"));
    let got = second.await.unwrap();
    assert_eq!((got.status, got.cache()), (200, "STALE"), "B serves its stale page without a render of its own");
    let locks = &b.node.stats.locks;
    assert_eq!((n(&locks.stale_after_release), n(&locks.took_over_after_release)), (1, 0));
    assert_eq!(b.node.pool.stats().rendered.load(Ordering::Relaxed), 0);
}

/// A fenced write dropped by a purge also releases the lock without a page: a waiter holding
/// a stale page must not serve it then (the purge took it), but render the page afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_never_serves_its_stale_page_once_a_purge_dropped_the_holders_write() {
    let h = Harness::start(Backend::Redis).await;
    let b = h.beside(|_| {}).await;
    stale_on_both(&h, &b).await;
    let (first, second) = a_then_b(&h, &b, "product_detail", "/products/7").await;
    b_waits(&b).await;
    // The product changes while A renders: its purge takes the stale page, and A's write of
    // what it read before is dropped, which releases the lock without a page.
    let id: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r#"{"id": 7}"#).unwrap();
    h.node.store.purge("product_detail", &id, mizan_render::cache::PurgeMode::Hard).await.unwrap();
    h.origin.release("product_detail").await;
    assert_eq!(first.await.unwrap().status, 200);
    let got = second.await.unwrap();
    assert_eq!((got.status, got.cache()), (200, "MISS"), "B rendered the page afresh, not its purged stale page");
    let locks = &b.node.stats.locks;
    assert_eq!(n(&locks.stale_after_release), 0);
    assert_eq!(b.node.pool.stats().rendered.load(Ordering::Relaxed), 1);
}
