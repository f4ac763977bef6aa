//! The integration tests, one binary (every binary that links V8 costs a long link), one
//! module per topic. The cache protocol's own (conformance on every store, the pinned
//! vectors, Redis URLs) are in crates/mizan-cache/tests/protocol, which links no V8.

mod cli;
mod common;
mod config;
mod e2e;
mod isolation;
mod nodes;
mod parity;
mod pool;
mod render;
mod stream;
