use std::fmt;

/// A [`Builder`](crate::Builder) or [`Handle::spawn_periodic`](crate::Handle) was given a
/// configuration that cannot work (no worker threads, a zero period ...): returned instead of a
/// panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// What is wrong, in words meant for the person who wrote the configuration.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid runtime configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Turns a panic payload into the message it carried, for [`JoinError`](crate::JoinError).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match payload.downcast_ref::<&'static str>() {
        Some(s) => (*s).to_string(),
        None => payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "panic with a non-string payload".to_string()),
    }
}
