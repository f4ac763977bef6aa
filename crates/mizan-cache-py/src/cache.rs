//! `Cache` and `Entry`: one store under the protocol behind a blocking facade. Each call
//! runs the store's future on a tokio runtime with the GIL released (`py.detach`), so other
//! Python threads go on while Redis or SQLite answers; the memory store answers gets without
//! either. The runtime is per process: after a `fork`, a child opens its own runtime and
//! store on first use (the parent's threads and connections do not exist in the child).

use crate::convert::{self, cache_error, error};
use crate::keys::PyKeys;
use mizan_cache::memory::MemoryStore;
use mizan_cache::redis::RedisStore;
use mizan_cache::sqlite::SqliteStore;
use mizan_cache::{Entry, Freshness, Keys, Meta, PutOutcome, Store, StoreConfig, dependency_tags, now_ms};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt as _;
use pyo3::types::PyBytes;
use serde::Deserialize as _;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::runtime::Runtime;

/// This process's runtime (made again in a child after `fork`).
fn runtime() -> PyResult<&'static Runtime> {
    static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((owner, runtime)) = *slot
        && owner == pid
    {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("mizan-cache")
        .enable_all()
        .build()
        .map_err(|e| error("StoreUnavailable", format!("cannot start the cache's runtime: {e}")))?;
    // Leaked: one per process, for its life (a runtime copied by fork is never dropped: its
    // threads are not in the child).
    let runtime: &'static Runtime = Box::leak(Box::new(runtime));
    *slot = Some((pid, runtime));
    Ok(runtime)
}

/// A store opened in one process.
struct Opened {
    pid: u32,
    runtime: &'static Runtime,
    store: Arc<dyn Store>,
}

/// One store under the cache protocol.
#[pyclass(module = "mizan_cache", frozen)]
pub struct Cache {
    config: StoreConfig,
    site: String,
    keys: Option<Py<PyKeys>>,
    opened: Mutex<Arc<Opened>>,
}

fn open(config: &StoreConfig, site: &str) -> PyResult<Opened> {
    let runtime = runtime()?;
    let store: Arc<dyn Store> = match config {
        StoreConfig::Memory(bytes) => Arc::new(MemoryStore::new(*bytes)),
        // Python's threads wait on their own, the GIL released: SQLite runs right there.
        StoreConfig::Sqlite(path) => Arc::new(SqliteStore::open(path, site).map_err(cache_error)?.inline()),
        StoreConfig::Redis(url) => Arc::new(runtime.block_on(RedisStore::connect(url, site)).map_err(cache_error)?),
    };
    Ok(Opened { pid: std::process::id(), runtime, store })
}

impl Cache {
    /// The store for this process: reopened after a fork.
    fn opened(&self, py: Python<'_>) -> PyResult<Arc<Opened>> {
        // Waits for the lock with the GIL released: its holder may be opening the store with
        // the GIL released, and must be able to take it back (threads of a forked child).
        let mut slot = self.opened.lock_py_attached(py).unwrap_or_else(|p| p.into_inner());
        if slot.pid == std::process::id() {
            return Ok(slot.clone());
        }
        let fresh = Arc::new(py.detach(|| open(&self.config, &self.site))?);
        // The parent's store holds connections and tasks of a runtime whose threads are not in
        // this process: never dropped here.
        std::mem::forget(std::mem::replace(&mut *slot, fresh.clone()));
        Ok(fresh)
    }

    /// Runs `f(store)` to completion with the GIL released.
    fn run<T, F, Fut>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(Arc<dyn Store>) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, mizan_cache::CacheError>>,
    {
        let opened = self.opened(py)?;
        py.detach(|| opened.runtime.block_on(f(opened.store.clone()))).map_err(cache_error)
    }

    fn keys(&self) -> PyResult<&Keys> {
        // A frozen class: its `Keys` are read without the GIL.
        self.keys.as_ref().map(|k| &k.get().keys).ok_or_else(|| {
            error(
                "NoSecret",
                "this Cache was opened without a secret: pass secret= (the node's MIZAN_SECRET) to derive keys",
            )
        })
    }

    fn get_entry(&self, py: Python<'_>, key: &str) -> PyResult<Option<Arc<Entry>>> {
        let opened = self.opened(py)?;
        if let Some(answer) = opened.store.get_now(key) {
            return Ok(answer);
        }
        let key = key.to_string();
        py.detach(|| opened.runtime.block_on(opened.store.get(&key))).map_err(cache_error)
    }

    fn put_entry(&self, py: Python<'_>, entry: Entry) -> PyResult<bool> {
        let outcome = self.run(py, move |store| async move { store.put(entry).await })?;
        Ok(matches!(outcome, PutOutcome::Stored))
    }
}

#[pymethods]
impl Cache {
    #[new]
    #[pyo3(signature = (url = "memory", *, site = "default", secret = None, dev = false, memory_mb = 256))]
    fn new(
        py: Python<'_>,
        url: &str,
        site: &str,
        secret: Option<&Bound<'_, PyAny>>,
        dev: bool,
        memory_mb: u64,
    ) -> PyResult<Self> {
        let mut config: StoreConfig = url.parse().map_err(|e: String| error("ConfigError", e))?;
        if let StoreConfig::Memory(bytes) = &mut config {
            *bytes = memory_mb.saturating_mul(1 << 20);
        }
        let keys = match secret.filter(|s| !s.is_none()) {
            Some(secret) => {
                let keys = Keys::from_secret(&convert::secret(secret)?, dev).map_err(cache_error)?;
                Some(Py::new(py, PyKeys { keys })?)
            }
            None => None,
        };
        let opened = py.detach(|| open(&config, site))?;
        Ok(Self { config, site: site.to_string(), keys, opened: Mutex::new(Arc::new(opened)) })
    }

    /// The same as `Cache(url, ...)`.
    #[classmethod]
    #[pyo3(signature = (url, *, site = "default", secret = None, dev = false, memory_mb = 256))]
    fn from_url(
        _cls: &Bound<'_, pyo3::types::PyType>,
        py: Python<'_>,
        url: &str,
        site: &str,
        secret: Option<&Bound<'_, PyAny>>,
        dev: bool,
        memory_mb: u64,
    ) -> PyResult<Self> {
        Self::new(py, url, site, secret, dev, memory_mb)
    }

    /// `memory`, `sqlite` or `redis`.
    #[getter]
    fn backend(&self) -> &'static str {
        match self.config {
            StoreConfig::Memory(_) => "memory",
            StoreConfig::Sqlite(_) => "sqlite",
            StoreConfig::Redis(_) => "redis",
        }
    }

    #[getter]
    fn site(&self) -> &str {
        &self.site
    }

    #[getter(keys)]
    fn get_keys(&self, py: Python<'_>) -> Option<Py<PyKeys>> {
        self.keys.as_ref().map(|k| k.clone_ref(py))
    }

    fn __repr__(&self) -> String {
        format!("Cache({:?}, site={:?})", self.config.redacted(), self.site)
    }

    /// The entry under `key` whatever its freshness, or `None`.
    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Option<PyEntry>> {
        Ok(self.get_entry(py, key)?.map(|inner| PyEntry { inner }))
    }

    /// Stores `response` under `key` with `metadata`; `False` when a purge dropped it.
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        response: &Bound<'_, PyAny>,
        metadata: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let body = convert::body(response, "response")?;
        let meta = metadata_for(key, metadata)?;
        self.put_entry(py, Entry { body, meta })
    }

    /// Purges every entry depending on `context` whose params contain `params`.
    #[pyo3(signature = (context, params = None, *, mode = "hard"))]
    fn purge(&self, py: Python<'_>, context: String, params: Option<&Bound<'_, PyAny>>, mode: &str) -> PyResult<u64> {
        let params = convert::params(params)?;
        let mode = convert::mode(mode)?;
        self.run(py, move |store| async move { store.purge(&context, &params, mode).await })
    }

    /// The current purge generation of each tag.
    fn generations(&self, py: Python<'_>, tags: &Bound<'_, PyAny>) -> PyResult<BTreeMap<String, u64>> {
        if tags.is_instance_of::<pyo3::types::PyString>() {
            return Err(PyTypeError::new_err("tags must be an iterable of tags, not one string: wrap it in a list"));
        }
        let tags: Vec<String> = tags.try_iter()?.map(|t| t?.extract::<String>()).collect::<PyResult<_>>()?;
        self.run(py, move |store| async move { store.generations(&tags).await })
    }

    /// Removes one entry.
    fn remove(&self, py: Python<'_>, key: String) -> PyResult<()> {
        self.run(py, move |store| async move { store.remove(&key).await })
    }

    /// The data key of `context` for `params`.
    #[pyo3(signature = (context, params = None))]
    fn data_key(&self, context: &str, params: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
        Ok(self.keys()?.data_key(context, &convert::params(params)?))
    }

    /// The fresh data of `context` for `params` (its JSON text), or `None`.
    #[pyo3(signature = (context, params = None))]
    fn get_data<'py>(
        &self,
        py: Python<'py>,
        context: &str,
        params: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let key = self.keys()?.data_key(context, &convert::params(params)?);
        Ok(self
            .get_entry(py, &key)?
            .filter(|e| e.meta.freshness(now_ms()) == Freshness::Fresh)
            .map(|e| PyBytes::new(py, &e.body)))
    }

    /// The generations to read before computing a context's data, for `put_data`.
    #[pyo3(signature = (context, params = None))]
    fn data_generations(
        &self,
        py: Python<'_>,
        context: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<BTreeMap<String, u64>> {
        let params = convert::params(params)?;
        let tags = dependency_tags([(context, &params)]);
        self.run(py, move |store| async move { store.generations(&tags).await })
    }

    /// Stores `data` (JSON text) as the data entry of `context` for `params`.
    #[pyo3(signature = (context, params, data, *, ttl, swr = 0, sie = 0, generations))]
    #[allow(clippy::too_many_arguments)]
    fn put_data(
        &self,
        py: Python<'_>,
        context: &str,
        params: Option<&Bound<'_, PyAny>>,
        data: &Bound<'_, PyAny>,
        ttl: i64,
        swr: i64,
        sie: i64,
        generations: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let params = convert::params(params)?;
        let [ttl, swr, sie] = [("ttl", ttl), ("swr", swr), ("sie", sie)].map(|(name, s)| {
            u64::try_from(s)
                .map_err(|_| error("MetadataError", format!("{name} is {s}: lifetimes are whole seconds, 0 or more")))
        });
        let (ttl, swr, sie) = (ttl?, swr?, sie?);
        let generations: BTreeMap<String, u64> = serde_json::from_value(convert::json(generations, "generations")?)
            .map_err(|e| error("MetadataError", format!("generations must map tags to whole numbers: {e}")))?;
        let body = convert::body(data, "data")?;
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return Err(error("MetadataError", format!("the data of {context} is not JSON: {e}")));
        }
        let key = self.keys()?.data_key(context, &params);
        let meta = Meta::data(key, context, &params, now_ms(), (ttl, swr, sie), &generations);
        self.put_entry(py, Entry { body, meta })
    }
}

/// The metadata for a put under `key`: the mapping given, over the defaults.
fn metadata_for(key: &str, metadata: &Bound<'_, PyAny>) -> PyResult<Meta> {
    let Value::Object(given) = convert::json(metadata, "metadata")? else {
        return Err(PyTypeError::new_err("metadata must be a mapping (docs/protocol.md, \"Metadata\")"));
    };
    let mut meta = Map::new();
    meta.insert("v".into(), 1.into());
    meta.insert("key".into(), key.into());
    meta.insert("status".into(), 200.into());
    meta.insert("headers".into(), Value::Array(Vec::new()));
    meta.insert("created_at".into(), now_ms().into());
    meta.insert("swr_s".into(), 0.into());
    meta.insert("sie_s".into(), 0.into());
    meta.insert("etag".into(), Value::Null);
    meta.insert("generation".into(), Value::Object(Map::new()));
    meta.extend(given);
    let meta = Value::Object(meta);
    // Deserialised plainly first; again with the path tracked only to say where it failed.
    let meta: Meta = match Meta::deserialize(&meta) {
        Ok(meta) => meta,
        Err(_) => serde_path_to_error::deserialize::<_, Meta>(&meta).map_err(|e| {
            let path = e.path().to_string();
            error("MetadataError", format!("metadata.{path}: {}", e.into_inner()))
        })?,
    };
    if meta.key != key {
        return Err(error(
            "MetadataError",
            format!("metadata.key is {:?}, but the entry is put under {key:?}", meta.key),
        ));
    }
    if meta.v != 1 {
        return Err(error("MetadataError", format!("metadata.v is {}; this version writes schema 1", meta.v)));
    }
    Ok(meta)
}

/// A stored response: body and metadata.
#[pyclass(name = "Entry", module = "mizan_cache", frozen)]
pub struct PyEntry {
    inner: Arc<Entry>,
}

#[pymethods]
impl PyEntry {
    #[getter]
    fn key(&self) -> &str {
        &self.inner.meta.key
    }

    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner.meta.kind {
            mizan_cache::Kind::Page => "page",
            mizan_cache::Kind::Data => "data",
        }
    }

    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.body)
    }

    #[getter]
    fn status(&self) -> u16 {
        self.inner.meta.status
    }

    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.inner.meta.headers.clone()
    }

    #[getter]
    fn created_at(&self) -> u64 {
        self.inner.meta.created_at
    }

    #[getter]
    fn stale_at(&self) -> Option<u64> {
        self.inner.meta.stale_at
    }

    /// The whole metadata, as stored.
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let meta = serde_json::to_value(&self.inner.meta).map_err(|e| {
            error("MetadataError", format!("the metadata of {} does not serialise: {e}", self.inner.meta.key))
        })?;
        convert::to_python(py, &meta)
    }

    /// The entry's standing at `now_ms` (default now).
    #[pyo3(signature = (now_ms = None))]
    fn freshness(&self, now_ms: Option<u64>) -> &'static str {
        self.inner.meta.freshness(now_ms.unwrap_or_else(mizan_cache::now_ms)).as_str()
    }

    /// The body parsed as JSON.
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value: Value = serde_json::from_slice(&self.inner.body)
            .map_err(|e| PyValueError::new_err(format!("the body of {} is not JSON: {e}", self.inner.meta.key)))?;
        convert::to_python(py, &value)
    }

    fn __repr__(&self) -> String {
        format!("Entry(key={:?}, kind={:?}, {} bytes)", self.inner.meta.key, self.kind(), self.inner.body.len())
    }

    fn __len__(&self) -> usize {
        self.inner.body.len()
    }
}
