//! Streaming misses: the flight of a route that asks to stream (`"stream": true`), and the
//! page body it fills while the render runs ([`LiveBody`]), shared by every request of the
//! flight: each reader gets the bytes produced so far, then the rest as they come, then the
//! end: complete, or aborted if the render failed (the response is then cut, never ended as
//! complete). The whole page is stored when the body is complete, never after a failure.
//!
//! One `tokio::sync::watch` holds the chunks and the end: the flight appends, readers keep
//! their own position and wait for the next change, so a reader that joins late or reads
//! slowly misses nothing and never holds the render up.

use super::Node;
use super::coalesce::Pilot;
use super::lock::Keep;
use super::page::{Flown, PageError, PageOutcome, Provenance, Sharing, Target, Timing};
use super::render::{Rendering, etag, shareable};
use crate::cache::Entry;
use bytes::Bytes;
use futures_util::Stream;
use std::sync::Arc;
use tokio::sync::watch;

impl Node {
    /// A streaming flight: renders `target`'s page with its bundle's `renderStream`, answers
    /// the flight's callers as soon as the head (status, headers) is known, with the body to
    /// read as it comes; when the body is complete, stores the whole page (same metadata and
    /// entity tag as a buffered render), leaves the table, then ends the body. A render that
    /// fails after its head is never stored: the flight leaves the table, then aborts the body.
    /// Under the page's render lock, as a buffered flight ([`super::lock`]).
    pub(super) async fn stream_and_store(
        self: Arc<Self>,
        target: Arc<Target>,
        pilot: Pilot<PageOutcome>,
        keep: Keep,
    ) -> PageOutcome {
        let route = &self.manifest.routes[target.matched.index];
        // Another node's render comes whole, from the store (a node cannot stream it).
        let lock = match self.claim_or_answer(&target, keep).await {
            Ok(lock) => lock,
            Err(answer) => return Ok(answer),
        };
        let generations = self.generations(&target).await;
        let prepared = self.prepare(&target, generations.as_ref(), Vec::new()).await.map_err(Arc::new)?;
        let _slot = self.render_slot(&target).await.map_err(Arc::new)?;
        let options = self.render_options(&target);
        let started = self.pool.render_stream_with(&route.bundle, &route.page, &prepared.input, options).await;
        let mut stream = started.inspect_err(|e| self.record(&target, Some(e))).map_err(|e| Arc::new(e.into()))?;
        let headers = std::mem::take(&mut stream.headers);
        let rendering = Rendering { status: stream.status, headers, body: Bytes::new(), elapsed: None };
        let (head, sharing) = self.page_entry(&target.key, &target, rendering, prepared.lifetimes, generations);
        let head = shareable(head);
        let live = Arc::new(LiveBody::default());
        let timing = Timing { render: None, origin: prepared.origin };
        let provenance = Provenance::Rendered;
        pilot.answer(Ok(Flown { page: head.clone(), sharing, live: Some(live.clone()), timing, provenance }));
        let failed = loop {
            match stream.next_chunk().await {
                Ok(Some(chunk)) => live.push(chunk),
                Ok(None) => break None,
                Err(error) => break Some(error),
            }
        };
        self.record(&target, failed.as_ref());
        if let Some(error) = failed {
            // Out of the table first: a visitor who retries at once renders anew.
            pilot.land();
            live.abort();
            tracing::warn!(key = %target.key, %error, "a streaming render failed after its head; the response is cut, nothing is stored");
            return Err(Arc::new(PageError::Render(error)));
        }
        let mut page = Entry { body: live.so_far(), meta: head.meta.clone() };
        page.meta.etag = Some(etag(&page.body));
        page.meta.created_at = self.clock.now();
        if let Some(render) = &mut page.meta.render {
            render.ms = stream.elapsed().unwrap_or_default().as_secs_f64() * 1e3;
        }
        if let Some(elapsed) = stream.elapsed() {
            self.metrics.route(&route.path).render.record(elapsed);
        }
        if sharing == Sharing::Stored {
            self.store_page(&page, lock).await;
        }
        // Stored, then out of the table, then the body ends: a visitor who asks again once
        // the page is whole finds it in the cache.
        pilot.land();
        live.complete();
        let timing = Timing { render: stream.elapsed(), ..timing };
        Ok(Flown { page: Arc::new(page), sharing, live: None, timing, provenance })
    }
}

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Aborted,
}

#[derive(Debug, Default)]
struct Progress {
    chunks: Vec<Bytes>,
    end: Option<End>,
}

/// Why a reader's body ends before it is complete.
#[derive(Debug, thiserror::Error)]
#[error("the page's render failed after its first bytes were sent")]
pub struct Aborted;

/// The body of a page in flight. The flight writes it ([`LiveBody::push`], then
/// [`LiveBody::complete`] or [`LiveBody::abort`]); requests read it ([`LiveBody::reader`]).
/// Dropped by the flight without an end, it reads as aborted.
#[derive(Debug)]
pub struct LiveBody {
    progress: watch::Sender<Progress>,
}

impl Default for LiveBody {
    fn default() -> Self {
        Self { progress: watch::Sender::new(Progress::default()) }
    }
}

impl LiveBody {
    /// Appends the next bytes and wakes the readers.
    pub fn push(&self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.progress.send_modify(|p| p.chunks.push(chunk));
        }
    }

    /// The body is whole: readers end once they have read it.
    pub fn complete(&self) {
        self.progress.send_modify(|p| p.end = Some(End::Complete));
    }

    /// The render failed: readers end with [`Aborted`] after the bytes already produced.
    pub fn abort(&self) {
        self.progress.send_modify(|p| p.end = Some(End::Aborted));
    }

    /// The bytes so far, as one buffer.
    pub fn so_far(&self) -> Bytes {
        let progress = self.progress.borrow();
        match progress.chunks.as_slice() {
            [one] => one.clone(),
            chunks => Bytes::from(chunks.concat()),
        }
    }

    /// The body from its first byte: what is there now, then the rest as it comes.
    pub fn reader(&self) -> impl Stream<Item = Result<Bytes, Aborted>> + Send + 'static {
        let progress = self.progress.subscribe();
        futures_util::stream::unfold(Some((progress, 0usize)), |state| async move {
            let (mut progress, next) = state?;
            loop {
                let step = {
                    let now = progress.borrow_and_update();
                    match (now.chunks.get(next), now.end) {
                        (Some(chunk), _) => Some(Ok(chunk.clone())),
                        (None, Some(End::Complete)) => return None,
                        (None, Some(End::Aborted)) => Some(Err(Aborted)),
                        (None, None) => None,
                    }
                };
                match step {
                    Some(Ok(chunk)) => return Some((Ok(chunk), Some((progress, next + 1)))),
                    Some(Err(aborted)) => return Some((Err(aborted), None)),
                    // The writer went away without an end: the body is cut.
                    None if progress.changed().await.is_err() => return Some((Err(Aborted), None)),
                    None => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    #[tokio::test]
    async fn readers_get_the_bytes_so_far_then_the_rest_then_the_end() {
        let body = LiveBody::default();
        body.push(Bytes::from_static(b"<head>"));
        let mut early = Box::pin(body.reader());
        assert_eq!(early.next().await.unwrap().unwrap(), "<head>");
        body.push(Bytes::from_static(b"<body>"));
        let mut late = Box::pin(body.reader());
        body.complete();
        let rest: Vec<_> = early.map(Result::unwrap).collect().await;
        assert_eq!(rest, ["<body>"]);
        let all: Vec<_> = late.by_ref().map(Result::unwrap).collect().await;
        assert_eq!(all, ["<head>", "<body>"]);
        assert_eq!(body.so_far(), "<head><body>");
    }

    #[tokio::test]
    async fn an_aborted_or_abandoned_body_ends_with_an_error_after_its_bytes() {
        let body = LiveBody::default();
        body.push(Bytes::from_static(b"<head>"));
        let reader = body.reader();
        body.abort();
        let got: Vec<_> = reader.collect().await;
        assert!(matches!(got.as_slice(), [Ok(_), Err(Aborted)]), "{got:?}");

        let body = LiveBody::default();
        let reader = body.reader();
        drop(body);
        let got: Vec<_> = reader.collect().await;
        assert!(matches!(got.as_slice(), [Err(Aborted)]), "{got:?}");
    }
}
