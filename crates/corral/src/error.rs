use std::fmt;

/// A builder was given a configuration that cannot work (a limit of zero, a window shorter than
/// its cool-down, ...). Returned by every `build()` in this crate instead of panicking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    component: &'static str,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(component: &'static str, message: impl Into<String>) -> Self {
        Self {
            component,
            message: message.into(),
        }
    }

    /// The component whose builder refused the configuration (`"exec"`, `"limit"`, ...).
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// What is wrong, in words meant for the person who wrote the configuration.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} configuration: {}",
            self.component, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Turns a panic payload into the message it carried, for error reports.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
