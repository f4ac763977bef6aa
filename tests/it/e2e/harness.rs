//! End-to-end harness: the real Django origin (fixtures/origin) on a free port, and the node
//! in this process on another, with the store under test.

pub use crate::common::App;
use crate::common::root;
use mizan_render::node::live::Live;
use mizan_render::node::{Node, NodeConfig, StoreConfig};
use mizan_render::origin::OriginConfig;
use mizan_render::pool::PoolConfig;
use mizan_render::testing::{self, RedisServer};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

pub const SECRET: &str = "mizan-end-to-end-test-secret-0123456789abcdef";

/// The Django origin, stopped on drop.
pub struct Origin {
    child: Option<Child>,
    pub port: u16,
}

impl Origin {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// The origin with `env` set (`MIZAN_CACHE_URL`... for mizan_cache.django).
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let (child, port) = testing::django_origin_anywhere(env);
        Self { child: Some(child), port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it, as an outage would.
    pub fn stop(&mut self) {
        testing::kill(&mut self.child);
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> Value {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Calls the origin received for `context`.
    pub async fn calls(&self, context: &str) -> u64 {
        self.call(reqwest::Method::GET, "/_test/stats").await["calls"][context].as_u64().unwrap_or(0)
    }

    /// Requests for `context` held at its gate now.
    pub async fn waiting(&self, context: &str) -> u64 {
        self.call(reqwest::Method::GET, "/_test/stats").await["waiting"][context].as_u64().unwrap_or(0)
    }

    /// Holds every answer for `context` until [`Origin::release`].
    pub async fn gate(&self, context: &str) {
        self.call(reqwest::Method::POST, &format!("/_test/gate?context={context}")).await;
    }

    pub async fn release(&self, context: &str) {
        self.call(reqwest::Method::POST, &format!("/_test/release?context={context}")).await;
    }

    /// Changes a product at the origin without telling the node.
    pub async fn set_price_quietly(&self, id: u64, price: f64) {
        self.update_quietly(id, serde_json::json!({ "price": price })).await;
    }

    /// Changes fields of a product at the origin without telling the node.
    pub async fn update_quietly(&self, id: u64, fields: Value) {
        reqwest::Client::new()
            .post(format!("{}/api/products/{id}", self.url()))
            .body(fields.to_string())
            .send()
            .await
            .unwrap();
    }

    /// The `Accept-Language` `context` was last fetched with (`null` when none).
    pub async fn language(&self, context: &str) -> Value {
        self.call(reqwest::Method::GET, "/_test/stats").await["languages"][context].clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Which store the node runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Memory,
    Sqlite,
    Redis,
}

/// A node and its origin (and its Redis).
pub struct Harness {
    pub origin: Origin,
    /// The node it started with (a reload swaps another in).
    pub node: Arc<Node>,
    pub url: String,
    pub client: reqwest::Client,
    pub redis: Option<RedisServer>,
    /// What the node was started with.
    pub config: NodeConfig,
}

/// Another node beside a [`Harness`]'s, on its store and origin ([`Harness::beside`]).
pub struct Beside {
    pub node: Arc<Node>,
    pub url: String,
    pub client: reqwest::Client,
}

impl Beside {
    pub async fn get(&self, path: &str) -> Got {
        read(self.client.get(format!("{}{path}", self.url)).send().await.unwrap()).await
    }
}

/// Starts a node from `config` and serves it on a free loopback port: the node and its URL.
async fn serve(config: NodeConfig) -> (Arc<Node>, String) {
    let node = Node::start(config.clone()).await.unwrap();
    let live = Live::new(node.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = mizan_render::server::app(live).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (node, url)
}

/// A response, read whole.
pub struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Got {
    pub fn cache(&self) -> &str {
        self.headers.get("x-mizan-cache").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

impl Harness {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, Duration::from_secs(5)).await
    }

    /// A node serving `app`'s manifest.
    pub async fn start_app(backend: Backend, app: App) -> Self {
        Self::start_configured(backend, |config| config.manifest = root().join(app.manifest())).await
    }

    pub async fn start_with(backend: Backend, origin_timeout: Duration) -> Self {
        Self::start_full(backend, origin_timeout, mizan_render::node::DEFAULT_MEMO_BYTES).await
    }

    /// A node whose request-target memo holds at most `memo_bytes`.
    pub async fn start_full(backend: Backend, origin_timeout: Duration, memo_bytes: usize) -> Self {
        Self::start_configured(backend, |config| {
            config.origin.timeout = origin_timeout;
            config.memo_bytes = memo_bytes;
        })
        .await
    }

    /// A node configured as the harness does, then changed by `configure`.
    pub async fn start_configured(backend: Backend, configure: impl FnOnce(&mut NodeConfig)) -> Self {
        Self::start_inner(backend, false, configure).await
    }

    /// A node whose origin caches its contexts' data in the node's own store (mizan_cache.django
    /// with `MIZAN_CACHE_URL` the node's SQLite file or Redis, the node's secret and site): one
    /// cache shared by Django and the node.
    pub async fn start_sharing(backend: Backend, configure: impl FnOnce(&mut NodeConfig)) -> Self {
        Self::start_inner(backend, true, configure).await
    }

    async fn start_inner(backend: Backend, share: bool, configure: impl FnOnce(&mut NodeConfig)) -> Self {
        let (store, redis) = match backend {
            Backend::Memory => (StoreConfig::Memory(64 << 20), None),
            Backend::Sqlite => (StoreConfig::Sqlite(crate::common::scratch_db("e2e")), None),
            Backend::Redis => {
                let server = RedisServer::start();
                (StoreConfig::Redis(server.url()), Some(server))
            }
        };
        let origin = match (share, &store) {
            (false, _) => Origin::start(),
            (true, StoreConfig::Memory(_)) => panic!("a memory store cannot be shared with the origin"),
            (true, StoreConfig::Sqlite(path)) => {
                let url = format!("sqlite:{}", path.display());
                Origin::start_with(&[("MIZAN_CACHE_URL", &url), ("MIZAN_SECRET", SECRET), ("MIZAN_SITE", "example")])
            }
            (true, StoreConfig::Redis(url)) => {
                Origin::start_with(&[("MIZAN_CACHE_URL", url), ("MIZAN_SECRET", SECRET), ("MIZAN_SITE", "example")])
            }
        };
        let mut configured = NodeConfig {
            manifest: root().join("fixtures/manifests/react.json"),
            origin: OriginConfig {
                base: origin.url(),
                timeout: Duration::from_secs(5),
                max_body: 8 << 20,
                max_concurrent: 64,
            },
            store,
            pool: PoolConfig { workers: 2, queue: 256, ..PoolConfig::default() },
            secret: SECRET.as_bytes().to_vec(),
            dev: false,
            forwarding: Default::default(),
            memo_bytes: mizan_render::node::DEFAULT_MEMO_BYTES,
            metrics: None,
            shared: Default::default(),
        };
        configure(&mut configured);
        let (node, url) = serve(configured.clone()).await;
        Self { origin, node, url, client: reqwest::Client::new(), redis, config: configured }
    }

    /// Another node in this process on the same store and origin (several nodes on one
    /// Redis), configured as this one was, then changed by `configure`.
    pub async fn beside(&self, configure: impl FnOnce(&mut NodeConfig)) -> Beside {
        let mut config = self.config.clone();
        configure(&mut config);
        let (node, url) = serve(config).await;
        Beside { node, url, client: self.client.clone() }
    }

    /// A node on the SQLite file at `path`, for a test that works on the file itself (locks
    /// it, say).
    pub async fn start_on_sqlite(path: std::path::PathBuf) -> Self {
        Self::start_configured(Backend::Sqlite, move |config| config.store = StoreConfig::Sqlite(path)).await
    }

    /// `/_mizan/health`: its status code and its report.
    pub async fn health(&self) -> (u16, Value) {
        let response = self.client.get(format!("{}/_mizan/health", self.url)).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> Got {
        self.get_with(path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        let mut request = self.client.get(format!("{}{path}", self.url));
        for (n, v) in headers {
            request = request.header(*n, *v);
        }
        read(request.send().await.unwrap()).await
    }

    /// A GET sent byte for byte as `target` (no URL parser in between, which would resolve
    /// dot segments and encodings before the node sees them): status, headers, body.
    pub async fn raw_get(&self, target: &str, headers: &[(&str, &str)]) -> Got {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let address = self.url.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut request = format!("GET {target} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n");
        for (n, v) in headers {
            request.push_str(&format!("{n}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
        let mut headers = reqwest::header::HeaderMap::new();
        for line in lines {
            if let Some((n, v)) = line.split_once(':')
                && let (Ok(n), Ok(v)) =
                    (reqwest::header::HeaderName::try_from(n.trim()), reqwest::header::HeaderValue::try_from(v.trim()))
            {
                headers.append(n, v);
            }
        }
        Got { status, headers, body: body.to_string() }
    }

    /// A mutation through the node's proxy.
    pub async fn set_price(&self, id: u64, price: f64) -> Got {
        let request = self
            .client
            .post(format!("{}/api/products/{id}", self.url))
            .body(serde_json::json!({ "price": price }).to_string());
        read(request.send().await.unwrap()).await
    }

    /// Waits until every background render of the node has landed.
    pub async fn settle(&self) {
        for key in self.node.flights.keys() {
            self.node.flights.settle(&key).await;
        }
    }
}

pub async fn read(response: reqwest::Response) -> Got {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    Got { status, headers, body }
}

/// The price shown on a product page.
/// `html` without its comments: the hydration markers each framework writes differently
/// (React `<!-- -->` between text parts, Vue `<!--[-->`, Svelte `<!---->`).
pub fn text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        rest = rest[start..].find("-->").map_or("", |end| &rest[start + end + 3..]);
    }
    out.push_str(rest);
    out
}

pub fn price(html: &str) -> &str {
    let start = html.find(r#"<p class="price">"#).expect("a product page") + r#"<p class="price">"#.len();
    &html[start..start + html[start..].find('<').unwrap()]
}
