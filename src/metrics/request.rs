//! What one request carries besides itself: its id (`X-Request-Id`), which reaches the origin
//! on every fetch made for it, and the facts its access log line and metrics need (route,
//! cache state, render and origin time), noted by the code that learns them.
//!
//! Both live in a task-local the HTTP layer sets around the request ([`scope`]), so nothing
//! is threaded through signatures and nothing is allocated. A render flight runs as its own
//! task: it is started with [`propagate`], so the origin sees the id of the request that
//! started it (the leader's, for requests coalesced on it). Outside a request (prerendering,
//! a test calling the node) every note is a no-op and there is no id.

use crate::node::page::CacheState;
use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The longest request id taken from a client.
pub const MAX_ID_LEN: usize = 64;

/// A request id: 1 to 64 of `A-Z a-z 0-9 . _ : -`, taken from the request's `X-Request-Id`,
/// or 16 random hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    bytes: [u8; MAX_ID_LEN],
    len: u8,
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RequestId {
    /// `raw` as an id if it is well-formed: not empty, at most 64 bytes, only
    /// `A-Z a-z 0-9 . _ : -` (no space, no CR or LF, nothing a log or a header could misread).
    pub fn parse(raw: &[u8]) -> Option<Self> {
        let ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        if raw.is_empty() || raw.len() > MAX_ID_LEN || !raw.iter().all(ok) {
            return None;
        }
        let mut bytes = [0; MAX_ID_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(Self { bytes, len: raw.len() as u8 })
    }

    /// A new id: 16 random hex digits.
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0; MAX_ID_LEN];
        let n = fastrand::u64(..);
        for (i, byte) in bytes[..16].iter_mut().enumerate() {
            *byte = HEX[(n >> (60 - 4 * i) & 0xf) as usize];
        }
        Self { bytes, len: 16 }
    }

    /// The id of a request whose `X-Request-Id` is `header`: it when well-formed, else new.
    pub fn from_header(header: Option<&http::HeaderValue>) -> Self {
        header.and_then(|v| Self::parse(v.as_bytes())).unwrap_or_else(Self::generate)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }

    /// The id as a header value.
    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.bytes[..self.len as usize])
            .unwrap_or_else(|_| http::HeaderValue::from_static("-"))
    }
}

/// The `route` label of a request.
#[derive(Debug, Clone)]
pub enum Label {
    /// A route pattern of the manifest.
    Route(Arc<str>),
    /// `proxy`, an endpoint of the node.
    Fixed(&'static str),
}

impl Label {
    /// The label's text.
    pub fn as_str(&self) -> &str {
        match self {
            Label::Route(route) => route,
            Label::Fixed(name) => name,
        }
    }
}

/// What the pipeline learned about one request, for its log line and metrics.
#[derive(Debug, Default)]
pub struct Facts {
    /// Its route, when it has one.
    pub route: Option<Label>,
    /// How its page was served.
    pub cache: Option<CacheState>,
    /// Time its page's render spent in the isolate (a page rendered for it or for the flight
    /// it joined).
    pub render: Option<Duration>,
    /// The longest origin fetch its page waited for.
    pub origin: Option<Duration>,
}

/// Facts noted while the request runs.
#[derive(Default)]
struct Noted {
    route: Cell<Option<Label>>,
    cache: Cell<Option<CacheState>>,
    render: Cell<Option<Duration>>,
    origin: Cell<Option<Duration>>,
}

/// What a request's task carries: its id and the facts noted about it.
pub struct Scope {
    id: RequestId,
    noted: Noted,
}

impl Scope {
    fn new(id: RequestId) -> Self {
        Self { id, noted: Noted::default() }
    }

    /// The facts noted while the request ran.
    pub fn into_facts(self) -> Facts {
        let n = self.noted;
        Facts { route: n.route.into_inner(), cache: n.cache.get(), render: n.render.get(), origin: n.origin.get() }
    }
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// A request's future, run as the request with an id: take its [`Scope`] back when it is
/// done (`take_value`) for the facts.
pub type Scoped<F> = tokio::task::futures::TaskLocalFuture<Scope, F>;

/// Runs `request` as the request with `id`.
pub fn scope<F: Future>(id: RequestId, request: F) -> Scoped<F> {
    SCOPE.scope(Scope::new(id), request)
}

/// The id of the request being served, if any.
pub fn current() -> Option<RequestId> {
    SCOPE.try_with(|scope| scope.id).ok()
}

/// `work`, to be spawned as a task of its own, under the current request's id (what it notes
/// is not the request's: a flight serves several).
pub fn propagate<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let id = current();
    async move {
        match id {
            Some(id) => SCOPE.scope(Scope::new(id), work).await,
            None => work.await,
        }
    }
}

fn note(f: impl FnOnce(&Noted)) {
    let _ = SCOPE.try_with(|scope| f(&scope.noted));
}

/// Notes the request's route.
pub fn note_route(route: Label) {
    note(|n| n.route.set(Some(route)));
}

/// Notes how the request's page was served.
pub fn note_cache(state: CacheState) {
    note(|n| n.cache.set(Some(state)));
}

/// Notes the render and origin time behind the request's page.
pub fn note_work(render: Option<Duration>, origin: Option<Duration>) {
    note(|n| {
        n.render.set(render);
        n.origin.set(origin);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_ids_are_taken() {
        assert_eq!(RequestId::parse(b"req-1.2:3_X").unwrap().as_str(), "req-1.2:3_X");
        assert!(RequestId::parse(&[b'a'; 64]).is_some());
        for bad in [&b""[..], &[b'a'; 65], b"a b", b"a\r\nSet-Cookie: x", b"caf\xc3\xa9", b"a/b", b"<script>"] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?}");
        }
        let made = RequestId::generate();
        assert_eq!(made.as_str().len(), 16);
        assert!(made.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(made, RequestId::generate());
    }
}
