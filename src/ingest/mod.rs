//! Producers that feed the write path: CSV files, HTTP records and
//! events, the database sync, the warehouse's daily batches.
//!
//! Architecture Invariant: producers never use `serve` or the surfaces.

pub mod csv;
pub mod records;
pub mod sync;
pub mod warehouse;

use crate::domain::dataset::Catalog;
use crate::domain::rollup::RollupInfo;
use crate::pg::catalog::{self as schema, SchemaError};
use crate::sql::table::Table;
use crate::store;
use crate::write::rollups::{self as rollup, RollupError};

/// Why the dataset of a table could not be looked up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DatasetOfError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Rollup(#[from] RollupError),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// The dataset stored in a table (or in the partitioned table it is a
/// partition of), and its current rollups: a load keeps them exact and
/// tells the caches what it wrote.
pub(crate) async fn dataset_of(
    client: &mut tokio_postgres::Client,
    catalog: &Catalog,
    table: &Table,
) -> Result<(Option<String>, Option<(Vec<RollupInfo>, String)>), DatasetOfError> {
    let root = table
        .partition_of
        .as_ref()
        .map_or(table.table.oid, |p| p.root.oid);
    let Some(dataset) = schema::dataset_for_table(catalog, &*client, root).await? else {
        return Ok((None, None));
    };
    let Some((time_column, _)) = dataset.time().filter(|_| !dataset.rollups.is_empty()) else {
        return Ok((Some(dataset.name.clone()), None));
    };
    let mut current = store::rollups::current(&*client, dataset).await?;
    // Rollups are reconciled when a writer starts; only a missing one (a
    // table created since) is built here.
    if current.len() < dataset.rollups.len() {
        rollup::ensure(client, dataset, false).await?;
        current = store::rollups::current(&*client, dataset).await?;
    }
    Ok((
        Some(dataset.name.clone()),
        Some((current, time_column.to_owned())),
    ))
}
