//! The pinned protocol vectors in `tests/vectors/keys.json`. JCS expectations come from
//! RFC 8785; keys were computed once and pinned (`MIZAN_PIN_VECTORS=1` fills in `null`s and
//! never changes a pinned value).

use crate::common::root;
use mizan_cache::Keys;
use mizan_cache::key::{PageKeyParts, jcs};
use serde_json::{Map, Value};

fn params(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap()
}

#[test]
fn keys_and_canonical_forms_match_the_pinned_vectors() {
    let path = root().join("tests/vectors/keys.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let pin = std::env::var_os("MIZAN_PIN_VECTORS").is_some();
    let keys = Keys::from_secret(doc["secret"].as_str().unwrap().as_bytes(), false).unwrap();
    let mismatches = std::cell::RefCell::new(Vec::new());
    let check = |slot: &mut Value, got: String, what: String| {
        if slot.is_null() && pin {
            *slot = Value::String(got);
        } else if slot.as_str() != Some(got.as_str()) {
            mismatches.borrow_mut().push(format!("{what}: pinned {slot}, computed {got:?}"));
        }
    };

    let (cache, purge) = keys.subkeys_hex();
    check(&mut doc["subkeys"]["cache"], cache, "k_cache".into());
    check(&mut doc["subkeys"]["purge"], purge, "k_purge".into());

    for v in doc["jcs"].as_array_mut().unwrap() {
        let input: Value = serde_json::from_str(v["input"].as_str().unwrap()).unwrap();
        let name = v["name"].to_string();
        check(&mut v["canonical"], jcs(&input), format!("jcs {name}"));
    }

    let mut data_keys = std::collections::HashMap::new();
    for v in doc["data"].as_array_mut().unwrap() {
        let key = keys.data_key(v["context"].as_str().unwrap(), &params(v["params"].as_str().unwrap()));
        data_keys.insert(v["name"].as_str().unwrap().to_string(), key.clone());
        let name = v["name"].to_string();
        check(&mut v["key"], key, format!("data {name}"));
    }

    let mut page_keys = std::collections::HashMap::new();
    for v in doc["page"].as_array_mut().unwrap() {
        let strings = |field: &str| -> Vec<String> {
            v[field].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
        };
        let headers = v["headers"].as_object().unwrap().clone();
        let parts = PageKeyParts::new(
            v["site"].as_str().unwrap(),
            v["method"].as_str().unwrap(),
            v["path"].as_str().unwrap(),
            v["query"].as_str().unwrap(),
            &strings("declared_query"),
            &strings("declared_vary"),
            |name| headers.get(name).and_then(Value::as_str),
        )
        .unwrap();
        let name = v["name"].as_str().unwrap().to_string();
        for (field, got) in [("path", &parts.path), ("query", &parts.query), ("vary", &parts.vary)] {
            if v["parts"][field].as_str() != Some(got.as_str()) {
                mismatches
                    .borrow_mut()
                    .push(format!("page {name}: canonical {field} {} != {got:?}", v["parts"][field]));
            }
        }
        let key = keys.page_key(&parts);
        page_keys.insert(name.clone(), key.clone());
        check(&mut v["key"], key, format!("page {name}"));
    }

    for (section, computed) in [("data", &data_keys), ("page", &page_keys)] {
        for v in doc[section].as_array().unwrap() {
            if let Some(other) = v.get("same_as").and_then(Value::as_str) {
                let name = v["name"].as_str().unwrap();
                assert_eq!(computed[name], computed[other], "{section} {name:?} must share {other:?}'s key");
            }
        }
    }
    let distinct: std::collections::HashSet<_> = page_keys.values().chain(data_keys.values()).collect();
    let sames = doc["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(doc["page"].as_array().unwrap())
        .filter(|v| v.get("same_as").is_some())
        .count();
    assert_eq!(distinct.len(), data_keys.len() + page_keys.len() - sames, "vectors not marked same_as must differ");

    if pin {
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    }
    let mismatches = mismatches.into_inner();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// How many pinned values `keys.json` holds, counted the way `independent.mjs` counts its
/// checks: both subkeys, each JCS canonical form, each data key, each page's three canonical
/// parts and key, and each `same_as` claim.
fn pinned_values(doc: &Value) -> usize {
    let section = |name: &str| doc[name].as_array().unwrap();
    let same_as = section("data").iter().chain(section("page")).filter(|v| v.get("same_as").is_some()).count();
    2 + section("jcs").len() + section("data").len() + 4 * section("page").len() + same_as
}

#[test]
fn an_independent_implementation_of_the_spec_computes_the_pinned_vectors() {
    let vectors = root().join("tests/vectors/keys.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&vectors).unwrap()).unwrap();
    let out = std::process::Command::new("node")
        .arg(root().join("tests/vectors/independent.mjs"))
        .arg(&vectors)
        .output()
        .expect("node is on PATH (scripts/setup)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "independent.mjs disagrees:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["mismatches"], serde_json::json!([]), "{stdout}");
    assert_eq!(report["checked"], pinned_values(&doc), "independent.mjs must check every pinned value");
}
