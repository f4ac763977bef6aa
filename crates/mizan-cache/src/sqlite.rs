//! The SQLite store: entries, tags and generations in one WAL-mode database file that
//! survives restarts. Puts and purges are each one `IMMEDIATE` transaction, which is what
//! makes the generation check atomic. Every SQLite call runs on tokio's blocking pool, never
//! on the runtime's threads.
//!
//! Writes (put, purge, remove, and removing a damaged row) go through one writer connection
//! behind a mutex. Reads (get, generations) use a small pool of reader connections: in WAL
//! mode a reader sees the last committed state and never waits for the writer, so hits go on
//! while a long purge holds it. A reader sees a purge either whole or not at all (it is one
//! transaction), and a purge has committed before it returns. A get leaves an expired row
//! where it is (a miss; the puts' sweep removes it), so a hit never writes.
//!
//! Every row carries the store's site (the manifest's `site`) in a `site` column that leads
//! every primary key, and every statement is confined to `site = <this site>`: several sites
//! can share one file and never read, purge, bump or sweep each other's rows.
//!
//! Generations are per tag (`tag_generations`, with the unix ms a purge last moved each); a
//! read ignores one not moved for [`GENERATION_TTL_MS`], and purges delete such rows a few
//! at a time.
//!
//! A damaged entry (metadata that does not parse) is removed and reported as a miss; a file
//! that is not a database, or not this schema, is refused at open with its path. A file of
//! schema 2 is brought to 3 in place (its per-context generations are replaced by the empty
//! per-tag table; its entries stay); nodes of the earlier version must not share it any more.

use super::meta::purge_tags;
use super::store::{
    Entry, GENERATION_TTL_MS, Generations, PurgeMode, PutOutcome, Store, check_site, moved, next_generation, now_ms,
};
use super::{CacheError, Meta};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// 3: generations per tag (2 had them per context: any purge of a context dropped every
/// write of it in flight). 2: the `site` column (1 had none: sites sharing a file purged each
/// other).
const SCHEMA_VERSION: i64 = 3;

/// What brings a schema 2 file to 3: the per-context generations go (the per-tag table is
/// created by [`SCHEMA`]).
const FROM_2: &str = "DROP TABLE IF EXISTS generations;";

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
CREATE TABLE IF NOT EXISTS tag_generations (
    site TEXT NOT NULL,
    tag TEXT NOT NULL,
    generation INTEGER NOT NULL,
    moved_at INTEGER NOT NULL,
    PRIMARY KEY (site, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tag_generations_moved_at ON tag_generations(site, moved_at);
";

/// `?3`: the oldest `moved_at` still remembered (now minus [`GENERATION_TTL_MS`]).
const GENERATION: &str = "SELECT generation FROM tag_generations WHERE site = ?1 AND tag = ?2 AND moved_at > ?3";

/// Unix ms before which a generation is forgotten.
fn forgotten_before() -> i64 {
    now_ms().saturating_sub(GENERATION_TTL_MS) as i64
}

/// Reader connections kept open between reads; more are opened when more reads run at once.
const IDLE_READERS: usize = 4;

/// The SQLite store of one site.
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Readers>,
    path: PathBuf,
    site: Arc<str>,
    /// Run SQLite on the calling thread instead of tokio's blocking pool ([`SqliteStore::inline`]).
    inline: bool,
    #[cfg(test)]
    pause: Arc<super::store::PauseHook>,
}

/// The reader connections of a file; none for an in-memory database, which only the writer's
/// connection sees (reads then go through the writer).
struct Readers {
    path: Option<PathBuf>,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn open(&self, path: &Path) -> Result<Connection, CacheError> {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let db = Connection::open_with_flags(path, flags).map_err(sql)?;
        db.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql)?;
        db.execute_batch("PRAGMA query_only=ON;").map_err(sql)?;
        Ok(db)
    }
}

/// What a reader found under a key.
enum Found {
    Entry(Arc<Entry>),
    Miss,
    /// A row whose metadata does not parse: its metadata text and the parse error.
    Damaged(String, String),
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> CacheError {
    CacheError::Corrupt { store: "sqlite", message: format!("{}: {e}", path.display()) }
}

/// An error opening the file: unavailable (read-only, locked, no permission, cannot open)
/// rather than corrupt, so that nobody deletes a good cache file because of a wrong word.
fn opening(path: &Path, e: rusqlite::Error) -> CacheError {
    use rusqlite::ErrorCode::*;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ReadOnly | CannotOpen | PermissionDenied | DatabaseBusy | DatabaseLocked) =>
        {
            CacheError::Unavailable { store: "sqlite", message: format!("{}: {e}", path.display()) }
        }
        _ => corrupt(path, e),
    }
}

fn unavailable(e: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable { store: "sqlite", message: e.to_string() }
}

/// The error, naming the file when it is the store's being unavailable (locked, read-only,
/// full), which is what an operator needs to read.
fn naming(path: &Path, e: CacheError) -> CacheError {
    match e {
        CacheError::Unavailable { store, message } => {
            CacheError::Unavailable { store, message: format!("{}: {message}", path.display()) }
        }
        other => other,
    }
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` as the store of `site` (the manifest's
    /// `site`), which sees only its own rows. Fails with [`CacheError::Site`] if the site is not
    /// `[A-Za-z0-9_.-]+`, and with [`CacheError::Corrupt`] naming the file if it is not a
    /// database or of another schema version.
    pub fn open(path: &Path, site: &str) -> Result<Self, CacheError> {
        check_site(site)?;
        let db = Connection::open(path).map_err(|e| opening(path, e))?;
        db.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| opening(path, e))?;
        // The first statement that reads the file tells a non-database apart.
        let mode: String = db.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| opening(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") && path != Path::new(":memory:") {
            return Err(corrupt(path, format!("cannot enable WAL (journal mode stays {mode})")));
        }
        db.execute_batch("PRAGMA synchronous=NORMAL;").map_err(|e| opening(path, e))?;
        let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| opening(path, e))?;
        if version == 2 {
            db.execute_batch(&format!(
                "BEGIN IMMEDIATE; {FROM_2} {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(|e| opening(path, e))?;
            tracing::info!(store = "sqlite", file = %path.display(), "cache file brought from schema 2 to 3");
        } else if version != 0 && version != SCHEMA_VERSION {
            return Err(corrupt(
                path,
                format!(
                    "schema version {version}, this node reads {SCHEMA_VERSION} \
                     (the file only holds a cache: remove it, or point the node at a new file)"
                ),
            ));
        }
        db.execute_batch(SCHEMA).map_err(|e| opening(path, e))?;
        db.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}")).map_err(|e| opening(path, e))?;
        let in_memory = path.as_os_str().is_empty() || path == Path::new(":memory:");
        let readers = Readers { path: (!in_memory).then(|| path.to_path_buf()), idle: Mutex::new(Vec::new()) };
        Ok(Self {
            writer: Arc::new(Mutex::new(db)),
            readers: Arc::new(readers),
            path: path.to_path_buf(),
            site: site.into(),
            inline: false,
            #[cfg(test)]
            pause: Default::default(),
        })
    }

    /// The same store, running each SQLite call on the thread that awaits it rather than on
    /// tokio's blocking pool: for callers that wait on threads of their own (Python's, with
    /// the GIL released, blocking on the runtime), which the hop to the pool and back would
    /// only slow down (about 10 µs a call). Never for a store awaited on a runtime's workers.
    pub fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    /// Caps the file at `pages` pages (`PRAGMA max_page_count`), as a full disk would: for the
    /// fault tests, which cannot fill a real disk without root.
    #[doc(hidden)]
    pub async fn cap_pages_for_tests(&self, pages: u64) -> Result<(), CacheError> {
        self.run(move |db| db.execute_batch(&format!("PRAGMA max_page_count = {pages}")).map_err(sql)).await
    }

    /// Runs `f` on the writer connection, on the blocking pool. Once started it runs to the
    /// end even if the caller stops waiting.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, CacheError> + Send + 'static,
    ) -> Result<T, CacheError> {
        let db = self.writer.clone();
        let job = move || {
            let mut db = db.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut db)
        };
        let done = if self.inline {
            job()
        } else {
            tokio::task::spawn_blocking(job).await.map_err(unavailable).and_then(|r| r)
        };
        done.map_err(|e| naming(&self.path, e))
    }

    /// Runs `f` on a reader connection, on the blocking pool: it never waits for the writer.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, CacheError> + Send + 'static,
    ) -> Result<T, CacheError> {
        let (readers, writer) = (self.readers.clone(), self.writer.clone());
        let job = move || {
            let Some(path) = &readers.path else {
                return f(&writer.lock().unwrap_or_else(|e| e.into_inner()));
            };
            let idle = readers.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let db = match idle {
                Some(db) => db,
                None => readers.open(path)?,
            };
            let out = f(&db);
            let mut idle = readers.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < IDLE_READERS {
                idle.push(db);
            }
            out
        };
        let done = if self.inline {
            job()
        } else {
            tokio::task::spawn_blocking(job).await.map_err(unavailable).and_then(|r| r)
        };
        done.map_err(|e| naming(&self.path, e))
    }
}

fn sql(e: rusqlite::Error) -> CacheError {
    unavailable(e)
}

/// The remembered generations of `tags` (0 for one never moved or forgotten).
fn current<'a>(db: &Connection, site: &str, tags: impl Iterator<Item = &'a String>) -> Result<Generations, CacheError> {
    let mut stmt = db.prepare_cached(GENERATION).map_err(sql)?;
    let oldest = forgotten_before();
    let mut out = Generations::new();
    for tag in tags {
        let g: Option<i64> = stmt.query_row(params![site, tag, oldest], |r| r.get(0)).optional().map_err(sql)?;
        out.insert(tag.clone(), g.unwrap_or(0) as u64);
    }
    Ok(out)
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
        let site = self.site.clone();
        let found = {
            let key = key.to_string();
            self.read(move |db| {
                let row: Option<(Vec<u8>, String, i64, Option<i64>)> = db
                    .prepare_cached("SELECT body, meta, expires_at, stale_at FROM entries WHERE site = ?1 AND key = ?2")
                    .and_then(|mut stmt| {
                        stmt.query_row([&*site, key.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                            .optional()
                    })
                    .map_err(sql)?;
                let Some((body, meta, expires_at, stale_at)) = row else { return Ok(Found::Miss) };
                if (expires_at as u64) <= now_ms() {
                    return Ok(Found::Miss); // the puts' sweep removes it
                }
                match serde_json::from_str::<Meta>(&meta) {
                    Ok(mut parsed) => {
                        parsed.stale_at = stale_at.map(|s| s as u64);
                        Ok(Found::Entry(Arc::new(Entry { body: body.into(), meta: parsed })))
                    }
                    Err(e) => Ok(Found::Damaged(meta, e.to_string())),
                }
            })
            .await?
        };
        match found {
            Found::Entry(entry) => Ok(Some(entry)),
            Found::Miss => Ok(None),
            Found::Damaged(meta, error) => {
                tracing::warn!(store = "sqlite", file = %self.path.display(), %key, %error, "damaged entry removed");
                let (key, site) = (key.to_string(), self.site.clone());
                self.run(move |db| {
                    // Only the damaged row: a put may have replaced it since it was read.
                    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
                    let removed = tx
                        .execute(
                            "DELETE FROM entries WHERE site = ?1 AND key = ?2 AND meta = ?3",
                            [&*site, &key, &meta],
                        )
                        .map_err(sql)?;
                    if removed > 0 {
                        tx.execute("DELETE FROM tags WHERE site = ?1 AND key = ?2", [&*site, &key]).map_err(sql)?;
                    }
                    tx.commit().map_err(sql)
                })
                .await?;
                Ok(None)
            }
        }
    }

    async fn generations(&self, tags: &[String]) -> Result<Generations, CacheError> {
        let tags = tags.to_vec();
        let site = self.site.clone();
        self.read(move |db| current(db, &site, tags.iter())).await
    }

    async fn put(&self, entry: Entry) -> Result<PutOutcome, CacheError> {
        let site = self.site.clone();
        self.run(move |db| {
            let site = &*site;
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
            let current = current(&tx, site, entry.meta.generation.keys())?;
            if let Some(tag) = moved(&entry.meta.generation, |t| current.get(t).copied().unwrap_or(0)) {
                return Ok(PutOutcome::Dropped { tag });
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
        #[cfg(test)]
        let pause = self.pause.clone();
        self.run(move |db| {
            let site = &*site;
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
            // Every tag's generation moves first, in this transaction; a few forgotten ones go.
            let now = now_ms();
            let remembered = current(&tx, site, tags.iter())?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO tag_generations (site, tag, generation, moved_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(site, tag) DO UPDATE SET generation = ?3, moved_at = ?4",
                    )
                    .map_err(sql)?;
                for tag in &tags {
                    let generation = next_generation(remembered.get(tag).copied().unwrap_or(0), now);
                    stmt.execute(params![site, tag, generation as i64, now as i64]).map_err(sql)?;
                }
            }
            tx.execute(
                "DELETE FROM tag_generations WHERE site = ?1 AND tag IN
                 (SELECT tag FROM tag_generations WHERE site = ?1 AND moved_at <= ?2 LIMIT 16)",
                params![site, forgotten_before()],
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
            #[cfg(test)]
            let _done = pause.pause_blocking();
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

#[cfg(test)]
mod tests {
    use super::SqliteStore;
    use crate::store::Paused;
    use crate::{Entry, Generations, Meta, PurgeMode, PutOutcome, Store, dependency_tags, now_ms};
    use serde_json::{Map, Value, json};
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    /// A database file of its own per test case: pid, a counter and the clock's nanoseconds.
    struct TempDb(PathBuf);

    impl TempDb {
        fn new(what: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            Self(std::env::temp_dir().join(format!("mizan-unit-{what}-{}-{n}-{nanos}.db", std::process::id())))
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }

    /// A page depending on `hot` with `id`, recording `generation` (what a render read).
    fn entry(key: &str, id: u64, generation: &Generations) -> Entry {
        let meta: Meta = serde_json::from_value(json!({
            "v": 1, "kind": "page", "key": key, "status": 200, "headers": [],
            "created_at": now_ms(), "ttl_s": 60, "swr_s": 30, "sie_s": 100,
            "deps": [{"context": "hot", "params": {"id": id}}], "etag": null, "generation": generation
        }))
        .unwrap();
        Entry { body: bytes::Bytes::from_static(b"body"), meta }
    }

    fn id(id: u64) -> Map<String, Value> {
        json!({ "id": id }).as_object().unwrap().clone()
    }

    /// What a render of a page depending on `hot` with `id` reads when it starts.
    async fn read(store: &SqliteStore, n: u64) -> Generations {
        store.generations(&dependency_tags([("hot", &id(n))])).await.unwrap()
    }

    /// A deadline that fails the test with a message instead of hanging it.
    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), f).await.unwrap_or_else(|_| panic!("{what} did not complete"))
    }

    /// A purge stopped inside its transaction (the writer held, its rows deleted but not
    /// committed): gets and generations are answered meanwhile, from the last committed state,
    /// and see the whole purge once it returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gets_and_generations_proceed_while_a_long_purge_holds_the_writer() {
        let db = TempDb::new("long-purge");
        let store = Arc::new(SqliteStore::open(&db.0, "shop").unwrap());
        let before = read(&store, 0).await;
        for i in 0..300 {
            assert_eq!(store.put(entry(&format!("k{i}"), 0, &before)).await.unwrap(), PutOutcome::Stored);
        }
        store.put(entry("other", 1, &read(&store, 1).await)).await.unwrap();
        let Paused { reached, resume, .. } = store.pause.arm();
        let purge = tokio::spawn({
            let store = store.clone();
            async move { store.purge("hot", &id(0), PurgeMode::Hard).await.unwrap() }
        });
        within("the purge's deletions", reached).await.unwrap();

        assert!(within("a hit", store.get("other")).await.unwrap().is_some());
        assert!(
            within("a hit on a row the purge deleted", store.get("k7")).await.unwrap().is_some(),
            "a reader sees the last committed state, not the purge's uncommitted deletions"
        );
        assert_eq!(within("generations", read(&store, 0)).await, before, "not moved until the purge commits");
        assert!(!purge.is_finished(), "the purge waited for the test all along");

        resume.send(()).unwrap();
        assert_eq!(within("the purge", purge).await.unwrap(), 300);
        assert!(store.get("k7").await.unwrap().is_none());
        assert!(store.get("k299").await.unwrap().is_none());
        assert!(store.get("other").await.unwrap().is_some());
        let after = read(&store, 0).await;
        assert!(after["c:hot:id=0"] > before["c:hot:id=0"]);
        assert_eq!(after["c:hot"], before["c:hot"], "a purge of one id leaves the context's generation");
        // A render that read the old generation meanwhile is not stored.
        let late = store.put(entry("k7", 0, &before)).await.unwrap();
        assert_eq!(late, PutOutcome::Dropped { tag: "c:hot:id=0".into() });
    }

    /// Reads run on connections of their own: many at once, none waiting for another.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reads_and_a_held_writer_do_not_wait_for_each_other() {
        let db = TempDb::new("readers");
        let store = Arc::new(SqliteStore::open(&db.0, "shop").unwrap());
        store.put(entry("k", 0, &Generations::new())).await.unwrap();
        // The writer is held (as by a long put or purge) for the whole test.
        let writer = store.writer.clone();
        let (held_tx, held) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
        let holder = tokio::task::spawn_blocking(move || {
            let _guard = writer.lock().unwrap();
            held_tx.send(()).unwrap();
            let _ = release_rx.blocking_recv();
        });
        within("the writer held", held).await.unwrap();
        let reads: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.get("k").await.unwrap().is_some() })
            })
            .collect();
        for read in reads {
            assert!(within("a read", read).await.unwrap());
        }
        release.send(()).unwrap();
        holder.await.unwrap();
        assert!(store.readers.idle.lock().unwrap().len() <= super::IDLE_READERS);
    }

    /// A file of schema 2 (per-context generations) is brought to 3 in place: its entries stay
    /// and are still purged; its old generations table goes.
    #[tokio::test]
    async fn a_schema_2_file_is_upgraded_in_place() {
        let db = TempDb::new("schema2");
        {
            let store = SqliteStore::open(&db.0, "shop").unwrap();
            store.put(entry("k", 0, &read(&store, 0).await)).await.unwrap();
        }
        let raw = rusqlite::Connection::open(&db.0).unwrap();
        raw.execute_batch(
            "DROP TABLE tag_generations;
             CREATE TABLE generations (site TEXT NOT NULL, context TEXT NOT NULL, generation INTEGER NOT NULL,
                                       PRIMARY KEY (site, context));
             INSERT INTO generations VALUES ('shop', 'hot', 7);
             PRAGMA user_version = 2;",
        )
        .unwrap();
        drop(raw);
        let store = SqliteStore::open(&db.0, "shop").unwrap();
        assert!(store.get("k").await.unwrap().is_some(), "entries survive the upgrade");
        assert_eq!(store.purge("hot", &id(0), PurgeMode::Hard).await.unwrap(), 1);
        let raw = rusqlite::Connection::open(&db.0).unwrap();
        let version: i64 = raw.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        let old: i64 =
            raw.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'generations'", [], |r| r.get(0)).unwrap();
        assert_eq!((version, old), (super::SCHEMA_VERSION, 0));
    }
}
