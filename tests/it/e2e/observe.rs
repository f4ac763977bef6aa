//! What an operator sees (issue 18): `/metrics` after a scripted workload holds exactly the
//! counts the workload made; the request id reaches the origin and comes back; the access log
//! line names the route and the query's keys, never a query value or a cookie.

use super::harness::{Backend, Harness, SECRET, read};
use crate::common::{DEADLINE, root, wait_until};
use mizan_render::cache::Keys;
use mizan_render::cache::signature::sign;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The samples of a Prometheus text exposition, by `name{label="value",...}` with the labels
/// sorted by name.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a value: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => (name, labels(rest.strip_suffix('}').expect("labels end with }"))),
        };
        assert!(samples.insert(key(name, &labels), value).is_none(), "a series twice: {line}");
    }
    samples
}

/// `a="x",b="y\"z"` as pairs, values unescaped.
fn labels(mut text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    while !text.is_empty() {
        let (name, rest) = text.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("a label value ends with \"") {
                (_, '\\') => match chars.next().expect("an escape") {
                    (_, 'n') => value.push('\n'),
                    (_, c) => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        pairs.push((name.to_string(), value));
        text = rest[end + 1..].trim_start_matches(',');
    }
    pairs
}

fn key(name: &str, labels: &[(impl AsRef<str>, impl AsRef<str>)]) -> String {
    let mut labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
    labels.sort();
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// What `/metrics` says now.
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    async fn of(h: &Harness) -> Self {
        let response = h.client.get(format!("{}/metrics", h.url)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
        Self(parse(&response.text().await.unwrap()))
    }

    /// The sample of `name` with exactly `labels`; `None` when there is no such series.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.get(&key(name, labels)).copied()
    }

    /// The sample, which must exist.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            let like: Vec<&String> = self.0.keys().filter(|k| k.starts_with(name)).collect();
            panic!("no series {}; there are {like:#?}", key(name, labels))
        })
    }

    fn requests(&self, route: &str, cache: &str, status: &str) -> f64 {
        self.value("mizan_requests_total", &[("route", route), ("cache", cache), ("status", status)])
    }
}

/// `POST /_mizan/purge` of `context` with `params`, signed: the entries it removed.
async fn signed_purge(h: &Harness, context: &str, params: Value) -> u64 {
    let body = serde_json::json!({"purge": [{"context": context, "params": params}], "mode": "hard"}).to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let signature = sign(&Keys::from_secret(SECRET.as_bytes(), false).unwrap(), now, body.as_bytes());
    let url = format!("{}/_mizan/purge", h.url);
    let answer = read(h.client.post(url).header("x-mizan-signature", signature).body(body).send().await.unwrap()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str::<Value>(&answer.body).unwrap()["purged"].as_u64().unwrap()
}

/// The `X-Request-Id` the origin last got for `context`.
async fn origin_request_id(h: &Harness, context: &str) -> Value {
    let stats: Value = reqwest::get(format!("{}/_test/stats", h.origin.url())).await.unwrap().json().await.unwrap();
    stats["request_ids"][context].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_scripted_workload_hold_exactly_what_it_did() {
    let h = Arc::new(Harness::start(Backend::Memory).await);
    assert_eq!(h.get("/products").await.cache(), "MISS");
    assert_eq!(h.get("/products").await.cache(), "HIT");
    assert_eq!(h.get("/products/7").await.cache(), "MISS");
    let missing = h.get("/products/9999").await;
    assert_eq!((missing.status, missing.cache()), (404, "MISS"), "the page's own not-found state, cached");
    assert_eq!(h.get_with("/cart", &[("cookie", "user=u1")]).await.cache(), "BYPASS");
    assert_eq!(h.get("/nowhere").await.status, 404);
    let api_purged = signed_purge(&h, "product_detail", serde_json::json!({"id": 7})).await;
    assert_eq!(api_purged, 2, "the page and its data entry");
    let mutation = h.set_price(8, 1.0).await;
    assert_eq!(mutation.header("x-mizan-invalidate"), "product_detail;id=8, product_list");
    assert_eq!(h.get("/products").await.cache(), "MISS", "purged by the mutation");

    // Five requests for one page while its data is held: one render, four coalesced on it.
    h.origin.gate("product_detail").await;
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.get("/products/9").await })
        })
        .collect();
    wait_until("five requests on one flight", DEADLINE, || {
        let keys = h.node.flights.keys();
        std::future::ready(keys.len() == 1 && h.node.flights.waiting(&keys[0]) == 5)
    })
    .await;
    h.origin.release("product_detail").await;
    for request in waiting {
        assert_eq!(request.await.unwrap().cache(), "MISS");
    }

    // A render that read product 5 while a mutation purged it: its write is dropped.
    h.origin.gate("product_detail").await;
    let racing = {
        let h = h.clone();
        tokio::spawn(async move { h.get("/products/5").await })
    };
    let origin = &h.origin;
    wait_until(
        "the render's fetch at the gate",
        DEADLINE,
        || async move { origin.waiting("product_detail").await == 1 },
    )
    .await;
    assert_eq!(h.set_price(5, 2.0).await.status, 200);
    h.origin.release("product_detail").await;
    assert_eq!(racing.await.unwrap().cache(), "MISS");
    assert_eq!(h.get("/spin").await.status, 500, "cut by its CPU budget");

    let m = Scrape::of(&h).await;
    assert_eq!(m.requests("/products", "miss", "200"), 2.0);
    assert_eq!(m.requests("/products", "hit", "200"), 1.0);
    assert_eq!(m.requests("/products/:id", "miss", "200"), 7.0, "7, five of 9, 5");
    assert_eq!(m.requests("/products/:id", "miss", "404"), 1.0);
    assert_eq!(m.requests("/cart", "bypass", "200"), 1.0);
    assert_eq!(m.requests("unmatched", "none", "404"), 1.0);
    assert_eq!(m.requests("/spin", "none", "500"), 1.0);
    assert_eq!(m.requests("/_mizan/purge", "none", "200"), 1.0);
    assert_eq!(m.requests("proxy", "none", "200"), 2.0);
    assert_eq!(m.get("mizan_requests_total", &[("route", "/products"), ("cache", "stale"), ("status", "200")]), None);
    // Renders: buffered, by route; the failed one is not timed.
    let renders = |route| m.value("mizan_render_duration_seconds_count", &[("route", route)]);
    assert_eq!((renders("/products"), renders("/products/:id"), renders("/cart")), (2.0, 4.0, 1.0));
    assert_eq!(renders("/spin"), 0.0);
    assert_eq!(m.value("mizan_coalesced_requests_total", &[("route", "/products/:id")]), 4.0);
    assert_eq!(m.value("mizan_request_duration_seconds_count", &[("route", "/products/:id")]), 8.0);
    // Every fetch the origin counted, by context, and no error.
    for context in ["product_list", "product_detail", "cart"] {
        let fetched = m.value("mizan_origin_duration_seconds_count", &[("context", context)]);
        assert_eq!(fetched, h.origin.calls(context).await as f64, "{context}");
    }
    assert_eq!(m.value("mizan_origin_duration_seconds_count", &[("context", "product_detail")]), 4.0);
    assert!(!m.0.keys().any(|k| k.starts_with("mizan_origin_errors_total")), "no origin error");
    // Purges: the signed one (the page and data entry of product 7); two mutations of two
    // members each (product_list twice: its page and data entry each time; products 8 and 5
    // had nothing stored).
    let purges = |source| {
        let labels = [("source", source)];
        (m.value("mizan_purges_total", &labels), m.value("mizan_purged_entries_total", &labels))
    };
    assert_eq!(purges("api"), (1.0, 2.0));
    assert_eq!(purges("header"), (4.0, 4.0));
    assert_eq!(purges("deferred"), (0.0, 0.0));
    assert_eq!(m.value("mizan_purges_deferred_total", &[]), 0.0);
    assert_eq!(m.value("mizan_dropped_writes_total", &[]), 1.0);
    let store = |op| m.value("mizan_store_duration_seconds_count", &[("backend", "memory"), ("op", op)]);
    assert_eq!(store("purge"), 5.0);
    assert!(store("get") >= 9.0 && store("put") >= 7.0, "{} gets, {} puts", store("get"), store("put"));
    assert_eq!(m.value("mizan_store_errors_total", &[("backend", "memory"), ("op", "get")]), 0.0);
    // The pool: every render waited in the queue once; the looping one was cut and its
    // isolate replaced; nothing is waiting now.
    assert_eq!(m.value("mizan_render_queue_wait_seconds_count", &[]), 8.0);
    assert_eq!(m.value("mizan_render_faults_total", &[("kind", "cpu_budget")]), 1.0);
    assert_eq!(m.value("mizan_render_faults_total", &[("kind", "js")]), 0.0);
    assert_eq!(m.value("mizan_isolates_replaced_total", &[("reason", "cpu_budget")]), 1.0);
    assert_eq!(m.value("mizan_isolates_replaced_total", &[("reason", "max_renders")]), 0.0);
    assert_eq!(m.value("mizan_render_rejected_total", &[("reason", "queue_full")]), 0.0);
    assert_eq!(m.value("mizan_render_queue_depth", &[]), 0.0);
    assert_eq!(m.value("mizan_render_queue_bytes", &[]), 0.0);
    assert_eq!(m.value("mizan_render_workers", &[]), 2.0);
    assert_eq!(m.value("mizan_render_workers_alive", &[]), 2.0);
    assert_eq!(m.value("mizan_isolates_alive", &[]), 2.0, "two workers, one bundle");
    assert_eq!(m.value("mizan_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert_eq!(m.value("mizan_reloads_total", &[("result", "failed")]), 0.0);
    // The scrape itself is counted once it is answered.
    assert_eq!(Scrape::of(&h).await.requests("/metrics", "none", "200"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_request_id_reaches_the_origin_and_comes_back_and_others_are_replaced() {
    let h = Arc::new(Harness::start(Backend::Memory).await);
    let id = "trace-4f.a:b_c";
    let page = h.get_with("/products/3", &[("x-request-id", id)]).await;
    assert_eq!((page.cache(), page.header("x-request-id")), ("MISS", id));
    assert_eq!(origin_request_id(&h, "product_detail").await, id);
    // Too long, a space, markup, an encoded CRLF (a header injection), non-ASCII: replaced.
    let long = "a".repeat(65);
    for (n, bad) in
        [long.as_bytes(), b"a b", b"<script>", b"x%0d%0aSet-Cookie:%20s=1", "café".as_bytes()].into_iter().enumerate()
    {
        let value = reqwest::header::HeaderValue::from_bytes(bad).unwrap();
        let response = h.client.get(format!("{}/products/{}", h.url, 10 + n)).header("x-request-id", value);
        let page = read(response.send().await.unwrap()).await;
        let made = page.header("x-request-id");
        assert!(made.len() == 16 && made.bytes().all(|b| b.is_ascii_hexdigit()), "{made:?} for {bad:?}");
        assert_eq!(origin_request_id(&h, "product_detail").await, made, "the origin got the id the client got");
    }
    assert_eq!(h.get("/products/3").await.header("x-request-id").len(), 16, "every response has one, hits too");

    // Coalesced requests: the origin sees the id of the request that started the render;
    // each client gets its own.
    h.origin.gate("product_detail").await;
    let leader = {
        let h = h.clone();
        tokio::spawn(async move { h.get_with("/products/20", &[("x-request-id", "leader-1")]).await })
    };
    let origin = &h.origin;
    wait_until(
        "the leader's fetch at the gate",
        DEADLINE,
        || async move { origin.waiting("product_detail").await == 1 },
    )
    .await;
    let follower = {
        let h = h.clone();
        tokio::spawn(async move { h.get_with("/products/20", &[("x-request-id", "follower-2")]).await })
    };
    wait_until("the follower on the leader's flight", DEADLINE, || {
        let keys = h.node.flights.keys();
        std::future::ready(keys.len() == 1 && h.node.flights.waiting(&keys[0]) == 2)
    })
    .await;
    h.origin.release("product_detail").await;
    assert_eq!(leader.await.unwrap().header("x-request-id"), "leader-1");
    assert_eq!(follower.await.unwrap().header("x-request-id"), "follower-2");
    assert_eq!(origin_request_id(&h, "product_detail").await, "leader-1");

    // The proxy forwards the node's id, never a malformed one of the visitor's.
    let echo = |id: &'static str| {
        let request = h.client.post(format!("{}/api/echo", h.url)).header("x-request-id", id).body("{}");
        async move { read(request.send().await.unwrap()).await }
    };
    let kept = echo("proxy-7").await;
    let seen: Value = serde_json::from_str(&kept.body).unwrap();
    assert_eq!((kept.header("x-request-id"), seen["headers"]["x-request-id"].as_str()), ("proxy-7", Some("proxy-7")));
    let replaced = echo("no good").await;
    let seen: Value = serde_json::from_str(&replaced.body).unwrap();
    assert_eq!(replaced.header("x-request-id").len(), 16);
    assert_eq!(seen["headers"]["x-request-id"].as_str(), Some(replaced.header("x-request-id")));
}

/// `mizan-render serve --log-json` with its log in a file: a request with a secret in its
/// query and a cookie gives one line with the route, status, cache state, times, size and
/// request id, and the query's keys only; neither secret is anywhere in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_json_line_per_request_without_query_values_or_cookies() {
    let origin = super::harness::Origin::start();
    let log = crate::common::scratch("access.json.log");
    let mut command = std::process::Command::new("sh");
    command.args(["-c", "exec \"$0\" \"$@\" 2>\"$LOG\"", env!("CARGO_BIN_EXE_mizan-render"), "--log-json", "serve"]);
    command.args(["--listen", "127.0.0.1:0", "--workers", "1", "--origin", &origin.url(), "--manifest"]);
    command.arg(root().join("fixtures/manifests/react.json"));
    command.env("LOG", &log).env("MIZAN_SECRET", SECRET).env("MIZAN_STORE", "memory").env_remove("MIZAN_LOG");
    let (mut child, url) = crate::cli::serve(command);
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{url}/products/5?token=SECRET123&page=2"))
        .header("cookie", "session=abcCOOKIE42")
        .header("x-request-id", "log-test-1")
        .send()
        .await
        .unwrap();
    assert_eq!((page.status().as_u16(), page.headers()["x-request-id"].to_str().unwrap()), (200, "log-test-1"));
    let body = page.bytes().await.unwrap();
    let hit = client.get(format!("{url}/products/5?token=SECRET123&page=2")).send().await.unwrap();
    assert_eq!(hit.headers()["x-mizan-cache"], "HIT");
    // Stopped as a service manager stops it: the log's last lines are written before it exits.
    // SAFETY: signalling a child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().unwrap().success());

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("SECRET123"), "a query value was logged: {text}");
    assert!(!text.contains("abcCOOKIE42"), "a cookie was logged: {text}");
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
    let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == "mizan_render::access").collect();
    assert_eq!(access.len(), 2, "one line per request: {text}");
    let line = &access[0]["fields"];
    assert_eq!(line["request_id"], "log-test-1");
    assert_eq!((line["method"].as_str(), line["route"].as_str()), (Some("GET"), Some("/products/:id")));
    assert_eq!((line["status"].as_u64(), line["cache"].as_str()), (Some(200), Some("miss")));
    assert_eq!(line["path"], "/products/5?token=&page=");
    assert_eq!(line["bytes"].as_u64(), Some(body.len() as u64));
    assert!(line["render_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    assert!(line["origin_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    assert!(line["ms"].as_f64().is_some(), "{line}");
    let hit = &access[1]["fields"];
    assert_eq!((hit["cache"].as_str(), hit["render_ms"].as_f64()), (Some("hit"), None), "a hit renders nothing");
    assert_eq!(hit["request_id"].as_str().map(str::len), Some(16), "a generated id");
}
