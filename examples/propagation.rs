//! Propagation delay of a purge to another node's memory tier: how long after one node's
//! purge returns (and after it was called) a second node's memory stops serving the purged
//! page.
//!
//! Starts its own redis-server on a free loopback port and two memory tiers in front of it
//! (A and B, each with its own connections and purge log reader, as two nodes would have).
//! Each round: A stores a page, B reads it until B's memory serves it, A purges it (awaited),
//! then this thread spins, without sleeping, on B's memory-only lookup (`get_now`) until it no
//! longer serves the page. Reported in microseconds, p50/p90/p99/max, from A's purge
//! returning and from its call; a delay of 0 from the return means B had applied the purge
//! before A's call returned.
//!
//! The rounds run twice: A purging through its tier (the node's path, whose purge also
//! purges A's own memory before it returns, so B has often applied it by then), and A
//! purging through its Redis store alone (the walk and the log append, nothing after: the
//! delay of the log itself).
//!
//! Run with `cargo run --release --example propagation [rounds]` (2000 by default, after 100
//! rounds of warm-up). Everything, Redis included, shares this machine's cores.

use mizan_render::cache::redis::RedisStore;
use mizan_render::cache::tiered::TieredStore;
use mizan_render::cache::{Entry, Meta, PurgeMode, Store, dependency_tags, now_ms};
use mizan_render::testing::RedisServer;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARMUP: usize = 100;

fn id(n: usize) -> Map<String, Value> {
    json!({ "id": n }).as_object().cloned().unwrap_or_default()
}

/// A page of `hot` `n`, recording the generations a render starting now reads.
async fn page(store: &TieredStore, n: usize) -> Entry {
    let generation = store.generations(&dependency_tags([("hot", &id(n))])).await.expect("generations");
    let meta: Meta = serde_json::from_value(json!({
        "v": 1, "kind": "page", "key": format!("mz1:p:{n}"), "status": 200, "headers": [],
        "created_at": now_ms(), "ttl_s": 60, "swr_s": 30, "sie_s": 100,
        "deps": [{"context": "hot", "params": {"id": n}}], "etag": null, "generation": generation
    }))
    .expect("metadata");
    Entry { body: vec![b'x'; 2048].into(), meta }
}

async fn node(url: &str) -> Arc<TieredStore> {
    let redis = RedisStore::connect(url, "bench").await.expect("redis");
    TieredStore::start(Arc::new(redis), 64 << 20).await.expect("tier")
}

fn served(store: &TieredStore, key: &str) -> bool {
    matches!(store.get_now(key), Some(Some(_)))
}

/// One round: the delays from A's purge returning and from its call, and A's purge time.
/// With `direct`, A purges through its Redis store alone (as a node without a tier, or the
/// origin side, would), not through its tier, whose purge also purges A's own memory before
/// it returns.
async fn round(a: &TieredStore, b: &TieredStore, n: usize, direct: bool) -> (Duration, Duration, Duration) {
    let key = format!("mz1:p:{n}");
    a.put(page(a, n).await).await.expect("put");
    while !served(b, &key) {
        b.get(&key).await.expect("get");
    }
    let called = Instant::now();
    if direct {
        a.redis().purge("hot", &id(n), PurgeMode::Hard).await.expect("purge");
    } else {
        a.purge("hot", &id(n), PurgeMode::Hard).await.expect("purge");
    }
    let returned = Instant::now();
    while served(b, &key) {
        std::thread::yield_now();
    }
    let gone = Instant::now();
    (gone - returned, gone - called, returned - called)
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)].as_secs_f64() * 1e6;
    let max = samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e6);
    println!("{what:<36} p50 {:>7.0}  p90 {:>7.0}  p99 {:>7.0}  max {:>7.0}", at(50), at(90), at(99), max);
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2000);
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let (a, b) = (node(&server.url()).await, node(&server.url()).await);
        for n in 0..WARMUP {
            round(&a, &b, n, false).await;
        }
        println!("{rounds} rounds (after {WARMUP} of warm-up), microseconds:");
        for (direct, what) in [(false, "A purges through its tier"), (true, "A purges through its Redis store only")] {
            let (mut from_return, mut from_call, mut purge) = (Vec::new(), Vec::new(), Vec::new());
            let mut before_return = 0;
            let first = WARMUP + usize::from(direct) * rounds;
            for n in first..first + rounds {
                let (r, c, p) = round(&a, &b, n, direct).await;
                before_return += usize::from(r < Duration::from_micros(1));
                from_return.push(r);
                from_call.push(c);
                purge.push(p);
            }
            println!("{what}:");
            report("  B stops serving, from A's return", from_return);
            report("  B stops serving, from A's call", from_call);
            report("  A's purge call itself", purge);
            println!("  B had applied the purge before A's call returned in {before_return} of {rounds} rounds");
        }
        let stats = b.stats();
        assert!(stats.current && stats.resets_gap == 0 && stats.resets_error == 0, "B's tier: {stats:?}");
        println!("B's tier: {stats:?}");
    });
}
