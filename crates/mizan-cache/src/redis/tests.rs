//! The Redis store against a real redis-server: the key layout, multi-batch walks in every
//! bucket, puts racing them, buckets lagging the canonical generation, pruning.

use super::names::{BUCKETS, Names, bucket};
use super::{PRUNE, RedisStore, pack, unpack};
use crate::store::Paused;
use crate::testing::RedisServer;
use crate::{Entry, GENERATION_TTL_MS, Generations, Meta, PurgeMode, PutOutcome, Store, dependency_tags, now_ms};
use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Members per walk call in these tests: small, so that a few hundred entries make walks of
/// several calls in every bucket.
const BATCH: usize = 20;

#[test]
fn every_key_sits_under_the_site_prefix() {
    let names = Names::new("shop");
    let key = "mz1:p:ab12cd";
    assert_eq!(bucket(key), 0xab12 % BUCKETS);
    assert_eq!(names.entry(key), "mz1:{shop/2}:p:ab12cd");
    assert_eq!(names.entry("mz1:d:0003ff"), "mz1:{shop/3}:d:0003ff");
    assert_eq!(names.stale(key), "mz1:{shop/2}:s:p:ab12cd");
    assert_eq!(names.tag_list(key), "mz1:{shop/2}:k:p:ab12cd");
    assert_eq!(names.lock(key), "mz1:{shop/2}:l:p:ab12cd");
    assert_eq!(names.written(key), "mz1:{shop/2}:w:p:ab12cd");
    assert_eq!(names.staged(key, "1f.2.beef"), "mz1:{shop/2}:u:p:ab12cd:1f.2.beef");
    assert_eq!(names.fence_counter(2), "mz1:{shop/2}:f");
    assert_eq!(names.tag(2, "c:product_detail:id=1"), "mz1:{shop/2}:t:c:product_detail:id=1");
    assert_eq!(names.bucket_generation(15, "c:x"), "mz1:{shop/15}:g:c:x");
    assert_eq!(names.generation("c:product_detail:id=1"), "mz1:{shop}:g:c:product_detail:id=1");
}

/// Staging keys are unique per put, also across processes forked from one that already put (a
/// child inherits the counter and the random generator's state, not the process id).
#[test]
fn staging_nonces_never_repeat() {
    let (a, b) = (super::nonce(), super::nonce());
    assert_ne!(a, b);
    for n in [&a, &b] {
        assert!(n.starts_with(&format!("{:x}.", std::process::id())), "{n}");
    }
}

#[test]
fn packs_and_refuses_damaged_values() {
    let meta = br#"{"v":1,"kind":"data","key":"k","status":200,"headers":[],"created_at":1,"ttl_s":1,"swr_s":0,"sie_s":0,"deps":[],"etag":null,"generation":{}}"#;
    let packed = pack(meta, b"\x00body\xff");
    let (m, body) = unpack(&packed).unwrap();
    assert_eq!((m.key.as_str(), body), ("k", &b"\x00body\xff"[..]));
    assert!(unpack(b"\x00\x00").is_err());
    assert!(unpack(b"\x00\x00\x01\x00{}").is_err());
    assert!(unpack(b"\x00\x00\x00\x02{x").is_err());
}

/// Page key number `i`, in bucket `i % 16` (its first four hex digits are `i`).
fn key(i: usize) -> String {
    format!("mz1:p:{i:04x}")
}

/// Page key number `i` of bucket 0.
fn key0(i: usize) -> String {
    key(BUCKETS * i)
}

/// A page under `key` depending on `deps` ([context, params] pairs), recording
/// `generation` (what its render read), with a lifetime of 60 + 30 + 100 s.
fn entry(key: &str, deps: &[(&str, Value)], generation: &Generations, body: &str) -> Entry {
    let deps: Vec<Value> = deps.iter().map(|(c, p)| json!({"context": c, "params": p})).collect();
    let meta: Meta = serde_json::from_value(json!({
        "v": 1, "kind": "page", "key": key, "status": 200, "headers": [],
        "created_at": now_ms(), "ttl_s": 60, "swr_s": 30, "sie_s": 100,
        "deps": deps, "etag": null, "generation": generation
    }))
    .unwrap();
    Entry { body: body.to_string().into_bytes().into(), meta }
}

fn hot(key: &str, id: u64, generation: &Generations, body: &str) -> Entry {
    entry(key, &[("hot", json!({ "id": id }))], generation, body)
}

/// What a render of a page depending on `hot` with `id` reads when it starts.
async fn read(store: &RedisStore, id: u64) -> Generations {
    store.generations(&dependency_tags([("hot", &params(json!({ "id": id })))])).await.unwrap()
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// A deadline that fails the test with a message instead of hanging it.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f).await.unwrap_or_else(|_| panic!("{what} did not complete"))
}

async fn start() -> (RedisServer, Arc<RedisStore>, MultiplexedConnection) {
    let server = RedisServer::start();
    let mut store = RedisStore::connect(&server.url(), "shop").await.unwrap();
    store.batch = BATCH;
    let raw = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    (server, Arc::new(store), raw)
}

async fn card(raw: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("ZCARD").arg(key).query_async(raw).await.unwrap()
}

/// The members of a tag, over all buckets.
async fn cards(raw: &mut MultiplexedConnection, tag: &str) -> u64 {
    let names = Names::new("shop");
    let mut total = 0;
    for b in 0..BUCKETS {
        total += card(raw, &names.tag(b, tag)).await;
    }
    total
}

async fn exists(raw: &mut MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query_async(raw).await.unwrap()
}

/// Tags larger than one batch in every bucket, purged by one tag and by an intersection of
/// two, hard and soft: every match is taken, nothing else, and the walks took several calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_with_more_members_than_one_batch_is_purged_completely() {
    let (_server, store, mut raw) = start().await;
    let names = Names::new("shop");
    let n = BUCKETS * (2 * BATCH + 10);
    for i in 0..n {
        let deps = [("hot", json!({"id": 0})), ("search", json!({"q": "a", "page": i % 2}))];
        let none = Generations::new();
        assert_eq!(store.put(entry(&key(i), &deps, &none, "old")).await.unwrap(), PutOutcome::Stored);
    }
    let other = read(&store, 1).await;
    for i in 0..10 {
        store.put(hot(&key(n + i), 1, &other, "other")).await.unwrap();
    }
    assert_eq!(cards(&mut raw, "c:hot:id=0").await, n as u64);
    assert_eq!(card(&mut raw, &names.tag(3, "c:hot:id=0")).await, (n / BUCKETS) as u64, "spread evenly");

    // An intersection, walked over several calls (the hook stops one walk after its first).
    let Paused { reached, resume, done } = store.pause.batches.arm();
    let search = tokio::spawn({
        let store = store.clone();
        async move { store.purge("search", &params(json!({"q": "a", "page": 1})), PurgeMode::Soft).await.unwrap() }
    });
    within("the first batch", reached).await.unwrap();
    resume.send(()).unwrap();
    assert_eq!(within("the soft purge", search).await.unwrap() as usize, n / 2);
    within("the walk", done).await.unwrap();
    for i in 0..n {
        let got = store.get(&key(i)).await.unwrap().unwrap();
        assert_eq!(got.meta.stale_at.is_some(), i % 2 == 1, "{}", key(i));
    }

    assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap() as usize, n);
    for i in 0..n {
        assert!(store.get(&key(i)).await.unwrap().is_none(), "{} survived", key(i));
        assert!(!exists(&mut raw, &names.stale(&key(i))).await, "its mark too");
    }
    assert_eq!(cards(&mut raw, "c:hot:id=0").await, 0, "the purged tag sets are empty");
    // The purged entries' memberships of other tags stay until those sets prune them (or the
    // keys are put again): a purge of the whole context walks them and counts only the live.
    assert_eq!(store.purge("hot", &Map::new(), PurgeMode::Hard).await.unwrap(), 10);
    assert_eq!(cards(&mut raw, "c:hot").await, 0, "the walks emptied the context's sets");
}

/// Members sharing an expiry to the millisecond (puts in the same millisecond) across the
/// end of a batch: the call that reaches such a group reads all of it, so the next one can
/// start after it and none is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_sharing_an_expiry_across_batches_are_all_purged() {
    let (_server, store, mut raw) = start().await;
    let names = Names::new("shop");
    let n = 2 * BATCH + 50;
    let g = read(&store, 0).await;
    for i in 0..n {
        store.put(hot(&key0(i), 0, &g, "old")).await.unwrap();
    }
    // Groups of 7 members with one score: the 20th member falls inside a group.
    let base = now_ms() + 600_000;
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("ZADD")
            .arg(names.tag(0, "c:hot:id=0"))
            .arg("XX")
            .arg(base + (i / 7) as u64)
            .arg(format!("{}|0", names.entry(&key0(i))))
            .ignore();
    }
    let _: () = pipe.query_async(&mut raw).await.unwrap();
    assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap() as usize, n);
    for i in 0..n {
        assert!(store.get(&key0(i)).await.unwrap().is_none(), "{} survived", key0(i));
    }
    assert!(!exists(&mut raw, &names.tag(0, "c:hot:id=0")).await);
}

/// Members whose entries expired leave the tag sets as puts go on, so a hot tag's set stays
/// the size of its live entries. The wait is for Redis's clock to pass the entries' expiry
/// and the one-second grace: time, not another task, is what the test waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_members_are_pruned_from_tag_sets() {
    let (_server, store, mut raw) = start().await;
    let names = Names::new("shop");
    let g = read(&store, 0).await;
    let short = |key: &str| {
        let mut e = hot(key, 0, &g, "short");
        (e.meta.ttl_s, e.meta.swr_s, e.meta.sie_s) = (1, 0, 0);
        e.meta.created_at = now_ms() - 900; // expires in about 100 ms
        e
    };
    for i in 0..100 {
        store.put(short(&key0(i))).await.unwrap();
    }
    let live = [key0(1000), key0(1001), key0(1002)];
    store.put(hot(&live[0], 0, &g, "live")).await.unwrap();
    let tag = names.tag(0, "c:hot:id=0");
    assert_eq!(card(&mut raw, &tag).await, 101);
    let member = |key: &str| format!("{}|{}", names.entry(key), g["c:hot:id=0"]);
    let latest: f64 = redis::cmd("ZSCORE").arg(&tag).arg(member(&key0(99))).query_async(&mut raw).await.unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut raw).await.unwrap();
    let redis_now = secs * 1000 + micros / 1000;
    tokio::time::sleep(Duration::from_millis((latest as u64 + 1001).saturating_sub(redis_now))).await;

    assert!(store.get(&key0(0)).await.unwrap().is_none(), "the short entries expired");
    store.put(hot(&live[1], 0, &g, "live")).await.unwrap();
    assert_eq!(card(&mut raw, &tag).await, 102 - PRUNE as u64, "one put prunes up to PRUNE members");
    store.put(hot(&live[2], 0, &g, "live")).await.unwrap();
    assert_eq!(card(&mut raw, &tag).await, 3, "only the live entries are left");
    let mut left: Vec<String> = redis::cmd("ZRANGE").arg(&tag).arg(0).arg(-1).query_async(&mut raw).await.unwrap();
    left.sort();
    assert_eq!(left, live.iter().map(|k| member(k)).collect::<Vec<_>>());
    // The context's set was pruned the same way, and a purge finds exactly the live ones.
    assert_eq!(card(&mut raw, &names.tag(0, "c:hot")).await, 3);
    assert_eq!(store.purge("hot", &Map::new(), PurgeMode::Hard).await.unwrap(), 3);
}

/// Puts land between two batches of a bucket's walk: one from a render that read the old
/// generation (dropped), and fresh ones (stored with the new generation) of a key the walk
/// has not reached, of a key it already took and of a new key. The walk takes every entry
/// stored before it and none of the fresh ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_racing_a_multi_batch_purge_leaves_nothing_stale() {
    let (_server, store, _raw) = start().await;
    let n = 3 * BATCH;
    let before = read(&store, 0).await;
    for i in 0..n {
        store.put(hot(&key0(i), 0, &before, "old")).await.unwrap();
    }
    // Bucket 0's walk is the only one of several calls: it is the one that stops.
    let Paused { reached, resume, .. } = store.pause.batches.arm();
    let purge = tokio::spawn({
        let store = store.clone();
        async move { store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap() }
    });
    within("the first batch", reached).await.unwrap();
    let now = read(&store, 0).await;
    assert!(now["c:hot:id=0"] > before["c:hot:id=0"], "moved before any removal");
    assert_eq!(now["c:hot"], before["c:hot"], "a purge of one id leaves the context's generation");
    let (mut pending, mut taken) = (None, None);
    for i in 0..n {
        match store.get(&key0(i)).await.unwrap() {
            Some(_) if pending.is_none() => pending = Some(key0(i)),
            None if taken.is_none() => taken = Some(key0(i)),
            _ => {}
        }
    }
    let (pending, taken) = (pending.expect("a key the walk has not reached"), taken.expect("a key it took"));
    let late = store.put(hot(&pending, 0, &before, "rendered before the purge")).await.unwrap();
    assert_eq!(late, PutOutcome::Dropped { tag: "c:hot:id=0".into() });
    for key in [pending.as_str(), taken.as_str(), "mz1:p:new"] {
        assert_eq!(store.put(hot(key, 0, &now, "fresh")).await.unwrap(), PutOutcome::Stored, "{key}");
    }
    assert!(!purge.is_finished(), "the purge waited for the test all along");
    resume.send(()).unwrap();
    assert_eq!(within("the purge", purge).await.unwrap() as usize, n - 1, "all old entries but the replaced one");

    for i in 0..n {
        let got = store.get(&key0(i)).await.unwrap();
        if key0(i) == pending || key0(i) == taken {
            assert_eq!(&*got.expect("a fresh write was purged").body, b"fresh", "{}", key0(i));
        } else {
            assert!(got.is_none(), "{}: an entry stored before the purge survived it", key0(i));
        }
    }
    assert_eq!(&*store.get("mz1:p:new").await.unwrap().unwrap().body, b"fresh");
    assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap(), 3);
}

/// Puts land after a purge moved the canonical generation and before it walked any bucket:
/// one from a render that read before the purge stores (its bucket has not heard of the purge
/// yet) and the walk then takes it; one from a render that read after stores and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_landing_before_the_walk_reaches_its_bucket_is_taken_by_it() {
    let (_server, store, _raw) = start().await;
    let before = read(&store, 0).await;
    for i in 0..BUCKETS {
        store.put(hot(&key(i), 0, &before, "old")).await.unwrap();
    }
    let Paused { reached, resume, done } = store.pause.moved.arm();
    let purge = tokio::spawn({
        let store = store.clone();
        async move { store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap() }
    });
    within("the generations to move", reached).await.unwrap();
    let now = read(&store, 0).await;
    assert!(now["c:hot:id=0"] > before["c:hot:id=0"]);
    let (late, fresh) = (key(BUCKETS), key(BUCKETS + 1));
    assert_eq!(store.put(hot(&late, 0, &before, "late")).await.unwrap(), PutOutcome::Stored);
    assert_eq!(store.put(hot(&fresh, 0, &now, "fresh")).await.unwrap(), PutOutcome::Stored);
    assert_eq!(&*store.get(&late).await.unwrap().unwrap().body, b"late", "no walk has run yet");
    resume.send(()).unwrap();
    assert_eq!(within("the purge", purge).await.unwrap() as usize, BUCKETS + 1);
    within("the walks", done).await.unwrap();
    assert!(store.get(&late).await.unwrap().is_none(), "the late put outlived the walk of its bucket");
    assert_eq!(&*store.get(&fresh).await.unwrap().unwrap().body, b"fresh");
    for i in 0..BUCKETS {
        assert!(store.get(&key(i)).await.unwrap().is_none(), "{} survived", key(i));
    }
}

/// A purge cut off after its first call (the canonical generation moved, no bucket walked):
/// the buckets lag. Renders that read the new generation store meanwhile (a bucket's
/// generation drops a put only when it is past the recorded one), and so do renders that read
/// before it, in the buckets it never reached; the retry moves past both and walks every
/// bucket, leaving nothing stored before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_go_on_while_buckets_lag_and_a_retry_walks_what_a_cut_off_purge_left() {
    let (_server, store, mut raw) = start().await;
    let names = Names::new("shop");
    let before = read(&store, 0).await;
    for i in 0..BUCKETS {
        store.put(hot(&key(i), 0, &before, "old")).await.unwrap();
    }
    let mut cut = store.moves.key(names.generation("c:hot:id=0"));
    cut.arg(GENERATION_TTL_MS);
    let moved: Vec<u64> = cut.invoke_async(&mut raw).await.unwrap();
    let now = read(&store, 0).await;
    assert_eq!(now["c:hot:id=0"], moved[0]);
    assert!(!exists(&mut raw, &names.bucket_generation(0, "c:hot:id=0")).await, "no bucket reached");

    assert_eq!(store.put(hot(&key(BUCKETS), 0, &now, "fresh")).await.unwrap(), PutOutcome::Stored);
    assert_eq!(store.put(hot(&key(BUCKETS + 1), 0, &before, "late")).await.unwrap(), PutOutcome::Stored);
    assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap() as usize, BUCKETS + 2);
    for i in 0..BUCKETS + 2 {
        assert!(store.get(&key(i)).await.unwrap().is_none(), "{} survived the retry", key(i));
    }
    let after = read(&store, 0).await;
    for b in 0..BUCKETS {
        let got: u64 =
            redis::cmd("GET").arg(names.bucket_generation(b, "c:hot:id=0")).query_async(&mut raw).await.unwrap();
        assert_eq!(got, after["c:hot:id=0"], "bucket {b} caught up");
    }
    assert_eq!(
        store.put(hot(&key(0), 0, &now, "late")).await.unwrap(),
        PutOutcome::Dropped { tag: "c:hot:id=0".into() }
    );
    assert_eq!(store.put(hot(&key(0), 0, &after, "fresh")).await.unwrap(), PutOutcome::Stored);
}

/// Renders (read the generation, put, keys in every bucket) race multi-batch purges for real,
/// with no hook: afterwards exactly the entries stored with the last generation are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_racing_multi_batch_purges_are_kept_or_purged_exactly() {
    let (_server, store, _raw) = start().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move {
            let mut stored = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let g = read(&store, 0).await;
                let key = format!("{}w", key(i));
                if store.put(hot(&key, 0, &g, "w")).await.unwrap() == PutOutcome::Stored {
                    stored.push((key, g["c:hot:id=0"]));
                }
                i += 1;
            }
            stored
        }
    });
    // Each purge walks more than one batch per bucket: the entries seeded before it, and the
    // renders'.
    let mut stored = Vec::new();
    let rounds = 4;
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..rounds {
        let g = read(&store, 0).await;
        for i in 0..BUCKETS * 2 * BATCH {
            let key = format!("{}s{round}", key(i));
            assert_eq!(store.put(hot(&key, 0, &g, "seed")).await.unwrap(), PutOutcome::Stored);
            stored.push((key, g["c:hot:id=0"]));
        }
        seen.insert(g["c:hot:id=0"]);
        store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written.iter().any(|(_, g)| *g > 0), "renders ran between the purges");
    stored.extend(written);
    let last = read(&store, 0).await["c:hot:id=0"];
    assert_eq!(seen.len(), rounds, "each round began at a generation of its own");
    assert!(seen.iter().all(|g| *g < last), "the last purge moved past all of them");
    let mut kept = 0;
    for (key, g) in &stored {
        let present = store.get(key).await.unwrap().is_some();
        assert_eq!(present, *g == last, "{key} stored at generation {g}, the last is {last}");
        kept += usize::from(present);
    }
    assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap() as usize, kept);
}

/// A caller that stops waiting does not stop the walks: the generation has moved, so the
/// rest of the batches, in every bucket, must run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_whose_caller_stops_waiting_still_finishes() {
    let (_server, store, _raw) = start().await;
    let n = BUCKETS * (2 * BATCH + 1);
    let g = read(&store, 0).await;
    for i in 0..n {
        store.put(hot(&key(i), 0, &g, "old")).await.unwrap();
    }
    let Paused { reached, resume, done } = store.pause.batches.arm();
    let purge = tokio::spawn({
        let store = store.clone();
        async move { store.purge("hot", &Map::new(), PurgeMode::Hard).await.unwrap() }
    });
    within("the first batch", reached).await.unwrap();
    purge.abort();
    assert!(within("the aborted caller", purge).await.unwrap_err().is_cancelled());
    resume.send(()).unwrap();
    within("the rest of the walks", done).await.unwrap();
    for i in 0..n {
        assert!(store.get(&key(i)).await.unwrap().is_none(), "{} survived", key(i));
    }
}

/// A tag's canonical generation and its buckets' expire [`GENERATION_TTL_MS`] after the last
/// purge that moved them, seeded by Redis's clock, so a purge moves past anything a member
/// recorded (small counters included, as nodes of an earlier layout wrote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_are_seeded_by_the_clock_and_expire() {
    let (_server, store, mut raw) = start().await;
    let names = Names::new("shop");
    let key = key(5);
    store.put(hot(&key, 0, &Generations::new(), "old")).await.unwrap();
    let tag = names.tag(5, "c:hot:id=0");
    let bare = format!("{}|", names.entry(&key));
    let score: f64 = redis::cmd("ZSCORE").arg(&tag).arg(&bare).query_async(&mut raw).await.unwrap();
    let mut pipe = redis::pipe();
    pipe.zrem(&tag, &bare).ignore().zadd(&tag, format!("{}|41", names.entry(&key)), score).ignore();
    let _: () = pipe.query_async(&mut raw).await.unwrap();

    assert_eq!(store.purge("hot", &params(json!({"id": 0})), PurgeMode::Hard).await.unwrap(), 1);
    assert!(store.get(&key).await.unwrap().is_none());
    let generation = read(&store, 0).await["c:hot:id=0"];
    assert!(generation >= now_ms() - 60_000, "seeded by the clock: {generation}");
    for key in [names.generation("c:hot:id=0"), names.bucket_generation(5, "c:hot:id=0")] {
        let pttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut raw).await.unwrap();
        assert!((3_000_000..=GENERATION_TTL_MS as i64).contains(&pttl), "{key} expires: {pttl}");
    }
    assert!(!exists(&mut raw, &names.generation("c:hot")).await, "a purge of one id moves only that tag");
}

/// A put stages its entry with a plain SET and its script renames it into place or deletes
/// it: after puts of every outcome (stored, dropped by a purge, superseded by a later lock
/// holder) no staged copy is left, and a server that lost its scripts (SCRIPT FLUSH, as after
/// a restart) gets the script loaded again by the next put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_entries_never_outlive_their_put() {
    use crate::LockOutcome;
    let (_server, store, mut raw) = start().await;
    let stale = read(&store, 1).await;
    assert_eq!(store.put(hot(&key(1), 5, &read(&store, 5).await, "stored")).await.unwrap(), PutOutcome::Stored);
    store.purge("hot", &params(json!({"id": 1})), PurgeMode::Hard).await.unwrap();
    let dropped = store.put(hot(&key(2), 1, &stale, "dropped")).await.unwrap();
    assert!(matches!(dropped, PutOutcome::Dropped { .. }), "{dropped:?}");
    let LockOutcome::Acquired(first) = store.lock(&key(3), 5_000).await.unwrap() else { panic!("lock") };
    store.unlock(&key(3), first).await.unwrap();
    let LockOutcome::Acquired(second) = store.lock(&key(3), 5_000).await.unwrap() else { panic!("lock") };
    let fresh = read(&store, 3).await;
    assert_eq!(store.put_fenced(hot(&key(3), 3, &fresh, "newer"), second).await.unwrap(), PutOutcome::Stored);
    assert_eq!(store.put_fenced(hot(&key(3), 3, &fresh, "older"), first).await.unwrap(), PutOutcome::Superseded);
    let () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut raw).await.unwrap();
    assert_eq!(store.put(hot(&key(4), 4, &read(&store, 4).await, "after a flush")).await.unwrap(), PutOutcome::Stored);
    let staged: Vec<String> = redis::cmd("KEYS").arg("*:u:*").query_async(&mut raw).await.unwrap();
    assert_eq!(staged, Vec::<String>::new(), "staged copies left behind");
    for (k, body) in
        [(key(1), Some("stored")), (key(2), None), (key(3), Some("newer")), (key(4), Some("after a flush"))]
    {
        let got = store.get(&k).await.unwrap().map(|e| String::from_utf8(e.body.to_vec()).unwrap());
        assert_eq!(got.as_deref(), body, "{k}");
    }
    let ttl: i64 = redis::cmd("PTTL").arg(Names::new("shop").entry(&key(1))).query_async(&mut raw).await.unwrap();
    assert!(ttl > 180_000, "the entry lives by its own lifetime, not the staging's: {ttl} ms");
}
