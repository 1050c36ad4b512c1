//! HTTP for the engine: corral's lean HTTP/1.1 client for `http://` ([`direct`]), its idle
//! connections ([`pool`]), and where a redirect may take a request ([`redirect`]). reqwest carries
//! `https://` and proxied requests; which client carries a request is decided in
//! [`crate::engine`].

pub mod direct;
pub mod pool;
pub mod redirect;
