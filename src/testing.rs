//! Helpers for tests and benchmarks that need real components: a `redis-server` on a free
//! loopback port, started on demand and stopped on drop, the fixture Django origin
//! ([`django_origin`]), and [`spawn_ready`] for any server that says in its log when it is
//! ready. A missing program panics with how to install it: a
//! test that needs Redis fails, it never skips.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Spawns `command` and returns once a line of its stdout satisfies `ready`: no polling, no
/// sleeping. Its output is drained afterwards so it never blocks on a full pipe. Panics if it
/// exits first.
pub fn spawn_ready(mut command: Command, what: &str, ready: impl Fn(&str) -> bool) -> Child {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e} (run scripts/setup, which installs it)"));
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if ready(&line) => break,
            Some(Ok(_)) => {}
            _ => panic!("{what} exited before it was ready"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

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

/// Kills a child process (as a crash would) and reaps it.
pub fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A running redis-server.
pub struct RedisServer {
    child: Option<Child>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server without persistence on a free port.
    pub fn start() -> Self {
        let mut server = Self { child: None, port: free_port(), password: None };
        server.spawn();
        server
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Self {
        let mut server = Self { child: None, port: free_port(), password: Some(password.to_string()) };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:<port>/`, with the password when it has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"]);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        self.child = Some(spawn_ready(command, "redis-server", |line| line.contains("Ready to accept connections")));
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long a test waits for a condition before it fails: far longer than any healthy wait on
/// a loaded 2-core machine, far shorter than a CI job's timeout.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Polls `check` until it holds, yielding to the runtime between polls (no sleep), and panics
/// naming `what` once `deadline` has passed: a regression fails the test instead of hanging
/// it. For a condition that needs no await, return `std::future::ready(condition)`.
pub async fn wait_until<F, Fut>(what: &str, deadline: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        let waited = start.elapsed();
        assert!(waited < deadline, "gave up waiting for {what} after {waited:.1?}");
        tokio::task::yield_now().await;
    }
}
