//! Helpers for tests and benchmarks that need real components: a `redis-server` on a free
//! loopback port, or a three-master Redis Cluster ([`RedisCluster`]), started on demand and
//! stopped on drop, and [`spawn_ready`] for any server that says in its log when it is ready. A missing program panics with how to install
//! it: a test that needs Redis fails, it never skips.

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
/// exits first, with the end of what it wrote to stderr.
pub fn spawn_ready(command: Command, what: &str, ready: impl Fn(&str) -> bool) -> Child {
    try_spawn_ready(command, what, ready)
        .unwrap_or_else(|stderr| panic!("{what} exited before it was ready:\n{stderr}"))
}

/// [`spawn_ready`], or, if it exits before it is ready, the end of its stderr (so a caller can
/// tell a port taken meanwhile from another failure).
pub fn try_spawn_ready(mut command: Command, what: &str, ready: impl Fn(&str) -> bool) -> Result<Child, String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e} (run scripts/setup, which installs it)"));
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    // Its last lines of stderr, kept for an error; read all along so it never blocks.
    let tail = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::<String>::new()));
    let reader = {
        let tail = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == 20 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        })
    };
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if ready(&line) => break,
            Some(Ok(_)) => {}
            _ => {
                let _ = child.wait();
                let _ = reader.join();
                let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                return Err(tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n"));
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
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
    /// Where it keeps an append-only file, if it persists its data across restarts.
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts a server without persistence on a free port.
    pub fn start() -> Self {
        let mut server = Self { child: None, port: free_port(), password: None, dir: None };
        server.spawn();
        server
    }

    /// Starts a server, empty, that keeps its data across [`RedisServer::restart`]: an
    /// append-only file in `dir` (whatever `dir` held is removed first). Each write reaches the
    /// file before its reply is sent, so a killed server loses nothing it acknowledged (the
    /// file is synced to disk once a second: only a crash of the machine could lose more).
    pub fn start_persistent(dir: &std::path::Path) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("the Redis data directory");
        let mut server = Self { child: None, port: free_port(), password: None, dir: Some(dir.to_path_buf()) };
        server.spawn();
        server
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Self {
        let mut server = Self { child: None, port: free_port(), password: Some(password.to_string()), dir: None };
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
        command.args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""]);
        match &self.dir {
            Some(dir) => command.args(["--appendonly", "yes", "--appendfsync", "everysec", "--dir"]).arg(dir),
            None => command.args(["--appendonly", "no"]),
        };
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

/// A running Redis Cluster of three masters (no replicas), each a `redis-server` on a free
/// loopback port, its cluster bus on another, its `nodes.conf` in a directory of its own.
pub struct RedisCluster {
    children: Vec<Child>,
    /// The masters' TCP ports on 127.0.0.1.
    pub ports: Vec<u16>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers without persistence, joins them with
    /// `redis-cli --cluster create` (slots split evenly), and returns once every node reports
    /// `cluster_state:ok`. Panics if redis-server or redis-cli is missing, or the cluster is not
    /// up within [`DEADLINE`].
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("mizan-redis-cluster-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut cluster = Self { children: Vec::new(), ports: Vec::new(), dir };
        for _ in 0..3 {
            let (port, bus) = (free_port(), free_port());
            let config = cluster.dir.join(format!("nodes-{port}.conf"));
            let mut command = Command::new("redis-server");
            command.args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--cluster-enabled", "yes"]);
            command.args(["--cluster-port", &bus.to_string()]);
            command.arg("--cluster-config-file").arg(&config).arg("--dir").arg(&cluster.dir);
            command.args(["--save", "", "--appendonly", "no"]);
            let child = spawn_ready(command, "redis-server", |line| line.contains("Ready to accept connections"));
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot start redis-cli: {e} (run scripts/setup, which installs it)"));
        let said = String::from_utf8_lossy(&created.stdout);
        assert!(
            created.status.success() && said.contains("All 16384 slots covered"),
            "redis-cli --cluster create: {said}"
        );
        let start = std::time::Instant::now();
        for port in &cluster.ports {
            let url = format!("redis://127.0.0.1:{port}/");
            let mut conn = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(DEADLINE))
                .unwrap_or_else(|e| panic!("cannot connect to the cluster node {url}: {e}"));
            loop {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                let waited = start.elapsed();
                assert!(waited < DEADLINE, "the cluster node {url} is not ok after {waited:.1?}: {info}");
                std::thread::yield_now();
            }
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// `redis://127.0.0.1:<port>/` of each master, for plain connections to one node.
    pub fn node_urls(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.drain(..) {
            kill(&mut Some(child));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
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

/// A SQLite file under `dir` that no other test case is given, whether it runs in this
/// process (`cargo test`: cases are threads) or another (nextest: a process per case):
/// `<prefix>-<pid>-<n>.db`, `n` from a process-wide counter. What an earlier run left under
/// that name (same pid), `-wal` and `-shm` included, is removed first.
pub fn unique_db(dir: &std::path::Path, prefix: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{prefix}-{}-{n}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}
