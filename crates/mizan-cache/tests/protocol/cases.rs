//! The declarative protocol cases of `tests/vectors/cases.json` (its `format` says what each
//! step does), run on every store: memory, SQLite (a file per case), one Redis and a
//! three-master Redis Cluster (one per test, each case under sites of its own). The Python
//! package runs the same file (crates/mizan-cache-py/tests/test_cases.py). Every case runs
//! whatever fails before it; a failure names the case, the step's index and its op.

use crate::common::{root, scratch_db};
use mizan_cache::memory::MemoryStore;
use mizan_cache::meta::purge_tags;
use mizan_cache::redis::RedisStore;
use mizan_cache::sqlite::SqliteStore;
use mizan_cache::testing::{RedisCluster, RedisServer};
use mizan_cache::{Generations, Keys, Meta, PurgeMode, PutOutcome, Store, dependency_tags, now_ms};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

type Params = Map<String, Value>;

/// `[context, params]`.
type Dep = (String, Params);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[allow(dead_code)]
    about: String,
    #[allow(dead_code)]
    format: Value,
    secret: String,
    meta_defaults: Params,
    cases: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    about: Option<String>,
    #[serde(default)]
    sites: Option<Vec<String>>,
    #[serde(default)]
    backends: Option<Vec<String>>,
    steps: Vec<Value>,
}

struct Case {
    name: String,
    sites: Vec<String>,
    backends: Vec<String>,
    steps: Vec<(Value, Step)>,
}

/// `{context, params}`: the data key of the file's secret.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct DataKey {
    context: String,
    params: Params,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expected {
    Stored,
    Dropped,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Hard,
    Soft,
}

/// A put's `generation`: a reading saved by a `generations` step, or a literal map.
#[derive(Deserialize)]
#[serde(untagged)]
enum GenerationSpec {
    Reading(String),
    Literal(Generations),
}

/// A number or the name of a saved reading (its value of the same tag).
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Operand {
    Number(u64),
    Reading(String),
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Rule {
    Exactly(u64),
    Compare(Compare),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Compare {
    #[serde(default)]
    gt: Option<Operand>,
    #[serde(default)]
    eq: Option<Operand>,
}

/// A field that may be `null`, told apart from an absent one.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetExpect {
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_hex: Option<String>,
    #[serde(default, deserialize_with = "present")]
    json: Option<Value>,
    #[serde(default)]
    meta: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    stale_at: Option<Value>,
    #[serde(default)]
    freshness: Option<String>,
    #[serde(default)]
    freshness_in: Vec<(u64, String)>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Step {
    Put {
        site: Option<String>,
        key: Option<String>,
        data: Option<DataKey>,
        body: Option<String>,
        body_hex: Option<String>,
        deps: Option<Vec<Dep>>,
        meta: Option<Params>,
        age_s: Option<u64>,
        stale_ago_s: Option<u64>,
        generation: Option<GenerationSpec>,
        expect: Option<Expected>,
        dropped_by: Option<String>,
    },
    Get {
        site: Option<String>,
        key: Option<String>,
        data: Option<DataKey>,
        /// `null` or a [`GetExpect`]; required.
        expect: Value,
    },
    Present {
        site: Option<String>,
        keys: Vec<String>,
        expect: Vec<bool>,
    },
    Purge {
        site: Option<String>,
        context: String,
        params: Option<Params>,
        mode: Option<Mode>,
        #[serde(rename = "as")]
        name: Option<String>,
        expect: u64,
    },
    Remove {
        site: Option<String>,
        key: Option<String>,
        data: Option<DataKey>,
    },
    Generations {
        site: Option<String>,
        deps: Option<Vec<Dep>>,
        tags: Option<Vec<String>>,
        save: Option<String>,
        expect: Option<BTreeMap<String, Rule>>,
    },
    Tags {
        deps: Vec<Dep>,
        expect: Vec<String>,
    },
    PurgeTags {
        context: String,
        params: Option<Params>,
        expect: Vec<String>,
    },
}

const BACKENDS: [&str; 4] = ["memory", "sqlite", "redis", "cluster"];

/// The case file, checked: unique names, known backends, each step of a known form.
fn load() -> (CaseFile, Vec<Case>) {
    let path = root().join("tests/vectors/cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut file: CaseFile = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names = BTreeSet::new();
    let mut cases = Vec::new();
    for raw in std::mem::take(&mut file.cases) {
        assert!(names.insert(raw.name.clone()), "two cases are named {:?}", raw.name);
        let backends = raw.backends.unwrap_or_else(|| BACKENDS.map(String::from).into());
        for b in &backends {
            assert!(BACKENDS.contains(&b.as_str()), "case {:?}: unknown backend {b:?}", raw.name);
        }
        let steps = raw
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let step = serde_json::from_value(v.clone())
                    .unwrap_or_else(|e| panic!("case {:?} step {i}: {e}: {}", raw.name, brief(&v)));
                (v, step)
            })
            .collect();
        let sites = raw.sites.unwrap_or_else(|| vec!["shop".into()]);
        cases.push(Case { name: raw.name, sites, backends, steps });
    }
    (file, cases)
}

/// A step as written, cut short for a message.
fn brief(step: &Value) -> String {
    let text = step.to_string();
    match text.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// The backend the cases of one test run on, and what must live as long as it.
enum Backend {
    Memory,
    Sqlite,
    Redis(RedisServer),
    Cluster(RedisCluster),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Redis(_) => "redis",
            Backend::Cluster(_) => "cluster",
        }
    }

    /// Fresh stores of `sites` for case number `n`, all on one backend: one SQLite file per
    /// case; on Redis, sites prefixed with the case's number, so no case sees another's keys.
    async fn stores(&self, n: usize, sites: &[String]) -> Result<BTreeMap<String, Arc<dyn Store>>, String> {
        let path = matches!(self, Backend::Sqlite).then(|| scratch_db("cases"));
        let mut stores: BTreeMap<String, Arc<dyn Store>> = BTreeMap::new();
        for site in sites {
            let unique = format!("case{n}-{site}");
            let store: Arc<dyn Store> = match self {
                Backend::Memory => Arc::new(MemoryStore::new(64 << 20)),
                Backend::Sqlite => {
                    let path = path.as_deref().expect("a file for SQLite");
                    Arc::new(SqliteStore::open(path, site).map_err(|e| e.to_string())?)
                }
                Backend::Redis(server) => {
                    Arc::new(RedisStore::connect(&server.url(), &unique).await.map_err(|e| e.to_string())?)
                }
                Backend::Cluster(cluster) => {
                    Arc::new(RedisStore::connect(&cluster.url(), &unique).await.map_err(|e| e.to_string())?)
                }
            };
            stores.insert(site.clone(), store);
        }
        Ok(stores)
    }
}

/// What a case has seen so far.
struct Run<'a> {
    file: &'a CaseFile,
    keys: &'a Keys,
    sites: &'a [String],
    stores: BTreeMap<String, Arc<dyn Store>>,
    /// The metadata of the last stored put of each (site, key).
    put: HashMap<(String, String), Meta>,
    /// Generations saved by name.
    readings: HashMap<String, Generations>,
    /// Soft (and hard) purges by name: unix ms before and after the call.
    purges: HashMap<String, (u64, u64)>,
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn deps_json(deps: &[Dep]) -> Value {
    Value::Array(
        deps.iter()
            .map(|(context, params)| serde_json::json!({"context": context, "params": Value::Object(params.clone())}))
            .collect(),
    )
}

fn tags_of(deps: &[Dep]) -> Vec<String> {
    dependency_tags(deps.iter().map(|(c, p)| (c.as_str(), p)))
}

fn mode(m: Option<Mode>) -> PurgeMode {
    match m {
        Some(Mode::Soft) => PurgeMode::Soft,
        _ => PurgeMode::Hard,
    }
}

impl Run<'_> {
    fn store(&self, site: &Option<String>) -> Result<(String, Arc<dyn Store>), String> {
        let site = site.clone().unwrap_or_else(|| self.sites[0].clone());
        let store = self.stores.get(&site).ok_or_else(|| format!("site {site:?} is not among the case's sites"))?;
        Ok((site, store.clone()))
    }

    fn key(&self, key: &Option<String>, data: &Option<DataKey>) -> Result<String, String> {
        match (key, data) {
            (Some(key), None) => Ok(key.clone()),
            (None, Some(d)) => Ok(self.keys.data_key(&d.context, &d.params)),
            _ => Err("give one of key and data".into()),
        }
    }

    fn operand(&self, operand: &Operand, tag: &str) -> Result<u64, String> {
        match operand {
            Operand::Number(n) => Ok(*n),
            Operand::Reading(name) => self
                .readings
                .get(name)
                .and_then(|r| r.get(tag))
                .copied()
                .ok_or_else(|| format!("no reading {name:?} of {tag}")),
        }
    }

    async fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Put {
                site,
                key,
                data,
                body,
                body_hex,
                deps,
                meta,
                age_s,
                stale_ago_s,
                generation,
                expect,
                dropped_by,
            } => {
                let (site, store) = self.store(site)?;
                let key = self.key(key, data)?;
                let body = match (body, body_hex) {
                    (Some(text), None) => text.as_bytes().to_vec(),
                    (None, Some(hex)) => hex::decode(hex).map_err(|e| format!("body_hex: {e}"))?,
                    _ => return Err("give one of body and body_hex".into()),
                };
                let deps = match (deps, data) {
                    (Some(deps), _) => deps.clone(),
                    (None, Some(d)) => vec![(d.context.clone(), d.params.clone())],
                    (None, None) => return Err("a page needs deps".into()),
                };
                let now = now_ms();
                let mut m = self.file.meta_defaults.clone();
                if data.is_some() {
                    m.insert("kind".into(), "data".into());
                }
                m.extend(meta.clone().unwrap_or_default());
                m.insert("key".into(), key.clone().into());
                m.insert("created_at".into(), (now - age_s.unwrap_or(0) * 1000).into());
                m.insert("deps".into(), deps_json(&deps));
                if let Some(ago) = stale_ago_s {
                    m.insert("stale_at".into(), (now - ago * 1000).into());
                }
                let recorded = match generation {
                    None => store.generations(&tags_of(&deps)).await.map_err(|e| e.to_string())?,
                    Some(GenerationSpec::Literal(g)) => g.clone(),
                    Some(GenerationSpec::Reading(name)) => {
                        self.readings.get(name).cloned().ok_or_else(|| format!("no reading {name:?}"))?
                    }
                };
                m.insert("generation".into(), serde_json::to_value(&recorded).unwrap());
                let meta: Meta = serde_json::from_value(Value::Object(m)).map_err(|e| format!("metadata: {e}"))?;
                let entry = mizan_cache::Entry { body: body.into(), meta: meta.clone() };
                let outcome = store.put(entry).await.map_err(|e| e.to_string())?;
                match (&outcome, expect) {
                    (PutOutcome::Stored, Some(Expected::Stored) | None) => {
                        self.put.insert((site, key), meta);
                    }
                    (PutOutcome::Dropped { tag }, Some(Expected::Dropped) | None) => {
                        if let Some(want) = dropped_by {
                            ensure!(tag == want, "dropped by {tag}, expected by {want}");
                        }
                    }
                    (got, _) => return Err(format!("put: {got:?}")),
                }
            }
            Step::Get { site, key, data, expect } => {
                let (site, store) = self.store(site)?;
                let key = self.key(key, data)?;
                let got = store.get(&key).await.map_err(|e| e.to_string())?;
                let now = now_ms();
                if expect.is_null() {
                    ensure!(got.is_none(), "{key} is present: {:?}", got.map(|e| e.meta.clone()));
                    return Ok(());
                }
                let want: GetExpect = serde_json::from_value(expect.clone()).map_err(|e| format!("expect: {e}"))?;
                let got = got.ok_or_else(|| format!("{key} is absent"))?;
                if let Some(body) = &want.body {
                    ensure!(
                        got.body == body.as_bytes(),
                        "body {:?}, expected {body:?}",
                        String::from_utf8_lossy(&got.body)
                    );
                }
                if let Some(hex) = &want.body_hex {
                    ensure!(hex::encode(&got.body) == *hex, "body {}, expected {hex}", hex::encode(&got.body));
                }
                if let Some(json) = &want.json {
                    let parsed: Value = serde_json::from_slice(&got.body).map_err(|e| format!("body as JSON: {e}"))?;
                    ensure!(parsed == *json, "body {parsed}, expected {json}");
                }
                let put = self.put.get(&(site, key.clone())).ok_or("no stored put of this key");
                let mut stored = serde_json::to_value(&got.meta).unwrap();
                match &want.meta {
                    None => {}
                    Some(Value::String(s)) if s == "as_put" => {
                        let mut expected = serde_json::to_value(put?).unwrap();
                        if want.stale_at.is_some() {
                            expected.as_object_mut().unwrap().remove("stale_at");
                            stored.as_object_mut().unwrap().remove("stale_at");
                        }
                        ensure!(stored == expected, "metadata {stored}, expected {expected}");
                    }
                    Some(Value::Object(fields)) => {
                        for (field, value) in fields {
                            ensure!(
                                stored.get(field) == Some(value),
                                "metadata {field}: {:?}, expected {value}",
                                stored.get(field)
                            );
                        }
                    }
                    Some(other) => return Err(format!("meta: {other}?")),
                }
                let stale_at = got.meta.stale_at;
                match &want.stale_at {
                    None => {}
                    Some(Value::Null) => ensure!(stale_at.is_none(), "stale_at {stale_at:?}, expected none"),
                    Some(Value::String(s)) if s == "as_put" => {
                        let put = put?;
                        ensure!(stale_at == put.stale_at, "stale_at {stale_at:?}, put with {:?}", put.stale_at);
                    }
                    Some(Value::Object(o)) if o.len() == 1 && o.get("purge").is_some_and(Value::is_string) => {
                        let name = o["purge"].as_str().unwrap();
                        let (before, after) = *self.purges.get(name).ok_or_else(|| format!("no purge {name:?}"))?;
                        ensure!(
                            stale_at.is_some_and(|s| (before..=after).contains(&s)),
                            "stale_at {stale_at:?}, expected within purge {name:?}: {before}..={after}"
                        );
                    }
                    Some(other) => return Err(format!("stale_at: {other}?")),
                }
                if let Some(freshness) = &want.freshness {
                    let is = got.meta.freshness(now).as_str();
                    ensure!(is == freshness, "{is} now, expected {freshness}");
                }
                for (seconds, freshness) in &want.freshness_in {
                    let is = got.meta.freshness(now + seconds * 1000).as_str();
                    ensure!(is == freshness, "{is} in {seconds} s, expected {freshness}");
                }
            }
            Step::Present { site, keys, expect } => {
                let (_, store) = self.store(site)?;
                ensure!(keys.len() == expect.len(), "as many keys as expectations");
                let mut got = Vec::new();
                for key in keys {
                    got.push(store.get(key).await.map_err(|e| e.to_string())?.is_some());
                }
                ensure!(got == *expect, "present {got:?}, expected {expect:?}");
            }
            Step::Purge { site, context, params, mode: m, name, expect } => {
                let (_, store) = self.store(site)?;
                let params = params.clone().unwrap_or_default();
                if name.is_some() {
                    // A named purge starts a millisecond after the last named one ended, so a
                    // `stale_at` tells which of them set it.
                    let last = self.purges.values().map(|(_, after)| *after).max().unwrap_or(0);
                    while now_ms() <= last {
                        tokio::task::yield_now().await;
                    }
                }
                let before = now_ms();
                let n = store.purge(context, &params, mode(*m)).await.map_err(|e| e.to_string())?;
                let after = now_ms();
                if let Some(name) = name {
                    self.purges.insert(name.clone(), (before, after));
                }
                ensure!(n == *expect, "purged {n}, expected {expect}");
            }
            Step::Remove { site, key, data } => {
                let (_, store) = self.store(site)?;
                let key = self.key(key, data)?;
                store.remove(&key).await.map_err(|e| e.to_string())?;
            }
            Step::Generations { site, deps, tags, save, expect } => {
                let (_, store) = self.store(site)?;
                let tags = match (deps, tags) {
                    (Some(deps), None) => tags_of(deps),
                    (None, Some(tags)) => tags.clone(),
                    _ => return Err("give one of deps and tags".into()),
                };
                let got = store.generations(&tags).await.map_err(|e| e.to_string())?;
                let asked: BTreeSet<&String> = tags.iter().collect();
                ensure!(got.keys().collect::<BTreeSet<_>>() == asked, "answered {got:?} for {tags:?}");
                for (tag, rule) in expect.iter().flatten() {
                    let g = *got.get(tag).ok_or_else(|| format!("{tag} was not asked"))?;
                    match rule {
                        Rule::Exactly(n) => ensure!(g == *n, "{tag} is {g}, expected {n}"),
                        Rule::Compare(Compare { gt, eq }) => {
                            ensure!(gt.is_some() != eq.is_some(), "give one of gt and eq");
                            if let Some(o) = gt {
                                let than = self.operand(o, tag)?;
                                ensure!(g > than, "{tag} is {g}, expected more than {than} ({o:?})");
                            }
                            if let Some(o) = eq {
                                let to = self.operand(o, tag)?;
                                ensure!(g == to, "{tag} is {g}, expected {to} ({o:?})");
                            }
                        }
                    }
                }
                if let Some(name) = save {
                    self.readings.insert(name.clone(), got);
                }
            }
            Step::Tags { deps, expect } => {
                let got = tags_of(deps);
                ensure!(got == *expect, "tags {got:?}, expected {expect:?}");
            }
            Step::PurgeTags { context, params, expect } => {
                let mut got = purge_tags(context, &params.clone().unwrap_or_default());
                got.sort();
                let mut expect = expect.clone();
                expect.sort();
                ensure!(got == expect, "purge tags {got:?}, expected {expect:?}");
            }
        }
        Ok(())
    }
}

/// Runs every case meant for `backend`, each on fresh stores, and fails listing every case
/// that failed (its name, the failing step's index and op, and why).
async fn run_cases(backend: Backend) {
    let (file, cases) = load();
    let keys = Keys::from_secret(file.secret.as_bytes(), false).unwrap();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (n, case) in cases.iter().enumerate() {
        if !case.backends.iter().any(|b| b == backend.name()) {
            continue;
        }
        ran += 1;
        let stores = match backend.stores(n, &case.sites).await {
            Ok(stores) => stores,
            Err(e) => {
                failures.push(format!("case {}: opening its stores: {e}", case.name));
                continue;
            }
        };
        let mut run = Run {
            file: &file,
            keys: &keys,
            sites: &case.sites,
            stores,
            put: HashMap::new(),
            readings: HashMap::new(),
            purges: HashMap::new(),
        };
        for (i, (raw, step)) in case.steps.iter().enumerate() {
            if let Err(why) = run.step(step).await {
                failures.push(format!("case {} step {i} ({}): {why}\n    {}", case.name, raw["op"], brief(raw)));
                break;
            }
        }
    }
    assert!(ran > 0, "no case runs on {}", backend.name());
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed on {}:\n{}",
        failures.len(),
        backend.name(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cases_on_memory() {
    run_cases(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cases_on_sqlite() {
    run_cases(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cases_on_redis() {
    run_cases(Backend::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cases_on_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    run_cases(Backend::Cluster(cluster)).await;
}

/// Every case is meant for some backend, checks something, and names only its own sites.
#[test]
fn the_case_file_is_well_formed() {
    let (_, cases) = load();
    assert!(cases.len() >= 25, "{} cases", cases.len());
    for case in &cases {
        assert!(!case.backends.is_empty() && !case.steps.is_empty(), "{}", case.name);
        assert!(
            case.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{}: a case name is snake_case (it names a Python test too)",
            case.name
        );
        for (i, (raw, _)) in case.steps.iter().enumerate() {
            if let Some(site) = raw.get("site").and_then(Value::as_str) {
                assert!(case.sites.iter().any(|s| s == site), "{} step {i}: site {site:?}", case.name);
            }
        }
    }
}
