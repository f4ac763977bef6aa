//! `RenderError`: everything that can go wrong between a render request and its HTML.

use std::path::PathBuf;

/// Why a render, or the pool that runs renders, failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The bundle file could not be read.
    #[error("bundle \"{bundle}\": cannot read {}: {source}", path.display())]
    BundleRead {
        /// The manifest name of the bundle.
        bundle: String,
        /// The file the manifest names.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bundle failed to load or evaluate, or does not follow the ABI.
    #[error("bundle \"{bundle}\" failed to load: {message}")]
    BundleLoad {
        /// The manifest name of the bundle.
        bundle: String,
        /// The JS error with its stack, or what is wrong with the module's exports.
        message: String,
    },
    /// A render was asked of a bundle the pool does not hold.
    #[error("unknown bundle \"{bundle}\" (loaded: {known})")]
    UnknownBundle {
        /// The bundle asked for.
        bundle: String,
        /// The bundles the pool holds, comma-separated.
        known: String,
    },
    /// The bundle threw or rejected while rendering.
    #[error("bundle \"{bundle}\" page \"{page}\" threw: {message}")]
    Js {
        /// The manifest name of the bundle.
        bundle: String,
        /// The page being rendered.
        page: String,
        /// The JS error with its stack.
        message: String,
    },
    /// `render()` resolved to something that is not `{ status, headers, html }`.
    #[error("bundle \"{bundle}\" page \"{page}\": invalid render result: {message}")]
    BadOutput {
        /// The manifest name of the bundle.
        bundle: String,
        /// The page being rendered.
        page: String,
        /// What was wrong.
        message: String,
    },
    /// The render ran past the pool's render timeout; its isolate was replaced.
    #[error("bundle \"{bundle}\" page \"{page}\" did not finish within {ms} ms")]
    Timeout {
        /// The manifest name of the bundle.
        bundle: String,
        /// The page being rendered.
        page: String,
        /// The timeout.
        ms: u64,
    },
    /// The render allocated past the isolate's heap limit; its isolate was replaced.
    #[error("bundle \"{bundle}\" page \"{page}\" exceeded the {mib} MiB heap limit")]
    HeapLimit {
        /// The manifest name of the bundle.
        bundle: String,
        /// The page being rendered.
        page: String,
        /// The limit.
        mib: usize,
    },
    /// The render used more CPU time than its budget; its isolate was replaced.
    #[error("bundle \"{bundle}\" page \"{page}\" used more than its {ms} ms CPU budget")]
    CpuBudget {
        /// The manifest name of the bundle.
        bundle: String,
        /// The page being rendered.
        page: String,
        /// The budget.
        ms: u64,
    },
    /// Renders of one route already hold their share of the queue.
    #[error("renders of {lane} already hold their share of the queue ({limit} waiting); retry later")]
    LaneFull {
        /// The route.
        lane: String,
        /// Its share.
        limit: usize,
    },
    /// The inputs waiting in the queue already hold its byte bound.
    #[error("render queue holds its {limit}-byte bound of inputs; retry later")]
    QueueBytes {
        /// The bound.
        limit: usize,
    },
    /// Every worker is busy and the queue is full.
    #[error("render queue is full ({capacity} waiting); retry later")]
    Overloaded {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The pool was shut down, or its worker died during the render.
    #[error("render pool is shut down")]
    PoolClosed,
    /// An isolate or snapshot could not be created.
    #[error("isolate setup failed: {0}")]
    Setup(String),
    /// The render input could not be serialised.
    #[error("render input is not serialisable: {0}")]
    Input(#[from] serde_json::Error),
}

impl RenderError {
    /// Whether the page itself is at fault (it threw, looped, allocated, answered badly), as
    /// opposed to the node being busy or shutting down: what counts toward quarantine.
    pub fn is_page_fault(&self) -> bool {
        matches!(
            self,
            RenderError::Js { .. }
                | RenderError::BadOutput { .. }
                | RenderError::Timeout { .. }
                | RenderError::HeapLimit { .. }
                | RenderError::CpuBudget { .. }
        )
    }

    /// Whether the node refused the render for lack of room (503 with `Retry-After`).
    pub fn is_overload(&self) -> bool {
        matches!(self, RenderError::Overloaded { .. } | RenderError::LaneFull { .. } | RenderError::QueueBytes { .. })
    }
}
