//! Streaming renders through the pool: the head, each chunk as the bundle produces it, then the
//! end, or the fault after the chunks already sent; the same limits and between-render rules as
//! buffered renders; and the fixture apps' streams byte for byte equal to their buffered pages.

use crate::common::{App, pool, test_bundle};
use mizan_render::abi::PageInput;
use mizan_render::pool::{Pool, PoolConfig, RenderError, RenderOptions, RenderStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn input(url: &str) -> PageInput {
    PageInput { url: url.into(), route: url.into(), ..PageInput::default() }
}

async fn start(pool: &Pool, bundle: &str, page: &str, url: &str) -> Result<RenderStream, RenderError> {
    pool.render_stream_with(bundle, page, &input(url), RenderOptions::default()).await
}

/// Every chunk until the end, and how the stream ended.
async fn chunks(stream: &mut RenderStream) -> (Vec<String>, Result<(), RenderError>) {
    let mut chunks = Vec::new();
    loop {
        match stream.next_chunk().await {
            Ok(Some(chunk)) => chunks.push(String::from_utf8(chunk.to_vec()).unwrap()),
            Ok(None) => return (chunks, Ok(())),
            Err(e) => return (chunks, Err(e)),
        }
    }
}

#[tokio::test]
async fn a_streaming_render_sends_its_head_then_each_chunk_then_its_end() {
    let pool = pool(1, &[test_bundle("streams"), test_bundle("faulty")]);
    assert!(pool.streams("streams") && !pool.streams("faulty"));
    let mut stream = start(&pool, "streams", "ok", "/a").await.unwrap();
    assert_eq!((stream.status, stream.headers.clone()), (200, vec![("x-renders".into(), "1".into())]));
    let (got, end) = chunks(&mut stream).await;
    assert_eq!((got, end.is_ok()), (vec!["<p>".to_string(), "ok /a".into(), "</p>".into()], true));
    assert!(stream.elapsed().is_some());
    assert_eq!(pool.stats().rendered.load(Ordering::Relaxed), 1);
    // A bundle without renderStream renders buffered: its whole page comes as one chunk.
    let (body, _) = start(&pool, "faulty", "ok", "/b").await.unwrap().collect().await.unwrap();
    assert_eq!(body, b"<p>ok /b</p>");
}

#[tokio::test]
async fn the_caller_gets_the_first_chunk_while_the_render_still_runs() {
    let pool = pool(1, &[test_bundle("streams")]);
    let hold = pool.hold_streams();
    let mut stream = start(&pool, "streams", "ok", "/a").await.unwrap();
    assert_eq!(stream.next_chunk().await.unwrap().unwrap(), "<p>");
    // The render is held after that chunk: it has not finished.
    assert_eq!(pool.stats().rendered.load(Ordering::Relaxed), 0);
    drop(hold);
    let (rest, end) = chunks(&mut stream).await;
    assert_eq!((rest, end.is_ok()), (vec!["ok /a".to_string(), "</p>".into()], true));
    assert_eq!(pool.stats().rendered.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_fault_mid_stream_reaches_the_caller_after_the_chunks_sent_and_replaces_the_isolate() {
    let pool = pool(1, &[test_bundle("streams")]);
    let (got, end) = chunks(&mut start(&pool, "streams", "fails_midway", "/").await.unwrap()).await;
    assert_eq!(got, ["<head>"]);
    let err = end.unwrap_err();
    assert!(matches!(&err, RenderError::Js { page, .. } if page == "fails_midway"), "{err:?}");
    assert!(err.to_string().contains("threw: Error: boom midway"), "{err}");
    assert!(err.is_page_fault());

    let (got, end) = chunks(&mut start(&pool, "streams", "throws_midway", "/").await.unwrap()).await;
    assert_eq!(got, ["<head>"]);
    let err = end.unwrap_err().to_string();
    assert!(err.contains(r#"render threw a value that is not an Error: {"code":42}"#), "{err}");

    // Each fault replaced the only isolate: the next render starts from a fresh module state.
    let stream = start(&pool, "streams", "ok", "/").await.unwrap();
    assert_eq!(stream.headers, vec![("x-renders".to_string(), "1".to_string())]);
    assert_eq!(pool.stats().failed.load(Ordering::Relaxed), 2);
    assert_eq!(pool.stats().recycled.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_streaming_render_is_bounded_by_its_cpu_budget_and_deadline_after_its_first_bytes() {
    let config = PoolConfig {
        workers: 1,
        cpu_budget: Duration::from_millis(100),
        render_timeout: Duration::from_millis(500),
        ..PoolConfig::default()
    };
    let pool = Pool::start(config, &[test_bundle("streams")]).unwrap();
    let (got, end) = chunks(&mut start(&pool, "streams", "spins_midway", "/").await.unwrap()).await;
    assert_eq!(got, ["<head>"]);
    assert!(matches!(end, Err(RenderError::CpuBudget { ms: 100, .. })), "{end:?}");
    let (got, end) = chunks(&mut start(&pool, "streams", "waits_midway", "/").await.unwrap()).await;
    assert_eq!(got, ["<head>"]);
    assert!(matches!(end, Err(RenderError::Timeout { ms: 500, .. })), "{end:?}");
    let (body, _) = start(&pool, "streams", "ok", "/after").await.unwrap().collect().await.unwrap();
    assert_eq!(body, b"<p>ok /after</p>");
}

#[tokio::test]
async fn nothing_a_streaming_render_left_behind_runs_during_the_next() {
    let pool = pool(1, &[test_bundle("streams")]);
    let (body, _) = start(&pool, "streams", "leaves_a_timer", "/").await.unwrap().collect().await.unwrap();
    assert_eq!(body, b"<p>timer left</p>");
    let (body, _) = start(&pool, "streams", "left_behind", "/").await.unwrap().collect().await.unwrap();
    assert_eq!(String::from_utf8(body).unwrap(), "nothing", "the timer was cancelled when the stream ended");
}

#[tokio::test]
async fn a_bad_stream_is_refused_naming_what_is_wrong() {
    let pool = pool(1, &[test_bundle("streams")]);
    let (got, end) = chunks(&mut start(&pool, "streams", "string_chunk", "/").await.unwrap()).await;
    assert!(got.is_empty());
    let err = end.unwrap_err().to_string();
    assert!(err.contains("TypeError: renderStream() body chunks must be Uint8Array, got string"), "{err}");
    let err = start(&pool, "streams", "no_body", "/").await.unwrap_err().to_string();
    assert!(err.contains("invalid render result: renderStream() must resolve to { status, headers, body }"), "{err}");
    let err = start(&pool, "streams", "bad_status", "/").await.unwrap_err();
    assert!(matches!(&err, RenderError::BadOutput { .. }), "{err:?}");
    assert!(err.to_string().ends_with("invalid render result: status 1000 is not an HTTP status"), "{err}");
}

/// The fixture app's product list, streamed: the document's head comes first, alone, and the
/// whole body is the buffered page byte for byte.
async fn the_stream_of_a_fixture_page_is_its_buffered_page(app: App) {
    let bundle = app.server_bundle();
    let pool = pool(1, std::slice::from_ref(&bundle));
    assert!(pool.streams(app.bundle()));
    let (name, page, input) = app.page("/products");
    let whole = pool.render(&name, &page, &input).await.unwrap();
    let mut stream = pool.render_stream_with(&name, &page, &input, RenderOptions::default()).await.unwrap();
    assert_eq!((stream.status, &stream.headers), (whole.status, &whole.headers));
    let first = stream.next_chunk().await.unwrap().unwrap();
    let root = r#"<div id="root">"#;
    let shell = &whole.html[..whole.html.find(root).unwrap() + root.len()];
    assert_eq!(first, shell, "the document's head first, before the page renders");
    let (rest, elapsed) = stream.collect().await.unwrap();
    assert!(elapsed > Duration::ZERO);
    assert_eq!(String::from_utf8([&first[..], &rest].concat()).unwrap(), whole.html);
}

#[tokio::test]
async fn the_react_stream_is_the_buffered_page_byte_for_byte() {
    the_stream_of_a_fixture_page_is_its_buffered_page(App::React).await;
}

#[tokio::test]
async fn the_vue_stream_is_the_buffered_page_byte_for_byte() {
    the_stream_of_a_fixture_page_is_its_buffered_page(App::Vue).await;
}

#[tokio::test]
async fn svelte_has_no_stream_and_renders_whole() {
    let bundle = App::Svelte.server_bundle();
    let pool = pool(1, std::slice::from_ref(&bundle));
    assert!(!pool.streams(App::Svelte.bundle()));
    let (name, page, input) = App::Svelte.page("/products");
    let whole = pool.render(&name, &page, &input).await.unwrap();
    let (body, _) =
        pool.render_stream_with(&name, &page, &input, RenderOptions::default()).await.unwrap().collect().await.unwrap();
    assert_eq!(String::from_utf8(body).unwrap(), whole.html);
}
