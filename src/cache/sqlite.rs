//! The SQLite store: entries, tags and generations in one WAL-mode database file that
//! survives restarts. Puts and purges are each one `IMMEDIATE` transaction, which is what
//! makes the generation check atomic. Blocking calls run on tokio's blocking pool.
//!
//! Every row carries the store's site (the manifest's `site`) in a `site` column that leads
//! every primary key, and every statement is confined to `site = <this site>`: several sites
//! can share one file and never read, purge, bump or sweep each other's rows.
//!
//! A damaged entry (metadata that does not parse) is removed and reported as a miss; a file
//! that is not a database, or not this schema, is refused at open with its path.

use super::meta::purge_tags;
use super::store::{Entry, Generations, PurgeMode, PutOutcome, Store, check_site, moved, now_ms};
use super::{CacheError, Meta};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// 2: the `site` column (1 had none: sites sharing a file purged each other).
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    site TEXT NOT NULL,
    key TEXT NOT NULL,
    body BLOB NOT NULL,
    meta TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    stale_at INTEGER,
    PRIMARY KEY (site, key)
);
CREATE INDEX IF NOT EXISTS entries_expires_at ON entries(site, expires_at);
CREATE TABLE IF NOT EXISTS tags (
    site TEXT NOT NULL,
    tag TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (site, tag, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_key ON tags(site, key);
CREATE TABLE IF NOT EXISTS generations (
    site TEXT NOT NULL,
    context TEXT NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (site, context)
);
";

const GENERATION: &str = "SELECT generation FROM generations WHERE site = ?1 AND context = ?2";

/// The SQLite store of one site.
pub struct SqliteStore {
    db: Arc<Mutex<Connection>>,
    path: PathBuf,
    site: Arc<str>,
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> CacheError {
    CacheError::Corrupt { store: "sqlite", message: format!("{}: {e}", path.display()) }
}

fn unavailable(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable { store: "sqlite", message: e.to_string() }
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` as the store of `site` (the manifest's
    /// `site`), which sees only its own rows. Fails with [`CacheError::Site`] if the site is not
    /// `[A-Za-z0-9_.-]+`, and with [`CacheError::Corrupt`] naming the file if it is not a
    /// database or of another schema version.
    pub fn open(path: &Path, site: &str) -> Result<Self, CacheError> {
        check_site(site)?;
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
            return Err(corrupt(
                path,
                format!(
                    "schema version {version}, this node reads {SCHEMA_VERSION} \
                     (the file only holds a cache: remove it, or point the node at a new file)"
                ),
            ));
        }
        db.execute_batch(SCHEMA).map_err(|e| corrupt(path, e))?;
        db.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}")).map_err(|e| corrupt(path, e))?;
        Ok(Self { db: Arc::new(Mutex::new(db)), path: path.to_path_buf(), site: site.into() })
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

fn unlink(tx: &rusqlite::Transaction<'_>, site: &str, key: &str) -> Result<(), CacheError> {
    tx.execute("DELETE FROM entries WHERE site = ?1 AND key = ?2", [site, key]).map_err(sql)?;
    tx.execute("DELETE FROM tags WHERE site = ?1 AND key = ?2", [site, key]).map_err(sql)?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, CacheError> {
        let key = key.to_string();
        let (path, site) = (self.path.clone(), self.site.clone());
        self.run(move |db| {
            let row: Option<(Vec<u8>, String, i64, Option<i64>)> = db
                .query_row(
                    "SELECT body, meta, expires_at, stale_at FROM entries WHERE site = ?1 AND key = ?2",
                    [&*site, key.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
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
                unlink(&tx, &site, &key)?;
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
        let site = self.site.clone();
        self.run(move |db| {
            let mut out = Generations::new();
            let mut stmt = db.prepare_cached(GENERATION).map_err(sql)?;
            for context in contexts {
                let g: Option<i64> =
                    stmt.query_row([&*site, context.as_str()], |r| r.get(0)).optional().map_err(sql)?;
                out.insert(context, g.unwrap_or(0) as u64);
            }
            Ok(out)
        })
        .await
    }

    async fn put(&self, entry: Entry) -> Result<PutOutcome, CacheError> {
        let site = self.site.clone();
        self.run(move |db| {
            let site = &*site;
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
            let mut current = Generations::new();
            {
                let mut stmt = tx.prepare_cached(GENERATION).map_err(sql)?;
                for context in entry.meta.generation.keys() {
                    let g: Option<i64> =
                        stmt.query_row([site, context.as_str()], |r| r.get(0)).optional().map_err(sql)?;
                    current.insert(context.clone(), g.unwrap_or(0) as u64);
                }
            }
            if let Some(context) = moved(&entry.meta.generation, |c| current.get(c).copied().unwrap_or(0)) {
                return Ok(PutOutcome::Dropped { context });
            }
            let key = entry.meta.key.as_str();
            unlink(&tx, site, key)?;
            let meta = serde_json::to_string(&entry.meta).map_err(sql_json)?;
            tx.execute(
                "INSERT INTO entries (site, key, body, meta, expires_at, stale_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    site,
                    key,
                    &entry.body[..],
                    meta,
                    entry.meta.expires_at() as i64,
                    entry.meta.stale_at.map(|s| s as i64)
                ],
            )
            .map_err(sql)?;
            {
                let mut stmt = tx
                    .prepare_cached("INSERT OR IGNORE INTO tags (site, tag, key) VALUES (?1, ?2, ?3)")
                    .map_err(sql)?;
                for tag in entry.meta.tags() {
                    stmt.execute(params![site, tag, key]).map_err(sql)?;
                }
            }
            // This site's expired rows go a few at a time, so no put pays for a large sweep.
            let now = now_ms() as i64;
            tx.execute(
                "DELETE FROM tags WHERE site = ?1 AND key IN
                 (SELECT key FROM entries WHERE site = ?1 AND expires_at <= ?2 LIMIT 16)",
                params![site, now],
            )
            .map_err(sql)?;
            tx.execute(
                "DELETE FROM entries WHERE site = ?1 AND key IN
                 (SELECT key FROM entries WHERE site = ?1 AND expires_at <= ?2 LIMIT 16)",
                params![site, now],
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
        let site = self.site.clone();
        self.run(move |db| {
            let site = &*site;
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
            tx.execute(
                "INSERT INTO generations (site, context, generation) VALUES (?1, ?2, 1)
                 ON CONFLICT(site, context) DO UPDATE SET generation = generation + 1",
                [site, context.as_str()],
            )
            .map_err(sql)?;
            // `?1` is the site, `?2`… the tags; the soft purge binds `now` after them.
            let placeholders = (0..tags.len()).map(|i| format!("?{}", i + 2)).collect::<Vec<_>>().join(",");
            let matched = format!(
                "SELECT key FROM tags WHERE site = ?1 AND tag IN ({placeholders}) GROUP BY key HAVING COUNT(*) = {}",
                tags.len()
            );
            let mut args: Vec<rusqlite::types::Value> = vec![site.to_string().into()];
            args.extend(tags.iter().map(|t| rusqlite::types::Value::from(t.clone())));
            let count = match mode {
                PurgeMode::Hard => {
                    let n = tx
                        .execute(
                            &format!("DELETE FROM entries WHERE site = ?1 AND key IN ({matched})"),
                            params_from_iter(args.iter()),
                        )
                        .map_err(sql)?;
                    tx.execute(
                        &format!("DELETE FROM tags WHERE site = ?1 AND key IN ({matched})"),
                        params_from_iter(args.iter()),
                    )
                    .map_err(sql)?;
                    n
                }
                PurgeMode::Soft => {
                    let now = format!("?{}", args.len() + 1);
                    args.push((now_ms() as i64).into());
                    tx.execute(
                        &format!(
                            "UPDATE entries SET stale_at = MIN(COALESCE(stale_at, {now}), {now})
                             WHERE site = ?1 AND key IN ({matched})"
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
        let site = self.site.clone();
        self.run(move |db| {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
            unlink(&tx, &site, &key)?;
            tx.commit().map_err(sql)
        })
        .await
    }
}

fn sql_json(e: serde_json::Error) -> CacheError {
    unavailable(e)
}
