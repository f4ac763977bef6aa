//! Naming a store: `memory`, `sqlite:<path>` or a Redis URL, as the node's `--store` and
//! Python's `Cache.from_url` take it.

use std::path::PathBuf;

/// Which store to open: what the node's `--store` and Python's `Cache.from_url` take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In memory, bounded to this many bytes (the default).
    Memory(u64),
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A Redis URL.
    Redis(String),
}

impl std::str::FromStr for StoreConfig {
    type Err = String;

    /// `memory`, `sqlite:<path>`, or a Redis URL: `redis://`, `rediss://` (TLS),
    /// `redis+cluster://`, `rediss+cluster://`, `redis+sentinel://`, `rediss+sentinel://`
    /// ([`crate::redis::Target::parse`]; docs/operations.md, "Redis"). A Redis URL is
    /// checked here (no file read, no connection); no error holds its credentials.
    fn from_str(s: &str) -> Result<Self, String> {
        use crate::redis::Target;
        if s == "memory" {
            Ok(StoreConfig::Memory(crate::memory::DEFAULT_CAPACITY))
        } else if let Some(path) = s.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err("sqlite: needs the database file's path, e.g. sqlite:/var/lib/mizan/cache.db".into());
            }
            Ok(StoreConfig::Sqlite(PathBuf::from(path)))
        } else if s.split_once("://").is_some_and(|(scheme, _)| scheme.starts_with("redis")) {
            Target::parse(s)?;
            Ok(StoreConfig::Redis(s.to_string()))
        } else {
            // Only the scheme is shown: the rest may hold a password.
            let shown = match s.split_once("://") {
                Some((scheme, _)) if scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) => {
                    format!(" \"{scheme}://…\"")
                }
                _ => String::new(),
            };
            Err(format!("unknown store{shown}: use memory, sqlite:<path> or a Redis URL: {}", Target::FORMS))
        }
    }
}

impl StoreConfig {
    /// How the store is named in logs: a Redis URL without its user and password.
    pub fn redacted(&self) -> String {
        match self {
            StoreConfig::Memory(bytes) => format!("memory ({} MiB)", bytes >> 20),
            StoreConfig::Sqlite(path) => format!("sqlite:{}", path.display()),
            StoreConfig::Redis(url) => crate::redis::Target::redact(url),
        }
    }
}
