//! Bad input and faults, end to end: errors with the right status and words, hostile
//! requests that cannot poison or bust the cache, signed purges, the proxy's header
//! handling, a Redis that goes away, a SQLite file locked by another connection, and the
//! purge and prerender commands. Every case the store takes part in runs on each store.

use super::harness::{Backend, Harness, SECRET, price, read};
use crate::common::{DEADLINE, scratch_db, wait_until};
use mizan_render::cache::Keys;
use mizan_render::cache::signature::sign;
use std::time::Duration;

pub async fn errors_have_the_right_status_and_say_what_was_wrong(backend: Backend) {
    let h = Harness::start(backend).await;
    let missing = h.get("/nowhere").await;
    assert_eq!((missing.status, missing.header("cache-control")), (404, "no-store"));
    let unknown_product = h.get("/products/9999").await;
    assert_eq!(unknown_product.status, 404, "the page renders its DjangoError state with the origin's status");
    assert!(unknown_product.body.contains("Product not found"));
    let broken = h.get("/broken").await;
    assert_eq!(broken.status, 502);
    assert!(
        broken.body.contains("broken_list") && broken.body.contains("/properties/products/items/properties/price/type"),
        "names the context and the schema path: {}",
        broken.body
    );
    let huge = h.get("/huge").await;
    assert_eq!(huge.status, 502);
    assert!(huge.body.contains("larger than this node accepts"));
    assert_eq!(h.get("/products/abc").await.status, 404, "a parameter of the wrong type matches no route");
    let post = h.client.post(format!("{}/products/1", h.url)).send().await.unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_origin_is_a_504_and_a_down_one_a_502() {
    let mut h = Harness::start_with(Backend::Memory, Duration::from_millis(300)).await;
    h.origin.gate("product_detail").await; // never released: the origin never answers
    let slow = h.get("/products/2").await;
    assert_eq!(slow.status, 504);
    assert!(slow.body.contains("did not arrive in time"));
    h.origin.release("product_detail").await;
    h.origin.stop();
    assert_eq!(h.get("/products/3").await.status, 502);
}

pub async fn hostile_requests_cannot_bust_or_poison_the_cache(backend: Backend) {
    let h = Harness::start(backend).await;
    // Cold key, the hostile request first: its render is the one stored for everyone.
    let hostile =
        h.get_with("/products/3?utm_source=x&cache_bust=1&next=%2F%2Fevil.example", &[("host", "evil.example")]).await;
    assert_eq!(hostile.cache(), "MISS");
    let clean = h.get("/products/3").await;
    assert_eq!(clean.cache(), "HIT");
    assert_eq!(clean.body, hostile.body, "the next visitor gets the page of the path alone");
    assert!(!clean.body.contains("evil.example") && !clean.body.contains("cache_bust"), "{}", clean.body);
    // Dot segments and encoded unreserved characters reach the same entry.
    assert_eq!(h.raw_get("/products/%2E%2E/products/%33", &[]).await.cache(), "HIT");
    // A request cannot purge: X-Mizan-Invalidate is honoured on origin responses only. The
    // request after it would miss if it had.
    h.get_with("/products/3", &[("x-mizan-invalidate", "product_detail;id=3, product_list")]).await;
    assert_eq!(h.get("/products/3").await.cache(), "HIT");
    // Declared vary headers do separate entries.
    assert_eq!(h.get_with("/search?q=a", &[("accept-language", "fr")]).await.cache(), "MISS");
    assert_eq!(h.get_with("/search?q=a", &[("accept-language", "en")]).await.cache(), "MISS");
    let again = h.get_with("/search?q=a&x=1", &[("accept-language", " fr ")]).await;
    assert_eq!((again.cache(), again.header("vary")), ("HIT", "accept-language"));
    // Absurd and traversing URLs are refused before any work.
    assert_eq!(h.get(&format!("/products/{}", "9".repeat(5000))).await.status, 414);
    assert_eq!(h.get("/products/..%2F..%2Fetc%2Fpasswd").await.status, 400);
    assert_eq!(h.origin.calls("product_detail").await, 1);
}

pub async fn cached_data_that_is_not_json_is_fetched_again_and_replaced(backend: Backend) {
    let h = Harness::start(backend).await;
    assert_eq!(h.get("/products").await.status, 200);
    assert_eq!(h.origin.calls("product_list").await, 1);
    // The data entry the next miss reads, its body damaged (a shared store another writer
    // got wrong, a truncated value).
    let key = h.node.keys.data_key("product_list", &serde_json::Map::new());
    let mut entry = (*h.node.store.get(&key).await.unwrap().expect("product_list was cached")).clone();
    entry.body = bytes::Bytes::from_static(b"{\"items\": [1, 2");
    h.node.store.put(entry).await.unwrap();
    let page = h.get("/search?q=damaged").await;
    assert_eq!((page.status, page.cache()), (200, "MISS"));
    assert!(page.body.contains("href=\"/products/300\""), "the page has every row");
    assert_eq!(h.origin.calls("product_list").await, 2, "the damaged entry was not used");
    let repaired = h.node.store.get(&key).await.unwrap().expect("the fetched data was stored");
    serde_json::from_slice::<serde_json::Value>(&repaired.body).expect("the stored data is JSON again");
}

pub async fn etags_answer_304(backend: Backend) {
    let h = Harness::start(backend).await;
    let first = h.get("/products/6").await;
    let etag = first.header("etag").to_string();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    let not_modified = h.get_with("/products/6", &[("if-none-match", &etag)]).await;
    assert_eq!((not_modified.status, not_modified.cache(), not_modified.body.as_str()), (304, "HIT", ""));
    assert_eq!(not_modified.header("etag"), etag);
    assert_eq!(h.get_with("/products/6", &[("if-none-match", "\"other\"")]).await.status, 200);
}

pub async fn signed_purges_are_accepted_once_and_forged_ones_change_nothing(backend: Backend) {
    let h = Harness::start(backend).await;
    assert_eq!(h.get("/products/1").await.cache(), "MISS");
    let body = br#"{"purge":[{"context":"product_detail","params":{"id":1}}],"mode":"hard"}"#.to_vec();
    let post = |signature: String, body: Vec<u8>| {
        h.client.post(format!("{}/_mizan/purge", h.url)).header("x-mizan-signature", signature).body(body).send()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let forged = Keys::from_secret(b"a-different-secret-of-enough-length-000", false).unwrap();
    for (signature, why) in [
        (sign(&forged, now, &body), "signature does not match"),
        (sign(&Keys::from_secret(SECRET.as_bytes(), false).unwrap(), now - 301, &body), "outside the ±300 s window"),
        ("t=1,v1=zz".to_string(), "malformed"),
    ] {
        let refused = read(post(signature, body.clone()).await.unwrap()).await;
        assert_eq!(refused.status, 401);
        assert!(refused.body.contains(why), "{}", refused.body);
        assert_eq!(h.get("/products/1").await.cache(), "HIT", "a refused purge changes nothing");
    }
    let good = sign(&Keys::from_secret(SECRET.as_bytes(), false).unwrap(), now, &body);
    let accepted = read(post(good.clone(), body.clone()).await.unwrap()).await;
    assert_eq!((accepted.status, accepted.body.as_str()), (200, r#"{"purged":2}"#), "the page and its data entry");
    assert_eq!(h.get("/products/1").await.cache(), "MISS");
    let replay = read(post(good, body).await.unwrap()).await;
    assert_eq!(replay.status, 401);
    assert!(replay.body.contains("replay"));
    assert_eq!(h.get("/products/1").await.cache(), "HIT");
}

pub async fn the_proxy_drops_hop_by_hop_headers_and_survives_a_malformed_invalidate(backend: Backend) {
    let h = Harness::start(backend).await;
    assert_eq!(h.get("/products").await.cache(), "MISS");
    let url = format!("{}/api/echo?invalidate=%28bad%29%2C%20product_list%2C%2042", h.url);
    let response = h
        .client
        .put(url)
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("x-app", "kept")
        .body("payload")
        .send()
        .await
        .unwrap();
    let got = read(response).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-origin"), "fixture");
    let echo: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!((echo["method"].as_str(), echo["body"].as_str()), (Some("PUT"), Some("payload")));
    assert_eq!(echo["headers"]["x-app"], "kept");
    assert!(echo["headers"].get("x-hop").is_none(), "a header named by Connection is not forwarded");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h.get("/products").await.cache(), "MISS", "the valid member purged despite the bad ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_fails_open_while_redis_is_away_and_caches_again_when_it_returns() {
    let mut h = Harness::start(Backend::Redis).await;
    assert_eq!(h.get("/products/2").await.cache(), "MISS");
    assert_eq!(h.get("/products/2").await.cache(), "HIT");
    h.redis.as_mut().unwrap().kill();
    let during = h.get("/products/2").await;
    assert_eq!((during.status, during.cache()), (200, "MISS"), "served by rendering");
    let health: serde_json::Value =
        h.client.get(format!("{}/_mizan/health", h.url)).send().await.unwrap().json().await.unwrap();
    assert!(health["store_errors"].as_u64().unwrap() > 0);
    h.redis.as_mut().unwrap().restart();
    let h = &h;
    wait_until("the node to serve a HIT again after Redis returned", DEADLINE, || async move {
        h.get("/products/2").await.cache() == "HIT"
    })
    .await;
}

/// Another connection holds the SQLite file's write lock (an EXCLUSIVE transaction, with a
/// change it never commits). In WAL mode reads go on: hits are served, and never the
/// uncommitted rows. A miss is rendered and served; its write waits out SQLite's busy
/// timeout and fails, and is counted. Once the lock goes the node caches again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_fails_open_while_sqlite_is_locked_and_caches_again_when_released() {
    let path = scratch_db("locked-node");
    let h = Harness::start_on_sqlite(path.clone()).await;
    assert_eq!(h.get("/products/1").await.cache(), "MISS");
    let cached = h.get("/products/1").await;
    assert_eq!((cached.cache(), price(&cached.body)), ("HIT", "€182.75"));

    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE; UPDATE entries SET body = CAST('poisoned' AS BLOB);").unwrap();
    let errors_before = h.node.stats.store_errors.load(std::sync::atomic::Ordering::Relaxed);
    let hit = h.get("/products/1").await;
    assert_eq!((hit.status, hit.cache()), (200, "HIT"));
    assert_eq!(hit.body, cached.body, "the committed page, not the locker's uncommitted change");
    // A page without data: one write, the page's (a product page would wait out the busy
    // timeout twice, for its data entry and for itself).
    let miss = tokio::time::timeout(DEADLINE, h.get("/about")).await.expect("a miss on a locked store never answered");
    assert_eq!((miss.status, miss.cache()), (200, "MISS"), "{}", miss.body);
    assert!(miss.body.contains("<h1>About</h1>"), "{}", miss.body);
    let (status, report) = h.health().await;
    let errors = report["store_errors"].as_u64().unwrap();
    assert!(errors > errors_before, "the failed write is counted: {report}");
    assert_eq!((status, report["status"].as_str()), (200, Some("degraded")), "{report}");
    let reasons = report["reasons"].to_string();
    assert!(reasons.contains("sqlite store failed"), "{report}");

    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    assert_eq!(h.get("/about").await.cache(), "MISS", "nothing was stored while the file was locked");
    assert_eq!(h.get("/about").await.cache(), "HIT", "stored once the lock went");
    let after = h.get("/products/1").await;
    assert_eq!((after.cache(), after.body.as_str()), ("HIT", cached.body.as_str()));
    let (_, report) = h.health().await;
    assert_eq!(report["store_errors"].as_u64(), Some(errors), "no store call failed after the lock went: {report}");
}

pub async fn the_purge_command_signs_what_the_node_accepts(backend: Backend) {
    let h = Harness::start(backend).await;
    assert_eq!(h.get("/products/11").await.cache(), "MISS");
    let purge = |secret: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mizan-render"))
            .args(["purge", "--node", &h.url, "product_detail", r#"{"id": 11}"#, "--secret", secret])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let wrong = tokio::task::block_in_place(|| purge("a-different-secret-of-enough-length-000"));
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
    let ok = tokio::task::block_in_place(|| purge(SECRET));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), r#"{"purged":2}"#);
    assert_eq!(h.get("/products/11").await.cache(), "MISS");
}

pub async fn prerender_warms_every_enumerable_page(backend: Backend) {
    let h = Harness::start(backend).await;
    let urls = mizan_render::prerender::urls(&h.node.manifest);
    assert_eq!(urls.len(), 21);
    assert!(urls.contains(&"/products".to_string()) && urls.contains(&"/products/20".to_string()));
    let report = mizan_render::prerender::run(&h.node).await;
    assert_eq!((report.ok, report.failed.len()), (21, 0));
    assert_eq!(h.get("/products/20").await.cache(), "HIT");
    assert_eq!(h.get("/products").await.cache(), "HIT");
}

pub async fn shared_pages_never_carry_a_visitors_cookie(backend: Backend) {
    let h = Harness::start(backend).await;
    // The Promo page sets a cookie although its page is shared: dropped on the MISS (and for
    // every request coalesced on it) and on every HIT.
    let miss = h.get("/promo").await;
    assert_eq!((miss.status, miss.cache(), miss.headers.get("set-cookie")), (200, "MISS", None));
    let hit = h.get("/promo").await;
    assert_eq!((hit.cache(), hit.headers.get("set-cookie")), ("HIT", None));
    // On a page that is never cached the cookie reaches its visitor.
    let cart = h.get_with("/cart", &[("cookie", "user=u1")]).await;
    assert_eq!((cart.cache(), cart.header("set-cookie")), ("BYPASS", "cart_seen=1; Path=/; HttpOnly"));
}

on_every_store!(
    errors_have_the_right_status_and_say_what_was_wrong,
    cached_data_that_is_not_json_is_fetched_again_and_replaced,
    hostile_requests_cannot_bust_or_poison_the_cache,
    etags_answer_304,
    signed_purges_are_accepted_once_and_forged_ones_change_nothing,
    the_proxy_drops_hop_by_hop_headers_and_survives_a_malformed_invalidate,
    the_purge_command_signs_what_the_node_accepts,
    prerender_warms_every_enumerable_page,
    shared_pages_never_carry_a_visitors_cookie,
);
