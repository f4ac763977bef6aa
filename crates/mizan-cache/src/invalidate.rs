//! `X-Mizan-Invalidate` (docs/protocol.md, "Purge"): an RFC 8941 List on origin responses,
//! each member a context with its params, e.g. `product_detail;id=42, product_list,
//! cart;user="u1";soft`.
//!
//! The header is split into members at top-level commas and each member is parsed on its
//! own, so one malformed member is skipped (and reported) without losing the others.
//!
//! [`header`] writes one (the origin's side, `mizan_cache.invalidate_header` in Python),
//! refusing what the header cannot carry so that what [`parse`] reads back is what was meant.

use super::PurgeMode;
use serde_json::{Map, Value};
use sfv::{BareItem, Decimal, Integer, Item, KeyRef, ListSerializer, Parser, RefBareItem, StringRef, TokenRef};

/// One purge asked for by the origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalidation {
    /// The context to purge.
    pub context: String,
    /// The params subset to match (`{}`: the whole context).
    pub params: Map<String, Value>,
    /// Hard, or soft with `;soft`.
    pub mode: PurgeMode,
}

/// The purges in a header value, and a message for each member that was skipped.
pub fn parse(header: &str) -> (Vec<Invalidation>, Vec<String>) {
    let mut purges = Vec::new();
    let mut skipped = Vec::new();
    for member in split_members(header) {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        match parse_member(member) {
            Ok(purge) => purges.push(purge),
            Err(why) => skipped.push(format!("{member:?}: {why}")),
        }
    }
    (purges, skipped)
}

/// The header value asking for `purges`, or what cannot be written: a context that is not an
/// identifier, a param name that is not an RFC 8941 key (lower case) or is `soft`, a value
/// that is not an integer within ±999,999,999,999,999, a decimal with at most three
/// fraction digits, a boolean, or a printable-ASCII string (objects, arrays, null and
/// other strings cannot travel in the header: purge those by API). `None` when `purges` is
/// empty: send no header.
pub fn header(purges: &[Invalidation]) -> Result<Option<String>, String> {
    let mut list = ListSerializer::new();
    for purge in purges {
        let context = TokenRef::from_str(&purge.context)
            .ok()
            .filter(|_| is_context_name(&purge.context))
            .ok_or_else(|| format!("{:?} is not a context name", purge.context))?;
        let mut item = list.bare_item(context);
        // By name: the same header whether or not serde_json keeps insertion order (deno_core
        // turns `preserve_order` on in the node's build, not in the Python wheel's).
        let mut params: Vec<_> = purge.params.iter().collect();
        params.sort_by_key(|(name, _)| *name);
        for (name, value) in params {
            let what = |why: &str| format!("param {name:?} of {}: {why}", purge.context);
            let key = KeyRef::from_str(name).map_err(|_| what("its name is not a header key (a-z, 0-9, _ - . *)"))?;
            if name == "soft" {
                return Err(what("`soft` is the mode's name, not a param's"));
            }
            item = match value {
                Value::Bool(b) => item.parameter(key, RefBareItem::Boolean(*b)),
                Value::String(text) => {
                    let text = StringRef::from_str(text)
                        .map_err(|_| what("a string in the header must be printable ASCII"))?;
                    item.parameter(key, RefBareItem::String(text))
                }
                Value::Number(n) => match n.as_i64() {
                    Some(i) => {
                        let i =
                            Integer::try_from(i).map_err(|_| what("integers in the header are at most 15 digits"))?;
                        item.parameter(key, RefBareItem::Integer(i))
                    }
                    None => {
                        let f = n.as_f64().unwrap_or(f64::NAN);
                        let d = Decimal::try_from(f).ok().filter(|d| f64::from(*d) == f).ok_or_else(|| {
                            what("a decimal in the header has at most 12 integer and 3 fraction digits")
                        })?;
                        item.parameter(key, RefBareItem::Decimal(d))
                    }
                },
                _ => return Err(what("objects, arrays and null cannot travel in the header")),
            };
        }
        if purge.mode == PurgeMode::Soft {
            let _ = item.parameter(KeyRef::constant("soft"), RefBareItem::Boolean(true));
        }
    }
    Ok(list.finish())
}

fn is_context_name(context: &str) -> bool {
    context.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && context.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits at commas outside quoted strings.
fn split_members(header: &str) -> Vec<&str> {
    let mut members = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in header.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                members.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    members.push(&header[start..]);
    members
}

fn parse_member(member: &str) -> Result<Invalidation, String> {
    let item: Item = Parser::new(member).parse_item().map_err(|e| e.to_string())?;
    let context = match &item.bare_item {
        BareItem::Token(t) => t.as_str().to_string(),
        BareItem::String(s) => s.as_str().to_string(),
        _ => return Err("the member must be a context name (token or string)".into()),
    };
    if !is_context_name(&context) {
        return Err(format!("{context:?} is not a context name"));
    }
    let mut params = Map::new();
    let mut mode = PurgeMode::Hard;
    for (key, value) in &item.params {
        if key.as_str() == "soft" {
            match value {
                BareItem::Boolean(true) => mode = PurgeMode::Soft,
                BareItem::Boolean(false) => {}
                _ => return Err("`soft` takes no value".into()),
            }
            continue;
        }
        let value = match value {
            BareItem::Integer(i) => Value::from(i64::from(*i)),
            BareItem::Decimal(d) => {
                serde_json::Number::from_f64(f64::from(*d)).map(Value::Number).ok_or("bad decimal")?
            }
            BareItem::String(s) => Value::String(s.as_str().to_string()),
            BareItem::Token(t) => Value::String(t.as_str().to_string()),
            BareItem::Boolean(b) => Value::Bool(*b),
            _ => return Err(format!("param {:?} has a type params cannot hold", key.as_str())),
        };
        params.insert(key.as_str().to_string(), value);
    }
    Ok(Invalidation { context, params, mode })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn purge(context: &str, params: Value, mode: PurgeMode) -> Invalidation {
        Invalidation { context: context.into(), params: params.as_object().unwrap().clone(), mode }
    }

    #[test]
    fn parses_members_with_params_and_modes() {
        let (purges, skipped) = parse(r#"product_detail;id=42, product_list, cart;user="u1";soft"#);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            purges,
            vec![
                purge("product_detail", json!({"id": 42}), PurgeMode::Hard),
                purge("product_list", json!({}), PurgeMode::Hard),
                purge("cart", json!({"user": "u1"}), PurgeMode::Soft),
            ]
        );
    }

    #[test]
    fn typed_params() {
        let (purges, _) = parse(r#""search";q="a, b";exact=?1;min=1.5;tag=red"#);
        assert_eq!(
            purges,
            vec![purge("search", json!({"q": "a, b", "exact": true, "min": 1.5, "tag": "red"}), PurgeMode::Hard)]
        );
    }

    #[test]
    fn skips_malformed_members_and_keeps_the_rest() {
        let (purges, skipped) = parse(r#"product_list, 42, (a b), "no spaces allowed", x;id=:AQID:, ok;id=1, bad;;"#);
        assert_eq!(
            purges,
            vec![purge("product_list", json!({}), PurgeMode::Hard), purge("ok", json!({"id": 1}), PurgeMode::Hard)]
        );
        assert_eq!(skipped.len(), 5, "{skipped:?}");
        assert!(skipped[0].starts_with("\"42\""), "{skipped:?}");
    }

    #[test]
    fn an_empty_or_garbage_header_purges_nothing() {
        assert_eq!(parse("").0, vec![]);
        assert_eq!(parse(" , ,").0, vec![]);
        assert_eq!(parse("\u{0}").0, vec![]);
    }

    #[test]
    fn writes_what_it_reads() {
        let purges = vec![
            purge("product_detail", json!({"id": 42}), PurgeMode::Hard),
            purge("product_list", json!({}), PurgeMode::Hard),
            purge("cart", json!({"user": "u1"}), PurgeMode::Soft),
            purge("search", json!({"q": "a, \"b\"", "exact": true, "min": 1.5, "n": -3}), PurgeMode::Hard),
        ];
        let written = header(&purges).unwrap().unwrap();
        assert_eq!(
            written,
            r#"product_detail;id=42, product_list, cart;user="u1";soft, search;exact;min=1.5;n=-3;q="a, \"b\"""#
        );
        let (read, skipped) = parse(&written);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(read, purges);
        assert_eq!(header(&[]).unwrap(), None);
    }

    #[test]
    fn refuses_what_the_header_cannot_carry() {
        for (context, params, why) in [
            ("product-detail", json!({}), "not a context name"),
            ("p", json!({"Id": 1}), "not a header key"),
            ("p", json!({"soft": true}), "mode's name"),
            ("p", json!({"q": "caf\u{e9}"}), "printable ASCII"),
            ("p", json!({"q": {"a": 1}}), "objects"),
            ("p", json!({"q": null}), "objects"),
            ("p", json!({"n": 1_000_000_000_000_000_i64}), "15 digits"),
            ("p", json!({"x": 0.1234}), "3 fraction digits"),
        ] {
            let error = header(&[purge(context, params, PurgeMode::Hard)]).unwrap_err();
            assert!(error.contains(why), "{context}: {error}");
        }
    }
}
