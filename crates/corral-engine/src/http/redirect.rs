//! Where a redirect may take a request, and what the request may carry there.
//!
//! reqwest's own redirect handling drops `Authorization` and `Cookie` on a hop to another host
//! but keeps every other header, so an `X-Api-Key` went to whatever host a `Location` named, and
//! its `Referer` carried the previous URL's query (keys included). So corral follows redirects
//! itself (reqwest is built with redirects off and no `Referer`), and each hop is decided here:
//! - to another origin (scheme, host or port), every header that the redaction rule calls
//!   secret is dropped ([`crate::redact::is_secret_header`]), and so is a `Referer` with a query;
//! - never from `https` to `http` (the request would go out in clear), nor to any scheme but
//!   those two: the job fails with kind `redirect`;
//! - 301 and 302 turn a POST into a GET, 303 turns anything but HEAD into a GET (the body and
//!   its headers are dropped); 307 and 308 keep method and body (RFC 9110 §15.4);
//! - at most `--max-redirects` hops (the engine counts them; see [`crate::engine`]).
//!
//! Neither client follows redirects itself: the engine does, for every scheme alike, each hop
//! a request through the gates of the host it goes to.

use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, REFERER, TRANSFER_ENCODING};
use http::{HeaderMap, Method};
use url::Url;

use crate::redact;

/// What to do with a response.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Not a redirect to follow: the response is the answer.
    Stop,
    /// Send the request again to `url`, with `method`; `keep_body` false: without its body.
    Follow {
        /// Where to.
        url: Url,
        /// With which method.
        method: Method,
        /// Whether the body goes too.
        keep_body: bool,
    },
    /// A redirect that must not be followed (why).
    Refuse(String),
}

/// Decides the hop from `from` for a response `status` with `location`.
pub fn next(from: &Url, method: &Method, status: u16, location: Option<&[u8]>) -> Next {
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return Next::Stop;
    }
    let Some(to) = location
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| from.join(l.trim()).ok())
    else {
        return Next::Stop; // no usable Location: the 3xx itself is the answer
    };
    match (from.scheme(), to.scheme()) {
        ("https", "http") => {
            return Next::Refuse(format!(
                "redirect from https to http refused (to {})",
                redact::url(&to)
            ))
        }
        (_, "http" | "https") => {}
        (_, other) => {
            return Next::Refuse(format!("redirect to a {other}: URL refused"));
        }
    }
    let to_get = match status {
        303 => *method != Method::HEAD,
        301 | 302 => *method == Method::POST,
        _ => false,
    };
    Next::Follow {
        url: to,
        method: if to_get { Method::GET } else { method.clone() },
        keep_body: !to_get,
    }
}

/// Makes `headers` fit for the hop from `from` to `to`: secrets stay with their origin, and a
/// body's headers go with the body.
pub fn prepare(headers: &mut HeaderMap, from: &Url, to: &Url, keep_body: bool) {
    if !keep_body {
        for h in [
            CONTENT_TYPE,
            CONTENT_LENGTH,
            CONTENT_ENCODING,
            TRANSFER_ENCODING,
        ] {
            headers.remove(h);
        }
    }
    if from.origin() != to.origin() {
        let secret: Vec<_> = headers
            .keys()
            .filter(|k| redact::is_secret_header(k.as_str()))
            .cloned()
            .collect();
        for k in secret {
            headers.remove(k);
        }
        if headers
            .get(REFERER)
            .is_some_and(|r| r.as_bytes().contains(&b'?'))
        {
            headers.remove(REFERER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn methods_change_as_rfc_9110_says() {
        let from = u("http://a/x?k=1");
        for (status, method, want, body) in [
            (301, Method::POST, Method::GET, false),
            (302, Method::POST, Method::GET, false),
            (302, Method::PUT, Method::PUT, true),
            (303, Method::PUT, Method::GET, false),
            (303, Method::HEAD, Method::HEAD, true),
            (307, Method::POST, Method::POST, true),
            (308, Method::PATCH, Method::PATCH, true),
        ] {
            assert_eq!(
                next(&from, &method, status, Some(b"/y")),
                Next::Follow {
                    url: u("http://a/y"),
                    method: want,
                    keep_body: body
                },
                "{status} {method}"
            );
        }
        assert_eq!(next(&from, &Method::GET, 304, Some(b"/y")), Next::Stop);
        assert_eq!(next(&from, &Method::GET, 302, None), Next::Stop);
    }

    #[test]
    fn no_downgrade_and_no_other_schemes() {
        let from = u("https://a/x");
        let down = next(&from, &Method::GET, 302, Some(b"http://a/x?token=s3cret"));
        assert!(
            matches!(&down, Next::Refuse(m) if m.contains("https to http") && !m.contains("s3cret")),
            "{down:?}"
        );
        let file = next(&from, &Method::GET, 302, Some(b"file:///etc/passwd"));
        assert!(matches!(file, Next::Refuse(_)), "{file:?}");
        let up = next(&u("http://a/"), &Method::GET, 301, Some(b"https://a/"));
        assert!(matches!(up, Next::Follow { .. }));
    }

    #[test]
    fn secrets_stay_with_their_origin() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer s"),
            ("x-api-key", "s"),
            ("cookie", "a=b"),
            ("referer", "https://a/p?api_key=s"),
            ("accept", "*/*"),
            ("content-type", "application/json"),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        let mut same = h.clone();
        prepare(&mut same, &u("https://a/x"), &u("https://a/y"), true);
        assert_eq!(same, h);
        let mut other = h.clone();
        prepare(&mut other, &u("https://a/x"), &u("https://a:8443/y"), false);
        let left: Vec<_> = other.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }
}
