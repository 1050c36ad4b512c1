//! Judging an HTTP call's result for the retry and breaker layers.
//!
//! A server that is overloaded or down usually says so with a *response* — 503, 429, 502 — not
//! an error, so layers that only see `Err` can neither retry it nor count it. A classifier
//! sees the whole `Result<Response, BoxError>`. [`HttpClassifier`] is the ready one, with the
//! rules most HTTP clients want:
//!
//! | result | retry ([`RetryLayer`](crate::retry::RetryLayer)) | breaker failure ([`BreakerLayer`](crate::breaker::BreakerLayer)) |
//! |---|---|---|
//! | 2xx, 3xx, 4xx other than 429 | no | no |
//! | 429 Too Many Requests | yes, after its `Retry-After` if it has one | no: the service is up, it is pacing us |
//! | 500, 502, 503, 504 and other 5xx | yes (503 after its `Retry-After`) | yes |
//! | 501 Not Implemented, 505 HTTP Version Not Supported | no: they do not heal | yes |
//! | timeout ([`Elapsed`]), connection error (an `io::Error` anywhere in the error's source chain: refused, reset, broken pipe) | yes | yes |
//! | [`BreakerOpen`] | no | no (the breaker's own refusal) |
//! | rate limit refusal ([`NotUntil`]) | yes, when the limit allows | no |
//! | concurrency limit refusal ([`AtCapacity`]) | yes, after the backoff | no |
//! | any other error | no | yes |
//!
//! Retrying sends the request again: put the retry layer only around requests that are safe to
//! repeat (idempotent methods, or APIs with idempotency keys).
//!
//! ```
//! use corral::classify::HttpClassifier;
//! use corral::retry::{Classify as _, Decision};
//! use std::time::Duration;
//!
//! let c = HttpClassifier::new();
//! let busy = http::Response::builder().status(429).header("retry-after", "7").body(()).unwrap();
//! assert_eq!(c.classify(&Ok(busy)), Decision::RetryAfter(Duration::from_secs(7)));
//! let not_found = http::Response::builder().status(404).body(()).unwrap();
//! assert_eq!(c.classify(&Ok(not_found)), Decision::Stop);
//! ```

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Response, StatusCode};

use crate::breaker::BreakerOpen;
use crate::limit::{AtCapacity, NotUntil};
use crate::retry::Decision;
use crate::timeout::Elapsed;
use crate::BoxError;

/// The ready classifier for HTTP services; see the [module docs](self) for its rules. It
/// judges `http::Response<B>` for any body `B`, for both [`crate::retry::Classify`] and
/// [`crate::breaker::Classify`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier {
    _private: (),
}

impl HttpClassifier {
    /// The classifier with the rules in the [module docs](self).
    pub fn new() -> Self {
        Self::default()
    }
}

/// True for statuses a retry may cure.
fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error()
            && status != StatusCode::NOT_IMPLEMENTED
            && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
}

/// True when `e`, or an error it wraps, is a timeout or an I/O error (a connection that could
/// not be made or broke).
fn is_transient(e: &BoxError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = cur {
        if err.is::<Elapsed>() || err.is::<std::io::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

impl<B> crate::retry::Classify<Response<B>> for HttpClassifier {
    fn classify(&self, result: &Result<Response<B>, BoxError>) -> Decision {
        match result {
            Ok(resp) if retryable_status(resp.status()) => match retry_after(resp.headers()) {
                Some(wait) => Decision::RetryAfter(wait),
                None => Decision::Retry,
            },
            Ok(_) => Decision::Stop,
            Err(e) => {
                if e.is::<BreakerOpen>() {
                    Decision::Stop
                } else if let Some(refused) = e.downcast_ref::<NotUntil>() {
                    Decision::RetryAfter(refused.wait_from(tokio::time::Instant::now()))
                } else if is_transient(e) || e.is::<AtCapacity>() {
                    Decision::Retry
                } else {
                    Decision::Stop
                }
            }
        }
    }
}

impl<B> crate::breaker::Classify<Response<B>> for HttpClassifier {
    fn is_failure(&self, result: &Result<Response<B>, BoxError>) -> bool {
        match result {
            Ok(resp) => resp.status().is_server_error(),
            Err(e) => !(e.is::<BreakerOpen>() || e.is::<NotUntil>() || e.is::<AtCapacity>()),
        }
    }
}

/// The wait a `Retry-After` header asks for: delay-seconds (`120`) or an HTTP date (a date in
/// the past is no wait). `None` when the header is missing or unreadable.
///
/// ```
/// let mut headers = http::HeaderMap::new();
/// headers.insert("retry-after", "120".parse().unwrap());
/// assert_eq!(corral::classify::retry_after(&headers), Some(std::time::Duration::from_secs(120)));
/// ```
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::breaker::Classify as _;
    use crate::retry::Classify as _;

    fn resp(status: u16, retry_after: Option<&str>) -> Result<Response<()>, BoxError> {
        let mut b = Response::builder().status(status);
        if let Some(v) = retry_after {
            b = b.header("retry-after", v);
        }
        Ok(b.body(()).unwrap())
    }

    #[test]
    fn statuses_are_judged_as_the_table_says() {
        let c = HttpClassifier::new();
        for (status, retry, failure) in [
            (200, Decision::Stop, false),
            (302, Decision::Stop, false),
            (404, Decision::Stop, false),
            (429, Decision::Retry, false),
            (500, Decision::Retry, true),
            (501, Decision::Stop, true),
            (503, Decision::Retry, true),
            (505, Decision::Stop, true),
        ] {
            let r = resp(status, None);
            assert_eq!(c.classify(&r), retry, "{status}");
            assert_eq!(c.is_failure(&r), failure, "{status}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_ignores_nonsense() {
        let c = HttpClassifier::new();
        assert_eq!(
            c.classify(&resp(503, Some("3"))),
            Decision::RetryAfter(Duration::from_secs(3))
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        match c.classify(&resp(429, Some(&later))) {
            Decision::RetryAfter(d) => assert!(
                d > Duration::from_secs(110) && d <= Duration::from_secs(120),
                "{d:?}"
            ),
            other => panic!("{other:?}"),
        }
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(
            c.classify(&resp(429, Some(&past))),
            Decision::RetryAfter(Duration::ZERO)
        );
        assert_eq!(c.classify(&resp(503, Some("soon"))), Decision::Retry);
    }

    #[test]
    fn errors_are_judged_by_what_they_wrap() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("request failed")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let c = HttpClassifier::new();
        let err = |e: BoxError| -> Result<Response<()>, BoxError> { Err(e) };
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(c.classify(&err(Box::new(Wrapper(reset)))), Decision::Retry);
        assert_eq!(c.classify(&err("a bad header".into())), Decision::Stop);
        assert!(c.is_failure(&err("a bad header".into())));
        let open = BreakerOpen { retry_at: None };
        assert_eq!(c.classify(&err(Box::new(open))), Decision::Stop);
        assert!(!c.is_failure(&err(Box::new(open))));
        let full = AtCapacity::new_for_tests(4);
        assert_eq!(c.classify(&err(Box::new(full))), Decision::Retry);
        assert!(!c.is_failure(&err(Box::new(full))));
    }
}
