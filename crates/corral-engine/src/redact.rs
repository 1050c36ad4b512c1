//! Secrets never leave the process: every string that goes to results, errors, progress, logs or
//! the summary passes through here.
//!
//! Two entry points: [`url()`] for a parsed URL (keeps every other byte of it as written, and
//! borrows when there is nothing to hide, the common case once per result), and [`text`] for
//! any other string (error messages from the HTTP clients or the config parser, unparseable
//! input, header values), which finds secrets by their shape: credentials in a URL, secret
//! query and fragment parameters, `Bearer`/`Basic` credentials, and `name: value` or
//! `name = value` pairs whose name is a secret header's. What counts as secret is decided once,
//! by [`is_secret_header`] and [`is_secret_param`].

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use url::Url;

/// What replaces a secret.
pub const MASK: &str = "REDACTED";

/// Header names whose values never reach results or logs.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "token", "secret", "api-key", "apikey", "api_key", "password", "auth", "session",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// Query and fragment parameter names whose values never reach results or logs.
pub fn is_secret_param(name: &str) -> bool {
    // Without lower-casing a copy or building a substring searcher per word: this runs for
    // every query parameter of every result (it was ~450 instructions a request).
    [
        "token", "secret", "key", "password", "passwd", "auth", "sig", "session", "code",
    ]
    .iter()
    .any(|s| contains_ignore_ascii_case(name, s))
}

/// True when `hay` holds `needle` (ASCII letters compared without case).
fn contains_ignore_ascii_case(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// True when a query pair's (decoded) name looks secret. Names without `%` or `+` need no
/// decoding, which is the common case; bytes are searched, not chars (this runs for every
/// query parameter of every result).
fn is_secret_pair(pair: &str) -> bool {
    let name = &pair[..memchr::memchr(b'=', pair.as_bytes()).unwrap_or(pair.len())];
    if name.bytes().any(|b| b == b'%' || b == b'+') {
        url::form_urlencoded::parse(name.as_bytes())
            .next()
            .is_some_and(|(k, _)| is_secret_param(&k))
    } else {
        is_secret_param(name)
    }
}

/// `a=1&api_key=x` with the secret values replaced; `None` when none is secret.
fn redact_pairs(pairs: &str) -> Option<String> {
    if !pairs.split('&').any(is_secret_pair) {
        return None;
    }
    let out: Vec<String> = pairs
        .split('&')
        .map(|pair| {
            if is_secret_pair(pair) {
                let raw_key = pair.split_once('=').map_or(pair, |(k, _)| k);
                format!("{raw_key}={MASK}")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    Some(out.join("&"))
}

/// The URL with userinfo and secret-looking query and fragment values replaced by `REDACTED`;
/// borrowed when there is nothing to hide.
pub fn url(url: &Url) -> Cow<'_, str> {
    let creds = !url.username().is_empty() || url.password().is_some();
    let query = url.query().and_then(redact_pairs);
    let fragment = url.fragment().and_then(redact_pairs);
    if !creds && query.is_none() && fragment.is_none() {
        // Nothing to hide: the URL exactly as requested.
        return Cow::Borrowed(url.as_str());
    }
    let mut u = url.clone();
    if creds {
        let _ = u.set_username(MASK);
        let _ = u.set_password(None);
    }
    // Only secret values change; every other pair keeps its exact encoding.
    if query.is_some() {
        u.set_query(query.as_deref());
    }
    if fragment.is_some() {
        u.set_fragment(fragment.as_deref());
    }
    Cow::Owned(u.to_string())
}

/// A URL as the user wrote it, parseable or not.
pub fn url_text(s: &str) -> String {
    match Url::parse(s.trim()) {
        Ok(u) => url(&u).into_owned(),
        Err(_) => text(s).into_owned(),
    }
}

static USERINFO: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#@\s"'<>]+@"#).ok());
static PARAM: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"([?&#;])([^=&#?;\s"'<>]+)=([^&#\s"'<>]*)"#).ok());
static SCHEME: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(bearer|basic|digest|token)(\s+)[A-Za-z0-9\-._~+/]+=*"#).ok()
});
static PAIR: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"([A-Za-z0-9_\-]+)(["']?[ \t]*[:=][ \t]*["']?)([^"'\r\n,;}\]]*)"#).ok()
});

/// `s` with every secret-shaped part replaced by `REDACTED`; borrowed when there is none.
pub fn text(s: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(s);
    let mut apply = |re: &LazyLock<Option<Regex>>, f: &dyn Fn(&Captures) -> String| {
        // The patterns are constant and tested; were one to fail to build, its shape would
        // go unredacted rather than the run fail.
        if let Some(re) = re.as_ref() {
            if let Cow::Owned(o) = re.replace_all(&out, |c: &Captures| f(c)) {
                // A match whose replacement is itself (a harmless pair) changes nothing.
                if o != *out {
                    out = Cow::Owned(o);
                }
            }
        }
    };
    apply(&USERINFO, &|c| format!("{}{MASK}@", &c[1]));
    apply(&PARAM, &|c| {
        if is_secret_pair(&format!("{}={}", &c[2], &c[3])) {
            // A URL in parentheses: an unbalanced `)` and what follows it are the sentence's
            // ("(http://h/?token=...): refused"), not the value's.
            let close = match c[3].find(')') {
                Some(at) if !c[3].contains('(') => &c[3][at..],
                _ => "",
            };
            format!("{}{}={MASK}{close}", &c[1], &c[2])
        } else {
            c[0].to_string()
        }
    });
    apply(&SCHEME, &|c| format!("{}{}{MASK}", &c[1], &c[2]));
    apply(&PAIR, &|c| {
        if is_secret_header(&c[1]) && !c[3].trim().is_empty() && c[3].trim() != MASK {
            format!("{}{}{MASK}", &c[1], &c[2])
        } else {
            c[0].to_string()
        }
    });
    out
}

/// A response header's value as it may be written: `REDACTED` for a secret header, any
/// secret inside other values (a `Location` with credentials) masked.
pub fn header_value(name: &str, value: &[u8]) -> String {
    if is_secret_header(name) {
        MASK.to_string()
    } else {
        text(&String::from_utf8_lossy(value)).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_urls() {
        let u = Url::parse("http://user:pw@h/p?api_key=abc&page=2&access_token=t").unwrap();
        let r = url(&u);
        assert!(
            !r.contains("abc") && !r.contains("pw") && !r.contains("=t"),
            "{r}"
        );
        assert!(r.contains("page=2"), "{r}");
        assert!(
            is_secret_header("Authorization")
                && is_secret_header("X-Api-Key")
                && is_secret_header("x-auth-token")
        );
        assert!(!is_secret_header("accept"));
        // Parameter names in any case, the word anywhere in them.
        for name in [
            "API_KEY",
            "Signature",
            "x-Auth",
            "SessionId",
            "pAsSwOrD",
            "k",
        ] {
            assert_eq!(is_secret_param(name), name != "k", "{name}");
        }
        let u = Url::parse("https://h/cb#access_token=s3cret&state=1").unwrap();
        assert_eq!(url(&u), "https://h/cb#access_token=REDACTED&state=1");
    }

    #[test]
    fn redaction_keeps_the_rest_of_the_url_as_written() {
        let plain = Url::parse("http://h/p?q=a%20b&x=1+2&flag").unwrap();
        assert_eq!(url(&plain), "http://h/p?q=a%20b&x=1+2&flag");
        let u = Url::parse("http://h/p?q=a%20b&Api%5FKey=s3cret&flag").unwrap();
        assert_eq!(url(&u), "http://h/p?q=a%20b&Api%5FKey=REDACTED&flag");
    }

    /// Every shape of secret the probe found leaving the process, in the strings it left in.
    #[test]
    fn text_masks_every_secret_shape() {
        let table = [
            // reqwest's error messages carry the raw URL.
            (
                "error sending request for url (http://h:81/x?api_key=s3cret&page=2): connection closed",
                "page=2",
            ),
            ("invalid url \"http://bob:s3cret@[::1/x\": invalid IPv6 address", "invalid url"),
            ("ftp://s3cret@h/x", "ftp://REDACTED@h"),
            ("http://h/cb#access_token=s3cret", "#access_token=REDACTED"),
            ("http://h/p;sig=s3cret", ";sig=REDACTED"),
            ("Authorization: Bearer s3cret", "Authorization: REDACTED"),
            ("got Bearer s3cret.s3cret-s3cret from", "Bearer REDACTED from"),
            ("basic czNjcmV0OnMzY3JldA==", "basic REDACTED"),
            // A config parse error quotes the line.
            ("  |\n3 | header = [\"X-Api-Key: s3cret\"]\n  |", "X-Api-Key: REDACTED"),
            ("api_key = \"s3cret\"", "api_key = \"REDACTED"),
            // A job's headers as JSON.
            ("{\"X-Api-Key\":\"s3cret\",\"Accept\":\"*/*\"}", "\"Accept\":\"*/*\""),
            ("Cookie: session=s3cret; theme=dark", "Cookie: REDACTED"),
            ("x-auth-token=s3cret", "x-auth-token=REDACTED"),
            // The `)` closing a URL in parentheses stays the sentence's.
            (
                "for url (http://h/x?token=s3cret): connection refused",
                "?token=REDACTED): connection refused",
            ),
        ];
        for (input, kept) in table {
            let out = text(input);
            assert!(!out.contains("s3cret"), "{input:?} -> {out:?}");
            assert!(!out.contains("czNjcmV0"), "{input:?} -> {out:?}");
            assert!(
                out.contains(kept),
                "{input:?} -> {out:?} should keep {kept:?}"
            );
        }
        for harmless in [
            "HTTP 503 (gave up after 4 attempt(s))",
            "no complete response within 100ms",
            "http://h:81/items/3?page=2&sort=asc",
            "kind: timeout, attempts: 3",
        ] {
            assert!(matches!(text(harmless), Cow::Borrowed(_)), "{harmless}");
        }
    }

    #[test]
    fn header_values_are_masked_by_name_and_by_shape() {
        assert_eq!(header_value("Set-Cookie", b"session=1"), MASK);
        assert_eq!(
            header_value("Location", b"https://u:s3cret@other/x?token=s3cret&a=1"),
            "https://REDACTED@other/x?token=REDACTED&a=1"
        );
        assert_eq!(header_value("Content-Type", b"text/plain"), "text/plain");
    }
}
