//! The cache conformance suite: every behaviour of docs/protocol.md's cache ABI, run
//! against each backend (memory, SQLite, a real Redis, a three-master Redis Cluster), plus
//! each backend's own faults, render locks, and how a site's keys spread over a cluster.

use crate::common::{DEADLINE, scratch_db, wait_until};
use mizan_cache::memory::MemoryStore;
use mizan_cache::meta::purge_tags;
use mizan_cache::redis::names::bucket;
use mizan_cache::redis::{BUCKETS, RedisStore};
use mizan_cache::sqlite::SqliteStore;
use mizan_cache::testing::{RedisCluster, RedisServer};
use mizan_cache::{
    CacheError, Dependency, Entry, Freshness, Generations, Kind, LockOutcome, Meta, PurgeMode, PutOutcome, Store,
    now_ms,
};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

/// A store and whatever must live as long as it (a Redis server, a cluster).
pub struct Backend {
    pub store: Arc<dyn Store>,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

pub async fn memory() -> Backend {
    Backend { store: Arc::new(MemoryStore::new(64 << 20)), _redis: None, _cluster: None }
}

pub async fn sqlite() -> Backend {
    let path = scratch_db("conformance");
    Backend { store: Arc::new(SqliteStore::open(&path, "conformance").unwrap()), _redis: None, _cluster: None }
}

pub async fn redis() -> Backend {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "conformance").await.unwrap();
    Backend { store: Arc::new(store), _redis: Some(server), _cluster: None }
}

/// A cluster of its own per test (each test runs in a process of its own under nextest).
pub async fn redis_cluster() -> Backend {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    let store = RedisStore::connect(&cluster.url(), "conformance").await.unwrap();
    Backend { store: Arc::new(store), _redis: None, _cluster: Some(cluster) }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn dep(context: &str, params: Value) -> Dependency {
    Dependency { context: context.into(), params: obj(params) }
}

/// A page entry under `key` depending on `deps`, created now with ttl 60, swr 30, sie 100,
/// recording generation 0 for each of its tags (a render in a store where none was purged).
fn entry(key: &str, deps: Vec<Dependency>, body: &[u8]) -> Entry {
    let mut meta: Meta = serde_json::from_value(json!({
        "v": 1, "kind": "page", "key": key, "status": 200, "headers": [["content-type", "text/html"]],
        "created_at": now_ms(), "ttl_s": 60, "swr_s": 30, "sie_s": 100,
        "deps": deps, "etag": "\"e1\"", "generation": {}, "x_future": [1, 2]
    }))
    .unwrap();
    meta.generation = meta.tags().into_iter().map(|t| (t, 0)).collect();
    Entry { body: bytes::Bytes::copy_from_slice(body), meta }
}

/// `e`, recording the generations its render would read now.
async fn rendered_now(store: &dyn Store, mut e: Entry) -> Entry {
    e.meta.generation = store.generations(&e.meta.tags()).await.unwrap();
    e
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
    let first = entry("m", vec![dep("a", json!({"id": 2})), dep("c", json!({}))], b"1");
    put_ok(s, rendered_now(s, first).await).await;
    assert_eq!(s.purge("a", &obj(json!({"id": 2})), PurgeMode::Hard).await.unwrap(), 1);
    let again = entry("m", vec![dep("d", json!({}))], b"2");
    put_ok(s, rendered_now(s, again).await).await;
    assert_eq!(s.purge("c", &Map::new(), PurgeMode::Hard).await.unwrap(), 0);
    assert_eq!(&*s.get("m").await.unwrap().unwrap().body, b"2");
}

pub async fn a_put_from_a_render_that_started_before_a_purge_is_dropped(b: Backend) {
    let s = &*b.store;
    let deps = || vec![dep("product_detail", json!({"id": 1})), dep("product_list", json!({}))];
    let late = rendered_now(s, entry("page", deps(), b"stale")).await;
    let tags = ["c:product_detail", "c:product_detail:id=1", "c:product_list"];
    assert_eq!(late.meta.generation, tags.iter().map(|t| (t.to_string(), 0)).collect::<Generations>());
    // A purge lands while the render runs (even one that matched nothing).
    s.purge("product_list", &Map::new(), PurgeMode::Hard).await.unwrap();
    assert_eq!(s.put(late.clone()).await.unwrap(), PutOutcome::Dropped { tag: "c:product_list".into() });
    assert_eq!(s.get("page").await.unwrap(), None);
    // A render that starts after the purge stores.
    let now = rendered_now(s, late).await;
    assert!(now.meta.generation["c:product_list"] > 0);
    put_ok(s, now).await;

    // The same with a single context never purged before (every tag reads 0).
    let late = rendered_now(s, entry("solo", vec![dep("fresh_context", json!({"id": 5}))], b"stale")).await;
    assert_eq!(late.meta.generation.len(), 2, "a generation for every tag asked, even one never purged");
    s.purge("fresh_context", &obj(json!({"id": 5})), PurgeMode::Hard).await.unwrap();
    assert_eq!(s.put(late).await.unwrap(), PutOutcome::Dropped { tag: "c:fresh_context:id=5".into() });
    assert_eq!(s.get("solo").await.unwrap(), None);
}

/// Generations are as precise as purges: a purge of one product drops only the writes of
/// renders that read that product (a purge of the whole context, all of them), so steady
/// purges of single products do not starve the writes of the others.
pub async fn a_purge_drops_only_the_writes_it_matches(b: Backend) {
    let s = &*b.store;
    let product = |id: u64| entry(&format!("p{id}"), vec![dep("product_detail", json!({"id": id}))], b"page");
    let mut renders = Vec::new();
    for id in 1..=3 {
        renders.push(rendered_now(s, product(id)).await);
    }
    // Several params: a render depending on both reads both tags.
    let both = entry("both", vec![dep("search", json!({"q": "a", "page": 2}))], b"page");
    let both = rendered_now(s, both).await;
    let other_page = rendered_now(s, entry("other", vec![dep("search", json!({"q": "a", "page": 3}))], b"x")).await;
    s.purge("product_detail", &obj(json!({"id": 2})), PurgeMode::Hard).await.unwrap();
    s.purge("search", &obj(json!({"q": "a", "page": 2})), PurgeMode::Hard).await.unwrap();
    let outcomes: Vec<PutOutcome> = futures_util::future::join_all(renders.into_iter().map(|e| s.put(e)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        outcomes,
        [PutOutcome::Stored, PutOutcome::Dropped { tag: "c:product_detail:id=2".into() }, PutOutcome::Stored]
    );
    assert!(matches!(s.put(both).await.unwrap(), PutOutcome::Dropped { .. }));
    // A purge naming several params moves each of its tags: it may drop a write it would not
    // have purged (`page` 3 shares `q`), never keep one it would have.
    let _ = s.put(other_page).await.unwrap();
    // A whole-context purge drops every write of the context.
    let late = rendered_now(s, product(4)).await;
    s.purge("product_detail", &Map::new(), PurgeMode::Hard).await.unwrap();
    assert_eq!(s.put(late).await.unwrap(), PutOutcome::Dropped { tag: "c:product_detail".into() });
    assert_eq!(present(s, &["p1", "p2", "p3", "p4"]).await, [false; 4], "the whole-context purge took p1 and p3");
}

/// An entry's tags may have recorded different generations (a purge moved one of them before
/// its render read them): a purge naming several params still finds it through each tag.
pub async fn a_purge_of_several_params_matches_tags_that_recorded_different_generations(b: Backend) {
    let s = &*b.store;
    s.purge("search", &obj(json!({"q": "a"})), PurgeMode::Hard).await.unwrap();
    let e = rendered_now(s, entry("k", vec![dep("search", json!({"q": "a", "page": 1}))], b"x")).await;
    assert!(e.meta.generation["c:search:q=\"a\""] > e.meta.generation["c:search:page=1"]);
    put_ok(s, e).await;
    assert_eq!(s.purge("search", &obj(json!({"q": "a", "page": 1})), PurgeMode::Soft).await.unwrap(), 1);
    assert!(s.get("k").await.unwrap().unwrap().meta.stale_at.is_some());
    assert_eq!(s.purge("search", &obj(json!({"page": 1, "q": "a"})), PurgeMode::Hard).await.unwrap(), 1);
    assert_eq!(s.get("k").await.unwrap(), None);
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

/// Writers render and put while purgers purge, all at once; every put's outcome is kept.
/// Each context is purged by one purger, in sequence, which records the generations each purge
/// moved its tags to. A stored put committed before every purge whose generation of a tag it
/// recorded is newer than the recorded one, and after the others (the store makes the
/// generation check and the write atomic with respect to purges). So which purges ran after
/// each stored entry is known, and the store's final content is too: the last entry stored
/// under each key is present, whole, if no later purge matched it, and gone if one did.
pub async fn concurrent_puts_and_purges_lose_and_resurrect_nothing(b: Backend) {
    const WRITERS: usize = 8;
    const PUTS: usize = 40;
    const KEYS: usize = 8;
    const MAX_PURGES: u64 = 100;
    let store = b.store.clone();
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, finished) = (store.clone(), finished.clone());
            tokio::spawn(async move {
                let mut puts = Vec::new();
                for i in 0..PUTS {
                    let k = i % KEYS;
                    // Odd keys depend on `a` only; even keys on `a` and on `b`, with a `b` param
                    // that changes as the key is written again (the put replaces the tags).
                    let mut deps = vec![dep("a", json!({"id": k % 4}))];
                    if k.is_multiple_of(2) {
                        deps.push(dep("b", json!({"id": (i / KEYS) % 3})));
                    }
                    // A render: read the generations, let the others run, put.
                    let e = entry(&format!("w{writer}-{k}"), deps, format!("writer {writer} put {i}").as_bytes());
                    let e = rendered_now(&*store, e).await;
                    tokio::task::yield_now().await;
                    let outcome = store.put(e.clone()).await.unwrap();
                    puts.push((e, outcome));
                }
                finished.fetch_add(1, SeqCst);
                puts
            })
        })
        .collect();
    // Each purger purges its context until the first writer is done (so that the others' last
    // entries outlive every concurrent purge), then once more after the last put: a purge that
    // must remove exactly the entries it matches, and leave the rest.
    let purgers: Vec<_> = [("a", 4), ("b", 3)]
        .into_iter()
        .map(|(context, ids)| {
            let (store, finished) = (store.clone(), finished.clone());
            tokio::spawn(async move {
                // `done[n - 1]`: the params of purge `n` and the generations it moved its tags
                // to (no other purge moves them: each context has one purger); every tenth
                // purges the whole context.
                let mut done = Vec::new();
                let purge = |params: Map<String, Value>| {
                    let store = store.clone();
                    async move {
                        store.purge(context, &params, PurgeMode::Hard).await.unwrap();
                        let moved = store.generations(&purge_tags(context, &params)).await.unwrap();
                        (params, moved)
                    }
                };
                let mut n = 0;
                while finished.load(SeqCst) == 0 && n < MAX_PURGES {
                    n += 1;
                    let params = if n.is_multiple_of(10) { Map::new() } else { obj(json!({"id": n % ids})) };
                    done.push(purge(params).await);
                    // Fewer purges than puts, so that some entries outlive them.
                    for _ in 0..4 {
                        tokio::task::yield_now().await;
                    }
                }
                wait_until("every writer to finish", DEADLINE, || std::future::ready(finished.load(SeqCst) == WRITERS))
                    .await;
                done.push(purge(obj(json!({"id": 1}))).await);
                (context.to_string(), done)
            })
        })
        .collect();
    let mut puts = Vec::new();
    for writer in writers {
        puts.push(writer.await.unwrap());
    }
    let mut purges = std::collections::BTreeMap::new();
    for purger in purgers {
        let (context, done) = purger.await.unwrap();
        purges.insert(context, done);
    }

    // Each purge moved its tags past what the one before it left.
    for (context, done) in &purges {
        let mut last = Generations::new();
        for (n, (params, moved)) in done.iter().enumerate() {
            for (tag, g) in moved {
                assert!(last.get(tag).is_none_or(|before| g > before), "purge {} of {context} ({params:?})", n + 1);
                last.insert(tag.clone(), *g);
            }
        }
    }
    let matches = |d: &Dependency, params: &Map<String, Value>| params.iter().all(|(k, v)| d.params.get(k) == Some(v));
    let (mut stored, mut present, mut purged) = (0, 0, 0);
    for (writer, puts) in puts.iter().enumerate() {
        for (e, outcome) in puts {
            match outcome {
                PutOutcome::Stored => stored += 1,
                PutOutcome::Dropped { tag } => {
                    let now = store.generations(std::slice::from_ref(tag)).await.unwrap()[tag];
                    assert!(
                        e.meta.generation.get(tag).is_some_and(|g| *g < now),
                        "a put dropped for {tag}, which it does not carry or which was never purged after it read it"
                    )
                }
                PutOutcome::Superseded => panic!("a put without a render lock was superseded"),
            }
        }
        for k in 0..KEYS {
            let key = format!("w{writer}-{k}");
            let got = store.get(&key).await.unwrap();
            // A key is written by one writer, in order: the last stored put is the entry.
            let Some((last, _)) = puts.iter().rev().find(|(e, o)| e.meta.key == key && *o == PutOutcome::Stored) else {
                assert!(got.is_none(), "{key}: no put was stored, yet it is present");
                continue;
            };
            // The first purge that matched it and moved a tag past what its render read.
            let purged_by = last.meta.deps.iter().find_map(|d| {
                purges[&d.context]
                    .iter()
                    .position(|(params, moved)| {
                        matches(d, params) && moved.iter().any(|(tag, g)| last.meta.generation.get(tag) < Some(g))
                    })
                    .map(|i| (&d.context, i + 1))
            });
            match (purged_by, got) {
                (None, Some(got)) => {
                    present += 1;
                    assert_eq!(got.body, last.body, "{key}: not the last entry stored");
                    assert_eq!(got.meta.generation, last.meta.generation, "{key}");
                    assert_eq!(got.meta.deps, last.meta.deps, "{key}");
                }
                (None, None) => panic!(
                    "{key}: lost: {:?} was stored under generations {:?} and no later purge matched it",
                    String::from_utf8_lossy(&last.body),
                    last.meta.generation
                ),
                (Some(_), None) => purged += 1,
                (Some((context, n)), Some(got)) => panic!(
                    "{key}: resurrected: {:?} (stored under generations {:?}) was matched by purge {n} of {context} \
                     ({:?}), yet {:?} is served",
                    String::from_utf8_lossy(&last.body),
                    last.meta.generation,
                    purges[context][n - 1].0,
                    String::from_utf8_lossy(&got.body)
                ),
            }
        }
    }
    assert!(stored > 0 && present + purged > 0, "{stored} puts stored, {present} entries present, {purged} purged");
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
        mod on_redis_cluster { $( #[tokio::test(flavor = "multi_thread")] async fn $test() { super::$test(super::redis_cluster().await).await } )* }
    };
}

conformance!(
    round_trip_keeps_body_and_metadata,
    purge_matches_params_as_a_subset,
    empty_params_purge_the_whole_context,
    a_put_replaces_the_entry_and_its_tags,
    a_put_from_a_render_that_started_before_a_purge_is_dropped,
    a_purge_drops_only_the_writes_it_matches,
    a_purge_of_several_params_matches_tags_that_recorded_different_generations,
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
    let path = scratch_db("restart");
    {
        let store = SqliteStore::open(&path, "shop").unwrap();
        put_ok(&store, entry("kept", vec![dep("c", json!({"id": 1}))], b"body")).await;
        store.purge("other", &Map::new(), PurgeMode::Hard).await.unwrap();
    }
    let store = SqliteStore::open(&path, "shop").unwrap();
    assert_eq!(&*store.get("kept").await.unwrap().unwrap().body, b"body");
    assert!(store.generations(&["c:other".into()]).await.unwrap()["c:other"] > 0, "generations persist too");
    assert_eq!(store.purge("c", &obj(json!({"id": 1})), PurgeMode::Hard).await.unwrap(), 1);
}

#[tokio::test]
async fn sqlite_drops_a_damaged_entry_and_keeps_the_rest() {
    let path = scratch_db("damaged");
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

/// Another connection holds the write lock (an EXCLUSIVE transaction, with changes it never
/// commits). The store's reads go on (WAL) and see only committed rows; a write waits out the
/// busy timeout and fails as Unavailable, naming the file, having changed nothing; once the
/// lock goes, writes land again.
#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_file_locked_by_another_connection_refuses_writes_keeps_reads_and_recovers() {
    let path = scratch_db("locked");
    let store = SqliteStore::open(&path, "shop").unwrap();
    store.purge("c", &obj(json!({"id": 1})), PurgeMode::Hard).await.unwrap();
    let kept = rendered_now(&store, entry("kept", vec![dep("c", json!({"id": 1}))], b"kept")).await;
    put_ok(&store, kept.clone()).await;
    let id1 = || vec!["c:c:id=1".to_string()];
    let generation = store.generations(&id1()).await.unwrap();

    let locker = rusqlite::Connection::open(&path).unwrap();
    locker
        .execute_batch(
            "BEGIN EXCLUSIVE; UPDATE entries SET body = CAST('poisoned' AS BLOB); DELETE FROM tag_generations;",
        )
        .unwrap();
    assert_eq!(*store.get("kept").await.unwrap().unwrap(), kept, "the committed entry, not the locker's change");
    assert_eq!(store.generations(&id1()).await.unwrap(), generation);
    let started = std::time::Instant::now();
    let purge = tokio::time::timeout(DEADLINE, store.purge("c", &obj(json!({"id": 1})), PurgeMode::Hard))
        .await
        .expect("a purge of a locked file never returned");
    let err = purge.expect_err("a purge landed in a file another connection holds locked");
    let waited = started.elapsed();
    let CacheError::Unavailable { store: "sqlite", message } = &err else { panic!("{err:?}") };
    assert!(message.contains("locked"), "{message}");

    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert_eq!(*store.get("kept").await.unwrap().unwrap(), kept, "the failed purge removed nothing");
    assert_eq!(store.generations(&id1()).await.unwrap(), generation, "nor moved the generation");
    assert_eq!(store.purge("c", &obj(json!({"id": 1})), PurgeMode::Hard).await.unwrap(), 1);
    assert!(store.generations(&id1()).await.unwrap()["c:c:id=1"] > generation["c:c:id=1"]);
    let again = rendered_now(&store, entry("again", vec![dep("c", json!({"id": 1}))], b"again")).await;
    put_ok(&store, again).await;
    assert_eq!(present(&store, &["kept", "again"]).await, [false, true]);
    // Last, as it is what an operator reads: the error says which file.
    let file = path.display().to_string();
    assert!(err.to_string().contains(&file), "the error does not name the file {file}: {err} (after {waited:.1?})");
}

/// A cache file the node cannot write: permission bits on the file and its directory for an
/// unprivileged user; as root, who writes through permission bits, the file opened read-only
/// by SQLite's URI `mode=ro` (what SQLite does by itself with a file it cannot write). The
/// store refuses it at open, naming the file, and leaves it as it was.
#[tokio::test]
async fn a_read_only_sqlite_file_is_refused_at_open_with_its_path() {
    use std::os::unix::fs::PermissionsExt as _;
    /// Gives the directory and the file their modes back, whatever happens.
    struct Writable<'a>(&'a std::path::Path, &'a std::path::Path);
    impl Drop for Writable<'_> {
        fn drop(&mut self) {
            let _ = std::fs::set_permissions(self.0, std::fs::Permissions::from_mode(0o755));
            let _ = std::fs::set_permissions(self.1, std::fs::Permissions::from_mode(0o644));
        }
    }
    let dir = scratch_db("read-only").with_extension("d");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cache.db");
    {
        let store = SqliteStore::open(&path, "shop").unwrap();
        put_ok(&store, entry("kept", vec![dep("c", json!({}))], b"kept")).await;
    }
    let _restore = Writable(&dir, &path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let privileged = std::fs::OpenOptions::new().append(true).open(&path).is_ok();
    let open = if privileged { PathBuf::from(format!("file:{}?mode=ro", path.display())) } else { path.clone() };
    let err = SqliteStore::open(&open, "shop").err().expect("a read-only cache file was accepted");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("readonly"), "{text}");
    drop(_restore);
    let store = SqliteStore::open(&path, "shop").unwrap();
    assert_eq!(&*store.get("kept").await.unwrap().unwrap().body, b"kept", "the file is as it was");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_with_its_path() {
    let path = scratch_db("garbage");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(&path, "shop").err().unwrap();
    assert!(matches!(err, CacheError::Corrupt { store: "sqlite", .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("not a database"), "{text}");
}

/// The Redis key of `<kind><k>` for protocol key `mz1:<k>` of `site`: in the key's bucket's
/// slot, `mz1:{<site>/<bucket>}:<kind><k>`.
fn redis_key(site: &str, kind: &str, key: &str) -> String {
    format!("mz1:{{{site}/{}}}:{kind}{}", bucket(key), key.strip_prefix("mz1:").unwrap_or(key))
}

#[tokio::test]
async fn redis_drops_a_damaged_entry() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "shop").await.unwrap();
    put_ok(&store, entry("mz1:p:good", vec![dep("c", json!({}))], b"ok")).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let (bad, wrong) = (redis_key("shop", "", "mz1:p:bad"), redis_key("shop", "", "mz1:p:wrong"));
    let damaged = b"\x00\x00\x00\x07garbagebody".as_slice();
    let _: () = redis::cmd("SET").arg(&bad).arg(damaged).query_async(&mut raw).await.unwrap();
    assert_eq!(store.get("mz1:p:bad").await.unwrap(), None);
    let exists: bool = redis::cmd("EXISTS").arg(&bad).query_async(&mut raw).await.unwrap();
    assert!(!exists, "the damaged entry is removed");
    // A key of another type under an entry's name reads as a miss, and a put replaces it.
    let _: () = redis::cmd("HSET").arg(&wrong).arg("f").arg("v").query_async(&mut raw).await.unwrap();
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
    // The first call finds the connection gone; the next one tries to reconnect and is
    // refused. Either way the error is Unavailable, says the connection was refused or reset
    // (not that a response never came), and arrives before the 2 s response timeout would
    // have fired: Redis going away is noticed at once, not waited out.
    for call in ["get", "purge"] {
        let started = std::time::Instant::now();
        let err = match call {
            "get" => store.get("k").await.map(|_| ()).unwrap_err(),
            _ => store.purge("c", &Map::new(), PurgeMode::Hard).await.map(|_| ()).unwrap_err(),
        };
        let elapsed = started.elapsed();
        let CacheError::Unavailable { store: "redis", message } = &err else { panic!("{call}: {err:?}") };
        let lower = message.to_lowercase();
        assert!(
            ["broken pipe", "connection reset", "connection refused", "connection closed"]
                .iter()
                .any(|m| lower.contains(m))
                && !lower.contains("timed out")
                && !lower.contains("timeout"),
            "{call}: not a refused or reset connection: {message}"
        );
        assert!(elapsed < std::time::Duration::from_secs(2), "{call} took {elapsed:?} to fail: {message}");
    }
    server.restart();
    // The connection manager reconnects on the next calls.
    let store = &store;
    wait_until("the Redis store to answer again after Redis came back", DEADLINE, move || async move {
        store.get("k").await.is_ok()
    })
    .await;
    put_ok(store, entry("k2", vec![dep("c", json!({}))], b"y")).await;
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
    let tags: Vec<String> = ["c:product_detail", "c:product_detail:id=1", "c:product_list"].map(String::from).into();
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
    let blog_before = blog.generations(&tags).await.unwrap();
    assert_eq!(blog_before.values().copied().collect::<Vec<_>>(), [0, 0, 0]);

    // The attack: shop purges `product_detail;id=1`.
    assert_eq!(shop.purge("product_detail", &obj(json!({"id": 1})), PurgeMode::Hard).await.unwrap(), 2);
    assert_eq!(present(shop, &[PAGE, DATA]).await, [false, false]);
    assert_eq!(body(blog.get(PAGE).await.unwrap()), Some(b"blog".to_vec()), "shop's purge removed blog's page");
    assert_eq!(body(blog.get(DATA).await.unwrap()), Some(b"blog".to_vec()), "shop's purge removed blog's data");
    assert_eq!(blog.generations(&tags).await.unwrap(), blog_before, "shop's purge moved blog's generations");
    let shop_after = shop.generations(&tags).await.unwrap();
    assert!(shop_after["c:product_detail:id=1"] > 0);
    // A blog render that started before shop's purge still stores.
    let mut late = page(b"blog again");
    late.meta.generation = blog_before.clone();
    put_ok(blog, late).await;

    // Soft and whole-context purges, and a remove, by shop: nothing of blog's moves either.
    put_ok(shop, rendered_now(shop, page(b"shop again")).await).await;
    assert_eq!(shop.purge("product_list", &Map::new(), PurgeMode::Soft).await.unwrap(), 1);
    assert!(shop.get(PAGE).await.unwrap().unwrap().meta.stale_at.is_some());
    assert_eq!(blog.get(PAGE).await.unwrap().unwrap().meta.stale_at, None, "shop's soft purge marked blog's page");
    shop.remove(PAGE).await.unwrap();
    assert_eq!(shop.purge("product_detail", &Map::new(), PurgeMode::Hard).await.unwrap(), 0);
    assert_eq!(present(blog, &[PAGE, DATA]).await, [true, true]);
    assert_eq!(blog.generations(&tags).await.unwrap(), blog_before);

    // Blog's own tags are intact: its purge finds both of its entries, and nothing of shop's.
    put_ok(shop, rendered_now(shop, data(b"shop")).await).await;
    assert_eq!(blog.purge("product_detail", &obj(json!({"id": 1})), PurgeMode::Hard).await.unwrap(), 2);
    assert_eq!(present(blog, &[PAGE, DATA]).await, [false, false]);
    assert_eq!(body(shop.get(DATA).await.unwrap()), Some(b"shop".to_vec()), "blog's purge removed shop's data");
    let shop_last = shop.generations(&tags).await.unwrap();
    assert_eq!(shop_last["c:product_detail:id=1"], shop_after["c:product_detail:id=1"], "blog's purge moved shop's");
    assert!(shop_last["c:product_detail"] > 0 && shop_last["c:product_list"] > 0);
}

/// Every key of `nodes` (one server, or each master of a cluster) matching `pattern`.
async fn keys_of(nodes: &[String], pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for node in nodes {
        let mut raw = redis::Client::open(node.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let mut more: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(&mut raw).await.unwrap();
        keys.append(&mut more);
    }
    keys.sort();
    keys
}

/// Two sites on one Redis (or one cluster), and a third whose name starts like the first:
/// every key a site wrote carries its hash tag (`{shop}` or `{shop/<bucket>}`), and
/// `mz1:{shop[}/]*` lists exactly shop's.
async fn redis_sites_keep_to_their_hash_tags(url: &str, nodes: &[String]) {
    let shop = RedisStore::connect(url, "shop").await.unwrap();
    let blog = RedisStore::connect(url, "blog").await.unwrap();
    sites_sharing_a_backend_never_touch_each_other(&shop, &blog).await;
    put_ok(&shop, entry("mz1:p:layout", vec![dep("cart", json!({"user": "u1"}))], b"x")).await;
    shop.purge("cart", &obj(json!({"user": "u2"})), PurgeMode::Soft).await.unwrap();
    let shopping = RedisStore::connect(url, "shopping").await.unwrap();
    put_ok(&shopping, entry("mz1:p:layout", vec![dep("cart", json!({"user": "u1"}))], b"x")).await;
    let keys = keys_of(nodes, "*").await;
    let of = |site: &str| format!("mz1:{{{site}}}:");
    let in_bucket = |site: &str| format!("mz1:{{{site}/");
    for key in &keys {
        assert!(
            ["shop", "blog", "shopping"].iter().any(|s| key.starts_with(&of(s)) || key.starts_with(&in_bucket(s))),
            "{key} is outside every site's prefixes"
        );
    }
    let b = bucket("mz1:p:layout");
    let mut expected: Vec<String> = [
        redis_key("shop", "", "mz1:p:layout"),
        redis_key("shop", "k:", "mz1:p:layout"),
        format!("mz1:{{shop/{b}}}:t:c:cart"),
        format!("mz1:{{shop/{b}}}:t:c:cart:user=\"u1\""),
        "mz1:{shop}:g:c:cart:user=\"u2\"".to_string(),
        "mz1:{blog}:g:c:product_detail:id=1".to_string(),
    ]
    .into();
    // The soft purge's walk raised the generation of every bucket.
    expected.extend((0..BUCKETS).map(|b| format!("mz1:{{shop/{b}}}:g:c:cart:user=\"u2\"")));
    for key in &expected {
        assert!(keys.contains(key), "{key} missing from {keys:?}");
    }
    let listed = keys_of(nodes, "mz1:{shop[}/]*").await;
    let shops: Vec<&String> =
        keys.iter().filter(|k| k.starts_with(&of("shop")) || k.starts_with(&in_bucket("shop"))).collect();
    assert_eq!(listed.iter().collect::<Vec<_>>(), shops, "the documented pattern lists exactly one site's keys");
    assert!(!listed.iter().any(|k| k.contains("shopping")));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sites_sharing_one_server_never_purge_each_other() {
    let server = RedisServer::start();
    redis_sites_keep_to_their_hash_tags(&server.url(), &[server.url()]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_sites_sharing_one_cluster_never_purge_each_other() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    redis_sites_keep_to_their_hash_tags(&cluster.url(), &cluster.node_urls()).await;
}

/// Render locks between two stores (two nodes) of one site: one holder at a time, released
/// only by its own fence, fences that grow, and an expired holder's write dropped once another
/// render took the lock, stored if nobody did.
async fn render_locks_fence_out_expired_holders(a: &dyn Store, b: &dyn Store) {
    let page = |key: &str, body: &str| entry(key, vec![dep("c", json!({}))], body.as_bytes());
    let acquired = |outcome: LockOutcome| match outcome {
        LockOutcome::Acquired(fence) => fence,
        other => panic!("not acquired: {other:?}"),
    };
    let held = |outcome: LockOutcome| match outcome {
        LockOutcome::Held { ttl_ms } => ttl_ms,
        other => panic!("not held: {other:?}"),
    };
    let one = "mz1:p:0a01";
    let f1 = acquired(a.lock(one, 60_000).await.unwrap());
    let left = held(b.lock(one, 60_000).await.unwrap());
    assert!((1..=60_000).contains(&left), "{left}");
    held(a.lock(one, 60_000).await.unwrap());
    // Another's fence releases nothing; the holder's does.
    b.unlock(one, f1 + 1).await.unwrap();
    held(b.lock(one, 60_000).await.unwrap());
    a.unlock(one, f1).await.unwrap();
    let f2 = acquired(b.lock(one, 60_000).await.unwrap());
    assert!(f2 > f1, "{f2} after {f1}");
    // A plain put ignores locks; the holder's fenced put stores and releases the lock.
    put_ok(a, page(one, "plain")).await;
    assert_eq!(b.put_fenced(page(one, "fenced"), f2).await.unwrap(), PutOutcome::Stored);
    assert_eq!(&*a.get(one).await.unwrap().unwrap().body, b"fenced");
    let f3 = acquired(a.lock(one, 60_000).await.unwrap());
    assert!(f3 > f2, "{f3} after {f2}");
    a.unlock(one, f3).await.unwrap();

    // An expired holder, once another render took the lock: superseded while the other holds
    // it, and after the other stored. Waiting for the lock's time to run out is waiting for
    // time, not for another task.
    let two = "mz1:p:0b02";
    let f4 = acquired(a.lock(two, 100).await.unwrap());
    let start = std::time::Instant::now();
    let f5 = loop {
        match b.lock(two, 60_000).await.unwrap() {
            LockOutcome::Acquired(fence) => break fence,
            LockOutcome::Held { ttl_ms } => tokio::time::sleep(std::time::Duration::from_millis(ttl_ms + 1)).await,
            LockOutcome::Unsupported => panic!("unsupported"),
        }
        assert!(start.elapsed() < DEADLINE, "the 100 ms lock never expired");
    };
    assert!(f5 > f4, "{f5} after {f4}");
    assert_eq!(a.put_fenced(page(two, "expired holder"), f4).await.unwrap(), PutOutcome::Superseded);
    assert_eq!(b.put_fenced(page(two, "newer"), f5).await.unwrap(), PutOutcome::Stored);
    assert_eq!(a.put_fenced(page(two, "expired holder"), f4).await.unwrap(), PutOutcome::Superseded);
    assert_eq!(&*b.get(two).await.unwrap().unwrap().body, b"newer");

    // A holder whose lock expired with nobody taking it still stores.
    let three = "mz1:p:0c03";
    let f6 = acquired(a.lock(three, 5).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(a.put_fenced(page(three, "late but alone"), f6).await.unwrap(), PutOutcome::Stored);
    assert_eq!(&*b.get(three).await.unwrap().unwrap().body, b"late but alone");

    // A fenced put dropped by a purge lets its lock go.
    let four = "mz1:p:0d04";
    let f7 = acquired(a.lock(four, 60_000).await.unwrap());
    let late = rendered_now(a, page(four, "stale")).await;
    a.purge("c", &Map::new(), PurgeMode::Hard).await.unwrap();
    assert_eq!(a.put_fenced(late, f7).await.unwrap(), PutOutcome::Dropped { tag: "c:c".into() });
    let f8 = acquired(b.lock(four, 60_000).await.unwrap());
    assert!(f8 > f7);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_render_locks_fence_out_expired_holders() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url(), "shop").await.unwrap();
    let b = RedisStore::connect(&server.url(), "shop").await.unwrap();
    render_locks_fence_out_expired_holders(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_render_locks_fence_out_expired_holders() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    let a = RedisStore::connect(&cluster.url(), "shop").await.unwrap();
    let b = RedisStore::connect(&cluster.url(), "shop").await.unwrap();
    render_locks_fence_out_expired_holders(&a, &b).await;
}

/// A fence counter lost (evicted, say) does not hand out a fence below the last one stored.
#[tokio::test(flavor = "multi_thread")]
async fn redis_fences_stay_past_the_last_write_when_the_counter_is_lost() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "shop").await.unwrap();
    let key = "mz1:p:0e05";
    let LockOutcome::Acquired(first) = store.lock(key, 60_000).await.unwrap() else { panic!("not acquired") };
    assert_eq!(store.put_fenced(entry(key, vec![dep("c", json!({}))], b"x"), first).await.unwrap(), PutOutcome::Stored);
    let mut raw = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL").arg(format!("mz1:{{shop/{}}}:f", bucket(key))).query_async(&mut raw).await.unwrap();
    let LockOutcome::Acquired(next) = store.lock(key, 60_000).await.unwrap() else { panic!("not acquired") };
    assert!(next > first, "{next} after {first}");
    assert_eq!(store.put_fenced(entry(key, vec![dep("c", json!({}))], b"y"), next).await.unwrap(), PutOutcome::Stored);
}

#[tokio::test]
async fn memory_and_sqlite_have_no_render_locks() {
    for b in [memory().await, sqlite().await] {
        let s = &*b.store;
        assert_eq!(s.lock("k", 1000).await.unwrap(), LockOutcome::Unsupported);
        s.unlock("k", 1).await.unwrap();
        assert_eq!(s.put_fenced(entry("k", vec![dep("c", json!({}))], b"x"), 1).await.unwrap(), PutOutcome::Stored);
        assert!(s.get("k").await.unwrap().is_some());
    }
}

/// One site's entries land on every master of a three-master cluster (its buckets' hash tags
/// spread over the slots), and purges spanning every bucket leave no stale entry while renders
/// race them: afterwards exactly the entries stored with the last generation are there.
#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_spreads_a_site_over_every_master_and_purges_across_them_exactly() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    let store = Arc::new(RedisStore::connect(&cluster.url(), "shop").await.unwrap());
    let deps = || vec![dep("hot", json!({"id": 0}))];
    let tags = entry("tags", deps(), b"").meta.tags();
    let key = |i: usize, what: &str| format!("mz1:p:{i:04x}{what}");
    for i in 0..4 * BUCKETS {
        put_ok(&*store, rendered_now(&*store, entry(&key(i, "spread"), deps(), b"x")).await).await;
    }
    for node in cluster.node_urls() {
        let entries = keys_of(std::slice::from_ref(&node), "mz1:{shop/*}:p:*").await;
        assert!(entries.len() >= 4, "{node} holds {} of the site's entries", entries.len());
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            let tags = tags.clone();
            tokio::spawn(async move {
                let mut stored = Vec::new();
                let mut i = 0;
                while !stop.load(SeqCst) {
                    let mut e = entry(&key(i, &format!("w{w}")), vec![dep("hot", json!({"id": 0}))], b"w");
                    e.meta.generation = store.generations(&tags).await.unwrap();
                    let g = e.meta.generation["c:hot:id=0"];
                    if store.put(e).await.unwrap() == PutOutcome::Stored {
                        stored.push((key(i, &format!("w{w}")), g));
                    }
                    i += 1;
                }
                stored
            })
        })
        .collect();
    let mut stored = Vec::new();
    for round in 0..4 {
        for i in 0..4 * BUCKETS {
            let e = rendered_now(&*store, entry(&key(i, &format!("s{round}")), deps(), b"seed")).await;
            let g = e.meta.generation["c:hot:id=0"];
            put_ok(&*store, e).await;
            stored.push((key(i, &format!("s{round}")), g));
        }
        store.purge("hot", &obj(json!({"id": 0})), PurgeMode::Hard).await.unwrap();
    }
    stop.store(true, SeqCst);
    for writer in writers {
        stored.extend(writer.await.unwrap());
    }
    let last = store.generations(&tags).await.unwrap()["c:hot:id=0"];
    assert!(stored.iter().any(|(_, g)| *g > 0 && *g < last), "renders ran between the purges");
    let mut kept = 0;
    for (key, g) in &stored {
        let present = store.get(key).await.unwrap().is_some();
        assert_eq!(present, *g == last, "{key} stored at generation {g}, the last is {last}");
        kept += usize::from(present);
    }
    assert_eq!(store.purge("hot", &obj(json!({"id": 0})), PurgeMode::Hard).await.unwrap() as usize, kept);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_sites_sharing_one_file_never_purge_each_other() {
    let path = scratch_db("shared");
    let shop = SqliteStore::open(&path, "shop").unwrap();
    let blog = SqliteStore::open(&path, "blog").unwrap();
    sites_sharing_a_backend_never_touch_each_other(&shop, &blog).await;
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 3);
    let sites: Vec<String> = raw
        .prepare("SELECT DISTINCT site FROM tag_generations ORDER BY site")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sites, ["blog", "shop"]);
}

#[tokio::test]
async fn a_site_that_cannot_namespace_keys_is_refused() {
    let path = scratch_db("bad-site");
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
    let path = scratch_db("v1");
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch("CREATE TABLE entries (key TEXT PRIMARY KEY); PRAGMA user_version = 1;").unwrap();
    drop(raw);
    let err = SqliteStore::open(&path, "shop").err().unwrap();
    assert!(matches!(err, CacheError::Corrupt { store: "sqlite", .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("schema version 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sqlite_file_refuses_writes_keeps_what_it_holds_and_recovers() {
    let path = crate::common::scratch_db("full");
    let store = SqliteStore::open(&path, "shop").unwrap();
    put_ok(&store, entry("mz1:p:kept", vec![dep("product_detail", json!({"id": 1}))], b"kept")).await;
    // As a full disk would: the file may not grow any more.
    let pages: u64 =
        rusqlite::Connection::open(&path).unwrap().query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    store.cap_pages_for_tests(pages).await.unwrap();
    let big = vec![b'x'; 256 * 1024];
    let err = store.put(entry("mz1:p:big", vec![dep("product_detail", json!({"id": 2}))], &big)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CacheError::Unavailable { store: "sqlite", .. }), "{err:?}");
    assert!(text.contains(&path.display().to_string()) && text.contains("full"), "names the file and why: {text}");
    // Nothing lost, nothing half-written.
    assert_eq!(&store.get("mz1:p:kept").await.unwrap().unwrap().body[..], b"kept");
    assert!(store.get("mz1:p:big").await.unwrap().is_none());
    // Room again: writes resume.
    store.cap_pages_for_tests(1 << 30).await.unwrap();
    put_ok(&store, entry("mz1:p:big", vec![dep("product_detail", json!({"id": 2}))], &big)).await;
}
