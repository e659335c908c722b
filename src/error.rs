//! The one error policy: every failure has a kind, driver errors are
//! classified once (here), and the surfaces map kinds to exit codes
//! (`cli`) and HTTP statuses (`api::problem`), one mapping each.
//!
//! Architecture Invariant: no error is classified by reading its text; a
//! server's own message stays in the chain (for logs and the CLI), never in
//! an HTTP answer.

use std::fmt;

use tokio_postgres::error::SqlState;

/// What kind of failure an error is: what the caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input (a file, a parameter, a definition) is wrong: fix it.
    BadInput,
    /// What was named does not exist.
    NotFound,
    /// It clashes with what is already there (a repeated key, a file loaded before).
    Conflict,
    /// The database cannot be used right now (down, starting, shutting
    /// down, out of connections): retry later.
    Unavailable,
    /// It ran past its time limit and was cancelled.
    Timeout,
    /// The caller may not do this (its key's scope, datasets or rows).
    Denied,
    /// Anything else: a fault of clue or of its environment (privileges,
    /// a broken catalog); the details are logged.
    Internal,
}

/// Every error type of clue says which kind it is.
pub trait Classify {
    fn kind(&self) -> ErrorKind;
}

/// The kind of a driver error, from its SQLSTATE class or the state of the
/// connection. The one place such errors are classified.
pub fn classify_pg(e: &tokio_postgres::Error) -> ErrorKind {
    let Some(db) = e.as_db_error() else {
        // No answer from a server: the connection failed or closed.
        return ErrorKind::Unavailable;
    };
    let code = db.code();
    let class = &code.code()[..2];
    if *code == SqlState::QUERY_CANCELED {
        ErrorKind::Timeout
    } else if *code == SqlState::UNIQUE_VIOLATION {
        ErrorKind::Conflict
    } else if *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::TOO_MANY_CONNECTIONS
    {
        ErrorKind::Unavailable
    } else {
        match class {
            // Connection exception; insufficient resources; system error.
            "08" | "53" | "58" => ErrorKind::Unavailable,
            // Data exception; integrity constraint violation: the data.
            "22" | "23" => ErrorKind::BadInput,
            _ => ErrorKind::Internal,
        }
    }
}

/// The server's own message when there is one (the driver's Display says
/// only "db error"); for logs and the CLI, never for HTTP clients.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            text
        }
        None => e.to_string(),
    }
}

/// A driver error with its kind and the server's message: what the modules
/// wrap when a statement fails.
#[derive(Debug)]
pub struct PgError(pub tokio_postgres::Error);

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&pg_message(&self.0))
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The driver error's own Display adds nothing ("db error").
        None
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError(e)
    }
}

impl Classify for PgError {
    fn kind(&self) -> ErrorKind {
        classify_pg(&self.0)
    }
}

/// Any error of clue, with its kind: what commands and background tasks
/// return, so the surfaces map one thing.
pub struct Error {
    kind: ErrorKind,
    inner: Box<dyn std::error::Error + Send + Sync>,
}

impl Error {
    pub fn new(kind: ErrorKind, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error {
            kind,
            inner: e.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The error and its causes, each on its own line, skipping causes the
    /// message above already quotes.
    pub fn chain(&self) -> String {
        let mut text = self.inner.to_string();
        let mut source = self.inner.source();
        while let Some(s) = source {
            let msg = s.to_string();
            // tokio-postgres wraps server errors in a bare "db error".
            if !text.contains(&msg) && msg != "db error" {
                text.push_str(&format!("\n  caused by: {msg}"));
            }
            source = s.source();
        }
        text
    }
}

impl<E> From<E> for Error
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn from(e: E) -> Error {
        Error {
            kind: e.kind(),
            inner: Box::new(e),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:?}", self.kind, self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_skip_what_the_message_quotes() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: inner failed")]
        struct Outer(#[source] std::io::Error);
        impl Classify for Outer {
            fn kind(&self) -> ErrorKind {
                ErrorKind::BadInput
            }
        }
        let e: Error = Outer(std::io::Error::other("inner failed")).into();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert_eq!(e.chain(), "outer: inner failed");
        let e: Error = Outer(std::io::Error::other("disk on fire")).into();
        assert_eq!(e.chain(), "outer: inner failed\n  caused by: disk on fire");
    }
}
