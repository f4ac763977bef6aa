//! One render isolate: a `JsRuntime` restored from the app snapshot, and the calls into the
//! bootstrap's `__mizan` table (`register`, `init`, `render`, `renderStream` and `pump`).
//!
//! Isolates are `!Send`: each lives and dies on one worker thread, inside that thread's
//! tokio runtime (V8 posts delayed tasks onto it).

use super::RenderError;
use crate::abi::{RawHead, Rendered};
use crate::js;
use crate::js::ext::ChunkSink;
use deno_core::error::{CoreError, CoreErrorKind};
use deno_core::{JsRuntime, PollEventLoopOptions, RuntimeOptions, scope, v8};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Options of every render isolate: restored from the app `snapshot`, or none to build it.
pub(crate) fn runtime_options(snapshot: Option<&'static [u8]>) -> RuntimeOptions {
    js::init_v8();
    RuntimeOptions {
        startup_snapshot: snapshot,
        extensions: js::extensions(),
        module_loader: Some(std::rc::Rc::new(super::loader::Refuse)),
        ..Default::default()
    }
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
        CoreErrorKind::Js(js) => {
            let mut text = js.stack.clone().unwrap_or_else(|| js.exception_message.clone());
            // A syntax error has no stack, only where V8 stopped parsing: name it like a frame,
            // with the source line, so the file, line and column are in the message.
            if !text.contains("\n    at ")
                && let Some(frame) = js.frames.first()
                && let (Some(file), Some(line)) = (&frame.file_name, frame.line_number)
            {
                text.push_str(&format!("\n    at {file}:{line}:{}", frame.column_number.unwrap_or(0)));
                if let Some(source) = &js.source_line {
                    text.push_str(&format!("\n    {}", source.trim_end()));
                }
            }
            text
        }
        other => other.to_string(),
    }
}

/// A render isolate, ready to render the bundles of its snapshot (the pool gives each bundle
/// a snapshot and isolates of its own). Public for embedders and benchmarks that drive one
/// directly. `!Send`: create and use it on one thread, inside a tokio runtime.
///
/// Between two renders nothing of the first runs: when a render settles, the microtasks it
/// queued run, the timers it left are cancelled, and if anything is still pending (an op, a
/// message port) the isolate is marked [`Isolate::tainted`] for the pool to replace.
pub struct Isolate {
    runtime: JsRuntime,
    render_fn: v8::Global<v8::Function>,
    stream_fn: v8::Global<v8::Function>,
    pump_fn: v8::Global<v8::Function>,
    settle_fn: v8::Global<v8::Function>,
    handle: v8::IsolateHandle,
    /// The bundle has `renderStream(input)`.
    streams: bool,
    /// Renders done by this isolate, for recycling.
    pub(crate) renders: u64,
    /// A render left work behind that could run during the next one: replace the isolate.
    pub(crate) tainted: bool,
    /// Set when a render reached the heap limit and was terminated.
    heap_exceeded: std::rc::Rc<std::cell::Cell<bool>>,
    max_heap: usize,
}

impl Isolate {
    /// Restores an isolate from an app `snapshot` ([`super::snapshot::build`]) that renders
    /// `bundle` alone, with at most `max_heap` bytes of JS heap: a render that needs more is
    /// terminated.
    pub fn new(snapshot: &'static [u8], bundle: &str, max_heap: usize) -> Result<Self, RenderError> {
        let options = RuntimeOptions { create_params: Some(heap_params(max_heap)), ..runtime_options(Some(snapshot)) };
        let mut runtime = JsRuntime::try_new(options).map_err(|e| RenderError::Setup(error_text(e)))?;
        let heap_exceeded = std::rc::Rc::new(std::cell::Cell::new(false));
        let (flag, handle) = (heap_exceeded.clone(), runtime.v8_isolate().thread_safe_handle());
        runtime.add_near_heap_limit_callback(move |current, initial| {
            // Once: terminate the render and grant room for V8 to unwind it; the isolate is
            // replaced after. A later call (the unwinding itself near the raised limit) gets
            // no more than that one grant, so a render cannot ratchet the heap up.
            if !flag.replace(true) {
                handle.terminate_execution();
                return current * 2;
            }
            current.max(initial * 2)
        });
        let init = internal_fn(&mut runtime, "init").map_err(RenderError::Setup)?;
        let render_fn = internal_fn(&mut runtime, "render").map_err(RenderError::Setup)?;
        let stream_fn = internal_fn(&mut runtime, "renderStream").map_err(RenderError::Setup)?;
        let pump_fn = internal_fn(&mut runtime, "pump").map_err(RenderError::Setup)?;
        let settle_fn = internal_fn(&mut runtime, "settle").map_err(RenderError::Setup)?;
        let handle = runtime.v8_isolate().thread_safe_handle();
        let streams = {
            scope!(scope, &mut runtime);
            let init = v8::Local::new(scope, init);
            let undefined = v8::undefined(scope).into();
            let name =
                v8::String::new(scope, bundle).ok_or_else(|| RenderError::Setup("bundle name too long".into()))?;
            init.call(scope, undefined, &[name.into()])
                .ok_or_else(|| RenderError::Setup(format!("__mizan.init(\"{bundle}\") threw")))?
                .is_true()
        };
        // Entered only while it renders: a worker holds one isolate per bundle on one thread.
        // SAFETY: the constructor left this isolate entered on this thread; it is exited
        // once, here, and every later use enters and exits it in LIFO order ([`Entered`]).
        unsafe { runtime.v8_isolate().exit() };
        Ok(Self {
            runtime,
            render_fn,
            stream_fn,
            pump_fn,
            settle_fn,
            handle,
            streams,
            renders: 0,
            tainted: false,
            heap_exceeded,
            max_heap,
        })
    }

    /// A handle another thread can stop this isolate's JavaScript with.
    pub(crate) fn handle(&self) -> &v8::IsolateHandle {
        &self.handle
    }

    /// Whether its bundle can stream a page ([`Isolate::render_stream`]): its default export
    /// has `renderStream(input)`.
    pub fn streams(&self) -> bool {
        self.streams
    }

    /// Whether a render left work behind (see [`Isolate`]); such an isolate must not render
    /// again.
    pub fn tainted(&self) -> bool {
        self.tainted
    }

    /// Runs what the last render queued and cancels what it scheduled, so nothing of it runs
    /// during the next render; marks the isolate tainted if anything is still pending.
    fn settle(&mut self) {
        let cancelled = {
            scope!(scope, &mut self.runtime);
            scope.perform_microtask_checkpoint();
            let settle = v8::Local::new(scope, &self.settle_fn);
            let undefined = v8::undefined(scope).into();
            settle.call(scope, undefined, &[]).and_then(|n| n.uint32_value(scope))
        };
        match cancelled {
            None => self.tainted = true,
            Some(0) => {}
            Some(n) => tracing::debug!(timers = n, "cancelled the timers a render left behind"),
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.runtime.poll_event_loop(&mut cx, PollEventLoopOptions::default()) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => {
                tracing::warn!(error = %error_text(e), "a render left a failing task behind; the isolate is replaced");
                self.tainted = true;
            }
            Poll::Pending => {
                tracing::debug!("a render left work pending; the isolate is replaced");
                self.tainted = true;
            }
        }
    }

    /// Renders `page` of `bundle`; `input_json` is the ABI input as JSON text
    /// ([`crate::abi::input_json`]).
    pub async fn render(&mut self, bundle: &str, page: &str, input_json: &str) -> Result<Rendered, RenderError> {
        let _entered = Entered::new(self.runtime.v8_isolate());
        self.renders += 1;
        let started = Instant::now();
        let args = self.args(bundle, input_json)?;
        let call = self.runtime.call_with_args(&self.render_fn, &args);
        let value = self.runtime.with_event_loop_promise(call, PollEventLoopOptions::default()).await;
        let value = value.map_err(|e| self.failed(bundle, page, e))?;
        let elapsed = started.elapsed();
        self.settle();
        scope!(scope, &mut self.runtime);
        let local = v8::Local::new(scope, value);
        let bad = |message: String| RenderError::BadOutput {
            bundle: bundle.into(),
            page: page.into(),
            message: format!("render() must resolve to {{ status, headers, html }}: {message}"),
        };
        let raw: RawHead = serde_v8::from_v8(scope, local).map_err(|e| bad(e.to_string()))?;
        let html = v8::Local::<v8::Object>::try_from(local)
            .ok()
            .and_then(|object| {
                let key = v8::String::new(scope, "html")?;
                object.get(scope, key.into())
            })
            .and_then(|html| v8::Local::<v8::String>::try_from(html).ok())
            .ok_or_else(|| bad("html is not a string".into()))?;
        let html = utf8(scope, html);
        let status = http_status(raw.status, bundle, page)?;
        Ok(Rendered { status, headers: raw.headers.into_vec(), html, elapsed })
    }

    /// Renders `page` of `bundle` with the bundle's `renderStream(input)`: calls `head` with
    /// the status and headers once they are known, then `chunk` with each piece of the body
    /// as the bundle produces it, while the page still renders (the isolate stays entered
    /// until the body ends). Returns the time spent inside the isolate. A failure after some
    /// chunks is returned after them: the body is then incomplete. The rules of
    /// [`Isolate::render`] hold: what the render left behind is settled when the body ends.
    /// `chunk` returns `false` when nobody reads the body any more: the render stops (failed).
    pub async fn render_stream(
        &mut self,
        bundle: &str,
        page: &str,
        input_json: &str,
        head: impl FnOnce(u16, Vec<(String, String)>),
        chunk: impl FnMut(&[u8]) -> bool + 'static,
    ) -> Result<Duration, RenderError> {
        let _entered = Entered::new(self.runtime.v8_isolate());
        self.renders += 1;
        let started = Instant::now();
        let args = self.args(bundle, input_json)?;
        let call = self.runtime.call_with_args(&self.stream_fn, &args);
        let result = self.runtime.with_event_loop_promise(call, PollEventLoopOptions::default()).await;
        let result = result.map_err(|e| self.failed(bundle, page, e))?;
        let raw: RawHead = {
            scope!(scope, &mut self.runtime);
            let local = v8::Local::new(scope, &result);
            serde_v8::from_v8(scope, local).map_err(|e| RenderError::BadOutput {
                bundle: bundle.into(),
                page: page.into(),
                message: format!("renderStream() must resolve to {{ status, headers, body }}: {e}"),
            })?
        };
        head(http_status(raw.status, bundle, page)?, raw.headers.into_vec());
        // The sink lives in the op state for this render only; a render cut short (deadline)
        // leaves it there, but such an isolate is replaced, never used again.
        let state = self.runtime.op_state();
        state.borrow_mut().put(ChunkSink(Box::new(chunk)));
        let pump = self.runtime.call_with_args(&self.pump_fn, &[result]);
        let pumped = self.runtime.with_event_loop_promise(pump, PollEventLoopOptions::default()).await;
        state.borrow_mut().try_take::<ChunkSink>();
        pumped.map_err(|e| self.failed(bundle, page, e))?;
        let elapsed = started.elapsed();
        self.settle();
        Ok(elapsed)
    }

    /// The bundle name and the input as the bootstrap's render functions take them.
    fn args(&mut self, bundle: &str, input_json: &str) -> Result<[v8::Global<v8::Value>; 2], RenderError> {
        scope!(scope, &mut self.runtime);
        let name = v8::String::new(scope, bundle).ok_or_else(|| RenderError::Setup("bundle name too long".into()))?;
        let input = v8::String::new(scope, input_json)
            .ok_or_else(|| RenderError::Setup("render input exceeds V8's string limit".into()))?;
        Ok([
            v8::Global::new(scope, v8::Local::<v8::Value>::from(name)),
            v8::Global::new(scope, v8::Local::<v8::Value>::from(input)),
        ])
    }

    /// What a render that threw, rejected or was terminated failed with.
    fn failed(&self, bundle: &str, page: &str, error: CoreError) -> RenderError {
        if self.heap_exceeded.get() {
            RenderError::HeapLimit { bundle: bundle.into(), page: page.into(), mib: self.max_heap >> 20 }
        } else {
            RenderError::Js { bundle: bundle.into(), page: page.into(), message: error_text(error) }
        }
    }
}

/// `string` as UTF-8 (lone surrogates as U+FFFD). V8's own `WriteUtf8` encodes a two-byte
/// string one character at a time, and a page holding one character past Latin-1 is all
/// two-byte; this encodes runs of ASCII with SIMD, which is most of any HTML. It encodes into a
/// scratch buffer of the worst case's size, then copies what it wrote into a string of its
/// exact size: a page body keeps no spare capacity (the cache counts what it stores).
fn utf8(isolate: &mut v8::Isolate, string: v8::Local<v8::String>) -> String {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// A scratch buffer larger than this (a page of over 5 M characters) is not kept between
    /// renders.
    const KEEP: usize = 16 << 20;
    let view = v8::ValueView::new(isolate, string);
    SCRATCH.with_borrow_mut(|scratch| {
        let written = match view.data() {
            v8::ValueViewData::OneByte(latin1) => {
                scratch.resize(scratch.len().max(latin1.len() * 2), 0);
                encoding_rs::mem::convert_latin1_to_utf8(latin1, scratch)
            }
            v8::ValueViewData::TwoByte(utf16) => {
                scratch.resize(scratch.len().max(utf16.len() * 3), 0);
                encoding_rs::mem::convert_utf16_to_utf8(utf16, scratch)
            }
        };
        // encoding_rs writes UTF-8 only; checking it again is a word-at-a-time scan.
        let text = std::str::from_utf8(&scratch[..written])
            .map_or_else(|_| String::from_utf8_lossy(&scratch[..written]).into_owned(), str::to_owned);
        if scratch.len() > KEEP {
            *scratch = Vec::new();
        }
        text
    })
}

/// A status a bundle answered, checked: an HTTP status (100–599).
fn http_status(status: u32, bundle: &str, page: &str) -> Result<u16, RenderError> {
    u16::try_from(status).ok().filter(|s| (100..=599).contains(s)).ok_or_else(|| RenderError::BadOutput {
        bundle: bundle.into(),
        page: page.into(),
        message: format!("status {status} is not an HTTP status"),
    })
}

impl Drop for Isolate {
    fn drop(&mut self) {
        // rusty_v8 exits the isolate as it disposes it, so it must be the entered one.
        // SAFETY: at rest no isolate of this thread is entered (see `Isolate::new`); entering
        // this one makes it current for its own disposal, which exits it.
        unsafe { self.runtime.v8_isolate().enter() };
    }
}

/// Keeps an isolate entered on this thread for as long as it lives, including when a render
/// future is dropped half-way (a deadline): V8 needs the isolate it runs to be the current one,
/// and a worker thread holds several.
struct Entered(*mut v8::Isolate);

impl Entered {
    fn new(isolate: &mut v8::Isolate) -> Self {
        // SAFETY: the isolate outlives the guard (the guard lives inside a `&mut self`
        // method of its owner), and entries nest LIFO on this thread.
        unsafe { isolate.enter() };
        Self(isolate)
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: see `Entered::new`; this exits the entry `new` made.
        unsafe { (*self.0).exit() };
    }
}
