//! The cache conformance suite: every behaviour of docs/protocol.md's cache ABI, run
//! against each backend (memory, SQLite, a real Redis), plus each backend's own faults.

use crate::common::scratch;
use mizan_render::cache::memory::MemoryStore;
use mizan_render::cache::redis::RedisStore;
use mizan_render::cache::sqlite::SqliteStore;
use mizan_render::cache::{CacheError, Dependency, Entry, Freshness, Kind, Meta, PurgeMode, PutOutcome, Store, now_ms};
use mizan_render::testing::RedisServer;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// A store and whatever must live as long as it (a Redis server).
pub struct Backend {
    pub store: Arc<dyn Store>,
    _redis: Option<RedisServer>,
}

pub async fn memory() -> Backend {
    Backend { store: Arc::new(MemoryStore::new(64 << 20)), _redis: None }
}

pub async fn sqlite() -> Backend {
    let path = scratch(&format!("conformance-{}-{}.db", std::process::id(), now_ms()));
    Backend { store: Arc::new(SqliteStore::open(&path, "conformance").unwrap()), _redis: None }
}

pub async fn redis() -> Backend {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "conformance").await.unwrap();
    Backend { store: Arc::new(store), _redis: Some(server) }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn dep(context: &str, params: Value) -> Dependency {
    Dependency { context: context.into(), params: obj(params) }
}

/// A page entry under `key` depending on `deps`, created `age_s` ago with ttl 60, swr 30,
/// sie 100, recording generation 0 for each context.
fn entry(key: &str, deps: Vec<Dependency>, body: &[u8]) -> Entry {
    let generation: std::collections::BTreeMap<String, u64> = deps.iter().map(|d| (d.context.clone(), 0)).collect();
    let meta: Meta = serde_json::from_value(json!({
        "v": 1, "kind": "page", "key": key, "status": 200, "headers": [["content-type", "text/html"]],
        "created_at": now_ms(), "ttl_s": 60, "swr_s": 30, "sie_s": 100,
        "deps": deps, "etag": "\"e1\"", "generation": generation, "x_future": [1, 2]
    }))
    .unwrap();
    Entry { body: bytes::Bytes::copy_from_slice(body), meta }
}

async fn put_ok(store: &dyn Store, e: Entry) {
    assert_eq!(store.put(e).await.unwrap(), PutOutcome::Stored);
}

async fn present(store: &dyn Store, keys: &[&str]) -> Vec<bool> {
    let mut out = Vec::new();
    for k in keys {
        out.push(store.get(k).await.unwrap().is_some());
    }
    out
}

pub async fn round_trip_keeps_body_and_metadata(b: Backend) {
    let s = &*b.store;
    assert_eq!(s.get("mz1:p:none").await.unwrap(), None);
    let e = entry("mz1:p:a", vec![dep("product_detail", json!({"id": 1}))], b"<p>hi</p>");
    put_ok(s, e.clone()).await;
    let got = s.get("mz1:p:a").await.unwrap().unwrap();
    assert_eq!(*got, e);
    assert_eq!(got.meta.extra["x_future"], json!([1, 2]), "unknown fields are kept");
    assert_eq!(got.meta.kind, Kind::Page);
}

pub async fn purge_matches_params_as_a_subset(b: Backend) {
    let s = &*b.store;
    put_ok(s, entry("k1", vec![dep("product_detail", json!({"id": 1}))], b"1")).await;
    put_ok(s, entry("k2", vec![dep("product_detail", json!({"id": 2}))], b"2")).await;
    put_ok(s, entry("k3", vec![dep("product_list", json!({}))], b"3")).await;
    put_ok(s, entry("k4", vec![dep("product_detail", json!({"id": 1})), dep("product_list", json!({}))], b"4")).await;
    put_ok(s, entry("k5", vec![dep("search", json!({"q": "a", "page": 1}))], b"5")).await;
    put_ok(s, entry("k6", vec![dep("search", json!({"q": "a", "page": 2}))], b"6")).await;
    put_ok(s, entry("k7", vec![dep("search", json!({"q": "b", "page": 1}))], b"7")).await;

    assert_eq!(s.purge("product_detail", &obj(json!({"id": 1})), PurgeMode::Hard).await.unwrap(), 2);
    assert_eq!(present(s, &["k1", "k2", "k3", "k4"]).await, [false, true, true, false]);
    assert_eq!(s.purge("search", &obj(json!({"q": "a"})), PurgeMode::Hard).await.unwrap(), 2);
    assert_eq!(present(s, &["k5", "k6", "k7"]).await, [false, false, true]);
    assert_eq!(s.purge("search", &obj(json!({"q": "b", "page": 2})), PurgeMode::Hard).await.unwrap(), 0);
    assert_eq!(s.purge("search", &obj(json!({"q": "b", "page": 1})), PurgeMode::Hard).await.unwrap(), 1);
    // Types matter: the string "2" is not the number 2.
    assert_eq!(s.purge("product_detail", &obj(json!({"id": "2"})), PurgeMode::Hard).await.unwrap(), 0);
    assert_eq!(s.purge("nobody_reads_this", &Map::new(), PurgeMode::Hard).await.unwrap(), 0);
    assert_eq!(present(s, &["k2", "k3"]).await, [true, true]);
}

pub async fn empty_params_purge_the_whole_context(b: Backend) {
    let s = &*b.store;
    for id in 0..10 {
        put_ok(s, entry(&format!("d{id}"), vec![dep("product_detail", json!({"id": id}))], b"x")).await;
    }
    put_ok(s, entry("list", vec![dep("product_list", json!({}))], b"x")).await;
    assert_eq!(s.purge("product_detail", &Map::new(), PurgeMode::Hard).await.unwrap(), 10);
    assert_eq!(present(s, &["d0", "d9", "list"]).await, [false, false, true]);
}

pub async fn a_put_replaces_the_entry_and_its_tags(b: Backend) {
    let s = &*b.store;
    put_ok(s, entry("k", vec![dep("a", json!({"id": 1}))], b"old")).await;
    put_ok(s, entry("k", vec![dep("b", json!({"id": 1}))], b"new")).await;
    assert_eq!(s.purge("a", &Map::new(), PurgeMode::Hard).await.unwrap(), 0, "the old dependency no longer applies");
    assert_eq!(&*s.get("k").await.unwrap().unwrap().body, b"new");
    assert_eq!(s.purge("b", &obj(json!({"id": 1})), PurgeMode::Hard).await.unwrap(), 1);
    // Purged through one of its tags, then put again with other dependencies: the tags it
    // had before do not reach it any more.
    let mut first = entry("m", vec![dep("a", json!({"id": 2})), dep("c", json!({}))], b"1");
    first.meta.generation = s.generations(&["a".to_string(), "c".to_string()]).await.unwrap();
    put_ok(s, first).await;
    assert_eq!(s.purge("a", &obj(json!({"id": 2})), PurgeMode::Hard).await.unwrap(), 1);
    let mut again = entry("m", vec![dep("d", json!({}))], b"2");
    again.meta.generation = s.generations(&["d".to_string()]).await.unwrap();
    put_ok(s, again).await;
    assert_eq!(s.purge("c", &Map::new(), PurgeMode::Hard).await.unwrap(), 0);
    assert_eq!(&*s.get("m").await.unwrap().unwrap().body, b"2");
}

pub async fn a_put_from_a_render_that_started_before_a_purge_is_dropped(b: Backend) {
    let s = &*b.store;
    let contexts = vec!["product_detail".to_string(), "product_list".to_string()];
    let at_start = s.generations(&contexts).await.unwrap();
    assert_eq!(at_start.values().copied().collect::<Vec<_>>(), [0, 0]);
    // A purge lands while the render runs (even one that matched nothing).
    s.purge("product_list", &Map::new(), PurgeMode::Hard).await.unwrap();
    let mut late =
        entry("page", vec![dep("product_detail", json!({"id": 1})), dep("product_list", json!({}))], b"stale");
    late.meta.generation = at_start.clone();
    assert_eq!(s.put(late.clone()).await.unwrap(), PutOutcome::Dropped { context: "product_list".into() });
    assert_eq!(s.get("page").await.unwrap(), None);
    // A render that starts after the purge stores.
    let now = s.generations(&contexts).await.unwrap();
    assert_eq!(now["product_list"], 1);
    late.meta.generation = now;
    put_ok(s, late).await;

    // The same with a single context never purged before (every context reads 0).
    let one = vec!["fresh_context".to_string()];
    let at_start = s.generations(&one).await.unwrap();
    assert_eq!(at_start.len(), 1, "a generation for every context asked, even one never purged");
    s.purge("fresh_context", &obj(json!({"id": 5})), PurgeMode::Hard).await.unwrap();
    let mut late = entry("solo", vec![dep("fresh_context", json!({"id": 5}))], b"stale");
    late.meta.generation = at_start;
    assert_eq!(s.put(late).await.unwrap(), PutOutcome::Dropped { context: "fresh_context".into() });
    assert_eq!(s.get("solo").await.unwrap(), None);
}

pub async fn freshness_windows_follow_the_metadata(b: Backend) {
    let s = &*b.store;
    let now = now_ms();
    for (key, age_s, want) in [
        ("fresh", 10, Freshness::Fresh),
        ("swr", 70, Freshness::StaleWhileRevalidate),
        ("sie", 120, Freshness::StaleIfError),
    ] {
        let mut e = entry(key, vec![dep("c", json!({}))], b"x");
        e.meta.created_at = now - age_s * 1000;
        put_ok(s, e).await;
        let got = s.get(key).await.unwrap().unwrap();
        assert_eq!(got.meta.freshness(now), want, "{key}");
    }
    let mut gone = entry("gone", vec![dep("c", json!({}))], b"x");
    gone.meta.created_at = now - 200_000; // past ttl + swr + sie
    s.put(gone).await.unwrap();
    assert_eq!(s.get("gone").await.unwrap(), None, "an entry no rule can serve is not returned");
}

pub async fn soft_purge_marks_stale_and_hard_purge_removes(b: Backend) {
    let s = &*b.store;
    put_ok(s, entry("p", vec![dep("cart", json!({"user": "u1"}))], b"cart")).await;
    put_ok(s, entry("q", vec![dep("cart", json!({"user": "u2"}))], b"cart")).await;
    let before = now_ms();
    assert_eq!(s.purge("cart", &obj(json!({"user": "u1"})), PurgeMode::Soft).await.unwrap(), 1);
    let got = s.get("p").await.unwrap().unwrap();
    let stale_at = got.meta.stale_at.expect("soft purge sets stale_at");
    assert!(stale_at >= before && stale_at <= now_ms());
    assert_eq!(got.meta.freshness(now_ms()), Freshness::StaleWhileRevalidate);
    assert_eq!(&*got.body, b"cart");
    assert_eq!(s.get("q").await.unwrap().unwrap().meta.stale_at, None);
    // A second soft purge keeps the earlier mark.
    s.purge("cart", &obj(json!({"user": "u1"})), PurgeMode::Soft).await.unwrap();
    assert_eq!(s.get("p").await.unwrap().unwrap().meta.stale_at, Some(stale_at));
    assert_eq!(s.purge("cart", &Map::new(), PurgeMode::Hard).await.unwrap(), 2);
    assert_eq!(present(s, &["p", "q"]).await, [false, false]);
}

pub async fn large_and_binary_bodies_round_trip(b: Backend) {
    let s = &*b.store;
    let large: Vec<u8> = (0..8 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    put_ok(s, entry("large", vec![dep("c", json!({}))], &large)).await;
    assert_eq!(&*s.get("large").await.unwrap().unwrap().body, &large[..]);
    let binary: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    put_ok(s, entry("binary", vec![dep("c", json!({}))], &binary)).await;
    assert_eq!(&*s.get("binary").await.unwrap().unwrap().body, &binary[..]);
    put_ok(s, entry("empty", vec![dep("c", json!({}))], b"")).await;
    assert_eq!(&*s.get("empty").await.unwrap().unwrap().body, b"");
}

pub async fn concurrent_puts_and_purges_lose_and_resurrect_nothing(b: Backend) {
    let store = b.store.clone();
    let contexts = vec!["hot".to_string()];
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let (store, contexts) = (store.clone(), contexts.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                // A render: read the generations, "render", put.
                let generations = store.generations(&contexts).await.unwrap();
                let mut e = entry(&format!("w{writer}-{}", i % 10), vec![dep("hot", json!({"id": i % 10}))], b"v");
                e.meta.generation = generations;
                store.put(e).await.unwrap();
            }
        }));
    }
    for _ in 0..3 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                store.purge("hot", &Map::new(), PurgeMode::Hard).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let current = store.generations(&contexts).await.unwrap()["hot"];
    assert_eq!(current, 45, "every purge moved the generation once");
    for writer in 0..8 {
        for i in 0..10 {
            if let Some(e) = store.get(&format!("w{writer}-{i}")).await.unwrap() {
                assert_eq!(e.meta.generation["hot"], current, "an entry rendered before the last purge survived it");
            }
        }
    }
    // Nothing lost: puts made after the last purge are all stored and readable.
    for writer in 0..8 {
        let mut e = entry(&format!("w{writer}-final"), vec![dep("hot", json!({"id": writer}))], b"final");
        e.meta.generation = store.generations(&contexts).await.unwrap();
        put_ok(&*store, e).await;
        assert!(store.get(&format!("w{writer}-final")).await.unwrap().is_some());
    }
}

pub async fn remove_deletes_one_entry(b: Backend) {
    let s = &*b.store;
    put_ok(s, entry("a", vec![dep("c", json!({}))], b"x")).await;
    put_ok(s, entry("b", vec![dep("c", json!({}))], b"x")).await;
    s.remove("a").await.unwrap();
    assert_eq!(present(s, &["a", "b"]).await, [false, true]);
    assert_eq!(s.purge("c", &Map::new(), PurgeMode::Hard).await.unwrap(), 1);
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod on_memory { $( #[tokio::test(flavor = "multi_thread")] async fn $test() { super::$test(super::memory().await).await } )* }
        mod on_sqlite { $( #[tokio::test(flavor = "multi_thread")] async fn $test() { super::$test(super::sqlite().await).await } )* }
        mod on_redis { $( #[tokio::test(flavor = "multi_thread")] async fn $test() { super::$test(super::redis().await).await } )* }
    };
}

conformance!(
    round_trip_keeps_body_and_metadata,
    purge_matches_params_as_a_subset,
    empty_params_purge_the_whole_context,
    a_put_replaces_the_entry_and_its_tags,
    a_put_from_a_render_that_started_before_a_purge_is_dropped,
    freshness_windows_follow_the_metadata,
    soft_purge_marks_stale_and_hard_purge_removes,
    large_and_binary_bodies_round_trip,
    concurrent_puts_and_purges_lose_and_resurrect_nothing,
    remove_deletes_one_entry,
);

// Faults of each backend.

#[tokio::test]
async fn memory_store_stays_within_its_byte_bound_and_forgets_evicted_tags() {
    let store = MemoryStore::new(1 << 20);
    for i in 0..100 {
        let e = entry(&format!("k{i}"), vec![dep("c", json!({"id": i}))], &vec![7u8; 64 << 10]);
        store.put(e).await.unwrap();
    }
    assert!(store.weighted_size() <= 1 << 20, "{} bytes held", store.weighted_size());
    // One more put drains the evictions into the index.
    store.put(entry("last", vec![dep("d", json!({}))], b"x")).await.unwrap();
    assert!(store.tag_count() < 2 * 20, "tags of evicted entries are dropped: {}", store.tag_count());
    assert_eq!(store.purge("c", &Map::new(), PurgeMode::Hard).await.unwrap() as usize, (1 << 20) / (64 << 10) - 1);
}

#[tokio::test]
async fn sqlite_store_survives_a_restart() {
    let path = scratch(&format!("restart-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    {
        let store = SqliteStore::open(&path, "shop").unwrap();
        put_ok(&store, entry("kept", vec![dep("c", json!({"id": 1}))], b"body")).await;
        store.purge("other", &Map::new(), PurgeMode::Hard).await.unwrap();
    }
    let store = SqliteStore::open(&path, "shop").unwrap();
    assert_eq!(&*store.get("kept").await.unwrap().unwrap().body, b"body");
    assert_eq!(store.generations(&["other".into()]).await.unwrap()["other"], 1, "generations persist too");
    assert_eq!(store.purge("c", &obj(json!({"id": 1})), PurgeMode::Hard).await.unwrap(), 1);
}

#[tokio::test]
async fn sqlite_drops_a_damaged_entry_and_keeps_the_rest() {
    let path = scratch(&format!("damaged-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let store = SqliteStore::open(&path, "shop").unwrap();
    put_ok(&store, entry("good", vec![dep("c", json!({}))], b"ok")).await;
    put_ok(&store, entry("bad", vec![dep("c", json!({}))], b"ok")).await;
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE entries SET meta = '{not json' WHERE key = 'bad'", []).unwrap();
    assert_eq!(store.get("bad").await.unwrap(), None);
    let left: i64 = raw.query_row("SELECT COUNT(*) FROM entries WHERE key = 'bad'", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 0, "the damaged row is removed");
    assert!(store.get("good").await.unwrap().is_some());
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_with_its_path() {
    let path = scratch(&format!("garbage-{}.db", std::process::id()));
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(&path, "shop").err().unwrap();
    assert!(matches!(err, CacheError::Corrupt { store: "sqlite", .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("not a database"), "{text}");
}

#[tokio::test]
async fn redis_drops_a_damaged_entry() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "shop").await.unwrap();
    put_ok(&store, entry("mz1:p:good", vec![dep("c", json!({}))], b"ok")).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    // Entry `mz1:p:<k>` of site `shop` lives under `mz1:shop:p:<k>`.
    let damaged = b"\x00\x00\x00\x07garbagebody".as_slice();
    let _: () = redis::cmd("SET").arg("mz1:shop:p:bad").arg(damaged).query_async(&mut raw).await.unwrap();
    assert_eq!(store.get("mz1:p:bad").await.unwrap(), None);
    let exists: bool = redis::cmd("EXISTS").arg("mz1:shop:p:bad").query_async(&mut raw).await.unwrap();
    assert!(!exists, "the damaged entry is removed");
    // A key of another type under an entry's name reads as a miss, and a put replaces it.
    let _: () = redis::cmd("HSET").arg("mz1:shop:p:wrong").arg("f").arg("v").query_async(&mut raw).await.unwrap();
    assert_eq!(store.get("mz1:p:wrong").await.unwrap(), None);
    put_ok(&store, entry("mz1:p:wrong", vec![dep("c", json!({}))], b"fixed")).await;
    assert_eq!(&*store.get("mz1:p:wrong").await.unwrap().unwrap().body, b"fixed");
    assert!(store.get("mz1:p:good").await.unwrap().is_some());
}

#[tokio::test]
async fn redis_going_away_fails_fast_and_recovers_when_it_returns() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "shop").await.unwrap();
    put_ok(&store, entry("k", vec![dep("c", json!({}))], b"x")).await;
    server.kill();
    let err = store.get("k").await.unwrap_err();
    assert!(matches!(err, CacheError::Unavailable { store: "redis", .. }), "{err:?}");
    assert!(store.purge("c", &Map::new(), PurgeMode::Hard).await.is_err());
    server.restart();
    // The connection manager reconnects on the next calls; bounded, not timed.
    let mut recovered = false;
    for _ in 0..50 {
        if store.get("k").await.is_ok() {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the store did not recover after Redis came back");
    put_ok(&store, entry("k2", vec![dep("c", json!({}))], b"y")).await;
    assert_eq!(&*store.get("k2").await.unwrap().unwrap().body, b"y");
}

// Sites sharing one backend: the manifests of two sites ("shop" and "blog") on one Redis or
// one SQLite file. Their page keys differ (the site is in the HMAC), but their data keys, their
// tags and their contexts do not, and a purge of one must never reach the other.

/// The same protocol keys (a page key and a data key, as if both sites derived them with one
/// secret) with the same dependencies, put by both sites; then purges and a remove by `shop`.
async fn sites_sharing_a_backend_never_touch_each_other(shop: &dyn Store, blog: &dyn Store) {
    const PAGE: &str = "mz1:p:5e1f0a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7";
    const DATA: &str = "mz1:d:9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9";
    let contexts = vec!["product_detail".to_string(), "product_list".to_string()];
    let page =
        |body: &[u8]| entry(PAGE, vec![dep("product_detail", json!({"id": 1})), dep("product_list", json!({}))], body);
    let data = |body: &[u8]| {
        let mut e = entry(DATA, vec![dep("product_detail", json!({"id": 1}))], body);
        e.meta.kind = Kind::Data;
        e
    };
    for (store, body) in [(shop, b"shop"), (blog, b"blog")] {
        put_ok(store, page(body)).await;
        put_ok(store, data(body)).await;
    }
    let body = |e: Option<Arc<Entry>>| e.map(|e| e.body.to_vec());
    // Same keys, separate entries.
    assert_eq!(body(shop.get(PAGE).await.unwrap()), Some(b"shop".to_vec()));
    assert_eq!(body(blog.get(PAGE).await.unwrap()), Some(b"blog".to_vec()));
    assert_eq!(body(blog.get(DATA).await.unwrap()), Some(b"blog".to_vec()));
    let blog_before = blog.generations(&contexts).await.unwrap();
    assert_eq!(blog_before.values().copied().collect::<Vec<_>>(), [0, 0]);

    // The attack: shop purges `product_detail;id=1`.
    assert_eq!(shop.purge("product_detail", &obj(json!({"id": 1})), PurgeMode::Hard).await.unwrap(), 2);
    assert_eq!(present(shop, &[PAGE, DATA]).await, [false, false]);
    assert_eq!(body(blog.get(PAGE).await.unwrap()), Some(b"blog".to_vec()), "shop's purge removed blog's page");
    assert_eq!(body(blog.get(DATA).await.unwrap()), Some(b"blog".to_vec()), "shop's purge removed blog's data");
    assert_eq!(blog.generations(&contexts).await.unwrap(), blog_before, "shop's purge moved blog's generations");
    assert_eq!(shop.generations(&contexts).await.unwrap()["product_detail"], 1);
    // A blog render that started before shop's purge still stores.
    let mut late = page(b"blog again");
    late.meta.generation = blog_before.clone();
    put_ok(blog, late).await;

    // Soft and whole-context purges, and a remove, by shop: nothing of blog's moves either.
    put_ok(shop, {
        let mut e = page(b"shop again");
        e.meta.generation = shop.generations(&contexts).await.unwrap();
        e
    })
    .await;
    assert_eq!(shop.purge("product_list", &Map::new(), PurgeMode::Soft).await.unwrap(), 1);
    assert!(shop.get(PAGE).await.unwrap().unwrap().meta.stale_at.is_some());
    assert_eq!(blog.get(PAGE).await.unwrap().unwrap().meta.stale_at, None, "shop's soft purge marked blog's page");
    shop.remove(PAGE).await.unwrap();
    assert_eq!(shop.purge("product_detail", &Map::new(), PurgeMode::Hard).await.unwrap(), 0);
    assert_eq!(present(blog, &[PAGE, DATA]).await, [true, true]);
    assert_eq!(blog.generations(&contexts).await.unwrap(), blog_before);

    // Blog's own tags are intact: its purge finds both of its entries, and nothing of shop's.
    put_ok(shop, {
        let mut e = data(b"shop");
        e.meta.generation = shop.generations(&["product_detail".to_string()]).await.unwrap();
        e
    })
    .await;
    assert_eq!(blog.purge("product_detail", &obj(json!({"id": 1})), PurgeMode::Hard).await.unwrap(), 2);
    assert_eq!(present(blog, &[PAGE, DATA]).await, [false, false]);
    assert_eq!(body(shop.get(DATA).await.unwrap()), Some(b"shop".to_vec()), "blog's purge removed shop's data");
    assert_eq!(shop.generations(&contexts).await.unwrap().values().copied().collect::<Vec<_>>(), [2, 1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sites_sharing_one_server_never_purge_each_other() {
    let server = RedisServer::start();
    let shop = RedisStore::connect(&server.url(), "shop").await.unwrap();
    let blog = RedisStore::connect(&server.url(), "blog").await.unwrap();
    sites_sharing_a_backend_never_touch_each_other(&shop, &blog).await;
    // Every key either site wrote is under its prefix `mz1:<site>:`.
    put_ok(&shop, entry("mz1:p:layout", vec![dep("cart", json!({"user": "u1"}))], b"x")).await;
    shop.purge("cart", &obj(json!({"user": "u2"})), PurgeMode::Soft).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut raw).await.unwrap();
    keys.sort();
    assert!(keys.iter().all(|k| k.starts_with("mz1:shop:") || k.starts_with("mz1:blog:")), "{keys:?}");
    for key in [
        "mz1:shop:p:layout",
        "mz1:shop:k:p:layout",
        "mz1:shop:t:c:cart",
        "mz1:shop:t:c:cart:user=\"u1\"",
        "mz1:shop:gen",
        "mz1:blog:gen",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_sites_sharing_one_file_never_purge_each_other() {
    let path = scratch(&format!("shared-{}-{}.db", std::process::id(), now_ms()));
    let shop = SqliteStore::open(&path, "shop").unwrap();
    let blog = SqliteStore::open(&path, "blog").unwrap();
    sites_sharing_a_backend_never_touch_each_other(&shop, &blog).await;
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 2);
    let sites: Vec<String> = raw
        .prepare("SELECT DISTINCT site FROM generations ORDER BY site")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sites, ["blog", "shop"]);
}

#[tokio::test]
async fn a_site_that_cannot_namespace_keys_is_refused() {
    let path = scratch(&format!("bad-site-{}-{}.db", std::process::id(), now_ms()));
    for site in ["shop:blog", "my shop", "", "shop/x", "mz1:*", "caf\u{e9}"] {
        let err = SqliteStore::open(&path, site).err().unwrap();
        assert!(matches!(&err, CacheError::Site(s) if s == site), "{site:?}: {err:?}");
        assert!(err.to_string().contains("A-Z a-z 0-9 _ . -"), "{err}");
        // Refused before any connection is tried (nothing listens on port 1).
        let err = RedisStore::connect("redis://127.0.0.1:1/", site).await.err().unwrap();
        assert!(matches!(&err, CacheError::Site(s) if s == site), "{site:?}: {err:?}");
    }
    for site in ["shop", "my-shop.example_2", "A.b-C_9"] {
        SqliteStore::open(&path, site).unwrap();
    }
}

#[tokio::test]
async fn a_sqlite_file_of_schema_version_1_is_refused_with_its_path() {
    let path = scratch(&format!("v1-{}-{}.db", std::process::id(), now_ms()));
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch("CREATE TABLE entries (key TEXT PRIMARY KEY); PRAGMA user_version = 1;").unwrap();
    drop(raw);
    let err = SqliteStore::open(&path, "shop").err().unwrap();
    assert!(matches!(err, CacheError::Corrupt { store: "sqlite", .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("schema version 1"), "{text}");
}
