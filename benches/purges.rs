//! Purges under read load: 1,000 product pages read at 400 requests/s (uniformly random ids)
//! while 20 mutations/s, each of one random product, go through the node's proxy to the
//! origin, whose `X-Mizan-Invalidate: product_detail;id=<id>, product_list` purges that
//! product's page before the answer is relayed. Reported after the cache was filled with all
//! 1,000 pages and 15 s of the load, over 20 s: the readers' hit rate (`X-Mizan-Cache: HIT`),
//! origin calls per second (the fixture origin's `/_test/stats`), renders and writes dropped
//! because a purge moved a generation while their render ran (`/_mizan/health`), reader
//! p50/p99 and the p50 of the reads that were not hits; and the same run without mutations as
//! the reference. Each run starts from the same state: every product page and data entry
//! purged, then every page rendered again, so no page is older than its 60 s ttl by the end.
//!
//! Run with `cargo bench --bench purges` (builds the fixtures first with `scripts/setup`).
//! The node runs in this process with the memory store and 2 render workers, the Django
//! fixture origin beside it (`FIXTURE_ORIGIN_PRODUCTS=1000`: its 300-product catalogue
//! extended to 1,000), the clients in this process too: all on this machine's 2 cores.

use mizan_render::cache::PurgeMode;
use mizan_render::node::{Node, NodeConfig, StoreConfig};
use mizan_render::origin::OriginConfig;
use mizan_render::pool::PoolConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PAGES: u64 = 1000;
/// Far below what the hit path sustains (125 000/s under wrk, bench/RESULTS.md): the latencies
/// show the cache, not a saturated machine (the whole benchmark, origin included, uses about
/// 15 % of one core). Each page is read every 2.5 s on average, so a purged page is read, and
/// rendered again, within seconds.
const READS_PER_S: u64 = 400;
const PURGES_PER_S: u64 = 20;
/// Seconds of load before the measurement: the number of purged pages not stored again rises
/// to a steady one, with a time constant of about 5 s before per-tag generations.
const WARMUP_S: u64 = 15;
const SECONDS: u64 = 20;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let port = mizan_render::testing::free_port();
    let mut origin = mizan_render::testing::django_origin(port, &[("FIXTURE_ORIGIN_PRODUCTS", &PAGES.to_string())]);

    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (calm, purged) = tokio.block_on(async {
        let config = NodeConfig {
            manifest: root.join("fixtures/manifests/react.json"),
            origin: OriginConfig {
                base: format!("http://127.0.0.1:{port}"),
                timeout: Duration::from_secs(5),
                max_body: 8 << 20,
                max_concurrent: 64,
            },
            store: StoreConfig::Memory(256 << 20),
            pool: PoolConfig { workers: 2, queue: 128, ..PoolConfig::default() },
            secret: b"mizan-purges-benchmark-secret-0123456789".to_vec(),
            dev: false,
            forwarding: Default::default(),
            memo_bytes: mizan_render::node::DEFAULT_MEMO_BYTES,
            metrics: None,
            shared: Default::default(),
        };
        let node = Node::start(config.clone()).await.unwrap();
        let live = mizan_render::node::live::Live::new(node.clone(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = mizan_render::server::app(live).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let load = Load { node, client: reqwest::Client::new(), url, origin: format!("http://127.0.0.1:{port}") };
        (load.run(false).await, load.run(true).await)
    });
    let _ = origin.kill();
    let _ = origin.wait();

    println!(
        "{PAGES} product pages read at {READS_PER_S}/s, uniformly random, for {SECONDS} s after {WARMUP_S} s of load"
    );
    println!(
        "| run | purges/s | hit rate | origin calls/s | renders | writes dropped by purges | reader p50 | reader p99 | miss p50 | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, run) in [("no purges", &calm), ("20 purges/s of single products", &purged)] {
        let hits = run.latencies.len() - run.misses.len();
        println!(
            "| {name} | {:.1} | {:.1} % ({} of {}) | {:.1} | {} | {} | {:.1} ms | {:.1} ms | {} | {} |",
            run.purges as f64 / SECONDS as f64,
            100.0 * hits as f64 / run.latencies.len() as f64,
            hits,
            run.latencies.len(),
            run.counted.origin as f64 / SECONDS as f64,
            run.counted.renders,
            run.counted.dropped,
            pct(&run.latencies, 50.0),
            pct(&run.latencies, 99.0),
            if run.misses.is_empty() { "-".into() } else { format!("{:.1} ms", pct(&run.misses, 50.0)) },
            run.errors
        );
    }
}

#[derive(Default)]
struct Run {
    /// Reader latencies in the measured window, milliseconds.
    latencies: Vec<f64>,
    /// Those of the reads that were not hits (`X-Mizan-Cache` other than `HIT`).
    misses: Vec<f64>,
    errors: u64,
    /// Mutations answered 200 in the measured window.
    purges: u64,
    /// Counter increments over the measured window.
    counted: Counters,
}

struct Load {
    node: Arc<Node>,
    client: reqwest::Client,
    /// The node.
    url: String,
    /// The origin, for its stats.
    origin: String,
}

impl Load {
    /// Every product page and data entry purged and rendered again, then the load; measured
    /// after [`WARMUP_S`].
    async fn run(&self, purges: bool) -> Run {
        let Load { node, client, url, origin } = self;
        node.store.purge("product_detail", &serde_json::Map::new(), PurgeMode::Hard).await.unwrap();
        // Every page once, 8 at a time: each answer comes after its write, so the cache is full.
        use futures_util::StreamExt as _;
        futures_util::stream::iter(1..=PAGES)
            .for_each_concurrent(8, |id| {
                let request = client.get(format!("{url}/products/{id}")).send();
                async move { assert_eq!(request.await.unwrap().status(), 200, "/products/{id}") }
            })
            .await;

        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let mutator = purges.then(|| {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut seed, mut counted) = (2u64, 0);
                let mut tick = tokio::time::interval(Duration::from_millis(1000 / PURGES_PER_S));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let in_window = (WARMUP_S..WARMUP_S + SECONDS).contains(&started.elapsed().as_secs());
                    let id = random(&mut seed) % PAGES + 1;
                    let body = format!("{{\"stock\": {}}}", random(&mut seed) % 40);
                    let answer = client.post(format!("{url}/api/products/{id}")).body(body).send().await;
                    let ok = answer.is_ok_and(|a| a.status() == 200);
                    assert!(ok, "the mutation of product {id} failed");
                    counted += u64::from(in_window);
                }
                counted
            })
        });

        // Open loop: each read on its own task, so a slow answer never delays the schedule.
        let mut seed = 1u64;
        let mut before = None;
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / READS_PER_S));
        let mut tasks = Vec::new();
        for i in 0..READS_PER_S * (WARMUP_S + SECONDS) {
            tick.tick().await;
            if i == READS_PER_S * WARMUP_S {
                before = Some(tokio::spawn(counters(client.clone(), url.clone(), origin.to_string())));
            }
            let (client, url) = (client.clone(), url.clone());
            let id = random(&mut seed) % PAGES + 1;
            let measured = i >= READS_PER_S * WARMUP_S;
            tasks.push(tokio::spawn(async move {
                let at = Instant::now();
                let answer = client.get(format!("{url}/products/{id}")).send().await;
                let (ok, hit) = match answer {
                    Ok(a) => {
                        let hit = a.headers().get("x-mizan-cache").is_some_and(|v| v == "HIT");
                        (a.status() == 200 && a.bytes().await.is_ok(), hit)
                    }
                    Err(_) => (false, false),
                };
                (measured, at.elapsed().as_secs_f64() * 1e3, ok, hit)
            }));
        }
        stop.store(true, Ordering::Relaxed);
        let mut run = Run::default();
        for task in tasks {
            let (measured, ms, ok, hit) = task.await.unwrap();
            if measured {
                run.latencies.push(ms);
                if !hit {
                    run.misses.push(ms);
                }
                run.errors += u64::from(!ok);
            }
        }
        let after = counters(client.clone(), url.clone(), origin.to_string()).await;
        run.counted = after.since(&before.expect("the load outlasts its warm-up").await.unwrap());
        if let Some(mutator) = mutator {
            run.purges = mutator.await.unwrap();
        }
        run
    }
}

#[derive(Debug, Default)]
struct Counters {
    /// Renders (the node's `renders.ok`).
    renders: u64,
    /// Writes dropped because a purge moved a generation (`dropped_writes`).
    dropped: u64,
    /// `product_detail` calls the origin answered.
    origin: u64,
}

impl Counters {
    fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            renders: self.renders - earlier.renders,
            dropped: self.dropped - earlier.dropped,
            origin: self.origin - earlier.origin,
        }
    }
}

async fn counters(client: reqwest::Client, node: String, origin: String) -> Counters {
    let get = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let (health, stats) = tokio::join!(get(format!("{node}/_mizan/health")), get(format!("{origin}/_test/stats")));
    let count = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    Counters {
        renders: count(&health["renders"]["ok"]),
        dropped: count(&health["dropped_writes"]),
        origin: count(&stats["calls"]["product_detail"]),
    }
}

/// splitmix64: uniform ids, the same sequence every run.
fn random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pct(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}
