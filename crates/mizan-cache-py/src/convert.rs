//! Conversions between Python values and the protocol's (params, targets, bodies), and the
//! exceptions of `mizan_cache.errors` raised for each kind of failure.

use mizan_cache::invalidate::Invalidation;
use mizan_cache::{CacheError, PurgeMode};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};
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
    match json(value, "params")? {
        Value::Object(map) => Ok(map),
        other => Err(PyTypeError::new_err(format!("params must be a mapping of JSON values, not {}", kind(&other)))),
    }
}

/// Any JSON value, named `what` in errors (`params.tags[2] is of type set, which JSON cannot hold`).
pub fn json(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    to_value(value, 0).map_err(|e| error("MetadataError", e.describe(what)))
}

/// How deep a value may nest: deeper is refused, not a stack overflow.
const MAX_DEPTH: usize = 128;

/// Where in a value conversion failed (built only on failure: a put converts every field).
struct Unjson {
    /// From the innermost step out.
    path: Vec<Step>,
    message: String,
}

enum Step {
    Index(usize),
    Key(String),
}

impl Unjson {
    fn new(message: impl Into<String>) -> Self {
        Self { path: Vec::new(), message: message.into() }
    }

    fn at(mut self, step: Step) -> Self {
        self.path.push(step);
        self
    }

    fn describe(&self, what: &str) -> String {
        let mut at = what.to_string();
        for step in self.path.iter().rev() {
            match step {
                Step::Index(n) => at.push_str(&format!("[{n}]")),
                Step::Key(k) => at.push_str(&format!(".{k}")),
            }
        }
        format!("{at} {}", self.message)
    }
}

fn to_value(value: &Bound<'_, PyAny>, depth: usize) -> Result<Value, Unjson> {
    if depth > MAX_DEPTH {
        return Err(Unjson::new(format!("nests deeper than {MAX_DEPTH} levels")));
    }
    if value.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = value.cast::<PyString>() {
        return s.to_str().map(|s| Value::String(s.to_owned())).map_err(|e| Unjson::new(format!("is not UTF-8: {e}")));
    }
    // bool before int: Python's bool is an int.
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = value.cast::<PyInt>() {
        if let Ok(n) = i.extract::<i64>() {
            return Ok(n.into());
        }
        if let Ok(n) = i.extract::<u64>() {
            return Ok(n.into());
        }
        // Past 64 bits a JSON number is what JSON.parse reads: an IEEE 754 double (RFC 8785).
        let f: f64 = i.extract().map_err(|_| Unjson::new("is an integer too large for a JSON number"))?;
        return number(f);
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return number(f.value());
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut map = Map::new();
        for (key, item) in dict.iter() {
            let key = string_key(&key)?;
            let item = to_value(&item, depth + 1).map_err(|e| e.at(Step::Key(key.clone())))?;
            map.insert(key, item);
        }
        return Ok(Value::Object(map));
    }
    if let Ok(list) = value.cast::<PyList>() {
        return array(list.iter(), depth);
    }
    if let Ok(tuple) = value.cast::<PyTuple>() {
        return array(tuple.iter(), depth);
    }
    if let Ok(mapping) = value.cast::<PyMapping>() {
        let items = mapping.items().map_err(|e| Unjson::new(format!("cannot be read: {e}")))?;
        let mut map = Map::new();
        for item in items.iter() {
            let (key, item): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                item.extract().map_err(|e| Unjson::new(format!("cannot be read: {e}")))?;
            let key = string_key(&key)?;
            let item = to_value(&item, depth + 1).map_err(|e| e.at(Step::Key(key.clone())))?;
            map.insert(key, item);
        }
        return Ok(Value::Object(map));
    }
    let name = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    Err(Unjson::new(format!("is of type {name}, which JSON cannot hold")))
}

fn array<'py>(items: impl Iterator<Item = Bound<'py, PyAny>>, depth: usize) -> Result<Value, Unjson> {
    items.enumerate().map(|(n, item)| to_value(&item, depth + 1).map_err(|e| e.at(Step::Index(n)))).collect()
}

fn string_key(key: &Bound<'_, PyAny>) -> Result<String, Unjson> {
    let Ok(text) = key.cast::<PyString>() else {
        return Err(Unjson::new(format!("has a key that is not a string: {key}")));
    };
    text.to_str().map(str::to_owned).map_err(|e| Unjson::new(format!("has a key that is not UTF-8: {e}")))
}

fn number(f: f64) -> Result<Value, Unjson> {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| Unjson::new(format!("is {f}, which JSON cannot hold")))
}

/// A JSON value as Python's `json.loads` would give it (objects as dicts, arrays as lists).
pub fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, value).map_err(|e| error("MetadataError", format!("does not convert: {e}")))
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
