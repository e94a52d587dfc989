//! The store's error type.

/// What went wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database unavailable: {0} (check that PostgreSQL is running and the URL is right)")]
    Unavailable(String),
    #[error("database error: {}", pg_error_text(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "the outcome of a commit is unknown: the connection broke during COMMIT and the transaction's status could not be read ({0})"
    )]
    UnknownOutcome(String),
    #[error("migration {version} ({title}) failed: {source}")]
    Migration {
        version: i32,
        title: String,
        source: tokio_postgres::Error,
    },
    #[error(
        "the database schema is at version {found}, newer than this binary knows ({known}): upgrade postbus"
    )]
    SchemaTooNew { found: i32, known: i32 },
    #[error("bad row in the database: {0}")]
    BadRow(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The SQL API refused a call (a bad argument, a destination that does not exist).
    #[error("{0}")]
    Refused(String),
}

impl StoreError {
    pub(crate) fn from_pool(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Db(e),
            other => StoreError::Unavailable(other.to_string()),
        }
    }

    /// True when the error means the database could not be reached or the connection broke,
    /// as opposed to a statement being refused.
    pub fn is_connection_error(&self) -> bool {
        match self {
            StoreError::Unavailable(_) | StoreError::UnknownOutcome(_) => true,
            StoreError::Db(e) => {
                e.is_closed()
                    || e.as_db_error().is_none_or(|db| {
                        // The session was ended, or could not start, for reasons of the server,
                        // not of the statement: a crashed backend's reset (57P02), a fast
                        // shutdown (57P01), a server still recovering (57P03), any FATAL.
                        // Found by the fault suite (scenario 3b): taken for refusals, the
                        // writes of a recovering server's first seconds were not retried, and
                        // a failed release left messages held by a live broker.
                        let code = db.code().code();
                        matches!(db.severity(), "FATAL" | "PANIC")
                            || code.starts_with("08")
                            || code.starts_with("57P")
                    })
            }
            _ => false,
        }
    }

    /// True when running the same statements again later may succeed: the connection broke,
    /// or the server lacked a resource (class 53: disk full, out of memory, too many
    /// connections). A writer retries those for a while, as a broker whose store is full
    /// holds its producers back, instead of refusing at once.
    pub fn is_retryable(&self) -> bool {
        self.is_connection_error()
            || matches!(self, StoreError::Db(e) if e.as_db_error().is_some_and(|db| db.code().code().starts_with("53")))
    }
}

/// What PostgreSQL said: severity, SQLSTATE, message and detail (tokio-postgres's own text
/// is only "db error" for a server error).
fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if db.code().code() == "53100" {
                text.push_str(
                    "; the database server's disk is full: free space there, nothing was stored",
                );
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}
