//! The SQLite store: entries, tags and generations in one WAL-mode database file that
//! survives restarts. Puts and purges are each one `IMMEDIATE` transaction, which is what
//! makes the generation check atomic. Blocking calls run on tokio's blocking pool.
//!
//! A damaged entry (metadata that does not parse) is removed and reported as a miss; a file
//! that is not a database, or not this schema, is refused at open with its path.

use super::meta::purge_tags;
use super::store::{Entry, Generations, PurgeMode, PutOutcome, Store, moved, now_ms};
use super::{CacheError, Meta};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    meta TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    stale_at INTEGER
);
CREATE INDEX IF NOT EXISTS entries_expires_at ON entries(expires_at);
CREATE TABLE IF NOT EXISTS tags (
    tag TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (tag, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_key ON tags(key);
CREATE TABLE IF NOT EXISTS generations (
    context TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);
";

/// The SQLite store.
pub struct SqliteStore {
    db: Arc<Mutex<Connection>>,
    path: PathBuf,
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> CacheError {
    CacheError::Corrupt { store: "sqlite", message: format!("{}: {e}", path.display()) }
}

fn unavailable(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable { store: "sqlite", message: e.to_string() }
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        let db = Connection::open(path).map_err(|e| corrupt(path, e))?;
        db.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| corrupt(path, e))?;
        // The first statement that reads the file tells a non-database apart.
        let mode: String = db.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| corrupt(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") && path != Path::new(":memory:") {
            return Err(corrupt(path, format!("cannot enable WAL (journal mode stays {mode})")));
        }
        db.execute_batch("PRAGMA synchronous=NORMAL;").map_err(|e| corrupt(path, e))?;
        let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| corrupt(path, e))?;
        if version != 0 && version != SCHEMA_VERSION {
            return Err(corrupt(path, format!("schema version {version}, this node reads {SCHEMA_VERSION}")));
        }
        db.execute_batch(SCHEMA).map_err(|e| corrupt(path, e))?;
        db.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}")).map_err(|e| corrupt(path, e))?;
        Ok(Self { db: Arc::new(Mutex::new(db)), path: path.to_path_buf() })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, CacheError> + Send + 'static,
    ) -> Result<T, CacheError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut db)
        })
        .await
        .map_err(unavailable)?
    }
}

fn sql(e: rusqlite::Error) -> CacheError {
    unavailable(e)
}

fn unlink(tx: &rusqlite::Transaction<'_>, key: &str) -> Result<(), CacheError> {
    tx.execute("DELETE FROM entries WHERE key = ?1", [key]).map_err(sql)?;
    tx.execute("DELETE FROM tags WHERE key = ?1", [key]).map_err(sql)?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, CacheError> {
        let key = key.to_string();
        let path = self.path.clone();
        self.run(move |db| {
            let row: Option<(Vec<u8>, String, i64, Option<i64>)> = db
                .query_row("SELECT body, meta, expires_at, stale_at FROM entries WHERE key = ?1", [&key], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
                .map_err(sql)?;
            let Some((body, meta, expires_at, stale_at)) = row else { return Ok(None) };
            let expired = (expires_at as u64) <= now_ms();
            let parsed = serde_json::from_str::<Meta>(&meta);
            if expired || parsed.is_err() {
                if let Err(e) = &parsed {
                    tracing::warn!(store = "sqlite", file = %path.display(), %key, error = %e, "damaged entry removed");
                }
                let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
                unlink(&tx, &key)?;
                tx.commit().map_err(sql)?;
                return Ok(None);
            }
            let mut meta = parsed.map_err(sql_json)?;
            meta.stale_at = stale_at.map(|s| s as u64);
            Ok(Some(Arc::new(Entry { body: body.into(), meta })))
        })
        .await
    }

    async fn generations(&self, contexts: &[String]) -> Result<Generations, CacheError> {
        let contexts = contexts.to_vec();
        self.run(move |db| {
            let mut out = Generations::new();
            let mut stmt = db.prepare_cached("SELECT generation FROM generations WHERE context = ?1").map_err(sql)?;
            for context in contexts {
                let g: Option<i64> = stmt.query_row([&context], |r| r.get(0)).optional().map_err(sql)?;
                out.insert(context, g.unwrap_or(0) as u64);
            }
            Ok(out)
        })
        .await
    }

    async fn put(&self, entry: Entry) -> Result<PutOutcome, CacheError> {
        self.run(move |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
            let mut current = Generations::new();
            {
                let mut stmt =
                    tx.prepare_cached("SELECT generation FROM generations WHERE context = ?1").map_err(sql)?;
                for context in entry.meta.generation.keys() {
                    let g: Option<i64> = stmt.query_row([context], |r| r.get(0)).optional().map_err(sql)?;
                    current.insert(context.clone(), g.unwrap_or(0) as u64);
                }
            }
            if let Some(context) = moved(&entry.meta.generation, |c| current.get(c).copied().unwrap_or(0)) {
                return Ok(PutOutcome::Dropped { context });
            }
            let key = entry.meta.key.as_str();
            unlink(&tx, key)?;
            let meta = serde_json::to_string(&entry.meta).map_err(sql_json)?;
            tx.execute(
                "INSERT INTO entries (key, body, meta, expires_at, stale_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key,
                    &entry.body[..],
                    meta,
                    entry.meta.expires_at() as i64,
                    entry.meta.stale_at.map(|s| s as i64)
                ],
            )
            .map_err(sql)?;
            {
                let mut stmt =
                    tx.prepare_cached("INSERT OR IGNORE INTO tags (tag, key) VALUES (?1, ?2)").map_err(sql)?;
                for tag in entry.meta.tags() {
                    stmt.execute(params![tag, key]).map_err(sql)?;
                }
            }
            // Expired rows go a few at a time, so no put pays for a large sweep.
            tx.execute(
                "DELETE FROM tags WHERE key IN (SELECT key FROM entries WHERE expires_at <= ?1 LIMIT 16)",
                [now_ms() as i64],
            )
            .map_err(sql)?;
            tx.execute(
                "DELETE FROM entries WHERE key IN (SELECT key FROM entries WHERE expires_at <= ?1 LIMIT 16)",
                [now_ms() as i64],
            )
            .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(PutOutcome::Stored)
        })
        .await
    }

    async fn purge(&self, context: &str, params: &Map<String, Value>, mode: PurgeMode) -> Result<u64, CacheError> {
        let context = context.to_string();
        let tags = purge_tags(&context, params);
        self.run(move |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
            tx.execute(
                "INSERT INTO generations (context, generation) VALUES (?1, 1)
                 ON CONFLICT(context) DO UPDATE SET generation = generation + 1",
                [&context],
            )
            .map_err(sql)?;
            let placeholders = vec!["?"; tags.len()].join(",");
            let matched = format!(
                "SELECT key FROM tags WHERE tag IN ({placeholders}) GROUP BY key HAVING COUNT(*) = {}",
                tags.len()
            );
            let count = match mode {
                PurgeMode::Hard => {
                    let n = tx
                        .execute(
                            &format!("DELETE FROM entries WHERE key IN ({matched})"),
                            params_from_iter(tags.iter()),
                        )
                        .map_err(sql)?;
                    tx.execute(&format!("DELETE FROM tags WHERE key IN ({matched})"), params_from_iter(tags.iter()))
                        .map_err(sql)?;
                    n
                }
                PurgeMode::Soft => {
                    let now = now_ms() as i64;
                    let mut args: Vec<rusqlite::types::Value> = vec![now.into()];
                    args.extend(tags.iter().map(|t| rusqlite::types::Value::from(t.clone())));
                    tx.execute(
                        // `?1` is now; the anonymous `?`s of `matched` number on from 2.
                        &format!(
                            "UPDATE entries SET stale_at = MIN(COALESCE(stale_at, ?1), ?1) WHERE key IN ({matched})"
                        ),
                        params_from_iter(args.iter()),
                    )
                    .map_err(sql)?
                }
            };
            tx.commit().map_err(sql)?;
            Ok(count as u64)
        })
        .await
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        let key = key.to_string();
        self.run(move |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
            unlink(&tx, &key)?;
            tx.commit().map_err(sql)
        })
        .await
    }
}

fn sql_json(e: serde_json::Error) -> CacheError {
    unavailable(e)
}
