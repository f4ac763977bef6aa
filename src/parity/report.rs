//! Comparing each case's page across runtimes, and the reports: text for a terminal (the first
//! differing offset, the markup around it in both, a diff of the HTML cut at tags, the Intl
//! calls each runtime made), JSON for scripts, JUnit XML for CI systems.

use super::runtimes::Outcome;
use serde::Serialize;
use serde_json::{Value, json};

/// One case in one runtime, compared with this node's page.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The case.
    pub case: String,
    /// The runtime.
    pub runtime: String,
    /// `None`: identical. Else what differs, for a reader.
    pub difference: Option<Difference>,
}

/// What differs.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// `status`, `headers`, `html`, or `error` (one side threw).
    pub what: String,
    /// One line.
    pub summary: String,
    /// The first differing byte of the HTML.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// The lines of the HTML (cut at tags) that differ: `-` this node, `+` the runtime.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub diff: String,
    /// Intl calls the runtime made, when it made any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub intl: Vec<Value>,
}

/// Compares `theirs` (from `runtime`) with `ours` (this node's).
pub fn compare(case: &str, runtime: &str, ours: &Outcome, theirs: &Outcome) -> Verdict {
    let difference = differ(ours, theirs, runtime);
    Verdict { case: case.to_string(), runtime: runtime.to_string(), difference }
}

fn intl_of(outcome: &Outcome) -> &[Value] {
    match outcome {
        Outcome::Rendered { intl, .. } | Outcome::Error { intl, .. } => intl,
    }
}

fn differ(ours: &Outcome, theirs: &Outcome, runtime: &str) -> Option<Difference> {
    let intl = || {
        let (a, b) = (intl_of(ours), intl_of(theirs));
        // This node does not record its Intl calls: the other runtime's show which call
        // gave which text there.
        let _ = a;
        if b.is_empty() { Vec::new() } else { vec![json!({"runtime": runtime, "calls": b})] }
    };
    let plain = |what: &str, summary: String| {
        Some(Difference { what: what.into(), summary, offset: None, diff: String::new(), intl: intl() })
    };
    match (ours, theirs) {
        (Outcome::Error { error: a, .. }, Outcome::Error { error: b, .. }) => {
            let (a, b) = (first_line(a), first_line(b));
            (a != b)
                .then(|| plain("error", format!("both threw, differently: {a:?} here, {b:?} in {runtime}")))
                .flatten()
        }
        (Outcome::Error { error, .. }, Outcome::Rendered { .. }) => {
            plain("error", format!("threw here ({:?}), rendered in {runtime}", first_line(error)))
        }
        (Outcome::Rendered { .. }, Outcome::Error { error, .. }) => {
            plain("error", format!("rendered here, threw in {runtime}: {}", first_line(error)))
        }
        (
            Outcome::Rendered { status: s1, headers: h1, html: a, .. },
            Outcome::Rendered { status: s2, headers: h2, html: b, .. },
        ) => {
            if s1 != s2 {
                return plain("status", format!("status {s1} here, {s2} in {runtime}"));
            }
            if h1 != h2 {
                return plain("headers", format!("headers {h1:?} here, {h2:?} in {runtime}"));
            }
            if a == b {
                return None;
            }
            let offset = a.bytes().zip(b.bytes()).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            let summary = format!(
                "HTML differs at byte {offset}: {:?} here, {:?} in {runtime}",
                around(a, offset),
                around(b, offset)
            );
            Some(Difference { what: "html".into(), summary, offset: Some(offset), diff: diff(a, b), intl: intl() })
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Up to 60 bytes either side of `offset`, on character boundaries.
fn around(text: &str, offset: usize) -> &str {
    let mut start = offset.saturating_sub(60).min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (offset + 60).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    &text[start..end]
}

/// The changed lines of the two documents cut after each `>`, at most 40.
fn diff(a: &str, b: &str) -> String {
    let cut = |s: &str| s.replace('>', ">\n");
    let (a, b) = (cut(a), cut(b));
    let diff = similar::TextDiff::from_lines(&a, &b);
    let mut out = String::new();
    for (n, change) in diff.iter_all_changes().filter(|c| c.tag() != similar::ChangeTag::Equal).enumerate() {
        if n == 40 {
            out.push_str("…\n");
            break;
        }
        let sign = if change.tag() == similar::ChangeTag::Delete { '-' } else { '+' };
        out.push(sign);
        out.push_str(change.value().trim_end_matches('\n'));
        out.push('\n');
    }
    out
}

/// The text report: a line per case and runtime that differs, with its details, then the
/// summary.
pub fn text(verdicts: &[Verdict], runtimes: &[String]) -> String {
    let mut out = String::new();
    for v in verdicts {
        if let Some(d) = &v.difference {
            out.push_str(&format!("DIFFERS {} in {}: {}\n", v.case, v.runtime, d.summary));
            for line in d.diff.lines() {
                out.push_str(&format!("    {line}\n"));
            }
            for side in &d.intl {
                out.push_str(&format!("    Intl calls in {}: {}\n", side["runtime"], side["calls"]));
            }
        }
    }
    let differing = verdicts.iter().filter(|v| v.difference.is_some()).count();
    let cases: std::collections::BTreeSet<&str> = verdicts.iter().map(|v| v.case.as_str()).collect();
    out.push_str(&format!(
        "parity: {} cases × {} runtimes ({}): {} identical, {differing} differ\n",
        cases.len(),
        runtimes.len(),
        runtimes.join(", "),
        verdicts.len() - differing
    ));
    out
}

/// The JSON report.
pub fn json(verdicts: &[Verdict], versions: &Value) -> String {
    let differing = verdicts.iter().filter(|v| v.difference.is_some()).count();
    json!({"identical": verdicts.len() - differing, "differ": differing, "runtimes": versions, "results": verdicts})
        .to_string()
}

/// The JUnit XML report: a test suite per runtime, a test case per case.
pub fn junit(verdicts: &[Verdict], runtimes: &[String]) -> String {
    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"mizan-render parity\">\n");
    for runtime in runtimes {
        let mine: Vec<&Verdict> = verdicts.iter().filter(|v| &v.runtime == runtime).collect();
        let failures = mine.iter().filter(|v| v.difference.is_some()).count();
        out.push_str(&format!(
            "  <testsuite name=\"parity {}\" tests=\"{}\" failures=\"{failures}\">\n",
            xml(runtime),
            mine.len()
        ));
        for v in mine {
            out.push_str(&format!("    <testcase classname=\"parity.{}\" name=\"{}\"", xml(runtime), xml(&v.case)));
            match &v.difference {
                None => out.push_str("/>\n"),
                Some(d) => {
                    out.push_str(&format!(
                        ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>\n",
                        xml(&d.summary),
                        xml(&d.what),
                        xml(&d.diff)
                    ));
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// `text` escaped for XML attributes and text; characters XML 1.0 cannot hold are dropped.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(html: &str) -> Outcome {
        Outcome::Rendered { status: 200, headers: vec![], html: html.into(), intl: vec![] }
    }

    #[test]
    fn names_the_first_differing_byte_and_the_lines() {
        let v = compare("p", "node", &page("<p>a</p><p>same</p>"), &page("<p>b</p><p>same</p>"));
        let d = v.difference.unwrap();
        assert_eq!((d.what.as_str(), d.offset), ("html", Some(3)));
        assert_eq!(d.diff, "-a</p>\n+b</p>\n");
        assert!(compare("p", "node", &page("x"), &page("x")).difference.is_none());
    }

    #[test]
    fn junit_is_escaped_xml() {
        let v = compare("a<b", "node", &page("<i>\"&"), &page("<b>"));
        let xml = junit(&[v], &["node".into()]);
        assert!(xml.contains("name=\"a&lt;b\"") && xml.contains("failures=\"1\""), "{xml}");
        assert!(!xml.contains("<i>"), "{xml}");
    }
}
