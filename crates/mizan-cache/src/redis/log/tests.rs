//! Tests of the purge log against a real Redis: numbering (from the clock for a new log,
//! contiguous after), reading back, recovery from a lost counter, malformed entries.

use super::{LoggedPurge, append};
use crate::redis::{Conn, RedisStore};
use crate::testing::RedisServer;
use crate::{PurgeMode, Store};
use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value, json};
use std::time::Duration;

fn params(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn purge(seq: u64, context: &str, p: Value, mode: PurgeMode) -> LoggedPurge {
    LoggedPurge { seq, context: context.into(), params: params(p), mode }
}

async fn start() -> (RedisServer, RedisStore, Conn, MultiplexedConnection) {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "shop").await.unwrap();
    let conn = Conn::open(&server.url()).await.unwrap();
    let raw = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    (server, store, conn, raw)
}

/// Redis's clock in microseconds.
async fn clock(raw: &mut MultiplexedConnection) -> u64 {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(raw).await.unwrap();
    seconds * 1_000_000 + micros
}

/// Asserts that `first` is the first number of a log started from Redis's clock (one past
/// the seed, in microseconds) no later than `now`, and recently: not counted from 1.
fn assert_clock_seeded(first: u64, now: u64) {
    assert!(first > 1_000_000_000_000_000, "{first} is not from the clock");
    assert!(first - 1 <= now && now - (first - 1) < 60_000_000, "{first} is not from the clock at {now}");
}

/// Appends to a new log number purges from Redis's clock, then one more each (contiguous),
/// store the params as JCS, and a reader gets them back in order from any point; the store's
/// purge appends too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_log_numbers_purges_contiguously_and_reads_them_back() {
    let (_server, store, mut conn, mut raw) = start().await;
    let mut log = store.purge_log().await.unwrap();
    assert!(log.read(0, Duration::ZERO).await.unwrap().is_empty(), "no log yet");

    let a = params(json!({"q": "a", "page": 2, "f": 1.5}));
    let first = append(&mut conn, "shop", "search", &a, PurgeMode::Soft).await.unwrap();
    assert_clock_seeded(first, clock(&mut raw).await);
    assert_eq!(append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.unwrap(), first + 1);
    let other = append(&mut conn, "other", "hot", &Map::new(), PurgeMode::Hard).await.unwrap();
    assert_clock_seeded(other, clock(&mut raw).await);
    store.purge("hot", &params(json!({"id": 7})), PurgeMode::Hard).await.unwrap();

    let id = format!("{first}-1");
    let p: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("mz1:{shop}:log").arg(&id).arg(&id).query_async(&mut raw).await.unwrap();
    let fields = &p[0].1;
    assert_eq!(fields[1], ("p".to_string(), r#"{"f":1.5,"page":2,"q":"a"}"#.to_string()), "JCS");
    let expected = vec![
        purge(first, "search", json!({"q": "a", "page": 2, "f": 1.5}), PurgeMode::Soft),
        purge(first + 1, "hot", json!({}), PurgeMode::Hard),
        purge(first + 2, "hot", json!({"id": 7}), PurgeMode::Hard),
    ];
    assert_eq!(log.head().await.unwrap(), first + 2);
    assert_eq!(log.read(0, Duration::from_secs(1)).await.unwrap(), expected);
    assert_eq!(log.read(first, Duration::ZERO).await.unwrap(), expected[1..]);
    assert!(log.read(first + 2, Duration::from_millis(10)).await.unwrap().is_empty(), "nothing after the head");

    // A read waiting at the head returns the next purge once it is appended.
    let waiting = tokio::spawn(async move { log.read(first + 2, Duration::from_secs(1)).await.unwrap() });
    assert_eq!(append(&mut conn, "shop", "cart", &Map::new(), PurgeMode::Soft).await.unwrap(), first + 3);
    let got = waiting.await.unwrap();
    // (Had the read started after the append, it would have found it at once.)
    assert_eq!(got, vec![purge(first + 3, "cart", json!({}), PurgeMode::Soft)]);
}

/// A log that does not exist is started from Redis's clock by whoever comes first: a reader
/// asking for the head (its first purge is then one past it) or an append. Both keys lost,
/// the new log starts past every number the old one reached, however many purges it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_log_a_new_log_starts_from_the_clock_past_any_earlier_one() {
    let (_server, store, mut conn, mut raw) = start().await;
    let mut log = store.purge_log().await.unwrap();
    let head = log.head().await.unwrap();
    assert_clock_seeded(head + 1, clock(&mut raw).await);
    assert_eq!(log.head().await.unwrap(), head, "started once");
    let seed: u64 = redis::cmd("GET").arg("mz1:{shop}:seq").query_async(&mut raw).await.unwrap();
    assert_eq!(seed, head, "the counter holds the seed");
    assert_eq!(append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.unwrap(), head + 1);
    assert_eq!(log.read(head, Duration::ZERO).await.unwrap().len(), 1, "the first purge follows the head");

    for _ in 0..50 {
        append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.unwrap();
    }
    let reached = log.head().await.unwrap();
    assert_eq!(reached, head + 51);
    let _: () = redis::cmd("FLUSHDB").query_async(&mut raw).await.unwrap();
    let restarted = append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.unwrap();
    assert_clock_seeded(restarted, clock(&mut raw).await);
    assert!(restarted > reached + 1, "{restarted} does not follow {reached}");
    let seqs: Vec<u64> = log.read(0, Duration::ZERO).await.unwrap().iter().map(|p| p.seq).collect();
    assert_eq!(seqs, [restarted], "the new log holds its own purge alone");
}

/// A counter deleted while the stream was kept: the next append numbers past the stream's
/// last id instead of failing for ever (or starting a new log), and the numbers stay
/// contiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_log_appends_go_on_past_a_deleted_counter() {
    let (_server, store, mut conn, mut raw) = start().await;
    let first = append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.unwrap();
    for expected in first + 1..=first + 2 {
        assert_eq!(append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.unwrap(), expected);
    }
    let _: () = redis::cmd("DEL").arg("mz1:{shop}:seq").query_async(&mut raw).await.unwrap();
    let mut log = store.purge_log().await.unwrap();
    assert_eq!(log.head().await.unwrap(), first + 2, "the stream's last id, no new log");
    assert_eq!(append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.unwrap(), first + 3);
    assert_eq!(append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.unwrap(), first + 4);
    // Its last entry deleted too: the stream still remembers the id it reached.
    let last = format!("{}-1", first + 4);
    let _: () = redis::cmd("XDEL").arg("mz1:{shop}:log").arg(last).query_async(&mut raw).await.unwrap();
    let _: () = redis::cmd("DEL").arg("mz1:{shop}:seq").query_async(&mut raw).await.unwrap();
    assert_eq!(log.head().await.unwrap(), first + 4);
    assert_eq!(append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.unwrap(), first + 5);
    let seqs: Vec<u64> = log.read(0, Duration::ZERO).await.unwrap().iter().map(|p| p.seq - first).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 5]);
    // A log key of the wrong type is an error, not a loop.
    let _: () = redis::cmd("SET").arg("mz1:{shop}:log").arg("x").query_async(&mut raw).await.unwrap();
    assert!(append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.is_err());
    assert!(log.head().await.is_err());
}

/// Entries that are not the log's own fail the read, naming the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_log_reads_refuse_malformed_entries_by_id() {
    let (_server, store, mut conn, mut raw) = start().await;
    let first = append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.unwrap();
    let mut log = store.purge_log().await.unwrap();
    let cases: [(u64, &str, &[&str], &str); 6] = [
        (1, "1", &["c", "hot", "p", "{}"], "no field m"),
        (2, "1", &["c", "hot", "p", "[1]", "m", "hard"], "field p is not a JSON object"),
        (3, "1", &["c", "hot", "p", "{}", "m", "gentle"], "not hard or soft"),
        (4, "1", &["c", "hot", "p", "{}", "m", "hard", "x", "1"], "unknown field"),
        (5, "1", &["c", "hot", "p", "{}", "m", "hard", "c", "cart"], "field c twice"),
        (6, "2", &["c", "hot", "p", "{}", "m", "hard"], "not <seq>-1"),
    ];
    for (after, n, fields, why) in cases {
        let id = format!("{}-{n}", first + after);
        let _: () = redis::cmd("XADD").arg("mz1:{shop}:log").arg(&id).arg(fields).query_async(&mut raw).await.unwrap();
        let error = log.read(first, Duration::ZERO).await.unwrap_err().to_string();
        assert!(error.contains(&format!("entry {id}")) && error.contains(why), "{id}: {error}");
        let _: () = redis::cmd("XDEL").arg("mz1:{shop}:log").arg(&id).query_async(&mut raw).await.unwrap();
    }
    assert_eq!(log.read(0, Duration::ZERO).await.unwrap().len(), 1, "the good entry reads");
    // The head reads only the last id, so a reader can start after a malformed entry.
    let bad = format!("{}-1", first + 7);
    let _: () =
        redis::cmd("XADD").arg("mz1:{shop}:log").arg(bad).arg("x").arg("y").query_async(&mut raw).await.unwrap();
    assert_eq!(log.head().await.unwrap(), first + 7);
    assert!(log.read(first, Duration::ZERO).await.is_err());
    assert!(log.read(first + 7, Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(append(&mut conn, "shop", "hot", &Map::new(), PurgeMode::Hard).await.unwrap(), first + 8, "past it");
}
