//! [`BenchError`], the one error enum of the load generator's library.

use titan_client::ClientError;

/// What can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A connection or call the run cannot do without failed.
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: ClientError,
    },
    /// A token could not be obtained.
    #[error("cannot get a token for {user}: {reason}")]
    Token { user: String, reason: String },
    /// Reading process statistics or changing a limit failed.
    #[error("{what}: {reason}")]
    System { what: String, reason: String },
    /// The options do not describe a run that can happen.
    #[error("invalid options: {0}")]
    Options(String),
}

impl BenchError {
    pub(crate) fn client(what: impl Into<String>, source: ClientError) -> Self {
        Self::Client {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn system(what: impl Into<String>, reason: impl ToString) -> Self {
        Self::System {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
