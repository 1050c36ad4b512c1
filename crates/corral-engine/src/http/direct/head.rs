//! Reading a response head: status, headers when needed, and how the body is framed
//! (RFC 9112 §6).

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Buf, Bytes};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};

use super::conn::Conn;

/// The largest response head (status line and headers) accepted.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// The most response headers accepted.
pub(super) const MAX_HEADERS: usize = 128;

/// A response head as read: status, the headers if they were asked for, and the body to read
/// with [`super::Lease::next_chunk`].
#[derive(Debug)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Empty unless asked for (see [`super::Direct::send`]).
    pub headers: HeaderMap,
    /// `Content-Type: text/event-stream`: the body is a stream of server-sent events.
    pub event_stream: bool,
}

/// How the rest of the body is framed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Framing {
    /// This many bytes left.
    Length(u64),
    /// Chunked: this many bytes left of the current chunk (0: a chunk-size line is next).
    Chunked(u64),
    /// Until the server closes the connection.
    Close,
    /// Read to its end.
    Done,
}

/// Why no response head was read.
pub(super) enum ReadError {
    /// The connection ended or failed before one byte of response.
    Nothing(String),
    /// A failure after that, or a response that is not valid HTTP/1.
    Bad(String),
    /// The server refused our client certificate: with TLS 1.3 its alert comes after the
    /// handshake, where the response should be (kind `tls`, not `connection`).
    Tls(String),
}

/// Reads the response head (skipping 1xx interim responses); returns it with the body's
/// framing and whether the connection may be reused after the body.
pub(super) async fn read_head(
    conn: &mut Conn,
    method: &Method,
    want_headers: bool,
) -> Result<(Head, Framing, bool), ReadError> {
    let mut answered = false;
    loop {
        // Uninitialised slots: writing 128 empty headers (4 KiB) first was 2,300 instructions
        // a response, more than parsing it.
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, &conn.read, &mut slots)
            .map_err(|e| ReadError::Bad(format!("invalid HTTP response: {e}")))?;
        let len = match parsed {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => {
                if conn.read.len() > MAX_HEAD {
                    return Err(ReadError::Bad(format!(
                        "the response head is larger than {} KiB",
                        MAX_HEAD / 1024
                    )));
                }
                match conn.fill().await {
                    Ok(0) if !answered => {
                        return Err(ReadError::Nothing(
                            "the connection closed before the response".into(),
                        ))
                    }
                    Ok(0) => {
                        return Err(ReadError::Bad(
                            "the connection closed inside the response head".into(),
                        ))
                    }
                    Ok(_) => {
                        answered = true;
                        continue;
                    }
                    Err(e) if crate::http::error::refuses_certificate(&e) => {
                        return Err(ReadError::Tls(format!(
                            "the server refused the client certificate (--cert): {e}"
                        )))
                    }
                    Err(e) if !answered => {
                        return Err(ReadError::Nothing(format!(
                            "error reading the response: {e}"
                        )))
                    }
                    Err(e) => {
                        return Err(ReadError::Bad(format!("error reading the response: {e}")))
                    }
                }
            }
        };
        let status = resp.code.unwrap_or_default();
        let http11 = resp.version == Some(1);
        if (100..200).contains(&status) && status != 101 {
            // An interim response (100 Continue, 103 Early Hints): the real one follows.
            conn.read.advance(len);
            continue;
        }
        let mut keep_alive = http11;
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut coded = false;
        let mut event_stream = false;
        for h in resp.headers.iter() {
            // By length first: most headers are none of the four.
            let name = h.name.as_bytes();
            if !matches!(name.len(), 10 | 12 | 14 | 17) {
                continue;
            }
            // `n` is lower-case letters and `-`: OR-ing 0x20 folds a name's case, and can only
            // also turn a CR into `-`, which a header name (a token) never holds.
            let is =
                |n: &[u8]| name.len() == n.len() && name.iter().zip(n).all(|(a, b)| a | 0x20 == *b);
            if is(b"content-length") {
                // Digits only (RFC 9110 §8.6): `+5` or `0x5` is not a length.
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| {
                        ReadError::Bad("invalid Content-Length in the response".into())
                    })?;
                if length.is_some_and(|l| l != v) {
                    return Err(ReadError::Bad(
                        "the response has conflicting Content-Length headers".into(),
                    ));
                }
                length = Some(v);
            } else if is(b"transfer-encoding") {
                coded = true;
                // Chunked only when it is the last coding applied.
                chunked = h
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.value.len() >= 17 && is(b"content-type") {
                // Shorter values (`text/html`, `application/json`) cannot be a stream.
                event_stream = is_event_stream(h.value);
            } else if is(b"connection") {
                if has_token(h.value, b"close") {
                    keep_alive = false;
                } else if !keep_alive && has_token(h.value, b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
        // Where each header sits in the head, to share its bytes in the map below.
        // Redirects need their `Location` (the engine follows them).
        let spans = (want_headers || !(200..300).contains(&status)).then(|| {
            let base = conn.read.as_ptr() as usize;
            resp.headers
                .iter()
                .map(|h| {
                    let name = h.name.as_ptr() as usize - base;
                    let value = h.value.as_ptr() as usize - base;
                    (name..name + h.name.len(), value..value + h.value.len())
                })
                .collect::<Vec<_>>()
        });
        let head = conn.read.split_to(len).freeze();
        let headers = match spans {
            Some(spans) => header_map(&head, spans)?,
            None => HeaderMap::new(),
        };
        let framing = if *method == Method::HEAD || status == 204 || status == 304 || status == 101
        {
            Framing::Done
        } else if coded {
            if length.is_some() {
                // Both framings at once: read as chunked, but do not trust the connection.
                keep_alive = false;
            }
            if chunked {
                Framing::Chunked(0)
            } else {
                Framing::Close
            }
        } else {
            match length {
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        };
        if matches!(framing, Framing::Close) || status == 101 {
            keep_alive = false;
        }
        return Ok((
            Head {
                status,
                headers,
                event_stream,
            },
            framing,
            keep_alive,
        ));
    }
}

/// Builds the header map of a response head from where each name and value sits in it; the
/// values share the head's bytes rather than copying them.
fn header_map(
    head: &Bytes,
    spans: Vec<(Range<usize>, Range<usize>)>,
) -> Result<HeaderMap, ReadError> {
    let mut map = HeaderMap::with_capacity(spans.len());
    for (name, value) in spans {
        let name = HeaderName::from_bytes(&head[name])
            .map_err(|_| ReadError::Bad("invalid response header name".into()))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value))
            .map_err(|_| ReadError::Bad(format!("invalid value of response header {name}")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// A `Content-Type` value of `text/event-stream` (parameters aside, case folded; a head's
/// values come without leading blanks).
pub fn is_event_stream(value: &[u8]) -> bool {
    const MEDIA: &[u8] = b"text/event-stream";
    let value = value.trim_ascii_start();
    value.len() >= MEDIA.len()
        && value[..MEDIA.len()].eq_ignore_ascii_case(MEDIA)
        && value
            .get(MEDIA.len())
            .is_none_or(|b| matches!(b, b';' | b' ' | b'\t'))
}

/// True when the comma-separated header value lists `token` (case-insensitive).
pub(super) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}
