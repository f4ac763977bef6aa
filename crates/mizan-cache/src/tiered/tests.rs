//! Tests of the memory tier against a real Redis: purges from other nodes, the epoch rule,
//! gaps, restarts, freezes and shutdown.

use super::TieredStore;
use crate::redis::RedisStore;
use crate::store::Paused;
use crate::testing::{DEADLINE, RedisServer, wait_until};
use crate::{Entry, Meta, PurgeMode, PutOutcome, Store, dependency_tags, now_ms};
use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value, json};
use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

/// Above this, a sequence number came from Redis's clock in microseconds (any time after
/// 2001), as a new log's numbers do; a log counted from 1 stays far below.
const CLOCK_SEEDED: u64 = 1_000_000_000_000_000;

fn id(id: u64) -> Map<String, Value> {
    json!({ "id": id }).as_object().unwrap().clone()
}

/// A page under `key` depending on `hot` with `n`, recording the generations `store`
/// holds now (what a render starting now reads).
async fn page(store: &TieredStore, key: &str, n: u64, body: &str) -> Entry {
    let generation = store.generations(&dependency_tags([("hot", &id(n))])).await.unwrap();
    let meta: Meta = serde_json::from_value(json!({
        "v": 1, "kind": "page", "key": key, "status": 200, "headers": [],
        "created_at": now_ms(), "ttl_s": 60, "swr_s": 30, "sie_s": 100,
        "deps": [{"context": "hot", "params": {"id": n}}], "etag": null, "generation": generation
    }))
    .unwrap();
    Entry { body: body.to_string().into_bytes().into(), meta }
}

async fn node(server: &RedisServer) -> Arc<TieredStore> {
    let redis = RedisStore::connect(&server.url(), "shop").await.unwrap();
    TieredStore::start(Arc::new(redis), 16 << 20).await.unwrap()
}

/// A Redis and two nodes sharing it, each with its own connections and memory tier.
async fn start() -> (RedisServer, Arc<TieredStore>, Arc<TieredStore>, MultiplexedConnection) {
    let server = RedisServer::start();
    let (a, b) = (node(&server).await, node(&server).await);
    let raw = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    (server, a, b, raw)
}

/// The log's counter: the number of the last purge logged, or the new log's seed.
async fn counter(raw: &mut MultiplexedConnection) -> u64 {
    redis::cmd("GET").arg("mz1:{shop}:seq").query_async(raw).await.unwrap()
}

/// `a` stores a page of `hot` `n` under `key`; `b` reads it, which copies it into its
/// memory.
async fn cached(a: &TieredStore, b: &TieredStore, key: &str, n: u64) {
    assert_eq!(a.put(page(a, key, n, key).await).await.unwrap(), PutOutcome::Stored);
    assert!(b.get(key).await.unwrap().is_some());
    assert!(b.in_memory(key).is_some(), "{key} copied into memory");
    assert!(matches!(b.get_now(key), Some(Some(_))), "and served from it");
}

/// A deadline that fails the test with a message instead of hanging it.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f).await.unwrap_or_else(|_| panic!("{what} did not complete"))
}

/// Copies in another node's memory go once the purge is logged and its reader applied
/// it; a subset match leaves the other ids' copies, and the purging node's own memory is
/// purged when its purge returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_node_reaches_the_tier_of_another() {
    let (_server, a, b, _raw) = start().await;
    // The log the tiers started (it did not exist): numbered from Redis's clock.
    let first = b.stats().last_seq;
    assert!(first > CLOCK_SEEDED, "{first}");
    for (key, n) in [("mz1:p:0", 0), ("mz1:p:1", 1), ("mz1:p:0b", 0)] {
        cached(&a, &b, key, n).await;
    }
    assert!(a.in_memory("mz1:p:0").is_some(), "a put is copied into the putting node's memory");
    let before = b.stats();
    assert!(before.current && before.entries == 3 && before.hits >= 3, "{before:?}");

    assert_eq!(a.purge("hot", &id(0), PurgeMode::Hard).await.unwrap(), 2);
    assert!(a.in_memory("mz1:p:0").is_none(), "the purging node's memory, at once");
    // The reader applies a purge, then records its number: wait for both.
    wait_until("b's reader to apply the purge", DEADLINE, || {
        ready(b.in_memory("mz1:p:0").is_none() && b.in_memory("mz1:p:0b").is_none() && b.stats().last_seq == first + 1)
    })
    .await;
    assert_eq!(b.get_now("mz1:p:0"), None, "a memory miss asks Redis");
    assert!(b.get("mz1:p:0").await.unwrap().is_none(), "which has nothing either");
    assert!(b.in_memory("mz1:p:1").is_some(), "another id's copy stays");
    let after = b.stats();
    assert_eq!((after.purges_applied, after.last_seq, after.resets_gap, after.resets_error), (1, first + 1, 0, 0));
    assert_eq!(after.refused, 0);

    // A purge of the whole context takes the rest.
    a.purge("hot", &Map::new(), PurgeMode::Hard).await.unwrap();
    wait_until("the context purge", DEADLINE, || {
        ready(b.in_memory("mz1:p:1").is_none() && b.stats().last_seq == first + 2)
    })
    .await;
    assert_eq!(b.stats().entries, 0);
}

/// A soft purge marks the copies in other nodes' memory stale, as Redis marks its entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_marks_the_tier_copies_stale() {
    let (_server, a, b, _raw) = start().await;
    cached(&a, &b, "mz1:p:0", 0).await;
    cached(&a, &b, "mz1:p:1", 1).await;
    assert_eq!(a.purge("hot", &id(0), PurgeMode::Soft).await.unwrap(), 1);
    wait_until("the copy to be marked", DEADLINE, || {
        ready(b.in_memory("mz1:p:0").is_some_and(|e| e.meta.stale_at.is_some()))
    })
    .await;
    assert!(b.get("mz1:p:0").await.unwrap().unwrap().meta.stale_at.is_some(), "served stale, from memory");
    assert_eq!(b.in_memory("mz1:p:1").unwrap().meta.stale_at, None);
}

/// The epoch rule: an entry Redis returned before a purge's walk, whose insert comes after
/// the purge was applied to memory, is not inserted (it would never be purged again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_refuses_a_copy_fetched_before_a_purge_it_applied() {
    let (_server, a, b, _raw) = start().await;
    a.put(page(&a, "mz1:p:0", 0, "old").await).await.unwrap();
    let Paused { reached, resume, .. } = b.shared.pause.arm();
    let get = tokio::spawn({
        let b = b.clone();
        async move { b.get("mz1:p:0").await.unwrap() }
    });
    within("b's Redis get", reached).await.unwrap();
    // Redis answered with the entry; the purge walks, is logged and is applied by b.
    a.purge("hot", &id(0), PurgeMode::Hard).await.unwrap();
    wait_until("b's reader to apply the purge", DEADLINE, || ready(b.stats().purges_applied == 1)).await;
    resume.send(()).unwrap();
    let got = within("b's get", get).await.unwrap();
    assert_eq!(&*got.expect("what Redis answered before the purge").body, b"old");
    assert!(b.in_memory("mz1:p:0").is_none(), "a purged entry went into memory");
    assert_eq!(b.stats().refused, 1);
    assert!(b.get("mz1:p:0").await.unwrap().is_none());

    // Without a purge in between, the same path inserts.
    a.put(page(&a, "mz1:p:0", 0, "new").await).await.unwrap();
    let Paused { reached, resume, .. } = b.shared.pause.arm();
    let get = tokio::spawn({
        let b = b.clone();
        async move { b.get("mz1:p:0").await.unwrap() }
    });
    within("b's Redis get", reached).await.unwrap();
    resume.send(()).unwrap();
    within("b's get", get).await.unwrap();
    assert_eq!(&*b.in_memory("mz1:p:0").expect("copied").body, b"new");
    assert_eq!(b.stats().refused, 1);
}

/// Redis killed: the node stops serving memory at once; once Redis is back (restarted
/// empty), memory was emptied before the tier serves again, and serving resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_turns_the_tier_off_and_empties_it() {
    let (mut server, a, b, _raw) = start().await;
    let first = b.stats().last_seq;
    cached(&a, &b, "mz1:p:0", 0).await;
    a.purge("hot", &id(1), PurgeMode::Hard).await.unwrap();
    wait_until("the purge to be read", DEADLINE, || ready(b.stats().last_seq == first + 1)).await;

    server.kill();
    wait_until("b's tier to turn off", DEADLINE, || ready(!b.is_current())).await;
    assert_eq!(b.get_now("mz1:p:0"), None, "memory is not served");
    assert!(b.get("mz1:p:0").await.is_err(), "and Redis is away");

    server.restart();
    wait_until("b's tier to turn on again", DEADLINE, || ready(b.is_current())).await;
    let stats = b.stats();
    // The new log (the restarted Redis had none) starts from the clock, past the old one.
    assert!(stats.entries == 0 && stats.last_seq > first + 1, "emptied, and following the new log: {stats:?}");
    let restarted = stats.last_seq;
    assert!(stats.resets_error >= 1, "{stats:?}");
    assert!(b.in_memory("mz1:p:0").is_none());

    // The store's own connections come back on their next call.
    wait_until("a's connection", DEADLINE, || {
        let a = a.clone();
        async move { a.generations(&["c:hot".to_string()]).await.is_ok() }
    })
    .await;
    a.put(page(&a, "mz1:p:0", 0, "again").await).await.unwrap();
    wait_until("b's get", DEADLINE, || {
        let b = b.clone();
        async move { b.get("mz1:p:0").await.is_ok_and(|e| e.is_some()) }
    })
    .await;
    assert_eq!(&*b.get_now("mz1:p:0").unwrap().unwrap().body, b"again", "served from memory again");
    a.purge("hot", &id(0), PurgeMode::Hard).await.unwrap();
    wait_until("the purge after the restart", DEADLINE, || {
        ready(b.in_memory("mz1:p:0").is_none() && b.stats().last_seq != restarted)
    })
    .await;
    let stats = b.stats();
    assert_eq!((stats.last_seq, stats.resets_gap), (restarted + 1, 0), "applied, not a gap: {stats:?}");
}

/// A gap in the log (the counter moved past purges the reader never saw), or a log lost
/// under the reader (deleted with its counter), empties memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_purge_log_resets_the_tier() {
    let (_server, a, b, mut raw) = start().await;
    let first = b.stats().last_seq;
    cached(&a, &b, "mz1:p:0", 0).await;
    cached(&a, &b, "mz1:p:1", 1).await;
    let _: () = redis::cmd("SET").arg("mz1:{shop}:seq").arg(first + 50).query_async(&mut raw).await.unwrap();
    // A purge of something else entirely, numbered first + 51 where first + 1 was expected.
    a.purge("cart", &Map::new(), PurgeMode::Hard).await.unwrap();
    wait_until("the gap to reset b", DEADLINE, || ready(b.stats().resets_gap == 1)).await;
    assert!(b.in_memory("mz1:p:0").is_none() && b.in_memory("mz1:p:1").is_none(), "memory emptied");
    assert_eq!((b.stats().last_seq, b.stats().purges_applied), (first + 51, 0));
    assert!(b.is_current(), "and it goes on from there");

    // Contiguous again: applied as usual.
    cached(&a, &b, "mz1:p:0", 0).await;
    cached(&a, &b, "mz1:p:1", 1).await;
    a.purge("hot", &id(0), PurgeMode::Hard).await.unwrap();
    wait_until("the next purge", DEADLINE, || ready(b.stats().purges_applied == 1)).await;
    assert!(b.in_memory("mz1:p:0").is_none() && b.in_memory("mz1:p:1").is_some());

    // The log and its counter deleted under the reader: its next empty read starts a new log
    // (from the clock, past the old one) and finds nothing after its last purge up to the
    // new head.
    let _: () = redis::cmd("DEL").arg("mz1:{shop}:seq").arg("mz1:{shop}:log").query_async(&mut raw).await.unwrap();
    wait_until("the lost log to reset b", DEADLINE, || ready(b.stats().resets_gap == 2)).await;
    assert!(b.in_memory("mz1:p:1").is_none());
    let restarted = b.stats().last_seq;
    assert!(restarted > first + 52, "{restarted}");
    assert_eq!(restarted, counter(&mut raw).await, "following the new log from its seed");
    cached(&a, &b, "mz1:p:1", 1).await;
    a.purge("hot", &id(1), PurgeMode::Hard).await.unwrap();
    wait_until("the first purge of the new log", DEADLINE, || {
        ready(b.in_memory("mz1:p:1").is_none() && b.stats().last_seq != restarted)
    })
    .await;
    let stats = b.stats();
    assert_eq!((stats.last_seq, stats.purges_applied, stats.resets_gap), (restarted + 1, 2, 2), "{stats:?}");
}

/// Both log keys deleted while a tier follows the log, then more purges logged than the tier
/// had seen, before its next empty read: the new log's numbers start from Redis's clock, past
/// the old log's, so the reader sees the jump, resets, and does not serve the purged copy.
/// (Were the new log numbered from 1 again, its purge `seen + 1` would look like the one after
/// the reader's last, and the purges before it, the one of the copy among them, go unseen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_log_lost_under_the_tier_and_refilled_past_it_resets_the_tier() {
    let (_server, a, b, mut raw) = start().await;
    let seen = 3;
    for n in 0..seen {
        a.purge("cart", &id(n), PurgeMode::Hard).await.unwrap();
    }
    let followed = counter(&mut raw).await;
    wait_until("b to read the purges", DEADLINE, || ready(b.stats().last_seq == followed)).await;
    cached(&a, &b, "mz1:p:0", 0).await;

    // At once (b's reader is blocked in its read, well before the next empty one): both keys
    // deleted, the purge of b's copy, then more purges than b had seen.
    let _: () = redis::cmd("DEL").arg("mz1:{shop}:seq").arg("mz1:{shop}:log").query_async(&mut raw).await.unwrap();
    a.purge("hot", &id(0), PurgeMode::Hard).await.unwrap();
    for n in 0..seen {
        a.purge("cart", &id(n), PurgeMode::Hard).await.unwrap();
    }
    let head = counter(&mut raw).await;
    wait_until("b to read the new log", DEADLINE, || ready(b.stats().last_seq == head)).await;
    assert!(b.in_memory("mz1:p:0").is_none(), "the purged copy is gone");
    assert_eq!(b.get_now("mz1:p:0"), None, "and not served");
    assert!(b.get("mz1:p:0").await.unwrap().is_none(), "Redis has nothing either");
    let stats = b.stats();
    assert_eq!((stats.resets_gap, stats.resets_error), (1, 0), "{stats:?}");
    assert!(head > followed + seen + 1, "the new log numbers past the old one: {head} after {followed}");
}

/// A malformed entry fails the reader: it resets, reconnects and goes on after the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_purge_log_entry_resets_the_tier_and_it_goes_on() {
    let (_server, a, b, mut raw) = start().await;
    let first = b.stats().last_seq;
    a.purge("cart", &Map::new(), PurgeMode::Hard).await.unwrap();
    cached(&a, &b, "mz1:p:0", 0).await;
    cached(&a, &b, "mz1:p:1", 1).await;
    let bad = format!("{}-1", first + 2);
    let _: () =
        redis::cmd("XADD").arg("mz1:{shop}:log").arg(bad).arg("x").arg("y").query_async(&mut raw).await.unwrap();
    wait_until("b to reset and reconnect", DEADLINE, || {
        ready(b.stats().resets_error == 1 && b.is_current() && b.stats().last_seq == first + 2)
    })
    .await;
    assert!(b.in_memory("mz1:p:0").is_none() && b.in_memory("mz1:p:1").is_none(), "memory emptied");
    cached(&a, &b, "mz1:p:1", 1).await;
    a.purge("hot", &id(1), PurgeMode::Hard).await.unwrap();
    wait_until("the next purge", DEADLINE, || {
        ready(b.in_memory("mz1:p:1").is_none() && b.stats().last_seq != first + 2)
    })
    .await;
    let stats = b.stats();
    assert_eq!((stats.last_seq, stats.resets_gap, stats.resets_error), (first + 3, 0, 1), "{stats:?}");
}

/// A frozen Redis (every client paused): reads stop confirming, so memory stops being
/// served within [`super::BLOCK`] + [`super::GRACE`], and comes back after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_turns_the_tier_off() {
    let (_server, a, b, mut raw) = start().await;
    cached(&a, &b, "mz1:p:0", 0).await;
    // A read blocked when the pause began may still be answered (empty) during it; the
    // next is not: off within BLOCK + (BLOCK + GRACE) of the pause's start.
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(4000).arg("ALL").query_async(&mut raw).await.unwrap();
    let paused = std::time::Instant::now();
    wait_until("b's tier to turn off", DEADLINE, || ready(!b.is_current())).await;
    assert!(paused.elapsed() < Duration::from_millis(4000), "off while Redis was still frozen");
    assert_eq!(b.get_now("mz1:p:0"), None);
    wait_until("b's tier to turn on again", DEADLINE, || ready(b.is_current())).await;
}

/// Shutdown stops the reader: memory is no longer served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_shut_down_serves_no_memory() {
    let (_server, a, b, _raw) = start().await;
    cached(&a, &b, "mz1:p:0", 0).await;
    b.shutdown();
    assert!(!b.is_current());
    assert_eq!(b.get_now("mz1:p:0"), None);
    assert!(b.get("mz1:p:0").await.unwrap().is_some(), "Redis still answers");
}

/// A copy past its freshness is not answered from memory: another node may have stored a
/// newer page (a revalidation), which this node must see rather than render again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_in_memory_gives_way_to_the_newer_page_in_redis() {
    let (_server, a, b, _raw) = start().await;
    let mut old = page(&a, "mz1:p:s", 0, "old").await;
    old.meta.created_at = now_ms() - 70_000; // past its ttl (60 s), within swr
    assert_eq!(a.put(old).await.unwrap(), PutOutcome::Stored);
    assert_eq!(&*b.get("mz1:p:s").await.unwrap().unwrap().body, b"old");
    assert!(b.in_memory("mz1:p:s").is_some(), "the stale copy is in B's memory");
    assert!(b.get_now("mz1:p:s").is_none(), "but not answered from it");
    // A revalidates: a fresh page lands in Redis (puts are not logged: B's copy stays).
    assert_eq!(a.put(page(&a, "mz1:p:s", 0, "new").await).await.unwrap(), PutOutcome::Stored);
    assert_eq!(&*b.get("mz1:p:s").await.unwrap().unwrap().body, b"new", "B sees A's newer page");
    assert!(matches!(b.get_now("mz1:p:s"), Some(Some(e)) if &*e.body == b"new"), "and its copy was replaced");
}
