//! The sync's state in clue's database: how far each source table has been
//! read (`clue.sync_watermarks`, polling) or up to which commit the source's
//! changes are in (`clue.sync_positions`, change data capture), advanced in
//! the transaction that writes what was read (the lock letting one sync run
//! per source is in `locks`).

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

/// How far a batch of the sync has read, recorded with what it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// A source table read up to a watermark (polling).
    Watermark(&'a str, Watermark),
    /// The source's changes committed up to this position are in (change
    /// data capture).
    Position(u64),
}

/// Records `progress` inside the transaction that wrote what it covers.
pub async fn record(
    tx: &impl GenericClient,
    source: &str,
    progress: Progress<'_>,
) -> Result<(), tokio_postgres::Error> {
    match progress {
        Progress::Watermark(table, mark) => advance(tx, source, table, mark).await,
        Progress::Position(lsn) => {
            let n = tx
                .execute(
                    "UPDATE clue.sync_positions SET lsn = $2, synced_at = now() WHERE source = $1",
                    &[&source, &postgres_types::PgLsn::from(lsn)],
                )
                .await?;
            debug_assert_eq!(n, 1, "a position is recorded for a claimed slot");
            Ok(())
        }
    }
}

/// The replication slot a source is streamed through, and how far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub slot: String,
    pub publication: String,
    /// `None` until the slot's first copy committed.
    pub lsn: Option<u64>,
    pub synced_at: DateTime<Utc>,
}

/// The change data capture position of `source`, if it has one.
pub async fn position(
    client: &impl GenericClient,
    source: &str,
) -> Result<Option<Position>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT slot, publication, lsn, synced_at FROM clue.sync_positions WHERE source = $1",
            &[&source],
        )
        .await?;
    Ok(row.map(|r| Position {
        slot: r.get(0),
        publication: r.get(1),
        lsn: r.get::<_, Option<postgres_types::PgLsn>>(2).map(u64::from),
        synced_at: r.get(3),
    }))
}

/// Records that `source` is to be streamed through `slot`, from nothing:
/// before the slot is made, so a slot left by a failed first copy is known
/// to be clue's.
pub async fn claim_slot(
    client: &impl GenericClient,
    source: &str,
    slot: &str,
    publication: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO clue.sync_positions (source, slot, publication) VALUES ($1, $2, $3)
             ON CONFLICT (source) DO UPDATE
                SET slot = excluded.slot, publication = excluded.publication, lsn = NULL, synced_at = now()",
            &[&source, &slot, &publication],
        )
        .await?;
    Ok(())
}

/// Forgets a source's change data capture position.
pub async fn forget_position(
    client: &impl GenericClient,
    source: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM clue.sync_positions WHERE source = $1",
            &[&source],
        )
        .await
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
