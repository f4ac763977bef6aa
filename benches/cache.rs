//! Cache benchmark: get (hit) and purge on each backend, with 100 000 entries and a purge
//! that matches 1 % of them (1 000 entries). Redis is a real `redis-server` started here.
//!
//! Run with `cargo bench --bench cache` (or `bench/run.sh`).

use mizan_render::cache::memory::MemoryStore;
use mizan_render::cache::redis::RedisStore;
use mizan_render::cache::sqlite::SqliteStore;
use mizan_render::cache::{Entry, Meta, PurgeMode, Store, now_ms};
use mizan_render::testing::RedisServer;
use serde_json::{Map, json};
use std::sync::Arc;
use std::time::Instant;

const ENTRIES: usize = 100_000;
const GETS: usize = 100_000;
const PURGES: usize = 10;

fn entry(i: usize) -> Entry {
    let meta: Meta = serde_json::from_value(json!({
        "v": 1, "kind": "page", "key": format!("mz1:p:{i:064x}"), "status": 200,
        "headers": [["content-type", "text/html; charset=utf-8"]],
        "created_at": now_ms(), "ttl_s": 3600, "swr_s": 60, "sie_s": 600,
        "deps": [{"context": "product_detail", "params": {"id": i % 100}}, {"context": "product_list", "params": {}}],
        "etag": format!("\"{i:x}\""), "generation": {"product_detail": 0, "product_list": 0}
    }))
    .unwrap();
    Entry { body: vec![b'x'; 2048].into(), meta }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn bench(name: &str, store: Arc<dyn Store>) {
    let t = Instant::now();
    for i in 0..ENTRIES {
        store.put(entry(i)).await.unwrap();
    }
    let fill = t.elapsed().as_secs_f64();

    let mut lat = Vec::with_capacity(GETS);
    let t = Instant::now();
    let mut x = 12345usize;
    for _ in 0..GETS {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let key = format!("mz1:p:{:064x}", (x >> 33) % ENTRIES);
        let s = Instant::now();
        assert!(store.get(&key).await.unwrap().is_some());
        lat.push(s.elapsed().as_secs_f64() * 1e6);
    }
    let gets_per_s = GETS as f64 / t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);

    let mut purge = Vec::new();
    for id in 0..PURGES {
        let params: Map<_, _> = json!({"id": id}).as_object().unwrap().clone();
        let s = Instant::now();
        let n = store.purge("product_detail", &params, PurgeMode::Hard).await.unwrap();
        purge.push(s.elapsed().as_secs_f64() * 1e3);
        assert_eq!(n as usize, ENTRIES / 100);
    }
    purge.sort_by(f64::total_cmp);

    // Reads right after the purges (the memory store evicts purged entries lazily).
    let mut after = Vec::with_capacity(GETS);
    for _ in 0..GETS {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let i = (x >> 33) % ENTRIES;
        let key = format!("mz1:p:{i:064x}");
        let s = Instant::now();
        let got = store.get(&key).await.unwrap();
        after.push(s.elapsed().as_secs_f64() * 1e6);
        assert_eq!(got.is_some(), i % 100 >= PURGES, "purged entries are gone, others stay");
    }
    after.sort_by(f64::total_cmp);
    println!(
        "| {name} | {:.0} puts/s | {gets_per_s:.0} gets/s | {:.1} µs | {:.1} µs | {:.2} ms | {:.2} ms | {:.0} entries/s | {:.1} µs / {:.1} µs |",
        ENTRIES as f64 / fill,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&purge, 0.5),
        purge[purge.len() - 1],
        (ENTRIES / 100) as f64 / (percentile(&purge, 0.5) / 1e3),
        percentile(&after, 0.5),
        percentile(&after, 0.99),
    );
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "{ENTRIES} entries (2 KiB bodies, 3 tags each); gets of random present keys; purges of 1 % ({} entries)",
        ENTRIES / 100
    );
    println!(
        "| store | fill | get | get p50 | get p99 | purge 1k p50 | purge 1k max of {PURGES} | purge rate | get p50 / p99 after the purges |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // MIZAN_BENCH_STORES=memory,redis runs a subset.
    let only = std::env::var("MIZAN_BENCH_STORES").unwrap_or_else(|_| "memory,sqlite,redis".into());
    let wanted = |name: &str| only.split(',').any(|s| s == name);
    tokio.block_on(async {
        if wanted("memory") {
            bench("memory", Arc::new(MemoryStore::new(1 << 30))).await;
        }
        if wanted("sqlite") {
            let path = std::env::temp_dir().join(format!("mizan-bench-{}.db", std::process::id()));
            bench("sqlite", Arc::new(SqliteStore::open(&path, "bench").unwrap())).await;
            let _ = std::fs::remove_file(&path);
        }
        if wanted("redis") {
            let server = RedisServer::start();
            bench("redis", Arc::new(RedisStore::connect(&server.url(), "bench").await.unwrap())).await;
        }
    });
}
