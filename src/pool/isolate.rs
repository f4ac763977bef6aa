//! One render isolate: a `JsRuntime` restored from the app snapshot, and the calls into the
//! bootstrap's `__mizan` table (`register`, `init`, `render`).
//!
//! Isolates are `!Send`: each lives and dies on one worker thread, inside that thread's
//! tokio runtime (V8 posts delayed tasks onto it).

use super::RenderError;
use crate::abi::{RawRendered, Rendered};
use crate::js;
use deno_core::error::{CoreError, CoreErrorKind};
use deno_core::{JsRuntime, PollEventLoopOptions, RuntimeOptions, scope, v8};
use std::time::Instant;

/// Options of every render isolate: restored from the app `snapshot`, or none to build it.
pub(crate) fn runtime_options(snapshot: Option<&'static [u8]>) -> RuntimeOptions {
    RuntimeOptions { startup_snapshot: snapshot, extensions: js::extensions(), ..Default::default() }
}

/// Heap of an isolate that renders, in bytes.
fn heap_params(max_heap: usize) -> v8::CreateParams {
    v8::Isolate::create_params().heap_limits(0, max_heap)
}

/// A function of the bootstrap's `globalThis.__mizan` table.
pub(crate) fn internal_fn(rt: &mut JsRuntime, name: &'static str) -> Result<v8::Global<v8::Function>, String> {
    let value =
        rt.execute_script("ext:mizan/internal", format!("globalThis.__mizan.{name}")).map_err(|e| e.to_string())?;
    scope!(scope, rt);
    let local = v8::Local::new(scope, value);
    let function =
        v8::Local::<v8::Function>::try_from(local).map_err(|_| format!("__mizan.{name} is not a function"))?;
    Ok(v8::Global::new(scope, function))
}

/// Text of a JS error with its stack, or of another runtime error.
pub(crate) fn error_text(error: CoreError) -> String {
    match *error.0 {
        // `.stack` is the error's own text and frames ("Error: boom\n    at f (file:///…)").
        CoreErrorKind::Js(js) => js.stack.clone().unwrap_or_else(|| js.to_string()),
        other => other.to_string(),
    }
}

/// A render isolate, ready to render any bundle of its snapshot. The pool owns one per
/// worker thread; it is public for embedders and benchmarks that drive one directly.
/// `!Send`: create and use it on one thread, inside a tokio runtime.
pub struct Isolate {
    runtime: JsRuntime,
    render_fn: v8::Global<v8::Function>,
    /// Renders done by this isolate, for recycling.
    pub(crate) renders: u64,
    /// Set when a render reached the heap limit and was terminated.
    heap_exceeded: std::rc::Rc<std::cell::Cell<bool>>,
    max_heap: usize,
}

impl Isolate {
    /// Restores an isolate from an app `snapshot` ([`super::snapshot::build`]), with at most
    /// `max_heap` bytes of JS heap: a render that needs more is terminated.
    pub fn new(snapshot: &'static [u8], max_heap: usize) -> Result<Self, RenderError> {
        let options = RuntimeOptions { create_params: Some(heap_params(max_heap)), ..runtime_options(Some(snapshot)) };
        let mut runtime = JsRuntime::try_new(options).map_err(|e| RenderError::Setup(error_text(e)))?;
        let heap_exceeded = std::rc::Rc::new(std::cell::Cell::new(false));
        let (flag, handle) = (heap_exceeded.clone(), runtime.v8_isolate().thread_safe_handle());
        runtime.add_near_heap_limit_callback(move |current, _initial| {
            flag.set(true);
            handle.terminate_execution();
            // Room for V8 to unwind the terminated script; the isolate is replaced after.
            current * 2
        });
        let init = internal_fn(&mut runtime, "init").map_err(RenderError::Setup)?;
        let render_fn = internal_fn(&mut runtime, "render").map_err(RenderError::Setup)?;
        {
            scope!(scope, &mut runtime);
            let init = v8::Local::new(scope, init);
            let undefined = v8::undefined(scope).into();
            init.call(scope, undefined, &[]).ok_or_else(|| RenderError::Setup("__mizan.init() threw".into()))?;
        }
        Ok(Self { runtime, render_fn, renders: 0, heap_exceeded, max_heap })
    }

    /// A handle another thread can stop this isolate's JavaScript with.
    pub(crate) fn handle(&mut self) -> v8::IsolateHandle {
        self.runtime.v8_isolate().thread_safe_handle()
    }

    /// Renders `page` of `bundle`; `input_json` is the ABI input as JSON text
    /// ([`crate::abi::input_json`]).
    pub async fn render(&mut self, bundle: &str, page: &str, input_json: &str) -> Result<Rendered, RenderError> {
        self.renders += 1;
        let started = Instant::now();
        let args = {
            scope!(scope, &mut self.runtime);
            let name =
                v8::String::new(scope, bundle).ok_or_else(|| RenderError::Setup("bundle name too long".into()))?;
            let input = v8::String::new(scope, input_json)
                .ok_or_else(|| RenderError::Setup("render input exceeds V8's string limit".into()))?;
            [
                v8::Global::new(scope, v8::Local::<v8::Value>::from(name)),
                v8::Global::new(scope, v8::Local::<v8::Value>::from(input)),
            ]
        };
        let call = self.runtime.call_with_args(&self.render_fn, &args);
        let value = self.runtime.with_event_loop_promise(call, PollEventLoopOptions::default()).await.map_err(|e| {
            if self.heap_exceeded.get() {
                RenderError::HeapLimit { bundle: bundle.into(), page: page.into(), mib: self.max_heap >> 20 }
            } else {
                RenderError::Js { bundle: bundle.into(), page: page.into(), message: error_text(e) }
            }
        })?;
        let elapsed = started.elapsed();
        scope!(scope, &mut self.runtime);
        let local = v8::Local::new(scope, value);
        let raw: RawRendered = serde_v8::from_v8(scope, local).map_err(|e| RenderError::BadOutput {
            bundle: bundle.into(),
            page: page.into(),
            message: format!("render() must resolve to {{ status, headers, html }}: {e}"),
        })?;
        let status = u16::try_from(raw.status).ok().filter(|s| (100..=599).contains(s)).ok_or_else(|| {
            RenderError::BadOutput {
                bundle: bundle.into(),
                page: page.into(),
                message: format!("status {} is not an HTTP status", raw.status),
            }
        })?;
        Ok(Rendered { status, headers: raw.headers.into_vec(), html: raw.html, elapsed })
    }
}
