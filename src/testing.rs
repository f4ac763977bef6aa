//! Helpers for tests and benchmarks that need real components: those of the cache protocol's
//! crate (a `redis-server`, a Redis Cluster, [`spawn_ready`], [`wait_until`]), and the fixture
//! Django origin ([`django_origin`]).

pub use mizan_cache::testing::*;
use std::process::{Child, Command};

/// Starts the fixture Django origin (`fixtures/origin`, with its venv's Python) on
/// `127.0.0.1:port`, with `env` set, and returns once Django says it serves.
pub fn django_origin(port: u16, env: &[(&str, &str)]) -> Child {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("fixtures/origin/.venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup (it installs Django)", python.display());
    let mut command = Command::new(python);
    command.arg("-u").arg(root.join("fixtures/origin/manage.py"));
    command.args(["runserver", &format!("127.0.0.1:{port}"), "--noreload"]);
    command.envs(env.iter().copied());
    spawn_ready(command, "the Django origin", |line| line.starts_with("Quit the server"))
}
