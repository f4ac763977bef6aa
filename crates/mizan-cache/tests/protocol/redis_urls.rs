//! The Redis store by URL against real servers: TLS with a password and a private CA
//! (`rediss://…?ca=`), and a Sentinel service followed through a failover
//! (`redis+sentinel://`). The servers are started here: `redis-server` (in TLS and sentinel
//! mode too) and the `openssl` CLI for a CA and a server certificate made for the test. A
//! missing program fails the test, saying what to install; nothing is skipped.

use crate::common::{DEADLINE, wait_until};
use futures_util::StreamExt;
use mizan_cache::redis::RedisStore;
use mizan_cache::testing::{free_port, spawn_ready};
use mizan_cache::{CacheError, Dependency, Entry, Meta, PurgeMode, PutOutcome, Store, now_ms};
use serde_json::{Map, json};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The bound on every store call (the store's `conn::TIMEOUT`).
const TIMEOUT: Duration = Duration::from_secs(2);

/// The data nodes' password.
const PASSWORD: &str = "s3cret-data-pw";

/// The sentinel's own password.
const SENTINEL_PASSWORD: &str = "s3cret-sentinel-pw";

/// A folder for one test's files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process, killed on drop.
struct Process(Option<Child>);

impl Process {
    fn kill(&mut self) {
        mizan_cache::testing::kill(&mut self.0);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `openssl` in `dir` with `args` (split on spaces); fails the test with its error output.
fn openssl(dir: &Path, args: &str) {
    let output = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e} (install the openssl package)"));
    assert!(output.status.success(), "openssl {args} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// `openssl req` with a new P-256 key, unencrypted.
const NEW_KEY: &str = "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/// A CA (`<name>.pem`, `<name>.key`) made now in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &format!(
            "{NEW_KEY} -x509 -keyout {name}.key -out {name}.pem -days 2 -subj /CN=mizan-test-{name} \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    );
    dir.join(format!("{name}.pem"))
}

/// A server certificate for 127.0.0.1 and localhost (`server.pem`, `server.key`) signed by
/// the CA `ca` made by [`make_ca`].
fn make_server_certificate(dir: &Path, ca: &str) {
    openssl(dir, &format!("{NEW_KEY} -keyout server.key -out server.csr -subj /CN=localhost"));
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &format!(
            "x509 -req -in server.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -out server.pem -days 2 \
             -extfile server.ext"
        ),
    );
}

/// A redis-server speaking only TLS, with [`PASSWORD`], its certificate signed by `dir`'s
/// `ca.pem`; returns it and its TLS port.
fn tls_server(dir: &Scratch) -> (Process, u16) {
    let port = free_port();
    let mut command = Command::new("redis-server");
    command.args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &port.to_string()]);
    command.arg("--tls-cert-file").arg(dir.path("server.pem"));
    command.arg("--tls-key-file").arg(dir.path("server.key"));
    command.arg("--tls-ca-cert-file").arg(dir.path("ca.pem"));
    command.args(["--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no"]);
    let child = spawn_ready(command, "redis-server with TLS", |line| line.contains("Ready to accept connections"));
    (Process(Some(child)), port)
}

/// A plain redis-server on `port` with [`PASSWORD`] (also to its master), its files (a
/// replica's copy of the master's data) in `dir`, replicating `replica_of` if given; returns
/// once it listens.
fn data_node(dir: &Scratch, port: u16, replica_of: Option<u16>) -> Process {
    let mut command = Command::new("redis-server");
    command.args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"]);
    command.arg("--dir").arg(&dir.0).args(["--dbfilename", &format!("{port}.rdb")]);
    command.args(["--requirepass", PASSWORD, "--masterauth", PASSWORD, "--repl-diskless-sync-delay", "0"]);
    if let Some(master) = replica_of {
        command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
    }
    Process(Some(spawn_ready(command, "redis-server", |line| line.contains("Ready to accept connections"))))
}

/// One sentinel on `port` watching the master on `master` as `mymaster` (quorum 1, down
/// after 500 ms), with [`SENTINEL_PASSWORD`]; returns once it has found the master's
/// replica on `replica`. Its config file sits in `dir` (a sentinel rewrites it).
fn sentinel(dir: &Scratch, port: u16, master: u16, replica: u16) -> Process {
    let conf = dir.path("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor mymaster 127.0.0.1 {master} 1\n\
             sentinel auth-pass mymaster {PASSWORD}\n\
             sentinel down-after-milliseconds mymaster 500\n\
             sentinel failover-timeout mymaster 5000\n\
             requirepass {SENTINEL_PASSWORD}\n",
            dir = dir.0.display()
        ),
    )
    .unwrap();
    let mut command = Command::new("redis-server");
    command.arg(&conf).arg("--sentinel");
    let found = format!("+slave slave 127.0.0.1:{replica} 127.0.0.1 {replica} @ mymaster");
    Process(Some(spawn_ready(command, "redis-server --sentinel", move |line| line.contains(&found))))
}

/// A page entry under `key` depending on `product {"id": id}`, fresh for a minute.
fn entry(key: &str, id: u64, body: &str) -> Entry {
    let deps = vec![Dependency { context: "product".into(), params: json!({"id": id}).as_object().unwrap().clone() }];
    let mut meta: Meta = serde_json::from_value(json!({
        "v": 1, "kind": "page", "key": key, "status": 200, "headers": [["content-type", "text/html"]],
        "created_at": now_ms(), "ttl_s": 60, "swr_s": 30, "sie_s": 100,
        "deps": deps, "etag": "\"e1\"", "generation": {}
    }))
    .unwrap();
    meta.generation = meta.tags().into_iter().map(|t| (t, 0)).collect();
    Entry { body: bytes::Bytes::copy_from_slice(body.as_bytes()), meta }
}

/// Put, get, purge and put again through the store, as the node does; the entry stays.
async fn store_round_trip(store: &dyn Store, key: &str, id: u64) {
    let e = entry(key, id, "<p>hello</p>");
    assert_eq!(store.put(e.clone()).await.unwrap(), PutOutcome::Stored);
    assert_eq!(*store.get(key).await.unwrap().expect("the entry just stored"), e);
    let params: Map<_, _> = json!({"id": id}).as_object().unwrap().clone();
    assert_eq!(store.purge("product", &params, PurgeMode::Hard).await.unwrap(), 1);
    assert!(store.get(key).await.unwrap().is_none(), "the purge removed the entry");
    // Stored again by a render that read the generations the purge moved.
    let mut e = e;
    e.meta.generation = store.generations(&e.meta.tags()).await.unwrap();
    assert_eq!(store.put(e).await.unwrap(), PutOutcome::Stored);
}

/// The message of a connect that must fail.
async fn refused(url: &str) -> String {
    match RedisStore::connect(url, "shop").await {
        Ok(_) => panic!("{url} connected"),
        Err(e @ CacheError::Unavailable { .. }) => e.to_string(),
        Err(e) => panic!("{url}: not Unavailable: {e}"),
    }
}

#[tokio::test]
async fn rediss_with_a_password_and_a_private_ca_stores_gets_and_purges() {
    let dir = Scratch::new("redis-tls");
    make_ca(&dir.0, "ca");
    make_server_certificate(&dir.0, "ca");
    let (_server, port) = tls_server(&dir);
    let ca = dir.path("ca.pem");
    let url = format!("rediss://:{PASSWORD}@127.0.0.1:{port}/?ca={}", ca.display());
    let store = RedisStore::connect(&url, "shop").await.unwrap();
    store_round_trip(&store, "mz1:p:tls", 1).await;
    // The database number and the user (`default`, as with requirepass) go with it.
    let url = format!("rediss://default:{PASSWORD}@127.0.0.1:{port}/3?ca={}", ca.display());
    let other_db = RedisStore::connect(&url, "shop").await.unwrap();
    assert!(other_db.get("mz1:p:tls").await.unwrap().is_none(), "database 3 is not database 0");
    store_round_trip(&other_db, "mz1:p:tls3", 3).await;
}

#[tokio::test]
async fn rediss_refuses_a_wrong_password_an_untrusted_certificate_and_a_bad_ca_file_naming_no_secret() {
    let dir = Scratch::new("redis-tls-refusals");
    make_ca(&dir.0, "ca");
    make_server_certificate(&dir.0, "ca");
    let other_ca = make_ca(&dir.0, "other");
    let (_server, port) = tls_server(&dir);
    let ca = dir.path("ca.pem");

    let e = refused(&format!("rediss://:wrong-{PASSWORD}@127.0.0.1:{port}/?ca={}", ca.display())).await;
    assert!(e.contains("authentication failed"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
    assert!(e.contains("rediss://***@127.0.0.1"), "the error names the server: {e}");

    // Without the CA, the built-in public roots do not know the server's issuer.
    let e = refused(&format!("rediss://:{PASSWORD}@127.0.0.1:{port}/")).await;
    assert!(e.contains("invalid peer certificate: UnknownIssuer"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
    // Nor does another CA.
    let e = refused(&format!("rediss://:{PASSWORD}@127.0.0.1:{port}/?ca={}", other_ca.display())).await;
    assert!(e.contains("invalid peer certificate: UnknownIssuer"), "{e}");

    let missing = dir.path("missing.pem");
    let e = refused(&format!("rediss://:{PASSWORD}@127.0.0.1:{port}/?ca={}", missing.display())).await;
    assert!(e.contains(&missing.display().to_string()), "the error names the CA file: {e}");
    assert!(!e.contains(PASSWORD), "{e}");
    let e = refused(&format!("rediss://:{PASSWORD}@127.0.0.1:{port}/?ca={}", dir.path("server.key").display())).await;
    assert!(e.contains("server.key") && e.contains("no PEM certificate"), "{e}");

    // Plain TCP to the TLS port is no Redis conversation either.
    let e = refused(&format!("redis://:{PASSWORD}@127.0.0.1:{port}/")).await;
    assert!(!e.contains(PASSWORD), "{e}");

    // `#insecure` checks no certificate (local testing only): it connects.
    let store = RedisStore::connect(&format!("rediss://:{PASSWORD}@127.0.0.1:{port}/#insecure"), "shop").await.unwrap();
    store_round_trip(&store, "mz1:p:insecure", 7).await;
}

/// A direct connection to one data node.
async fn direct(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://:{PASSWORD}@127.0.0.1:{port}/")).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// A number of `INFO replication` (`master_repl_offset`, `slave_repl_offset`); 0 if absent.
async fn replication_offset(conn: &mut redis::aio::MultiplexedConnection, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("replication").query_async(conn).await.unwrap_or_default();
    let value = info.lines().find_map(|line| line.strip_prefix(field)?.strip_prefix(':'));
    value.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn a_sentinel_store_follows_a_failover_to_the_promoted_replica() {
    let dir = Scratch::new("redis-sentinel");
    let (master_port, replica_port, sentinel_port) = (free_port(), free_port(), free_port());
    let mut master = data_node(&dir, master_port, None);
    let _replica = data_node(&dir, replica_port, Some(master_port));
    let replica = direct(replica_port).await;
    wait_until("the replica to sync with the master", DEADLINE, || {
        let mut replica = replica.clone();
        async move {
            let info: String =
                redis::cmd("INFO").arg("replication").query_async(&mut replica).await.unwrap_or_default();
            info.contains("master_link_status:up")
        }
    })
    .await;
    let _sentinel = sentinel(&dir, sentinel_port, master_port, replica_port);

    // A sentinel that takes connections and never answers (a host gone silent), listed first:
    // the store asks both at once and does not wait for it.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    let url = format!(
        "redis+sentinel://:{PASSWORD}@127.0.0.1:{mute_port},127.0.0.1:{sentinel_port}/mymaster\
         ?sentinel_password={SENTINEL_PASSWORD}"
    );
    let start = Instant::now();
    let store = RedisStore::connect(&url, "shop").await.unwrap();
    assert!(start.elapsed() < TIMEOUT, "connected in {:?} despite the silent sentinel", start.elapsed());
    store_round_trip(&store, "mz1:p:before", 1).await;

    // A wrong sentinel password: refused, and not echoed.
    let e = refused(&url.replace(SENTINEL_PASSWORD, "wrong-pw")).await;
    assert!(!e.contains("wrong-pw") && !e.contains(PASSWORD), "{e}");
    assert!(e.contains("sentinel_password=***") && e.contains("authentication failed"), "{e}");
    // An unknown service: refused with its name.
    let e = refused(&url.replace("/mymaster", "/othermaster")).await;
    assert!(e.contains("othermaster"), "{e}");

    // The replica has everything the master wrote before the master goes.
    let written = replication_offset(&mut direct(master_port).await, "master_repl_offset").await;
    wait_until("the replica to hold what the master wrote", DEADLINE, || {
        let mut replica = replica.clone();
        async move { replication_offset(&mut replica, "slave_repl_offset").await >= written }
    })
    .await;

    // Kill the master. The store's next call fails (its connection broke), and so do the calls
    // while the sentinel has no master to name; each within the 2 s bound.
    let sentinel_client = redis::Client::open(format!("redis://:{SENTINEL_PASSWORD}@127.0.0.1:{sentinel_port}/"));
    let mut events = sentinel_client.unwrap().get_async_pubsub().await.unwrap();
    events.subscribe("+switch-master").await.unwrap();
    master.kill();
    let start = Instant::now();
    let e = store.get("mz1:p:before").await.expect_err("the master is gone");
    assert!(matches!(e, CacheError::Unavailable { .. }), "{e}");
    assert!(start.elapsed() < TIMEOUT + Duration::from_secs(1), "{:?}", start.elapsed());

    // The sentinel promotes the replica ...
    let switch = tokio::time::timeout(DEADLINE, events.on_message().next()).await.expect("a failover in time");
    let switch: String = switch.expect("the sentinel's events").get_payload().unwrap();
    assert!(switch.ends_with(&format!("127.0.0.1 {replica_port}")), "{switch}");

    // ... and the store reads through it, at the latest once the failed lookups' backoff has
    // passed.
    let (failures, slowest) = (Cell::new(0), Cell::new(Duration::ZERO));
    let switched = Instant::now();
    wait_until("the store to read through the promoted replica", DEADLINE, || {
        let (store, failures, slowest) = (&store, &failures, &slowest);
        async move {
            let start = Instant::now();
            let got = store.get("mz1:p:before").await;
            slowest.set(slowest.get().max(start.elapsed()));
            match got {
                Ok(found) => found.is_some(),
                Err(CacheError::Unavailable { .. }) => {
                    failures.set(failures.get() + 1);
                    false
                }
                Err(e) => panic!("not Unavailable during the failover: {e}"),
            }
        }
    })
    .await;
    let recovered = switched.elapsed();
    assert!(
        recovered < TIMEOUT,
        "the store used the new master {recovered:?} after the switch ({} failures)",
        failures.get()
    );
    assert!(slowest.get() < TIMEOUT + Duration::from_secs(1), "the slowest call took {:?}", slowest.get());

    // The replica is the master now (a new connection: the promotion closed the clients'), and
    // it is what the store writes to.
    let mut promoted = direct(replica_port).await;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut promoted).await.unwrap();
    assert_eq!(role.first(), Some(&redis::Value::BulkString(b"master".to_vec())), "{role:?}");
    store_round_trip(&store, "mz1:p:after", 2).await;
    // The entry's own key ends with the page key (whatever the store's layout before it).
    let keys: Vec<String> = redis::cmd("KEYS").arg("*:p:after").query_async(&mut promoted).await.unwrap();
    assert!(!keys.is_empty(), "the write after the failover went to the promoted replica");
}
