//! The `mizan_runtime` deno_core extension: the bootstrap in `runtime-js/` and its ops.
//!
//! This file is compiled twice: by `build.rs`, which snapshots the extension at build time,
//! and into the library, which restores isolates from that snapshot. Both must declare the
//! same extensions in the same order, so both take them from [`extensions`].

use deno_core::{Extension, OpState, op2};
use std::sync::Arc;

deno_core::extension!(
    mizan_runtime,
    deps = [deno_webidl, deno_web],
    ops = [op_mizan_console, op_mizan_chunk],
    esm_entry_point = "ext:mizan_runtime/01_globals.js",
    esm = [dir "runtime-js", "01_globals.js"],
);

/// The extension list of every render isolate, in load order.
pub fn extensions() -> Vec<Extension> {
    vec![
        deno_webidl::deno_webidl::init(),
        deno_web::deno_web::init(
            Arc::new(deno_web::BlobStore::default()) as Arc<dyn deno_web::BlobStoreTrait>,
            None,
            false,
            Default::default(),
        ),
        mizan_runtime::init(),
    ]
}

/// `console.*` from a bundle, routed to `tracing` under the `mizan::js` target.
#[op2(fast)]
fn op_mizan_console(level: u32, #[string] msg: &str) {
    let msg = msg.strip_suffix('\n').unwrap_or(msg);
    match level {
        0 => tracing::debug!(target: "mizan::js", "{msg}"),
        1 => tracing::info!(target: "mizan::js", "{msg}"),
        2 => tracing::warn!(target: "mizan::js", "{msg}"),
        _ => tracing::error!(target: "mizan::js", "{msg}"),
    }
}

/// Where the body of the streaming render in progress goes, chunk by chunk: installed in the
/// isolate's `OpState` for the length of one render. Returns `false` when nobody reads it.
pub struct ChunkSink(pub Box<ChunkFn>);

/// What a [`ChunkSink`] does with a chunk.
pub type ChunkFn = dyn FnMut(&[u8]) -> bool;

/// One chunk of a streaming render's body, from the bootstrap's `pump`: handed to the
/// [`ChunkSink`] at once, so it can leave the thread while the render goes on. `false` when
/// there is no sink or its reader is gone: the bootstrap stops reading the body.
#[op2(fast)]
fn op_mizan_chunk(state: &mut OpState, #[buffer] chunk: &[u8]) -> bool {
    state.try_borrow_mut::<ChunkSink>().is_some_and(|sink| (sink.0)(chunk))
}
