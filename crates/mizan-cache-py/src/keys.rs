//! Keys, purge tags, the `X-Mizan-Invalidate` header and purge signatures, for Python.

use crate::convert::{self, cache_error, error};
use mizan_cache::Keys;
use mizan_cache::key::PageKeyParts;
use mizan_cache::purge::{ModeName, PurgeRequest, PurgeTarget};
use mizan_cache::signature::{Verifier, sign};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use serde_json::Value;
use std::collections::HashMap;

/// The keys derived from `MIZAN_SECRET`; the secret itself is not kept.
#[pyclass(name = "Keys", module = "mizan_cache", frozen)]
pub struct PyKeys {
    pub keys: Keys,
}

fn now_s() -> u64 {
    mizan_cache::now_ms() / 1000
}

#[pymethods]
impl PyKeys {
    #[new]
    #[pyo3(signature = (secret, *, dev = false))]
    fn new(secret: &Bound<'_, PyAny>, dev: bool) -> PyResult<Self> {
        let keys = Keys::from_secret(&convert::secret(secret)?, dev).map_err(cache_error)?;
        Ok(Self { keys })
    }

    /// `mz1:d:<hex>`: the key of a context's data for `params`.
    #[pyo3(signature = (context, params = None))]
    fn data_key(&self, context: &str, params: Option<&Bound<'_, PyAny>>) -> PyResult<String> {
        Ok(self.keys.data_key(context, &convert::params(params)?))
    }

    /// `mz1:p:<hex>`: a page's key, from the request as sent and the route's declarations.
    #[pyo3(signature = (path, *, site, method = "GET", query = "", declared_query = None, declared_vary = None, headers = None))]
    #[allow(clippy::too_many_arguments)]
    fn page_key(
        &self,
        path: &str,
        site: &str,
        method: &str,
        query: &str,
        declared_query: Option<Vec<String>>,
        declared_vary: Option<Vec<String>>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let headers = match headers.filter(|h| !h.is_none()) {
            Some(headers) => convert::json(headers, "headers")?,
            None => Value::Object(Default::default()),
        };
        let Value::Object(headers) = headers else {
            return Err(pyo3::exceptions::PyTypeError::new_err("headers must be a mapping of names to values"));
        };
        let mut lower = HashMap::with_capacity(headers.len());
        for (name, value) in headers {
            let Value::String(value) = value else {
                return Err(error("MetadataError", format!("headers.{name} is not a string")));
            };
            lower.insert(name.to_ascii_lowercase(), value);
        }
        let headers = lower;
        let (declared_query, declared_vary) = (declared_query.unwrap_or_default(), declared_vary.unwrap_or_default());
        let parts = PageKeyParts::new(site, method, path, query, &declared_query, &declared_vary, |name| {
            headers.get(name).map(String::as_str)
        })
        .map_err(cache_error)?;
        Ok(self.keys.page_key(&parts))
    }

    /// The `X-Mizan-Signature` value for a purge body at unix time `t` (seconds; default now).
    #[pyo3(signature = (body, t = None))]
    fn sign(&self, body: &[u8], t: Option<u64>) -> String {
        sign(&self.keys, t.unwrap_or_else(now_s), body)
    }

    /// Raises `SignatureError` unless `signature` signs `body` within 300 s of `now`.
    #[pyo3(signature = (signature, body, now = None))]
    fn verify(&self, signature: Option<&str>, body: &[u8], now: Option<u64>) -> PyResult<()> {
        Verifier::new(self.keys.clone()).verify(signature, body, now.unwrap_or_else(now_s)).map_err(cache_error)
    }

    /// A signed `POST /_mizan/purge` for a node: `(body, headers)`.
    #[pyo3(signature = (targets, *, mode = "hard", t = None))]
    fn purge_request<'py>(
        &self,
        py: Python<'py>,
        targets: &Bound<'py, PyAny>,
        mode: &str,
        t: Option<u64>,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyDict>)> {
        let mode = match convert::mode(mode)? {
            mizan_cache::PurgeMode::Hard => ModeName::Hard,
            mizan_cache::PurgeMode::Soft => ModeName::Soft,
        };
        let mut purge = Vec::new();
        for target in convert::targets(targets)? {
            if target.mode != mizan_cache::PurgeMode::Hard {
                return Err(PyValueError::new_err(
                    "a purge request has one mode for all its targets: pass mode=\"soft\" instead of a per-target mode",
                ));
            }
            purge.push(PurgeTarget { context: target.context, params: target.params });
        }
        let body = serde_json::to_vec(&PurgeRequest { purge, mode })
            .map_err(|e| error("MetadataError", format!("the purge request does not serialise: {e}")))?;
        let headers = PyDict::new(py);
        headers.set_item("content-type", "application/json")?;
        headers.set_item("x-mizan-signature", sign(&self.keys, t.unwrap_or_else(now_s), &body))?;
        Ok((PyBytes::new(py, &body), headers))
    }

    fn __repr__(&self) -> &'static str {
        "Keys(..)"
    }
}

/// RFC 8785 canonical JSON.
#[pyfunction]
pub fn jcs(value: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(mizan_cache::key::jcs(&convert::json(value, "the value")?))
}

/// The purge tags of (context, params) dependencies.
#[pyfunction]
pub fn dependency_tags(deps: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let mut owned = Vec::new();
    for dep in deps.try_iter()? {
        let (context, params): (String, Bound<'_, PyAny>) = dep?.extract()?;
        owned.push((context, convert::params(Some(&params))?));
    }
    Ok(mizan_cache::dependency_tags(owned.iter().map(|(c, p)| (c.as_str(), p))))
}

/// The tags a purge of `context` with `params` moves.
#[pyfunction]
#[pyo3(signature = (context, params = None))]
pub fn purge_tags(context: &str, params: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    Ok(mizan_cache::meta::purge_tags(context, &convert::params(params)?))
}

/// The `X-Mizan-Invalidate` value purging `targets` ("" for none).
#[pyfunction]
pub fn invalidate_header(targets: &Bound<'_, PyAny>) -> PyResult<String> {
    let targets = convert::targets(targets)?;
    match mizan_cache::invalidate::header(&targets) {
        Ok(header) => Ok(header.unwrap_or_default()),
        Err(why) => Err(PyValueError::new_err(format!("X-Mizan-Invalidate cannot carry {why}"))),
    }
}

/// One purge read from a header: context, params, mode.
type Purge<'py> = (String, Bound<'py, PyAny>, &'static str);

/// The purges an `X-Mizan-Invalidate` value asks for, and the members skipped with why.
#[pyfunction]
pub fn parse_invalidate<'py>(py: Python<'py>, header: &str) -> PyResult<(Vec<Purge<'py>>, Vec<String>)> {
    let (purges, skipped) = mizan_cache::invalidate::parse(header);
    let mut out = Vec::with_capacity(purges.len());
    for purge in purges {
        let params = convert::to_python(py, &Value::Object(purge.params))?;
        out.push((purge.context, params, convert::mode_name(purge.mode)));
    }
    Ok((out, skipped))
}

/// Unix time in milliseconds.
#[pyfunction]
pub fn now_ms() -> u64 {
    mizan_cache::now_ms()
}
