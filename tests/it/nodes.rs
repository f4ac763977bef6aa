//! Several nodes, one cache (issue 19): three node processes (the real binary) on loopback,
//! one real `redis-server`, the fixture Django origin. A page is served from another node's
//! memory tier and a purge through one node reaches the others' memory within the documented
//! bound; concurrent misses over the three render once; a node killed while it holds a render
//! lock is taken over once the lock expires; a Redis restart loses no purge and leaves nothing
//! old in memory. The first and the second also run on a three-master Redis Cluster. Each
//! node logs to `<scratch>/nodes-<test>-<n>.log`.

use crate::common::{DEADLINE, root, scratch, wait_until};
use crate::e2e::harness::{Got, Origin, SECRET, price, read};
use mizan_render::cache::Keys;
use mizan_render::cache::key::PageKeyParts;
use mizan_render::cache::signature::sign;
use mizan_render::cache::tiered::{BLOCK, GRACE};
use mizan_render::testing::{RedisCluster, RedisServer};
use serde_json::{Value, json};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// One `mizan-render serve` process.
struct NodeProcess {
    child: Option<Child>,
    url: String,
    client: reqwest::Client,
}

impl NodeProcess {
    /// `GET path`, read whole.
    async fn get(&self, path: &str) -> Got {
        read(self.client.get(format!("{}{path}", self.url)).send().await.unwrap()).await
    }

    /// `/_mizan/health`.
    async fn health(&self) -> Value {
        self.client.get(format!("{}/_mizan/health", self.url)).send().await.unwrap().json().await.unwrap()
    }

    /// A number of the health report, by JSON pointer (`/store_locks/waited`); 0 if absent.
    async fn stat(&self, pointer: &str) -> u64 {
        self.health().await.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
    }

    /// `POST path` with `body`, signed as an admin request now; panics unless it answers 200.
    async fn signed(&self, path: &str, body: Vec<u8>) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let signature = sign(&Keys::from_secret(SECRET.as_bytes(), false).unwrap(), now, &body);
        let request = self.client.post(format!("{}{path}", self.url)).header("x-mizan-signature", signature);
        let answer = read(request.body(body).send().await.unwrap()).await;
        assert_eq!(answer.status, 200, "{path} refused: {}", answer.body);
    }

    /// A signed hard purge of `product_detail` `{"id": id}` through this node; panics unless it
    /// is acknowledged.
    async fn purge_product(&self, id: u64) {
        let body = json!({"purge": [{"context": "product_detail", "params": {"id": id}}], "mode": "hard"});
        self.signed("/_mizan/purge", body.to_string().into_bytes()).await;
    }

    /// A signed `POST /_mizan/reload`; panics unless it is swapped in.
    async fn reload(&self) {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        // A body of its own: the same signed body twice is a replay.
        self.signed("/_mizan/reload", format!("{{\"at\": {}}}", since_epoch.as_nanos()).into_bytes()).await;
    }

    /// SIGKILL, as a crash: no lock is released, nothing is flushed.
    fn kill(&mut self) {
        mizan_render::testing::kill(&mut self.child);
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the nodes share: one Redis server, or a three-master Redis Cluster.
enum Redis {
    One(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    fn url(&self) -> String {
        match self {
            Redis::One(server) => server.url(),
            Redis::Cluster(cluster) => cluster.url(),
        }
    }

    /// The one server.
    fn server(&mut self) -> &mut RedisServer {
        match self {
            Redis::One(server) => server,
            Redis::Cluster(_) => panic!("the cluster tests stop no server"),
        }
    }

    /// A plain connection to each server (each master of a cluster).
    fn servers(&self) -> Vec<String> {
        match self {
            Redis::One(server) => vec![server.url()],
            Redis::Cluster(cluster) => cluster.node_urls(),
        }
    }
}

/// Three nodes on one Redis and one origin.
struct Fleet {
    nodes: Vec<NodeProcess>,
    origin: Origin,
    redis: Redis,
}

impl Fleet {
    /// Three nodes (one render worker each, the React fixture app) started at once, each with
    /// `flags` besides the store and origin.
    async fn start(test: &str, flags: &[&str]) -> Fleet {
        Self::start_n(test, 3, flags).await
    }

    /// [`Fleet::start`] with `count` nodes.
    async fn start_n(test: &str, count: usize, flags: &[&str]) -> Fleet {
        Self::start_on(test, count, Redis::One(RedisServer::start()), flags).await
    }

    /// [`Fleet::start_n`] on `redis`.
    async fn start_on(test: &str, count: usize, redis: Redis, flags: &[&str]) -> Fleet {
        let origin = Origin::start();
        let starts: Vec<_> = (0..count)
            .map(|n| {
                let mut command = Command::new("sh");
                let log = scratch(&format!("nodes-{test}-{n}.log"));
                command.args(["-c", "exec \"$0\" \"$@\" 2>\"$LOG\"", env!("CARGO_BIN_EXE_mizan-render")]);
                command.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--origin", &origin.url()]);
                command.args(["--store", &redis.url(), "--manifest"]).arg(root().join("fixtures/manifests/react.json"));
                command.args(flags).env("LOG", log).env("MIZAN_SECRET", SECRET).env("MIZAN_LOG", "info");
                tokio::task::spawn_blocking(move || crate::cli::serve(command))
            })
            .collect();
        let mut nodes = Vec::new();
        for start in starts {
            let (child, url) = start.await.unwrap();
            nodes.push(NodeProcess { child: Some(child), url, client: reqwest::Client::new() });
        }
        Fleet { nodes, origin, redis }
    }

    /// The sum over the nodes of a health number.
    async fn total(&self, pointer: &str) -> u64 {
        let mut sum = 0;
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            sum += node.stat(pointer).await;
        }
        sum
    }

    /// Every Redis key holding `needle`.
    async fn redis_keys(&self, needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        for url in self.redis.servers() {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await.unwrap();
            found.extend(keys.into_iter().filter(|k| k.contains(needle)));
        }
        found
    }
}

/// The hex of the page key of `path` (the fixture site, no query, no vary): how any Redis key
/// of that page, its render lock included, names it.
fn page_hex(path: &str) -> String {
    let keys = Keys::from_secret(SECRET.as_bytes(), false).unwrap();
    let parts = PageKeyParts {
        site: "example".into(),
        method: "GET".into(),
        path: path.into(),
        query: String::new(),
        vary: String::new(),
    };
    let key = keys.page_key(&parts);
    key.rsplit(':').next().unwrap().to_string()
}

/// Polls `node` with `GET path` until it shows `wanted` as the price, for at most `bound`:
/// when it first did, and how many answers before that showed another price.
async fn until_price(node: &NodeProcess, path: &str, wanted: &str, bound: Duration) -> (Instant, usize) {
    let what = format!("{} to serve {path} at {wanted}", node.url);
    let mut others = 0;
    wait_until(&what, bound, || {
        others += 1;
        async { price(&node.get(path).await.body) == wanted }
    })
    .await;
    (Instant::now(), others - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_is_served_from_another_nodes_memory_and_a_purge_through_one_node_reaches_every_memory() {
    a_purge_through_one_node_reaches_every_memory(&Fleet::start("memory-tier", &["--l1-mb", "16"]).await).await;
}

/// On `fleet` (memory tiers on, nothing served yet): `/products/7` rendered by A is served
/// from B's and C's memory, and a purge acknowledged by A reaches their memory within the
/// documented bound.
async fn a_purge_through_one_node_reaches_every_memory(fleet: &Fleet) {
    let [a, b, c] = &fleet.nodes[..] else { unreachable!() };
    assert_eq!(a.get("/products/7").await.cache(), "MISS");
    for node in [b, c] {
        // The first from Redis (copied into memory), the second from memory.
        for _ in 0..2 {
            let got = node.get("/products/7").await;
            assert_eq!((got.cache(), price(&got.body)), ("HIT", "€154.75"));
        }
        let tier = node.health().await["store_tier"].clone();
        assert!(tier["hits"].as_u64() >= Some(1) && tier["current"] == true, "{tier}");
        assert_eq!(node.stat("/renders/ok").await, 0, "B and C render nothing");
    }

    // The origin changes the product, and the purge goes through A only.
    fleet.origin.set_price_quietly(7, 99.5).await;
    fleet.nodes[0].purge_product(7).await;
    let acknowledged = Instant::now();
    let own = a.get("/products/7").await;
    assert_eq!((own.cache(), price(&own.body)), ("MISS", "€99.50"), "the purging node at once");
    // The documented bound: a node serves memory only while its last read of the purge log is
    // less than BLOCK + GRACE old, and it applies every purge it reads.
    let bound = BLOCK + GRACE;
    let (on_b, on_c) =
        tokio::join!(until_price(b, "/products/7", "€99.50", bound), until_price(c, "/products/7", "€99.50", bound));
    eprintln!(
        "the purge acknowledged by A reached B after {:?} ({} old answers), C after {:?} ({} old answers); bound {bound:?}",
        on_b.0 - acknowledged,
        on_b.1,
        on_c.0 - acknowledged,
        on_c.1
    );
    for node in [b, c] {
        assert!(node.stat("/store_tier/purges_applied").await >= 1);
    }
    assert_eq!(fleet.origin.calls("product_detail").await, 2, "before and after the purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_misses_over_three_nodes_cost_one_origin_call_and_one_render() {
    concurrent_misses_render_once(&Fleet::start("one-render", &[]).await).await;
}

/// On `fleet` (three nodes, `/products/21` never asked for): 10 concurrent misses per node
/// cost one origin call and one render in all, the others waiting for the one render lock.
/// Counted from before they start, so the fleet may have served other pages.
async fn concurrent_misses_render_once(fleet: &Fleet) {
    let calls = fleet.origin.calls("product_detail").await;
    let renders = fleet.total("/renders/ok").await;
    let acquired = fleet.total("/store_locks/acquired").await;
    let waited = fleet.total("/store_locks/waited").await;
    let served = fleet.total("/store_locks/waited_and_served").await;
    // The render's data is held at the origin until every node's flight is in the air.
    fleet.origin.gate("product_detail").await;
    let mut requests = Vec::new();
    for node in &fleet.nodes {
        for _ in 0..10 {
            let (client, url) = (node.client.clone(), format!("{}/products/21", node.url));
            requests.push(tokio::spawn(async move { read(client.get(url).send().await.unwrap()).await }));
        }
    }
    let in_the_air = || async {
        fleet.origin.waiting("product_detail").await == 1
            && fleet.total("/store_locks/acquired").await == acquired + 1
            && fleet.total("/store_locks/waited").await == waited + 2
    };
    wait_until("one node rendering and two waiting for it", DEADLINE, in_the_air).await;
    let locks = fleet.redis_keys(&page_hex("/products/21")).await;
    assert_eq!(locks.iter().filter(|k| k.contains(":l:")).count(), 1, "one render lock: {locks:?}");
    fleet.origin.release("product_detail").await;
    let mut states = std::collections::BTreeMap::<String, usize>::new();
    for request in requests {
        let got = request.await.unwrap();
        assert_eq!((got.status, price(&got.body)), (200, "€122.11"));
        *states.entry(got.cache().to_string()).or_default() += 1;
    }
    assert_eq!(fleet.origin.calls("product_detail").await, calls + 1, "one origin call for the page's one dependency");
    assert_eq!(fleet.total("/renders/ok").await, renders + 1, "one render over the three nodes");
    assert_eq!(fleet.total("/store_locks/waited_and_served").await, served + 2);
    eprintln!("30 requests over three nodes: {states:?}");
    assert_eq!(states.values().sum::<usize>(), 30);
    assert!(states.get("MISS").is_some_and(|n| *n <= 10) && states.get("HIT") >= Some(&20), "{states:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_it_holds_a_render_lock_is_taken_over_when_the_lock_expires() {
    let mut fleet = Fleet::start("killed-holder", &["--render-lock-ms", "3000"]).await;
    fleet.origin.gate("product_detail").await;
    let hex = page_hex("/products/11");
    let (client, url) = (fleet.nodes[0].client.clone(), format!("{}/products/11", fleet.nodes[0].url));
    let doomed = tokio::spawn(async move { client.get(url).send().await });
    // A holds the lock (the only key of a page never stored) and blocks on its data.
    wait_until("A's render lock in Redis", DEADLINE, || async { !fleet.redis_keys(&hex).await.is_empty() }).await;
    wait_until("A's render at the origin", DEADLINE, || async { fleet.origin.waiting("product_detail").await == 1 })
        .await;
    let b = &fleet.nodes[1];
    let (client, url) = (b.client.clone(), format!("{}/products/11", b.url));
    let waiting = tokio::spawn(async move { read(client.get(url).send().await.unwrap()).await });
    wait_until("B waiting for A's render", DEADLINE, || async { b.stat("/store_locks/waited").await == 1 }).await;

    fleet.nodes[0].kill();
    assert!(doomed.await.unwrap().is_err(), "A's visitor loses its connection");
    fleet.origin.release("product_detail").await;
    let got = waiting.await.unwrap();
    let b = &fleet.nodes[1];
    assert_eq!((got.status, got.cache(), price(&got.body)), (200, "MISS", "€155.71"), "B rendered it");
    let locks = b.health().await["store_locks"].clone();
    assert_eq!((locks["took_over_after_expiry"].as_u64(), locks["waited_and_served"].as_u64()), (Some(1), Some(0)));
    assert_eq!(fleet.origin.calls("product_detail").await, 2, "A's fetch, then B's");
    let c = fleet.nodes[2].get("/products/11").await;
    assert_eq!(c.cache(), "HIT", "B stored it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_no_purge_and_leaves_nothing_old_in_memory() {
    let mut fleet = Fleet::start("redis-restart", &["--l1-mb", "16"]).await;
    for node in &fleet.nodes {
        node.get("/products/12").await;
        assert_eq!(node.get("/products/12").await.cache(), "HIT");
    }
    for node in &fleet.nodes {
        assert!(node.stat("/store_tier/entries").await >= 1, "every node holds the page in memory");
    }
    // The origin changes while Redis restarts empty: a page from before the restart, still in
    // a node's memory, would show the old price.
    fleet.origin.set_price_quietly(12, 77.25).await;
    fleet.redis.server().restart();
    for node in &fleet.nodes {
        let reset = || async {
            let tier = node.health().await["store_tier"].clone();
            tier["resets"]["error"].as_u64() >= Some(1) && tier["current"] == true
        };
        wait_until("every node's memory emptied and following the new log", DEADLINE, reset).await;
    }
    for node in &fleet.nodes {
        let got = node.get("/products/12").await;
        assert_eq!(price(&got.body), "€77.25", "{}: an entry from before the restart", node.url);
    }

    // After the restart, a purge through B reaches A's and C's memory.
    for node in &fleet.nodes {
        node.get("/products/13").await;
        assert_eq!(node.get("/products/13").await.cache(), "HIT");
    }
    fleet.origin.set_price_quietly(13, 12.5).await;
    fleet.nodes[1].purge_product(13).await;
    let acknowledged = Instant::now();
    let [a, b, c] = &fleet.nodes[..] else { unreachable!() };
    // B renders the new page first, so what is timed below is the purge reaching A's and C's
    // memory, not a render.
    let own = b.get("/products/13").await;
    assert_eq!((own.cache(), price(&own.body)), ("MISS", "€12.50"), "the purging node at once");
    let (on_a, on_c) = tokio::join!(
        until_price(a, "/products/13", "€12.50", BLOCK + GRACE),
        until_price(c, "/products/13", "€12.50", BLOCK + GRACE)
    );
    eprintln!(
        "after the restart, B's purge reached A after {:?} ({} old answers), C after {:?} ({} old answers)",
        on_a.0 - acknowledged,
        on_a.1,
        on_c.0 - acknowledged,
        on_c.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_tier_and_its_purge_log_reader_survive_a_reload() {
    let fleet = Fleet::start_n("tier-reload", 2, &["--l1-mb", "16"]).await;
    let [a, b] = &fleet.nodes[..] else { unreachable!() };
    a.get("/products/14").await;
    assert_eq!(a.get("/products/14").await.cache(), "HIT");
    let before = a.health().await["store_tier"].clone();
    a.reload().await;
    let after = a.health().await;
    assert_eq!(after["generation"], 1);
    assert_eq!(after["store_tier"]["entries"], before["entries"], "the reload kept the memory");
    assert_eq!(a.get("/products/14").await.cache(), "HIT");
    assert!(a.stat("/store_tier/hits").await > before["hits"].as_u64().unwrap(), "served from that memory");
    // Its reader still follows the log: a purge through B reaches A's memory.
    fleet.origin.set_price_quietly(14, 3.5).await;
    b.purge_product(14).await;
    assert_eq!(price(&b.get("/products/14").await.body), "€3.50", "B renders the new page first");
    until_price(a, "/products/14", "€3.50", BLOCK + GRACE).await;
    let resets = a.health().await["store_tier"]["resets"].clone();
    assert_eq!(resets, json!({"gap": 0, "error": 0}), "never emptied");
}

/// The same promises on a three-master Redis Cluster: a page served from another node's
/// memory, a purge through one node reaching the others', concurrent misses over the three
/// rendered once (the lock lives in the page's bucket, on whichever master owns it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_purge_reaches_every_memory_and_misses_render_once() {
    let fleet = Fleet::start_on("cluster", 3, Redis::Cluster(RedisCluster::start()), &["--l1-mb", "16"]).await;
    a_purge_through_one_node_reaches_every_memory(&fleet).await;
    concurrent_misses_render_once(&fleet).await;
}

/// A purge that arrives while Redis is down is not lost: the origin's `X-Mizan-Invalidate`
/// through A's proxy cannot reach Redis, A keeps it and retries, and when Redis comes back
/// with its data (an append-only file: the old page survived the restart) the purge lands, so
/// no node serves the old page for longer than A's retry interval after Redis returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_taken_while_redis_is_down_lands_when_it_returns() {
    let redis = RedisServer::start_persistent(&scratch("nodes-purge-while-down-redis"));
    let mut fleet = Fleet::start_on("purge-while-down", 3, Redis::One(redis), &["--l1-mb", "16"]).await;
    for node in &fleet.nodes {
        // (A write that took longer than the node waits for one is not stored: ask again.)
        wait_until("the page cached", DEADLINE, || async { node.get("/products/12").await.cache() == "HIT" }).await;
    }
    fleet.redis.server().kill();
    let a = &fleet.nodes[0];
    let request = a.client.post(format!("{}/api/products/12", a.url)).body(json!({"price": 77.25}).to_string());
    let answer = read(request.send().await.unwrap()).await;
    assert_eq!(answer.status, 200, "the mutation goes through with Redis down: {}", answer.body);
    // The origin names the product and the product list: both wait.
    assert_eq!(a.stat("/pending_purges").await, 2, "A keeps the purges it could not apply");
    for node in &fleet.nodes {
        let got = node.get("/products/12").await;
        assert_eq!(price(&got.body), "€77.25", "{}: with Redis down every node renders afresh", node.url);
    }

    fleet.redis.server().restart();
    let a = &fleet.nodes[0];
    wait_until("A's purge to land", DEADLINE, || async { a.stat("/pending_purges").await == 0 }).await;
    for node in &fleet.nodes {
        let got = node.get("/products/12").await;
        assert_eq!(price(&got.body), "€77.25", "{}: the old page came back with Redis", node.url);
    }
}
