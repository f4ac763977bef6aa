//! What the node tells its operator about each request: the request id (`X-Request-Id`,
//! taken when well-formed, else made), one access log line, and the request metrics; and
//! `GET /metrics`, the Prometheus text of every metric ([`crate::metrics`]).
//!
//! [`track`] wraps the whole router. The pipeline notes what only it knows (the route
//! pattern, the cache state, render and origin time: [`crate::metrics::request`]); the
//! layer reads those notes when the response head is ready, so the line is written and the
//! request counted before the body goes out (a streamed body's size is not known then).

use crate::metrics::Metrics;
use crate::metrics::request::{self as per_request, Facts, RequestId, Scoped};
use axum::Router;
use axum::body::HttpBody as _;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service};

/// The target of the access log lines (`MIZAN_LOG=info,mizan_render::access=off` silences
/// them).
pub const ACCESS: &str = "mizan_render::access";

/// The request id header, in and out.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The `route` label of a request that reached no route, proxy prefix nor endpoint.
const UNMATCHED: &str = "unmatched";

/// Longest path logged; a longer one is cut and marked.
const MAX_LOGGED_PATH: usize = 256;

/// Longest query key logged.
const MAX_LOGGED_KEY: usize = 64;

/// `GET /metrics` alone, for a listener of its own (so the metrics need not be public).
pub fn metrics_app(metrics: Arc<Metrics>) -> Router {
    routes(metrics)
}

/// The `GET /metrics` route, to merge into a router of any state.
pub fn routes<S: Clone + Send + Sync + 'static>(metrics: Arc<Metrics>) -> Router<S> {
    Router::new().route("/metrics", get(scrape)).with_state(metrics)
}

/// `router` with every request given an id, logged and counted into `metrics`.
pub fn track<S: Clone + Send + Sync + 'static>(router: Router<S>, metrics: Arc<Metrics>) -> Router<S> {
    router.layer(Track { metrics })
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render()).into_response()
}

/// The layer [`track`] applies. Hand-written rather than `axum::middleware::from_fn`, which
/// clones and boxes the inner service and boxes its own future on every request: about a
/// fifth of the hit path's throughput.
#[derive(Clone)]
struct Track {
    metrics: Arc<Metrics>,
}

impl<S> Layer<S> for Track {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked { inner, metrics: self.metrics.clone() }
    }
}

/// A service whose requests are tracked.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for Tracked<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let incoming = request.headers().get(&X_REQUEST_ID);
        let (id, echo) = match incoming.and_then(|v| RequestId::parse(v.as_bytes()).map(|id| (id, v.clone()))) {
            Some(taken) => taken,
            None => {
                let id = RequestId::generate();
                (id, id.header_value())
            }
        };
        let seen = tracing::enabled!(target: ACCESS, tracing::Level::INFO)
            .then(|| Seen { method: request.method().clone(), uri: request.uri().clone() });
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let start = Start { started, id, echo, seen, matched };
        let inner = per_request::scope(id, self.inner.call(request));
        TrackedFuture { inner, start: Some(start), metrics: self.metrics.clone() }
    }
}

/// What is known of a request when it starts.
struct Start {
    started: Instant,
    id: RequestId,
    /// The id as the response's header: the request's own value when it was taken.
    echo: HeaderValue,
    /// Kept only when the line will be written.
    seen: Option<Seen>,
    matched: Option<MatchedPath>,
}

pin_project_lite::pin_project! {
    /// A tracked request's response: the inner one, with its id, logged and counted.
    struct TrackedFuture<F> {
        #[pin]
        inner: Scoped<F>,
        start: Option<Start>,
        metrics: Arc<Metrics>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for TrackedFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.as_mut().poll(cx));
        let facts = this.inner.take_value().map(|scope| scope.into_facts()).unwrap_or_default();
        if let Some(start) = this.start.take() {
            finish(this.metrics, start, &facts, &mut response);
        }
        Poll::Ready(Ok(response))
    }
}

/// Sets the response's id, counts the request, writes its line.
fn finish(metrics: &Metrics, start: Start, facts: &Facts, response: &mut Response) {
    let took = start.started.elapsed();
    response.headers_mut().insert(X_REQUEST_ID, start.echo);
    let status = response.status().as_u16();
    let matched = start.matched.as_ref().map(|m| m.as_str());
    let route = facts.route.as_ref().map(|r| r.as_str()).or(matched).unwrap_or(UNMATCHED);
    metrics.request(route, facts.cache, status, took);
    if let Some(seen) = &start.seen {
        log(seen, route, status, facts, response.body().size_hint().exact(), took, start.id);
    }
}

/// What the log line needs of the request, kept only when the line will be written.
struct Seen {
    method: Method,
    uri: Uri,
}

/// Milliseconds, to a tenth.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// The access log line of one request.
fn log(seen: &Seen, route: &str, status: u16, facts: &Facts, bytes: Option<u64>, took: Duration, id: RequestId) {
    let path = LoggedTarget(&seen.uri);
    let fields = super::access::Fields {
        message: "request",
        method: &seen.method,
        route,
        status,
        cache: facts.cache.map(|c| crate::metrics::cache_label(Some(c))),
        render_ms: facts.render.map(ms),
        origin_ms: facts.origin.map(ms),
        bytes,
        ms: ms(took),
        request_id: &id,
        path: &path,
    };
    if super::access::write(ACCESS, &fields) {
        return;
    }
    tracing::info!(
        target: ACCESS,
        method = %seen.method,
        route = %route,
        status,
        cache = fields.cache,
        render_ms = fields.render_ms,
        origin_ms = fields.origin_ms,
        bytes,
        ms = fields.ms,
        request_id = %id,
        path = %path,
        "request"
    );
}

/// A request target as logged: the path (cut past 256 bytes), and of the query only its
/// pattern, the keys without their values (`/products?page=&sort=`). Cookies, headers and
/// query values never reach the log.
pub struct LoggedTarget<'a>(pub &'a Uri);

impl std::fmt::Display for LoggedTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.0.path();
        f.write_str(cut(path, MAX_LOGGED_PATH))?;
        if path.len() > MAX_LOGGED_PATH {
            f.write_str("…")?;
        }
        let Some(query) = self.0.query() else { return Ok(()) };
        f.write_char('?')?;
        for (n, part) in query.split('&').enumerate() {
            if n > 0 {
                f.write_char('&')?;
            }
            let (key, value) = part.split_once('=').map_or((part, None), |(k, v)| (k, Some(v)));
            f.write_str(cut(key, MAX_LOGGED_KEY))?;
            if value.is_some() {
                f.write_char('=')?;
            }
            if n == 31 {
                return f.write_str("…");
            }
        }
        Ok(())
    }
}

/// At most the first `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_target_keeps_the_query_keys_and_drops_their_values() {
        let logged = |target: &str| LoggedTarget(&target.parse().unwrap()).to_string();
        assert_eq!(logged("/products?page=2&sort=price&token=SECRET123"), "/products?page=&sort=&token=");
        assert_eq!(logged("/search?q=a%20b&debug&q=c"), "/search?q=&debug&q=");
        assert_eq!(logged("/about"), "/about");
        assert_eq!(logged("/x?"), "/x?");
        let long = format!("/{}", "a".repeat(300));
        assert_eq!(logged(&long), format!("/{}…", "a".repeat(255)));
        let many = format!("/m?{}", vec!["k=v"; 40].join("&"));
        assert_eq!(logged(&many).matches("k=").count(), 32);
        assert!(!logged(&many).contains('v'));
    }
}
