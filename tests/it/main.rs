//! The integration tests, one binary (every binary that links V8 costs a long link), one
//! module per topic.

mod cache;
mod cli;
mod common;
mod config;
mod e2e;
mod isolation;
mod nodes;
mod parity;
mod pool;
mod redis_urls;
mod render;
mod stream;
mod vectors;
