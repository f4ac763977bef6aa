//! Cache benchmark: get (hit) and purge on each backend, with 100 000 entries and a purge
//! that matches 1 % of them (1 000 entries); then hits while a large purge runs: 20 000
//! entries, a reader task hammering gets (and a render's `generations` call) while another
//! task purges 10 000 of them. Redis is a real `redis-server` started here.
//!
//! Run with `cargo bench --bench cache` (or `bench/run.sh`); `MIZAN_BENCH_STORES=memory,redis`
//! runs a subset, `MIZAN_BENCH_PARTS=purge` only the second part (`table` only the first).

use mizan_render::cache::memory::MemoryStore;
use mizan_render::cache::redis::RedisStore;
use mizan_render::cache::sqlite::SqliteStore;
use mizan_render::cache::{Entry, Meta, PurgeMode, Store, now_ms};
use mizan_render::testing::RedisServer;
use serde_json::{Map, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ENTRIES: usize = 100_000;
const GETS: usize = 100_000;
const PURGES: usize = 10;

/// The page key of entry `i`: its leading hex digits scattered (as an HMAC's are), so the
/// entries spread over the Redis store's buckets as real keys do.
fn key(i: usize) -> String {
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("mz1:p:{:016x}{i:048x}", z ^ (z >> 31))
}

fn entry(i: usize) -> Entry {
    let meta: Meta = serde_json::from_value(json!({
        "v": 1, "kind": "page", "key": key(i), "status": 200,
        "headers": [["content-type", "text/html; charset=utf-8"]],
        "created_at": now_ms(), "ttl_s": 3600, "swr_s": 60, "sie_s": 600,
        "deps": [{"context": "product_detail", "params": {"id": i % 100}}, {"context": "product_list", "params": {}}],
        "etag": format!("\"{i:x}\""), "generation": {"product_detail": 0, "product_list": 0}
    }))
    .unwrap();
    Entry { body: vec![b'x'; 2048].into(), meta }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Entries of the large-purge part: `BULK` of them, half (`BULK / 2`) depending on
/// `product_detail {"id": 0}`, the other half on `{"id": 1}`; all on `product_list {}`.
const BULK: usize = 20_000;

fn bulk_key(i: usize) -> String {
    key(ENTRIES + i)
}

fn bulk_entry(i: usize) -> Entry {
    let mut e = entry(i);
    e.meta.key = bulk_key(i);
    e.meta.deps[0].params = json!({"id": i % 2}).as_object().unwrap().clone();
    e
}

/// Lines printed under the table.
fn notes() -> std::sync::MutexGuard<'static, Vec<String>> {
    static NOTES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    NOTES.lock().unwrap()
}

/// What a reader saw: (start offset, latency µs) of each get and each `generations` call.
#[derive(Default)]
struct Seen {
    gets: Vec<(Duration, f64)>,
    generations: Vec<(Duration, f64)>,
}

/// A reader task: random hits on the half that is never purged and, every 16th call, the
/// `generations` read a render starts with; yields to the runtime every 16 calls, as a
/// server task would between requests. Runs until `stop`.
fn reader(store: Arc<dyn Store>, origin: Instant, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let contexts = vec!["product_detail".to_string(), "product_list".to_string()];
        let mut x = 99991usize;
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let i = ((x >> 33) % (BULK / 2)) * 2 + 1;
            let s = Instant::now();
            let got = store.get(&bulk_key(i)).await.unwrap();
            seen.gets.push((s - origin, s.elapsed().as_secs_f64() * 1e6));
            assert!(got.is_some(), "an entry the purge does not match is a hit");
            if n.is_multiple_of(16) {
                let s = Instant::now();
                store.generations(&contexts).await.unwrap();
                seen.generations.push((s - origin, s.elapsed().as_secs_f64() * 1e6));
                tokio::task::yield_now().await;
            }
        }
        seen
    })
}

/// Hit latency while a purge of `BULK / 2` entries runs, next to the same reader without a
/// purge.
async fn during_purge(name: &str, store: Arc<dyn Store>, redis_url: Option<&str>) {
    for i in 0..BULK {
        store.put(bulk_entry(i)).await.unwrap();
    }
    let origin = Instant::now();

    // Calm: the reader alone for 300 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let calm = reader(store.clone(), origin, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let calm = calm.await.unwrap();
    let mut calm_gets: Vec<f64> = calm.gets.iter().map(|(_, l)| *l).collect();
    calm_gets.sort_by(f64::total_cmp);

    // On Redis, the server's own time for each script call the purge makes (the slow log of
    // every command, the reader's included).
    let mut raw = match redis_url {
        Some(url) => {
            let mut raw = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
            for (name, value) in [("slowlog-log-slower-than", "0"), ("slowlog-max-len", "100000")] {
                let _: () = redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query_async(&mut raw).await.unwrap();
            }
            let _: () = redis::cmd("SLOWLOG").arg("RESET").query_async(&mut raw).await.unwrap();
            Some(raw)
        }
        None => None,
    };

    // The same reader, and after 50 ms of it a purge of half the entries on another task.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = reader(store.clone(), origin, stop.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let purger = store.clone();
    let (from, to, n) = tokio::spawn(async move {
        let params: Map<_, _> = json!({"id": 0}).as_object().unwrap().clone();
        let from = origin.elapsed();
        let n = purger.purge("product_detail", &params, PurgeMode::Hard).await.unwrap();
        (from, origin.elapsed(), n)
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let busy = busy.await.unwrap();
    assert_eq!(n as usize, BULK / 2, "the purge matched half the entries");
    let scripts = match &mut raw {
        Some(raw) => {
            let log: Vec<redis::Value> = redis::cmd("SLOWLOG").arg("GET").arg(-1).query_async(raw).await.unwrap();
            // Each record: id, time, microseconds, [command, args…], …
            let mut calls: Vec<u64> = log
                .iter()
                .filter_map(|record| match record {
                    redis::Value::Array(fields) => match (&fields[2], &fields[3]) {
                        (redis::Value::Int(us), redis::Value::Array(command)) => match &command[0] {
                            redis::Value::BulkString(c) if c.eq_ignore_ascii_case(b"evalsha") => Some(*us as u64),
                            _ => None,
                        },
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            calls.sort();
            let total: u64 = calls.iter().sum();
            format!(
                "; Redis ran it as {} script call(s), {:.1} ms in all, the longest {:.2} ms (server time)",
                calls.len(),
                total as f64 / 1e3,
                calls.last().copied().unwrap_or(0) as f64 / 1e3
            )
        }
        None => String::new(),
    };
    for i in [0, 2, BULK - 2] {
        assert!(store.get(&bulk_key(i)).await.unwrap().is_none(), "purged entries are gone");
    }
    let within = |v: &[(Duration, f64)]| {
        // Every call that overlapped the purge: started before its end, ended after its start.
        let overlaps = |at: Duration, l: f64| at <= to && at + Duration::from_secs_f64(l / 1e6) >= from;
        let mut l: Vec<f64> = v.iter().filter(|(at, l)| overlaps(*at, *l)).map(|(_, l)| *l).collect();
        l.sort_by(f64::total_cmp);
        l
    };
    let (gets, gens) = (within(&busy.gets), within(&busy.generations));
    // The reader's longest stall: the longest time between two of its calls' starts, over
    // the gaps that meet the purge (a reader that cannot run at all makes no samples).
    let mut calls: Vec<(Duration, f64)> = busy.gets.iter().chain(&busy.generations).copied().collect();
    calls.sort_by_key(|(at, _)| *at);
    let mut starts: Vec<Duration> = calls.iter().map(|(at, _)| *at).collect();
    // The last call ends the last gap.
    starts.extend(calls.last().map(|(at, l)| *at + Duration::from_secs_f64(l / 1e6)));
    let stall = starts.windows(2).filter(|w| w[0] <= to && w[1] >= from).map(|w| w[1] - w[0]).max().unwrap_or_default();
    println!(
        "| {name} | {:.1} ms | {:.1} ms | {} | {:.1} µs | **{:.1} µs** | {:.1} µs | {} | {:.1} µs | {:.1} µs | {:.1} / {:.1} / {:.1} µs |",
        (to - from).as_secs_f64() * 1e3,
        stall.as_secs_f64() * 1e3,
        gets.len(),
        percentile(&gets, 0.5),
        percentile(&gets, 0.99),
        gets.last().copied().unwrap_or(f64::NAN),
        gens.len(),
        percentile(&gens, 0.99),
        gens.last().copied().unwrap_or(f64::NAN),
        percentile(&calm_gets, 0.5),
        percentile(&calm_gets, 0.99),
        calm_gets.last().copied().unwrap_or(f64::NAN),
    );
    if !scripts.is_empty() {
        notes().push(format!("{name}{scripts}"));
    }
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
        let key = key((x >> 33) % ENTRIES);
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
        let key = key(i);
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
    // MIZAN_BENCH_STORES=memory,redis runs a subset; MIZAN_BENCH_PARTS=table,purge likewise.
    let only = std::env::var("MIZAN_BENCH_STORES").unwrap_or_else(|_| "memory,sqlite,redis".into());
    let wanted = |name: &str| only.split(',').any(|s| s == name);
    let parts = std::env::var("MIZAN_BENCH_PARTS").unwrap_or_else(|_| "table,purge".into());
    let part = |name: &str| parts.split(',').any(|s| s == name);
    let sqlite_path = |what: &str| std::env::temp_dir().join(format!("mizan-bench-{what}-{}.db", std::process::id()));
    let remove_db = |path: &std::path::Path| {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    };
    tokio.block_on(async {
        if part("table") {
            println!(
                "{ENTRIES} entries (2 KiB bodies, 3 tags each); gets of random present keys; purges of 1 % ({} entries)",
                ENTRIES / 100
            );
            println!(
                "| store | fill | get | get p50 | get p99 | purge 1k p50 | purge 1k max of {PURGES} | purge rate | get p50 / p99 after the purges |"
            );
            println!("|---|---|---|---|---|---|---|---|---|");
            if wanted("memory") {
                bench("memory", Arc::new(MemoryStore::new(1 << 30))).await;
            }
            if wanted("sqlite") {
                let path = sqlite_path("table");
                bench("sqlite", Arc::new(SqliteStore::open(&path, "bench").unwrap())).await;
                remove_db(&path);
            }
            if wanted("redis") {
                let server = RedisServer::start();
                bench("redis", Arc::new(RedisStore::connect(&server.url(), "bench").await.unwrap())).await;
            }
        }
        if part("purge") {
            println!();
            println!(
                "{BULK} entries; a reader task: random hits on the half never purged, and every 16th call a \
                 render's `generations` read; another task purges the other half ({} entries) after 50 ms of it",
                BULK / 2
            );
            println!(
                "| store | purge 10k | reader's longest stall | gets overlapping it | get p50 | get p99 | get max | generations calls | generations p99 | generations max | get p50 / p99 / max without a purge |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|");
            if wanted("memory") {
                during_purge("memory", Arc::new(MemoryStore::new(1 << 30)), None).await;
            }
            if wanted("sqlite") {
                let path = sqlite_path("purge");
                during_purge("sqlite", Arc::new(SqliteStore::open(&path, "bench").unwrap()), None).await;
                remove_db(&path);
            }
            if wanted("redis") {
                let server = RedisServer::start();
                let store = Arc::new(RedisStore::connect(&server.url(), "bench").await.unwrap());
                during_purge("redis", store, Some(&server.url())).await;
            }
            for note in notes().iter() {
                println!("\n{note}");
            }
        }
    });
}
