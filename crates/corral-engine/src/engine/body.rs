//! A response's body: read after its head, decoded as it comes (`--compressed`), capped on
//! its decoded size (`--max-body`), kept for the result (`--save-body`) or to read its cost
//! from (`--cost-from-response`), written to its own file (`--save-body-dir`), or drained so
//! the connection serves again; then judged by `--accept`.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use http::HeaderMap;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use super::attempt::AttemptError;
use super::Engine;
use crate::http::client::Body;
use crate::http::decode::{DecodeError, Decoder};
use crate::http::error::Cause;
use crate::job::Job;
use crate::settings::BodyMode;

/// The part of a body's `chunk` (decoded first, with `decoder`) that fits in `room` bytes,
/// and whether some did not fit. `end`: the body ended (`chunk` is empty): the decoder's last
/// output.
fn within<'c>(
    decoder: Option<&mut Decoder>,
    chunk: &'c [u8],
    room: u64,
    end: bool,
) -> Result<(Cow<'c, [u8]>, bool), DecodeError> {
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    let Some(d) = decoder else {
        let take = chunk.len().min(room);
        return Ok((Cow::Borrowed(&chunk[..take]), take < chunk.len()));
    };
    let mut piece = Vec::new();
    let mut cut = false;
    let mut out = |p: &[u8]| {
        let take = p.len().min(room - piece.len());
        piece.extend_from_slice(&p[..take]);
        cut |= take < p.len();
        !cut
    };
    if end {
        d.finish(&mut out)?;
    } else {
        d.feed(chunk, &mut out)?;
    }
    Ok((Cow::Owned(piece), cut))
}

/// A body written to its own file in `--save-body-dir`, named by the job's line, and by its
/// id too when the id is a safe file name (`17.body`, `17-invoice-42.body`). Another attempt
/// of the job starts it over.
struct BodyFile {
    path: std::path::PathBuf,
    file: tokio::fs::File,
}

impl BodyFile {
    async fn create(dir: &std::path::Path, job: &Job) -> Result<Self, AttemptError> {
        let safe = !job.id.is_empty()
            && job.id.len() <= 64
            && !job.id.starts_with('.')
            && job.id != job.line.to_string()
            && job
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let name = if safe {
            format!("{}-{}.body", job.line, job.id)
        } else {
            format!("{}.body", job.line)
        };
        let path = dir.join(name);
        let file = crate::files::open_async(
            tokio::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true),
            &path,
        )
        .await
        .map_err(|e| Self::failed(&path, e))?;
        Ok(Self { path, file })
    }

    async fn write(&mut self, piece: &[u8]) -> Result<(), AttemptError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .write_all(piece)
            .await
            .map_err(|e| Self::failed(&self.path, e))
    }

    async fn close(mut self) -> Result<std::path::PathBuf, AttemptError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .flush()
            .await
            .map_err(|e| Self::failed(&self.path, e))?;
        Ok(self.path)
    }

    /// A body file that cannot be written: not the host's fault, and not retried.
    fn failed(path: &std::path::Path, e: std::io::Error) -> AttemptError {
        AttemptError::Transport {
            cause: Cause::Request,
            message: format!("cannot write the body to {}: {e}", path.display()),
            sent: true,
            resend: false,
        }
    }
}

/// A response as far as we read it.
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body_bytes: u64,
    pub(super) body: Option<Vec<u8>>,
    /// Where `--save-body-dir` wrote the body.
    pub(super) body_file: Option<std::path::PathBuf>,
    pub(super) truncated: bool,
    pub(super) latency: Duration,
    /// The share of [`RESULT_BYTES`] reserved for a saved body, handed on to the result line.
    pub(super) held: Option<OwnedSemaphorePermit>,
    /// What the response says the job cost (`--cost-from-response`).
    pub(super) cost: Option<Claimed>,
    /// From the attempt's start (connecting included) to the response's head.
    pub(super) ttfb: Duration,
    /// What only some runs read of a response (`None` for the others: a response is moved
    /// whole several times on its way to its result line, so it stays small).
    pub(super) extras: Option<Box<Extras>>,
}

/// What only some runs read of a response.
#[derive(Debug, Default)]
pub(super) struct Extras {
    /// The `--extract` fields of its JSON body, in their order (`None` without `--extract`).
    pub(super) extracted: Option<Vec<Value>>,
    /// A `text/event-stream` body's events with data, and the time from the attempt's start
    /// to the end of the first.
    pub(super) events: Option<(u64, Option<Duration>)>,
}

/// What a response said a job cost (`--cost-from-response`): a number from a server, which
/// the attempt bounds before it is settled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Claimed {
    /// A number (fractions rounded, negatives 0, past `u64` the largest).
    Cost(u64),
    /// The body is not JSON, or the pointer is missing or not a number there.
    Unreadable,
}

/// The cost at `pointer` in a JSON `body` (`None`: not JSON).
pub(super) fn claimed_cost(body: Option<&Value>, pointer: &str) -> Claimed {
    let number = body.and_then(|v| {
        let c = v.pointer(pointer)?;
        // `as` saturates: 1e308 is u64::MAX, which the bound then cuts.
        c.as_u64().or(c.as_f64().map(|f| f.max(0.0).round() as u64))
    });
    number.map_or(Claimed::Unreadable, Claimed::Cost)
}

impl Engine {
    /// Reads a response's body after its head (`status`, `headers`): decoded
    /// (`--compressed`), capped (`--max-body`), kept (`--save-body`, or to read its cost
    /// from), written to its file (`--save-body-dir`), or drained; then judged by `--accept`
    /// and, when accepted, by the host's content checks (`--require-json`, `--require`).
    pub(super) async fn read_body(
        &self,
        (job, view): (&Job, &crate::settings::ForHost<'_>),
        (status, headers, event_stream): (u16, HeaderMap, bool),
        mut body: Body<'_>,
        started: Instant,
        held: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<Response, AttemptError> {
        let ttfb = started.elapsed();
        let mode = self.gates.settings.body();
        let mut events = event_stream.then(super::sse::Events::default);
        let mut body_bytes = 0u64;
        let pointer = self.gates.settings.cost_from_response.as_deref();
        let require = job.require.as_deref().unwrap_or(view.require());
        let require_json = view.require_json();
        let extract = &self.gates.settings.extract;
        let checked = require_json || !require.is_empty();
        let json_wanted = pointer.is_some() || checked || !extract.is_empty();
        // The body is kept to read its cost, checks and fields from, even when it is not saved
        // (up to --max-body).
        let mut saved = (mode == BodyMode::Save || json_wanted).then(Vec::new);
        let mut truncated = false;
        let mut complete = false;
        // `--no-body` reads nothing over reqwest; over a direct connection it drains the body
        // (up to the cap, uncounted) so the connection can serve the next request.
        let read = mode != BodyMode::Skip || body.drains();
        let body_error = |e: DecodeError| AttemptError::Transport {
            cause: Cause::Body,
            message: e.to_string(),
            sent: true,
            resend: false,
        };
        // `--compressed`: the body is decoded as it comes, the cap applies to what it decodes to.
        let mut decoder = match headers.get(http::header::CONTENT_ENCODING) {
            Some(v) if self.gates.settings.compressed && read => {
                Decoder::for_encoding(&String::from_utf8_lossy(v.as_bytes())).map_err(body_error)?
            }
            _ => None,
        };
        let mut file = match &self.gates.settings.save_body_dir {
            Some(dir) if mode != BodyMode::Skip => Some(BodyFile::create(dir, job).await?),
            _ => None,
        };
        if read {
            let count = mode != BodyMode::Skip;
            loop {
                let chunk = body.chunk().await.map_err(AttemptError::from)?;
                let end = chunk.is_none();
                let room = self.gates.settings.max_body - body_bytes;
                let (piece, cut) = within(
                    decoder.as_mut(),
                    chunk.as_deref().unwrap_or_default(),
                    room,
                    end,
                )
                .map_err(body_error)?;
                body_bytes += piece.len() as u64;
                if let Some(e) = events.as_mut() {
                    e.feed(&piece, Instant::now());
                }
                if let Some(b) = saved.as_mut() {
                    b.extend_from_slice(&piece);
                }
                if let Some(f) = file.as_mut() {
                    f.write(&piece).await?;
                }
                if cut {
                    truncated = count; // the rest is never read; the connection is dropped
                    break;
                }
                if end {
                    complete = true;
                    break;
                }
            }
            if !count {
                body_bytes = 0;
            }
        }
        let body_file = match file {
            Some(f) => Some(f.close().await?),
            None => None,
        };
        body.finish(complete);
        let accepted = self.gates.settings.accept.contains(status);
        // Parsed once for the cost, the checks and the fields.
        let json = saved
            .as_deref()
            .filter(|_| json_wanted)
            .and_then(|b| serde_json::from_slice::<Value>(b).ok());
        let cost = match pointer {
            Some(p) if accepted => Some(claimed_cost(json.as_ref(), p)),
            _ => None,
        };
        let invalid = match &json {
            _ if !(accepted && checked) => None,
            None if truncated => Some(format!(
                "the body is not JSON: cut at --max-body ({} bytes)",
                self.gates.settings.max_body
            )),
            None => Some("the body is not JSON".to_owned()),
            Some(v) => require.iter().find_map(|r| r.failed_by(v)),
        };
        let extracted = (!extract.is_empty())
            .then(|| extract.iter().map(|e| e.from_body(json.as_ref())).collect());
        if mode != BodyMode::Save {
            saved = None;
        }
        let response = Response {
            status,
            headers,
            body_bytes,
            body: saved,
            body_file,
            truncated,
            latency: started.elapsed(),
            held: held.take(),
            cost,
            ttfb,
            extras: (extracted.is_some() || events.is_some()).then(|| {
                Box::new(Extras {
                    extracted,
                    events: events.map(|e| (e.count, e.first.map(|t| t - started))),
                })
            }),
        };
        if let Some(why) = invalid {
            Err(AttemptError::Invalid(response, why))
        } else if accepted {
            Ok(response)
        } else {
            let ra = corral::classify::retry_after(&response.headers);
            Err(AttemptError::Status(response, ra))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claimed cost is a number where the pointer says, rounded, floored at 0, saturated past
    /// `u64`; anything else is unreadable (the attempt then counts the job's own cost).
    #[test]
    fn a_claimed_cost_is_a_number_or_unreadable() {
        let at =
            |body: &str| claimed_cost(serde_json::from_str::<Value>(body).ok().as_ref(), "/u/t");
        assert_eq!(at(r#"{"u":{"t":42}}"#), Claimed::Cost(42));
        assert_eq!(at(r#"{"u":{"t":41.6}}"#), Claimed::Cost(42));
        assert_eq!(at(r#"{"u":{"t":-5}}"#), Claimed::Cost(0));
        assert_eq!(at(r#"{"u":{"t":1e308}}"#), Claimed::Cost(u64::MAX));
        assert_eq!(
            at(r#"{"u":{"t":18446744073709551616}}"#),
            Claimed::Cost(u64::MAX)
        );
        for bad in [
            r#"{"u":{"t":"7"}}"#,
            r#"{"u":{"t":null}}"#,
            r#"{"u":{}}"#,
            "not json",
            "",
        ] {
            assert_eq!(at(bad), Claimed::Unreadable, "{bad}");
        }
    }
}
