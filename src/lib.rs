//! # mizan-render
//!
//! A self-hosted Mizan render node: framework SSR bundles (React today; Vue and Svelte next)
//! rendered in a pool of V8 isolates embedded with `deno_core`.
//!
//! # Layout
//! - [`abi`]: the bundle ABI, the input a bundle's `render(input)` gets and what it returns.
//! - [`js`]: the `mizan_runtime` extension (Workers-compatible globals from deno_web, the
//!   bootstrap in `runtime-js/`) and the build-time base snapshot that holds it.
//! - [`pool`]: render threads, each owning an isolate restored from the app snapshot (base
//!   snapshot plus the manifest's bundles), behind a bounded queue.
//! - [`manifest`]: the edge manifest, validated at load, and its route matcher.
//!
//! # Request flow
//! route match (manifest) -> page input (params, query, prefetched data) ->
//! `pool.render(bundle, page, input)` -> `{ status, headers, html }`.

pub mod abi;
pub mod cache;
pub mod js;
pub mod manifest;
pub mod node;
pub mod oneshot;
pub mod origin;
pub mod pool;
pub mod prerender;
pub mod server;
pub mod testing;
