//! `X-Mizan-Invalidate` (docs/protocol.md, "Purge"): an RFC 8941 List on origin responses,
//! each member a context with its params, e.g. `product_detail;id=42, product_list,
//! cart;user="u1";soft`.
//!
//! The header is split into members at top-level commas and each member is parsed on its
//! own, so one malformed member is skipped (and reported) without losing the others.

use super::PurgeMode;
use serde_json::{Map, Value};
use sfv::{BareItem, Item, Parser};

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
    let identifier = context.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && context.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !identifier {
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
}
