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

use super::{HostRule, HostSettings, RateSetting};

/// `Duration` as whole milliseconds.
pub(crate) mod ms {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// `Duration` as whole seconds.
pub(crate) mod secs {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        d.as_secs().serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

/// A size in bytes, written `1MiB`, `512KiB`, `100000` (or a bare number in the config file).
pub(crate) mod size {
    use super::*;

    pub(crate) fn serialize<S: Serializer, N: Copy>(n: &N, s: S) -> Result<S::Ok, S::Error>
    where
        u64: TryFrom<N>,
    {
        s.collect_str(&Size(u64::try_from(*n).unwrap_or(u64::MAX)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, N: TryFrom<u64>>(
        d: D,
    ) -> Result<N, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        let n = match Written::deserialize(d)? {
            Written::Number(n) => n,
            Written::Text(t) => parse_size(&t).map_err(D::Error::custom)?,
        };
        N::try_from(n).map_err(|_| D::Error::custom(format!("{n} bytes is too large")))
    }
}

/// A size as it is written back: in MiB or KiB when it is a whole number of them.
pub(crate) struct Size(pub(crate) u64);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("0"),
            n if n % (1 << 20) == 0 => write!(f, "{}MiB", n >> 20),
            n if n % (1 << 10) == 0 => write!(f, "{}KiB", n >> 10),
            n => write!(f, "{n}"),
        }
    }
}

/// `1MiB`, `512KiB`, `100000` (bytes), `2G`: the number of bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| SizeError::NotASize)?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        other => return Err(SizeError::Unit(other.to_owned())),
    };
    n.checked_mul(mult).ok_or(SizeError::TooLarge)
}

/// A size that is not one (see [`parse_size`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number with an optional unit.
    #[error("expected a size like 1MiB, 512KiB or 100000")]
    NotASize,
    /// A unit that is not B, KiB, MiB or GiB.
    #[error("unknown unit {0:?} (B, KiB, MiB or GiB)")]
    Unit(String),
    /// More bytes than 64 bits count.
    #[error("too large")]
    TooLarge,
}

/// `Option<Url>` as text.
pub(crate) mod opt_url {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(u: &Option<url::Url>, s: S) -> Result<S::Ok, S::Error> {
        u.as_ref().map(url::Url::as_str).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<url::Url>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| super::base_url(&t).map_err(D::Error::custom))
            .transpose()
    }
}

/// A base URL: an `http://` or `https://` URL (its text never quoted back: it may hold
/// credentials).
pub(crate) fn base_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{:?} is not http or https", u.scheme()));
    }
    Ok(u)
}

/// The `[hosts."PATTERN"]` tables, read into rules (sorted by pattern, as a table's order
/// carries no meaning) and written back as tables.
pub(crate) mod host_tables {
    use super::*;
    use std::collections::BTreeMap;

    pub(crate) fn serialize<S: Serializer>(rules: &[HostRule], s: S) -> Result<S::Ok, S::Error> {
        let tables: BTreeMap<String, &HostSettings> = rules
            .iter()
            .map(|r| (r.pattern.to_string(), &r.settings))
            .collect();
        tables.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HostRule>, D::Error> {
        let tables = BTreeMap::<String, HostSettings>::deserialize(d)?;
        HostRule::from_tables(&tables).map_err(D::Error::custom)
    }
}

/// Value parsers of the command-line flags (clap) for the typed settings: each error says
/// what is wrong in the option's own words; [`Quiet`] ones never repeat the value.
#[cfg(feature = "clap")]
pub(crate) mod flag {
    use super::*;

    /// Whole milliseconds.
    pub(crate) fn ms(s: &str) -> Result<Duration, std::num::ParseIntError> {
        s.trim().parse().map(Duration::from_millis)
    }

    /// Whole seconds.
    pub(crate) fn secs(s: &str) -> Result<Duration, std::num::ParseIntError> {
        s.trim().parse().map(Duration::from_secs)
    }

    /// A size (`1MiB`).
    pub(crate) fn size(s: &str) -> Result<u64, SizeError> {
        parse_size(s)
    }

    /// A size (`1MiB`) that a `usize` holds.
    pub(crate) fn size_usize(s: &str) -> Result<usize, SizeError> {
        usize::try_from(parse_size(s)?).map_err(|_| SizeError::TooLarge)
    }

    /// A value that may be a secret (a header, a URL with credentials): parsed by `parse`, and
    /// refused with the option's name and what is wrong, never the value itself (clap's own
    /// error would quote it).
    #[derive(Clone, Copy)]
    pub(crate) struct Quiet<T>(pub(crate) fn(&str) -> Result<T, String>);

    impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Quiet<T> {
        type Value = T;

        fn parse_ref(
            &self,
            cmd: &clap::Command,
            arg: Option<&clap::Arg>,
            value: &std::ffi::OsStr,
        ) -> Result<T, clap::Error> {
            let name = arg
                .and_then(|a| a.get_long())
                .map_or_else(|| "a value".to_owned(), |l| format!("--{l}"));
            let why = match value.to_str() {
                Some(v) => (self.0)(v),
                None => Err("not UTF-8".to_owned()),
            };
            why.map_err(|why| {
                clap::Error::raw(
                    clap::error::ErrorKind::ValueValidation,
                    format!("{name}: {why}\n"),
                )
                .with_cmd(cmd)
            })
        }
    }
}

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
    for HeaderLine { name, value } in header_line_list(lines, what)? {
        map.append(name, value);
    }
    Ok(map)
}

/// `"Name: value"` lines, in order; a bad one refused by its number in `what`.
fn header_line_list<S: AsRef<str>>(
    lines: &[S],
    what: &str,
) -> Result<Vec<HeaderLine>, HeaderLineError> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            header_line(line.as_ref()).map_err(|why| HeaderLineError {
                what: what.to_owned(),
                number: i + 1,
                why,
            })
        })
        .collect()
}

/// A header as the line `"Name: value"` that gave it (a value that is not UTF-8, lossily).
fn line_text(name: &HeaderName, value: &HeaderValue) -> String {
    format!("{name}: {}", String::from_utf8_lossy(value.as_bytes()))
}

/// One `Name: value` line; the error says what is wrong without the value.
pub(crate) fn header_line(line: &str) -> Result<HeaderLine, String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| "expected `Name: value`".to_owned())?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("invalid header name {:?}", name.trim()))?;
    let value =
        HeaderValue::from_str(value.trim()).map_err(|_| format!("invalid value for {name}"))?;
    Ok(HeaderLine { name, value })
}

/// One request header, as `-H "Name: value"` and a config file's `header = ["Name: value"]`
/// give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLine {
    /// Its name.
    pub name: HeaderName,
    /// Its value (may be a secret: never shown).
    pub value: HeaderValue,
}

impl std::str::FromStr for HeaderLine {
    type Err = HeaderLineError;

    fn from_str(s: &str) -> Result<Self, HeaderLineError> {
        header_line(s).map_err(|why| HeaderLineError {
            what: "header".into(),
            number: 1,
            why,
        })
    }
}

/// `Vec<HeaderLine>` as `"Name: value"` lines, a bad one refused by its number.
pub(crate) mod header_list {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(h: &[HeaderLine], s: S) -> Result<S::Ok, S::Error> {
        let lines: Vec<String> = h.iter().map(|l| line_text(&l.name, &l.value)).collect();
        lines.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<HeaderLine>, D::Error> {
        let lines = Vec::<String>::deserialize(d)?;
        header_line_list(&lines, "header").map_err(D::Error::custom)
    }
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
        let lines: Vec<String> = h.iter().map(|(n, v)| line_text(n, v)).collect();
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

as_text!(
    super::HostPattern,
    super::StatusSet,
    super::Requirement,
    super::Extraction
);

impl Serialize for super::RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `--retry-on` in the config file: `"429,5xx,invalid_response"`, or a list of statuses and
/// names (`[429, 503]`, as before kinds were named there).
impl<'de> Deserialize<'de> for super::RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            Status(u16),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            List(Vec<Item>),
        }
        let text = match Written::deserialize(d)? {
            Written::Text(t) => t,
            Written::List(items) => items
                .into_iter()
                .map(|i| match i {
                    Item::Status(n) => n.to_string(),
                    Item::Text(t) => t,
                })
                .collect::<Vec<_>>()
                .join(","),
        };
        text.parse().map_err(D::Error::custom)
    }
}
