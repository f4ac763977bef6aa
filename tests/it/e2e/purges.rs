//! No purge is ever lost (issue 14): a purge the store cannot take is retried until it lands,
//! and until then no page that depends on it is served from the cache.

use super::harness::{Backend, Harness, price};
use mizan_render::node::StoreConfig;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_the_store_cannot_take_is_retried_and_its_pages_are_never_served_old() {
    let path = crate::common::scratch_db("purge-retry");
    let store = StoreConfig::Sqlite(path.clone());
    let h = Harness::start_configured(Backend::Sqlite, move |c| c.store = store).await;
    assert_eq!(h.get("/products/7").await.cache(), "MISS");
    let cached = h.get("/products/7").await;
    assert_eq!((cached.cache(), price(&cached.body)), ("HIT", "€154.75"));

    // Another process holds the database's write lock: reads go on, writes (the purge) fail.
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mutation = h.set_price(7, 99.5).await;
    assert_eq!(mutation.status, 200, "the mutation's answer still goes out");
    assert_eq!(h.node.purges.len(), 2, "both purges are kept (product_detail;id=7 and product_list)");
    // The old page is still in the store, readable: it must not be served.
    let fresh = h.get("/products/7").await;
    assert_eq!((fresh.cache(), price(&fresh.body)), ("MISS", "€99.50"), "rendered fresh from the origin");
    let health: serde_json::Value =
        h.client.get(format!("{}/_mizan/health", h.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!((health["status"].as_str(), health["pending_purges"].as_u64()), (Some("degraded"), Some(2)));

    // The lock goes: the retry lands, and caching resumes with the new data.
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    let landed = || std::future::ready(h.node.purges.is_empty());
    crate::common::wait_until("the deferred purges to land", Duration::from_secs(30), landed).await;
    let after = h.get("/products/7").await;
    assert_eq!(price(&after.body), "€99.50");
    let again = h.get("/products/7").await;
    assert_eq!((again.cache(), price(&again.body)), ("HIT", "€99.50"));
}
