//! Render benchmark for the product list page (300 rows) of each fixture app (React, Vue,
//! Svelte): isolate creation from the app snapshot, pure in-isolate render time, the same
//! render through the pool (one worker, one request at a time: the pool's overhead), pool
//! throughput with every core busy, and Node rendering the same bundle with the same input;
//! for bundles with `renderStream` (React, Vue), the same page streamed: time to first byte,
//! time to last byte and renders/s beside the buffered path; then tables comparing the three
//! frameworks.
//!
//! Run with `bench/run.sh` (builds the fixtures first) or `cargo bench --bench render`. Each
//! framework runs in a process of its own (this binary again, with `MIZAN_BENCH_APP` set): a
//! process holds isolates of one snapshot at a time.

use mizan_render::abi::input_json;
use mizan_render::manifest::Manifest;
use mizan_render::oneshot::{OriginAnswer, page_input};
use mizan_render::pool::{BundleSource, Isolate, Isolation, Pool, PoolConfig, RenderOptions, snapshot};
use serde_json::{Value, json};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

const RENDERS: usize = 2000;
const WARMUP: usize = 200;

const APPS: [&str; 3] = ["react", "vue", "svelte"];

fn main() {
    match std::env::var("MIZAN_BENCH_APP") {
        Ok(app) => bench(&app),
        Err(_) => compare(),
    }
}

/// Runs the benchmark of each app in a process of its own, passes its report through, and
/// prints the frameworks side by side.
fn compare() {
    let mut rows = Vec::new();
    for app in APPS {
        let out = Command::new(std::env::current_exe().unwrap())
            .env("MIZAN_BENCH_APP", app)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the {app} benchmark failed:\n{text}");
        let mut summary = None;
        for line in text.lines() {
            match line.strip_prefix("summary ") {
                Some(json) => summary = Some(serde_json::from_str::<Value>(json).unwrap()),
                None => println!("{line}"),
            }
        }
        println!();
        rows.push((app, summary.expect("a summary line")));
    }
    println!("## Frameworks side by side (product list, 300 rows)");
    println!();
    println!(
        "| framework | HTML bytes | pure render | pool, {} workers | Node, same bundle | ours vs Node |",
        rows[0].1["cores"]
    );
    println!("|---|---|---|---|---|---|");
    for (app, s) in &rows {
        let (ours, node) = (s["pure_ms"].as_f64().unwrap(), s["node_ms"].as_f64());
        println!(
            "| {app} | {} | {ours:.3} ms | {:.0} renders/s | {} | {} |",
            s["bytes"],
            s["throughput"].as_f64().unwrap(),
            node.map_or("not found".into(), |n| format!("{n:.3} ms")),
            node.map_or("".into(), |n| format!("{:.2}x", ours / n)),
        );
    }
    println!();
    println!("## Streamed vs buffered misses (product list, through the pool)");
    println!();
    println!("One worker, one render at a time: a buffered page's first byte leaves with its last.");
    println!();
    println!(
        "| framework | buffered: first = last byte | streamed: first byte | streamed: last byte | buffered, {0} workers | streamed, {0} workers |",
        rows[0].1["cores"]
    );
    println!("|---|---|---|---|---|---|");
    for (app, s) in &rows {
        let stream = &s["stream"];
        if stream.is_null() {
            println!(
                "| {app} | {:.3} ms | no renderStream: renders buffered | | {:.0} renders/s | |",
                f(&s["pooled_ms"]),
                f(&s["throughput"])
            );
            continue;
        }
        println!(
            "| {app} | {:.3} ms | {:.3} ms | {:.3} ms | {:.0} renders/s | {:.0} renders/s |",
            f(&s["pooled_ms"]),
            f(&stream["ttfb_ms"]),
            f(&stream["ttlb_ms"]),
            f(&s["throughput"]),
            f(&stream["throughput"]),
        );
    }
}

fn f(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

fn bench(app: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let manifest = Manifest::load(&root.join(format!("fixtures/manifests/{app}.json"))).unwrap();
    let bundle_name = format!("{app}_app");
    let bundle_path = manifest.bundle_path(&bundle_name).unwrap();
    let bundle = BundleSource::read(&bundle_name, &bundle_path).expect("run scripts/setup to build the fixture bundle");
    let (name, page, input) = page_input(&manifest, "/products", &answers(&root)).unwrap();
    let json = input_json(&page, &input).unwrap();

    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let started = Instant::now();
    let app_snapshot = snapshot::build(std::slice::from_ref(&bundle)).unwrap();
    let snapshot_ms = ms(started);

    // Isolate creation from the app snapshot (runtime-js, deno_web and the bundle loaded).
    let mut create = Vec::new();
    tokio.block_on(async {
        for _ in 0..50 {
            let t = Instant::now();
            let isolate = Isolate::new(app_snapshot, &name, 256 << 20).unwrap();
            create.push(ms(t));
            drop(isolate);
        }
    });

    // Pure render: one isolate on this thread, the same JSON input, no queue or thread hop.
    let pure = tokio.block_on(async {
        let mut isolate = Isolate::new(app_snapshot, &name, 256 << 20).unwrap();
        let mut html_len = 0;
        for _ in 0..WARMUP {
            html_len = isolate.render(&name, &page, &json).await.unwrap().html.len();
        }
        let t = Instant::now();
        for _ in 0..RENDERS {
            isolate.render(&name, &page, &json).await.unwrap();
        }
        (ms(t) / RENDERS as f64, html_len)
    });

    // Pure streamed render (`renderStream`), for a bundle that has it: the same page in chunks,
    // each handed out as it comes; when the first one left, and when the last did.
    let pure_stream = tokio.block_on(async {
        let mut isolate = Isolate::new(app_snapshot, &name, 256 << 20).unwrap();
        if !isolate.streams() {
            return None;
        }
        let mut render = async || {
            let (t, first, chunks) = (Instant::now(), Rc::new(Cell::new(None)), Rc::new(Cell::new(0)));
            let (seen, counted) = (first.clone(), chunks.clone());
            let chunk = move |_: &[u8]| {
                seen.set(seen.get().or(Some(Instant::now())));
                counted.set(counted.get() + 1);
                true
            };
            isolate.render_stream(&name, &page, &json, |_, _| {}, chunk).await.unwrap();
            (first.get().map_or(f64::NAN, |f: Instant| (f - t).as_secs_f64() * 1e3), ms(t), chunks.get())
        };
        for _ in 0..WARMUP {
            render().await;
        }
        let (mut first, mut last, mut chunks) = (0.0, 0.0, 0);
        for _ in 0..RENDERS {
            let (f, l, c) = render().await;
            (first, last, chunks) = (first + f, last + l, c);
        }
        Some((first / RENDERS as f64, last / RENDERS as f64, chunks))
    });

    // What the pool does before the hop: the input to JSON text, on the caller's thread.
    let t = Instant::now();
    for _ in 0..RENDERS {
        std::hint::black_box(input_json(&page, &input).unwrap());
    }
    let serialise = ms(t) / RENDERS as f64;

    // Through the pool: one worker, sequential requests from a multi-thread runtime.
    let multi = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let config = PoolConfig { workers: 1, queue: 1024, max_renders_per_isolate: u64::MAX, ..PoolConfig::default() };
    let pool = Pool::start(config, std::slice::from_ref(&bundle)).unwrap();
    let pooled = multi.block_on(async {
        for _ in 0..WARMUP {
            pool.render(&name, &page, &input).await.unwrap();
        }
        let t = Instant::now();
        for _ in 0..RENDERS {
            pool.render(&name, &page, &input).await.unwrap();
        }
        ms(t) / RENDERS as f64
    });
    // The same, streamed: when the caller has the first chunk, and the last.
    let streamed = pool.streams(&name).then(|| {
        multi.block_on(async {
            let render = async || {
                let t = Instant::now();
                let mut stream = pool.render_stream_with(&name, &page, &input, RenderOptions::default()).await.unwrap();
                stream.next_chunk().await.unwrap();
                let first = ms(t);
                while stream.next_chunk().await.unwrap().is_some() {}
                (first, ms(t))
            };
            for _ in 0..WARMUP {
                render().await;
            }
            let (mut first, mut last) = (0.0, 0.0);
            for _ in 0..RENDERS {
                let (f, l) = render().await;
                (first, last) = (first + f, last + l);
            }
            (first / RENDERS as f64, last / RENDERS as f64)
        })
    });
    drop(pool);

    // Throughput: one worker per core, enough requests in flight to keep them busy.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let input = Arc::new(input);
    let module_throughput = throughput(&multi, &bundle, cores, &name, &page, &input, RENDERS, false);
    let streamed_throughput = streamed.map(|_| throughput(&multi, &bundle, cores, &name, &page, &input, RENDERS, true));

    // Strict isolation (`isolation: "render"`): every render starts from a fresh isolate; the
    // worker replaces it after answering, so a busy worker pays the creation per render.
    let mut strict = bundle.clone();
    strict.isolation = Isolation::Render;
    let config = PoolConfig { workers: 1, queue: 1024, ..PoolConfig::default() };
    let pool = Pool::start(config, std::slice::from_ref(&strict)).unwrap();
    let strict_sequential = multi.block_on(async {
        for _ in 0..WARMUP / 4 {
            pool.render(&name, &page, &input).await.unwrap();
        }
        let t = Instant::now();
        for _ in 0..RENDERS / 4 {
            pool.render(&name, &page, &input).await.unwrap();
        }
        ms(t) / (RENDERS / 4) as f64
    });
    drop(pool);
    let strict_throughput = throughput(&multi, &strict, cores, &name, &page, &input, RENDERS / 4, false);

    let node = node_render(&root, &bundle_path, &json);

    let hop = pooled - pure.0 - serialise;
    let mut create_sorted = create.clone();
    create_sorted.sort_by(f64::total_cmp);
    println!(
        "## {app}: product list page, {} bytes of HTML, {} renders per figure after {} warm-up",
        pure.1, RENDERS, WARMUP
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| app snapshot build (runtime-js + deno_web + bundle) | {snapshot_ms:.1} ms |");
    println!("| isolate from snapshot, median of 50 | {:.2} ms |", create_sorted[25]);
    println!("| isolate from snapshot, best of 50 | {:.2} ms |", create_sorted[0]);
    println!("| pure in-isolate render | {:.3} ms/render |", pure.0);
    println!("| input to JSON on the caller (part of every render, pool or not) | {:.1} µs/render |", serialise * 1e3);
    println!("| through the pool, 1 worker, sequential, input serialised per call | {pooled:.3} ms/render |");
    println!(
        "| pool overhead: queue, thread hop, reply | {:.1} µs/render = {:.1} % of the pure render |",
        hop * 1e3,
        hop / pure.0 * 100.0
    );
    println!(
        "| through the pool vs pure render + serialisation | +{:.1} % |",
        (pooled - pure.0 - serialise) / (pure.0 + serialise) * 100.0
    );
    println!("| pool throughput, {cores} workers, {} in flight | {module_throughput:.0} renders/s |", 4 * cores);
    println!(
        "| strict isolation (fresh isolate per render), 1 worker, sequential | {strict_sequential:.3} ms/render (+{:.3} ms) |",
        strict_sequential - pooled
    );
    println!(
        "| strict isolation throughput, {cores} workers | {strict_throughput:.0} renders/s = {:.0} % of module isolation |",
        strict_throughput / module_throughput * 100.0
    );
    match (pure_stream, streamed, streamed_throughput) {
        (Some((pure_first, pure_last, chunks)), Some((first, last)), Some(streamed_throughput)) => {
            println!(
                "| pure in-isolate render, streamed (renderStream), {chunks} chunks | first chunk after {pure_first:.3} ms, last after {pure_last:.3} ms ({:+.0} % vs buffered) |",
                (pure_last / pure.0 - 1.0) * 100.0
            );
            println!(
                "| through the pool, 1 worker, sequential, buffered: first byte = last byte | {pooled:.3} ms/render |"
            );
            println!("| through the pool, 1 worker, sequential, streamed: time to first byte | {first:.3} ms |");
            println!("| through the pool, 1 worker, sequential, streamed: time to last byte | {last:.3} ms |");
            println!(
                "| pool throughput streamed, {cores} workers, {} in flight | {streamed_throughput:.0} renders/s = {:.0} % of buffered |",
                4 * cores,
                streamed_throughput / module_throughput * 100.0
            );
        }
        _ => {
            println!("| streamed (renderStream) | the bundle has none: a route that asks to stream renders buffered |")
        }
    }
    match node {
        Some((node_ms, bytes)) => {
            assert_eq!(bytes, pure.1, "Node rendered a different page");
            println!("| Node {} same bundle, same input | {node_ms:.3} ms/render |", node_version());
            println!("| pure render vs Node | {:.2}x Node's time |", pure.0 / node_ms);
        }
        None => println!("| Node | not found on PATH |"),
    }
    let stream = streamed
        .zip(streamed_throughput)
        .map(|((ttfb, ttlb), throughput)| json!({"ttfb_ms": ttfb, "ttlb_ms": ttlb, "throughput": throughput}));
    let summary = json!({
        "bytes": pure.1, "pure_ms": pure.0, "pooled_ms": pooled, "throughput": module_throughput, "cores": cores,
        "node_ms": node.map(|(ms, _)| ms), "stream": stream,
    });
    println!("summary {summary}");
}

/// Renders per second of a pool of `cores` workers for `bundle`, with four requests in flight
/// per worker; `streamed`: through `renderStream`, each caller reading the body to its end.
#[allow(clippy::too_many_arguments)]
fn throughput(
    runtime: &tokio::runtime::Runtime,
    bundle: &BundleSource,
    cores: usize,
    name: &str,
    page: &str,
    input: &Arc<mizan_render::abi::PageInput>,
    renders: usize,
    streamed: bool,
) -> f64 {
    let config = PoolConfig { workers: cores, queue: 1024, max_renders_per_isolate: u64::MAX, ..PoolConfig::default() };
    let pool = Arc::new(Pool::start(config, std::slice::from_ref(bundle)).unwrap());
    runtime.block_on(async {
        let run = |n: usize| {
            let tasks: Vec<_> = (0..4 * cores)
                .map(|_| {
                    let (pool, input, name, page) = (pool.clone(), input.clone(), name.to_string(), page.to_string());
                    tokio::spawn(async move {
                        for _ in 0..n / (4 * cores) {
                            if streamed {
                                let stream = pool.render_stream_with(&name, &page, &input, RenderOptions::default());
                                stream.await.unwrap().collect().await.unwrap();
                            } else {
                                pool.render(&name, &page, &input).await.unwrap();
                            }
                        }
                    })
                })
                .collect();
            futures_join(tasks)
        };
        run(WARMUP * cores / 4).await;
        let t = Instant::now();
        run(renders * cores).await;
        (renders * cores) as f64 / (ms(t) / 1e3)
    })
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        task.await.unwrap();
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn answers(root: &Path) -> BTreeMap<String, OriginAnswer> {
    let text = std::fs::read_to_string(root.join("fixtures/data/answers/product_list.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn node_render(root: &Path, bundle: &Path, input_json: &str) -> Option<(f64, usize)> {
    let input_file = std::env::temp_dir().join("mizan-bench-input.json");
    std::fs::write(&input_file, input_json).unwrap();
    let out = Command::new("node")
        .arg(root.join("bench/node-render.mjs"))
        .arg(bundle)
        .arg(&input_file)
        .arg(RENDERS.to_string())
        .output()
        .ok()?;
    assert!(out.status.success(), "node: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Some((v["ms_per_render"].as_f64()?, v["bytes"].as_u64()? as usize))
}

fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| json!(null).to_string())
}
