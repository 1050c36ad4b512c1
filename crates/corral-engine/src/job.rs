//! Reading jobs: JSONL (one request object per line) or plain URLs, streamed line by line.
//!
//! Every non-blank input line becomes either a [`Job`] or an [`Invalid`] naming the line number
//! and the problem; invalid lines get an error result and the run goes on.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use url::Url;

/// One request to make.
#[derive(Debug, Clone)]
pub struct Job {
    /// 1-based line number in the input: the job's identity for resume.
    pub line: u64,
    /// The job's `id`, or its line number when it has none.
    pub id: String,
    /// The method (`GET` unless the line says otherwise).
    pub method: Method,
    /// Where to send it.
    pub url: Url,
    /// Its headers, with `--header`'s where the line sets none of that name.
    pub headers: HeaderMap,
    /// Its body (`body`, or `json` serialised), if any.
    pub body: Option<Bytes>,
    /// Its own attempt timeout (`timeout_ms`), over the run's.
    pub timeout: Option<Duration>,
    /// What it costs against the cost rates (`cost`, default 1): tokens of an LLM request,
    /// credits of a SaaS call.
    pub cost: u64,
    /// Its `meta`, echoed into its result.
    pub meta: Option<Value>,
}

impl Job {
    /// The rate/concurrency/breaker key: `host:port`.
    pub fn host_key(&self) -> String {
        host_key(&self.url)
    }
}

/// The `host:port` a URL's requests go to: the key of per-host limits.
pub fn host_key(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

/// A line that could not be turned into a job.
#[derive(Debug, Clone)]
pub struct Invalid {
    /// 1-based line number in the input.
    pub line: u64,
    /// The line's `id`, or its line number.
    pub id: String,
    /// Its URL, if it could be read (for the result).
    pub url: Option<String>,
    /// Its method, if it could be read.
    pub method: Option<String>,
    /// Its `meta`, echoed into the result.
    pub meta: Option<Value>,
    /// Why it is not a job (redacted when written).
    pub message: String,
}

/// An input line, parsed: a job to run, or why it is not one.
#[derive(Debug)]
pub enum Parsed {
    /// A job to run.
    Job(Box<Job>),
    /// A line that is not a valid job: it gets an `invalid_input` result.
    Invalid(Box<Invalid>),
}

impl Parsed {
    /// A JSONL job line (`{"url": ..., "method"?: ..., ...}`), numbered `line` (its identity).
    pub fn jsonl(line: u64, text: &str) -> Self {
        parse_line(line, text, Format::Jsonl, &HeaderMap::new())
    }

    /// A GET of `url`, numbered `line`.
    pub fn get(line: u64, url: &str) -> Self {
        parse_line(line, url, Format::Urls, &HeaderMap::new())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    id: Option<Value>,
    method: Option<String>,
    url: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    body: Option<String>,
    json: Option<Value>,
    timeout_ms: Option<u64>,
    cost: Option<u64>,
    meta: Option<Value>,
}

/// Input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON job per line.
    Jsonl,
    /// One URL per line (GET); `#` starts a comment.
    Urls,
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Why an input URL cannot be requested; its text is quoted (the result line's message is
/// redacted on the way out).
#[derive(Debug, thiserror::Error)]
enum BadUrl {
    #[error("invalid url {0:?}: a control character (tab, line break ...) at byte {1}; percent-encode it")]
    Control(String, usize),
    #[error("invalid url {0:?}: {1}")]
    Parse(String, url::ParseError),
    #[error("invalid url {0:?}: scheme {1:?} is not http or https")]
    Scheme(String, String),
    #[error("invalid url {0:?}: no host")]
    NoHost(String),
}

fn parse_url(s: &str) -> Result<Url, BadUrl> {
    // The URL parser drops tabs and line breaks silently: the request would go to a URL that
    // is not the one in the file.
    // Bytes, not chars: the check runs on every job (an ASCII control is all that can hide in
    // a URL; the parser percent-encodes anything else).
    if let Some(i) = s.trim().bytes().position(|b| b < 0x20 || b == 0x7f) {
        return Err(BadUrl::Control(s.to_string(), i + 1));
    }
    let url = Url::parse(s.trim()).map_err(|e| BadUrl::Parse(s.to_string(), e))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(BadUrl::Scheme(s.to_string(), other.to_string())),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(BadUrl::NoHost(s.to_string()));
    }
    Ok(url)
}

/// A serde error message without the input values it quotes (`invalid type: string "s3cret",
/// expected ...`): a value may be a secret, and the field and the expectation say enough.
fn without_values(message: &str) -> String {
    static QUOTED: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r#"(invalid (?:type|value|length): [a-z ]+?) ?(?:`[^`]*`|"(?:[^"\\]|\\.)*")"#)
            .ok()
    });
    match QUOTED.as_ref() {
        Some(re) => re.replace_all(message, "$1").into_owned(),
        None => message.to_string(),
    }
}

/// Parses one input line (already known non-blank).
pub fn parse_line(line_no: u64, text: &str, format: Format, extra: &HeaderMap) -> Parsed {
    let invalid =
        |id: Option<String>, url: Option<String>, method: Option<String>, meta, message: String| {
            Parsed::Invalid(Box::new(Invalid {
                line: line_no,
                id: id.unwrap_or_else(|| line_no.to_string()),
                url: url.map(|u| crate::redact::url_text(&u)),
                method,
                meta,
                message: format!("line {line_no}: {message}"),
            }))
        };
    if format == Format::Urls {
        return match parse_url(text) {
            Ok(url) => Parsed::Job(Box::new(Job {
                line: line_no,
                id: line_no.to_string(),
                method: Method::GET,
                url,
                headers: extra.clone(),
                body: None,
                timeout: None,
                cost: 1,
                meta: None,
            })),
            Err(e) => invalid(
                None,
                Some(text.trim().to_string()),
                None,
                None,
                e.to_string(),
            ),
        };
    }
    let raw: RawJob = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            return invalid(
                None,
                None,
                None,
                None,
                format!("not a valid job object: {}", without_values(&e.to_string())),
            )
        }
    };
    let id = match &raw.id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return invalid(
                None,
                raw.url,
                raw.method,
                raw.meta,
                format!("\"id\" must be a string or number, not {other}"),
            );
        }
    };
    let method_text = raw.method.clone();
    let fail = |message: String| {
        invalid(
            id.clone(),
            raw.url.clone(),
            method_text.clone(),
            raw.meta.clone(),
            message,
        )
    };
    let Some(url_text) = raw.url.as_deref() else {
        return fail("missing \"url\"".into());
    };
    let url = match parse_url(url_text) {
        Ok(u) => u,
        Err(e) => return fail(e.to_string()),
    };
    let method = match raw.method.as_deref().map(str::to_ascii_uppercase) {
        None => Method::GET,
        Some(m) if METHODS.contains(&m.as_str()) => {
            Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET)
        }
        Some(m) => {
            return fail(format!(
                "unknown method {m:?} (expected one of {})",
                METHODS.join(", ")
            ))
        }
    };
    let mut headers = extra.clone();
    for (name, value) in raw.headers.iter().flatten() {
        let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
            return fail(format!("invalid header name {name:?}"));
        };
        let Ok(v) = HeaderValue::from_str(value) else {
            return fail(format!("invalid value for header {name:?}"));
        };
        headers.insert(n, v);
    }
    let body = match (raw.body, raw.json) {
        (Some(_), Some(_)) => return fail("give either \"body\" or \"json\", not both".into()),
        (Some(b), None) => Some(Bytes::from(b)),
        (None, Some(j)) => {
            headers
                .entry(http::header::CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            Some(Bytes::from(j.to_string()))
        }
        (None, None) => None,
    };
    // corral frames the body: a length or coding of the job's own would be sent as-is by one
    // client and replaced by the other. One that agrees with the body is harmless.
    let body_len = body.as_ref().map_or(0, |b| b.len() as u64);
    if let Some(v) = headers.get(http::header::CONTENT_LENGTH) {
        let stated = v
            .to_str()
            .ok()
            .filter(|t| t.bytes().all(|b| b.is_ascii_digit()));
        if stated.and_then(|t| t.parse::<u64>().ok()) != Some(body_len) {
            return fail(format!(
                "header Content-Length does not match the body ({body_len} bytes); leave it out, corral sets it"
            ));
        }
    }
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return fail("header Transfer-Encoding is not allowed; corral frames the body".into());
    }
    if raw.timeout_ms == Some(0) {
        return fail("\"timeout_ms\" must be greater than 0".into());
    }
    Parsed::Job(Box::new(Job {
        line: line_no,
        id: id.unwrap_or_else(|| line_no.to_string()),
        method,
        url,
        headers,
        body,
        timeout: raw.timeout_ms.map(Duration::from_millis),
        cost: raw.cost.unwrap_or(1),
        meta: raw.meta,
    }))
}

/// Reads one line into `buf`, keeping at most `max` bytes of it (and its newline): a longer
/// line is consumed to its end but not kept, so memory stays bounded whatever the input. Returns
/// the bytes consumed (0 at the end of the input) and whether the line was too long.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let (mut total, mut too_long) = (0, false);
    loop {
        let avail = reader.fill_buf().await?;
        if avail.is_empty() {
            return Ok((total, too_long));
        }
        let (take, end) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if !too_long {
            if buf.len() + take > max.saturating_add(1) {
                too_long = true;
                buf.clear();
                buf.shrink_to(64 * 1024);
            } else {
                buf.extend_from_slice(&avail[..take]);
            }
        }
        reader.consume(take);
        total += take;
        if end {
            return Ok((total, too_long));
        }
    }
}

/// A line refused before it could be parsed (too long, not UTF-8).
fn unreadable(line: u64, message: String) -> Parsed {
    Parsed::Invalid(Box::new(Invalid {
        line,
        id: line.to_string(),
        url: None,
        method: None,
        meta: None,
        message: format!("line {line}: {message}"),
    }))
}

/// The URL of a `--urls` line: what precedes a ` #` comment.
fn strip_comment(text: &str) -> &str {
    match text.find(" #").or_else(|| text.find("\t#")) {
        Some(i) => text[..i].trim_end(),
        None => text,
    }
}

/// Streams parsed jobs from a reader, skipping blank lines (and `#` comments in URL mode) and
/// the lines `skip` says are done. A line longer than `max_line` bytes, or not UTF-8, becomes an
/// invalid job naming its line; a UTF-8 byte order mark at the start is skipped. Read errors
/// end the stream with an `Err`.
pub fn read_jobs<R, F>(
    reader: R,
    format: Format,
    extra: HeaderMap,
    max_line: usize,
    skip: F,
) -> impl Stream<Item = std::io::Result<Parsed>> + Send
where
    R: AsyncBufRead + Unpin + Send + 'static,
    F: Fn(u64) -> bool + Send + 'static,
{
    let state = (reader, 0u64, Vec::new(), extra, skip);
    futures::stream::unfold(
        state,
        move |(mut reader, mut line_no, mut buf, extra, skip)| async move {
            loop {
                buf.clear();
                let too_long = match read_line_bounded(&mut reader, &mut buf, max_line).await {
                    Err(e) => return Some((Err(e), (reader, line_no, buf, extra, skip))),
                    Ok((0, _)) => return None,
                    Ok((_, too_long)) => too_long,
                };
                line_no += 1;
                if skip(line_no) {
                    continue;
                }
                let parsed = if too_long {
                    unreadable(
                        line_no,
                        format!("longer than --max-line ({max_line} bytes); not read"),
                    )
                } else {
                    let bytes = match (line_no, buf.strip_prefix(b"\xEF\xBB\xBF")) {
                        (1, Some(rest)) => rest,
                        _ => &buf[..],
                    };
                    match std::str::from_utf8(bytes) {
                        Err(e) => unreadable(
                            line_no,
                            format!("not valid UTF-8 (at byte {})", e.valid_up_to() + 1),
                        ),
                        Ok(text) => {
                            let text = text.trim();
                            if text.is_empty() || (format == Format::Urls && text.starts_with('#'))
                            {
                                continue;
                            }
                            let text = match format {
                                Format::Urls => strip_comment(text),
                                Format::Jsonl => text,
                            };
                            parse_line(line_no, text, format, &extra)
                        }
                    }
                };
                return Some((Ok(parsed), (reader, line_no, buf, extra, skip)));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(line: &str) -> Result<Job, String> {
        match parse_line(7, line, Format::Jsonl, &HeaderMap::new()) {
            Parsed::Job(j) => Ok(*j),
            Parsed::Invalid(i) => Err(i.message),
        }
    }

    #[test]
    fn parses_full_jobs_and_defaults() {
        let j = job(r#"{"id":9,"method":"post","url":"http://h:81/x","headers":{"X-A":"1"},"json":{"a":1},"timeout_ms":50,"meta":{"k":"v"}}"#).unwrap();
        assert_eq!((j.id.as_str(), j.method.as_str(), j.line), ("9", "POST", 7));
        assert_eq!(j.host_key(), "h:81");
        assert_eq!(j.headers["content-type"], "application/json");
        assert_eq!(j.body.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(j.timeout, Some(Duration::from_millis(50)));
        let j = job(r#"{"url":"https://example.com"}"#).unwrap();
        assert_eq!((j.id.as_str(), j.method.as_str()), ("7", "GET"));
        assert_eq!(j.host_key(), "example.com:443");
    }

    #[test]
    fn bad_lines_name_the_line_and_the_problem() {
        for (line, want) in [
            ("{not json", "line 7: not a valid job object"),
            (
                r#"{"url":"ftp://x"}"#,
                "scheme \"ftp\" is not http or https",
            ),
            (r#"{"url":"http://"}"#, "invalid url"),
            (
                r#"{"method":"FETCH","url":"http://x"}"#,
                "unknown method \"FETCH\"",
            ),
            (
                r#"{"url":"http://x","headers":{"bad name":"v"}}"#,
                "invalid header name",
            ),
            (
                r#"{"url":"http://x","headers":{"a":"line\nbreak"}}"#,
                "invalid value for header",
            ),
            (r#"{"url":"http://x","body":"a","json":1}"#, "not both"),
            (
                r#"{"url":"http://x","hedaers":{}}"#,
                "unknown field `hedaers`",
            ),
            (r#"{"id":"a"}"#, "missing \"url\""),
            (r#"{"url":"http://x","timeout_ms":0}"#, "greater than 0"),
            (
                r#"{"url":"http://x","body":"abc","headers":{"Content-Length":"5"}}"#,
                "Content-Length does not match the body (3 bytes)",
            ),
            (
                r#"{"url":"http://x","body":"abc","headers":{"Content-Length":"+3"}}"#,
                "Content-Length does not match",
            ),
            (
                r#"{"url":"http://x","headers":{"Transfer-Encoding":"chunked"}}"#,
                "Transfer-Encoding is not allowed",
            ),
            (r#"{"url":"http://x/a\tb"}"#, "a control character"),
            (r#"{"url":"http://x/a\r\nb"}"#, "a control character"),
            (
                r#"{"url":"http://x","headers":{"X-Api-Key":12345}}"#,
                "invalid type: integer, expected a string",
            ),
            (
                r#"{"url":"http://x","body":{"k":1},"id":"s3cret"}"#,
                "invalid type: map, expected a string",
            ),
        ] {
            let e = job(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
            assert!(e.starts_with("line 7: "), "{e}");
            assert!(!e.contains("12345") && !e.contains("s3cret"), "{e}");
        }
    }
}
