//! The Mizan cache protocol (docs/protocol.md): keys, metadata, purge by tag with
//! generations, the `X-Mizan-Invalidate` header and purge signatures, and the three stores
//! that implement it with identical semantics: memory (default), SQLite and Redis (one
//! server, a Redis Cluster, or a Sentinel service), plus the memory tier in front of Redis.
//!
//! The render node (`mizan-render`, as `mizan_render::cache`) and the origin side share this
//! crate; it does not depend on V8, so its tests build and run without it.

pub mod invalidate;
pub mod key;
pub mod memory;
pub mod meta;
mod open;
pub mod purge;
pub mod redis;
pub mod signature;
pub mod sqlite;
mod store;
#[cfg(any(test, feature = "strategies"))]
pub mod strategies;
pub mod testing;
pub mod tiered;

pub use key::Keys;
pub use meta::{Dependency, Freshness, Kind, Meta, dependency_tags};
pub use open::StoreConfig;
pub use store::{
    Entry, Fence, GENERATION_TTL_MS, Generations, LockOutcome, PurgeMode, PutOutcome, Store, next_generation, now_ms,
};

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// `MIZAN_SECRET` is missing, too short or the example one.
    #[error("{0}")]
    Secret(String),
    /// A request path that cannot be normalised into a key.
    #[error("bad request path: {0}")]
    BadRequestPath(String),
    /// The store cannot be reached (Redis down, say); callers fail open.
    #[error("cache store {store} unavailable: {message}")]
    Unavailable {
        /// The backend name.
        store: &'static str,
        /// What failed.
        message: String,
    },
    /// The store's files or data are damaged beyond one entry.
    #[error("cache store {store} is corrupt: {message}")]
    Corrupt {
        /// The backend name.
        store: &'static str,
        /// What is wrong, with the file where there is one.
        message: String,
    },
    /// A purge request whose signature is missing, forged, replayed or outside the window.
    #[error("signature refused: {0}")]
    Signature(&'static str),
    /// A site id that cannot namespace a shared store's keys: not `[A-Za-z0-9_.-]+`.
    #[error("site id {0:?} cannot namespace the cache: it must be one or more of A-Z a-z 0-9 _ . -")]
    Site(String),
}
