//! The result line of a job: its fields, written once, as JSON (JSONL results) or as a CSV
//! row (`--format csv`, its columns [`CSV_COLUMNS`] and header [`csv_header`]), and what the
//! summary takes from it ([`Outcome`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ErrorKind;
use crate::redact;
use crate::settings::ResultsFormat;

/// What the summary needs from one finished job.
#[derive(Debug)]
pub struct Outcome {
    /// The job succeeded.
    pub ok: bool,
    /// The status of its last response, if one came.
    pub status: Option<u16>,
    /// How it failed, if it did.
    pub error_kind: Option<ErrorKind>,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's latency, if a response came.
    pub latency: Option<Duration>,
    /// Its result line, without the newline.
    pub json: String,
    /// Its share of [`RESULT_BYTES`], held until the line is written (dropped with it).
    pub(crate) held: Option<OwnedSemaphorePermit>,
}

/// Bytes of result lines that may wait in memory to be written, all threads together. Lines
/// with saved bodies are large (up to `--max-body` each), and thousands of them queued between
/// the jobs and the writer grew to gigabytes; past this budget a finished job waits for the
/// writer before it hands its line over (and its place takes no new job).
pub const RESULT_BYTES: usize = 64 << 20;

impl crate::sink::Line for Outcome {
    fn text(&self) -> &str {
        &self.json
    }
}

/// A failed job's `error` object.
#[derive(Serialize)]
pub(crate) struct ErrorOut {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    /// No response arrived, but the request may have reached the server (it started to go
    /// out): a job that is not idempotent may have taken effect.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) maybe_sent: bool,
}

impl ErrorOut {
    /// The message is redacted here, once for every result: it may quote a URL, a header or
    /// an input line.
    pub(crate) fn new(kind: ErrorKind, message: &str, maybe_sent: bool) -> Self {
        Self {
            kind,
            message: redact::text(message).into_owned(),
            maybe_sent,
        }
    }
}

/// One result line's fields, as JSONL writes them (CSV takes the scalar ones).
#[derive(Serialize)]
pub(crate) struct ResultLine<'a> {
    pub(crate) line: u64,
    pub(crate) id: &'a str,
    pub(crate) method: &'a str,
    pub(crate) url: Cow<'a, str>,
    pub(crate) ok: bool,
    pub(crate) status: Option<u16>,
    pub(crate) attempts: u32,
    pub(crate) latency_ms: Option<f64>,
    /// From the last attempt's start (connecting included) to its response's head, written
    /// in milliseconds to the microsecond (`ttfb_ms`).
    #[serde(
        rename = "ttfb_ms",
        skip_serializing_if = "Option::is_none",
        serialize_with = "ms_to_the_micro"
    )]
    pub(crate) ttfb: Option<Duration>,
    pub(crate) elapsed_ms: f64,
    pub(crate) started_at: Rfc3339,
    /// Redirects followed.
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) redirects: u32,
    /// Where the last redirect went (redacted), when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) final_url: Option<String>,
    /// Times this job's failures opened its host's breaker.
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) opened_breaker: u32,
    /// Times this job's responses paused its host (`Retry-After`, or an allowance spent).
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) paused_host: u32,
    /// A `text/event-stream` response's events with data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) events: Option<u64>,
    /// From the last attempt's start to the end of its stream's first event with data (time
    /// to first token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ttfe_ms: Option<f64>,
    /// What the job's requests cost (settled), where costs are counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cost: Option<u64>,
    /// The `--extract` fields of the last response's JSON body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) extract: Option<serde_json::Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ErrorOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) body_bytes: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) headers: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<String>,
    /// A saved body that is not UTF-8, in base64 (standard alphabet, padded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) body_base64: Option<String>,
    /// Where `--save-body-dir` wrote the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) body_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) meta: Option<&'a Value>,
}

impl<'a> ResultLine<'a> {
    /// The line of a job (`line`, `id`, `method`, its URL redacted) that started at
    /// `started_at`: not ok, no status, no attempt, nothing else yet — the one constructor,
    /// whose caller sets what the job did.
    pub(crate) fn new(
        line: u64,
        id: &'a str,
        method: &'a str,
        url: Cow<'a, str>,
        started_at: SystemTime,
        meta: Option<&'a Value>,
    ) -> Self {
        Self {
            line,
            id,
            method,
            url,
            ok: false,
            status: None,
            attempts: 0,
            latency_ms: None,
            ttfb: None,
            elapsed_ms: 0.0,
            started_at: Rfc3339(started_at),
            redirects: 0,
            final_url: None,
            opened_breaker: 0,
            paused_host: 0,
            events: None,
            ttfe_ms: None,
            cost: None,
            extract: None,
            error: None,
            body_bytes: None,
            truncated: false,
            headers: None,
            body: None,
            body_base64: None,
            body_file: None,
            meta,
        }
    }

    /// The line in the run's results format, without its newline.
    pub(crate) fn serialise(&self, format: ResultsFormat) -> String {
        match format {
            ResultsFormat::Jsonl => to_json(self),
            ResultsFormat::Csv => to_csv(self),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A wall-clock time written as RFC 3339 in UTC with milliseconds
/// (`2026-11-26T01:02:03.456Z`): the `started_at` of results, which reports plot over time.
///
/// Formatting a date (`humantime`) cost ~800 instructions a result, 2.5 % of a request
/// (callgrind); its seconds change once a second, so each thread keeps the last ones written
/// and adds only the milliseconds.
pub(crate) struct Rfc3339(pub(crate) SystemTime);

impl Rfc3339 {
    /// The latest time RFC 3339's four-digit year can write: 9999-12-31T23:59:59.999Z.
    const LAST_SECOND: u64 = 253_402_300_799;

    /// The time's `YYYY-MM-DDTHH:MM:SS.mmmZ`, from the thread's cached seconds. A clock before
    /// 1970 or past 9999 is written as the nearest time that fits (humantime panics on both).
    fn fixed(&self) -> [u8; 24] {
        thread_local! {
            /// The last whole second formatted, and its `YYYY-MM-DDTHH:MM:SS`.
            static LAST: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
        }
        let d = self
            .0
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (secs, ms) = match d.as_secs() {
            s if s > Self::LAST_SECOND => (Self::LAST_SECOND, 999),
            s => (s, d.subsec_millis()),
        };
        let (mut last, mut prefix) = LAST.get();
        if last != secs {
            let whole = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(secs),
            )
            .to_string();
            prefix = *b"1970-01-01T00:00:00";
            if let Some(head) = whole.as_bytes().get(..19) {
                prefix.copy_from_slice(head);
            }
            last = secs;
            LAST.set((last, prefix));
        }
        let mut out = [0u8; 24];
        out[..19].copy_from_slice(&prefix);
        out[19] = b'.';
        out[20] = b'0' + (ms / 100) as u8;
        out[21] = b'0' + (ms / 10 % 10) as u8;
        out[22] = b'0' + (ms % 10) as u8;
        out[23] = b'Z';
        out
    }

    /// Appends the time as text (no quotes).
    fn push_to(&self, out: &mut String) {
        let text = self.fixed();
        // ASCII digits and separators only.
        out.push_str(std::str::from_utf8(&text).unwrap_or("1970-01-01T00:00:00.000Z"));
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(24);
        self.push_to(&mut text);
        s.serialize_str(&text)
    }
}

/// The columns of a CSV result row (`--format csv`), in order: the keys of a JSONL result
/// whose values are scalars, with `error`'s as `error_kind`, `error_message`, `maybe_sent`.
pub const CSV_COLUMNS: [&str; 26] = [
    "line",
    "id",
    "method",
    "url",
    "ok",
    "status",
    "attempts",
    "latency_ms",
    "elapsed_ms",
    "started_at",
    "redirects",
    "final_url",
    "error_kind",
    "error_message",
    "maybe_sent",
    "body_bytes",
    "truncated",
    "body",
    "body_base64",
    "body_file",
    "opened_breaker",
    "paused_host",
    "cost",
    "ttfb_ms",
    "events",
    "ttfe_ms",
];

/// A result as a CSV row (without its line end), the fields of [`CSV_COLUMNS`]; an absent
/// value is an empty field.
fn to_csv(line: &ResultLine<'_>) -> String {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let error = line.error.as_ref();
    let mut started = String::with_capacity(24);
    line.started_at.push_to(&mut started);
    // Text that came from outside (the input, a server) is written so that a spreadsheet
    // shows it as text rather than running it as a formula.
    let text = |v: &str| cell_text(v).into_owned();
    let text_opt = |v: Option<&String>| v.map_or_else(String::new, |v| text(v));
    let fields: [String; 26] = [
        line.line.to_string(),
        text(line.id),
        line.method.to_string(),
        text(&line.url),
        line.ok.to_string(),
        opt(line.status.map(|s| s.to_string())),
        line.attempts.to_string(),
        opt(line.latency_ms.map(|l| l.to_string())),
        line.elapsed_ms.to_string(),
        started,
        line.redirects.to_string(),
        text_opt(line.final_url.as_ref()),
        opt(error.map(|e| e.kind.as_str().to_string())),
        text_opt(error.map(|e| &e.message)),
        error.is_some_and(|e| e.maybe_sent).to_string(),
        opt(line.body_bytes.map(|b| b.to_string())),
        line.truncated.to_string(),
        text_opt(line.body.as_ref()),
        text_opt(line.body_base64.as_ref()),
        text_opt(line.body_file.as_ref()),
        line.opened_breaker.to_string(),
        line.paused_host.to_string(),
        opt(line.cost.map(|c| c.to_string())),
        opt(line.ttfb.map(|t| {
            let mut s = String::new();
            json_ms(&mut s, &mut itoa::Buffer::new(), t);
            s
        })),
        opt(line.events.map(|n| n.to_string())),
        opt(line.ttfe_ms.map(|t| t.to_string())),
    ];
    // `--extract`: a column each, in the order of their names (as `csv_header` writes them).
    let mut pairs: Vec<(&String, &Value)> = line.extract.iter().flatten().collect();
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let extracted = pairs.into_iter().map(|(_, v)| match v {
        Value::Null => String::new(),
        Value::String(s) => text(s),
        other => text(&other.to_string()),
    });
    let fields: Vec<String> = fields.into_iter().chain(extracted).collect();
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    if w.write_record(&fields).is_err() {
        return String::new();
    }
    let mut row = w
        .into_inner()
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    row.pop(); // the sink ends the line
    row
}

/// A CSV cell of text from outside: one that a spreadsheet would run as a formula (it starts
/// with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`, which spreadsheets
/// show as text (OWASP's rule for CSV injection); any other is as it is.
pub fn cell_text(v: &str) -> Cow<'_, str> {
    match v.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => Cow::Owned(format!("'{v}")),
        _ => Cow::Borrowed(v),
    }
}

/// The header row of CSV results: [`CSV_COLUMNS`], then `extract.NAME` for each of
/// `extract`'s names, in their order (as a result's `extract` holds them).
pub fn csv_header(extract: &[crate::settings::Extraction]) -> String {
    let mut names: Vec<&str> = extract.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    let mut row = CSV_COLUMNS.join(",");
    for n in names {
        row.push_str(",extract.");
        row.push_str(n);
    }
    row
}

/// A result line as JSON, its buffer sized for a saved body up front (growing by doubling, a
/// 1 MiB body's line would hold 2 MiB).
///
/// Written by hand rather than by `serde_json::to_writer` on the derived `Serialize` (which
/// stays, as the reference the tests hold this to, byte for byte): the keys are constants
/// that need no escaping, strings without a byte to escape are copied whole, and numbers go
/// through `itoa` and `zmij` (serde_json's own float writer) — 4,000 instructions a line
/// became ~1,500 (callgrind, `bench/instructions.sh`).
fn to_json(line: &ResultLine<'_>) -> String {
    let size = 512 + line.body.as_ref().map_or(0, |b| b.len() + b.len() / 16);
    let mut out = String::with_capacity(size);
    let mut int = itoa::Buffer::new();
    out.push_str("{\"line\":");
    out.push_str(int.format(line.line));
    out.push_str(",\"id\":");
    json_str(&mut out, line.id);
    out.push_str(",\"method\":");
    json_str(&mut out, line.method);
    out.push_str(",\"url\":");
    json_str(&mut out, &line.url);
    out.push_str(if line.ok {
        ",\"ok\":true"
    } else {
        ",\"ok\":false"
    });
    out.push_str(",\"status\":");
    match line.status {
        Some(s) => out.push_str(int.format(s)),
        None => out.push_str("null"),
    }
    out.push_str(",\"attempts\":");
    out.push_str(int.format(line.attempts));
    out.push_str(",\"latency_ms\":");
    json_f64(&mut out, line.latency_ms);
    if let Some(t) = line.ttfb {
        out.push_str(",\"ttfb_ms\":");
        json_ms(&mut out, &mut int, t);
    }
    out.push_str(",\"elapsed_ms\":");
    json_f64(&mut out, Some(line.elapsed_ms));
    out.push_str(",\"started_at\":\"");
    line.started_at.push_to(&mut out);
    out.push('"');
    if line.redirects != 0 {
        out.push_str(",\"redirects\":");
        out.push_str(int.format(line.redirects));
    }
    if let Some(u) = &line.final_url {
        out.push_str(",\"final_url\":");
        json_str(&mut out, u);
    }
    if line.opened_breaker != 0 {
        out.push_str(",\"opened_breaker\":");
        out.push_str(int.format(line.opened_breaker));
    }
    if line.paused_host != 0 {
        out.push_str(",\"paused_host\":");
        out.push_str(int.format(line.paused_host));
    }
    if let Some(n) = line.events {
        out.push_str(",\"events\":");
        out.push_str(int.format(n));
    }
    if line.ttfe_ms.is_some() {
        out.push_str(",\"ttfe_ms\":");
        json_f64(&mut out, line.ttfe_ms);
    }
    if let Some(c) = line.cost {
        out.push_str(",\"cost\":");
        out.push_str(int.format(c));
    }
    if let Some(x) = &line.extract {
        out.push_str(",\"extract\":");
        out.push_str(&serde_json::to_string(x).unwrap_or_else(|_| "null".into()));
    }
    if let Some(e) = &line.error {
        out.push_str(",\"error\":{\"kind\":\"");
        out.push_str(e.kind.as_str());
        out.push_str("\",\"message\":");
        json_str(&mut out, &e.message);
        if e.maybe_sent {
            out.push_str(",\"maybe_sent\":true");
        }
        out.push('}');
    }
    if let Some(b) = line.body_bytes {
        out.push_str(",\"body_bytes\":");
        out.push_str(int.format(b));
    }
    if line.truncated {
        out.push_str(",\"truncated\":true");
    }
    if let Some(h) = &line.headers {
        out.push_str(",\"headers\":{");
        for (i, (k, v)) in h.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(&mut out, k);
            out.push(':');
            json_str(&mut out, v);
        }
        out.push('}');
    }
    for (key, value) in [
        (",\"body\":", &line.body),
        (",\"body_base64\":", &line.body_base64),
        (",\"body_file\":", &line.body_file),
    ] {
        if let Some(v) = value {
            out.push_str(key);
            json_str(&mut out, v);
        }
    }
    if let Some(m) = line.meta {
        out.push_str(",\"meta\":");
        // A `Value` always serialises (its map keys are strings).
        out.push_str(&serde_json::to_string(m).unwrap_or_else(|_| "null".into()));
    }
    out.push('}');
    out
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn json_str(out: &mut String, s: &str) {
    /// The bytes JSON escapes: controls, `"` and `\`.
    const ESCAPED: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 0x20 {
            t[i] = true;
            i += 1;
        }
        t[b'"' as usize] = true;
        t[b'\\' as usize] = true;
        t
    };
    if s.bytes().any(|b| ESCAPED[b as usize]) {
        // Rare: a quote, a backslash or a control character; serde_json escapes them.
        match serde_json::to_string(s) {
            Ok(text) => out.push_str(&text),
            Err(_) => out.push_str("\"\""),
        }
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// A number of milliseconds as serde_json writes an `f64` (shortest round-trip form; `null`
/// when absent or not finite).
/// `d` in milliseconds to the microsecond (`12.345`), by integers: a float's shortest form
/// cost ~150 instructions a result (callgrind), this a third of it.
fn json_ms(out: &mut String, int: &mut itoa::Buffer, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    out.push_str(int.format(us / 1000));
    let frac = us % 1000;
    if frac != 0 {
        out.push('.');
        // Three digits (zeros ahead kept, behind dropped, as a float's shortest form).
        let digits = int.format(frac + 1000);
        out.push_str(digits.get(1..).unwrap_or("0").trim_end_matches('0'));
    }
}

/// Serde's side of [`json_ms`].
fn ms_to_the_micro<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    let mut text = String::new();
    if let Some(d) = d {
        json_ms(&mut text, &mut itoa::Buffer::new(), *d);
    }
    match text.parse::<f64>() {
        Ok(v) => s.serialize_f64(v),
        Err(_) => s.serialize_none(),
    }
}

fn json_f64(out: &mut String, v: Option<f64>) {
    match v {
        Some(v) if v.is_finite() => out.push_str(zmij::Buffer::new().format_finite(v)),
        _ => out.push_str("null"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `started_at` as the cached seconds plus milliseconds reads exactly as humantime writes
    /// the whole time, across second boundaries and back in time.
    #[test]
    fn started_at_is_rfc3339_with_milliseconds() {
        let base = std::time::UNIX_EPOCH + Duration::from_secs(1_795_654_923);
        for ms in [
            0u64, 1, 9, 10, 99, 100, 456, 999, 1000, 1001, 86_399_999, 3, 61_000,
        ] {
            let t = base + Duration::from_millis(ms);
            let json = serde_json::to_string(&Rfc3339(t)).unwrap();
            assert_eq!(
                json,
                format!("\"{}\"", humantime::format_rfc3339_millis(t)),
                "{ms}"
            );
        }
        let json = serde_json::to_string(&Rfc3339(base)).unwrap();
        assert_eq!(json, "\"2026-11-26T01:02:03.000Z\"");
    }

    /// The hand-written JSON is byte for byte what serde_json writes from the derived
    /// `Serialize`, for lines with every optional field, strings that need escaping (quotes,
    /// backslashes, control characters, non-ASCII), floats of every shape, and the extremes.
    #[test]
    fn a_time_in_ms_to_the_micro_is_written_by_integers_as_a_float_would_be() {
        for (us, text) in [
            (0, "0"),
            (1, "0.001"),
            (12_340, "12.34"),
            (12_345, "12.345"),
            (5_000, "5"),
        ] {
            let mut out = String::new();
            json_ms(
                &mut out,
                &mut itoa::Buffer::new(),
                Duration::from_micros(us),
            );
            assert_eq!(out, text);
            assert_eq!(out.parse::<f64>().unwrap(), us as f64 / 1000.0);
        }
    }

    #[test]
    fn json_is_what_serde_writes() {
        let meta = serde_json::json!({"k": [1, "two\n", null], "z": {"a": 1.5}});
        let base = std::time::UNIX_EPOCH + Duration::from_secs(1_795_654_923);
        let strings = [
            "",
            "plain",
            "quote\"only",
            "back\\slash only",
            "tab\tnl\nnul\u{0}del\u{7f}",
            "ünïcödé ✓ \u{1F600}",
            "</script>",
        ];
        let floats = [
            0.0,
            1.0,
            37.160365,
            1e-7,
            1e21,
            123456789.125,
            f64::NAN,
            f64::INFINITY,
        ];
        let mut n = 0;
        for (i, text) in strings.iter().enumerate() {
            for (j, f) in floats.iter().enumerate() {
                let mut l = ResultLine::new(
                    u64::MAX - i as u64,
                    text,
                    "GET",
                    Cow::Borrowed(text),
                    base + Duration::from_millis(j as u64 * 7),
                    (j % 2 == 0).then_some(&meta),
                );
                l.ok = j % 2 == 1;
                l.status = (j % 3 != 0).then_some(200 + j as u16);
                l.attempts = j as u32;
                l.latency_ms = (j % 4 != 0).then_some(*f);
                l.elapsed_ms = *f;
                if j % 2 == 0 {
                    l.redirects = 2;
                    l.final_url = Some(format!("http://x/{text}"));
                    l.opened_breaker = 1;
                    l.paused_host = u32::MAX;
                    l.error = Some(ErrorOut::new(
                        ErrorKind::ALL[j % ErrorKind::ALL.len()],
                        text,
                        j % 4 == 0,
                    ));
                    l.body_bytes = Some(u64::MAX);
                    l.truncated = true;
                    l.headers = Some(BTreeMap::from([
                        ("content-type".to_string(), text.to_string()),
                        (format!("x-{i}"), "v".to_string()),
                    ]));
                    l.body = Some(text.to_string());
                    l.body_base64 = Some("AAEC".into());
                    l.body_file = Some(format!("dir/{text}"));
                    l.ttfb = Some(Duration::from_micros(12_340 + j as u64));
                    l.events = Some(3);
                    l.ttfe_ms = Some(*f);
                    l.cost = Some(u64::MAX);
                    l.extract = Some(serde_json::Map::from_iter([
                        ("a".to_string(), serde_json::Value::from(*text)),
                        ("b".to_string(), serde_json::Value::Null),
                    ]));
                }
                assert_eq!(
                    to_json(&l),
                    serde_json::to_string(&l).unwrap(),
                    "{text:?} {f}"
                );
                n += 1;
            }
        }
        assert_eq!(n, strings.len() * floats.len());
    }

    /// A clock before 1970 or past 9999 is written as the nearest time RFC 3339 can hold (it
    /// panicked in humantime).
    #[test]
    fn started_at_outside_rfc3339_is_clamped() {
        let text = |t| serde_json::to_string(&Rfc3339(t)).unwrap();
        let epoch = std::time::UNIX_EPOCH;
        assert_eq!(
            text(epoch - Duration::from_secs(1)),
            "\"1970-01-01T00:00:00.000Z\""
        );
        let far = epoch + Duration::from_secs(400_000_000_000);
        assert_eq!(text(far), "\"9999-12-31T23:59:59.999Z\"");
        let last = epoch + Duration::from_millis(253_402_300_799_123);
        assert_eq!(text(last), "\"9999-12-31T23:59:59.123Z\"");
    }

    /// CSV cells of text from outside that a spreadsheet would run as a formula start with
    /// `'`; others, and corral's own numbers, are as they are.
    #[test]
    fn csv_cells_that_look_like_formulas_are_written_as_text() {
        let now = std::time::UNIX_EPOCH;
        let mut l = ResultLine::new(
            7,
            "=HYPERLINK(\"x\")",
            "GET",
            Cow::Borrowed("http://h/"),
            now,
            None,
        );
        l.body = Some("@SUM(A1)".into());
        l.error = Some(ErrorOut::new(ErrorKind::HttpStatus, "-2+3", false));
        l.final_url = Some("+cmd".into());
        l.body_file = Some("\tx".into());
        l.latency_ms = Some(1.5);
        let row = to_csv(&l);
        let cells: Vec<String> = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(row.as_bytes())
            .records()
            .next()
            .unwrap()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        let at = |name: &str| cells[CSV_COLUMNS.iter().position(|c| *c == name).unwrap()].clone();
        assert_eq!(at("id"), "'=HYPERLINK(\"x\")");
        assert_eq!(at("body"), "'@SUM(A1)");
        assert_eq!(at("error_message"), "'-2+3");
        assert_eq!(at("final_url"), "'+cmd");
        assert_eq!(at("body_file"), "'\tx");
        assert_eq!(at("url"), "http://h/");
        assert_eq!(at("line"), "7");
        assert_eq!(at("latency_ms"), "1.5");
    }
}
