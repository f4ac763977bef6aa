//! Helpers for tests and benchmarks that need real components: those of the cache protocol's
//! crate (a `redis-server`, a Redis Cluster, [`spawn_ready`], [`wait_until`]), and the fixture
//! Django origin ([`django_origin`]).

pub use mizan_cache::testing::*;
use std::process::{Child, Command};

/// Starts the fixture Django origin (`fixtures/origin`, with its venv's Python) on
/// `127.0.0.1:port`, with `env` set, and returns once Django says it serves.
pub fn django_origin(port: u16, env: &[(&str, &str)]) -> Child {
    spawn_ready(origin_command(port, env), "the Django origin", serving)
}

/// [`django_origin`] on a free port, and the port: another if the one chosen was taken
/// between choosing it and Django binding it (tests start servers side by side).
pub fn django_origin_anywhere(env: &[(&str, &str)]) -> (Child, u16) {
    let mut taken = Vec::new();
    while taken.len() < 5 {
        let port = free_port();
        match try_spawn_ready(origin_command(port, env), "the Django origin", serving) {
            Ok(child) => return (child, port),
            Err(stderr) if stderr.contains("already in use") => taken.push(port),
            Err(stderr) => panic!("the Django origin exited before it was ready:\n{stderr}"),
        }
    }
    panic!("the Django origin found ports {taken:?} taken in turn")
}

fn serving(line: &str) -> bool {
    line.starts_with("Quit the server")
}

fn origin_command(port: u16, env: &[(&str, &str)]) -> Command {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("fixtures/origin/.venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup (it installs Django)", python.display());
    let mut command = Command::new(python);
    command.arg("-u").arg(root.join("fixtures/origin/manage.py"));
    command.args(["runserver", &format!("127.0.0.1:{port}"), "--noreload"]);
    command.envs(env.iter().copied());
    command
}
