//! Rendering a page: its dependencies from the data cache or the origin (in parallel,
//! schema-checked, cached when they may be), the render in the pool, the entry the page
//! becomes (lifetimes, headers, entity tag, what may be shared), and its write to the store.
//! Buffered flights run here; streaming ones ([`super::stream`]) use the same parts.

use super::Node;
use super::lock::{Keep, LockGuard};
use super::page::{Flown, MAX_LIFETIME_S, PUT_WAIT, PageError, PageOutcome, Provenance, Sharing, Target, Timing};
use super::quarantine::Outcome;
use crate::abi::{DependencyData, DependencyError, PageInput, RawJson};
use crate::cache::meta::{Dependency, Freshness, Kind, Meta, RenderInfo, dependency_tags};
use crate::cache::{Entry, Generations, PutOutcome};
use crate::manifest::{CachePolicy, CacheTimes};
use crate::origin::{Answer, Directives, OriginError};
use crate::pool::{RenderError, RenderOptions};
use bytes::Bytes;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::SemaphorePermit;

/// A rendered page, or the head of one still rendering, before it becomes an entry.
pub(super) struct Rendering {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The whole body; empty for a head.
    pub body: Bytes,
    /// Time in the isolate; `None` for the head of a streaming render.
    pub elapsed: Option<std::time::Duration>,
}

/// What a render needs, fetched: its input, and the page's lifetimes (`None`: not storable).
pub(super) struct Prepared {
    pub input: PageInput,
    pub lifetimes: Option<(u64, u64, u64)>,
    /// The longest origin fetch among the dependencies (`None`: all came from the cache).
    pub origin: Option<std::time::Duration>,
}

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
    /// `store.put(entry)`, given up after `wait` (counted as a store error): a response never
    /// waits longer than that for the cache.
    async fn put_within(
        &self,
        wait: std::time::Duration,
        entry: Entry,
    ) -> Result<PutOutcome, crate::cache::CacheError> {
        self.write_within(wait, self.store.put(entry)).await
    }

    /// `write` (a put), given up after `wait` as [`Node::put_within`] does.
    async fn write_within(
        &self,
        wait: std::time::Duration,
        write: impl std::future::Future<Output = Result<PutOutcome, crate::cache::CacheError>>,
    ) -> Result<PutOutcome, crate::cache::CacheError> {
        match tokio::time::timeout(wait, write).await {
            Ok(outcome) => outcome,
            Err(_) => Err(crate::cache::CacheError::Unavailable {
                store: self.store.name(),
                message: format!("no answer to a write within {} ms", wait.as_millis()),
            }),
        }
    }

    /// One flight: render `url` and store it under `key` unless a purge moved on meanwhile;
    /// under the page's render lock when the store has them ([`Node::claim_or_answer`]), or
    /// instead the page another node rendered, or the stale page the flight `keep`s.
    pub(super) async fn render_and_store(self: Arc<Self>, target: Arc<Target>, keep: Keep) -> PageOutcome {
        let lock = match self.claim_or_answer(&target, keep).await {
            Ok(lock) => lock,
            Err(answer) => return Ok(answer),
        };
        let generations = self.generations(&target).await;
        let (page, sharing, timing) =
            self.render(&target.key, &target, generations, Vec::new()).await.map_err(Arc::new)?;
        let page = shareable(page);
        if sharing == Sharing::Stored {
            self.store_page(&page, lock).await;
        }
        Ok(Flown { page, sharing, live: None, timing, provenance: Provenance::Rendered })
    }

    /// The generations of the tags `target`'s page reads, read before anything else: a purge
    /// from here on drops its render's write. `None` if the store cannot say (not stored).
    pub(super) async fn generations(&self, target: &Target) -> Option<Generations> {
        let tags = dependency_tags(target.matched.deps.iter().map(|(c, p)| (c.as_str(), p)));
        match self.store.generations(&tags).await {
            Ok(g) => Some(g),
            Err(e) => {
                self.store_failed("generations", &e);
                None
            }
        }
    }

    /// Stores a rendered page, unless a purge moved one of its generations meanwhile; with a
    /// fenced write that releases `lock` when the flight holds the page's render lock (a lock
    /// still held after the write, or after a failed one, is released when dropped).
    pub(super) async fn store_page(&self, page: &Entry, lock: Option<LockGuard>) {
        let written = match &lock {
            Some(guard) => self.write_within(PUT_WAIT, self.store.put_fenced(page.clone(), guard.fence())).await,
            None => self.put_within(PUT_WAIT, page.clone()).await,
        };
        if let (Some(guard), Ok(PutOutcome::Stored | PutOutcome::Superseded)) = (lock, &written) {
            guard.released();
        }
        match written {
            Ok(PutOutcome::Stored) => {}
            Ok(PutOutcome::Dropped { tag }) => {
                self.stats.dropped_writes.fetch_add(1, Ordering::Relaxed);
                self.metrics.dropped_writes.increment(1);
                tracing::info!(key = %page.meta.key, %tag, "render not stored: {tag} was purged while it ran");
            }
            Ok(PutOutcome::Superseded) => {
                self.stats.locks.superseded_writes.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped_writes.fetch_add(1, Ordering::Relaxed);
                self.metrics.dropped_writes.increment(1);
                tracing::info!(key = %page.meta.key, "render not stored: its render lock expired and a later render took it");
            }
            Err(e) => self.store_failed("put", &e),
        }
    }

    /// Fetches the dependencies and renders. Returns the page as an entry under `key`, what
    /// may be done with it (stored: no no-store dependency or answer, the generations were
    /// read, a cacheable status; shared only; or private to this request), and where the time
    /// went.
    pub(super) async fn render(
        &self,
        key: &str,
        target: &Target,
        generations: Option<Generations>,
        credentials: Vec<(String, String)>,
    ) -> Result<(Arc<Entry>, Sharing, Timing), PageError> {
        let route = &self.manifest.routes[target.matched.index];
        let prepared = self.prepare(target, generations.as_ref(), credentials).await?;
        let origin = prepared.origin;
        let _slot = self.render_slot(target).await?;
        let rendered =
            self.pool.render_with(&route.bundle, &route.page, &prepared.input, self.render_options(target)).await;
        self.record(target, rendered.as_ref().err());
        let rendered = rendered?;
        self.metrics.route(&route.path).render.record(rendered.elapsed);
        let timing = Timing { render: Some(rendered.elapsed), origin };
        let rendering = Rendering {
            status: rendered.status,
            headers: rendered.headers,
            body: Bytes::from(rendered.html.into_bytes()),
            elapsed: Some(rendered.elapsed),
        };
        let (page, sharing) = self.page_entry(key, target, rendering, prepared.lifetimes, generations);
        Ok((page, sharing, timing))
    }

    /// Fetches the dependencies of `target`'s page: the render input, and the page's
    /// lifetimes `(ttl, swr, sie)` (`None`: a dependency may not be stored, nor the page).
    pub(super) async fn prepare(
        &self,
        target: &Target,
        generations: Option<&Generations>,
        credentials: Vec<(String, String)>,
    ) -> Result<Prepared, PageError> {
        let matched = &target.matched;
        let route = &self.manifest.routes[matched.index];
        // What reaches the origin beside the params: the visitor's credentials (never-cached
        // pages only) and the declared vary headers, which the page key already holds.
        let mut forwarded = credentials;
        forwarded.extend(target.headers.iter().cloned());
        let fetches =
            matched.deps.iter().map(|(context, params)| self.dependency(context, params, generations, &forwarded));
        let answers = futures_util::future::join_all(fetches).await;
        let mut input = PageInput {
            url: target.url.clone(),
            route: route.path.clone(),
            params: matched.params.clone(),
            query: matched.query.clone(),
            headers: target.headers.iter().map(|(n, v)| (n.clone(), Value::String(v.clone()))).collect(),
            ..PageInput::default()
        };
        if let Some(client) = self.bundles.get(&route.bundle).and_then(|b| b.client_url.clone()) {
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
        let mut origin = None;
        for ((context, params), answer) in matched.deps.iter().zip(answers) {
            let (answer, directives, took) = answer?;
            origin = origin.max(took);
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
        Ok(Prepared { input, lifetimes, origin })
    }

    /// How a render of `target`'s route is bounded and queued.
    pub(super) fn render_options(&self, target: &Target) -> RenderOptions {
        let route = &self.manifest.routes[target.matched.index];
        RenderOptions {
            cpu_budget: route.cpu_ms.map(std::time::Duration::from_millis),
            lane: self.lane(target.matched.index),
        }
    }

    /// A route that failed lately renders on fewer workers than the pool has: its permit,
    /// held for as long as the render runs.
    pub(super) async fn render_slot(&self, target: &Target) -> Result<Option<SemaphorePermit<'_>>, PageError> {
        if !self.quarantine.is_suspect(target.matched.index) {
            return Ok(None);
        }
        match tokio::time::timeout(self.pool.render_timeout(), self.suspect_slots.acquire()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => {
                let lane = self.manifest.routes[target.matched.index].path.clone();
                Err(RenderError::LaneFull { lane, limit: 1 }.into())
            }
        }
    }

    /// Counts how a render of `target`'s route ended toward its quarantine.
    pub(super) fn record(&self, target: &Target, error: Option<&RenderError>) {
        let outcome = match error {
            None => Outcome::Rendered,
            Some(e) if e.is_page_fault() => Outcome::Fault,
            Some(_) => Outcome::Neutral,
        };
        let route = &self.manifest.routes[target.matched.index];
        self.quarantine.record(target.matched.index, &route.path, outcome, self.clock.now());
    }

    /// A rendered page (or the head of one still rendering: no body, no entity tag yet) as an
    /// entry under `key`, and what may be done with it.
    pub(super) fn page_entry(
        &self,
        key: &str,
        target: &Target,
        rendering: Rendering,
        lifetimes: Option<(u64, u64, u64)>,
        generations: Option<Generations>,
    ) -> (Arc<Entry>, Sharing) {
        let matched = &target.matched;
        let route = &self.manifest.routes[matched.index];
        let bundle = self.bundles.get(&route.bundle);
        let (ttl, swr, sie) = lifetimes.unwrap_or((0, 0, 0));
        let sharing = match (lifetimes, &generations) {
            (None, _) => Sharing::Private,
            (Some(_), Some(_)) if storable(rendering.status) => Sharing::Stored,
            (Some(_), _) => Sharing::Shared,
        };
        let meta = Meta {
            v: 1,
            kind: Kind::Page,
            key: key.to_string(),
            status: rendering.status,
            headers: page_headers(rendering.headers, &route.bundle, &route.page),
            created_at: self.clock.now(),
            ttl_s: ttl,
            swr_s: swr,
            sie_s: sie,
            deps: matched
                .deps
                .iter()
                .map(|(context, params)| Dependency { context: context.clone(), params: params.clone() })
                .collect(),
            etag: rendering.elapsed.map(|_| etag(&rendering.body)),
            render: bundle.map(|b| RenderInfo {
                framework: b.framework.clone(),
                bundle: b.hash.clone(),
                ms: rendering.elapsed.unwrap_or_default().as_secs_f64() * 1e3,
            }),
            generation: generations.unwrap_or_default(),
            stale_at: None,
            extra: Map::new(),
        };
        (Arc::new(Entry { body: rendering.body, meta }), sharing)
    }

    /// One dependency: from the data cache when fresh, else from the origin (and into the
    /// data cache when it may be stored); with the time the origin took, if it was asked.
    async fn dependency(
        &self,
        context: &str,
        params: &Map<String, Value>,
        generations: Option<&Generations>,
        forwarded: &[(String, String)],
    ) -> Result<(Answer, Directives, Option<std::time::Duration>), OriginError> {
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
                    // Unless this node checked it against the current schema when it stored it,
                    // checked as an origin answer is: the origin's own cache (mizan_cache) may
                    // have written it, from a function that does not keep to the schema.
                    let trusted = entry.meta.extra.get(CHECKED).and_then(Value::as_str).is_some_and(|carried| {
                        self.origin.checked_mark(context, &entry.body).is_some_and(|mark| mark == carried)
                    });
                    let checked = if trusted {
                        RawJson::from_bytes(&entry.body).map_err(|e| format!("does not parse: {e}"))
                    } else {
                        serde_json::from_slice::<Value>(&entry.body)
                            .map_err(|e| format!("does not parse: {e}"))
                            .and_then(|value| self.origin.validate(context, &value).map_err(|e| e.to_string()))
                            .and_then(|()| RawJson::from_bytes(&entry.body).map_err(|e| format!("does not parse: {e}")))
                    };
                    match checked {
                        Ok(data) => return Ok((Answer::Data(data), Directives::default(), None)),
                        Err(error) => tracing::warn!(%key, %error, "cached data refused; fetching it again"),
                    }
                }
                Ok(_) => {}
                Err(e) => self.store_failed("get", &e),
            }
        }
        let started = std::time::Instant::now();
        let fetched = self.origin.fetch(context, params, forwarded).await;
        let took = started.elapsed();
        self.metrics.origin(context, took, fetched.as_ref().err());
        let fetched = fetched?;
        if let (Some(key), false, Answer::Data(data), CachePolicy::Cached(times), Some(generations)) =
            (key, fetched.directives.no_store, &fetched.answer, policy, generations)
        {
            let (ttl, swr, sie) = answer_lifetimes(times, &fetched.directives);
            let mut meta = Meta::data(key, context, params, self.clock.now(), (ttl, swr, sie), generations);
            let body = Bytes::copy_from_slice(data.get().as_bytes());
            if let Some(mark) = self.origin.checked_mark(context, &body) {
                meta.extra.insert(CHECKED.into(), mark.into());
            }
            if let Err(e) = self.put_within(PUT_WAIT, Entry { body, meta }).await {
                self.store_failed("put", &e);
            }
        }
        Ok((fetched.answer, fetched.directives, Some(took)))
    }
}

/// The metadata field of a data entry this node checked against its context's schema: the
/// mark of that data and schema ([`crate::origin::Origin::checked_mark`]).
const CHECKED: &str = "checked";

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

/// The entity tag of a page body: the first 128 bits of its BLAKE3 hash, quoted. Computed for
/// every page a miss renders: BLAKE3 hashes a 60 KB page about three times as fast as SHA-256
/// did here (which was 4 % of the node's CPU on a Vue miss).
pub(super) fn etag(body: &[u8]) -> String {
    format!("\"{}\"", &blake3::hash(body).to_hex()[..32])
}

/// A page a flight hands to every request coalesced on it, and to the cache: without
/// `Set-Cookie`, which belongs to one visitor and never to a shared page.
pub(super) fn shareable(page: Arc<Entry>) -> Arc<Entry> {
    if !page.meta.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("set-cookie")) {
        return page;
    }
    tracing::warn!(key = %page.meta.key, "a shared page set a cookie; Set-Cookie dropped (cookies belong on cache: false pages)");
    let mut page = (*page).clone();
    page.meta.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("set-cookie"));
    Arc::new(page)
}
