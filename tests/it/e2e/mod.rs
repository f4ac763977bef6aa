//! End to end: the real Django origin, the node over HTTP, each store. The flow users see:
//! miss, hit, a mutation through the proxy that purges, re-renders, stale serving,
//! coalescing, no-store pages, and a purge racing a slow render.

/// Runs each named `pub async fn(Backend)` of the invoking module on every store: modules
/// `on_memory`, `on_sqlite` and `on_redis`, one test per store. Defined before the submodules
/// so they can use it too.
macro_rules! on_every_store {
    ($($test:ident),* $(,)?) => {
        mod on_memory { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::Backend::Memory).await } )* }
        mod on_sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::Backend::Sqlite).await } )* }
        mod on_redis { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::$test(super::Backend::Redis).await } )* }
    };
}

/// Runs each named `pub async fn(Backend, App)` of the invoking module for every fixture app
/// on every store: modules `react::on_memory` … `svelte::on_redis`.
macro_rules! on_every_app_and_store {
    ($($test:ident),* $(,)?) => {
        on_every_app_and_store!(@app react React $($test),*);
        on_every_app_and_store!(@app vue Vue $($test),*);
        on_every_app_and_store!(@app svelte Svelte $($test),*);
    };
    (@app $module:ident $app:ident $($test:ident),*) => {
        mod $module {
            use super::harness::{App, Backend};
            mod on_memory { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::super::$test(super::Backend::Memory, super::App::$app).await } )* }
            mod on_sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::super::$test(super::Backend::Sqlite, super::App::$app).await } )* }
            mod on_redis { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $test() { super::super::$test(super::Backend::Redis, super::App::$app).await } )* }
        }
    };
}

mod attacks;
mod budgets;
mod faults;
pub mod harness;
mod hydrate;
mod locks;
mod observe;
mod purges;
mod reload;
mod shared;
mod stream;

use crate::common::{DEADLINE, wait_until};
use harness::{App, Backend, Harness, price, text};
use std::time::Duration;

pub async fn miss_hit_then_a_mutation_rerenders_only_affected_pages(backend: Backend, app: App) {
    let h = Harness::start_app(backend, app).await;
    assert_eq!(h.get("/products/7").await.cache(), "MISS");
    let hit = h.get("/products/7").await;
    assert_eq!((hit.status, hit.cache()), (200, "HIT"));
    assert_eq!(price(&hit.body), "€154.75");
    assert_eq!(h.get("/products/8").await.cache(), "MISS");
    assert_eq!(h.get("/products").await.cache(), "MISS");
    assert_eq!(h.get("/products/8").await.cache(), "HIT");

    let mutation = h.set_price(7, 99.5).await;
    assert_eq!(mutation.status, 200);
    assert_eq!(
        mutation.header("x-mizan-invalidate"),
        "product_detail;id=7, product_list",
        "passed through to the client"
    );

    let fresh = h.get("/products/7").await;
    assert_eq!(
        (fresh.cache(), price(&fresh.body)),
        ("MISS", "€99.50"),
        "the affected page re-renders with the new data"
    );
    assert_eq!(h.get("/products/7").await.cache(), "HIT");
    let list = h.get("/products").await;
    assert_eq!(list.cache(), "MISS");
    assert!(list.body.contains("€99.50"));
    assert_eq!(h.get("/products/8").await.cache(), "HIT", "an unrelated page stays cached");
    assert_eq!(h.origin.calls("product_detail").await, 3, "7, 8, then 7 again");
}

pub async fn stale_pages_are_served_while_one_background_render_refreshes_them(backend: Backend, app: App) {
    let h = Harness::start_app(backend, app).await;
    assert_eq!(h.get("/products/3").await.cache(), "MISS");
    h.origin.set_price_quietly(3, 12.0).await;
    // Past ttl (60 s), within stale-while-revalidate (300 s).
    h.node.clock.advance(Duration::from_secs(61));
    let stale = h.get("/products/3").await;
    assert_eq!(stale.cache(), "STALE");
    assert_ne!(price(&stale.body), "€12.00", "the stale copy is served at once");
    let again = h.get("/products/3").await;
    assert!(matches!(again.cache(), "STALE" | "HIT"));
    h.settle().await;
    let refreshed = h.get("/products/3").await;
    assert_eq!((refreshed.cache(), price(&refreshed.body)), ("HIT", "€12.00"));
    assert_eq!(h.origin.calls("product_detail").await, 2, "one background render, however many stale hits");
}

pub async fn stale_pages_are_served_when_the_origin_is_down_within_stale_if_error(backend: Backend, app: App) {
    let mut h = Harness::start_app(backend, app).await;
    let first = h.get("/products/4").await;
    h.origin.stop();
    // Past ttl + swr (360 s), within sie (86 400 s).
    h.node.clock.advance(Duration::from_secs(400));
    let stale = h.get("/products/4").await;
    assert_eq!((stale.status, stale.cache()), (200, "STALE"));
    assert_eq!(stale.body, first.body);
    // Past every window: a clear error, not the old page.
    h.node.clock.advance(Duration::from_secs(90_000));
    let gone = h.get("/products/4").await;
    assert_eq!(gone.status, 502);
    assert!(gone.body.contains("could not be fetched"), "{}", gone.body);
}

pub async fn concurrent_misses_make_one_origin_call_and_one_render(backend: Backend, app: App) {
    let h = std::sync::Arc::new(Harness::start_app(backend, app).await);
    h.origin.gate("product_detail").await;
    let rendered_before = h.node.pool.stats().rendered.load(std::sync::atomic::Ordering::Relaxed);
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.get("/products/9").await })
        })
        .collect();
    // All eight wait on one flight before the origin answers.
    wait_until("eight requests waiting on one flight", DEADLINE, || {
        let keys = h.node.flights.keys();
        std::future::ready(keys.len() == 1 && h.node.flights.waiting(&keys[0]) == 8)
    })
    .await;
    h.origin.release("product_detail").await;
    let mut bodies = Vec::new();
    for r in requests {
        let got = r.await.unwrap();
        assert_eq!((got.status, got.cache()), (200, "MISS"));
        bodies.push(got.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(h.origin.calls("product_detail").await, 1);
    assert_eq!(h.node.pool.stats().rendered.load(std::sync::atomic::Ordering::Relaxed) - rendered_before, 1);
    assert_eq!(h.get("/products/9").await.cache(), "HIT");
}

pub async fn no_store_pages_are_never_cached_nor_shared_between_users(backend: Backend, app: App) {
    let h = Harness::start_app(backend, app).await;
    let u1 = h.get_with("/cart", &[("cookie", "user=u1")]).await;
    assert_eq!((u1.status, u1.cache(), u1.header("cache-control")), (200, "BYPASS", "no-store"));
    assert!(text(&u1.body).contains("Cart of u1"), "{}", u1.body);
    let u2 = h.get_with("/cart", &[("cookie", "user=u2")]).await;
    assert!(text(&u2.body).contains("Cart of u2") && !u2.body.contains("u1"));
    assert_eq!(h.get_with("/cart", &[("cookie", "user=u1")]).await.cache(), "BYPASS");
    assert_eq!(h.origin.calls("cart").await, 3);
    let anonymous = h.get("/cart").await;
    assert_eq!((anonymous.status, anonymous.cache()), (403, "BYPASS"));
}

/// A render of product 5 and one of product 6 are held at the origin while product 5 changes:
/// the purge keeps product 5's old render out of the cache, and only it: product 6's render,
/// which read nothing the purge named, is stored (no write starvation under steady purges).
pub async fn a_purge_during_a_slow_render_keeps_the_old_render_out_of_the_cache(backend: Backend, app: App) {
    let h = std::sync::Arc::new(Harness::start_app(backend, app).await);
    h.origin.gate("product_detail").await;
    let slow = |url: &'static str| {
        let h = h.clone();
        tokio::spawn(async move { h.get(url).await })
    };
    let (five, six) = (slow("/products/5"), slow("/products/6"));
    let origin = &h.origin;
    wait_until("both slow renders' fetches to reach the origin's gate", DEADLINE, || async move {
        origin.waiting("product_detail").await >= 2
    })
    .await;
    // The renders have read the old data and are held; the mutation purges meanwhile.
    assert_eq!(h.set_price(5, 1.25).await.status, 200);
    h.origin.release("product_detail").await;
    let old = five.await.unwrap();
    assert_eq!((old.cache(), price(&old.body)), ("MISS", "€17.15"));
    assert_eq!(six.await.unwrap().cache(), "MISS");
    let next = h.get("/products/5").await;
    assert_eq!((next.cache(), price(&next.body)), ("MISS", "€1.25"), "the render that raced the purge was not stored");
    assert_eq!(h.get("/products/5").await.cache(), "HIT");
    assert_eq!(h.get("/products/6").await.cache(), "HIT", "a purge of product 5 dropped the write of product 6");
}

pub async fn a_page_without_data_is_cached_with_default_lifetimes(backend: Backend, app: App) {
    let h = Harness::start_app(backend, app).await;
    let first = h.get("/about").await;
    assert_eq!((first.status, first.cache()), (200, "MISS"));
    assert!(first.body.contains("<h1>About</h1>"));
    assert_eq!(h.get("/about").await.cache(), "HIT");
    h.node.clock.advance(Duration::from_secs(61)); // past the default ttl of 60 s, no swr
    assert_eq!(h.get("/about").await.cache(), "MISS");
}

/// Every page of the app, as a visitor gets it: the fault pages with their statuses and
/// reasons, the page that varies on a header, the page whose cookie the node drops, the page
/// whose framing headers the node drops, and the pages a CPU budget and a heap limit stop.
pub async fn every_page_of_the_app_is_served_with_the_right_status(backend: Backend, app: App) {
    let h = Harness::start_app(backend, app).await;
    let list = h.get("/products").await;
    assert_eq!((list.status, list.cache()), (200, "MISS"));
    assert!(text(&list.body).contains("Café &lt;Crème&gt;") || list.body.contains("Café &lt;Crème>"), "{app:?}");
    let missing = h.get("/products/9999").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("Product not found"));
    let broken = h.get("/broken").await;
    assert_eq!(broken.status, 502);
    assert!(broken.body.contains("/properties/products/items/properties/price/type"), "{}", broken.body);
    let huge = h.get("/huge").await;
    assert_eq!(huge.status, 502);
    assert!(huge.body.contains("larger than this node accepts"));
    let fr = h.get_with("/search?q=x", &[("accept-language", "fr")]).await;
    assert_eq!(fr.status, 200);
    assert!(text(&fr.body).contains(r#"<p class="language">fr</p>"#), "{app:?}: {}", fr.body);
    let promo = h.get("/promo").await;
    assert_eq!((promo.status, promo.headers.get("set-cookie")), (200, None));
    let about = h.get("/about").await;
    assert_eq!((about.status, about.header("x-page"), about.header("connection")), (200, "about", ""));
    assert_eq!(about.header("content-length"), about.body.len().to_string(), "the bundle's length was dropped");
    let spin = h.get("/spin").await;
    assert_eq!(spin.status, 500);
    assert!(spin.body.contains("more computing time than allowed"), "{}", spin.body);
    let hog = h.get("/hog").await;
    assert_eq!(hog.status, 500, "{}", hog.body);
    assert_eq!(h.get("/products/7").await.status, 200, "the node serves on after both");
}

on_every_app_and_store!(
    every_page_of_the_app_is_served_with_the_right_status,
    miss_hit_then_a_mutation_rerenders_only_affected_pages,
    stale_pages_are_served_while_one_background_render_refreshes_them,
    stale_pages_are_served_when_the_origin_is_down_within_stale_if_error,
    concurrent_misses_make_one_origin_call_and_one_render,
    no_store_pages_are_never_cached_nor_shared_between_users,
    a_purge_during_a_slow_render_keeps_the_old_render_out_of_the_cache,
    a_page_without_data_is_cached_with_default_lifetimes,
);
