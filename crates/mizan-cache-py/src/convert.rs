//! Conversions between Python values and the protocol's (params, targets, bodies), and the
//! exceptions of `mizan_cache.errors` raised for each kind of failure.

use mizan_cache::invalidate::Invalidation;
use mizan_cache::{CacheError, PurgeMode};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyString, PyTuple};
use serde_json::{Map, Value};

/// The exception class `name` of `mizan_cache.errors`, imported once.
fn error_class<'py>(py: Python<'py>, name: &'static str) -> PyResult<Bound<'py, PyAny>> {
    static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = ERRORS.get_or_try_init(py, || PyModule::import(py, "mizan_cache.errors").map(Bound::unbind))?;
    module.bind(py).getattr(name)
}

/// A `mizan_cache.errors.<name>` exception with `message`.
pub fn error(name: &'static str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| match error_class(py, name) {
        Ok(class) => match class.call1((message.clone(),)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        Err(e) => e,
    })
}

/// The Python exception for a store or protocol error.
pub fn cache_error(e: CacheError) -> PyErr {
    let name = match &e {
        CacheError::Secret(_) => "SecretError",
        CacheError::BadRequestPath(_) | CacheError::Site(_) => "ConfigError",
        CacheError::Unavailable { .. } => "StoreUnavailable",
        CacheError::Corrupt { .. } => "StoreCorrupt",
        CacheError::Signature(_) => "SignatureError",
    };
    error(name, e.to_string())
}

/// Params: `None` (none) or a mapping of JSON values.
pub fn params(value: Option<&Bound<'_, PyAny>>) -> PyResult<Map<String, Value>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(Map::new());
    };
    match pythonize::depythonize::<Value>(value) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => {
            Err(PyTypeError::new_err(format!("params must be a mapping of JSON values, not {}", kind(&other))))
        }
        Err(e) => Err(error("MetadataError", format!("params are not JSON: {e}"))),
    }
}

/// Any JSON value.
pub fn json(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    pythonize::depythonize::<Value>(value).map_err(|e| error("MetadataError", format!("{what} is not JSON: {e}")))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "None",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A mode's wire name.
pub fn mode(name: &str) -> PyResult<PurgeMode> {
    match name {
        "hard" => Ok(PurgeMode::Hard),
        "soft" => Ok(PurgeMode::Soft),
        other => Err(PyValueError::new_err(format!("mode must be \"hard\" or \"soft\", not {other:?}"))),
    }
}

/// The wire name of a mode.
pub fn mode_name(mode: PurgeMode) -> &'static str {
    match mode {
        PurgeMode::Hard => "hard",
        PurgeMode::Soft => "soft",
    }
}

/// A purge target: `"context"`, `(context, params)` or `(context, params, mode)`.
pub fn target(value: &Bound<'_, PyAny>) -> PyResult<Invalidation> {
    if let Ok(context) = value.cast::<PyString>() {
        return Ok(Invalidation { context: context.to_str()?.to_string(), params: Map::new(), mode: PurgeMode::Hard });
    }
    let Ok(tuple) = value.cast::<PyTuple>() else {
        return Err(PyTypeError::new_err(
            "a purge target is a context name, (context, params) or (context, params, mode)",
        ));
    };
    let context: String = tuple.get_item(0)?.extract()?;
    let params = if tuple.len() > 1 { params(Some(&tuple.get_item(1)?))? } else { Map::new() };
    let mode = match tuple.len() {
        1 | 2 => PurgeMode::Hard,
        3 => mode(&tuple.get_item(2)?.extract::<String>()?)?,
        _ => return Err(PyTypeError::new_err("a purge target tuple has at most three items: (context, params, mode)")),
    };
    Ok(Invalidation { context, params, mode })
}

/// The targets of an iterable.
pub fn targets(values: &Bound<'_, PyAny>) -> PyResult<Vec<Invalidation>> {
    if values.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err("targets must be an iterable of targets, not one string: wrap it in a list"));
    }
    values.try_iter()?.map(|item| target(&item?)).collect()
}

/// A body: `bytes` (or any buffer of bytes) or `str` (stored as UTF-8).
pub fn body(value: &Bound<'_, PyAny>, what: &str) -> PyResult<bytes::Bytes> {
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(bytes::Bytes::copy_from_slice(b.as_bytes()));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(bytes::Bytes::copy_from_slice(s.to_str()?.as_bytes()));
    }
    match value.extract::<Vec<u8>>() {
        Ok(v) => Ok(bytes::Bytes::from(v)),
        Err(_) => Err(PyTypeError::new_err(format!("{what} must be bytes or str"))),
    }
}

/// A secret: `str` or `bytes`.
pub fn secret(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes().to_vec());
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    Err(PyTypeError::new_err("the secret must be str or bytes"))
}
