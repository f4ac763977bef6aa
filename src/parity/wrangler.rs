//! workerd's compatibility settings for a parity run: from flags, from the user's
//! `wrangler.toml` / `wrangler.jsonc` (`compatibility_date`, `compatibility_flags`), or the
//! render Worker's own ([`DEFAULT_DATE`], [`DEFAULT_FLAGS`]). Flags win over the file, the file
//! over the defaults.

use super::runtimes::Workerd;
use anyhow::{Context as _, bail};
use serde::Deserialize;
use std::path::Path;

/// The compatibility date the render Worker is deployed with.
pub const DEFAULT_DATE: &str = "2026-08-04";

/// The render Worker's compatibility flags: no Node globals (`process`, `Buffer`), which
/// workerd exposes by default from 2026-08-04 unless both are set.
pub const DEFAULT_FLAGS: [&str; 2] = ["no_nodejs_compat", "no_nodejs_compat_v2"];

#[derive(Deserialize)]
struct Wrangler {
    compatibility_date: Option<String>,
    #[serde(default)]
    compatibility_flags: Option<Vec<String>>,
}

/// The settings: `date` and `flags` from the command line over `wrangler`'s over the defaults.
pub fn settings(wrangler: Option<&Path>, date: Option<String>, flags: Option<Vec<String>>) -> anyhow::Result<Workerd> {
    let file = match wrangler {
        Some(path) => Some(read(path)?),
        None => None,
    };
    let (file_date, file_flags) = file.map_or((None, None), |w| (w.compatibility_date, w.compatibility_flags));
    let compatibility_date = date.or(file_date).unwrap_or_else(|| DEFAULT_DATE.to_string());
    let valid = compatibility_date.len() == 10
        && compatibility_date
            .bytes()
            .enumerate()
            .all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if !valid {
        bail!("compatibility date {compatibility_date:?}: expected YYYY-MM-DD");
    }
    let flags = flags.or(file_flags).unwrap_or_else(|| DEFAULT_FLAGS.map(String::from).to_vec());
    if let Some(bad) = flags.iter().find(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        bail!("compatibility flag {bad:?}: expected letters, digits and _");
    }
    Ok(Workerd { compatibility_date, flags })
}

fn read(path: &Path) -> anyhow::Result<Wrangler> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".toml") {
        toml::from_str(&text).with_context(|| format!("{}", path.display()))
    } else if name.ends_with(".json") || name.ends_with(".jsonc") {
        json5::from_str(&text).with_context(|| format!("{}", path.display()))
    } else {
        bail!("{}: a wrangler.toml, wrangler.json or wrangler.jsonc is expected", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let dir = std::env::temp_dir().join(format!("mizan-wrangler-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml = dir.join("wrangler.toml");
        std::fs::write(
            &toml,
            "name = \"x\"\ncompatibility_date = \"2025-01-02\"\ncompatibility_flags = [\"nodejs_compat\"]\n",
        )
        .unwrap();
        let jsonc = dir.join("wrangler.jsonc");
        std::fs::write(&jsonc, "{\n  // the edge's\n  \"compatibility_date\": \"2024-05-06\",\n}\n").unwrap();
        let from_toml = settings(Some(&toml), None, None).unwrap();
        assert_eq!(
            (from_toml.compatibility_date.as_str(), from_toml.flags),
            ("2025-01-02", vec!["nodejs_compat".into()])
        );
        let from_jsonc = settings(Some(&jsonc), None, None).unwrap();
        assert_eq!((from_jsonc.compatibility_date.as_str(), from_jsonc.flags.len()), ("2024-05-06", 2));
        let flagged = settings(Some(&toml), Some("2026-01-01".into()), Some(vec![])).unwrap();
        assert_eq!((flagged.compatibility_date.as_str(), flagged.flags.len()), ("2026-01-01", 0));
        let defaults = settings(None, None, None).unwrap();
        assert_eq!(defaults.compatibility_date, DEFAULT_DATE);
        assert!(settings(None, Some("26-1-1".into()), None).is_err());
        assert!(settings(None, None, Some(vec!["a\"b".into()])).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
