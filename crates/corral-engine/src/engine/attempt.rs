//! One hop of a job: its retry loop (the policy of its host), each attempt through the gates
//! and out, what the attempt's outcome tells the host (breaker, `auto` rate, pauses, cost), and
//! the retry decision — a plain function of the error and the rules ([`decide`]), tested alone.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use corral::retry::{Decision, GiveUp, RetryError};
use tokio::sync::OwnedSemaphorePermit;

use super::body::{Claimed, Response};
use super::gates::Active;
use super::trace::Trace;
use super::Engine;
use crate::error::ErrorKind;
use crate::hosts::adaptive::{self, Signal};
use crate::hosts::Host;
use crate::http::client::{Exchange, HttpError};
use crate::http::direct::Request;
use crate::http::error::Cause;
use crate::job::Job;
use crate::result::RESULT_BYTES;
use crate::settings::{BodyMode, ForHost};

/// How often a job whose retries ran out on a suspected host looks whether its breaker
/// opened or the host answered (nothing announces the breaker's opening to it).
const SUSPECT_POLL: Duration = Duration::from_millis(50);

impl From<HttpError> for AttemptError {
    fn from(e: HttpError) -> Self {
        AttemptError::Transport {
            cause: e.cause,
            message: e.message,
            sent: e.sent,
            resend: e.resend,
        }
    }
}

/// Why an attempt did not produce a final response.
pub(super) enum AttemptError {
    /// A response whose status is retryable (429, 5xx ...).
    Status(Response, Option<Duration>),
    /// An accepted response whose body failed a content check, and which check (never
    /// quoting the body).
    Invalid(Response, String),
    /// A transport failure.
    Transport {
        /// What failed, typed where it failed.
        cause: Cause,
        message: String,
        /// The request may have reached the server (it started to go out).
        sent: bool,
        /// It may go once more at once on a new connection (see [`HttpError::resend`]).
        resend: bool,
    },
    /// The host's breaker is open.
    BreakerOpen(String),
    /// The run stopped taking jobs (Ctrl-C) before this job's first request started.
    NotStarted,
}

/// How a job ended without a response to record: it failed, or it never started (the run
/// stopped taking jobs first; it gets no result, so `--resume` runs it).
pub(super) enum Ended {
    Failed(Box<Failure>),
    NotStarted,
}

/// A job that failed: why, in words, and the last response when the failure is its status.
pub(super) struct Failure {
    pub(super) kind: ErrorKind,
    pub(super) message: String,
    pub(super) response: Option<Response>,
}

/// A status by which a server says it has too much (429, 503): its `Retry-After` pauses the
/// host, and an `auto` rate is cut.
fn pushes_back(status: u16) -> bool {
    status == 429 || status == 503
}

/// What decides whether a failed attempt goes again: its host's rules and its request's kind.
pub(super) struct RetryRules<'a> {
    /// Statuses (and invalid responses) retried (`--retry-on`, or the host's `retry_on`).
    pub(super) retry_on: &'a crate::settings::RetryOn,
    /// The longest `Retry-After` honoured (`--max-retry-after-s`).
    pub(super) max_retry_after: Duration,
    /// The request must not go twice once it may have reached the server (a POST or PATCH
    /// without an `Idempotency-Key`, unless `--retry-unsafe`).
    pub(super) unsafe_to_repeat: bool,
}

/// The decision on a failed attempt, and whether a retry was held back because the request
/// may have reached the server and must not be repeated (its result says why).
pub(super) fn decide(e: &AttemptError, rules: &RetryRules<'_>) -> (Decision, bool) {
    let d = match e {
        AttemptError::BreakerOpen(_) | AttemptError::NotStarted => Decision::Stop,
        AttemptError::Transport { cause, .. } => transport_decision(*cause),
        AttemptError::Status(resp, ra) if rules.retry_on.status(resp.status) => match ra {
            Some(d) => Decision::RetryAfter((*d).min(rules.max_retry_after)),
            None => Decision::Retry,
        },
        AttemptError::Status(..) => Decision::Stop,
        AttemptError::Invalid(..) if rules.retry_on.invalid_response() => Decision::Retry,
        AttemptError::Invalid(..) => Decision::Stop,
    };
    let reached = match e {
        AttemptError::Transport { sent, .. } => *sent,
        AttemptError::Status(..) | AttemptError::Invalid(..) => true,
        _ => false,
    };
    if rules.unsafe_to_repeat && reached && !matches!(d, Decision::Stop) {
        return (Decision::Stop, true);
    }
    (d, false)
}

/// Whether a transport failure is worth another attempt: not when the same request will fail
/// the same way (a name that does not exist, a certificate refused, a request that cannot be
/// built); a resolver that could not answer (`EAI_AGAIN`), a refused connection or a reset may
/// do better next time.
fn transport_decision(cause: Cause) -> Decision {
    if cause.is_permanent() {
        Decision::Stop
    } else {
        Decision::Retry
    }
}

impl Engine {
    /// A pause a server asked for, at most `--max-retry-after-s`; `counted`: a pause that
    /// happens (not a reset merely read), whose cut the summary notes.
    fn cut_pause(&self, asked: Duration, counted: bool) -> Duration {
        let max = self.gates.settings.max_retry_after;
        if asked > max && counted {
            self.gates.cut.pauses.fetch_add(1, Ordering::Relaxed);
        }
        asked.min(max)
    }

    /// What a job is settled at when its response says what it cost: the claim, at most what
    /// the tightest cost rate in force holds in one period — one response
    /// claiming 1e12 tokens must not hold a run for years — and never less than the job's
    /// own `cost`, which it took already. A claim that is not a number leaves the job's cost.
    fn settled_cost(
        &self,
        claimed: Option<Claimed>,
        cost: u64,
        host_rate: Option<corral::limit::Rate>,
    ) -> u64 {
        match claimed {
            None => cost,
            Some(Claimed::Unreadable) => {
                self.gates.cut.unread_costs.fetch_add(1, Ordering::Relaxed);
                cost
            }
            Some(Claimed::Cost(c)) => {
                let bucket = [self.gates.settings.cost_rate, host_rate]
                    .into_iter()
                    .flatten()
                    .map(|r| r.count())
                    .min();
                match bucket.map(|b| b.max(cost)) {
                    Some(most) if c > most => {
                        self.gates.cut.costs.fetch_add(1, Ordering::Relaxed);
                        most
                    }
                    _ => c,
                }
            }
        }
    }

    /// One request of a job (its first, or a redirect's), retried by its host's policy.
    pub(super) async fn run_hop(
        &self,
        job: &Job,
        trace: &Trace,
        active: &Active,
    ) -> Result<Response, Ended> {
        let host: Host = job.host_key().into();
        // A result's attempts are its tries over all hops: a redirect's first request is not
        // a try of its own (`attempts - 1` is the job's retries).
        let before = match trace.redirects.load(Ordering::Relaxed) {
            0 => 0,
            _ => trace.attempts.load(Ordering::Relaxed).saturating_sub(1),
        };
        // The host's settings (its `[hosts]` rule over the run's), found once for the job.
        let view = self.gates.settings.for_host(&host);
        let policy = view
            .index
            .and_then(|i| self.gates.rule_policies.get(i))
            .unwrap_or(&self.gates.policy);
        let rules = RetryRules {
            retry_on: view.retry_on(),
            max_retry_after: self.gates.settings.max_retry_after,
            // Sent again only when it cannot have reached the server.
            unsafe_to_repeat: self.unsafe_to_repeat(job),
        };
        let held_back = AtomicBool::new(false);
        let r = policy
            .retry(
                |n| {
                    trace.attempts.store(before + n, Ordering::Relaxed);
                    self.attempt(job, (&host, &view), n <= 1, active, trace)
                },
                |e: &AttemptError| {
                    let (d, held) = decide(e, &rules);
                    if held {
                        held_back.store(true, Ordering::Relaxed);
                    }
                    d
                },
            )
            .await;
        let r = self
            .after_the_outage(job, (&host, &view), r, active, trace)
            .await;
        match r {
            Ok(resp) => Ok(resp),
            Err(e) => {
                let why = match e.reason {
                    GiveUp::Permanent if held_back.load(Ordering::Relaxed) => format!(
                        " (not retried: a {} may have reached the server, and sending it again \
                         could repeat its effect; give the job an Idempotency-Key header or pass \
                         --retry-unsafe)",
                        job.method
                    ),
                    GiveUp::Permanent => String::new(),
                    other => format!(" ({other} after {} attempt(s))", e.attempts),
                };
                let failed = |kind, message, response| {
                    Ended::Failed(Box::new(Failure {
                        kind,
                        message,
                        response,
                    }))
                };
                Err(match e.error {
                    AttemptError::Status(resp, _) => failed(
                        ErrorKind::HttpStatus,
                        format!("HTTP {}{why}", resp.status),
                        Some(resp),
                    ),
                    AttemptError::Invalid(resp, what) => failed(
                        ErrorKind::InvalidResponse,
                        format!("{what}{why}"),
                        Some(resp),
                    ),
                    AttemptError::Transport { cause, message, .. } => {
                        failed(cause.kind(), format!("{message}{why}"), None)
                    }
                    AttemptError::BreakerOpen(m) => failed(ErrorKind::CircuitOpen, m, None),
                    AttemptError::NotStarted => Ended::NotStarted,
                })
            }
        }
    }

    async fn attempt(
        &self,
        job: &Job,
        (host, view): (&Host, &ForHost<'_>),
        first: bool,
        active: &Active,
        trace: &Trace,
    ) -> Result<Response, AttemptError> {
        let key = host;
        // The host's whole state, looked up once for the attempt.
        let state = self
            .gates
            .hosts
            .entry(key)
            .map_err(|e| AttemptError::Transport {
                cause: Cause::Request,
                message: e.to_string(),
                sent: false,
                resend: false,
            })?;
        // After Ctrl-C, jobs that have not sent a request yet do not start: only requests
        // already under way are drained. (Retries of a started job go on, within the drain
        // deadline.)
        // (A redirect's first attempt is not a job's first: it has sent already.)
        if first && self.stop.is_cancelled() && !trace.maybe_sent.load(Ordering::Relaxed) {
            return Err(AttemptError::NotStarted);
        }
        let (_slot, permit, trying) = self
            .pass_gates(
                &*state,
                (host, job.cost, view.breaker()),
                first,
                active,
                trace,
            )
            .await?;
        if !first {
            trace.forgive();
        }
        // A request that may not be repeated is journaled before it goes: a resume after a
        // crash then says it may have been sent instead of sending it again.
        if first && self.unsafe_to_repeat(job) {
            if let Some(intents) = self.gates.intents.get() {
                intents
                    .record(job.line)
                    .await
                    .map_err(|e| AttemptError::Transport {
                        cause: Cause::Request,
                        message: format!(
                            "cannot journal the request before it goes ({}): {e}",
                            intents.file().display()
                        ),
                        sent: false,
                        resend: false,
                    })?;
            }
        }
        state.attempted();
        if let Some(c) = &self.gates.caps {
            c.request();
        }
        let limit = job.timeout.unwrap_or(view.timeout());
        let started = Instant::now();
        let sending = AtomicBool::new(false);
        trace.head.store(0, Ordering::Relaxed);
        // A body to be saved has its room reserved before the request (and its timeout)
        // starts: jobs wait for memory here, never half-way through a body.
        let mut held = match self.gates.settings.body() {
            BodyMode::Save => {
                let room = (self.gates.settings.max_body as usize)
                    .saturating_add(4096)
                    .min(RESULT_BYTES);
                let room = u32::try_from(room).unwrap_or(u32::MAX);
                self.gates
                    .result_bytes
                    .clone()
                    .acquire_many_owned(room)
                    .await
                    .ok()
            }
            _ => None,
        };
        let send = async {
            let mut fresh = false;
            loop {
                let r = self
                    .send(
                        job,
                        (key, view),
                        (started, &sending),
                        &trace.head,
                        &mut held,
                        fresh,
                    )
                    .await;
                match r {
                    // A reused connection closed under an idempotent request, unanswered: it
                    // goes once more on a new connection. Not a retry, but a request that
                    // leaves the process: it passes the rate gates again.
                    Err(AttemptError::Transport { resend: true, .. }) if !fresh => {
                        fresh = true;
                        if !state.try_rate() {
                            state.rate().await;
                        }
                        if let Some(g) = &self.gates.global_rate {
                            g.until_ready().await;
                        }
                        state.attempted();
                        if let Some(c) = &self.gates.caps {
                            c.request();
                        }
                    }
                    r => return r,
                }
            }
        };
        let out = match tokio::time::timeout(limit, send).await {
            Ok(r) => r,
            Err(_) => Err(AttemptError::Transport {
                cause: Cause::Timeout,
                message: format!("no complete response within {limit:?}"),
                sent: sending.load(Ordering::Relaxed),
                resend: false,
            }),
        };
        if sending.load(Ordering::Relaxed) {
            trace.maybe_sent.store(true, Ordering::Relaxed);
        }
        // What the job really cost, when the response says so: the difference is settled.
        let spent = match &out {
            Ok(r) => self.settled_cost(r.cost, job.cost, view.cost_rate().map(|(r, _)| r)),
            _ => job.cost,
        };
        let delta =
            i64::try_from(spent).unwrap_or(i64::MAX) - i64::try_from(job.cost).unwrap_or(i64::MAX);
        // Costs are counted only where they are limited or measured.
        if self.gates.costs_counted {
            state.settle_cost(delta, spent);
            trace.cost.fetch_add(spent, Ordering::Relaxed);
            if let Some(c) = &self.gates.caps {
                c.spend(spent);
            }
        }
        if let (Some(g), true) = (&self.gates.global_cost, delta != 0) {
            g.settle(delta);
        }
        let healthy = match &out {
            Ok(_) => true,
            Err(AttemptError::Status(r, _)) => r.status < 500,
            // The host answered; what it said is the job's problem, not its health.
            Err(AttemptError::Invalid(..)) => true,
            Err(_) => false,
        };
        // A certificate refused says nothing of the host's health: a setting to fix, and
        // counting it would open the breaker and hold every job for --breaker-max-hold-s.
        let tls = matches!(
            &out,
            Err(AttemptError::Transport {
                cause: Cause::Tls,
                ..
            })
        );
        if tls {
            drop(permit);
        } else {
            trace.breaker_outcome(permit, healthy, first && view.retries() > 0);
        }
        // The host's early signal: any success ends its suspicion; a first attempt's failure
        // that a retry may follow starts it (and the job is in trouble until it ends).
        if let Some(suspect) = state.suspect() {
            if healthy {
                suspect.succeeded();
            } else if first && !tls && view.retries() > 0 {
                let failing = suspect.first_failed();
                *trace.in_trouble.lock().unwrap_or_else(|p| p.into_inner()) = Some(failing);
            }
        }
        drop(trying);
        if self.gates.adaptive {
            let (signal, headers) = match &out {
                Ok(r) => (Signal::Ok, Some(&r.headers)),
                Err(AttemptError::Status(r, _)) if pushes_back(r.status) => {
                    (Signal::Overloaded, Some(&r.headers))
                }
                Err(AttemptError::Status(r, _)) => (Signal::Neutral, Some(&r.headers)),
                Err(AttemptError::Transport {
                    cause: Cause::Connect,
                    ..
                }) => (Signal::Overloaded, None),
                Err(_) => (Signal::Neutral, None),
            };
            // An allowance's reset is a pause a server asks for: cut as a Retry-After is.
            let allowance = headers.and_then(adaptive::allowance).map(|(left, reset)| {
                (
                    left,
                    self.cut_pause(reset, adaptive::pauses(Some((left, reset)))),
                )
            });
            if adaptive::pauses(allowance) {
                trace.pauses.fetch_add(1, Ordering::Relaxed);
            }
            state.observe(signal, allowance);
        }
        if let Err(AttemptError::Status(r, Some(ra))) = &out {
            if pushes_back(r.status) {
                let until = tokio::time::Instant::now() + self.cut_pause(*ra, true);
                trace.pauses.fetch_add(1, Ordering::Relaxed);
                state.pause_until(until);
            }
        }
        out
    }

    /// A request that may not be sent twice: not idempotent (POST, PATCH), unless the job
    /// makes a repeat harmless (`Idempotency-Key`) or the user says so (`--retry-unsafe`).
    /// Such a request is retried only when it cannot have reached the server, and journaled
    /// before it goes (see [`crate::intents`]).
    fn unsafe_to_repeat(&self, job: &Job) -> bool {
        !job.method.is_idempotent()
            && !self.gates.settings.retry_unsafe
            && !job.headers.contains_key("idempotency-key")
    }

    /// A job whose retries (one or more) ran out as its host's breaker opened (or while its
    /// host is suspected down, see `hosts::suspect`) failed by the
    /// outage the breaker now handles: it is held with the host's other jobs and tried once more when
    /// the host is back (within `--breaker-max-hold-s`), rather than failed with the others
    /// left to succeed.
    async fn after_the_outage(
        &self,
        job: &Job,
        (host, view): (&Host, &ForHost<'_>),
        mut r: Result<Response, RetryError<AttemptError>>,
        active: &Active,
        trace: &Trace,
    ) -> Result<Response, RetryError<AttemptError>> {
        // Only for a job that had retries to run out: with `--retries 0` nothing is sent twice.
        let breaker = view.breaker().filter(|b| !b.fail_fast);
        let holds = view.retries() > 0 && breaker.is_some();
        // How long a job may wait for a suspected host's breaker to open (its hold's bound).
        let deadline = tokio::time::Instant::now() + breaker.map_or(Duration::ZERO, |b| b.max_hold);
        loop {
            let attempts = match &r {
                Err(e) if holds && e.reason == GiveUp::MaxAttempts => e.attempts,
                _ => return r,
            };
            let Ok(state) = self.gates.hosts.entry(host) else {
                return r;
            };
            // Open now? (A permit taken to ask is dropped unsettled: it counts as nothing.)
            let mut open = state.admit().is_err();
            // Not yet, but the host is suspected down (see `hosts::suspect`): its few jobs in
            // trouble may run out of retries before their failures open the breaker. Such a
            // job waits for the breaker to open or the host to answer, then goes once more.
            // (Only while another job may still fail: alone, its failures never open it.)
            if let Some(suspect) = state.suspect().filter(|s| !open && s.suspected()) {
                let waiting = suspect.wait_for_breaker();
                if suspect.others_active() {
                    active.release();
                    while suspect.suspected()
                        && suspect.others_active()
                        && state.admit().is_ok()
                        && tokio::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(SUSPECT_POLL).await;
                    }
                    active.reacquire().await;
                    // Opened, or the host answered someone: once more. Otherwise it fails.
                    open = !suspect.suspected() || state.admit().is_err();
                }
                drop(waiting);
            }
            if !open {
                return r;
            }
            match self.attempt(job, (host, view), false, active, trace).await {
                Ok(resp) => {
                    trace.attempts.store(attempts + 1, Ordering::Relaxed);
                    return Ok(resp);
                }
                // Held as long as it may be: it fails as the breaker says.
                Err(error @ AttemptError::BreakerOpen(_)) => {
                    return Err(RetryError {
                        error,
                        attempts,
                        reason: GiveUp::MaxAttempts,
                    })
                }
                Err(error) => {
                    trace.attempts.store(attempts + 1, Ordering::Relaxed);
                    r = Err(RetryError {
                        error,
                        attempts: attempts + 1,
                        reason: GiveUp::MaxAttempts,
                    });
                }
            }
        }
    }

    async fn send(
        &self,
        job: &Job,
        (host, view): (&Host, &ForHost<'_>),
        // When the attempt started, and the flag set once its request starts to go out.
        (started, sending): (Instant, &AtomicBool),
        head: &AtomicU16,
        held: &mut Option<OwnedSemaphorePermit>,
        fresh: bool,
    ) -> Result<Response, AttemptError> {
        let mut headers = view.request_headers(host, &job.headers);
        if self.gates.settings.compressed && !headers.contains_key(http::header::ACCEPT_ENCODING) {
            headers.to_mut().insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_static(crate::http::decode::ACCEPT),
            );
        }
        let req = Request {
            method: &job.method,
            url: &job.url,
            headers: &headers,
            body: job.body.as_ref(),
            connect_timeout: view.index.map(|_| view.connect_timeout()),
        };
        // An `auto` rate reads the servers' RateLimit headers, `--compressed` Content-Encoding.
        let want_headers = self.gates.settings.save_headers
            || self.gates.adaptive
            || self.gates.settings.compressed;
        let Exchange {
            status,
            headers,
            body,
            event_stream,
        } = self
            .clients
            .send(req, host, want_headers, sending, fresh)
            .await
            .map_err(AttemptError::from)?;
        head.store(status, Ordering::Relaxed);
        self.read_body(
            (job, view),
            (status, headers, event_stream),
            body,
            started,
            held,
        )
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn status(code: u16, retry_after: Option<Duration>) -> AttemptError {
        AttemptError::Status(
            Response {
                status: code,
                headers: http::HeaderMap::new(),
                body_bytes: 0,
                body: None,
                body_file: None,
                truncated: false,
                latency: Duration::ZERO,
                held: None,
                cost: None,
                ttfb: Duration::ZERO,
                extras: None,
            },
            retry_after,
        )
    }

    fn transport(cause: Cause, sent: bool) -> AttemptError {
        AttemptError::Transport {
            cause,
            message: String::new(),
            sent,
            resend: false,
        }
    }

    #[test]
    fn the_retry_decision_follows_the_rules_and_never_repeats_what_may_not_be() {
        let retry_on: crate::settings::RetryOn = "429,503".parse().unwrap();
        let rules = RetryRules {
            retry_on: &retry_on,
            max_retry_after: Duration::from_secs(60),
            unsafe_to_repeat: false,
        };
        let d = |e: &AttemptError| decide(e, &rules);
        assert_eq!(d(&status(503, None)), (Decision::Retry, false));
        assert_eq!(d(&status(404, None)), (Decision::Stop, false));
        // Retry-After is honoured up to the cap.
        let ra = |s| status(429, Some(Duration::from_secs(s)));
        assert_eq!(
            d(&ra(5)),
            (Decision::RetryAfter(Duration::from_secs(5)), false)
        );
        assert_eq!(
            d(&ra(600)),
            (Decision::RetryAfter(Duration::from_secs(60)), false)
        );
        // Transport failures: retried unless the same request will fail the same way.
        assert_eq!(
            d(&transport(Cause::Connect, false)),
            (Decision::Retry, false)
        );
        assert_eq!(
            d(&transport(Cause::Dns { temporary: true }, false)),
            (Decision::Retry, false)
        );
        assert_eq!(
            d(&transport(Cause::Dns { temporary: false }, false)),
            (Decision::Stop, false)
        );
        assert_eq!(d(&transport(Cause::Tls, false)), (Decision::Stop, false));
        assert_eq!(d(&AttemptError::NotStarted), (Decision::Stop, false));
        assert_eq!(
            d(&AttemptError::BreakerOpen(String::new())),
            (Decision::Stop, false)
        );
        // A POST that may have reached the server is not sent again; one that cannot have
        // (refused before a byte went out) is.
        let post = RetryRules {
            unsafe_to_repeat: true,
            ..rules
        };
        let p = |e: &AttemptError| decide(e, &post);
        assert_eq!(p(&status(503, None)), (Decision::Stop, true));
        assert_eq!(
            p(&transport(Cause::Connection, true)),
            (Decision::Stop, true)
        );
        assert_eq!(
            p(&transport(Cause::Connect, false)),
            (Decision::Retry, false)
        );
        assert_eq!(p(&status(404, None)), (Decision::Stop, false));
    }
}
