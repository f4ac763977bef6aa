//! The cache protocol's integration tests, one binary with no V8: the conformance suite on
//! every store (memory, SQLite, one Redis, a Redis Cluster), the declarative protocol cases
//! (`tests/vectors/cases.json`, which the Python package runs too) on every store, the pinned
//! key vectors, and Redis reached by URL (TLS, Sentinel).

mod cache;
mod cases;
mod common;
mod redis_urls;
mod vectors;
