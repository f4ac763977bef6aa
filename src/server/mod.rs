//! The HTTP face of the node (axum): pages, the reverse proxy with `X-Mizan-Invalidate`,
//! `POST /_mizan/purge`, `POST /_mizan/reload` and `GET /_mizan/health`. Each request is
//! served by the node generation that serves when it arrives ([`Live`]), to its end. This is the only layer that turns errors
//! into responses; internals (JS stacks, origin URLs) go to the log, never to the client.

pub mod access;
mod errors;
pub mod observe;
mod pages;
mod proxy;

use crate::cache::purge::PurgeRequest;
use crate::node::Node;
use crate::node::live::Live;
use crate::origin::proxy::ProxyDecision;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The node's routes, `/metrics` included. Serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn app(live: Arc<Live>) -> Router {
    app_with(live, true)
}

/// The node's routes; `/metrics` among them only when `metrics` (else serve
/// [`observe::metrics_app`] on an address of its own).
pub fn app_with(live: Arc<Live>, metrics: bool) -> Router {
    let registry = live.node().metrics.clone();
    let router = if metrics { Router::new().merge(observe::routes(registry.clone())) } else { Router::new() };
    let router = router
        .route("/_mizan/health", get(health))
        .route("/_mizan/assets/{*path}", get(asset))
        .route("/_mizan/purge", post(purge).layer(DefaultBodyLimit::max(64 * 1024)))
        .route("/_mizan/reload", post(reload).layer(DefaultBodyLimit::max(64 * 1024)))
        .fallback(any(dispatch))
        .with_state(live);
    observe::track(router, registry)
}

async fn dispatch(
    State(live): State<Arc<Live>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let node = live.node();
    match crate::origin::proxy::decide(request.uri().path(), &node.manifest.proxy) {
        ProxyDecision::Forward(path) => return proxy::forward(&node, client, &path, request).await,
        ProxyDecision::Refuse(refusal) => {
            tracing::warn!(path = %request.uri().path(), %refusal, "proxy request refused");
            return errors::page(StatusCode::BAD_REQUEST, "This address cannot be forwarded.");
        }
        ProxyDecision::Page => {}
    }
    match *request.method() {
        Method::GET | Method::HEAD => pages::serve(&node, request).await,
        _ => (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, HEAD")]).into_response(),
    }
}

/// How long after a failed store call the node reports the store as failing.
const STORE_FAILING_FOR_MS: u64 = 30_000;

async fn health(State(live): State<Arc<Live>>) -> Response {
    let node = live.node();
    let s = &node.stats;
    let p = node.pool.stats();
    let now = node.clock.now();
    let (workers, alive) = (node.pool.workers(), node.pool.alive());
    let mut reasons = Vec::new();
    if alive < workers {
        reasons.push(format!("{} of {workers} render workers are missing", workers - alive));
    }
    let last_store_error = s.last_store_error_ms.load(Ordering::Relaxed);
    if last_store_error != 0 && now.saturating_sub(last_store_error) < STORE_FAILING_FOR_MS {
        reasons.push(format!("the {} store failed {} s ago", node.store.name(), (now - last_store_error) / 1000));
    }
    let tier = node.tier_report();
    if tier["current"] == false {
        reasons.push("the memory tier does not follow the purge log now: pages come from Redis".to_string());
    }
    let pending_purges = node.purges.len();
    if pending_purges > 0 {
        reasons.push(format!("{pending_purges} purges from the origin have not landed yet (retrying)"));
    }
    let quarantined: Vec<&str> =
        node.quarantine.quarantined(now).into_iter().map(|i| node.manifest.routes[i].path.as_str()).collect();
    if !quarantined.is_empty() {
        reasons.push(format!("routes quarantined: {}", quarantined.join(", ")));
    }
    // No worker can render: the node cannot serve pages (a load balancer should look away).
    let (status, code) = match (alive, reasons.is_empty()) {
        (0, _) => ("down", StatusCode::SERVICE_UNAVAILABLE),
        (_, true) => ("ok", StatusCode::OK),
        (_, false) => ("degraded", StatusCode::OK),
    };
    let body = json!({
        "status": status,
        "reasons": reasons,
        "store": node.store.name(),
        "generation": live.generation(),
        "retiring": live.retiring(),
        "bundles": node.bundle_hashes(),
        "workers": workers,
        "alive_workers": alive,
        "queued_bytes": node.pool.queued_bytes(),
        "pages": {
            "hit": s.hits.load(Ordering::Relaxed),
            "miss": s.misses.load(Ordering::Relaxed),
            "stale": s.stale.load(Ordering::Relaxed),
            "bypass": s.bypass.load(Ordering::Relaxed),
            "quarantined": s.quarantined.load(Ordering::Relaxed),
        },
        "renders": {
            "ok": p.rendered.load(Ordering::Relaxed),
            "failed": p.failed.load(Ordering::Relaxed),
            "worker_restarts": p.restarts.load(Ordering::Relaxed),
        },
        "quarantined_routes": quarantined,
        "quarantines": node.quarantine.started.load(Ordering::Relaxed),
        "store_errors": s.store_errors.load(Ordering::Relaxed),
        "dropped_writes": s.dropped_writes.load(Ordering::Relaxed),
        "purged": s.purged.load(Ordering::Relaxed),
        "pending_purges": pending_purges,
        "store_tier": tier,
        "store_locks": s.locks.report(),
    });
    (code, axum::Json(body)).into_response()
}

/// A client bundle: named by its content hash, so cacheable for ever.
async fn asset(State(live): State<Arc<Live>>, uri: axum::http::Uri) -> Response {
    let node = live.node();
    match node.assets.get(uri.path()) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            asset.body.clone(),
        )
            .into_response(),
        None => errors::page(StatusCode::NOT_FOUND, "There is no asset at this address."),
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Checks the `X-Mizan-Signature` of a control request (`what`: purge, reload); the refusal
/// when it does not hold.
fn signed(node: &Node, what: &str, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    let signature = headers.get("x-mizan-signature").and_then(|v| v.to_str().ok());
    let now = node.clock.now() / 1000;
    let refused = node.verifier.verify(signature, body, now).err()?;
    tracing::warn!(error = %refused, "{what} refused");
    Some(json_error(StatusCode::UNAUTHORIZED, &refused.to_string()))
}

/// Loads the manifest and bundles again (signed, like a purge; the body is not read).
async fn reload(State(live): State<Arc<Live>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = signed(&live.node(), "reload", &headers, &body) {
        return refused;
    }
    match live.reload().await {
        Ok(reloaded) => axum::Json(reloaded).into_response(),
        Err(error) => json_error(StatusCode::UNPROCESSABLE_ENTITY, &format!("reload refused: {error}")),
    }
}

async fn purge(State(live): State<Arc<Live>>, headers: HeaderMap, body: Bytes) -> Response {
    let node = live.node();
    if let Some(refused) = signed(&node, "purge", &headers, &body) {
        return refused;
    }
    let request: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("purge body: {e}")),
    };
    let mut purged = 0;
    for target in &request.purge {
        match node.store.purge(&target.context, &target.params, request.mode.into()).await {
            Ok(n) => {
                purged += n;
                node.metrics.purged(crate::metrics::PurgeSource::Api, n);
            }
            Err(e) => {
                node.store_failed("purge", &e);
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cache store unavailable; nothing was purged after this point",
                );
            }
        }
    }
    node.stats.purged.fetch_add(purged, Ordering::Relaxed);
    tracing::info!(purged, targets = request.purge.len(), "signed purge");
    axum::Json(json!({ "purged": purged })).into_response()
}
