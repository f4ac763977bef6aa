//! Django and the node sharing one cache (issue 20): the fixture origin caches its contexts'
//! data through `mizan_cache.django` in the node's own SQLite file or Redis (the same site
//! and secret), and Python code in the origin's venv writes, purges and signs with the same
//! Rust implementation the node runs. Each test runs on SQLite, on Redis, and on Redis behind
//! the node's memory tier (whose copies only the purge log can take away).

use super::harness::{Backend, Got, Harness, SECRET, price, read};
use crate::common::{DEADLINE, root, wait_until};
use serde_json::Value;
use std::process::Command;

/// Runs `script` with the origin venv's Python (where scripts/setup installed the mizan_cache
/// wheel), with `STORE` set to the node's store URL and `SECRET` to its secret: its stdout.
fn python(h: &Harness, script: &str) -> String {
    let store = match &h.config.store {
        mizan_render::node::StoreConfig::Sqlite(path) => format!("sqlite:{}", path.display()),
        mizan_render::node::StoreConfig::Redis(url) => url.clone(),
        other => panic!("{other:?} cannot be shared with Python"),
    };
    let python = root().join("fixtures/origin/.venv/bin/python");
    let out = Command::new(&python)
        .args(["-c", script])
        .env("STORE", store)
        .env("SECRET", SECRET)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup)", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "python failed:\n{script}\n{}{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

const OPEN: &str = "import os, json, mizan_cache\n\
                    cache = mizan_cache.Cache(os.environ['STORE'], site='example', secret=os.environ['SECRET'])\n";

/// The purges the node's memory tier has applied from the log (0 without a tier).
fn applied(h: &Harness) -> u64 {
    h.node.tier_report()["purges_applied"].as_u64().unwrap_or(0)
}

/// Waits until the node's memory tier (if it has one) applied `n` more purges than `before`:
/// a purge from Python reaches it through the purge log, not through this process.
async fn until_applied(h: &Harness, before: u64, n: u64) {
    if h.node.tier_report().is_null() {
        return;
    }
    wait_until("the purges to reach the node's memory tier", DEADLINE, || std::future::ready(applied(h) >= before + n))
        .await;
}

async fn origin_get(h: &Harness, path: &str) -> Got {
    read(reqwest::get(format!("{}{path}", h.origin.url())).await.unwrap()).await
}

/// Django stores a context's data (by `Cache.put_data`, and by answering a context request
/// through mizan_cache.django); the node renders its page from that entry without asking.
pub async fn the_node_renders_pages_from_data_django_stored(h: Harness) {
    let stored = python(
        &h,
        &format!(
            "{OPEN}product = {{'id': 3, 'name': 'Written by Django', 'price': 1.5, 'stock': 1, 'description': 'd', 'tags': []}}\n\
             g = cache.data_generations('product_detail', {{'id': 3}})\n\
             print(cache.put_data('product_detail', {{'id': 3}}, json.dumps(product), ttl=60, swr=300, sie=86400, generations=g))"
        ),
    );
    assert_eq!(stored.trim(), "True");
    let page = h.get("/products/3").await;
    assert_eq!((page.status, page.cache()), (200, "MISS"), "{}", page.body);
    assert!(page.body.contains("Written by Django"), "the page is built from Django's entry: {}", page.body);
    assert_eq!(price(&page.body), "€1.50");
    assert_eq!(h.origin.calls("product_detail").await, 0, "the node did not ask the origin");

    // The origin answers a context request itself: mizan_cache.django stores the data.
    let answer = origin_get(&h, "/_mizan/ctx/product_detail?params=%7B%22id%22%3A4%7D").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(h.origin.calls("product_detail").await, 1);
    let page = h.get("/products/4").await;
    assert_eq!((page.status, page.cache()), (200, "MISS"));
    assert_eq!(h.origin.calls("product_detail").await, 1, "rendered from the entry the origin stored");
    let wanted: Value = serde_json::from_str(&answer.body).unwrap();
    assert!(page.body.contains(wanted["data"]["name"].as_str().unwrap()), "{}", page.body);
}

/// A data entry another writer stored that breaks the context's `returns` schema is not
/// rendered from: the node asks the origin, whose answer it checks; here the origin answers
/// from the same entry (its cache holds it), so the page is the clear schema error an origin
/// that lies gets, never a page built from the bad data.
pub async fn data_that_breaks_the_schema_is_not_rendered(h: Harness) {
    let stored = python(
        &h,
        &format!(
            "{OPEN}g = cache.data_generations('product_detail', {{'id': 3}})\n\
             print(cache.put_data('product_detail', {{'id': 3}}, json.dumps({{'id': 3, 'name': 'Lies', 'price': '1.50'}}), ttl=60, generations=g))"
        ),
    );
    assert_eq!(stored.trim(), "True");
    let page = h.get("/products/3").await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(page.body.contains("does not match its schema"), "{}", page.body);
    assert!(!page.body.contains("Lies"), "the page was not built from the bad entry");
    assert_eq!(h.origin.calls("product_detail").await, 1, "the node asked the origin");
}

/// The mark of data the node checked binds that data: another writer that rewrites the body
/// and keeps the metadata (unknown fields are kept through rewrites) gets it checked again.
pub async fn a_rewritten_entry_is_checked_again(h: Harness) {
    assert_eq!(h.get("/products/7").await.cache(), "MISS");
    let rewritten = python(
        &h,
        &format!(
            "{OPEN}k = cache.data_key('product_detail', {{'id': 7}})\n\
             e = cache.get(k)\n\
             bad = e.json(); bad['name'] = 'Lies'; bad['stock'] = -1\n\
             print(cache.put(k, json.dumps(bad), e.meta), 'checked' in e.meta)\n\
             cache.remove(cache.keys.page_key('/products/7', site='example'))"
        ),
    );
    assert_eq!(rewritten.trim(), "True True");
    let page = h.get("/products/7").await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(page.body.contains("does not match its schema") && !page.body.contains("Lies"), "{}", page.body);
}

/// A mutation sent straight to Django (not through the node's proxy, so the node sees no
/// `X-Mizan-Invalidate`) purges the pages the node stored, through the shared store.
pub async fn a_django_mutation_purges_the_pages_the_node_stored(h: Harness) {
    assert_eq!(h.get("/products/7").await.cache(), "MISS");
    // The node's copy of the data (written after Django's, over it) says it was checked
    // against the schema: read again, it is not checked again; Django's own was not marked.
    let mark = python(
        &h,
        &format!("{OPEN}print(cache.get(cache.data_key('product_detail', {{'id': 7}})).meta.get('checked'))"),
    );
    assert_eq!(mark.trim().len(), 32, "{mark}");
    assert_eq!(h.get("/products/7").await.cache(), "HIT");
    assert_eq!(h.get("/products/8").await.cache(), "MISS");
    let before = applied(&h);
    h.origin.set_price_quietly(7, 99.5).await;
    until_applied(&h, before, 2).await; // product_detail;id=7, product_list
    let fresh = h.get("/products/7").await;
    assert_eq!((fresh.cache(), price(&fresh.body)), ("MISS", "€99.50"), "the node's page was purged by Django");
    assert_eq!(h.get("/products/8").await.cache(), "HIT", "a page of another product stays");
    assert_eq!(h.origin.calls("product_detail").await, 3, "7, 8, then 7 again: Django's own entry was purged too");
}

/// A soft purge from Python marks the node's page stale: the node serves it at once and
/// renders it again in the background, as its freshness rules say.
pub async fn a_soft_purge_from_python_is_served_stale_then_refreshed(h: Harness) {
    let first = h.get("/products/5").await;
    assert_eq!(h.get("/products/5").await.cache(), "HIT");
    let before = applied(&h);
    let marked = python(&h, &format!("{OPEN}print(cache.purge('product_detail', {{'id': 5}}, mode='soft'))"));
    assert_eq!(marked.trim(), "2", "the page and its data entry");
    until_applied(&h, before, 1).await;
    let stale = h.get("/products/5").await;
    assert_eq!((stale.status, stale.cache()), (200, "STALE"));
    assert_eq!(stale.body, first.body, "the stale page is served as it was");
    h.settle().await;
    wait_until("the page rendered again", DEADLINE, || async { h.get("/products/5").await.cache() == "HIT" }).await;
    assert_eq!(h.origin.calls("product_detail").await, 2, "one background render fetched the data again");
}

/// A purge request signed in Python is accepted by the node; one whose body was changed
/// after signing is refused.
pub async fn a_purge_signed_in_python_is_accepted_by_the_node(h: Harness) {
    assert_eq!(h.get("/products/9").await.cache(), "MISS");
    let signed = python(
        &h,
        "import json, os, mizan_cache\n\
         body, headers = mizan_cache.Keys(os.environ['SECRET']).purge_request([('product_detail', {'id': 9})])\n\
         print(json.dumps([body.decode(), headers['x-mizan-signature']]))",
    );
    let [body, signature]: [String; 2] = serde_json::from_str(signed.trim()).unwrap();
    let send = |body: String| {
        let request = h.client.post(format!("{}/_mizan/purge", h.url)).header("x-mizan-signature", &signature);
        async move { read(request.body(body).send().await.unwrap()).await }
    };
    let forged = send(body.replace("\"id\":9", "\"id\":8")).await;
    assert_eq!(forged.status, 401, "a body changed after signing: {}", forged.body);
    let accepted = send(body).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert_eq!(h.get("/products/9").await.cache(), "MISS");
}

macro_rules! shared_store_tests {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() {
            super::$test(super::Harness::start_sharing(super::Backend::Sqlite, |_| {}).await).await
        } )* }
        mod on_redis { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() {
            super::$test(super::Harness::start_sharing(super::Backend::Redis, |_| {}).await).await
        } )* }
        mod on_redis_with_a_memory_tier { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() {
            super::$test(super::Harness::start_sharing(super::Backend::Redis, |c| c.shared.l1_bytes = 16 << 20).await).await
        } )* }
    };
}

shared_store_tests!(
    the_node_renders_pages_from_data_django_stored,
    data_that_breaks_the_schema_is_not_rendered,
    a_django_mutation_purges_the_pages_the_node_stored,
    a_soft_purge_from_python_is_served_stale_then_refreshed,
    a_purge_signed_in_python_is_accepted_by_the_node,
);

/// Not behind the memory tier: it keeps the node's own copies of the page and the data until
/// a purge takes them (a bare rewrite or remove in Redis is not one).
mod rewritten {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_sqlite() {
        super::a_rewritten_entry_is_checked_again(super::Harness::start_sharing(super::Backend::Sqlite, |_| {}).await)
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_redis() {
        super::a_rewritten_entry_is_checked_again(super::Harness::start_sharing(super::Backend::Redis, |_| {}).await)
            .await
    }
}
