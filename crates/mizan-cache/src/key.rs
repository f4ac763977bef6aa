//! Key derivation (docs/protocol.md, "Keys"): subkeys from `MIZAN_SECRET`, RFC 8785 (JCS)
//! canonical params, data keys and page keys.
//!
//! Everything that varies a page key is canonicalised here and nowhere else, so that
//! equivalent requests share an entry and no request input outside the declared ones (Host,
//! undeclared query names or headers) can create or select one.

use super::CacheError;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The secret the fixtures and docs use; refused outside `--dev`.
pub const EXAMPLE_SECRET: &str = "mizan-example-secret-for-local-development-only";

/// Minimum length of `MIZAN_SECRET`, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// The subkeys derived from `MIZAN_SECRET`. The secret itself is never kept.
#[derive(Clone)]
pub struct Keys {
    cache: [u8; 32],
    purge: [u8; 32],
    /// HMAC state already keyed with `k_cache`: cloning it skips the key schedule per key.
    keyed: HmacSha256,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)") // never print key material
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl Keys {
    /// Derives the subkeys. Refuses a secret shorter than 32 bytes, and the example secret
    /// unless `dev` is set.
    pub fn from_secret(secret: &[u8], dev: bool) -> Result<Self, CacheError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(CacheError::Secret(format!(
                "MIZAN_SECRET is {} bytes; at least {MIN_SECRET_LEN} are required",
                secret.len()
            )));
        }
        if !dev && secret == EXAMPLE_SECRET.as_bytes() {
            return Err(CacheError::Secret(
                "MIZAN_SECRET is the published example secret; use it only with --dev".into(),
            ));
        }
        let cache = hmac(secret, &[b"mizan/v1/cache-key"]);
        let keyed = HmacSha256::new_from_slice(&cache).expect("HMAC takes keys of any length");
        Ok(Self { cache, purge: hmac(secret, &[b"mizan/v1/purge"]), keyed })
    }

    /// `k_purge`, which signs purge requests.
    pub fn purge_key(&self) -> &[u8; 32] {
        &self.purge
    }

    /// Hex of both subkeys, for the pinned test vectors only.
    #[doc(hidden)]
    pub fn subkeys_hex(&self) -> (String, String) {
        (hex::encode(self.cache), hex::encode(self.purge))
    }

    /// `mz1:d:` + hex(HMAC(k_cache, "data" 0 context 0 JCS(params))).
    pub fn data_key(&self, context: &str, params: &Map<String, Value>) -> String {
        let params = jcs(&Value::Object(params.clone()));
        self.key("mz1:d:", &[b"data\0", context.as_bytes(), b"\0", params.as_bytes()])
    }

    fn key(&self, prefix: &str, parts: &[&[u8]]) -> String {
        let mut mac = self.keyed.clone();
        for part in parts {
            mac.update(part);
        }
        let digest = mac.finalize().into_bytes();
        let mut key = String::with_capacity(prefix.len() + 64);
        key.push_str(prefix);
        key.push_str(&hex::encode(digest));
        key
    }

    /// `mz1:p:` + hex(HMAC(k_cache, "page" 0 site 0 method 0 path 0 query 0 vary)), from the
    /// canonical parts of [`PageKeyParts`].
    pub fn page_key(&self, parts: &PageKeyParts) -> String {
        self.key(
            "mz1:p:",
            &[
                b"page\0",
                parts.site.as_bytes(),
                b"\0",
                parts.method.as_bytes(),
                b"\0",
                parts.path.as_bytes(),
                b"\0",
                parts.query.as_bytes(),
                b"\0",
                parts.vary.as_bytes(),
            ],
        )
    }
}

/// RFC 8785 canonical JSON of `value`.
pub fn jcs(value: &Value) -> String {
    serde_json_canonicalizer::to_string(value).expect("a serde_json::Value always serialises")
}

/// The canonical inputs of a page key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKeyParts {
    /// The configured site id (never the Host header).
    pub site: String,
    /// The request method, upper case.
    pub method: String,
    /// The normalised path ([`normalize_path`]).
    pub path: String,
    /// The canonical declared query ([`canonical_query`]).
    pub query: String,
    /// The canonical declared vary headers ([`canonical_vary`]).
    pub vary: String,
}

impl PageKeyParts {
    /// Canonicalises a request whose path is already normalised ([`normalize_path`]).
    pub fn normalized<'h>(
        site: &str,
        method: &str,
        path: String,
        raw_query: &str,
        declared_query: &[String],
        declared_vary: &[String],
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Self {
        Self {
            site: site.to_string(),
            method: method.to_ascii_uppercase(),
            path,
            query: canonical_query(raw_query, declared_query),
            vary: canonical_vary(declared_vary, header),
        }
    }

    /// Canonicalises a request: `raw_path` and `raw_query` as sent, `declared_query` and
    /// `declared_vary` from the route, `header` looks a request header up by lower-case name.
    pub fn new<'h>(
        site: &str,
        method: &str,
        raw_path: &str,
        raw_query: &str,
        declared_query: &[String],
        declared_vary: &[String],
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Result<Self, CacheError> {
        Ok(Self::normalized(site, method, normalize_path(raw_path)?, raw_query, declared_query, declared_vary, header))
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalises a request path: percent-encodings of unreserved characters are decoded, the
/// remaining ones upper-cased, and dot segments removed (RFC 3986 6.2.2 and 5.2.4).
pub fn normalize_path(raw: &str) -> Result<String, CacheError> {
    if !raw.starts_with('/') {
        return Err(CacheError::BadRequestPath("path must start with '/'".into()));
    }
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            let Some(hex) = hex else {
                return Err(CacheError::BadRequestPath(format!("bad percent-encoding at byte {i}")));
            };
            let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("00"), 16).unwrap_or(0);
            if is_unreserved(value) {
                decoded.push(value as char);
            } else {
                decoded.push('%');
                decoded.push_str(&std::str::from_utf8(hex).unwrap_or("00").to_ascii_uppercase());
            }
            i += 3;
        } else if b.is_ascii_graphic() {
            decoded.push(b as char);
            i += 1;
        } else {
            return Err(CacheError::BadRequestPath(format!("byte 0x{b:02x} must be percent-encoded")));
        }
    }
    // Remove dot segments.
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let last = segments.len() - 1;
    for (n, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if n == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if n == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    Ok(format!("/{}", out.join("/")))
}

const QUERY_ENCODE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The declared query parameters of `raw_query` (parsed as `application/x-www-form-urlencoded`,
/// so `+` is a space), sorted by the UTF-8 bytes of the decoded name, then value (code-point
/// order, not UTF-16 order), each RFC 3986 encoded, joined with `&`.
/// Undeclared names are dropped: they cannot bust or poison the cache.
pub fn canonical_query(raw_query: &str, declared: &[String]) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes())
        .filter(|(name, _)| declared.iter().any(|d| d == name))
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, QUERY_ENCODE).to_string();
    pairs.iter().map(|(n, v)| format!("{}={}", encode(n), encode(v))).collect::<Vec<_>>().join("&")
}

/// A header value as page keys hold it: spaces and tabs trimmed, and each run of them inside
/// collapsed to one space. Nothing else counts as whitespace here (docs/protocol.md, "Keys").
pub fn canonical_header_value(value: &str) -> String {
    value.split([' ', '\t']).filter(|word| !word.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The declared vary headers: lower-case name, value as [`canonical_header_value`] has it,
/// `name=value` lines sorted and joined with `\n`. Absent headers are left out; a present,
/// empty one is `name=`. A route names each header once (the manifest refuses repeats), so
/// each header contributes at most one line.
pub fn canonical_vary<'h>(declared: &[String], header: impl Fn(&str) -> Option<&'h str>) -> String {
    let mut lines: Vec<String> =
        vary_headers(declared, header).into_iter().map(|(name, value)| format!("{name}={value}")).collect();
    lines.sort();
    lines.join("\n")
}

/// The declared vary headers a request carries, as a render receives them: lower-case name and
/// the value as [`canonical_header_value`] has it, in the declared order; absent ones left out.
pub fn vary_headers<'h>(declared: &[String], header: impl Fn(&str) -> Option<&'h str>) -> Vec<(String, String)> {
    declared
        .iter()
        .map(|name| name.to_ascii_lowercase())
        .filter_map(|name| {
            let value = canonical_header_value(header(&name)?);
            Some((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategies::{config, hostile_path};
    use proptest::prelude::*;

    #[test]
    fn refuses_short_and_example_secrets() {
        assert!(Keys::from_secret(&[7; 31], false).unwrap_err().to_string().contains("31 bytes"));
        assert!(Keys::from_secret(EXAMPLE_SECRET.as_bytes(), false).is_err());
        assert!(Keys::from_secret(EXAMPLE_SECRET.as_bytes(), true).is_ok());
        assert_eq!(format!("{:?}", Keys::from_secret(&[7; 32], false).unwrap()), "Keys(..)");
    }

    #[test]
    fn normalises_paths() {
        let n = |p: &str| normalize_path(p).unwrap();
        assert_eq!(n("/products/%34%32"), "/products/42");
        assert_eq!(n("/a/%2f/b"), "/a/%2F/b");
        assert_eq!(n("/a/./b/../c"), "/a/c");
        assert_eq!(n("/a/%2E%2E/b"), "/b");
        assert_eq!(n("/../../x"), "/x");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/"), "/");
        assert!(normalize_path("/a%zz").is_err());
        assert!(normalize_path("/a b").is_err());
        assert!(normalize_path("a").is_err());
    }

    #[test]
    fn canonical_query_keeps_declared_names_sorted() {
        let declared = vec!["page".to_string(), "q".to_string()];
        assert_eq!(canonical_query("utm=1&q=b+c&page=2&q=a", &declared), "page=2&q=a&q=b%20c");
        assert_eq!(canonical_query("", &declared), "");
        assert_eq!(canonical_query("q=%E2%82%AC", &declared), "q=%E2%82%AC");
    }

    #[test]
    fn canonical_vary_normalises_values() {
        let declared = vec!["Accept-Language".to_string(), "x-variant".to_string()];
        let header = |n: &str| match n {
            "accept-language" => Some("  en-GB,   en;q=0.8 "),
            _ => None,
        };
        assert_eq!(canonical_vary(&declared, header), "accept-language=en-GB, en;q=0.8");
    }

    #[test]
    fn canonical_query_sorts_by_utf8_bytes_not_utf16_units() {
        // U+FF5E is EF BD 9E in UTF-8 and sorts before U+1F600 (F0 9F 98 80); in UTF-16 the
        // astral character's surrogate D83D would sort first.
        let declared = vec!["q".to_string()];
        for raw in ["q=%F0%9F%98%80&q=%EF%BD%9E", "q=%EF%BD%9E&q=%F0%9F%98%80"] {
            assert_eq!(canonical_query(raw, &declared), "q=%EF%BD%9E&q=%F0%9F%98%80");
        }
    }

    #[test]
    fn header_values_trim_and_collapse_only_spaces_and_tabs() {
        assert_eq!(canonical_header_value(" \t a \t\t b  c\t"), "a b c");
        assert_eq!(canonical_header_value(" \t "), "");
        // LF, CR, FF and VT are not the spec's whitespace: kept as they are.
        assert_eq!(canonical_header_value(" \x0cCHF\r "), "\x0cCHF\r");
        assert_eq!(canonical_header_value("a\n b\x0b\tc"), "a\n b\x0b c");
        let declared = vec!["x-currency".to_string()];
        assert_eq!(canonical_vary(&declared, |_| Some("\x0c CHF \r")), "x-currency=\x0c CHF \r");
    }

    fn is_upper_hex(b: u8) -> bool {
        b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
    }

    proptest! {
        #![proptest_config(config(1000))]

        #[test]
        fn normalize_path_is_idempotent_and_canonical(raw in hostile_path(12)) {
            let Ok(path) = normalize_path(&raw) else { return Ok(()) };
            prop_assert_eq!(normalize_path(&path).ok(), Some(path.clone()), "not idempotent for {:?}", raw);
            prop_assert!(path.starts_with('/'), "{:?} -> {:?}", raw, path);
            prop_assert!(path.bytes().all(|b| b.is_ascii_graphic()), "{:?} -> {:?}", raw, path);
            prop_assert!(
                path.split('/').all(|segment| segment != "." && segment != ".."),
                "a dot segment survives: {:?} -> {:?}", raw, path
            );
            let bytes = path.as_bytes();
            for (i, _) in path.match_indices('%') {
                let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
                prop_assert!(
                    hex.len() == 2 && hex.iter().all(|&b| is_upper_hex(b)),
                    "'%' at {} not followed by two upper-case hex digits: {:?} -> {:?}", i, raw, path
                );
                let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
                prop_assert!(!is_unreserved(value), "an encoded unreserved character: {:?} -> {:?}", raw, path);
            }
        }
    }
}
