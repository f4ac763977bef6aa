//! The page pipeline: route -> page key -> cache lookup -> (coalesced) dependencies from the
//! data cache or the origin -> render -> store -> serve, with the freshness rules of
//! docs/protocol.md (fresh, stale-while-revalidate with one background re-render,
//! stale-if-error) and no-store pages that never touch the cache.
//!
//! A miss of a route that asks to stream (`"stream": true`, on a bundle with `renderStream`)
//! takes a streaming flight: its callers are answered as soon as the page's head is known and
//! read its body ([`LiveBody`]) as the render produces it; the whole page is stored when the
//! body is complete, never when the render failed. Every other render is buffered.
//!
//! Several nodes on one store: a flight's leader first takes the page's render lock
//! ([`super::lock`]); a flight that finds it held serves the page the holder stores, as a hit.

use super::Node;
use super::lock::Keep;
use super::quarantine::{Admission, Probe};
use super::stream::LiveBody;
use crate::cache::Entry;
use crate::cache::key::{PageKeyParts, canonical_vary, normalize_path, vary_headers};
use crate::cache::meta::{Freshness, Meta};
use crate::manifest::{CachePolicy, MAX_URL_LEN, RouteError, RouteMatch};
use crate::metrics::request as per_request;
use crate::origin::OriginError;
use crate::pool::RenderError;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Why a page could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No route, or a hostile URL.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The origin could not give valid data.
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// The render failed or the pool is overloaded.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A bug: the work of a flight panicked (logged where it happened).
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The route's renders keep failing: it is quarantined for a while.
    #[error("route {route} is quarantined: its renders keep failing (retry in {retry_after_s} s)")]
    Quarantined {
        /// The route pattern.
        route: String,
        /// Seconds until a probe render may try it again.
        retry_after_s: u64,
    },
}

/// The shared outcome of one render flight: the page as an entry (stored or not), so that
/// hits and renders are served by the same code without copying.
pub type PageOutcome = Result<Flown, Arc<PageError>>;

/// How a page was served: the `X-Mizan-Cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// Fresh from the cache.
    Hit,
    /// Rendered for this request (or a request it was coalesced with).
    Miss,
    /// From the cache, stale: revalidating, or the origin or render failed.
    Stale,
    /// Never cached (a no-store dependency).
    Bypass,
}

impl CacheState {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Hit => "HIT",
            CacheState::Miss => "MISS",
            CacheState::Stale => "STALE",
            CacheState::Bypass => "BYPASS",
        }
    }
}

/// A page ready to send.
#[derive(Debug, Clone)]
pub struct Served {
    /// The page: body, status, headers and entity tag in its metadata. While `live` is set,
    /// the body is there instead, and the page has no entity tag yet.
    pub page: Arc<Entry>,
    /// The body of a page still rendering (a streaming miss): read it from here.
    pub live: Option<Arc<LiveBody>>,
    /// How it was served.
    pub state: CacheState,
    /// Seconds since it was rendered.
    pub age_s: u64,
    /// The request headers the route varies on.
    pub vary: Vec<String>,
}

/// The request as the pipeline needs it (GET; HEAD is served from the GET entry).
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a> {
    /// The path as sent.
    pub path: &'a str,
    /// The query as sent (without `?`).
    pub query: &'a str,
    /// Request headers.
    pub headers: &'a http::HeaderMap,
    /// Whether the response may stream a miss of a route that asks to (`false` for HEAD and
    /// prerendering: those wait for the whole page).
    pub stream: bool,
}

impl PageRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Where a request goes, memoised per raw request target.
#[derive(Debug)]
pub struct Target {
    /// The page key (empty for no-store pages, which have none).
    pub(super) key: String,
    /// The normalised path and the canonical declared query: all a render sees of the URL.
    pub(super) url: String,
    /// The route match.
    pub(super) matched: RouteMatch,
    /// The route's vary headers, lower case.
    vary: Vec<String>,
    /// The declared vary headers this request carries, canonical values: they reach the
    /// render (`input.headers`) and the origin, as they reach the key.
    pub(super) headers: Vec<(String, String)>,
    /// A dependency is never cached: neither is the page.
    no_store: bool,
}

impl Target {
    /// The contexts its page reads.
    pub(super) fn contexts(&self) -> impl Iterator<Item = &str> {
        self.matched.deps.iter().map(|(c, _)| c.as_str())
    }

    /// Bytes it holds, for the memo's bound.
    pub(crate) fn weight(&self) -> usize {
        let json = |m: &Map<String, Value>| m.iter().map(|(k, v)| k.len() + v.to_string().len() + 32).sum::<usize>();
        self.key.len()
            + self.url.len()
            + self.matched.canonical_query.len()
            + json(&self.matched.params)
            + json(&self.matched.query)
            + self.matched.deps.iter().map(|(c, p)| c.len() + json(p) + 32).sum::<usize>()
    }
}

/// What may be done with a rendered page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Stored and served to everyone.
    Stored,
    /// Served to everyone waiting on it, not stored (the generations could not be read, or
    /// the status is not cacheable).
    Shared,
    /// Served only to the request it was rendered for, with `no-store`: a dependency is never
    /// cached, or the origin marked an answer `private` / `no-store`.
    Private,
}

/// A flight's page and what may be done with it.
#[derive(Debug, Clone)]
pub struct Flown {
    /// The page (of a streaming flight: its head, the body being in `live`).
    pub page: Arc<Entry>,
    /// Whether it may be stored or shared.
    pub sharing: Sharing,
    /// The body of a page still rendering, for every caller of the flight.
    pub live: Option<Arc<LiveBody>>,
    /// Where its time went.
    pub timing: Timing,
    /// Who made the page.
    pub provenance: Provenance,
}

/// Who made a flight's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// This node rendered it.
    Rendered,
    /// Another node, which held the page's render lock: the flight found the page in the
    /// store (it waited for it, or that node had just stored it) and serves it as a hit.
    Awaited,
    /// Nobody: the stale page the flight started from, kept because another node runs its
    /// revalidation, or because another node's render ended without a page and the page was
    /// within its stale-if-error time.
    Kept,
}

impl Flown {
    /// A page this flight took from the store ([`Provenance::Awaited`] or [`Provenance::Kept`]).
    pub(super) fn from_store(page: Arc<Entry>, provenance: Provenance) -> Self {
        Flown { page, sharing: Sharing::Stored, live: None, timing: Timing::default(), provenance }
    }
}

/// Where a rendered page's time went, for the log line of each request it answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// In the isolate (`None` for a page still streaming).
    pub render: Option<std::time::Duration>,
    /// The longest of its origin fetches (`None` when every dependency came from the cache).
    pub origin: Option<std::time::Duration>,
}

/// Longest a response waits for the store to take a write: a locked or slow store costs a
/// page this much at most (the write may still land, or fail and be counted).
pub const PUT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Longest lifetime (ttl, swr or sie) a page or data entry gets: one year.
pub const MAX_LIFETIME_S: u64 = 365 * 24 * 3600;

/// Cookie and Authorization, forwarded to the origin for no-store pages only.
const CREDENTIALS: [&str; 2] = ["cookie", "authorization"];

impl Node {
    /// Where a request goes: its route match, page key and vary headers. Memoised by the raw
    /// target for routes that vary on no header, so a repeated URL skips routing and key
    /// derivation (the hit path). An over-long target is refused before anything else.
    fn target(&self, request: &PageRequest<'_>) -> Result<Arc<Target>, Arc<PageError>> {
        let query_len = if request.query.is_empty() { 0 } else { request.query.len() + 1 };
        if request.path.len() + query_len > MAX_URL_LEN {
            return Err(Arc::new(RouteError::BadUrl("longer than 4096 bytes").into()));
        }
        let joined;
        let raw: &str = if request.query.is_empty() {
            request.path
        } else {
            joined = format!("{}?{}", request.path, request.query);
            &joined
        };
        if let Some(target) = self.targets.get(raw) {
            return Ok(target);
        }
        let bad = || Arc::new(PageError::from(RouteError::BadUrl("malformed path")));
        let path = normalize_path(request.path).map_err(|_| bad())?;
        let url = if request.query.is_empty() { path.clone() } else { format!("{path}?{}", request.query) };
        let matched = self.router.route(&self.manifest, &url).map_err(|e| Arc::new(e.into()))?;
        let route = &self.manifest.routes[matched.index];
        let no_store =
            route.data.iter().any(|d| matches!(self.manifest.contexts[&d.context].cache, CachePolicy::Never(_)));
        let vary: Vec<String> = route.vary.iter().map(|v| v.to_ascii_lowercase()).collect();
        let headers = vary_headers(&vary, |name| request.header(name));
        let key = if no_store {
            String::new()
        } else {
            // The router already canonicalised the declared query.
            let parts = PageKeyParts {
                site: self.manifest.site.clone(),
                method: "GET".into(),
                path: path.clone(),
                query: matched.canonical_query.clone(),
                vary: canonical_vary(&route.vary, |n| request.header(n)),
            };
            self.keys.page_key(&parts)
        };
        // The render sees only what the key holds: the path and the canonical declared query.
        let url = matched.url(&path);
        let target = Arc::new(Target { key, url, matched, vary, headers, no_store });
        if target.vary.is_empty() {
            self.targets.insert(raw, target.clone());
        }
        Ok(target)
    }

    /// Serves a page request.
    pub async fn page(self: &Arc<Self>, request: &PageRequest<'_>) -> Result<Served, Arc<PageError>> {
        let target = self.target(request)?;
        if let Some(route) = self.lane(target.matched.index) {
            per_request::note_route(per_request::Label::Route(route));
        }
        // The hit path, without I/O when the store allows: no large future is built or moved.
        if !target.no_store
            && !self.purges.blocks(target.contexts())
            && let Some(Some(entry)) = self.store.get_now(&target.key)
            && self.same_bundle(target.matched.index, &entry.meta)
        {
            let now = self.clock.now();
            if entry.meta.freshness(now) == Freshness::Fresh {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                let age_s = now.saturating_sub(entry.meta.created_at) / 1000;
                return Ok(Served {
                    page: entry,
                    live: None,
                    state: CacheState::Hit,
                    age_s,
                    vary: target.vary.clone(),
                });
            }
        }
        Box::pin(self.page_slow(target, request)).await
    }

    async fn page_slow(
        self: &Arc<Self>,
        target: Arc<Target>,
        request: &PageRequest<'_>,
    ) -> Result<Served, Arc<PageError>> {
        let vary = target.vary.clone();

        if target.no_store {
            let _probe = self.admit(&target)?;
            let credentials: Vec<(String, String)> = CREDENTIALS
                .iter()
                .filter_map(|name| request.header(name).map(|v| (name.to_string(), v.to_string())))
                .collect();
            return self.private_render(&target, credentials).await;
        }

        let key = &target.key;
        // A purge of one of its contexts has not landed: the cached page may be the old one.
        let cached = if self.purges.blocks(target.contexts()) {
            None
        } else {
            match self.store.get(key).await {
                // A page of another version of the bundle (before a reload) is a miss.
                Ok(entry) => entry.filter(|e| self.same_bundle(target.matched.index, &e.meta)),
                Err(e) => {
                    self.store_failed("get", &e);
                    None
                }
            }
        };
        let now = self.clock.now();
        let age = |meta: &Meta| now.saturating_sub(meta.created_at) / 1000;
        let freshness = cached.as_ref().map(|e| e.meta.freshness(now)).unwrap_or(Freshness::Expired);
        if let Some(entry) = &cached {
            let page = entry.clone();
            match freshness {
                Freshness::Fresh => {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Served { page, live: None, state: CacheState::Hit, age_s: age(&entry.meta), vary });
                }
                Freshness::StaleWhileRevalidate => {
                    let (node, flight) = (self.clone(), target.clone());
                    // A quarantined route keeps its stale page; a miss will probe it.
                    let healthy = matches!(self.quarantine.admit(target.matched.index, now), Admission::Render);
                    if healthy {
                        let stale = Keep::Revalidating(page.clone());
                        self.flights.spawn(key, move || {
                            per_request::propagate(async move {
                                let outcome = node.render_and_store(flight, stale).await;
                                if let Err(error) = &outcome {
                                    tracing::warn!(%error, "background re-render failed; the stale page stays");
                                }
                                outcome
                            })
                        });
                    }
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    return Ok(Served { page, live: None, state: CacheState::Stale, age_s: age(&entry.meta), vary });
                }
                Freshness::StaleIfError | Freshness::Expired => {}
            }
        }

        let _probe = match self.admit(&target) {
            Ok(probe) => probe,
            // Quarantined: the stale page within stale-if-error, else the refusal, at once.
            Err(refused) => match cached {
                Some(entry) if freshness == Freshness::StaleIfError => {
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    let age_s = age(&entry.meta);
                    return Ok(Served { page: entry, live: None, state: CacheState::Stale, age_s, vary });
                }
                _ => return Err(refused),
            },
        };
        let (node, flight) = (self.clone(), target.clone());
        let route = &self.manifest.routes[target.matched.index];
        // A page within stale-if-error is served if another node's render ends without a page.
        let keep = match &cached {
            Some(entry) if freshness == Freshness::StaleIfError => Keep::OnError(entry.clone()),
            _ => Keep::Nothing,
        };
        // The flight runs as a task of its own, under the id of the request that starts it.
        let (outcome, leader) = if request.stream && route.stream && self.pool.streams(&route.bundle) {
            let work =
                move |pilot| per_request::propagate(async move { node.stream_and_store(flight, pilot, keep).await });
            self.flights.run_piloted(key, work).await
        } else {
            let work = move || per_request::propagate(async move { node.render_and_store(flight, keep).await });
            self.flights.run(key, work).await
        };
        if !leader {
            self.metrics.route(&route.path).coalesced.increment(1);
        }
        let outcome = outcome.unwrap_or_else(|| Err(Arc::new(PageError::Internal("the render flight panicked"))));
        match (outcome, cached) {
            (Ok(Flown { page, provenance: Provenance::Awaited, .. }), _) => {
                // Another node held the render lock and stored the page: a hit from the store.
                tracing::debug!(%key, "served the page another node rendered (waited for its render lock)");
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                let age_s = age(&page.meta);
                Ok(Served { page, live: None, state: CacheState::Hit, age_s, vary })
            }
            (Ok(Flown { page, provenance: Provenance::Kept, .. }), _) => {
                // Another node runs the page's revalidation, or its render ended without a
                // page: the stale page the flight kept.
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                let age_s = age(&page.meta);
                Ok(Served { page, live: None, state: CacheState::Stale, age_s, vary })
            }
            (Ok(Flown { page, sharing: Sharing::Private, live, timing, .. }), _) => {
                // The origin marked an answer private: the page belongs to the request it was
                // rendered for, never to the others that waited on it.
                if leader {
                    per_request::note_work(timing.render, timing.origin);
                    self.stats.bypass.fetch_add(1, Ordering::Relaxed);
                    Ok(Served { page, live, state: CacheState::Bypass, age_s: 0, vary })
                } else {
                    self.private_render(&target, Vec::new()).await
                }
            }
            (Ok(flown), _) => {
                per_request::note_work(flown.timing.render, flown.timing.origin);
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                Ok(Served { page: flown.page, live: flown.live, state: CacheState::Miss, age_s: 0, vary })
            }
            (Err(error), Some(entry)) if freshness == Freshness::StaleIfError => {
                tracing::warn!(%key, error = %error, "serving stale: the origin or the render failed");
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                let age_s = age(&entry.meta);
                Ok(Served { page: entry, live: None, state: CacheState::Stale, age_s, vary })
            }
            (Err(error), _) => Err(error),
        }
    }

    /// Whether the route of `target` may render now: `Some` probe slot when it is the one
    /// probe of a quarantined route, the refusal when it is quarantined.
    fn admit(&self, target: &Target) -> Result<Option<Probe<'_>>, Arc<PageError>> {
        match self.quarantine.admit(target.matched.index, self.clock.now()) {
            Admission::Render => Ok(None),
            Admission::Probe(probe) => Ok(Some(probe)),
            Admission::Refuse(retry_after_s) => {
                self.stats.quarantined.fetch_add(1, Ordering::Relaxed);
                let route = self.manifest.routes[target.matched.index].path.clone();
                Err(Arc::new(PageError::Quarantined { route, retry_after_s }))
            }
        }
    }

    /// A render for one request alone, never stored nor shared (`BYPASS`, `no-store`).
    async fn private_render(
        &self,
        target: &Target,
        credentials: Vec<(String, String)>,
    ) -> Result<Served, Arc<PageError>> {
        self.stats.bypass.fetch_add(1, Ordering::Relaxed);
        let (page, _, timing) = self.render("", target, None, credentials).await.map_err(Arc::new)?;
        per_request::note_work(timing.render, timing.origin);
        Ok(Served { page, live: None, state: CacheState::Bypass, age_s: 0, vary: target.vary.clone() })
    }
}
