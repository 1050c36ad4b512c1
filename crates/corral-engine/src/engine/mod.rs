//! The request engine: one job in, one result line out, through every control of the run.
//!
//! Order of the gates for each attempt: per-host concurrency slot → per-host rate cell (which
//! also carries `Retry-After` pauses) → per-host cost cell → global rate and cost cells →
//! per-host circuit breaker (an open one holds the job: `Engine::pass_gates`) → the
//! request, bounded by the attempt timeout, with the body read up to `--max-body`. The retry
//! loop around attempts is [`corral::retry`]; the whole job may be bounded by a total timeout.
//!
//! `--concurrency` counts jobs under way. A job gets its active slot when it is taken from the
//! input; when its host's gates are closed (slots busy, rate spent, paused by `Retry-After`) it
//! gives the slot back while it waits and takes one again once they open. So a slow or paused
//! host holds no global slot, and the other hosts' jobs run meanwhile; how many jobs may wait
//! like that is bounded by `--queue-size`, which keeps memory flat.
//!
//! The engine by concern, a file each:
//!
//! | part | what it holds |
//! |---|---|
//! | `mod.rs` | [`Engine`]: built per worker thread, `process` (one parsed line to its result), the redirect loop, the result line's making |
//! | `gates` | [`Gates`] (what every engine of a run shares: limits, per-host state, retry policies, the result budget), a job's active slot, and the gates an attempt passes (`pass_gates`) |
//! | `attempt` | a hop's retry loop, one attempt (gates, request, outcome told to the host), the retry decision as a plain function of the error and the rules, holding through an outage |
//! | `body` | reading a response's body: decoded, capped, kept, to a file, its cost |
//! | `trace` | what a job's attempts leave for its result line: attempts, breaker openings and pauses it caused, a head's status |
//!
//! The result line itself (its fields, JSON and CSV) is [`crate::result`].

mod attempt;
mod body;
mod caps;
mod gates;
mod sse;
#[cfg(test)]
mod tests;
mod trace;

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, StartError};
use crate::http::client::Clients;
use crate::http::redirect;
use crate::job::{Invalid, Job, Parsed};
use crate::redact;
use crate::result::{ErrorOut, Outcome, ResultLine, RESULT_BYTES};
use crate::settings::BodyMode;

use attempt::{Ended, Failure};
use body::Response;
pub use gates::Gates;
use gates::{client_options, Active};
use trace::Trace;

/// Runs jobs. One engine per runtime thread: the HTTP clients (and their connections) belong
/// to the thread's runtime, the [`Gates`] are shared by all engines of a run.
pub struct Engine {
    gates: Arc<Gates>,
    /// This engine's active jobs (its share of `--concurrency`).
    active: Arc<Semaphore>,
    /// Cancelled when the run stops taking jobs.
    stop: CancellationToken,
    /// This thread's HTTP clients.
    clients: Clients,
}

impl Engine {
    /// An engine for one worker thread, in one step: the run's shared `gates`, the thread's
    /// share of `--concurrency` (`active`), and `stop`, cancelled when the run stops taking
    /// jobs (jobs whose first request has not started then are given up: [`Engine::process`]
    /// returns `None` for them). It has HTTP clients of its own: a connection is driven only
    /// from the thread that made it.
    pub fn new(
        gates: Arc<Gates>,
        active: usize,
        stop: CancellationToken,
    ) -> Result<Self, StartError> {
        let clients = Clients::new(&client_options(&gates.settings))?;
        let active = Arc::new(Semaphore::new(active));
        gates
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((active.available_permits(), active.clone()));
        Ok(Self {
            gates,
            active,
            stop,
            clients,
        })
    }

    /// The semaphore of this engine's active jobs: a job's first slot is taken from it and
    /// handed to [`Engine::process`].
    pub fn active_slots(&self) -> Arc<Semaphore> {
        self.active.clone()
    }

    /// Runs one parsed input line to its result; `None` when the run stopped taking jobs
    /// before this one started (it gets no result, so `--resume` runs it).
    /// `slot`: the job's active slot, taken from [`Engine::active_slots`]. The
    /// job gives it up while it waits for its host; it is back in `slot` when the job ends, so
    /// the caller can go on to its next job without taking another.
    pub async fn process(
        &self,
        parsed: Parsed,
        slot: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<Outcome> {
        let mut outcome = match parsed {
            Parsed::Invalid(inv) => self.invalid(&inv),
            Parsed::Job(job) => {
                // A spend cap reached: no job starts any more (see `caps`).
                if self.gates.caps.as_ref().is_some_and(|c| c.reached()) {
                    self.stop.cancel();
                    return None;
                }
                let started = Instant::now();
                let started_at = SystemTime::now();
                let trace = Trace::default();
                let active = Active {
                    sem: self.active.clone(),
                    permit: Mutex::new(slot.take()),
                };
                // The job's future is made where it is awaited, not bound first: it is the
                // largest of the run (every stage of a request inlined), and bound to a name it
                // was copied whole twice more, ~700 instructions of memcpy a request (callgrind).
                let result = match self.gates.settings.total_timeout {
                    Some(t) => {
                        match tokio::time::timeout(t, self.run_job(&job, &trace, &active)).await {
                            Ok(r) => r,
                            Err(_) => Err(Ended::Failed(Box::new(Failure {
                                kind: ErrorKind::TotalTimeout,
                                message: format!("gave up after the total timeout of {t:?}"),
                                response: None,
                            }))),
                        }
                    }
                    None => self.run_job(&job, &trace, &active).await,
                };
                trace.settle();
                *slot = active
                    .permit
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner());
                let result = match result {
                    Ok(r) => Ok(r),
                    Err(Ended::NotStarted) => return None,
                    Err(Ended::Failed(f)) => Err(*f),
                };
                self.finish(&job, result, &trace, (started_at, started.elapsed()))
            }
        };
        // The line holds its size of the budget until it is written: a saved body's reserve is
        // cut to it, anything else takes it now. A line larger than the whole budget waits for
        // all of it: it is then alone.
        let need = outcome.json.len().clamp(1, RESULT_BYTES);
        let have = outcome.held.as_ref().map_or(0, |p| p.num_permits());
        if let (Some(held), true) = (outcome.held.as_mut(), have > need) {
            drop(held.split(have - need));
        } else if need > have {
            let more = u32::try_from(need - have).unwrap_or(u32::MAX);
            let more = self
                .gates
                .result_bytes
                .clone()
                .acquire_many_owned(more)
                .await
                .ok();
            match (&mut outcome.held, more) {
                (Some(held), Some(more)) => held.merge(more),
                (held, more) => *held = more,
            }
        }
        Some(outcome)
    }

    /// Runs a job: its request, and then each redirect the run follows (`--max-redirects`),
    /// every hop a request of its own through the gates of the host it goes to, under the
    /// job's total timeout. A hop takes no cost: the job's cost was taken once, by its first
    /// request, and `--cost-from-response` settles it from the last.
    async fn run_job(&self, job: &Job, trace: &Trace, active: &Active) -> Result<Response, Ended> {
        // An earlier run may have sent it, and it may not be repeated: said, not sent.
        if let Some(intents) = self.gates.intents.get() {
            if intents.interrupted(job.line) {
                trace.attempts.store(1, Ordering::Relaxed);
                trace.maybe_sent.store(true, Ordering::Relaxed);
                return Err(Ended::Failed(Box::new(Failure {
                    kind: ErrorKind::Interrupted,
                    message: format!(
                        "an earlier run stopped while this {} may have been under way; not sent \
                         again, as it may not be repeated (--retry-failed interrupted sends it)",
                        job.method
                    ),
                    response: None,
                })));
            }
        }
        let max = self.gates.settings.max_redirects;
        let mut hop = Cow::Borrowed(job);
        loop {
            let r = self.run_hop(&hop, trace, active).await;
            if max == 0 {
                return r;
            }
            let resp = match &r {
                Ok(resp) => resp,
                Err(Ended::Failed(f)) => match &f.response {
                    Some(resp) => resp,
                    None => return r,
                },
                Err(Ended::NotStarted) => return r,
            };
            // Most responses are not redirects: their headers are not looked at.
            if !(300..400).contains(&resp.status) {
                return r;
            }
            let location = resp.headers.get(http::header::LOCATION);
            let failed = |message| {
                Err(Ended::Failed(Box::new(Failure {
                    kind: ErrorKind::Redirect,
                    message,
                    response: None,
                })))
            };
            match redirect::next(
                &hop.url,
                &hop.method,
                resp.status,
                location.map(|l| l.as_bytes()),
            ) {
                redirect::Next::Stop => return r,
                redirect::Next::Refuse(why) => return failed(why),
                redirect::Next::Follow {
                    url,
                    method,
                    keep_body,
                } => {
                    let done = trace.redirects.load(Ordering::Relaxed);
                    if done >= max {
                        return failed(format!(
                            "more than {max} redirects (--max-redirects), the last to {}",
                            redact::url(&url)
                        ));
                    }
                    trace.redirects.store(done + 1, Ordering::Relaxed);
                    let mut next = hop.into_owned();
                    redirect::prepare(&mut next.headers, &next.url, &url, keep_body);
                    if !keep_body {
                        next.body = None;
                    }
                    next.url = url;
                    next.method = method;
                    next.cost = 0;
                    *trace.final_url.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(next.url.clone());
                    hop = Cow::Owned(next);
                }
            }
        }
    }

    /// `--extract`'s fields for a result: every name, `null` where there was no response to
    /// read it from (a CSV row has every column).
    fn extract(
        &self,
        values: Option<Vec<serde_json::Value>>,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let names = &self.gates.settings.extract;
        (!names.is_empty()).then(|| {
            let mut values = values.unwrap_or_default().into_iter();
            names
                .iter()
                .map(|e| (e.name.clone(), values.next().unwrap_or_default()))
                .collect()
        })
    }

    /// The result of an input line that is no job: `invalid_input`, nothing sent.
    fn invalid(&self, inv: &Invalid) -> Outcome {
        let line = ResultLine {
            error: Some(ErrorOut::new(ErrorKind::InvalidInput, &inv.message, false)),
            extract: self.extract(None),
            ..ResultLine::new(
                inv.line,
                &inv.id,
                inv.method.as_deref().unwrap_or(""),
                Cow::Borrowed(inv.url.as_deref().unwrap_or_default()),
                SystemTime::now(),
                inv.meta.as_ref(),
            )
        };
        Outcome {
            ok: false,
            status: None,
            error_kind: Some(ErrorKind::InvalidInput),
            attempts: 0,
            latency: None,
            json: line.serialise(self.gates.settings.results_format),
            held: None,
        }
    }

    /// `(started_at, elapsed)`: when the job started, by the wall clock, and how long it took.
    fn finish(
        &self,
        job: &Job,
        mut result: Result<Response, Failure>,
        trace: &Trace,
        (started_at, elapsed): (SystemTime, Duration),
    ) -> Outcome {
        let attempts = trace.attempts.load(Ordering::Relaxed);
        let (held, saved, extracted) = match &mut result {
            Ok(r)
            | Err(Failure {
                response: Some(r), ..
            }) => (
                r.held.take(),
                r.body.take(),
                r.extras.as_mut().and_then(|x| x.extracted.take()),
            ),
            Err(_) => (None, None, None),
        };
        let extract = self.extract(extracted);
        // Moved, not copied: a saved body can be megabytes. Bytes that are not UTF-8 (an
        // image, a protobuf) go as base64: a lossy conversion would corrupt them.
        let (saved, saved_base64) = match saved.map(String::from_utf8) {
            None => (None, None),
            Some(Ok(text)) => (Some(text), None),
            Some(Err(e)) => {
                use base64::Engine as _;
                (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
                )
            }
        };
        let body_file = match &result {
            Ok(r)
            | Err(Failure {
                response: Some(r), ..
            }) => r.body_file.as_ref().map(|p| p.display().to_string()),
            Err(_) => None,
        };
        // A response head that arrived before a timeout or a body error: its status is kept.
        let mut status = None;
        let (resp, error) = match result {
            Ok(r) => (Some(r), None),
            Err(Failure {
                kind,
                message,
                response: r,
            }) => {
                // With no response, say whether the server may still have seen the request.
                let maybe_sent = trace.maybe_sent.load(Ordering::Relaxed) && r.is_none();
                status = Some(trace.head.load(Ordering::Relaxed)).filter(|s| *s != 0);
                (r, Some(ErrorOut::new(kind, &message, maybe_sent)))
            }
        };
        let ok = error.is_none();
        let events = resp.as_ref().and_then(|r| r.extras.as_ref()?.events);
        let error_kind = error.as_ref().map(|e| e.kind);
        let headers = resp
            .as_ref()
            .filter(|_| self.gates.settings.save_headers)
            .map(|r| {
                r.headers
                    .iter()
                    .map(|(k, v)| {
                        let v = redact::header_value(k.as_str(), v.as_bytes());
                        (k.as_str().to_string(), v)
                    })
                    .collect()
            });
        let line = ResultLine {
            ok,
            status: resp.as_ref().map(|r| r.status).or(status),
            attempts,
            latency_ms: resp.as_ref().map(|r| r.latency.as_secs_f64() * 1000.0),
            ttfb: resp.as_ref().map(|r| r.ttfb),
            events: events.map(|(n, _)| n),
            ttfe_ms: events
                .and_then(|(_, first)| first)
                .map(|t| t.as_secs_f64() * 1000.0),
            elapsed_ms: elapsed.as_secs_f64() * 1000.0,
            redirects: trace.redirects.load(Ordering::Relaxed),
            final_url: trace
                .final_url
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|u| redact::url(u).into_owned()),
            opened_breaker: trace.openings.load(Ordering::Relaxed),
            paused_host: trace.pauses.load(Ordering::Relaxed),
            cost: self
                .gates
                .costs_counted
                .then(|| trace.cost.load(Ordering::Relaxed)),
            extract,
            error,
            body_bytes: resp
                .as_ref()
                .filter(|_| self.gates.settings.body() != BodyMode::Skip)
                .map(|r| r.body_bytes),
            truncated: resp.as_ref().is_some_and(|r| r.truncated),
            headers,
            body: saved,
            body_base64: saved_base64,
            body_file,
            ..ResultLine::new(
                job.line,
                &job.id,
                job.method.as_str(),
                redact::url(&job.url),
                started_at,
                job.meta.as_ref(),
            )
        };
        Outcome {
            ok,
            status: line.status,
            error_kind,
            attempts,
            latency: resp.as_ref().map(|r| r.latency),
            json: line.serialise(self.gates.settings.results_format),
            held,
        }
    }
}
