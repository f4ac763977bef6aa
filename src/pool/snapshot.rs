//! The app snapshot: the runtime extensions (`runtime-js/` and deno_web) plus every bundle of
//! the manifest, loaded, evaluated and registered once at start-up, so that a new isolate is ready to render in milliseconds.

use super::RenderError;
use super::isolate::{error_text, internal_fn, runtime_options};
use deno_core::{JsRuntime, JsRuntimeForSnapshot, ModuleSpecifier, PollEventLoopOptions, scope, v8};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A framework SSR bundle, read from disk.
#[derive(Debug, Clone)]
pub struct BundleSource {
    /// The manifest's name for it.
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// The ES module's source.
    pub code: String,
    /// Hex SHA-256 of `code`, recorded with every page rendered from it.
    pub hash: String,
    /// What its renders share (the manifest bundle's `isolation`; default: module state).
    pub isolation: super::Isolation,
}

impl BundleSource {
    /// Reads the bundle `name` from `path`.
    pub fn read(name: &str, path: &Path) -> Result<Self, RenderError> {
        let code = std::fs::read_to_string(path).map_err(|source| RenderError::BundleRead {
            bundle: name.into(),
            path: path.into(),
            source,
        })?;
        let hash = format!("{:x}", Sha256::digest(code.as_bytes()));
        // Canonical, so that the module specifier V8 sees is exactly the one registered.
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(Self { name: name.into(), path, code, hash, isolation: super::Isolation::default() })
    }
}

/// Builds the app snapshot for `bundles` on a thread of its own (snapshotting needs a tokio
/// runtime and blocks for as long as the bundles take to evaluate). The bytes are leaked:
/// V8 needs them for as long as any isolate restored from them lives.
pub fn build(bundles: &[BundleSource]) -> Result<&'static [u8], RenderError> {
    build_with(bundles, None)
}

/// [`build`], with `prelude` (a classic script) evaluated before the bundles.
pub fn build_with(bundles: &[BundleSource], prelude: Option<&str>) -> Result<&'static [u8], RenderError> {
    let bundles = bundles.to_vec();
    let prelude = prelude.map(str::to_string);
    std::thread::Builder::new()
        .name("mizan-snapshot".into())
        .spawn(move || {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| RenderError::Setup(e.to_string()))?;
            tokio.block_on(build_here(&bundles, prelude.as_deref()))
        })
        .map_err(|e| RenderError::Setup(e.to_string()))?
        .join()
        .map_err(|_| RenderError::Setup("snapshot thread panicked".into()))?
}

async fn build_here(bundles: &[BundleSource], prelude: Option<&str>) -> Result<&'static [u8], RenderError> {
    let mut runtime =
        JsRuntimeForSnapshot::try_new(runtime_options(None)).map_err(|e| RenderError::Setup(error_text(e)))?;
    let loaded = match prelude {
        Some(code) => match runtime.execute_script("ext:mizan/prelude.js", code.to_string()) {
            Ok(_) => load_all(&mut runtime, bundles).await,
            Err(e) => Err(RenderError::Setup(format!(
                "the prelude failed: {}",
                e.stack.as_deref().unwrap_or(&e.exception_message)
            ))),
        },
        None => load_all(&mut runtime, bundles).await,
    };
    // Serialised even when a bundle failed: a snapshot isolate dropped without one is leaked
    // (and V8 says so on stderr, beside the real error).
    let snapshot = runtime.snapshot();
    loaded.map(|()| &*Box::leak(snapshot))
}

/// Evaluates and registers every bundle in the snapshot runtime; leaves no global handle
/// alive (V8 refuses to snapshot while one is).
async fn load_all(runtime: &mut JsRuntimeForSnapshot, bundles: &[BundleSource]) -> Result<(), RenderError> {
    let register = internal_fn(runtime, "register").map_err(RenderError::Setup)?;
    let shape = internal_fn(runtime, "shape").map_err(RenderError::Setup)?;
    call(runtime, &shape, &[]).map_err(RenderError::Setup)?;
    for bundle in bundles {
        let load_error = |message: String| RenderError::BundleLoad { bundle: bundle.name.clone(), message };
        let namespace = match evaluate(runtime, bundle).await {
            Ok(namespace) => namespace,
            // V8 keeps no stack for errors thrown while a snapshot is being made: evaluate
            // the bundle once more in a plain isolate to report the error with its stack.
            Err(first) => {
                let mut plain =
                    JsRuntime::try_new(runtime_options(None)).map_err(|e| RenderError::Setup(error_text(e)))?;
                let message = evaluate(&mut plain, bundle).await.err().unwrap_or(first);
                return Err(load_error(message));
            }
        };
        let name = {
            scope!(scope, runtime);
            let name = v8::String::new(scope, &bundle.name).ok_or_else(|| load_error("name too long".into()))?;
            v8::Global::new(scope, v8::Local::<v8::Value>::from(name))
        };
        let namespace = {
            scope!(scope, runtime);
            let local = v8::Local::new(scope, namespace);
            v8::Global::new(scope, v8::Local::<v8::Value>::from(local))
        };
        call(runtime, &register, &[name, namespace]).map_err(load_error)?;
        // What the bundle's top-level code changed of the globals every bundle shares.
        let changed = call(runtime, &shape, &[]).map_err(RenderError::Setup)?;
        if !changed.is_empty() && bundles.len() > 1 {
            tracing::warn!(
                bundle = %bundle.name,
                changed = %changed,
                "while loading, this bundle changed shared globals; the other bundles of this node see them"
            );
        }
    }
    Ok(())
}

/// Calls `function` with `args`; its result as a string, or the exception's text.
fn call(
    runtime: &mut JsRuntime,
    function: &v8::Global<v8::Function>,
    args: &[v8::Global<v8::Value>],
) -> Result<String, String> {
    scope!(scope, runtime);
    v8::tc_scope!(let scope, scope);
    let function = v8::Local::new(scope, function);
    let args: Vec<v8::Local<v8::Value>> = args.iter().map(|a| v8::Local::new(scope, a)).collect();
    let undefined = v8::undefined(scope).into();
    match function.call(scope, undefined, &args) {
        Some(value) if value.is_undefined() => Ok(String::new()),
        Some(value) => Ok(value.to_rust_string_lossy(scope)),
        None => {
            Err(scope.exception().map(|e| e.to_rust_string_lossy(scope)).unwrap_or_else(|| "the call failed".into()))
        }
    }
}

/// Loads and evaluates `bundle` as an ES module; its namespace object, or the error text.
async fn evaluate(runtime: &mut JsRuntime, bundle: &BundleSource) -> Result<v8::Global<v8::Object>, String> {
    let specifier = ModuleSpecifier::from_file_path(&bundle.path)
        .map_err(|()| format!("{} is not a usable module path", bundle.path.display()))?;
    let id = runtime.load_side_es_module_from_code(&specifier, bundle.code.clone()).await.map_err(error_text)?;
    let evaluation = Box::pin(runtime.mod_evaluate(id));
    runtime.with_event_loop_future(evaluation, PollEventLoopOptions::default()).await.map_err(error_text)?;
    runtime.get_module_namespace(id).map_err(error_text)
}

/// The snapshots of this process, by set of bundles. Two snapshots are never built at once,
/// and pools of one set share one snapshot, built once. Pools of different sets may live side
/// by side (a reload builds the new set's pool while the old one finishes its renders).
///
/// Snapshot bytes must outlive every isolate restored from them, so they are leaked when
/// built; a set's bytes are freed once its last pool is gone and a pool of another set has
/// started since (the set a reload replaced), so that reloads do not leak a snapshot each.
#[derive(Default)]
struct Registry {
    /// Snapshot bytes by set of bundles (names and code hashes), and how many pools of the
    /// set are alive.
    built: std::collections::HashMap<String, (&'static [u8], usize)>,
    /// The set of the pool started last.
    newest: Option<String>,
}

static REGISTRY: std::sync::Mutex<Option<Registry>> = std::sync::Mutex::new(None);

/// Identifies a set of bundles (names and code hashes, in order) and the prelude.
pub(crate) fn family(bundles: &[BundleSource], prelude: Option<&str>) -> String {
    let mut family = bundles.iter().map(|b| format!("{}={}", b.name, b.hash)).collect::<Vec<_>>().join(",");
    if let Some(code) = prelude {
        use sha2::Digest as _;
        family.push_str(&format!(",(prelude={})", hex::encode(&sha2::Sha256::digest(code.as_bytes())[..8])));
    }
    family
}

/// The snapshot of `bundles` for a new pool: the one already built for the same bundles, or a
/// new one. Every successful call is paired with a [`release`] when the pool is gone.
pub(crate) fn acquire(bundles: &[BundleSource], prelude: Option<&str>) -> Result<&'static [u8], RenderError> {
    let family = family(bundles, prelude);
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let registry = registry.get_or_insert_with(Registry::default);
    let bytes = match registry.built.get_mut(&family) {
        Some((bytes, pools)) => {
            *pools += 1;
            *bytes
        }
        // Built under the registry's lock: never two snapshots at once.
        None => {
            let bytes = build_with(bundles, prelude)?;
            registry.built.insert(family.clone(), (bytes, 1));
            bytes
        }
    };
    if registry.newest.as_ref() != Some(&family) {
        let replaced = registry.newest.replace(family);
        if let Some(replaced) = replaced {
            free_if_unused(registry, &replaced);
        }
    }
    Ok(bytes)
}

/// A pool of `family` is gone.
pub(crate) fn release(family: &str) {
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let Some(registry) = registry.as_mut() else { return };
    if let Some((_, pools)) = registry.built.get_mut(family) {
        *pools = pools.saturating_sub(1);
    }
    if registry.newest.as_deref() != Some(family) {
        free_if_unused(registry, family);
    }
}

/// Frees the bytes of `family` if no pool uses them (a set that is not the newest: the newest
/// keeps its bytes for the next pool of the same bundles).
fn free_if_unused(registry: &mut Registry, family: &str) {
    if let Some(&(bytes, 0)) = registry.built.get(family) {
        registry.built.remove(family);
        // SAFETY: `bytes` was leaked from a `Box<[u8]>` by `build_here` and handed out only to
        // pools of `family`, counted in `built`; the count is zero, so no pool, and no isolate
        // restored from these bytes, is alive, and none will be: the entry is gone.
        drop(unsafe { Box::from_raw(bytes as *const [u8] as *mut [u8]) });
    }
}
