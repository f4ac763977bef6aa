//! # mizan-render
//!
//! A self-hosted Mizan render node: framework SSR bundles (React today; Vue and Svelte next)
//! rendered in a pool of V8 isolates embedded with `deno_core`, served by axum, cached under
//! the Mizan cache protocol (docs/protocol.md).
//!
//! # Layout
//! - [`server`]: the HTTP face (pages, reverse proxy, purge, health); the only layer that
//!   turns errors into responses.
//! - [`node`]: the page pipeline: route, page key, cache lookup and freshness, coalesced
//!   flights, dependencies, render, store.
//! - [`origin`]: typed context data from the Django origin, schema-checked; proxy headers.
//! - [`cache`]: keys, metadata and freshness, purge by tag with generations,
//!   `X-Mizan-Invalidate`, signatures, and the memory, SQLite and Redis stores (the
//!   `mizan-cache` crate, which does not depend on V8).
//! - [`pool`]: render threads, each owning an isolate restored from the start-up snapshot,
//!   behind a bounded queue, with per-render deadlines.
//! - [`js`]: the `mizan_runtime` extension (Workers-compatible globals from deno_web, the
//!   bootstrap in `runtime-js/`), its sources embedded in the binary.
//! - [`abi`]: the bundle ABI: what `render(input)` gets and returns.
//! - [`manifest`]: the edge manifest, validated at load, and its route matcher.
//! - [`metrics`]: Prometheus metrics shared by every node generation, the request id and
//!   the facts of the access log.
//! - [`oneshot`], [`prerender`]: the `render` and `prerender` commands.
//! - [`testing`]: real components for tests and benchmarks (a redis-server, a Redis Cluster,
//!   the Django origin).
//!
//! # Request flow
//! route match (manifest) -> page key -> cache lookup -> (miss) coalesced flight:
//! generations -> dependencies (data cache, else origin) -> `pool.render(bundle, page, input)`
//! -> store (unless a purge moved on) -> respond.

pub mod abi;
/// The cache protocol, from its own crate (`crates/mizan-cache`), under its old path.
pub use mizan_cache as cache;
pub mod config;
pub mod js;
pub mod manifest;
pub mod metrics;
pub mod node;
pub mod oneshot;
pub mod origin;
pub mod parity;
pub mod pool;
pub mod prerender;
pub mod server;
pub mod testing;
