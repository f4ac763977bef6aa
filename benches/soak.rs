//! Soak: 100 000 renders of a mixed workload through the pool (the fixture React app's
//! product list, plus pages that throw, loop past their CPU budget and allocate past the heap
//! limit), with the process's RSS sampled every 1000 renders. Prints the samples as CSV
//! (`renders,rss_mib`) on stdout and a summary on stderr; `bench/soak.sh` draws the PNG.
//! Target: RSS after warm-up (the first 10 000 renders) stays within 10 %.

use mizan_render::manifest::Manifest;
use mizan_render::oneshot::{OriginAnswer, page_input};
use mizan_render::pool::{BundleSource, Pool, PoolConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const RENDERS: u64 = 100_000;
const SAMPLE_EVERY: u64 = 1000;
const WARMUP: u64 = 10_000;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let manifest = Manifest::load(&root.join("fixtures/manifests/react.json")).unwrap();
    let react = BundleSource::read("react_app", &manifest.bundle_path("react_app").unwrap()).unwrap();
    let faulty = BundleSource::read("faulty", &root.join("tests/fixtures/bundles/faulty.mjs")).unwrap();
    let answers: BTreeMap<String, OriginAnswer> =
        serde_json::from_str(&std::fs::read_to_string(root.join("fixtures/data/answers/product_list.json")).unwrap())
            .unwrap();
    let (name, page, input) = page_input(&manifest, "/products", &answers).unwrap();
    let bad_input = mizan_render::abi::PageInput { url: "/bad".into(), ..Default::default() };
    let config = PoolConfig {
        workers: 2,
        queue: 1024,
        cpu_budget: Duration::from_millis(50),
        max_heap: 64 << 20,
        ..PoolConfig::default()
    };
    let pool = Arc::new(Pool::start(config, &[react, faulty]).unwrap());
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (input, bad_input) = (Arc::new(input), Arc::new(bad_input));
    let mut samples = vec![(0u64, rss_mib())];
    let (mut ok, mut failed) = (0u64, 0u64);
    tokio.block_on(async {
        for batch in 0..RENDERS / SAMPLE_EVERY {
            // 8 in flight; per 1000 renders: 10 throw, 2 loop, 2 allocate, the rest render.
            let tasks: Vec<_> = (0..8)
                .map(|lane| {
                    let (pool, input, bad_input, name, page) =
                        (pool.clone(), input.clone(), bad_input.clone(), name.clone(), page.clone());
                    tokio::spawn(async move {
                        let (mut ok, mut failed) = (0u64, 0u64);
                        for i in (lane..SAMPLE_EVERY).step_by(8) {
                            let bad = match i {
                                0..10 => Some("throws"),
                                10..12 => Some("spin"),
                                12..14 => Some("hog"),
                                _ => None,
                            };
                            let result = match bad {
                                Some(bad_page) => pool.render("faulty", bad_page, &bad_input).await,
                                None => pool.render(&name, &page, &input).await,
                            };
                            if result.is_ok() { ok += 1 } else { failed += 1 }
                        }
                        (ok, failed)
                    })
                })
                .collect();
            for task in tasks {
                let (o, f) = task.await.unwrap();
                ok += o;
                failed += f;
            }
            samples.push(((batch + 1) * SAMPLE_EVERY, rss_mib()));
        }
    });
    println!("renders,rss_mib");
    for (n, rss) in &samples {
        println!("{n},{rss:.1}");
    }
    let after_warmup: Vec<f64> = samples.iter().filter(|(n, _)| *n >= WARMUP).map(|(_, r)| *r).collect();
    let (lo, hi) = after_warmup.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    eprintln!("renders: {ok} ok, {failed} failed (expected {} failed)", RENDERS / SAMPLE_EVERY * 14);
    eprintln!(
        "RSS after {WARMUP} renders: {lo:.1}–{hi:.1} MiB, spread {:.1} % (target within 10 %); at the end {:.1} MiB",
        (hi - lo) / lo * 100.0,
        samples.last().map_or(0.0, |s| s.1)
    );
}
