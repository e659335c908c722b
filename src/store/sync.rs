//! The sync's state in clue's database (`clue.sync_watermarks`): how far
//! each source table has been read, advanced in the transaction that writes
//! what was read (the lock letting one sync run per source is in `locks`).

use chrono::{DateTime, NaiveDateTime, Utc};
use tokio_postgres::GenericClient;

/// A source table read up to `(updated_at, id)`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Watermark {
    pub updated_at: NaiveDateTime,
    pub id: i64,
}

/// A watermark as `clue etl status` shows it.
#[derive(Debug, Clone)]
pub struct WatermarkRow {
    pub source_table: String,
    pub mark: Watermark,
    pub synced_at: DateTime<Utc>,
}

/// The watermarks of `source`, by source table.
pub async fn watermarks(
    client: &impl GenericClient,
    source: &str,
) -> Result<Vec<WatermarkRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT source_table, updated_at, id, synced_at FROM clue.sync_watermarks
              WHERE source = $1 ORDER BY source_table",
            &[&source],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| WatermarkRow {
            source_table: r.get(0),
            mark: Watermark {
                updated_at: r.get(1),
                id: r.get(2),
            },
            synced_at: r.get(3),
        })
        .collect())
}

/// Sets a table's watermark, inside the transaction that wrote what it
/// covers.
pub async fn advance(
    tx: &impl GenericClient,
    source: &str,
    source_table: &str,
    mark: Watermark,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO clue.sync_watermarks (source, source_table, updated_at, id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (source, source_table)
         DO UPDATE SET updated_at = excluded.updated_at, id = excluded.id, synced_at = now()",
        &[&source, &source_table, &mark.updated_at, &mark.id],
    )
    .await?;
    Ok(())
}

/// Forgets a source's watermarks (the next sync starts from a full copy).
pub async fn reset(
    client: &impl GenericClient,
    source: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM clue.sync_watermarks WHERE source = $1",
            &[&source],
        )
        .await
}
