//! What the protocol's tests share: the repository's root, scratch files, waiting.

pub use mizan_cache::testing::{DEADLINE, wait_until};
use std::path::{Path, PathBuf};

/// The repository's root (the workspace's), where `tests/vectors` lives.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A SQLite file under the scratch directory that no other test case is given
/// ([`mizan_cache::testing::unique_db`]).
pub fn scratch_db(prefix: &str) -> PathBuf {
    mizan_cache::testing::unique_db(Path::new(env!("CARGO_TARGET_TMPDIR")), prefix)
}
