//! `mizan_cache._native`: the Mizan cache protocol's Rust implementation (crates/mizan-cache)
//! for Python. The `mizan_cache` package (python/mizan_cache) re-exports it and adds the
//! Django integration; the types are in `_native.pyi`.
//!
//! [`cache`] owns the `Cache` and `Entry` classes (a store behind a blocking facade), [`keys`]
//! the key, tag, header and signature functions, [`convert`] the conversions and the
//! exceptions.

mod cache;
mod convert;
mod keys;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<cache::Cache>()?;
    m.add_class::<cache::PyEntry>()?;
    m.add_class::<keys::PyKeys>()?;
    m.add_function(wrap_pyfunction!(keys::jcs, m)?)?;
    m.add_function(wrap_pyfunction!(keys::dependency_tags, m)?)?;
    m.add_function(wrap_pyfunction!(keys::purge_tags, m)?)?;
    m.add_function(wrap_pyfunction!(keys::invalidate_header, m)?)?;
    m.add_function(wrap_pyfunction!(keys::parse_invalidate, m)?)?;
    m.add_function(wrap_pyfunction!(keys::now_ms, m)?)?;
    m.add("EXAMPLE_SECRET", mizan_cache::key::EXAMPLE_SECRET)?;
    Ok(())
}
