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
