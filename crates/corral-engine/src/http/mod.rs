//! HTTP for the engine: which client carries a request ([`client`]: corral's lean HTTP/1.1
//! client for `http://`, reqwest for `https://` and proxies), the lean client ([`direct`]), its
//! idle connections ([`pool`]), where a redirect may take a request ([`redirect`]), and
//! compressed bodies decoded under the body cap ([`decode`]), and why a request failed, typed
//! where it failed ([`error`]). It knows
//! nothing of jobs: a request is its parts ([`direct::Request`]).

pub mod client;
pub mod decode;
pub mod direct;
pub mod error;
pub mod pool;
pub mod redirect;
