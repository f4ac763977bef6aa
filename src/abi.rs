//! The bundle ABI: what crosses from Rust into a framework SSR bundle and back.
//!
//! A bundle is an ES module whose default export has `render(input)`, resolving to
//! `{ status, headers, html }`, and optionally `renderStream(input)`, resolving to
//! `{ status, headers, body }` with `body` a `ReadableStream` of the document's bytes. The same bundle runs unchanged in our isolates, in Node and in
//! workerd; `docs/bundle-abi.md` is the normative description.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// The input of one page render, minus the page name (see [`crate::pool::Pool::render`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PageInput {
    /// The normalised request path and the canonical declared query, e.g.
    /// `/products/42?tab=specs`: never an undeclared query parameter, which would otherwise
    /// be stored into a page every later visitor gets.
    pub url: String,
    /// The manifest route pattern that matched, e.g. `/products/:id`.
    pub route: String,
    /// Route parameters, typed by the context params schema (`{"id": 42}`).
    pub params: Map<String, Value>,
    /// The query parameters the route declares; others never reach the bundle. A repeated
    /// name gives its first value in canonical order (sorted), as the page key holds it.
    pub query: Map<String, Value>,
    /// The request headers the route declares in `vary` (lower-case names, values trimmed
    /// with inner whitespace collapsed), the only headers a shared page may depend on.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, Value>,
    /// Data the origin answered for each dependency, prefetched before the render.
    pub data: Vec<DependencyData>,
    /// Errors the origin answered for a dependency; the page renders its `DjangoError` state.
    pub errors: Vec<DependencyError>,
    /// URLs of the bundle's assets the page references, e.g. `{"client": "/_mizan/assets/..."}`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub assets: Map<String, Value>,
}

/// One prefetched dependency: `useMizan(context, params)` returns `data`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DependencyData {
    /// The origin context name, e.g. `product_detail`.
    pub context: String,
    /// Its params object.
    pub params: Map<String, Value>,
    /// What the origin answered under `data`, as JSON text.
    pub data: RawJson,
}

/// A JSON value held as its text. Data the cache holds as bytes goes into the render input as
/// it is: checked to be one JSON value (a scan, not a parse into a tree), never built into a
/// [`Value`] and written out again on every miss.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    /// `text` if it is exactly one JSON value; else the parser's error.
    pub fn from_text(text: String) -> serde_json::Result<Self> {
        serde_json::value::RawValue::from_string(text).map(Self)
    }

    /// `bytes` if they are UTF-8 text of exactly one JSON value.
    pub fn from_bytes(bytes: &[u8]) -> serde_json::Result<Self> {
        let text = std::str::from_utf8(bytes).map_err(|e| serde::de::Error::custom(format!("not UTF-8: {e}")))?;
        Self::from_text(text.to_owned())
    }

    /// The text of `value` (written, not checked again).
    pub fn from_value(value: &Value) -> serde_json::Result<Self> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The value, parsed (for tests and tools; the render path never needs it).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.get()).unwrap_or(Value::Null)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// One dependency the origin answered with an error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DependencyError {
    /// The origin context name.
    pub context: String,
    /// Its params object.
    pub params: Map<String, Value>,
    /// The error, as the origin protocol carries it.
    pub error: OriginError,
}

/// An error body of the origin protocol: `{"type": "...", "status": 404, "message": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OriginError {
    /// A machine-readable name, such as `NotFound` or `PermissionDenied`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status the origin answered.
    pub status: u16,
    /// A human-readable message.
    pub message: String,
}

/// The JSON text a bundle's `render(input)` receives: `input` plus the page name.
pub fn input_json(page: &str, input: &PageInput) -> serde_json::Result<String> {
    #[derive(Serialize)]
    struct Envelope<'a> {
        page: &'a str,
        #[serde(flatten)]
        input: &'a PageInput,
    }
    serde_json::to_string(&Envelope { page, input })
}

/// A rendered page.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The HTTP status the bundle chose (200, or that of an origin error).
    pub status: u16,
    /// Response headers the bundle set, in order.
    pub headers: Vec<(String, String)>,
    /// The whole HTML document.
    pub html: String,
    /// Time spent inside the isolate, from the call to the settled promise.
    pub elapsed: Duration,
}

/// The status and headers `render()` and `renderStream()` resolve with (the `html` or `body`
/// beside them is read apart).
#[derive(Debug, Deserialize)]
pub(crate) struct RawHead {
    #[serde(default = "ok_status")]
    pub status: u32,
    #[serde(default)]
    pub headers: RawHeaders,
}

fn ok_status() -> u32 {
    200
}

/// Headers as a list of `[name, value]` pairs or as an object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawHeaders {
    List(Vec<(String, String)>),
    Map(std::collections::BTreeMap<String, String>),
}

impl Default for RawHeaders {
    fn default() -> Self {
        RawHeaders::List(Vec::new())
    }
}

impl RawHeaders {
    pub fn into_vec(self) -> Vec<(String, String)> {
        match self {
            RawHeaders::List(list) => list,
            RawHeaders::Map(map) => map.into_iter().collect(),
        }
    }
}
