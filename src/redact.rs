//! The one place secret values are held and kept out of output.
//!
//! Parameter values, registry passwords and tokens travel as [`Secret`]: its `Debug` and `Display`
//! print a placeholder, so a stray `{:?}` in a log line or an error cannot leak the value. Code that
//! really needs the bytes (the env file writer, an auth header) calls [`Secret::expose`], which is
//! easy to grep for.

use std::fmt;

/// A value that must never reach a log line, an error message, `plan` or `status`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself. Every call site is a place where a secret leaves this type.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:#?}", vec![s.clone()]).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
