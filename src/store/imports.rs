//! Import jobs in `clue.imports`: one row per load, completed with its
//! counts in the load's own transaction, or recorded as failed afterwards
//! with whatever was known (a failure before the file was read has no hash).
//!
//! Architecture Invariant: a file loads into a table once unless forced,
//! also under concurrency (a partial unique index; the second load fails at
//! commit).

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

/// What is known of an import when its job row is written.
#[derive(Debug, Clone, Default)]
pub struct JobFacts {
    pub table: String,
    pub file_name: String,
    pub sha256: Option<String>,
    pub bytes: Option<i64>,
    pub schema: Option<String>,
    pub error_table: Option<String>,
    pub forced: bool,
    pub started_at: Option<DateTime<Utc>>,
}

/// An earlier completed import of the same content into the same table:
/// its id and when it finished.
pub async fn previous(
    client: &impl GenericClient,
    table: &str,
    sha256: &str,
) -> Result<Option<(i64, String)>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT import_id, to_char(finished_at, 'YYYY-MM-DD HH24:MI:SS TZ') FROM clue.imports
              WHERE table_name = $1 AND content_sha256 = $2 AND status = 'completed'
              ORDER BY import_id DESC LIMIT 1",
            &[&table, &sha256],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// Starts a completed job inside the load transaction; returns its id.
pub async fn begin(
    tx: &impl GenericClient,
    facts: &JobFacts,
) -> Result<i64, tokio_postgres::Error> {
    insert(tx, facts, "completed", None).await
}

/// Inserts a job row with `status` (and the error of a failed one).
async fn insert(
    client: &impl GenericClient,
    facts: &JobFacts,
    status: &str,
    error: Option<&str>,
) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "INSERT INTO clue.imports (table_name, file_name, content_sha256, file_bytes, schema_file,
                                       error_table, forced, status, error, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10, now())) RETURNING import_id",
            &[
                &facts.table,
                &facts.file_name,
                &facts.sha256,
                &facts.bytes,
                &facts.schema,
                &facts.error_table,
                &facts.forced,
                &status,
                &error,
                &facts.started_at,
            ],
        )
        .await?
        .get(0))
}

/// Writes the counts of a job, in the load transaction, before commit.
pub async fn finish(
    tx: &impl GenericClient,
    import_id: i64,
    rows_loaded: u64,
    rows_rejected: u64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE clue.imports SET rows_loaded = $2, rows_rejected = $3, finished_at = clock_timestamp() WHERE import_id = $1",
        &[&import_id, &(rows_loaded as i64), &(rows_rejected as i64)],
    )
    .await?;
    Ok(())
}

/// Records a failed import (best effort: the failure is reported anyway).
pub async fn record_failure(client: &impl GenericClient, facts: &JobFacts, error: &str) {
    if let Err(e) = insert(client, facts, "failed", Some(error)).await {
        tracing::warn!(error = %e, "could not record the failed import");
    }
}
