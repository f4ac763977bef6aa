//! The integration tests, one binary (every binary that links V8 costs a long link), one
//! module per topic.

mod cache;
mod common;
mod parity;
mod pool;
mod redis_server;
mod render;
mod vectors;
