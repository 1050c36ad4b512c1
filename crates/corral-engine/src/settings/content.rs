//! What a response's body must hold to count (`--require-json`, `--require POINTER[=VALUE]`)
//! and what is kept of it (`--extract NAME=POINTER`): a 200 with a truncated or wrong body is
//! not an answer to an LLM or SaaS call, and a run of a million calls wants one field of each
//! answer, not its whole body. Checked and read from the body as JSON, parsed once.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::error::ConfigError;

/// `--require POINTER[=VALUE]`: a JSON pointer that must exist in the body, or hold `VALUE`
/// (compared as JSON when `VALUE` is JSON — `3`, `true`, `"x"` — else as a string).
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    /// Where, as a JSON pointer (`/choices/0/message/content`).
    pub pointer: String,
    /// What it must equal, if anything.
    pub equals: Option<String>,
}

impl Requirement {
    /// Why `body` fails this requirement, in words that never quote the body: `None` when it
    /// holds.
    pub fn failed_by(&self, body: &Value) -> Option<String> {
        let Some(found) = body.pointer(&self.pointer) else {
            return Some(format!("--require {self}: {} is missing", self.pointer));
        };
        let want = self.equals.as_deref()?;
        let same = match serde_json::from_str::<Value>(want) {
            Ok(v) => &v == found || found.as_str() == Some(want),
            Err(_) => found.as_str() == Some(want),
        };
        (!same).then(|| format!("--require {self}: {} holds another value", self.pointer))
    }
}

/// A JSON pointer: empty (the whole document) or starting with `/`.
fn pointer(option: &'static str, p: &str) -> Result<String, ConfigError> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(ConfigError::new(
            option,
            format!(
                "{p:?} is not a JSON pointer: it starts with '/', as in /choices/0/message/content"
            ),
        ));
    }
    Ok(p.to_owned())
}

impl FromStr for Requirement {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (p, equals) = match s.split_once('=') {
            Some((p, v)) => (p, Some(v.to_owned())),
            None => (s, None),
        };
        Ok(Self {
            pointer: pointer("--require", p.trim())?,
            equals,
        })
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pointer)?;
        match &self.equals {
            Some(v) => write!(f, "={v}"),
            None => Ok(()),
        }
    }
}

/// `--extract NAME=POINTER`: the value at `POINTER` in the JSON body, kept in the result's
/// `extract` object as `NAME` (`null` when it is absent or the body is not JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extraction {
    /// The key in the result's `extract` (and the CSV column `extract.NAME`).
    pub name: String,
    /// Where, as a JSON pointer.
    pub pointer: String,
}

impl Extraction {
    /// The value in `body` (`null` when absent or when there is no JSON body).
    pub fn from_body(&self, body: Option<&Value>) -> Value {
        body.and_then(|b| b.pointer(&self.pointer))
            .cloned()
            .unwrap_or(Value::Null)
    }
}

impl FromStr for Extraction {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (name, p) = s.split_once('=').ok_or_else(|| {
            ConfigError::new(
                "--extract",
                format!("{s:?}: expected NAME=POINTER, as in answer=/choices/0/message/content"),
            )
        })?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        {
            return Err(ConfigError::new(
                "--extract",
                format!("{name:?}: a name is letters, digits, '_', '-' or '.'"),
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            pointer: pointer("--extract", p.trim())?,
        })
    }
}

impl fmt::Display for Extraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.pointer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requirement_holds_when_its_field_exists_or_equals_and_never_quotes_the_body() {
        let body: Value =
            serde_json::from_str(r#"{"status":"done","n":3,"ok":true,"secret":"sk-1"}"#).unwrap();
        let r = |s: &str| s.parse::<Requirement>().unwrap().failed_by(&body);
        assert_eq!(r("/status"), None);
        assert_eq!(r("/status=done"), None);
        assert_eq!(r("/n=3"), None);
        assert_eq!(r("/ok=true"), None);
        let missing = r("/choices/0").unwrap();
        assert!(missing.contains("/choices/0 is missing"), "{missing}");
        let other = r("/secret=sk-2").unwrap();
        assert!(
            other.contains("another value") && !other.contains("sk-1"),
            "{other}"
        );
        assert!("status".parse::<Requirement>().is_err());
    }

    #[test]
    fn an_extraction_takes_its_value_or_null() {
        let e: Extraction = "answer=/choices/0/text".parse().unwrap();
        let body: Value = serde_json::from_str(r#"{"choices":[{"text":"hi"}]}"#).unwrap();
        assert_eq!(e.from_body(Some(&body)), Value::from("hi"));
        assert_eq!(e.from_body(Some(&Value::Null)), Value::Null);
        assert_eq!(e.from_body(None), Value::Null);
        for bad in ["answer", "=/a", "a b=/x", "a=x"] {
            assert!(bad.parse::<Extraction>().is_err(), "{bad}");
        }
    }
}
