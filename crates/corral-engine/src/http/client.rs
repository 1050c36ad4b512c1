//! Which client carries a request, decided here and nowhere else: corral's lean HTTP/1.1
//! client ([`super::direct`]) for `http://`, and for `https://` hosts that do not choose
//! HTTP/2, when no proxy is configured; reqwest (rustls, HTTP/2, proxies, h2c) for everything
//! else. Neither follows redirects: a 3xx comes back to the
//! engine, which follows it by [`super::redirect`]'s rule through the gates of the next host. Both answer the same way: a status, headers and a [`Body`], or an
//! [`HttpError`] that says its kind and whether the request may have gone out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use super::direct::{Direct, DirectError, Lease, Request};
use super::error::{chain, find, refuses_certificate, Cause, DnsError, Resolver};
use crate::error::{ConfigError, StartError};
use crate::settings::{ProxySettings, TlsSettings};

/// How the clients are built.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The `User-Agent` of requests that set none.
    pub user_agent: String,
    /// How long a TCP (and TLS) connect may take.
    pub connect_timeout: Duration,
    /// Idle connections kept per host.
    pub idle_per_host: usize,
    /// Idle connections kept in all (the lean client's; see [`super::pool`]).
    pub idle_total: usize,
    /// Other connect timeouts some requests ask for (hosts' `connect_timeout_ms`): reqwest
    /// sets it per client, so there is one client for each.
    pub other_connect_timeouts: Vec<Duration>,
    /// Trusted roots and the client certificate.
    pub tls: TlsSettings,
    /// `--insecure`: any server certificate is accepted.
    pub insecure: bool,
    /// `--proxy`, `--no-proxy`.
    pub proxy: ProxySettings,
    /// `--http2-prior-knowledge`: reqwest speaks h2 at once, also to `http://` (the lean
    /// client, HTTP/1.1 only, is not used).
    pub http2_prior_knowledge: bool,
}

/// The proxy environment variables curl and reqwest read, in their order of precedence, each
/// with the scheme it covers (`None`: every scheme).
const PROXY_ENV: [([&str; 2], Option<&str>); 3] = [
    (["HTTPS_PROXY", "https_proxy"], Some("https")),
    (["HTTP_PROXY", "http_proxy"], Some("http")),
    (["ALL_PROXY", "all_proxy"], None),
];

/// The environment's proxies that are set (an empty value is unset, as for curl): the
/// variable's name, the scheme it covers, its value.
fn env_proxies() -> impl Iterator<Item = (&'static str, Option<&'static str>, String)> {
    PROXY_ENV.into_iter().filter_map(|(names, scheme)| {
        names.iter().find_map(|n| {
            std::env::var(n)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*n, scheme, v))
        })
    })
}

/// reqwest's proxy settings from `options` and the environment, each failure naming its
/// option or variable: a malformed `HTTPS_PROXY` is refused at start, as a bad `--proxy` is
/// (reqwest's own reading of the environment skips it, and requests went direct).
fn proxied(
    mut b: reqwest::ClientBuilder,
    options: &ClientOptions,
) -> Result<reqwest::ClientBuilder, ConfigError> {
    let no_proxy = match options.proxy.no_proxy.as_deref() {
        Some(list) => reqwest::NoProxy::from_string(list),
        None => reqwest::NoProxy::from_env(),
    };
    let proxy = |p: reqwest::Result<reqwest::Proxy>, option| {
        p.map(|p| p.no_proxy(no_proxy.clone()))
            .map_err(|e| ConfigError::new(option, crate::redact::text(&chain(&e))))
    };
    if let Some(url) = &options.proxy.url {
        return Ok(b.proxy(proxy(reqwest::Proxy::all(url.as_str()), "--proxy")?));
    }
    for (name, scheme, url) in env_proxies() {
        // reqwest takes any string it can make a URL of; a proxy needs a host. The value is
        // not repeated: a malformed one may hold a password the redaction cannot find.
        let with_scheme = if url.contains("://") {
            url.clone()
        } else {
            format!("http://{url}") // `host:port`, as curl takes it
        };
        let has_host = reqwest::Url::parse(&with_scheme)
            .is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()));
        if !has_host {
            return Err(ConfigError::new(
                name,
                "not a proxy URL (scheme://[user:password@]host:port); unset it or mend it",
            ));
        }
        let made = match scheme {
            Some("https") => reqwest::Proxy::https(url.as_str()),
            Some(_) => reqwest::Proxy::http(url.as_str()),
            None => reqwest::Proxy::all(url.as_str()),
        };
        b = b.proxy(proxy(made, name)?);
    }
    Ok(b)
}

/// Whether the environment sends requests of `scheme` through a proxy: then reqwest, which
/// honours it, carries them rather than the lean client.
fn env_proxy_for(scheme: &str) -> bool {
    env_proxies().any(|(_, covers, _)| covers.is_none_or(|c| c == scheme))
}

/// A request's way out: the lean client and reqwest, for one worker thread (a connection is
/// driven only from the thread that made it).
pub struct Clients {
    /// reqwest, with its connect timeout; the first is the default.
    reqwest: Vec<(Duration, reqwest::Client)>,
    /// `None` when `--proxy` is given: reqwest, which honours it, carries `http://` too.
    direct: Option<Direct>,
    /// The environment sends `http://` (`.0`) or `https://` (`.1`) requests through a proxy:
    /// reqwest carries them.
    env_proxy: (bool, bool),
}

/// Why a request got no response (or not a whole one).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HttpError {
    /// What failed, typed where it failed (its [`Cause::kind`] is the result's).
    pub cause: Cause,
    /// In words (not yet redacted: the engine redacts every message it writes).
    pub message: String,
    /// The request may have reached the server: it started to go out.
    pub sent: bool,
    /// A reused connection closed as the (idempotent) request went out, unanswered: it may go
    /// once more at once on a new connection (`fresh`), after the request's gates.
    pub resend: bool,
}

/// A response head and the body still to read.
pub struct Exchange<'a> {
    /// The status.
    pub status: u16,
    /// The headers (the lean client fills them only for statuses that may need them, or when
    /// asked).
    pub headers: HeaderMap,
    /// The body, to read with [`Body::chunk`].
    pub body: Body<'a>,
    /// The body is a stream of server-sent events (`Content-Type: text/event-stream`).
    pub event_stream: bool,
}

/// A response body being read, from either client.
pub enum Body<'a> {
    /// reqwest's.
    Reqwest(reqwest::Response),
    /// The lean client's, with its connection.
    Direct(Lease<'a>),
}

impl Body<'_> {
    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        match self {
            Body::Reqwest(r) => r.chunk().await.map_err(|e| HttpError {
                cause: reqwest_cause(&e),
                message: chain(&e),
                sent: true,
                resend: false,
            }),
            Body::Direct(lease) => lease.next_chunk().await.map_err(|m| HttpError {
                cause: Cause::Body,
                message: format!("error reading the body: {m}"),
                sent: true,
                resend: false,
            }),
        }
    }

    /// True when the body must be read to its end for its connection to be reused.
    pub fn drains(&self) -> bool {
        matches!(self, Body::Direct(..))
    }

    /// A lean connection whose response was read to its end (`complete`) goes back to the
    /// pool; any other is closed.
    pub fn finish(self, complete: bool) {
        if let (Body::Direct(lease), true) = (self, complete) {
            lease.release();
        }
    }
}

impl Clients {
    /// Both clients, as `options` say.
    pub fn new(options: &ClientOptions) -> Result<Self, StartError> {
        // One TLS configuration for both clients (see `direct::tls`).
        let tls = super::direct::tls::client_config(&options.tls, options.insecure)?;
        let build = |connect: Duration| {
            let b = reqwest::Client::builder()
                .user_agent(options.user_agent.clone())
                .connect_timeout(connect)
                .pool_max_idle_per_host(options.idle_per_host)
                .tcp_nodelay(true)
                // corral follows redirects itself (`redirect`): secrets stay with their origin.
                .redirect(reqwest::redirect::Policy::none())
                .referer(false)
                // Names resolved as the lean client resolves them, their failures typed.
                .dns_resolver(Arc::new(Resolver));
            let b = if options.http2_prior_knowledge {
                b.http2_prior_knowledge()
            } else {
                b
            };
            proxied(b.use_preconfigured_tls(tls.clone()), options)?
                .build()
                .map(|c| (connect, c))
                .map_err(|e| StartError::Client(chain(&e)))
        };
        let mut timeouts = vec![options.connect_timeout];
        for t in &options.other_connect_timeouts {
            if !timeouts.contains(t) {
                timeouts.push(*t);
            }
        }
        let reqwest = timeouts
            .into_iter()
            .map(build)
            .collect::<Result<Vec<_>, _>>()?;
        // A proxy carries `http://` too: reqwest then sends everything.
        let direct = if options.proxy.url.is_some() || options.http2_prior_knowledge {
            None
        } else {
            Some(Direct::new(
                options.idle_per_host,
                options.idle_total,
                options.connect_timeout,
                &options.user_agent,
                super::direct::tls::connector(Arc::new(tls.clone())),
            ))
        };
        let env_proxy = (env_proxy_for("http"), env_proxy_for("https"));
        Ok(Self {
            reqwest,
            direct,
            env_proxy,
        })
    }

    /// Sends `req` to the host keyed `key` and reads the response head. `want_headers`: the
    /// lean client builds the header map even for a 2xx/3xx. `sending` is set once the request
    /// starts to go out. `fresh`: on a new connection (after an error with `resend`).
    pub async fn send(
        &self,
        req: Request<'_>,
        key: &Arc<str>,
        want_headers: bool,
        sending: &AtomicBool,
        fresh: bool,
    ) -> Result<Exchange<'_>, HttpError> {
        // The lean client: plain HTTP, and HTTPS to hosts that do not speak HTTP/2 with
        // requests small enough to go in one write (a larger body is sent by reqwest, which
        // listens for an early answer while it sends).
        let lean = match (&self.direct, req.url.scheme()) {
            (Some(d), "http") if !self.env_proxy.0 => Some(d),
            (Some(d), "https")
                if !self.env_proxy.1
                    && req.body.map_or(0, |b| b.len()) <= super::direct::WATCH_ABOVE
                    && !d.speaks_h2(key) =>
            {
                Some(d)
            }
            _ => None,
        };
        if let Some(direct) = lean {
            match direct.send(req, key, want_headers, sending, fresh).await {
                Ok((head, lease)) => {
                    return Ok(Exchange {
                        status: head.status,
                        headers: head.headers,
                        body: Body::Direct(lease),
                        event_stream: head.event_stream,
                    })
                }
                // The server chose HTTP/2: nothing was sent; reqwest carries it.
                Err(DirectError::H2) => {}
                Err(e) => {
                    let resend = matches!(e, DirectError::Unanswered(_));
                    let (cause, sent, message) = match e {
                        DirectError::FdLimit(m) => (Cause::FdLimit, false, m),
                        DirectError::Dns(e) => (
                            Cause::Dns {
                                temporary: e.temporary,
                            },
                            false,
                            e.to_string(),
                        ),
                        DirectError::Connect(m) => (Cause::Connect, false, m),
                        DirectError::Tls(m) => (Cause::Tls, false, m),
                        DirectError::H2 => (Cause::Connect, false, String::new()),
                        DirectError::Connection(m) | DirectError::Unanswered(m) => {
                            (Cause::Connection, true, m)
                        }
                    };
                    return Err(HttpError {
                        cause,
                        message,
                        sent,
                        resend,
                    });
                }
            }
        }
        sending.store(true, Ordering::Relaxed);
        let resp = self.send_reqwest(req).await?;
        let event_stream = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| super::direct::head::is_event_stream(v.as_bytes()));
        Ok(Exchange {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: Body::Reqwest(resp),
            event_stream,
        })
    }

    /// Sends `req` through reqwest (a redirect comes back as a 3xx: the engine follows it).
    async fn send_reqwest(&self, req: Request<'_>) -> Result<reqwest::Response, HttpError> {
        // The client with the request's connect timeout (there is one for each asked for).
        let client = self
            .reqwest
            .iter()
            .find(|(t, _)| Some(*t) == req.connect_timeout)
            .or(self.reqwest.first())
            .map(|(_, c)| c)
            .ok_or_else(|| HttpError {
                cause: Cause::Request,
                message: "no HTTP client".into(),
                sent: false,
                resend: false,
            })?;
        let mut r = client
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(b) = req.body {
            r = r.body(b.clone());
        }
        r.send().await.map_err(|e| HttpError {
            cause: reqwest_cause(&e),
            message: super::error::with_advice(chain(&e), &e),
            sent: !e.is_connect() && !e.is_builder(),
            resend: false,
        })
    }
}

/// What a reqwest failure was, by its own flags and the types in its source chain: a request
/// that could not be built and a certificate refused are permanent; a name that did not
/// resolve says whether the resolver could answer ([`Resolver`](crate::http::error)).
fn reqwest_cause(e: &reqwest::Error) -> Cause {
    if e.is_builder() {
        Cause::Request
    } else if e.is_timeout() {
        Cause::Timeout
    } else if let Some(dns) = find::<DnsError>(e) {
        Cause::Dns {
            temporary: dns.temporary,
        }
    } else if refuses_certificate(e) {
        Cause::Tls
    } else if e.is_connect() {
        Cause::Connect
    } else if e.is_body() || e.is_decode() {
        Cause::Body
    } else {
        // Reset or closed connections, protocol errors: reqwest reports these as request errors.
        Cause::Connection
    }
}
