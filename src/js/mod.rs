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
