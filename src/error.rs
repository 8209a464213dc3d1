//! The server's own error type: things that go wrong outside any one request.

use std::fmt;
use std::io;

/// An error starting or running the server.
///
/// Per-request failures are not `Error`s: they become responses (see
/// [`HttpError`](crate::HttpError)).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The listening socket could not be bound.
    Bind {
        /// The address that was asked for.
        address: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// A builder setting is out of range.
    Config(String),
    /// An I/O error while starting the server (spawning threads, for instance).
    Io(io::Error),
    /// Redis could not be reached or refused us (feature `redis`): where
    /// (the URL with its password hidden) and why.
    Redis(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bind { address, source } => write!(f, "cannot listen on {address}: {source}"),
            Error::Config(message) => write!(f, "invalid configuration: {message}"),
            Error::Io(source) => write!(f, "I/O error: {source}"),
            Error::Redis(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Io(source) => Some(source),
            Error::Config(_) | Error::Redis(_) => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(source: io::Error) -> Self {
        Error::Io(source)
    }
}
