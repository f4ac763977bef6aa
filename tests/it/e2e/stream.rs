//! Streaming misses end to end (`/products-stream` and `/spin-stream` ask to stream in the
//! fixture manifests): the visitor gets the first bytes while the page renders, the body is
//! the buffered page byte for byte and is stored whole, a render that fails midway aborts the
//! response and is never stored, and coalesced requests get the same bytes from one render.
//! React and Vue stream; Svelte, which has no streaming renderer, renders such routes whole.

use super::harness::{self, App, Backend, Harness};
use crate::common::{DEADLINE, wait_until};
use mizan_render::node::page::{CacheState, PageRequest};
use std::sync::Arc;
use std::sync::atomic::Ordering;

const STREAMED: &str = "/products-stream";

fn rendered(h: &Harness) -> u64 {
    h.node.pool.stats().rendered.load(Ordering::Relaxed)
}

/// A GET whose body the test reads chunk by chunk.
async fn open(h: &Harness, path: &str) -> reqwest::Response {
    h.client.get(format!("{}{path}", h.url)).send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The rest of a body, as text; panics if it is cut.
async fn rest(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("a complete body") {
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).unwrap()
}

pub async fn the_first_bytes_arrive_while_the_page_still_renders(backend: Backend, app: App) {
    let h = Harness::start_app(backend, app).await;
    let before = rendered(&h);
    let hold = h.node.pool.hold_streams();
    let mut response = open(&h, STREAMED).await;
    assert_eq!((response.status().as_u16(), header(&response, "x-mizan-cache")), (200, Some("MISS")));
    assert_eq!(header(&response, "content-length"), None, "streamed: the length is not known yet");
    assert_eq!(header(&response, "etag"), None, "streamed: the entity tag is not known yet");
    assert_eq!(header(&response, "content-type"), Some("text/html; charset=utf-8"));
    let first = response.chunk().await.unwrap().expect("a first chunk");
    let first = String::from_utf8(first.to_vec()).unwrap();
    assert!(first.starts_with("<!DOCTYPE html>") && !first.contains("</html>"), "{first}");
    // The render is held after its first chunk: not finished, not stored.
    assert_eq!(rendered(&h), before, "the render has not finished");
    let keys = h.node.flights.keys();
    assert_eq!(keys.len(), 1, "its flight is in the air");
    assert!(h.node.store.get(&keys[0]).await.unwrap().is_none(), "nothing stored yet");
    drop(hold);
    let body = first + &rest(response).await;
    assert!(body.ends_with("</html>") && body.contains(r#"<a href="/products/300">"#), "{body}");
    assert_eq!(rendered(&h), before + 1);
    let hit = h.get(STREAMED).await;
    assert_eq!((hit.cache(), hit.body.as_str()), ("HIT", body.as_str()), "stored whole when the render completed");
}

pub async fn a_streamed_miss_is_the_buffered_page_byte_for_byte_and_is_stored(backend: Backend, app: App) {
    let h = Harness::start_app(backend, app).await;
    let streamed = h.get(STREAMED).await;
    assert_eq!((streamed.status, streamed.cache()), (200, "MISS"));
    assert_eq!(streamed.header("content-length"), "", "a streamed miss goes out chunked");
    assert_eq!(streamed.header("transfer-encoding"), "chunked");
    let hit = h.get(STREAMED).await;
    assert_eq!((hit.cache(), &hit.body), ("HIT", &streamed.body));
    assert_eq!(hit.header("content-length"), streamed.body.len().to_string());
    // The same page rendered buffered (as prerendering does) after a purge: the same bytes,
    // the same entity tag as the one stored from the stream.
    h.node.purge_from_origin(mizan_render::cache::invalidate::parse("product_list").0.remove(0)).await;
    let headers = http::HeaderMap::new();
    let request = PageRequest { path: STREAMED, query: "", headers: &headers, stream: false };
    let buffered = h.node.page(&request).await.unwrap();
    assert_eq!((buffered.state, buffered.live.is_none()), (CacheState::Miss, true));
    assert_eq!(buffered.page.body, streamed.body.as_bytes(), "streamed and buffered renders differ");
    assert_eq!(buffered.page.meta.etag.as_deref(), Some(hit.header("etag")));
}

pub async fn a_render_that_fails_after_its_first_bytes_aborts_the_response_and_is_not_stored(
    backend: Backend,
    app: App,
) {
    let h = Harness::start_app(backend, app).await;
    for attempt in 0..2 {
        // The page's shell goes out, then its component spins until its CPU budget ends it.
        let mut response = open(&h, "/spin-stream").await;
        assert_eq!((response.status().as_u16(), header(&response, "x-mizan-cache")), (200, Some("MISS")), "{attempt}");
        let mut got = Vec::new();
        let cut = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => got.extend_from_slice(&chunk),
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        assert!(cut, "the client sees the body cut, not a complete response");
        assert!(got.starts_with(b"<!DOCTYPE html>"), "the first bytes went out: {}", String::from_utf8_lossy(&got));
        // Nothing stored: the next request renders again (a MISS, not a HIT).
    }
    assert_eq!(h.node.pool.stats().failed.load(Ordering::Relaxed), 2);
    assert_eq!(h.node.stats.misses.load(Ordering::Relaxed), 2);
    assert!(h.node.flights.keys().is_empty());
}

pub async fn coalesced_requests_get_the_same_bytes_from_one_render(backend: Backend, app: App) {
    let h = Arc::new(Harness::start_app(backend, app).await);
    let before = rendered(&h);
    let hold = h.node.pool.hold_streams();
    h.origin.gate("product_list").await;
    // Four requests before the render starts...
    let early: Vec<_> = (0..4)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { open(&h, STREAMED).await })
        })
        .collect();
    wait_until("four requests waiting on one flight", DEADLINE, || {
        let keys = h.node.flights.keys();
        std::future::ready(keys.len() == 1 && h.node.flights.waiting(&keys[0]) == 4)
    })
    .await;
    h.origin.release("product_list").await;
    let mut responses = Vec::new();
    for request in early {
        responses.push(request.await.unwrap());
    }
    // ...each get the first chunk while the render is held; one more joins mid-stream.
    let mut bodies = Vec::new();
    for response in &mut responses {
        bodies.push(response.chunk().await.unwrap().unwrap().to_vec());
    }
    responses.push(open(&h, STREAMED).await);
    bodies.push(Vec::new());
    assert_eq!(rendered(&h), before, "the render is still held");
    drop(hold);
    for (response, body) in responses.into_iter().zip(&mut bodies) {
        assert_eq!(header(&response, "x-mizan-cache"), Some("MISS"));
        body.extend_from_slice(rest(response).await.as_bytes());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "every request got the same bytes");
    assert!(bodies[0].ends_with(b"</html>"));
    assert_eq!(rendered(&h), before + 1, "one render");
    assert_eq!(h.origin.calls("product_list").await, 1, "one origin call");
    assert_eq!(h.get(STREAMED).await.cache(), "HIT");
}

/// Svelte 5 has no streaming renderer: a route that asks to stream renders whole, with its
/// length and entity tag, and is stored as any page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_bundle_without_render_stream_a_streaming_route_renders_whole() {
    let h = Harness::start_app(Backend::Memory, App::Svelte).await;
    let hold = h.node.pool.hold_streams(); // would hang a streaming render: none happens
    let miss = h.get(STREAMED).await;
    assert_eq!((miss.status, miss.cache()), (200, "MISS"));
    assert_eq!(miss.header("content-length"), miss.body.len().to_string());
    assert!(miss.header("etag").starts_with('"'));
    assert!(miss.body.ends_with("</html>"));
    drop(hold);
    assert_eq!(h.get(STREAMED).await.cache(), "HIT");
}

/// HEAD and prerendering never stream: a HEAD miss renders whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_never_streams() {
    let h = Harness::start_app(Backend::Memory, App::React).await;
    let hold = h.node.pool.hold_streams();
    let head = h.client.head(format!("{}{STREAMED}", h.url)).send().await.unwrap();
    assert_eq!((head.status().as_u16(), header(&head, "x-mizan-cache")), (200, Some("MISS")));
    assert!(header(&head, "etag").is_some_and(|e| e.starts_with('"')));
    drop(hold);
    assert_eq!(h.get(STREAMED).await.cache(), "HIT");
}

on_every_app_and_store!(@app react React
    the_first_bytes_arrive_while_the_page_still_renders,
    a_streamed_miss_is_the_buffered_page_byte_for_byte_and_is_stored,
    a_render_that_fails_after_its_first_bytes_aborts_the_response_and_is_not_stored,
    coalesced_requests_get_the_same_bytes_from_one_render
);
on_every_app_and_store!(@app vue Vue
    the_first_bytes_arrive_while_the_page_still_renders,
    a_streamed_miss_is_the_buffered_page_byte_for_byte_and_is_stored,
    a_render_that_fails_after_its_first_bytes_aborts_the_response_and_is_not_stored,
    coalesced_requests_get_the_same_bytes_from_one_render
);
