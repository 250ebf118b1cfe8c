use std::fmt;

/// Which of ECS's two validation exceptions a rule violation maps to.
///
/// ECS answers malformed parameters (a bad name, a value out of range) with
/// `InvalidParameterException` and violated task-definition semantics (a missing memory limit,
/// an unknown volume) with `ClientException`; clients and tests rely on the distinction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidKind {
    /// `InvalidParameterException`.
    Parameter,
    /// `ClientException`.
    Client,
}

/// A rule of ECS's that the input breaks; the message names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    pub kind: InvalidKind,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Invalid {
    pub fn parameter(message: impl Into<String>) -> Self {
        Invalid {
            kind: InvalidKind::Parameter,
            message: message.into(),
        }
    }

    pub fn client(message: impl Into<String>) -> Self {
        Invalid {
            kind: InvalidKind::Client,
            message: message.into(),
        }
    }
}
