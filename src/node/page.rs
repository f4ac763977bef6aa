//! The page pipeline: route -> page key -> cache lookup -> (coalesced) dependencies from the
//! data cache or the origin -> render -> store -> serve, with the freshness rules of
//! docs/protocol.md (fresh, stale-while-revalidate with one background re-render,
//! stale-if-error) and no-store pages that never touch the cache.

use super::Node;
use super::quarantine::{Admission, Outcome, Probe};
use crate::abi::{DependencyData, DependencyError, PageInput};
use crate::cache::key::{PageKeyParts, canonical_header_value, canonical_vary, normalize_path};
use crate::cache::meta::{Dependency, Freshness, Kind, Meta, RenderInfo, dependency_tags};
use crate::cache::{Entry, Generations, PutOutcome};
use crate::manifest::{CachePolicy, CacheTimes, MAX_URL_LEN, RouteError, RouteMatch};
use crate::origin::{Answer, Directives, OriginError};
use crate::pool::{RenderError, RenderOptions};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
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
    /// The page: body, status, headers and entity tag in its metadata.
    pub page: Arc<Entry>,
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
    key: String,
    /// The normalised path and the canonical declared query: all a render sees of the URL.
    url: String,
    /// The route match.
    matched: RouteMatch,
    /// The route's vary headers, lower case.
    vary: Vec<String>,
    /// The declared vary headers this request carries, canonical values: they reach the
    /// render (`input.headers`) and the origin, as they reach the key.
    headers: Vec<(String, String)>,
    /// A dependency is never cached: neither is the page.
    no_store: bool,
}

impl Target {
    /// The contexts its page reads.
    fn contexts(&self) -> impl Iterator<Item = &str> {
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
    /// The page.
    pub page: Arc<Entry>,
    /// Whether it may be stored or shared.
    pub sharing: Sharing,
}

/// Longest a response waits for the store to take a write: a locked or slow store costs a
/// page this much at most (the write may still land, or fail and be counted).
pub const PUT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Longest lifetime (ttl, swr or sie) a page or data entry gets: one year.
pub const MAX_LIFETIME_S: u64 = 365 * 24 * 3600;

/// Cookie and Authorization, forwarded to the origin for no-store pages only.
const CREDENTIALS: [&str; 2] = ["cookie", "authorization"];

/// The lifetimes `(ttl, swr, sie)` of an answer: the manifest's `times`, shortened (never
/// lengthened) by the origin's `max-age` / `stale-while-revalidate`, bounded to a year.
fn answer_lifetimes(times: CacheTimes, directives: &Directives) -> (u64, u64, u64) {
    let ttl = directives.max_age.map_or(times.ttl, |m| m.min(times.ttl));
    let swr = directives.swr.map_or(times.swr, |m| m.min(times.swr));
    (ttl.min(MAX_LIFETIME_S), swr.min(MAX_LIFETIME_S), times.sie.min(MAX_LIFETIME_S))
}

/// Statuses a rendered page is stored with.
fn storable(status: u16) -> bool {
    matches!(status, 200 | 404)
}

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
        let headers: Vec<(String, String)> = vary
            .iter()
            .filter_map(|name| Some((name.clone(), canonical_header_value(request.header(name)?))))
            .collect();
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
        // The hit path, without I/O when the store allows: no large future is built or moved.
        if !target.no_store
            && !self.purges.blocks(target.contexts())
            && let Some(Some(entry)) = self.store.get_now(&target.key)
        {
            let now = self.clock.now();
            if entry.meta.freshness(now) == Freshness::Fresh {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                let age_s = now.saturating_sub(entry.meta.created_at) / 1000;
                return Ok(Served { page: entry, state: CacheState::Hit, age_s, vary: target.vary.clone() });
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
                Ok(entry) => entry,
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
                    return Ok(Served { page, state: CacheState::Hit, age_s: age(&entry.meta), vary });
                }
                Freshness::StaleWhileRevalidate => {
                    let (node, flight) = (self.clone(), target.clone());
                    // A quarantined route keeps its stale page; a miss will probe it.
                    let healthy = matches!(self.quarantine.admit(target.matched.index, now), Admission::Render);
                    if healthy {
                        self.flights.spawn(key, move || async move {
                            let outcome = node.render_and_store(flight).await;
                            if let Err(error) = &outcome {
                                tracing::warn!(%error, "background re-render failed; the stale page stays");
                            }
                            outcome
                        });
                    }
                    self.stats.stale.fetch_add(1, Ordering::Relaxed);
                    return Ok(Served { page, state: CacheState::Stale, age_s: age(&entry.meta), vary });
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
                    return Ok(Served { page: entry, state: CacheState::Stale, age_s, vary });
                }
                _ => return Err(refused),
            },
        };
        let (node, flight) = (self.clone(), target.clone());
        let (outcome, leader) = self.flights.run(key, move || async move { node.render_and_store(flight).await }).await;
        let outcome = outcome.unwrap_or_else(|| Err(Arc::new(PageError::Internal("the render flight panicked"))));
        match (outcome, cached) {
            (Ok(Flown { page, sharing: Sharing::Private }), _) => {
                // The origin marked an answer private: the page belongs to the request it was
                // rendered for, never to the others that waited on it.
                if leader {
                    self.stats.bypass.fetch_add(1, Ordering::Relaxed);
                    Ok(Served { page, state: CacheState::Bypass, age_s: 0, vary })
                } else {
                    self.private_render(&target, Vec::new()).await
                }
            }
            (Ok(flown), _) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                Ok(Served { page: flown.page, state: CacheState::Miss, age_s: 0, vary })
            }
            (Err(error), Some(entry)) if freshness == Freshness::StaleIfError => {
                tracing::warn!(%key, error = %error, "serving stale: the origin or the render failed");
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                let age_s = age(&entry.meta);
                Ok(Served { page: entry, state: CacheState::Stale, age_s, vary })
            }
            (Err(error), _) => Err(error),
        }
    }

    /// `store.put(entry)`, given up after `wait` (counted as a store error): a response never
    /// waits longer than that for the cache.
    async fn put_within(
        &self,
        wait: std::time::Duration,
        entry: Entry,
    ) -> Result<PutOutcome, crate::cache::CacheError> {
        match tokio::time::timeout(wait, self.store.put(entry)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(crate::cache::CacheError::Unavailable {
                store: self.store.name(),
                message: format!("no answer to a write within {} ms", wait.as_millis()),
            }),
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
        let (page, _) = self.render("", target, None, credentials).await.map_err(Arc::new)?;
        Ok(Served { page, state: CacheState::Bypass, age_s: 0, vary: target.vary.clone() })
    }

    /// One flight: render `url` and store it under `key` unless a purge moved on meanwhile.
    async fn render_and_store(self: Arc<Self>, target: Arc<Target>) -> PageOutcome {
        let key = &target.key;
        let tags = dependency_tags(target.matched.deps.iter().map(|(c, p)| (c.as_str(), p)));
        // Read before anything else: a purge from here on drops this render's write.
        let generations = match self.store.generations(&tags).await {
            Ok(g) => Some(g),
            Err(e) => {
                self.store_failed("generations", &e);
                None
            }
        };
        let (page, sharing) = self.render(key, &target, generations, Vec::new()).await.map_err(Arc::new)?;
        let page = shareable(page);
        if sharing != Sharing::Stored {
            return Ok(Flown { page, sharing });
        }
        match self.put_within(PUT_WAIT, (*page).clone()).await {
            Ok(PutOutcome::Stored) => {}
            Ok(PutOutcome::Dropped { tag }) => {
                self.stats.dropped_writes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%key, %tag, "render not stored: {tag} was purged while it ran");
            }
            Err(e) => self.store_failed("put", &e),
        }
        Ok(Flown { page, sharing })
    }

    /// Fetches the dependencies and renders. Returns the page as an entry under `key`, and
    /// what may be done with it: stored (no no-store dependency or answer, the generations
    /// were read, a cacheable status), shared only, or private to this request.
    async fn render(
        &self,
        key: &str,
        target: &Target,
        generations: Option<Generations>,
        credentials: Vec<(String, String)>,
    ) -> Result<(Arc<Entry>, Sharing), PageError> {
        let matched = &target.matched;
        let route = &self.manifest.routes[matched.index];
        // What reaches the origin beside the params: the visitor's credentials (never-cached
        // pages only) and the declared vary headers, which the page key already holds.
        let mut forwarded = credentials;
        forwarded.extend(target.headers.iter().cloned());
        let fetches = matched
            .deps
            .iter()
            .map(|(context, params)| self.dependency(context, params, generations.as_ref(), &forwarded));
        let answers = futures_util::future::join_all(fetches).await;
        let mut input = PageInput {
            url: target.url.clone(),
            route: route.path.clone(),
            params: matched.params.clone(),
            query: matched.query.clone(),
            headers: target.headers.iter().map(|(n, v)| (n.clone(), Value::String(v.clone()))).collect(),
            ..PageInput::default()
        };
        let bundle = self.bundles.get(&route.bundle);
        if let Some(client) = bundle.and_then(|b| b.client_url.clone()) {
            input.assets.insert("client".into(), Value::String(client));
        }
        // A page's lifetimes are the minimum over its dependencies; one without any keeps the
        // manifest's defaults. Bounded to a year, so no store's expiry arithmetic overflows.
        let mut lifetimes = Some(if matched.deps.is_empty() {
            let d = CacheTimes::default();
            (d.ttl, d.swr, d.sie)
        } else {
            (MAX_LIFETIME_S, MAX_LIFETIME_S, MAX_LIFETIME_S)
        });
        for ((context, params), answer) in matched.deps.iter().zip(answers) {
            let (answer, directives) = answer?;
            lifetimes = match (self.manifest.contexts[context].cache, lifetimes) {
                (CachePolicy::Cached(times), Some((t, s, e))) if !directives.no_store => {
                    let (ttl, swr, sie) = answer_lifetimes(times, &directives);
                    Some((t.min(ttl), s.min(swr), e.min(sie)))
                }
                _ => None,
            };
            match answer {
                Answer::Data(data) => {
                    input.data.push(DependencyData { context: context.clone(), params: params.clone(), data })
                }
                Answer::Error(error) => {
                    input.errors.push(DependencyError { context: context.clone(), params: params.clone(), error })
                }
            }
        }
        let options = RenderOptions {
            cpu_budget: route.cpu_ms.map(std::time::Duration::from_millis),
            lane: self.lane(matched.index),
        };
        // A route that failed lately renders on fewer workers than the pool has.
        let _slot = if self.quarantine.is_suspect(matched.index) {
            let wait = self.pool.render_timeout();
            match tokio::time::timeout(wait, self.suspect_slots.acquire()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => return Err(RenderError::LaneFull { lane: route.path.clone(), limit: 1 }.into()),
            }
        } else {
            None
        };
        let rendered = self.pool.render_with(&route.bundle, &route.page, &input, options).await;
        let outcome = match &rendered {
            Ok(_) => Outcome::Rendered,
            Err(e) if e.is_page_fault() => Outcome::Fault,
            Err(_) => Outcome::Neutral,
        };
        self.quarantine.record(matched.index, &route.path, outcome, self.clock.now());
        let rendered = rendered?;
        let body = bytes::Bytes::from(rendered.html.into_bytes());
        let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
        let (ttl, swr, sie) = lifetimes.unwrap_or((0, 0, 0));
        let sharing = match (lifetimes, &generations) {
            (None, _) => Sharing::Private,
            (Some(_), Some(_)) if storable(rendered.status) => Sharing::Stored,
            (Some(_), _) => Sharing::Shared,
        };
        let meta = Meta {
            v: 1,
            kind: Kind::Page,
            key: key.to_string(),
            status: rendered.status,
            headers: page_headers(rendered.headers, &route.bundle, &route.page),
            created_at: self.clock.now(),
            ttl_s: ttl,
            swr_s: swr,
            sie_s: sie,
            deps: matched
                .deps
                .iter()
                .map(|(context, params)| Dependency { context: context.clone(), params: params.clone() })
                .collect(),
            etag: Some(etag),
            render: bundle.map(|b| RenderInfo {
                framework: b.framework.clone(),
                bundle: b.hash.clone(),
                ms: rendered.elapsed.as_secs_f64() * 1e3,
            }),
            generation: generations.unwrap_or_default(),
            stale_at: None,
            extra: Map::new(),
        };
        Ok((Arc::new(Entry { body, meta }), sharing))
    }

    /// One dependency: from the data cache when fresh, else from the origin (and into the
    /// data cache when it may be stored).
    async fn dependency(
        &self,
        context: &str,
        params: &Map<String, Value>,
        generations: Option<&Generations>,
        forwarded: &[(String, String)],
    ) -> Result<(Answer, Directives), OriginError> {
        let policy = self.manifest.contexts[context].cache;
        // An answer fetched with credentials or vary headers is not the answer the data key
        // names (context and params alone): it is neither read from nor written to the cache.
        let cacheable = matches!(policy, CachePolicy::Cached(_))
            && forwarded.is_empty()
            && !self.purges.blocks(std::iter::once(context));
        // Derived only for contexts that may be cached: never-cached ones have no key.
        let key = cacheable.then(|| self.keys.data_key(context, params));
        if let Some(key) = &key {
            match self.store.get(key).await {
                Ok(Some(entry)) if entry.meta.freshness(self.clock.now()) == Freshness::Fresh => {
                    match serde_json::from_slice::<Value>(&entry.body) {
                        Ok(data) => return Ok((Answer::Data(data), Directives::default())),
                        Err(e) => tracing::warn!(%key, error = %e, "cached data does not parse; fetching again"),
                    }
                }
                Ok(_) => {}
                Err(e) => self.store_failed("get", &e),
            }
        }
        let fetched = self.origin.fetch(context, params, forwarded).await?;
        if let (Some(key), false, Answer::Data(data), CachePolicy::Cached(times), Some(generations)) =
            (key, fetched.directives.no_store, &fetched.answer, policy, generations)
        {
            let (ttl, swr, sie) = answer_lifetimes(times, &fetched.directives);
            let meta = Meta {
                v: 1,
                kind: Kind::Data,
                key,
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                created_at: self.clock.now(),
                ttl_s: ttl,
                swr_s: swr,
                sie_s: sie,
                deps: vec![Dependency { context: context.to_string(), params: params.clone() }],
                etag: None,
                // The generations of this dependency's own tags, read when the render started.
                generation: dependency_tags([(context, params)])
                    .into_iter()
                    .map(|tag| {
                        let g = generations.get(&tag).copied().unwrap_or(0);
                        (tag, g)
                    })
                    .collect(),
                render: None,
                stale_at: None,
                extra: Map::new(),
            };
            let body = bytes::Bytes::from(serde_json::to_vec(data).unwrap_or_default());
            if let Err(e) = self.put_within(PUT_WAIT, Entry { body, meta }).await {
                self.store_failed("put", &e);
            }
        }
        Ok((fetched.answer, fetched.directives))
    }
}

/// Headers the node writes itself, or that describe one connection: a bundle's own are
/// dropped (a `content-length` that disagrees with the body, a `connection: close`, a second
/// `etag`).
const NODE_OWNED_HEADERS: [&str; 6] = ["content-length", "etag", "age", "vary", "x-mizan-cache", "date"];

/// The headers a bundle set that a page may carry: valid names and values, nothing
/// hop-by-hop, nothing the node writes itself.
fn page_headers(headers: Vec<(String, String)>, bundle: &str, page: &str) -> Vec<(String, String)> {
    headers
        .into_iter()
        .filter(|(name, value)| {
            let valid = http::HeaderName::try_from(name.as_str()).is_ok() && http::HeaderValue::try_from(value.as_str()).is_ok();
            let lower = name.to_ascii_lowercase();
            let owned = crate::origin::proxy::is_hop_by_hop(&lower) || NODE_OWNED_HEADERS.contains(&lower.as_str());
            if !valid || owned {
                tracing::warn!(%bundle, %page, header = %name, "a header the page set was dropped (invalid, hop-by-hop or the node's own)");
            }
            valid && !owned
        })
        .collect()
}

/// A page a flight hands to every request coalesced on it, and to the cache: without
/// `Set-Cookie`, which belongs to one visitor and never to a shared page.
fn shareable(page: Arc<Entry>) -> Arc<Entry> {
    if !page.meta.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("set-cookie")) {
        return page;
    }
    tracing::warn!(key = %page.meta.key, "a shared page set a cookie; Set-Cookie dropped (cookies belong on cache: false pages)");
    let mut page = (*page).clone();
    page.meta.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("set-cookie"));
    Arc::new(page)
}
