//! clue's schema migrations (`migrations/`, embedded in the binary), applied
//! by a writer under an advisory lock; a reader only checks the version.
//!
//! Architecture Invariant: migrations apply exactly once, even when several
//! clue processes start at the same moment.

use crate::error::{Classify, ErrorKind, pg_message};
use crate::pg::database::{Database, DbError};
use crate::store::locks;

mod embedded {
    refinery::embed_migrations!("migrations");
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("applying clue's schema migrations failed: {0}")]
    Failed(String),
    #[error(
        "the database is at migration {applied:?} but this build needs {expected:?}; run a writer (`clue serve` without --read-only, or any other command) to migrate it"
    )]
    Behind {
        applied: Option<i32>,
        expected: Option<i32>,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for MigrationError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrationError::Db(DbError::Query(e))
    }
}

impl Classify for MigrationError {
    fn kind(&self) -> ErrorKind {
        match self {
            MigrationError::Failed(_) => ErrorKind::Internal,
            MigrationError::Behind { .. } => ErrorKind::Unavailable,
            MigrationError::Db(e) => e.kind(),
        }
    }
}

/// The migration this build expects the database to be at.
fn expected() -> Option<i32> {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
}

/// Ready to serve: the database answers and every migration this build
/// knows is applied.
pub async fn check_version(db: &Database) -> Result<(), MigrationError> {
    let client = db.client().await?;
    let migrated: bool = client
        .query_one("SELECT to_regclass('clue.schema_history') IS NOT NULL", &[])
        .await?
        .get(0);
    let applied: Option<i32> = if migrated {
        client
            .query_one("SELECT max(version) FROM clue.schema_history", &[])
            .await?
            .get(0)
    } else {
        None
    };
    let expected = expected();
    if applied < expected {
        return Err(MigrationError::Behind { applied, expected });
    }
    Ok(())
}

/// Applies the migrations this build has and the database lacks.
pub async fn migrate(db: &Database) -> Result<(), MigrationError> {
    let mut client = db.client().await?;
    // The advisory lock makes two clue processes starting at once apply
    // each migration exactly once: the second waits, then finds them done.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&locks::MIGRATIONS])
        .await?;
    let result = async {
        client
            .batch_execute("CREATE SCHEMA IF NOT EXISTS clue")
            .await?;
        let c: &mut tokio_postgres::Client = &mut client;
        embedded::migrations::runner()
            .set_migration_table_name("clue.schema_history")
            .run_async(c)
            .await
            .map_err(|e| MigrationError::Failed(reason(&e)))?;
        Ok::<(), MigrationError>(())
    }
    .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&locks::MIGRATIONS])
        .await?;
    result
}

/// A failed migration's reason, with the server's own message: refinery's
/// text alone says only which step failed.
fn reason(e: &refinery::Error) -> String {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(pg) = s.downcast_ref::<tokio_postgres::Error>() {
            reason.push_str(&format!(": {}", pg_message(pg)));
            break;
        }
        source = s.source();
    }
    reason
}
