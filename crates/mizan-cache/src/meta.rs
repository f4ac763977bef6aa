//! Entry metadata (docs/protocol.md, "Metadata"), its freshness, and the tags a purge finds
//! it by. Unknown fields are kept through every rewrite, so that an entry written by a newer
//! implementation survives a soft purge by this one.

use super::key::jcs;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Page or data entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A rendered page.
    Page,
    /// A context's data.
    Data,
}

/// A dependency: a context and its params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    /// The context name.
    pub context: String,
    /// Its params object.
    pub params: Map<String, Value>,
}

/// How a page was rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderInfo {
    /// `react`, `vue` or `svelte`.
    pub framework: String,
    /// Hex SHA-256 of the bundle.
    pub bundle: String,
    /// Render time in milliseconds.
    pub ms: f64,
}

/// The metadata stored beside a body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Schema version: 1.
    pub v: u32,
    /// Page or data.
    pub kind: Kind,
    /// The protocol key of the entry.
    pub key: String,
    /// HTTP status of the stored response.
    pub status: u16,
    /// Response headers, in order.
    pub headers: Vec<(String, String)>,
    /// Creation time, unix milliseconds.
    pub created_at: u64,
    /// Fresh for this many seconds after `created_at`.
    pub ttl_s: u64,
    /// Then servable stale while one re-render runs, for this many seconds.
    pub swr_s: u64,
    /// Then servable when the origin or render fails, for this many seconds more.
    pub sie_s: u64,
    /// What the entry was built from; a data entry depends on itself.
    pub deps: Vec<Dependency>,
    /// The entity tag served with it.
    pub etag: Option<String>,
    /// The purge generation of each of its tags ([`Meta::tags`]) when the render started.
    pub generation: BTreeMap<String, u64>,
    /// Pages only: framework, bundle hash and render time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render: Option<RenderInfo>,
    /// Set by a soft purge: unix ms from which the entry is no longer fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_at: Option<u64>,
    /// Fields this implementation does not know, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where an entry stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it.
    Fresh,
    /// Serve it and re-render in the background (within `swr_s`).
    StaleWhileRevalidate,
    /// Serve it only if the origin or the render fails (within `sie_s`).
    StaleIfError,
    /// Do not serve it.
    Expired,
}

impl Freshness {
    /// Lower-case name for logs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::StaleWhileRevalidate => "stale-while-revalidate",
            Freshness::StaleIfError => "stale-if-error",
            Freshness::Expired => "expired",
        }
    }
}

impl Meta {
    /// Unix ms until which the entry is fresh: the end of its ttl, or a soft purge.
    pub fn fresh_until(&self) -> u64 {
        let end = self.created_at.saturating_add(self.ttl_s.saturating_mul(1000));
        self.stale_at.map_or(end, |s| s.min(end))
    }

    /// Unix ms after which no rule lets the entry be served; stores may drop it then.
    pub fn expires_at(&self) -> u64 {
        let end = self.created_at.saturating_add(self.ttl_s.saturating_mul(1000));
        end.saturating_add(self.swr_s.saturating_add(self.sie_s).saturating_mul(1000))
    }

    /// The entry's standing at `now` (unix ms).
    pub fn freshness(&self, now: u64) -> Freshness {
        let fresh_until = self.fresh_until();
        let swr_until = fresh_until.saturating_add(self.swr_s.saturating_mul(1000));
        if now < fresh_until {
            Freshness::Fresh
        } else if now < swr_until {
            Freshness::StaleWhileRevalidate
        } else if now < swr_until.saturating_add(self.sie_s.saturating_mul(1000)) && now < self.expires_at() {
            Freshness::StaleIfError
        } else {
            Freshness::Expired
        }
    }

    /// The metadata of a context's data entry (the JSON of its `data`): what the node writes
    /// after asking the origin, and what the origin writes itself (`mizan_cache.Cache.put_data`).
    /// `generations` were read before the data was computed; each of the dependency's own tags
    /// records its generation from them (0 if absent).
    pub fn data(
        key: String,
        context: &str,
        params: &Map<String, Value>,
        created_at: u64,
        (ttl_s, swr_s, sie_s): (u64, u64, u64),
        generations: &BTreeMap<String, u64>,
    ) -> Meta {
        Meta {
            v: 1,
            kind: Kind::Data,
            key,
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            created_at,
            ttl_s,
            swr_s,
            sie_s,
            deps: vec![Dependency { context: context.to_string(), params: params.clone() }],
            etag: None,
            generation: dependency_tags([(context, params)])
                .into_iter()
                .map(|tag| {
                    let generation = generations.get(&tag).copied().unwrap_or(0);
                    (tag, generation)
                })
                .collect(),
            render: None,
            stale_at: None,
            extra: Map::new(),
        }
    }

    /// The purge tags of the entry: `c:<context>` and `c:<context>:<name>=<JCS(value)>` for
    /// each dependency, without duplicates.
    pub fn tags(&self) -> Vec<String> {
        dependency_tags(self.deps.iter().map(|d| (d.context.as_str(), &d.params)))
    }
}

/// The purge tags of dependencies given as (context, params): `c:<context>` and
/// `c:<context>:<name>=<JCS(value)>` for each, sorted, without duplicates. What a render reads
/// the generations of before it starts.
pub fn dependency_tags<'a>(deps: impl IntoIterator<Item = (&'a str, &'a Map<String, Value>)>) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for (context, params) in deps {
        tags.push(context_tag(context));
        for (name, value) in params {
            tags.push(param_tag(context, name, value));
        }
    }
    tags.sort();
    tags.dedup();
    tags
}

/// The tag every entry depending on `context` carries.
pub fn context_tag(context: &str) -> String {
    format!("c:{context}")
}

/// The tag of one param of a dependency on `context`.
pub fn param_tag(context: &str, name: &str, value: &Value) -> String {
    format!("c:{context}:{name}={}", jcs(value))
}

/// The tags whose intersection is a purge of `context` with `params` (subset match).
pub fn purge_tags(context: &str, params: &Map<String, Value>) -> Vec<String> {
    if params.is_empty() {
        return vec![context_tag(context)];
    }
    params.iter().map(|(name, value)| param_tag(context, name, value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta() -> Meta {
        serde_json::from_value(json!({
            "v": 1, "kind": "page", "key": "mz1:p:00", "status": 200, "headers": [["content-type", "text/html"]],
            "created_at": 1_000_000, "ttl_s": 60, "swr_s": 30, "sie_s": 100,
            "deps": [{"context": "product_detail", "params": {"id": 42}}, {"context": "product_list", "params": {}}],
            "etag": "\"abc\"", "generation": {"c:product_detail": 3, "c:product_detail:id=42": 5, "c:product_list": 0},
            "future_field": {"kept": true}
        }))
        .unwrap()
    }

    #[test]
    fn keeps_unknown_fields_on_rewrite() {
        let mut m = meta();
        m.stale_at = Some(5);
        let text = serde_json::to_value(&m).unwrap();
        assert_eq!(text["future_field"], json!({"kept": true}));
        assert_eq!(text["stale_at"], 5);
    }

    #[test]
    fn names_each_freshness_window() {
        let m = meta();
        assert_eq!(m.freshness(1_000_000), Freshness::Fresh);
        assert_eq!(m.freshness(1_059_999), Freshness::Fresh);
        assert_eq!(m.freshness(1_060_000), Freshness::StaleWhileRevalidate);
        assert_eq!(m.freshness(1_089_999), Freshness::StaleWhileRevalidate);
        assert_eq!(m.freshness(1_090_000), Freshness::StaleIfError);
        assert_eq!(m.freshness(1_189_999), Freshness::StaleIfError);
        assert_eq!(m.freshness(1_190_000), Freshness::Expired);
        assert_eq!(m.expires_at(), 1_190_000);
    }

    #[test]
    fn a_soft_purge_ends_freshness_early() {
        let mut m = meta();
        m.stale_at = Some(1_010_000);
        assert_eq!(m.freshness(1_009_999), Freshness::Fresh);
        assert_eq!(m.freshness(1_010_000), Freshness::StaleWhileRevalidate);
        assert_eq!(m.freshness(1_040_000), Freshness::StaleIfError);
    }

    #[test]
    fn tags_cover_contexts_and_params() {
        assert_eq!(meta().tags(), vec!["c:product_detail", "c:product_detail:id=42", "c:product_list"]);
        assert_eq!(purge_tags("cart", &Map::new()), vec!["c:cart"]);
        let params = json!({"user": "u1"}).as_object().unwrap().clone();
        assert_eq!(purge_tags("cart", &params), vec!["c:cart:user=\"u1\""]);
    }
}
