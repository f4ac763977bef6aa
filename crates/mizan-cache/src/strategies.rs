//! Property-test strategies shared by the protocol's tests and the node's (feature
//! `strategies`): hostile request paths, and a proptest configuration that keeps no failure
//! files.

use proptest::prelude::*;

/// Cases for the property tests; failures are not persisted to files (the shrunk input is
/// in the failure message).
pub fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// One piece of a hostile request path: separators, dot segments plain and encoded, encoded
/// separators, double encodings, unreserved characters encoded, bad encodings, characters
/// a URL parser rewrites, and raw or encoded non-ASCII.
fn hostile_piece() -> impl Strategy<Value = String> {
    const PIECES: &[&str] = &[
        "/",
        "/",
        "/",
        "//",
        ".",
        "..",
        "/./",
        "/../",
        "%2e",
        "%2E",
        "%2e%2E",
        ".%2e",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "%25",
        "%252e",
        "%2525",
        "%41",
        "%61",
        "%7e",
        "%7E",
        "%2d",
        "%5F",
        "%30",
        "%00",
        "%01",
        "%1f",
        "%7f",
        "%20",
        "%3f",
        "%23",
        "%3b",
        "%c3%a9",
        "%C3%A9",
        "%e2%82%ac",
        "%",
        "%4",
        "%zz",
        "%g0",
        "a",
        "B",
        "z9",
        "~",
        "-",
        "_",
        "api",
        "API",
        "x",
        "\\",
        ";",
        " ",
        "\t",
        "?",
        "#",
        "\"",
        "{",
        "}",
        "<",
        ">",
        "`",
        "^",
        "|",
        "[",
        "]",
        "@",
        ":",
        "=",
        "&",
        "+",
        "$",
        "!",
        "'",
        "(",
        ")",
        "*",
        ",",
        "é",
        "\u{1F600}",
        "\u{7f}",
        "\u{0}",
    ];
    let encode = |bytes: &[u8], upper: bool| -> String {
        bytes.iter().map(|b| if upper { format!("%{b:02X}") } else { format!("%{b:02x}") }).collect()
    };
    prop_oneof![
        6 => prop::sample::select(PIECES).prop_map(str::to_string),
        1 => (any::<u8>(), any::<bool>()).prop_map(move |(b, upper)| encode(&[b], upper)),
        1 => (any::<char>(), any::<bool>()).prop_map(move |(c, upper)| {
            encode(c.encode_utf8(&mut [0; 4]).as_bytes(), upper)
        }),
    ]
}

/// A hostile request path of fewer than `pieces` pieces: mostly starting with '/', sometimes
/// not.
pub fn hostile_path(pieces: usize) -> impl Strategy<Value = String> {
    let tail = move || prop::collection::vec(hostile_piece(), 0..pieces).prop_map(|pieces| pieces.concat());
    prop_oneof![9 => tail().prop_map(|t| format!("/{t}")), 1 => tail()]
}
