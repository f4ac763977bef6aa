//! The access line, formatted here rather than by `tracing-subscriber`'s fmt layer: one line
//! per request is the log's hottest event, and the generic layer (field visitors, styling)
//! costs the hit path more than the line's own bytes. The line keeps the layout the fmt layer
//! gives every other event (text, or JSON with `timestamp`, `level`, `fields`, `target`) and
//! the log filter still decides (`MIZAN_LOG=info,mizan_render::access=off`). Without a sink
//! (a node embedded in a test, say) the line goes through `tracing` as any event.

use serde::Serialize;
use std::cell::RefCell;
use std::fmt::Display;
use std::io::Write as _;
use std::sync::OnceLock;

/// Where access lines go, and in which format.
struct Sink {
    out: tracing_appender::non_blocking::NonBlocking,
    json: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

thread_local! {
    /// The line being formatted, reused (its capacity stays bounded by one line).
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Sends access lines to `out` (the writer the other log events go to), as JSON when `json`.
/// Once per process; later calls change nothing.
pub fn write_to(out: tracing_appender::non_blocking::NonBlocking, json: bool) {
    let _ = SINK.set(Sink { out, json });
}

/// One access line's fields.
#[derive(Serialize)]
pub(super) struct Fields<'a> {
    pub(super) message: &'static str,
    #[serde(serialize_with = "display")]
    pub(super) method: &'a dyn Display,
    pub(super) route: &'a str,
    pub(super) status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cache: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) render_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) origin_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) bytes: Option<u64>,
    pub(super) ms: f64,
    #[serde(serialize_with = "display")]
    pub(super) request_id: &'a dyn Display,
    #[serde(serialize_with = "display")]
    pub(super) path: &'a dyn Display,
}

fn display<S: serde::Serializer>(value: &&dyn Display, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(serialize_with = "display")]
    timestamp: &'a dyn Display,
    level: &'static str,
    fields: &'a Fields<'a>,
    target: &'static str,
}

/// Now, as the fmt layer writes it: `2026-11-26T22:05:03.446630Z`.
struct Now(time::OffsetDateTime);

impl Display for Now {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
}

/// Writes the line of `fields` under `target`; false when there is no sink (the caller
/// then logs it through `tracing`).
pub(super) fn write(target: &'static str, fields: &Fields<'_>) -> bool {
    let Some(sink) = SINK.get() else { return false };
    let now = Now(time::OffsetDateTime::now_utc());
    LINE.with_borrow_mut(|line| {
        line.clear();
        let formatted = if sink.json {
            let json = JsonLine { timestamp: &now, level: "INFO", fields, target };
            serde_json::to_writer(&mut *line, &json).map_err(std::io::Error::from)
        } else {
            text(line, &now, target, fields)
        };
        if formatted.is_ok() {
            line.push(b'\n');
            // The writer hands the bytes to the log thread; it fails only once that is gone.
            let _ = sink.out.clone().write_all(line);
        }
        if line.capacity() > 64 << 10 {
            *line = Vec::new();
        }
    });
    true
}

/// The text layout of the fmt layer: `<time>  INFO <target>: request key=value ...`.
fn text(line: &mut Vec<u8>, now: &Now, target: &str, f: &Fields<'_>) -> std::io::Result<()> {
    write!(line, "{now}  INFO {target}: {} method={} route={} status={}", f.message, f.method, f.route, f.status)?;
    if let Some(cache) = f.cache {
        write!(line, " cache={cache}")?;
    }
    if let Some(ms) = f.render_ms {
        write!(line, " render_ms={ms:?}")?;
    }
    if let Some(ms) = f.origin_ms {
        write!(line, " origin_ms={ms:?}")?;
    }
    if let Some(bytes) = f.bytes {
        write!(line, " bytes={bytes}")?;
    }
    write!(line, " ms={:?} request_id={} path={}", f.ms, f.request_id, f.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_line_has_the_fmt_layers_layout() {
        let now = Now(time::OffsetDateTime::from_unix_timestamp_nanos(1_795_730_703_446_630_000).unwrap());
        let (method, id, path) = (&"GET" as &dyn Display, &"abc-1" as &dyn Display, &"/p?x=" as &dyn Display);
        let fields = Fields {
            message: "request",
            method,
            route: "/products/:id",
            status: 200,
            cache: Some("hit"),
            render_ms: None,
            origin_ms: Some(2.0),
            bytes: Some(4032),
            ms: 0.0,
            request_id: id,
            path,
        };
        let mut line = Vec::new();
        text(&mut line, &now, "mizan_render::access", &fields).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "2026-11-26T22:05:03.446630Z  INFO mizan_render::access: request method=GET route=/products/:id \
             status=200 cache=hit origin_ms=2.0 bytes=4032 ms=0.0 request_id=abc-1 path=/p?x="
        );
        let json = serde_json::to_value(JsonLine { timestamp: &now, level: "INFO", fields: &fields, target: "t" });
        let json = json.unwrap();
        assert_eq!(json["timestamp"], "2026-11-26T22:05:03.446630Z");
        assert_eq!((&json["fields"]["status"], &json["fields"]["ms"]), (&200.into(), &0.0.into()));
        assert!(json["fields"].get("render_ms").is_none(), "absent, not null: {json}");
    }
}
