//! Streaming renders: what a worker sends while a bundle's `renderStream(input)` runs (the
//! head, then each chunk of the body as it comes, then how it ended), and [`RenderStream`],
//! the caller's end. The channel is unbounded: the caller keeps the whole body anyway (the
//! node stores it), and the worker never waits on a slow reader while it holds an isolate.

use super::RenderError;
use bytes::Bytes;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// One message of a streaming render, in order: `Head`, any number of `Chunk`s, then `Done`
/// or `Failed` (which may also come first, when the render fails before its head).
#[derive(Debug)]
pub(crate) enum Frame {
    /// The status and headers the bundle answered.
    Head { status: u16, headers: Vec<(String, String)> },
    /// The next bytes of the body.
    Chunk(Bytes),
    /// The body is complete; the time spent inside the isolate.
    Done(Duration),
    /// The render failed: after the head and chunks already sent, the body is incomplete.
    Failed(RenderError),
}

/// The sending half, held by the worker.
pub(crate) type FrameSender = mpsc::UnboundedSender<Frame>;

/// A render whose head is known and whose body is still coming
/// ([`super::Pool::render_stream_with`]).
#[derive(Debug)]
pub struct RenderStream {
    /// The HTTP status the bundle chose.
    pub status: u16,
    /// Response headers the bundle set, in order.
    pub headers: Vec<(String, String)>,
    frames: mpsc::UnboundedReceiver<Frame>,
    elapsed: Option<Duration>,
}

impl RenderStream {
    /// Waits for the head of the render behind `frames`.
    pub(crate) async fn start(mut frames: mpsc::UnboundedReceiver<Frame>) -> Result<Self, RenderError> {
        match frames.recv().await {
            Some(Frame::Head { status, headers }) => Ok(Self { status, headers, frames, elapsed: None }),
            Some(Frame::Failed(error)) => Err(error),
            Some(Frame::Chunk(_) | Frame::Done(_)) => Err(RenderError::Setup("a streaming render sent no head".into())),
            None => Err(RenderError::PoolClosed),
        }
    }

    /// The next bytes of the body as the render produces them; `Ok(None)` once the body is
    /// complete. An error after some chunks means the body is incomplete: the render failed
    /// (and its isolate is replaced), or its worker died.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, RenderError> {
        if self.elapsed.is_some() {
            return Ok(None);
        }
        match self.frames.recv().await {
            Some(Frame::Chunk(bytes)) => Ok(Some(bytes)),
            Some(Frame::Done(elapsed)) => {
                self.elapsed = Some(elapsed);
                Ok(None)
            }
            Some(Frame::Failed(error)) => Err(error),
            Some(Frame::Head { .. }) => Err(RenderError::Setup("a streaming render sent two heads".into())),
            None => Err(RenderError::PoolClosed),
        }
    }

    /// Time spent inside the isolate, once the body is complete.
    pub fn elapsed(&self) -> Option<Duration> {
        self.elapsed
    }

    /// Reads the rest of the body into one buffer.
    pub async fn collect(mut self) -> Result<(Vec<u8>, Duration), RenderError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok((body, self.elapsed.unwrap_or_default()))
    }
}

/// Holds every streaming render of a pool after its first chunk until dropped: for tests that
/// must see the first bytes of a page while its render provably runs
/// ([`super::Pool::hold_streams`]). The held worker thread blocks; the watchdog still ends
/// the render at its deadline.
#[derive(Debug)]
pub struct StreamHold {
    gate: Arc<Gate>,
}

impl Drop for StreamHold {
    fn drop(&mut self) {
        self.gate.set(false);
    }
}

/// Whether streaming renders wait after their first chunk.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    pub fn hold(self: &Arc<Self>) -> StreamHold {
        self.set(true);
        StreamHold { gate: self.clone() }
    }

    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = closed;
        self.opened.notify_all();
    }

    /// Blocks this thread while the gate is closed.
    pub fn pass(&self) {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        while *closed {
            closed = self.opened.wait(closed).unwrap_or_else(|e| e.into_inner());
        }
    }
}
