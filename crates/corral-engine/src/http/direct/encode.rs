//! Writing a request: the request line, corral's own headers where the job has none, the job's
//! headers, and the body framed by its length.

use std::io::Write as _;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST};
use http::header::{TRANSFER_ENCODING, USER_AGENT};
use http::Method;
use percent_encoding::percent_decode_str;

use super::head::has_token;
use super::Request;

/// Writes `req` into `out`. Returns whether the request asks to close the connection
/// afterwards.
pub(super) fn encode(req: &Request<'_>, user_agent: &HeaderValue, out: &mut Vec<u8>) -> bool {
    let target = &req.url[url::Position::BeforePath..url::Position::AfterQuery];
    out.clear();
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut header = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    let h = req.headers;
    if !h.contains_key(HOST) {
        let authority = &req.url[url::Position::BeforeHost..url::Position::AfterPort];
        header(b"host", authority.as_bytes());
    }
    if !h.contains_key(USER_AGENT) {
        header(b"user-agent", user_agent.as_bytes());
    }
    if !h.contains_key(ACCEPT) {
        header(b"accept", b"*/*");
    }
    // Credentials in the URL become Basic authorization, as with reqwest (and curl).
    let url = &req.url;
    if !h.contains_key(AUTHORIZATION) && (!url.username().is_empty() || url.password().is_some()) {
        let mut creds: Vec<u8> = percent_decode_str(url.username()).collect();
        creds.push(b':');
        creds.extend(percent_decode_str(url.password().unwrap_or_default()));
        let value = format!("Basic {}", BASE64_STANDARD.encode(creds));
        header(b"authorization", value.as_bytes());
    }
    let mut close = false;
    for (name, value) in h {
        // The body is framed by its length, set below; a length or coding from the job
        // would contradict it.
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONNECTION && has_token(value.as_bytes(), b"close") {
            close = true;
        }
        header(name.as_str().as_bytes(), value.as_bytes());
    }
    let body = req.body.map_or(&[][..], |b| &b[..]);
    if !body.is_empty() || matches!(*req.method, Method::POST | Method::PUT | Method::PATCH) {
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    close
}
