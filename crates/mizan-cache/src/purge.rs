//! The body of `POST /_mizan/purge`: `{"purge": [{"context": ..., "params": {...}}],
//! "mode": "hard" | "soft"}`, signed with `X-Mizan-Signature` ([`super::signature`]).

use super::PurgeMode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A purge request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// What to purge.
    pub purge: Vec<PurgeTarget>,
    /// `hard` (default) or `soft`.
    #[serde(default)]
    pub mode: ModeName,
}

/// One context and params subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeTarget {
    /// The context.
    pub context: String,
    /// The params subset (`{}` or absent: the whole context).
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// The wire name of a purge mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    /// Remove.
    #[default]
    Hard,
    /// Mark stale.
    Soft,
}

impl From<ModeName> for PurgeMode {
    fn from(mode: ModeName) -> Self {
        match mode {
            ModeName::Hard => PurgeMode::Hard,
            ModeName::Soft => PurgeMode::Soft,
        }
    }
}
