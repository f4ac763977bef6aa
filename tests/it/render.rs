//! Rendering the fixture React app's pages through the pool.

use crate::common::{hydration_payload, pool, products, react_bundle, react_page};
use serde_json::Value;

#[tokio::test]
async fn renders_the_product_list_with_every_row() {
    let pool = pool(1, &[react_bundle()]);
    let (bundle, page, input) = react_page("/products");
    let out = pool.render(&bundle, &page, &input).await.unwrap();
    assert_eq!(out.status, 200);
    assert_eq!(out.headers, vec![("content-type".to_string(), "text/html; charset=utf-8".to_string())]);
    assert!(out.html.starts_with("<!DOCTYPE html><html lang=\"en\">"), "{}", &out.html[..80]);
    assert!(out.html.contains("<title>Products</title>"));
    assert_eq!(out.html.matches("<tr").count(), 301, "a header row and 300 product rows");
    assert!(out.html.contains(r#"<a href="/products/300">"#));
}

#[tokio::test]
async fn renders_a_product_detail_page_with_escaped_text() {
    let pool = pool(1, &[react_bundle()]);
    let (bundle, page, input) = react_page("/products/7");
    let out = pool.render(&bundle, &page, &input).await.unwrap();
    assert_eq!(out.status, 200);
    assert!(out.html.contains("<h1>Café &lt;Crème&gt; &amp; &quot;Friends&quot; 7</h1>"), "{}", out.html);
    assert!(out.html.contains("<title>Café &lt;Crème&gt; &amp; &quot;Friends&quot; 7</title>"));
    assert!(out.html.contains("€154.75"));

    let (bundle, page, input) = react_page("/products/13");
    let out = pool.render(&bundle, &page, &input).await.unwrap();
    assert!(out.html.contains("<h1>日本語の製品 13 🎧</h1>"));
}

#[tokio::test]
async fn page_headers_reach_the_node() {
    let pool = pool(1, &[react_bundle()]);
    let (bundle, page, input) = react_page("/promo");
    let out = pool.render(&bundle, &page, &input).await.unwrap();
    assert!(out.headers.contains(&("set-cookie".to_string(), "promo_seen=1; Path=/".to_string())), "{:?}", out.headers);
}

#[tokio::test]
async fn an_origin_error_renders_the_django_error_state_with_its_status() {
    let pool = pool(1, &[react_bundle()]);
    let (bundle, page, input) = react_page("/products/9999");
    assert_eq!(input.errors.len(), 1);
    let out = pool.render(&bundle, &page, &input).await.unwrap();
    assert_eq!(out.status, 404);
    assert!(out.html.contains("<h1>Product not found</h1><p>No product with that id</p>"), "{}", out.html);
}

#[tokio::test]
async fn embedded_data_cannot_close_the_script_element() {
    let pool = pool(1, &[react_bundle()]);
    let (bundle, page, input) = react_page("/products/7");
    let description = input.data[0].data.to_value()["description"].as_str().unwrap().to_string();
    assert!(description.contains("</script>") && description.contains('\u{2028}') && description.contains('\u{2029}'));

    let out = pool.render(&bundle, &page, &input).await.unwrap();
    let payload = hydration_payload(&out.html);
    for forbidden in ["<", ">", "&", "\u{2028}", "\u{2029}"] {
        assert!(!payload.contains(forbidden), "payload holds a raw {forbidden:?}: {payload}");
    }
    assert_eq!(out.html.matches("</script>").count(), 1, "only the payload element's own end tag");
    // The payload parses back to exactly the data the page was rendered from.
    let parsed: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(parsed["data"][0]["key"], r#"product_detail:{"id":7}"#);
    assert_eq!(parsed["data"][0]["data"], products()[6]);
}

#[tokio::test]
async fn the_one_shot_cli_path_renders_from_captured_answers() {
    let manifest = crate::common::root().join("fixtures/manifests/react.json");
    let data = crate::common::root().join("fixtures/data/answers/product_404.json");
    let out = mizan_render::oneshot::render(&manifest, "/products/9999", Some(&data), 0).await.unwrap();
    assert_eq!((out.page.status, out.summary()), (404, None));
    // Repeated: the first render's page, and the times of those after it.
    let out = mizan_render::oneshot::render(&manifest, "/products/9999", Some(&data), 3).await.unwrap();
    assert_eq!((out.page.status, out.times.len()), (404, 3));
    let summary = out.summary().unwrap();
    assert!(summary.starts_with("3 renders after the first, in the isolate: median "), "{summary}");
    let err = mizan_render::oneshot::render(&manifest, "/products/1", None, 0).await.unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "the data file has no answer for context \"product_detail\", which route /products/:id reads"
    );
    let err = mizan_render::oneshot::render(&manifest, "/nowhere", None, 0).await.unwrap_err();
    assert_eq!(format!("{err:#}"), "no route matches /nowhere");
}
