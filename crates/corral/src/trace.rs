//! Optional `tracing` events (the `tracing` feature). Without the feature the macro expands to
//! nothing: a program that does not log pays nothing, not even a disabled-level check.
//!
//! Targets are the modules (`corral::retry`, `corral::limit::gcra`, `corral::breaker`, ...), so
//! `RUST_LOG=corral=debug` or `RUST_LOG=corral::breaker=info` select them as usual.

/// `event!(level, fields..., "message")` → `tracing::level!(...)` when the feature is on.
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {
        #[cfg(feature = "tracing")]
        {
            tracing::$level!($($arg)+);
        }
    };
}

pub(crate) use event;

/// `in_span!(future, "name", fields...)`: the future inside an `info_span!` when the feature is
/// on (so every event it emits carries the span's fields); the future itself otherwise (the
/// span's arguments are then not even evaluated).
#[cfg(feature = "tracing")]
macro_rules! in_span {
    ($fut:expr, $($span:tt)+) => {
        tracing::Instrument::instrument($fut, tracing::info_span!($($span)+))
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! in_span {
    ($fut:expr, $($span:tt)+) => {
        $fut
    };
}

pub(crate) use in_span;
