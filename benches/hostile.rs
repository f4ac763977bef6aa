//! Hostile load: good pages requested at a steady rate (half cached product pages, half
//! `/search?q=<unique>`, a 300-row render each) while a looping page (`/spin`) and an
//! allocating page (`/hog`) are hammered by six clients, 50 requests/s each, with distinct URLs
//! (never coalesced);
//! the good pages' latency, measured after 3 s of hostile load (the first bad renders run
//! before their route is known to be bad), is reported next to the same run without it.
//! Target: the good p99 within 2x of the calm run.
//!
//! Run with `cargo bench --bench hostile` (builds the fixtures first with `scripts/setup`).
//! The node runs in this process with the memory store and 2 render workers, the Django
//! fixture origin beside it, the clients in this process too: all on this machine's 2 cores.

use mizan_render::node::{Node, NodeConfig, StoreConfig};
use mizan_render::origin::OriginConfig;
use mizan_render::pool::PoolConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RATE_PER_S: u64 = 20;
const SECONDS: u64 = 15;
const HOSTILE_CLIENTS: usize = 6;
/// Requests per second each hostile client sends (15x the good rate in all): the render
/// node's isolation is measured, not an HTTP flood, which belongs to the layer in front.
const HOSTILE_RATE_PER_S: u64 = 50;
/// Seconds of hostile load before the good pages are measured.
const WARMUP_S: u64 = 3;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let port = mizan_render::testing::free_port();
    let mut origin = mizan_render::testing::django_origin(port, &[]);

    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (calm, hostile, refused) = tokio.block_on(async {
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
            secret: b"mizan-hostile-benchmark-secret-0123456789".to_vec(),
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
        let client = reqwest::Client::new();
        for id in 1..=20 {
            client.get(format!("{url}/products/{id}")).send().await.unwrap();
        }
        let calm = good_load(&client, &url, "calm").await;
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let attackers: Vec<_> = (0..HOSTILE_CLIENTS)
            .map(|n| {
                let (client, url, stop, refused) = (client.clone(), url.clone(), stop.clone(), refused.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    let mut tick = tokio::time::interval(Duration::from_millis(1000 / HOSTILE_RATE_PER_S));
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        i += 1;
                        let page = if n % 2 == 0 { "spin" } else { "hog" };
                        if let Ok(r) = client.get(format!("{url}/{page}?n={n}-{i}")).send().await
                            && r.status() == 503
                        {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i
                })
            })
            .collect();
        // The first bad renders run before their route is known to be bad (a CPU budget each,
        // on every worker); measure the steady state after that.
        tokio::time::sleep(Duration::from_secs(WARMUP_S)).await;
        let hostile = good_load(&client, &url, "hostile").await;
        stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for attacker in attackers {
            sent += attacker.await.unwrap();
        }
        (calm, hostile, (refused.load(Ordering::Relaxed), sent))
    });
    let _ = origin.kill();
    let _ = origin.wait();

    println!("good pages at {RATE_PER_S}/s for {SECONDS} s (half cached, half 300-row renders)");
    println!("| run | good p50 | good p99 | render p50 | render p99 | errors |");
    println!("|---|---|---|---|---|---|");
    for (name, run) in [("calm", &calm), ("with /spin and /hog hammered", &hostile)] {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            pct(&run.all, 50.0),
            pct(&run.all, 99.0),
            pct(&run.renders, 50.0),
            pct(&run.renders, 99.0),
            run.errors
        );
    }
    println!(
        "| hostile requests | {} sent by {HOSTILE_CLIENTS} clients, {} refused at once (503) | | | | |",
        refused.1, refused.0
    );
    println!("good p99 with hostile load / calm: {:.2}x (target ≤ 2x)", pct(&hostile.all, 99.0) / pct(&calm.all, 99.0));
}

struct Run {
    all: Vec<f64>,
    renders: Vec<f64>,
    errors: u64,
}

/// Good requests at a steady rate, each on its own task so a slow answer never delays the
/// schedule; latencies in milliseconds.
async fn good_load(client: &reqwest::Client, url: &str, tag: &str) -> Run {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE_PER_S));
    let mut tasks = Vec::new();
    for i in 0..RATE_PER_S * SECONDS {
        tick.tick().await;
        let (client, url) = (client.clone(), url.to_string());
        let (path, render) = if i % 2 == 0 {
            (format!("/products/{}", i % 20 + 1), false)
        } else {
            (format!("/search?q={tag}-{i}"), true)
        };
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let ok = client.get(format!("{url}{path}")).send().await.is_ok_and(|r| r.status() == 200);
            (started.elapsed().as_secs_f64() * 1e3, render, ok)
        }));
    }
    let mut run = Run { all: Vec::new(), renders: Vec::new(), errors: 0 };
    for task in tasks {
        let (ms, render, ok) = task.await.unwrap();
        run.errors += u64::from(!ok);
        run.all.push(ms);
        if render {
            run.renders.push(ms);
        }
    }
    run
}

fn pct(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}
