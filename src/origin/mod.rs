//! The origin (Django): typed context data over the origin protocol, validated against the
//! manifest's `returns` schemas, and the reverse proxy for mutations ([`proxy`]).
//!
//! `GET {origin}/_mizan/ctx/{context}?params=<percent-encoded JCS(params)>` answers
//! `{"data": ...}` or `{"error": {type, status, message}}`. Anything else (a body that is not
//! that, too large, too slow, a 5xx) is an [`OriginError`], never data.

pub mod proxy;

use crate::abi::OriginError as DjangoError;
use crate::cache::key::jcs;
use crate::manifest::Manifest;
use futures_util::StreamExt as _;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Why context data could not be had from the origin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OriginError {
    /// Connection refused, reset, DNS: the origin is down.
    #[error("origin unreachable fetching \"{context}\": {message}")]
    Unreachable {
        /// The context being fetched.
        context: String,
        /// The transport error.
        message: String,
    },
    /// No complete answer within the configured timeout.
    #[error("origin timed out after {ms} ms fetching \"{context}\"")]
    Timeout {
        /// The context being fetched.
        context: String,
        /// The timeout.
        ms: u64,
    },
    /// The answer exceeds the configured size limit.
    #[error("origin answer for \"{context}\" exceeds the {limit}-byte limit")]
    TooLarge {
        /// The context being fetched.
        context: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The answer does not follow the origin protocol.
    #[error("origin answer for \"{context}\" is not the origin protocol (HTTP {status}): {message}")]
    Protocol {
        /// The context being fetched.
        context: String,
        /// The HTTP status it came with.
        status: u16,
        /// What is wrong with it.
        message: String,
    },
    /// The data does not match the context's `returns` schema.
    #[error(
        "origin data for \"{context}\" does not match its returns schema: {message} (at {instance_path}, schema {schema_path})"
    )]
    Schema {
        /// The context being fetched.
        context: String,
        /// Where in the data.
        instance_path: String,
        /// Which rule of the schema.
        schema_path: String,
        /// The validator's message.
        message: String,
    },
    /// The node already has as many origin requests in flight and waiting as it allows.
    #[error("origin busy: too many requests in flight fetching \"{context}\"")]
    Busy {
        /// The context being fetched.
        context: String,
    },
    /// The origin failed (5xx).
    #[error("origin failed fetching \"{context}\": HTTP {status}")]
    Failed {
        /// The context being fetched.
        context: String,
        /// The status.
        status: u16,
    },
}

impl OriginError {
    /// Whether the origin could not answer in time (504) rather than answered badly (502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, OriginError::Timeout { .. })
    }
}

/// Cache directives of an origin answer that shorten the manifest's lifetimes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store` or `private`: never store it, nor a page built from it.
    pub no_store: bool,
    /// `s-maxage`, else `max-age` (`no-cache` counts as 0).
    pub max_age: Option<u64>,
    /// `stale-while-revalidate`.
    pub swr: Option<u64>,
}

impl Directives {
    /// Parses a `Cache-Control` value; unknown directives are ignored.
    pub fn parse(value: &str) -> Self {
        let mut d = Directives::default();
        let mut s_maxage = None;
        for part in value.split(',') {
            let (name, arg) = part
                .trim()
                .split_once('=')
                .map_or((part.trim(), None), |(n, a)| (n.trim(), Some(a.trim().trim_matches('"'))));
            let number = arg.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-store" | "private" => d.no_store = true,
                "no-cache" => d.max_age = Some(0),
                "max-age" => d.max_age = d.max_age.min(number).or(number),
                "s-maxage" => s_maxage = number,
                "stale-while-revalidate" => d.swr = number,
                _ => {}
            }
        }
        if s_maxage.is_some() {
            d.max_age = s_maxage;
        }
        d
    }
}

/// A context answer: the data, or the error the page renders as a `DjangoError`.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `{"data": ...}`, validated, as its JSON text.
    Data(crate::abi::RawJson),
    /// `{"error": ...}` with a 4xx status.
    Error(DjangoError),
}

/// One fetched context.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// What the origin answered.
    pub answer: Answer,
    /// Its cache directives.
    pub directives: Directives,
}

/// Settings of the origin client.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// Base URL, e.g. `http://127.0.0.1:8000`.
    pub base: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Largest accepted answer body.
    pub max_body: usize,
    /// Context requests the node has in flight to the origin at once; as many more may wait
    /// for a slot (up to the timeout), beyond that a fetch fails at once with
    /// [`OriginError::Busy`]: a flood of distinct URLs gets 503s, not a flood of origin calls.
    pub max_concurrent: usize,
}

/// What checks data, for the mark of data checked ([`Origin::checked_mark`]): a validator that
/// judges differently must not trust the marks of this one.
const VALIDATOR: &str = "jsonschema 0.33";

/// The origin client, with a compiled validator per context.
pub struct Origin {
    client: reqwest::Client,
    proxy_client: reqwest::Client,
    config: OriginConfig,
    validators: HashMap<String, jsonschema::Validator>,
    /// Per context: a hash of its `returns` schema and of the validator, which the mark of
    /// data this node checked binds to that data ([`Origin::checked_mark`]).
    marks: HashMap<String, [u8; 32]>,
    slots: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
}

/// Counts a fetch waiting for an origin slot while it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Origin {
    /// Compiles the `returns` schema of every context; a schema that does not compile is an
    /// error naming the context.
    pub fn new(config: OriginConfig, manifest: &Manifest) -> Result<Self, String> {
        let mut validators = HashMap::new();
        let mut marks = HashMap::new();
        for (name, context) in &manifest.contexts {
            let validator = jsonschema::validator_for(&context.returns)
                .map_err(|e| format!("contexts.{name}.returns is not a usable JSON Schema: {e}"))?;
            validators.insert(name.clone(), validator);
            let mut schema = blake3::Hasher::new();
            schema.update(VALIDATOR.as_bytes()).update(crate::cache::key::jcs(&context.returns).as_bytes());
            marks.insert(name.clone(), *schema.finalize().as_bytes());
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        // The proxy streams bodies of any length both ways: the timeout bounds connecting and
        // each wait for the next bytes, never the whole exchange.
        let proxy_client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let slots = tokio::sync::Semaphore::new(config.max_concurrent.max(1));
        Ok(Self { client, proxy_client, config, validators, marks, slots, waiting: Default::default() })
    }

    /// The HTTP client of the proxy (mutations).
    pub fn proxy_client(&self) -> &reqwest::Client {
        &self.proxy_client
    }

    /// Fetches waiting for an origin slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An origin slot for one fetch of `context`: at once, or after waiting behind at most
    /// `max_concurrent` others, within the timeout.
    async fn slot(&self, context: &str) -> Result<tokio::sync::SemaphorePermit<'_>, OriginError> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        let busy = || OriginError::Busy { context: context.into() };
        if self.waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= self.config.max_concurrent.max(1) {
            self.waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Err(busy());
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.config.timeout, self.slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy()),
        }
    }

    /// The settings.
    pub fn config(&self) -> &OriginConfig {
        &self.config
    }

    /// Fetches `context` with `params`; `credentials` (Cookie, Authorization) are forwarded
    /// only for pages that are never stored.
    pub async fn fetch(
        &self,
        context: &str,
        params: &Map<String, Value>,
        credentials: &[(String, String)],
    ) -> Result<Fetched, OriginError> {
        let encoded = percent_encoding::utf8_percent_encode(
            &jcs(&Value::Object(params.clone())),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        let _slot = self.slot(context).await?;
        let url = format!("{}/_mizan/ctx/{context}?params={encoded}", self.config.base.trim_end_matches('/'));
        let mut request = self.client.get(&url).header("accept", "application/json");
        // The id of the request the page is rendered for (the one that started the flight).
        if let Some(id) = crate::metrics::request::current() {
            request = request.header("x-request-id", id.header_value());
        }
        for (name, value) in credentials {
            request = request.header(name, value);
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                OriginError::Timeout { context: context.into(), ms: self.config.timeout.as_millis() as u64 }
            } else {
                OriginError::Unreachable { context: context.into(), message: e.to_string() }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let directives = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .map(Directives::parse)
            .unwrap_or_default();
        if response.content_length().is_some_and(|n| n > self.config.max_body as u64) {
            return Err(OriginError::TooLarge { context: context.into(), limit: self.config.max_body });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport)?;
            if body.len() + chunk.len() > self.config.max_body {
                return Err(OriginError::TooLarge { context: context.into(), limit: self.config.max_body });
            }
            body.extend_from_slice(&chunk);
        }
        if status >= 500 {
            return Err(OriginError::Failed { context: context.into(), status });
        }
        let protocol = |message: String| OriginError::Protocol { context: context.into(), status, message };
        let mut document: Map<String, Value> = match serde_json::from_slice(&body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(protocol("the body is JSON but not an object".into())),
            Err(e) => return Err(protocol(format!("the body is not JSON: {e}"))),
        };
        match (status, document.remove("data"), document.remove("error")) {
            (200..=299, Some(data), None) => {
                self.validate(context, &data)?;
                let data = crate::abi::RawJson::from_value(&data).map_err(|e| protocol(format!("\"data\": {e}")))?;
                Ok(Fetched { answer: Answer::Data(data), directives })
            }
            (400..=499, None, Some(error)) => {
                let error: DjangoError =
                    serde_json::from_value(error).map_err(|e| protocol(format!("bad \"error\" object: {e}")))?;
                if error.status != status {
                    return Err(protocol(format!("\"error.status\" {} differs from HTTP {status}", error.status)));
                }
                Ok(Fetched { answer: Answer::Error(error), directives })
            }
            _ => Err(protocol("expected {\"data\": ...} with 2xx or {\"error\": {...}} with 4xx".into())),
        }
    }

    /// The mark of `data` checked against `context`'s `returns` schema, which a data entry
    /// the node stored carries in its metadata (`checked`): a hash of the schema, the
    /// validator and the data itself, so that an entry read back with a matching mark is not
    /// checked again, and one whose data another writer stored or changed (the origin's
    /// `mizan_cache` keeps unknown metadata fields through its rewrites), or that was checked
    /// against an earlier schema, is. `None` for a context the manifest does not know.
    pub(crate) fn checked_mark(&self, context: &str, data: &[u8]) -> Option<String> {
        let schema = self.marks.get(context)?;
        let mut mark = blake3::Hasher::new();
        mark.update(schema).update(data);
        Some(mark.finalize().to_hex()[..32].to_string())
    }

    /// Checks `data` against `context`'s `returns` schema: origin answers, and data entries
    /// read from a store another implementation writes too (the origin's `mizan_cache`).
    pub(crate) fn validate(&self, context: &str, data: &Value) -> Result<(), OriginError> {
        let Some(validator) = self.validators.get(context) else { return Ok(()) };
        match validator.iter_errors(data).next() {
            None => Ok(()),
            Some(error) => Err(OriginError::Schema {
                context: context.into(),
                instance_path: format!("/{}", error.instance_path.to_string().trim_start_matches('/')),
                schema_path: format!("/{}", error.schema_path.to_string().trim_start_matches('/')),
                message: error.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Directives;

    #[test]
    fn parses_cache_control() {
        assert_eq!(Directives::parse("private, max-age=0"), Directives { no_store: true, max_age: Some(0), swr: None });
        assert_eq!(Directives::parse("public, max-age=30, s-maxage=10, stale-while-revalidate=5").max_age, Some(10));
        assert_eq!(Directives::parse("max-age=30, stale-while-revalidate=5").swr, Some(5));
        assert_eq!(Directives::parse("no-cache").max_age, Some(0));
        assert_eq!(Directives::parse("max-age=\"x\", foo"), Directives::default());
    }
}
