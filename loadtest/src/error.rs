//! The one error every request to the node can end in, whichever way it travels (pooled HTTP in
//! `conn`, GraphQL decoding in `api`, subscriptions in `ws`). Its own module so those transports
//! and the driver can share it without importing each other.

/// Why a request did not succeed. `code()` is what the report counts errors by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// The server answered with `errors[0].extensions.code`.
    Graphql { code: String, message: String },
    /// No answer: connection refused or reset, timeout.
    Transport(String),
    /// An answer that is not the GraphQL shape we asked for.
    Protocol(String),
}

impl ApiError {
    pub fn code(&self) -> String {
        match self {
            Self::Graphql { code, .. } => code.clone(),
            Self::Transport(_) => "TRANSPORT".into(),
            Self::Protocol(_) => "PROTOCOL".into(),
        }
    }

    /// Worth retrying once the node is back: the request may not have reached it.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Graphql { code, .. } => code == "UNAVAILABLE",
            Self::Protocol(_) => false,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Graphql { code, message } => write!(f, "{code}: {message}"),
            Self::Transport(m) => write!(f, "transport: {m}"),
            Self::Protocol(m) => write!(f, "protocol: {m}"),
        }
    }
}

impl std::error::Error for ApiError {}
