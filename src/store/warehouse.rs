//! The warehouse's batch registry (`clue.warehouse_batches`): which daily
//! batches are loaded, from which files, and each one's quality report.

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::GenericClient;

/// A loaded batch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub batch_date: NaiveDate,
    pub customers_file: String,
    pub sales_file: String,
    pub customers_sha256: String,
    pub sales_sha256: String,
    pub loaded_at: DateTime<Utc>,
    pub report: serde_json::Value,
}

const COLUMNS: &str =
    "batch_date, customers_file, sales_file, customers_sha256, sales_sha256, loaded_at, report";

fn batch_of(r: &tokio_postgres::Row) -> Batch {
    Batch {
        batch_date: r.get(0),
        customers_file: r.get(1),
        sales_file: r.get(2),
        customers_sha256: r.get(3),
        sales_sha256: r.get(4),
        loaded_at: r.get(5),
        report: r.get(6),
    }
}

/// The batch of `date`, if loaded.
pub async fn batch(
    client: &impl GenericClient,
    date: NaiveDate,
) -> Result<Option<Batch>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM clue.warehouse_batches WHERE batch_date = $1"),
            &[&date],
        )
        .await?;
    Ok(row.as_ref().map(batch_of))
}

/// Every loaded batch, the latest first.
pub async fn batches(client: &impl GenericClient) -> Result<Vec<Batch>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM clue.warehouse_batches ORDER BY batch_date DESC"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(batch_of).collect())
}

/// The latest loaded batch's date.
pub async fn latest(
    client: &impl GenericClient,
) -> Result<Option<NaiveDate>, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT max(batch_date) FROM clue.warehouse_batches", &[])
        .await?
        .get(0))
}

/// Records a batch, inside the transaction that loaded it.
pub async fn record(client: &impl GenericClient, b: &Batch) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO clue.warehouse_batches
                    (batch_date, customers_file, sales_file, customers_sha256, sales_sha256, report)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &b.batch_date,
                &b.customers_file,
                &b.sales_file,
                &b.customers_sha256,
                &b.sales_sha256,
                &b.report,
            ],
        )
        .await?;
    Ok(())
}

/// Forgets a batch (`--replace`), inside the transaction that undoes it.
pub async fn forget(
    client: &impl GenericClient,
    date: NaiveDate,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM clue.warehouse_batches WHERE batch_date = $1",
            &[&date],
        )
        .await?;
    Ok(())
}
