//! The JavaScript side of a render isolate: the `mizan_runtime` extension, with every source
//! it needs embedded in the binary (see `build.rs`).

pub mod ext;

mod sources {
    include!(concat!(env!("OUT_DIR"), "/sources.rs"));
}

/// The extensions of every render isolate, in load order, with embedded sources. Snapshot
/// creation and isolate restore must both use this list.
pub fn extensions() -> Vec<deno_core::Extension> {
    let mut extensions = ext::extensions();
    extensions.iter_mut().for_each(sources::embed);
    extensions
}

/// Starts V8 for this process, once, before the first isolate (a snapshot's included).
///
/// deno_core starts V8 on the first `JsRuntime` it makes, and when that one builds a snapshot
/// (ours is built at start-up) it starts V8 in `--predictable` mode, meant for reproducible
/// build-time snapshots: single-threaded, optimising compilers on the render thread, no
/// parallel garbage collection. Starting V8 here first, in the ordinary mode Node, Deno and
/// workerd run, keeps that out of every render. `MIZAN_V8_FLAGS` (space-separated, as
/// `node --v8-options` names them) passes flags to it; V8's defaults otherwise.
pub fn init_v8() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if let Ok(flags) = std::env::var("MIZAN_V8_FLAGS") {
            // The first element is the program name, as on a command line.
            let flags = std::iter::once("mizan-render").chain(flags.split_whitespace()).map(str::to_string).collect();
            let unknown = deno_core::v8_set_flags(flags);
            if unknown.len() > 1 {
                tracing::warn!(flags = ?&unknown[1..], "V8 does not know these flags; ignored");
            }
        }
        deno_core::JsRuntime::init_platform(None);
    });
}
