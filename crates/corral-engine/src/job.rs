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
    /// What its accepted response's body must hold (`"require": ["/pointer", ...]`), instead
    /// of its host's (`--require`, `[hosts] require`).
    pub require: Option<Vec<crate::settings::Requirement>>,
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
        (Some(h), Some(p)) => {
            // Not `format!`: this runs for every request.
            let mut port = itoa::Buffer::new();
            let port = port.format(p);
            let mut key = String::with_capacity(h.len() + 1 + port.len());
            key.push_str(h);
            key.push(':');
            key.push_str(port);
            key
        }
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
        parse_line(line, text, &Input::default())
    }

    /// A GET of `url`, numbered `line`.
    pub fn get(line: u64, url: &str) -> Self {
        parse_line(
            line,
            url,
            &Input {
                format: Format::Urls,
                ..Input::default()
            },
        )
    }
}

/// How input lines become jobs: their format, the headers every job gets, and the base that
/// relative URLs are joined to.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// JSONL, URLs, or CSV rows filled into a template.
    pub format: Format,
    /// `--header`s: every job gets them unless it sets the same name.
    pub headers: HeaderMap,
    /// `--base-url`: a job's relative `url` (`/v1/chat/completions`, as Batch-API files have
    /// them) is joined to it.
    pub base_url: Option<Url>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    id: Option<Value>,
    /// The id of an OpenAI Batch-API line.
    custom_id: Option<Value>,
    method: Option<String>,
    url: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    /// A string is sent as it is; an object or array as JSON (as Batch-API lines have it).
    body: Option<Value>,
    json: Option<Value>,
    timeout_ms: Option<u64>,
    cost: Option<u64>,
    meta: Option<Value>,
    require: Option<Vec<String>>,
}

/// Input format.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Format {
    /// One JSON job per line (OpenAI Batch-API lines too: `custom_id`, a relative `url`, a
    /// `body` object).
    #[default]
    Jsonl,
    /// One URL per line (GET); `#` starts a comment.
    Urls,
    /// CSV: the first line names the columns, each further line is one row filled into the
    /// template (`--csv --template`).
    Csv(Template),
}

/// A `--csv` input's job: a JSON job object whose strings hold `{column}` placeholders
/// (`{{` and `}}` for literal braces). A string that is exactly one placeholder in `cost` or
/// `timeout_ms` becomes a number.
///
/// In the job's `url` a value is percent-encoded for where it stands (everything but letters,
/// digits and `-._~`): in the path it stays one segment (a cell `../admin?x=1` cannot climb
/// out of it or add a query), in the query or fragment one value; a cell that is `.` or `..`
/// in the path is refused. The scheme and host come from the template alone: a placeholder
/// before the end of the URL's host is refused when the template is read (a cell must not
/// send the run's headers to another host).
///
/// ```
/// use corral_engine::job::Template;
///
/// let t = Template::parse(r#"{"url": "https://api.test/users/{user}", "json": {"q": "{query}"}}"#).unwrap();
/// let columns = vec!["user".to_string(), "query".to_string()];
/// let job = t.fill(&columns, &["42", "say \"hi\""]).unwrap();
/// assert_eq!(job, r#"{"json":{"q":"say \"hi\""},"url":"https://api.test/users/42"}"#);
/// let job = t.fill(&columns, &["../admin?delete=1", "x"]).unwrap();
/// assert!(job.contains(r#""url":"https://api.test/users/..%2Fadmin%3Fdelete%3D1""#));
/// assert!(t.fill(&["user".to_string()], &["42"]).is_err());
/// assert!(Template::parse(r#"{"url": "https://{host}/x"}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    value: Value,
}

impl Template {
    /// The template of `--template`: it must be a JSON object.
    pub fn parse(text: &str) -> Result<Self, crate::error::ConfigError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| crate::error::ConfigError::new("--template", e.to_string()))?;
        if !value.is_object() {
            return Err(crate::error::ConfigError::new(
                "--template",
                "must be a JSON job object, e.g. {\"url\": \"https://api.example.com/items/{id}\"}",
            ));
        }
        if let Some(url) = value.get("url").and_then(Value::as_str) {
            if let Some(name) = placeholder_before_path(url) {
                return Err(crate::error::ConfigError::new(
                    "--template",
                    format!(
                        "the url's {{{name}}} stands in its scheme or host ({url}); they come from the template alone: put values in the path or query (a file of whole URLs is read with --urls)"
                    ),
                ));
            }
        }
        Ok(Self { value })
    }

    /// The JSON job of one row: `row[i]` is the value of `columns[i]`.
    pub fn fill(&self, columns: &[String], row: &[&str]) -> Result<String, FillError> {
        fn walk(
            v: &Value,
            key: Option<&str>,
            cell: &dyn Fn(&str) -> Result<String, NoColumn>,
        ) -> Result<Value, NoColumn> {
            Ok(match v {
                Value::String(s) => {
                    let filled = fill_text(s, cell)?;
                    let whole =
                        s.starts_with('{') && s.ends_with('}') && s.matches('{').count() == 1;
                    match (key, whole, filled.parse::<u64>()) {
                        (Some("cost" | "timeout_ms"), true, Ok(n)) => Value::from(n),
                        _ => Value::String(filled),
                    }
                }
                Value::Array(a) => Value::Array(
                    a.iter()
                        .map(|x| walk(x, None, cell))
                        .collect::<Result<_, _>>()?,
                ),
                Value::Object(o) => Value::Object(
                    o.iter()
                        .map(|(k, x)| Ok((fill_text(k, cell)?, walk(x, Some(k), cell)?)))
                        .collect::<Result<_, NoColumn>>()?,
                ),
                other => other.clone(),
            })
        }
        let cell = |name: &str| match columns.iter().position(|c| c == name) {
            Some(i) => Ok(row.get(i).copied().unwrap_or_default().to_string()),
            None => Err(NoColumn {
                name: name.to_string(),
                columns: columns.join(", "),
            }),
        };
        let mut job = walk(&self.value, None, &cell)?;
        if let (Some(Value::String(url)), Some(obj)) = (self.value.get("url"), job.as_object_mut())
        {
            obj.insert("url".into(), Value::String(fill_url(url, &cell)?));
        }
        Ok(job.to_string())
    }
}

/// The name of the first placeholder of a URL template that stands before its path (in the
/// scheme or authority of `scheme://host/...` or `//host/...`; before the first `/`, `?` or `#`
/// of a relative reference, where a value could make a scheme), if any.
fn placeholder_before_path(url: &str) -> Option<String> {
    let authority_end = |from: usize| {
        from + url[from..]
            .find(['/', '?', '#'])
            .unwrap_or(url.len() - from)
    };
    let path_start = match url.find("://") {
        Some(i) => authority_end(i + 3),
        None if url.starts_with("//") => authority_end(2),
        None => url.find(['/', '?', '#']).unwrap_or(url.len()),
    };
    let mut rest = &url[..path_start];
    while let Some(i) = rest.find('{') {
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            rest = after;
            continue;
        }
        let name = url[path_start - rest.len() + i + 1..]
            .split('}')
            .next()
            .unwrap_or_default();
        return Some(name.to_string());
    }
    None
}

/// What a URL template's value is encoded for.
#[derive(Clone, Copy, PartialEq)]
enum UrlPart {
    Path,
    Query,
    Fragment,
}

/// Everything but letters, digits and `-._~` (RFC 3986's unreserved characters).
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A URL template filled: each value percent-encoded for the part of the URL it stands in.
fn fill_url(
    text: &str,
    cell: &dyn Fn(&str) -> Result<String, NoColumn>,
) -> Result<String, FillError> {
    let mut out = String::with_capacity(text.len());
    let mut part = UrlPart::Path;
    let mut rest = text;
    let literal = |out: &mut String, part: &mut UrlPart, piece: &str| {
        for c in piece.chars() {
            match c {
                '?' if *part == UrlPart::Path => *part = UrlPart::Query,
                '#' if *part != UrlPart::Fragment => *part = UrlPart::Fragment,
                _ => {}
            }
            out.push(c);
        }
    };
    while let Some(i) = rest.find(['{', '}']) {
        literal(&mut out, &mut part, &rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            literal(&mut out, &mut part, &tail[..1]);
            rest = &tail[2..];
        } else if let (true, Some(end)) = (tail.starts_with('{'), tail.find('}')) {
            let name = &tail[1..end];
            let value = cell(name)?;
            if part == UrlPart::Path && (value == "." || value == "..") {
                return Err(FillError::DotSegment(name.to_string()));
            }
            out.extend(percent_encoding::utf8_percent_encode(&value, COMPONENT));
            rest = &tail[end + 1..];
        } else {
            literal(&mut out, &mut part, &tail[..1]);
            rest = &tail[1..];
        }
    }
    literal(&mut out, &mut part, rest);
    Ok(out)
}

/// Why a CSV row cannot fill its template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    /// A placeholder names no column.
    #[error(transparent)]
    NoColumn(#[from] NoColumn),
    /// A value that is `.` or `..` where the URL's path has a placeholder: it would climb out
    /// of its segment.
    #[error("the value of {{{0}}} in the url's path is a dot segment (. or ..)")]
    DotSegment(String),
}

/// A template's `{name}` that names no column of the CSV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the template's {{{name}}} names no column (the columns: {columns})")]
pub struct NoColumn {
    name: String,
    columns: String,
}

/// `text` with each `{name}` replaced by `cell(name)`, `{{` and `}}` by single braces.
fn fill_text(
    text: &str,
    cell: &dyn Fn(&str) -> Result<String, NoColumn>,
) -> Result<String, NoColumn> {
    if !text.contains(['{', '}']) {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let (true, Some(end)) = (tail.starts_with('{'), tail.find('}')) {
            out.push_str(&cell(&tail[1..end])?);
            rest = &tail[end + 1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
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

/// The origin (`http[s]://authority`) of the last URL parsed on this thread, as written, and
/// that URL.
struct Origin {
    text: String,
    url: Url,
}

thread_local! {
    static LAST_ORIGIN: std::cell::RefCell<Option<Origin>> = const { std::cell::RefCell::new(None) };
}

/// `s` parsed as the previous URL's path-absolute reference (`/path?query#fragment`) when it
/// starts with the very same origin text, which a file of a million jobs to a few hosts
/// nearly always does: its scheme, host (IDNA, IPv4 forms) and port were parsed already, and
/// parsing them was half of a URL's cost (3,000 instructions, callgrind). The WHATWG parser
/// gives the same URL both ways for such a reference (a test holds the two to each other);
/// anything else — other schemes' spelling, credentials, backslashes, a reference that is
/// not `/` followed by a non-slash — is parsed whole, and becomes the origin remembered.
fn same_origin(s: &str) -> Option<Url> {
    let b = s.as_bytes();
    let scheme_len = if b.starts_with(b"http://") {
        7
    } else if b.starts_with(b"https://") {
        8
    } else {
        return None;
    };
    // Bytes, not a char searcher: this runs for every job.
    let end = scheme_len
        + b[scheme_len..]
            .iter()
            .position(|c| matches!(c, b'/' | b'?' | b'#' | b'\\' | b'@'))?;
    let (authority, rest) = (&s[scheme_len..end], &s[end..]);
    let r = rest.as_bytes();
    if authority.is_empty()
        || r.first() != Some(&b'/')
        || r.get(1) == Some(&b'/')
        || r.contains(&b'\\')
    {
        return None;
    }
    let origin = &s[..scheme_len + authority.len()];
    LAST_ORIGIN.with_borrow_mut(|last| {
        if let Some(o) = last.as_ref().filter(|o| o.text == origin) {
            return o.url.join(rest).ok();
        }
        let url = Url::parse(s).ok()?;
        *last = Some(Origin {
            text: origin.to_string(),
            url: url.clone(),
        });
        Some(url)
    })
}

fn parse_url(s: &str) -> Result<Url, BadUrl> {
    // The URL parser drops tabs and line breaks silently: the request would go to a URL that
    // is not the one in the file.
    // Bytes, not chars: the check runs on every job (an ASCII control is all that can hide in
    // a URL; the parser percent-encodes anything else).
    let trimmed = s.trim();
    if let Some(i) = trimmed.bytes().position(|b| b < 0x20 || b == 0x7f) {
        return Err(BadUrl::Control(s.to_string(), i + 1));
    }
    let url = match same_origin(trimmed) {
        Some(url) => url,
        None => Url::parse(trimmed).map_err(|e| BadUrl::Parse(s.to_string(), e))?,
    };
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
pub fn parse_line(line_no: u64, text: &str, input: &Input) -> Parsed {
    let extra = &input.headers;
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
    if input.format == Format::Urls {
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
                require: None,
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
    let (key, given) = match (&raw.id, &raw.custom_id) {
        (Some(_), Some(_)) => {
            return invalid(
                None,
                raw.url,
                raw.method,
                raw.meta,
                "give either \"id\" or \"custom_id\", not both".into(),
            )
        }
        (None, Some(c)) => ("custom_id", Some(c)),
        (id, None) => ("id", id.as_ref()),
    };
    let id = match given {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return invalid(
                None,
                raw.url,
                raw.method,
                raw.meta,
                format!("\"{key}\" must be a string or number, not {other}"),
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
    // A relative URL (a Batch-API line's `/v1/chat/completions`) is joined to --base-url.
    let relative = url_text.trim_start().starts_with('/');
    let url = match (relative, &input.base_url) {
        (true, Some(base)) => match base.join(url_text.trim()) {
            Ok(u) => match parse_url(u.as_str()) {
                Ok(u) => u,
                Err(e) => return fail(e.to_string()),
            },
            Err(e) => return fail(format!("cannot join {url_text:?} to --base-url: {e}")),
        },
        (true, None) => {
            return fail(format!(
                "relative url {url_text:?}: give --base-url (e.g. https://api.openai.com)"
            ))
        }
        (false, _) => match parse_url(url_text) {
            Ok(u) => u,
            Err(e) => return fail(e.to_string()),
        },
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
    let (text_body, body_json) = match raw.body {
        None | Some(Value::Null) => (None, None),
        Some(Value::String(b)) => (Some(b), None),
        Some(j @ (Value::Object(_) | Value::Array(_))) => (None, Some(j)),
        // The value is not quoted back: it may be a secret.
        Some(other) => {
            return fail(format!(
                "\"body\" must be a string (sent as it is) or a JSON object or array (sent as JSON), not a {}",
                if other.is_number() { "number" } else { "boolean" }
            ))
        }
    };
    let json = match (body_json, raw.json) {
        (Some(_), Some(_)) => {
            return fail("give either a \"body\" object or \"json\", not both".into())
        }
        (Some(j), None) | (None, Some(j)) => Some(j),
        (None, None) => None,
    };
    let body = match (text_body, json) {
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
    let require = match raw
        .require
        .map(|r| {
            r.iter()
                .map(|p| p.parse::<crate::settings::Requirement>())
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
    {
        Ok(r) => r,
        // Named as the job line writes it, not as the flag.
        Err(_) => {
            return fail(
                "\"require\" holds a JSON pointer (starting with '/') or POINTER=VALUE each".into(),
            )
        }
    };
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
        require,
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
        let (take, end) = match memchr::memchr(b'\n', avail) {
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
pub fn strip_comment(text: &str) -> &str {
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
    input: Input,
    max_line: usize,
    skip: F,
) -> impl Stream<Item = std::io::Result<Parsed>> + Send
where
    R: AsyncBufRead + Unpin + Send + 'static,
    F: Fn(u64) -> bool + Send + 'static,
{
    // A CSV input's columns, from its first line.
    let columns: Option<Vec<String>> = None;
    let state = (reader, 0u64, Vec::new(), input, skip, columns);
    futures::stream::unfold(
        state,
        move |(mut reader, mut line_no, mut buf, input, skip, mut columns)| async move {
            loop {
                buf.clear();
                let too_long = match read_line_bounded(&mut reader, &mut buf, max_line).await {
                    Err(e) => return Some((Err(e), (reader, line_no, buf, input, skip, columns))),
                    Ok((0, _)) => return None,
                    Ok((_, too_long)) => too_long,
                };
                line_no += 1;
                let header = matches!(input.format, Format::Csv(_)) && columns.is_none();
                if skip(line_no) && !header {
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
                            if text.is_empty()
                                || (input.format == Format::Urls && text.starts_with('#'))
                            {
                                continue;
                            }
                            match &input.format {
                                Format::Urls => parse_line(line_no, strip_comment(text), &input),
                                Format::Jsonl => parse_line(line_no, text, &input),
                                Format::Csv(template) => match &columns {
                                    None => {
                                        let names = csv_row(text);
                                        columns = Some(
                                            names.iter().map(|c| c.trim().to_string()).collect(),
                                        );
                                        continue;
                                    }
                                    Some(cols) => csv_job(line_no, text, cols, template, &input),
                                },
                            }
                        }
                    }
                };
                return Some((Ok(parsed), (reader, line_no, buf, input, skip, columns)));
            }
        },
    )
}

/// The fields of one CSV line (a record never spans lines here: a line is a job's identity).
fn csv_row(text: &str) -> Vec<String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    match r.records().next() {
        Some(Ok(rec)) => rec.iter().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// The job of a CSV row: its fields filled into the template, then read as a JSONL job.
fn csv_job(
    line_no: u64,
    text: &str,
    columns: &[String],
    template: &Template,
    input: &Input,
) -> Parsed {
    let row = csv_row(text);
    if row.len() != columns.len() {
        return unreadable(
            line_no,
            format!(
                "{} fields where the header has {} columns",
                row.len(),
                columns.len()
            ),
        );
    }
    let fields: Vec<&str> = row.iter().map(String::as_str).collect();
    match template.fill(columns, &fields) {
        Ok(json) => parse_line(line_no, &json, input),
        Err(e) => unreadable(line_no, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    /// A CSV value in a templated URL is encoded for where it stands: it cannot climb out of
    /// its path segment, add a query, or change the host; a dot segment is refused; a
    /// placeholder in the scheme or host is refused when the template is read.
    #[test]
    fn template_values_in_urls_are_encoded_for_where_they_stand() {
        let cols = vec!["v".to_string()];
        let url_of = |template: &str, v: &str| -> Result<String, FillError> {
            let t = Template::parse(&format!(
                r#"{{"url": "{template}", "json": {{"u": "{{v}}"}}}}"#
            ))
            .unwrap();
            let job: Value = serde_json::from_str(&t.fill(&cols, &[v])?).unwrap();
            // Values elsewhere than the url are as they are.
            assert_eq!(job["json"]["u"], v);
            Ok(job["url"].as_str().unwrap().to_string())
        };
        let url = |t: &str, v: &str| url_of(t, v).unwrap();
        assert_eq!(
            url("https://h/u/{v}", "../admin?delete=1"),
            "https://h/u/..%2Fadmin%3Fdelete%3D1"
        );
        assert_eq!(
            url("https://h/u?q={v}&x=1", "a&b=c #d"),
            "https://h/u?q=a%26b%3Dc%20%23d&x=1"
        );
        assert_eq!(url("https://h/u#{v}", "x/y"), "https://h/u#x%2Fy");
        assert_eq!(url("/rel/{v}", "é"), "/rel/%C3%A9");
        assert_eq!(url("rel/{v}", "@evil.com"), "rel/%40evil.com");
        assert_eq!(
            url("https://h/{{x}}/{v}", "a-b_c.d~e"),
            "https://h/{x}/a-b_c.d~e"
        );
        for dots in [".", ".."] {
            assert_eq!(
                url_of("https://h/u/{v}/x", dots),
                Err(FillError::DotSegment("v".into()))
            );
        }
        // In the query a dot is a value like any other.
        assert_eq!(url("https://h/u?q={v}", ".."), "https://h/u?q=..");
        // Filled, the URL goes to the template's host only.
        let u = Url::parse(&url("https://h.test/u/{v}", "//evil.test/x")).unwrap();
        assert_eq!(u.host_str(), Some("h.test"));
        for template in [
            "https://{v}/x",
            "https://h{v}/x",
            "{v}://h/x",
            "//{v}/x",
            "{v}",
            "{v}/x",
            "http{v}",
        ] {
            let t = format!(r#"{{"url": "{template}"}}"#);
            assert!(Template::parse(&t).is_err(), "{template}");
        }
        assert!(Template::parse(r#"{"url": "https://h:8{{0}}/x"}"#).is_ok());
    }

    /// A URL parsed against the previous one's origin is the URL parsed whole, for paths,
    /// queries and fragments of every shape (dot segments, percent-encoding, spaces,
    /// non-ASCII, `@`), hosts of every form (IDNA, upper case, IPv4 written oddly, IPv6,
    /// default ports), and the origin changing from one URL to the next.
    #[test]
    fn a_url_after_one_of_its_origin_is_the_url_parsed_whole() {
        let origins = [
            "http://127.0.0.1:8080",
            "https://API.Example.com",
            "http://0x7f.1:80",
            "https://[::1]:443",
            "http://bücher.de",
            "https://h:8443",
            "http://h",
        ];
        let rests = [
            "/x/y/z/?a=1&b=2",
            "/",
            "/x?i=1",
            "/x?i=2#frag",
            "/a/./b/../../c",
            "/%2e%2E/x",
            "/a b?q=ü&x=%zz",
            "/p@q?mail=a@b",
            "/..",
            "/x?",
            "/x#",
            "/?q",
        ];
        let mut hits = 0;
        for round in 0..2 {
            for origin in origins {
                for rest in rests {
                    let s = format!("{origin}{rest}");
                    let whole = Url::parse(&s).unwrap();
                    let before = LAST_ORIGIN.with_borrow(|o| o.as_ref().map(|o| o.text.clone()));
                    let got = same_origin(&s).expect(&s);
                    if before.as_deref() == Some(origin) {
                        hits += 1;
                    }
                    assert_eq!(got.as_str(), whole.as_str(), "{s} (round {round})");
                    assert_eq!(got, whole, "{s}");
                    assert_eq!(got.port_or_known_default(), whole.port_or_known_default());
                    assert_eq!(parse_url(&s).unwrap(), whole, "{s}");
                }
            }
        }
        // Every URL but each origin's first in a round came from the remembered origin.
        assert_eq!(hits, 2 * origins.len() * (rests.len() - 1));
        // Not from the origin: whole parses (or errors) only.
        for s in [
            "http://u:p@h/x",
            "http://h//evil/x",
            "http://h/\\evil",
            "http://h?q",
            "http://h",
            "HTTP://h/x",
            "ftp://h/x",
        ] {
            assert!(same_origin(s).is_none(), "{s}");
        }
    }

    use super::*;

    fn job(line: &str) -> Result<Job, String> {
        match parse_line(7, line, &Input::default()) {
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
                r#"{"url":"http://x","body":12345,"id":"s3cret"}"#,
                "\"body\" must be a string",
            ),
            (r#"{"url":"/v1/x","custom_id":"s3cret"}"#, "give --base-url"),
            (
                r#"{"url":"http://x","custom_id":"a","id":"b"}"#,
                "either \"id\" or \"custom_id\"",
            ),
        ] {
            let e = job(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
            assert!(e.starts_with("line 7: "), "{e}");
            assert!(!e.contains("12345") && !e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn a_batch_api_line_is_a_job_without_a_flag() {
        let input = Input {
            base_url: Some(Url::parse("https://api.example.com/").unwrap()),
            ..Input::default()
        };
        let line = r#"{"custom_id": "request-1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}}"#;
        let Parsed::Job(j) = parse_line(3, line, &input) else {
            panic!("not a job")
        };
        assert_eq!(j.id, "request-1");
        assert_eq!(j.method, Method::POST);
        assert_eq!(
            j.url.as_str(),
            "https://api.example.com/v1/chat/completions"
        );
        assert_eq!(j.headers["content-type"], "application/json");
        let body: Value = serde_json::from_slice(j.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["messages"][0]["content"], "Hello");
    }
}
