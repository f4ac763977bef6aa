//! The reverse proxy for the manifest's `proxy` paths (mutations and other origin routes):
//! which request paths may reach the origin at all ([`check_path`]), the headers that cross
//! in each direction (hop-by-hop dropped, RFC 9110 §7.6.1), and the `X-Forwarded-*` headers
//! the node writes itself ([`Forwarding`]).
//!
//! The path the prefix check approves is exactly the path forwarded: it is normalised first
//! and refused when it cannot be normalised safely, so no encoding can walk out of a prefix
//! after the check (`/api/%2e%2e/_mizan/ctx/cart`).

use crate::cache::key::normalize_path;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` (lower case) is a hop-by-hop header.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Headers about the client and the way it came that only the node may write: a visitor's own
/// values are dropped, never passed along.
const FORWARDING: [&str; 6] =
    ["forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-real-ip"];

/// Why a request path may not be proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyRefusal {
    /// The path cannot be normalised safely; the words say why.
    #[error("refused proxy path: {0}")]
    Unsafe(&'static str),
}

/// What the proxy does with a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyDecision {
    /// Not a proxied path: the page router handles it.
    Page,
    /// Forward to the origin with exactly this path.
    Forward(String),
    /// It aims at a proxied prefix but cannot be forwarded safely: 400.
    Refuse(ProxyRefusal),
}

/// Whether `path` lies under `prefix`, at a segment boundary: `/api/` and `/api` both cover
/// `/api/x`, and neither covers `/apix`.
fn under(path: &str, prefix: &str) -> bool {
    let base = prefix.trim_end_matches('/');
    path == base || path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'))
}

/// Decides what happens to a request for `raw` (the path as sent) given the manifest's
/// `prefixes`. A path is proxied when it lies under a prefix as sent or once normalised
/// (so `/x/../api/y` cannot slip past as a page either); it is then forwarded only if
/// [`check_path`] accepts it, with the path that function returns.
pub fn decide(raw: &str, prefixes: &[String]) -> ProxyDecision {
    if prefixes.is_empty() {
        return ProxyDecision::Page;
    }
    if raw.len() > crate::manifest::MAX_URL_LEN {
        // Longer than any page either: refused by the page router too.
        return ProxyDecision::Page;
    }
    let lenient = normalize_path(raw).ok();
    let aims = |p: &str| prefixes.iter().any(|prefix| under(p, prefix));
    if !aims(raw) && !lenient.as_deref().is_some_and(aims) {
        return ProxyDecision::Page;
    }
    match check_path(raw) {
        Ok(path) if aims(&path) => ProxyDecision::Forward(path),
        Ok(_) => ProxyDecision::Refuse(ProxyRefusal::Unsafe("the path leaves the proxied prefix")),
        Err(e) => ProxyDecision::Refuse(e),
    }
}

/// The normalised form of a path the proxy may forward, or why it may not.
///
/// Percent-encodings of unreserved characters are decoded and the others upper-cased (the
/// rules of page keys, docs/protocol.md), and the characters a URL parser would encode in a
/// path (`"` `<` `>` `` ` `` `{` `}`) are encoded. Refused: anything but printable ASCII, a bad
/// or double percent-encoding (`%25`), an encoded `/` or `\` (`%2F`, `%5C`), a NUL (`%00`), a
/// backslash, a `;` (path parameters, read by some origins as part of the path), a `?` or `#`
/// (a URL parser ends the path there), an empty segment (`//`) and a dot segment, however
/// encoded. What is returned is what the HTTP client sends: it holds nothing a URL parser
/// would rewrite.
pub fn check_path(raw: &str) -> Result<String, ProxyRefusal> {
    let unsafe_ = |why| Err(ProxyRefusal::Unsafe(why));
    if !raw.starts_with('/') {
        return unsafe_("the path must start with '/'");
    }
    if raw.bytes().any(|b| !b.is_ascii_graphic()) {
        return unsafe_("a byte outside visible ASCII");
    }
    if raw.contains('\\') {
        return unsafe_("a backslash");
    }
    if raw.contains(';') {
        return unsafe_("a ';' (path parameters)");
    }
    if raw.contains(['?', '#']) {
        return unsafe_("a '?' or '#' (not part of a path)");
    }
    let bytes = raw.as_bytes();
    for (i, _) in raw.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
        if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return unsafe_("a bad percent-encoding");
        }
        match (hex[0].to_ascii_uppercase(), hex[1].to_ascii_uppercase()) {
            (b'2', b'F') => return unsafe_("an encoded '/'"),
            (b'5', b'C') => return unsafe_("an encoded '\\'"),
            (b'2', b'5') => return unsafe_("a double percent-encoding"),
            (b'0', b'0') => return unsafe_("an encoded NUL"),
            (b'0' | b'1', _) | (b'7', b'F') => return unsafe_("an encoded control character"),
            _ => {}
        }
    }
    // Decodes the unreserved encodings (`%2e` is `.`) and upper-cases the rest, but resolves
    // nothing: dot segments are refused, never resolved.
    let decoded = decode_unreserved(raw);
    if decoded.split('/').any(|segment| segment == "." || segment == "..") {
        return unsafe_("a dot segment");
    }
    if decoded[1..].split('/').rev().skip(1).any(str::is_empty) {
        return unsafe_("an empty segment ('//')");
    }
    Ok(decoded)
}

fn decode_unreserved(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        // Every '%' was checked to start a valid encoding.
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let digit = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            let value = digit(bytes[i + 1]) << 4 | digit(bytes[i + 2]);
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(value as char);
            } else {
                out.push('%');
                out.push(bytes[i + 1].to_ascii_uppercase() as char);
                out.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else if matches!(bytes[i], b'"' | b'<' | b'>' | b'`' | b'{' | b'}') {
            // A URL parser encodes these in a path (WHATWG path percent-encode set): encoded
            // here, what is checked is what is sent.
            out.push_str(&format!("%{:02X}", bytes[i]));
            i += 1;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

/// `headers` without hop-by-hop headers, those the `Connection` header names, and `extra`.
pub fn end_to_end(headers: &HeaderMap, extra: &[&str]) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || named.iter().any(|c| c == n) || extra.contains(&n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Where the node sits, for the `X-Forwarded-*` headers it writes to the origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarding {
    /// The public scheme and host (`--public-url https://shop.example`), when a TLS
    /// terminator or load balancer sits in front of the node. Without it: `http` and the
    /// request's own `Host` (or HTTP/2 `:authority`).
    pub public: Option<(String, String)>,
    /// Peers whose `X-Forwarded-For` is believed (`--trusted-proxy`): the node appends the
    /// peer to their chain. Any other peer's chain is replaced by the peer's address.
    pub trusted: Vec<IpAddr>,
}

impl Forwarding {
    /// Parses `--public-url`: `scheme://host[:port]`, nothing after the authority.
    pub fn public_url(url: &str) -> Result<(String, String), String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url:?} is not scheme://host"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("{url:?}: the scheme must be http or https"));
        }
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains(['/', '?', '#', '@']) || HeaderValue::from_str(host).is_err() {
            return Err(format!("{url:?}: expected scheme://host[:port] and nothing after it"));
        }
        Ok((scheme, host.to_string()))
    }

    /// Drops every forwarding header the visitor sent and writes the node's own:
    /// `X-Forwarded-For` (the peer, appended to a trusted proxy's chain), `X-Forwarded-Host`
    /// and `X-Forwarded-Proto` (from `--public-url`, else the request).
    pub fn apply(&self, headers: &mut HeaderMap, peer: IpAddr, host: Option<&HeaderValue>) {
        let prior = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).map(str::to_string);
        for name in FORWARDING {
            headers.remove(name);
        }
        let chain = match prior {
            Some(prior) if self.trusted.contains(&peer) => format!("{prior}, {peer}"),
            _ => peer.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
        let (proto, host) = match &self.public {
            Some((scheme, host)) => (scheme.as_str(), HeaderValue::from_str(host).ok()),
            None => ("http", host.cloned()),
        };
        if let Some(host) = host {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        if let Ok(proto) = HeaderValue::from_str(proto) {
            headers.insert(HeaderName::from_static("x-forwarded-proto"), proto);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::strategies::{config, hostile_path};
    use proptest::prelude::*;

    #[test]
    fn drops_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("host", HeaderValue::from_static("node"));
        let out = end_to_end(&h, &["host"]);
        assert_eq!(out.len(), 1);
        assert_eq!(out["content-type"], "application/json");
    }

    #[test]
    fn a_visitors_forwarding_headers_never_reach_the_origin() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4;host=evil.example"));
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        Forwarding::default().apply(&mut h, peer, None);
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h.get("x-forwarded-host").is_none() && h.get("forwarded").is_none() && h.get("x-real-ip").is_none());
    }

    #[test]
    fn a_trusted_proxy_keeps_its_chain_and_the_public_url_names_the_site() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let forwarding =
            Forwarding { public: Some(Forwarding::public_url("https://shop.example/").unwrap()), trusted: vec![peer] };
        forwarding.apply(&mut h, peer, Some(&HeaderValue::from_static("node.internal")));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(
            (&h["x-forwarded-host"], &h["x-forwarded-proto"]),
            (&"shop.example".parse().unwrap(), &"https".parse().unwrap())
        );
        assert!(Forwarding::public_url("ftp://x").is_err());
        assert!(Forwarding::public_url("https://x/path").is_err());
    }

    #[test]
    fn the_prefix_check_cannot_be_walked_out_of() {
        let prefixes = vec!["/api/".to_string()];
        let refused = [
            "/api/../_mizan/ctx/cart",
            "/api/%2e%2e/_mizan/ctx/cart",
            "/api/%2E./_mizan/ctx/cart",
            "/api/.%2e/_mizan/ctx/cart",
            "/api/%252e%252e/_mizan/ctx/cart",
            "/api/..%2f_mizan/ctx/cart",
            "/api/%2F..%2F_mizan",
            "/api/..\\_mizan",
            "/api//_mizan/ctx/cart",
            "/api/./echo",
            "/api/echo%00",
            "/api/echo;jsessionid=1",
            "/api/%5c..%5c_mizan",
            "/api/%zz",
            "/x/../api/echo",
            "/api/echo?",
            "/api/echo#x",
        ];
        for raw in refused {
            assert!(matches!(decide(raw, &prefixes), ProxyDecision::Refuse(_)), "{raw} must be refused");
        }
        assert_eq!(decide("/api/echo", &prefixes), ProxyDecision::Forward("/api/echo".into()));
        assert_eq!(decide("/api/%65cho", &prefixes), ProxyDecision::Forward("/api/echo".into()));
        assert_eq!(decide("/api/a%c3%a9", &prefixes), ProxyDecision::Forward("/api/a%C3%A9".into()));
        // Found by the property test below: sent as is, these would not be the path the HTTP
        // client forwards (it encodes them, or ends the path at `?`).
        assert_eq!(decide("/api/{\"a\"}", &prefixes), ProxyDecision::Forward("/api/%7B%22a%22%7D".into()));
        assert_eq!(decide("/api/<`x`>", &prefixes), ProxyDecision::Forward("/api/%3C%60x%60%3E".into()));
        assert_eq!(decide("/apix/echo", &prefixes), ProxyDecision::Page, "a prefix ends at a segment");
        assert_eq!(decide("/api", &prefixes), ProxyDecision::Forward("/api".into()));
        assert_eq!(decide("/products/1", &prefixes), ProxyDecision::Page);
        let bare = vec!["/api".to_string()];
        assert_eq!(decide("/apix", &bare), ProxyDecision::Page);
        assert_eq!(decide("/api/x", &bare), ProxyDecision::Forward("/api/x".into()));
    }

    /// A raw path aiming at (or near) the proxy prefixes, or anywhere at all.
    fn proxied_raw() -> impl Strategy<Value = String> {
        let lead = prop::sample::select(
            &["/api", "/api/", "/apix", "/API/", "/api/v1/", "/x/../api/", "/api/../", "/%61pi/", "/api%2f", ""][..],
        );
        // Short tails reach the origin more often; long ones hold more tricks at once.
        let tail = || prop_oneof![hostile_path(4), hostile_path(12)];
        prop_oneof![
            3 => (lead.clone(), tail()).prop_map(|(lead, tail)| format!("{lead}{}", tail.trim_start_matches('/'))),
            1 => (lead, tail()).prop_map(|(lead, tail)| format!("{lead}{tail}")),
            1 => tail(),
        ]
    }

    /// Proxy prefix lists as manifests declare them (each starting with '/').
    fn prefix_lists() -> impl Strategy<Value = Vec<String>> {
        const PREFIXES: &[&str] = &["/api", "/api/", "/apix", "/API/", "/api/v1", "/", "/a/b/", "/%61pi/"];
        prop::sample::subsequence(PREFIXES, 1..=3).prop_map(|p| p.into_iter().map(str::to_string).collect())
    }

    /// Written out apart from [`under`], so that the properties do not trust it.
    fn lies_under(path: &str, prefix: &str) -> bool {
        let base = prefix.trim_end_matches('/');
        path == base || path.starts_with(&format!("{base}/"))
    }

    proptest! {
        #![proptest_config(config(1000))]

        #[test]
        fn a_forwarded_path_is_checked_under_a_prefix_and_sent_as_is(
            raw in proxied_raw(),
            prefixes in prefix_lists(),
        ) {
            let ProxyDecision::Forward(p) = decide(&raw, &prefixes) else { return Ok(()) };
            prop_assert!(prefixes.iter().any(|prefix| lies_under(&p, prefix)), "{:?} -> {:?} is under no prefix", raw, p);
            prop_assert_eq!(check_path(&p), Ok(p.clone()), "check_path is not idempotent for {:?}", raw);
            prop_assert_eq!(normalize_path(&p).ok(), Some(p.clone()), "not a normalised path: {:?} -> {:?}", raw, p);
            let segments: Vec<&str> = p[1..].split('/').collect();
            prop_assert!(segments.iter().all(|s| *s != "." && *s != ".."), "a dot segment: {:?} -> {:?}", raw, p);
            prop_assert!(
                segments[..segments.len() - 1].iter().all(|s| !s.is_empty()),
                "an empty segment: {:?} -> {:?}", raw, p
            );
            let url = url::Url::parse(&format!("http://origin.test{p}"));
            prop_assert!(url.is_ok(), "{:?} -> {:?} is no URL path: {:?}", raw, p, url);
            let url = url.unwrap();
            prop_assert_eq!(
                (url.path(), url.query(), url.fragment()),
                (p.as_str(), None, None),
                "the HTTP client would not send the checked path: {:?}", raw
            );
        }

        #[test]
        fn nothing_under_a_prefix_slips_to_the_page_router(raw in proxied_raw(), prefixes in prefix_lists()) {
            let aimed = normalize_path(&raw).is_ok_and(|n| prefixes.iter().any(|prefix| lies_under(&n, prefix)))
                || prefixes.iter().any(|prefix| lies_under(&raw, prefix));
            if aimed {
                prop_assert_ne!(decide(&raw, &prefixes), ProxyDecision::Page, "{:?} reaches the page router", raw);
            }
        }
    }
}
