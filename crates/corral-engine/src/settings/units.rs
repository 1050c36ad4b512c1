//! How the config file writes the settings' typed values, for serde: durations as whole
//! milliseconds or seconds (`timeout_ms = 5000`), rates as text (`"50/s"`, `"auto:10/s"`),
//! headers as `"Name: value"` lines. Each value is parsed once, here, into the type the engine
//! reads; a bad one is refused with the config file's line (toml adds it), and a header's value
//! is never quoted back (it may be a secret).

use std::time::Duration;

use corral::limit::Rate;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::RateSetting;

/// `Option<Duration>` as whole milliseconds.
pub(crate) mod opt_ms {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// `Option<Duration>` as whole seconds.
pub(crate) mod opt_secs {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.as_secs()).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

/// `Option<Rate>` as `"50/s"`.
pub(crate) mod opt_rate {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(r: &Option<Rate>, s: S) -> Result<S::Ok, S::Error> {
        r.map(|r| r.to_string()).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rate>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse::<Rate>().map_err(|e| D::Error::custom(e.message())))
            .transpose()
    }
}

/// `Option<RateSetting>` as `"50/s"`, `"auto"` or `"auto:10/s"`.
pub(crate) mod opt_rate_setting {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        r: &Option<RateSetting>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        r.map(|r| r.to_string()).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<RateSetting>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse::<RateSetting>().map_err(D::Error::custom))
            .transpose()
    }
}

/// Parses `"Name: value"` lines into a header map; `what` names them in an error (the value is
/// never quoted: it may be a secret, even when the name is missing).
pub fn parse_header_lines<S: AsRef<str>>(
    lines: &[S],
    what: &str,
) -> Result<HeaderMap, HeaderLineError> {
    let mut map = HeaderMap::new();
    for (i, line) in lines.iter().enumerate() {
        let line = line.as_ref();
        let bad = |why: String| HeaderLineError {
            what: what.to_owned(),
            number: i + 1,
            why,
        };
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("expected `Name: value`".into()))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| bad(format!("invalid header name {:?}", name.trim())))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| bad(format!("invalid value for {name}")))?;
        map.append(name, value);
    }
    Ok(map)
}

/// A header line that is not `Name: value` (see [`parse_header_lines`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} number {number}: {why}")]
pub struct HeaderLineError {
    what: String,
    number: usize,
    why: String,
}

/// A header map as `"Name: value"` lines.
pub(crate) mod header_lines {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(h: &HeaderMap, s: S) -> Result<S::Ok, S::Error> {
        let lines: Vec<String> = h
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        lines.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderMap, D::Error> {
        let lines = Vec::<String>::deserialize(d)?;
        parse_header_lines(&lines, "header").map_err(D::Error::custom)
    }
}

/// Serde as text for a type written and read as text (its `Display` and `FromStr`).
macro_rules! as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(D::Error::custom)
            }
        }
    )*};
}

as_text!(super::HostPattern, super::StatusSet);
