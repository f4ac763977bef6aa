//! Attacks a visitor on the internet can send, each as it was found against the node
//! (issue 13): walking out of the proxy's prefix, poisoning a shared page through the query,
//! growing memory with padded URLs, private origin answers shared, forged forwarding headers,
//! and the response rules a cached page must keep. Each test sends the attack and fails if
//! it works.

use super::harness::{Backend, Harness};
use crate::common::hydration_payload;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_prefix_cannot_be_walked_out_of() {
    let h = Harness::start(Backend::Memory).await;
    let cookie = [("cookie", "user=u1")];
    // Each would reach the origin's internal /_mizan/ctx/cart (or another path outside
    // /api/) with the visitor's cookie if the prefix were checked on the raw path.
    let attacks = [
        "/api/../_mizan/ctx/cart",
        "/api/%2e%2e/_mizan/ctx/cart",
        "/api/%2E./_mizan/ctx/cart",
        "/api/.%2e/_mizan/ctx/cart",
        "/api/%252e%252e/_mizan/ctx/cart",
        "/api/..%2f_mizan/ctx/cart",
        "/api/%2f..%2f_mizan/ctx/cart",
        "/api/..\\_mizan/ctx/cart",
        "/api/%5c..%5c_mizan/ctx/cart",
        "/api//_mizan/ctx/cart",
        "/api/./../_mizan/ctx/cart",
        "/api/echo%00",
        "/api/echo;/../../_mizan/ctx/cart",
    ];
    for attack in attacks {
        let got = h.raw_get(attack, &cookie).await;
        assert_eq!(got.status, 400, "{attack}: {}", got.body);
        assert!(!got.body.contains("\"user\""), "{attack} reached the cart: {}", got.body);
    }
    assert_eq!(h.origin.calls("cart").await, 0, "no attack reached the origin's context endpoint");
    // A prefix ends at a segment: /apix is a page path (none matches), never proxied.
    assert_eq!(h.raw_get("/apix/echo", &[]).await.status, 404);
    // What is forwarded is exactly the path that was checked, normalised.
    let echo = h.raw_get("/api/%65cho?x=1", &[]).await;
    assert_eq!(echo.status, 200, "{}", echo.body);
    let start = echo.body.find('{').unwrap();
    let echoed: Value = serde_json::from_str(echo.body[start..].trim_end_matches(|c| c != '}')).unwrap();
    assert_eq!(echoed["path"], "/api/echo?x=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_forwarding_headers_never_reach_the_origin() {
    let h = Harness::start(Backend::Memory).await;
    let forged = [
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7;host=evil.example;proto=https"),
        ("x-real-ip", "203.0.113.7"),
        // Honoured only on the origin's answers: a visitor's never reaches the origin.
        ("x-mizan-invalidate", "product_list"),
    ];
    let mut request = h.client.get(format!("{}/api/echo", h.url));
    for (n, v) in forged {
        request = request.header(n, v);
    }
    let echo: Value = request.send().await.unwrap().json().await.unwrap();
    let headers = &echo["headers"];
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "an untrusted peer's chain is replaced");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], h.url.trim_start_matches("http://"), "from the request's own Host");
    assert!(headers.get("forwarded").is_none() && headers.get("x-real-ip").is_none(), "{headers}");
    assert!(headers.get("x-mizan-invalidate").is_none(), "{headers}");
    // An over-long path under the prefix is refused before anything is forwarded.
    assert_eq!(h.raw_get(&format!("/api/{}", "e".repeat(5000)), &[]).await.status, 414);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_query_parameter_never_reaches_a_shared_page() {
    let h = Harness::start(Backend::Memory).await;
    // Cold key, the hostile URL first: it is the one whose render is stored.
    let hostile = h.get("/products/13?ref=%3Cb%3EX%3C%2Fb%3E&utm_source=mail").await;
    assert_eq!((hostile.status, hostile.cache()), (200, "MISS"));
    let clean = h.get("/products/13").await;
    assert_eq!(clean.cache(), "HIT");
    for page in [&hostile.body, &clean.body] {
        assert!(!page.contains("?ref=") && !page.contains("utm_source") && !page.contains("%3Cb"), "{page}");
        let payload: Value = serde_json::from_str(hydration_payload(page)).unwrap();
        assert_eq!((&payload["url"], &payload["query"]), (&json!("/products/13"), &json!({})));
    }
    assert_eq!(hostile.body, clean.body, "every visitor gets the page only the path and declared query built");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_declared_query_names_share_one_key_and_one_page() {
    let h = Harness::start(Backend::Memory).await;
    let first = h.get("/search?q=b&q=a").await;
    let second = h.get("/search?q=a&q=b&utm=1").await;
    assert_eq!((first.cache(), second.cache()), ("MISS", "HIT"));
    let payload: Value = serde_json::from_str(hydration_payload(&first.body)).unwrap();
    assert_eq!((&payload["url"], &payload["query"]), (&json!("/search?q=a&q=b"), &json!({"q": "a"})));
    // A render of either order reads the same value: the first in canonical order.
    h.node.clock.advance(Duration::from_secs(400_000));
    let again = h.get("/search?q=b&q=a").await;
    assert_eq!((again.cache(), again.body.as_str()), ("MISS", first.body.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_headers_reach_the_render_and_the_origin() {
    let h = Harness::start(Backend::Memory).await;
    let fr = h.get_with("/search?q=x", &[("accept-language", "  fr-CH,   fr ")]).await;
    assert!(fr.body.contains("<title>Search (fr-CH, fr)</title>"), "{}", fr.body);
    assert_eq!(h.origin.language("product_list").await, "fr-CH, fr");
    let en = h.get_with("/search?q=x", &[("accept-language", "en")]).await;
    assert!(en.body.contains("<title>Search (en)</title>"));
    assert_eq!(h.origin.language("product_list").await, "en");
    let none = h.get("/search?q=x").await;
    assert!(none.body.contains("<title>Search (any language)</title>"));
    let payload: Value = serde_json::from_str(hydration_payload(&fr.body)).unwrap();
    assert_eq!(payload["headers"], json!({"accept-language": "fr-CH, fr"}), "the client hydrates with them too");
    // Each language is its own entry, and a cached one is served as rendered.
    let fr_again = h.get_with("/search?q=x", &[("accept-language", "fr-CH, fr")]).await;
    assert_eq!((fr_again.cache(), fr_again.body.as_str()), ("HIT", fr.body.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padded_urls_cannot_grow_the_node() {
    let budget = 64 << 10;
    let h = Harness::start_full(Backend::Memory, Duration::from_secs(5), budget).await;
    // Each a new raw target that normalises to /about: 400 of them are ~1.2 MB of URLs. Sent
    // raw: an HTTP client's URL parser would remove the dot segments before the node saw them.
    for n in 0..400 {
        let got = h.raw_get(&format!("/{}about", "./".repeat(700 + n)), &[]).await;
        assert_eq!(got.status, 200, "{n}");
        assert!(h.node.targets.bytes() <= budget, "memo holds {} bytes, bound {budget}", h.node.targets.bytes());
    }
    assert!(h.node.targets.len() < 100, "{} targets memoised", h.node.targets.len());
    // Over-long targets are refused before any work, however short they normalise.
    let long = h.raw_get(&format!("/{}about", "./".repeat(2100)), &[]).await;
    assert_eq!(long.status, 414);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_origin_marks_private_is_never_stored_nor_shared() {
    let h = std::sync::Arc::new(Harness::start(Backend::Memory).await);
    h.origin.update_quietly(14, json!({"private": true})).await;
    let alone = h.get("/products/14").await;
    assert_eq!((alone.status, alone.cache(), alone.header("cache-control")), (200, "BYPASS", "no-store"));
    assert!(alone.headers.get("etag").is_none(), "a private page has no shared validator");
    // Concurrent requests are coalesced onto one flight; its page is the leader's alone, the
    // others render their own.
    h.origin.gate("product_detail").await;
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.get("/products/14").await })
        })
        .collect();
    let coalesced = || {
        let keys = h.node.flights.keys();
        std::future::ready(keys.len() == 1 && h.node.flights.waiting(&keys[0]) == 3)
    };
    crate::common::wait_until("three requests on one flight", crate::common::DEADLINE, coalesced).await;
    h.origin.release("product_detail").await;
    for request in requests {
        let got = request.await.unwrap();
        assert_eq!((got.cache(), got.header("cache-control")), ("BYPASS", "no-store"));
    }
    assert_eq!(h.origin.calls("product_detail").await, 1 + 1 + 2, "the two waiters each fetched for themselves");
    assert_eq!(h.get("/products/14").await.cache(), "BYPASS", "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_404_is_never_answered_304_and_bundle_headers_cannot_break_the_response() {
    let h = Harness::start(Backend::Memory).await;
    let missing = h.get("/products/9999").await;
    let etag = missing.header("etag").to_string();
    assert_eq!(missing.status, 404);
    let again = h.get_with("/products/9999", &[("if-none-match", &etag)]).await;
    assert_eq!((again.status, again.cache()), (404, "HIT"), "RFC 9110: 304 stands for a 200 only");
    assert!(again.body.contains("Product not found"));
    // The About page sets content-length: 3 and connection: close; the node drops both.
    let about = h.raw_get("/about", &[]).await;
    assert_eq!(about.status, 200);
    assert!(about.body.contains("<h1>About</h1>"), "the whole page arrives: {}", about.body);
    assert_ne!(about.header("content-length"), "3");
    assert_eq!(about.header("x-page"), "about", "the page's own headers are kept");
    let hit = h.get("/about").await;
    assert!(hit.headers.get_all("connection").iter().all(|v| v != "close"));
}
