//! The CSV producer (`clue import-data`): check the file, make the
//! partitions it needs, then parse, validate and type every row and feed
//! them to the load transaction (`write::load`), recording the import job
//! whatever happens.
//!
//! Two passes over the file: a cheap scan (content hash, encoding, header,
//! months present) and the load. The scan lets every file-level problem be
//! reported before anything loads, and lets missing month partitions be
//! created in their own short transactions: creating them inside the load
//! would hold the table's exclusive lock for the whole import and block every
//! report and concurrent load.
//!
//! Architecture Invariant: parsing runs on its own thread and streams COPY
//! chunks to the connection, so client-side validation overlaps the server's
//! work instead of adding to it.

mod parse;
pub(crate) mod read;

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use indicatif::ProgressBar;
use tokio::sync::mpsc;

use parse::{Produce, parse_and_encode, plan_fields};
use read::{Scan, check_regular_file, progress_bar, scan};

use crate::domain::dataset::{Catalog, Dataset, DatasetError};
use crate::domain::delta::Accumulator;
use crate::domain::rollup::RollupInfo;
use crate::domain::rules::{ModelError, ValidationSchema};
use crate::domain::time::Month;
use crate::error::{Classify, ErrorKind};
use crate::ingest::records::KeyPlan;
use crate::pg::catalog::{self as schema, SchemaError};
use crate::pg::copy::{FieldCodec, PgKind};
use crate::pg::database::{Database, DbError};
use crate::sql::table::Table;
use crate::store;
use crate::write::load::{self, Batch, ErrorTableError, LoadError, Produced, ProducedKeys, Target};
use crate::write::partitions::{self as partition, PartitionError};
use crate::write::rollups::{self as rollup, RollupError};

/// The default error table of prototype 000.
pub const DEFAULT_ERROR_TABLE: &str = "validation_logs";
/// A record larger than this is not a sales row: the file is not what it claims.
pub(crate) const MAX_RECORD_BYTES: usize = 1 << 20;
/// PostgreSQL's limit on columns per table.
const MAX_COLUMNS: usize = 1600;
/// COPY data is sent in chunks of about this size.
const CHUNK_BYTES: usize = 1 << 20;
/// Rejects are written out in batches of this many.
const REJECT_BATCH: usize = 10_000;

/// A validation schema and the name it is recorded under in `clue.imports`.
#[derive(Debug, Clone)]
pub struct NamedSchema {
    pub schema: ValidationSchema,
    /// The file it was read from, or what it is (`built-in sales_report rules`).
    pub name: String,
}

/// What `clue import-data` was asked to do.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub csv_path: PathBuf,
    pub table: String,
    /// With a schema, bad rows are logged and the rest load.
    pub schema: Option<NamedSchema>,
    pub error_table: String,
    pub force: bool,
    /// Draw a progress bar on stderr when it is a terminal.
    pub progress: bool,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub import_id: i64,
    pub table: String,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    /// Where rejects went (validated imports only).
    pub error_table: Option<String>,
    pub partitions_created: Vec<String>,
    pub rows_moved: u64,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {file}: {source}")]
    Read { file: String, source: io::Error },
    #[error("{file}: the file is empty (expected a header line and data rows)")]
    Empty { file: String },
    #[error("{file}: not a CSV text file ({what})")]
    NotText { file: String, what: String },
    #[error(
        "{file}, line {line}, column {column}: not valid UTF-8 text; clue reads CSV as UTF-8 (convert the file first, e.g. iconv -f LATIN1 -t UTF-8)"
    )]
    Encoding {
        file: String,
        line: u64,
        column: usize,
    },
    #[error("{file}, line {line}: {reason}")]
    Malformed {
        file: String,
        line: u64,
        reason: String,
    },
    #[error("{file}, line 1: header {reason}")]
    Header { file: String, reason: String },
    #[error("table {table}, column {column}: type {ty} cannot be imported from CSV by clue")]
    UnsupportedColumn {
        table: String,
        column: String,
        ty: String,
    },
    #[error(
        "{file}, line {line}, column {column} ({name}): {reason}; nothing was loaded (pass --schema_path to load the valid rows and log the bad ones)"
    )]
    BadValue {
        file: String,
        line: u64,
        column: usize,
        name: String,
        reason: String,
    },
    #[error(
        "{file} was already imported into {table} (import #{import_id} at {at}, same content); pass --force to load it again"
    )]
    AlreadyImported {
        file: String,
        table: String,
        import_id: i64,
        at: String,
    },
    #[error(
        "{file} was just imported into {table} by a concurrent load (same content); pass --force to load it again"
    )]
    ImportedConcurrently { file: String, table: String },
    #[error(
        "{file}: {column} {key} was written before, or is in the file twice; nothing was loaded"
    )]
    Duplicate {
        file: String,
        column: String,
        key: String,
    },
    #[error(transparent)]
    ErrorTable(#[from] ErrorTableError),
    #[error("{file}: the load failed in the database, nothing was loaded: {message}")]
    Load {
        file: String,
        message: String,
        kind: ErrorKind,
    },
    #[error(
        "{file} is a {what}, not a regular file; clue reads a file twice (a check, then the load): save it to a file first"
    )]
    NotAFile { file: String, what: &'static str },
    #[error("{file}: {what} failed: {reason}")]
    Internal {
        file: String,
        what: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Rollup(#[from] RollupError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for ImportError {
    fn from(e: tokio_postgres::Error) -> Self {
        ImportError::Db(DbError::Query(e))
    }
}

impl Classify for ImportError {
    fn kind(&self) -> ErrorKind {
        match self {
            ImportError::Load { kind, .. } => *kind,
            ImportError::Internal { .. } => ErrorKind::Internal,
            ImportError::AlreadyImported { .. }
            | ImportError::ImportedConcurrently { .. }
            | ImportError::Duplicate { .. } => ErrorKind::Conflict,
            ImportError::Schema(e) => e.kind(),
            ImportError::ErrorTable(e) => e.kind(),
            ImportError::Partition(e) => e.kind(),
            ImportError::Rollup(e) => e.kind(),
            ImportError::Db(e) => e.kind(),
            ImportError::Dataset(_)
            | ImportError::Read { .. }
            | ImportError::Empty { .. }
            | ImportError::NotText { .. }
            | ImportError::Encoding { .. }
            | ImportError::Malformed { .. }
            | ImportError::Header { .. }
            | ImportError::UnsupportedColumn { .. }
            | ImportError::BadValue { .. }
            | ImportError::Model(_)
            | ImportError::NotAFile { .. } => ErrorKind::BadInput,
        }
    }
}

/// Runs `clue import-data`: every failure, from a missing file to a load
/// the database refused, is recorded in `clue.imports` as a failed job.
pub async fn import(
    db: &Database,
    catalog: &Catalog,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let mut facts = store::imports::JobFacts {
        table: opts.table.clone(),
        file_name: opts.csv_path.file_name().map_or_else(
            || opts.csv_path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        schema: opts.schema.as_ref().map(|s| s.name.clone()),
        forced: opts.force,
        started_at: Some(Utc::now()),
        ..Default::default()
    };
    let mut client = db.client().await?;
    let result = import_in(&mut client, catalog, opts, &mut facts).await;
    if let Err(e) = &result
        && e.kind() != ErrorKind::Unavailable
    {
        store::imports::record_failure(&**client, &facts, &e.to_string()).await;
    }
    result
}

async fn import_in(
    client: &mut deadpool_postgres::Object,
    catalog: &Catalog,
    opts: &ImportOptions,
    facts: &mut store::imports::JobFacts,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let file = opts.csv_path.display().to_string();
    check_regular_file(&opts.csv_path)?;
    let schema = opts.schema.as_ref().map(|s| &s.schema);
    let table = schema::load_table(&***client, &opts.table).await?;
    facts.table = table.table.display();
    let (dataset, rollups) =
        super::dataset_of(client, catalog, &table)
            .await
            .map_err(|e| match e {
                super::DatasetOfError::Schema(e) => ImportError::Schema(e),
                super::DatasetOfError::Rollup(e) => ImportError::Rollup(e),
                super::DatasetOfError::Db(e) => ImportError::from(e),
            })?;
    let error_table = match schema {
        Some(_) => Some(load::resolve_error_table(client, &opts.error_table).await?),
        None => None,
    };
    facts.error_table = error_table.clone();

    let bar = progress_bar(opts.progress, &opts.csv_path);
    bar.set_message("checking");
    let scan = match check_file(&opts.csv_path, &table, schema, &bar).await {
        Ok(scan) => scan,
        Err(e) => {
            bar.finish_and_clear();
            return Err(e);
        }
    };
    facts.sha256 = Some(scan.sha256.clone());
    facts.bytes = Some(scan.bytes as i64);
    let codecs = plan_fields(&file, &scan.header, &table, schema)?;

    if !opts.force
        && let Some((import_id, at)) =
            store::imports::previous(&***client, &facts.table, &scan.sha256).await?
    {
        return Err(ImportError::AlreadyImported {
            file,
            table: table.table.display(),
            import_id,
            at,
        });
    }

    let mut partitions = if table.time_partitioning.is_some() && !scan.months.is_empty() {
        partition::ensure_months(client, &table, &scan.months).await?
    } else {
        partition::PartitionReport::default()
    };

    bar.set_position(0);
    bar.set_message("loading");
    let job = Job {
        table: &table,
        file: &file,
        facts,
        scan: &scan,
        codecs,
        error_table: error_table.as_deref(),
        opts,
        bar: &bar,
        rollups,
        dataset: dataset.as_deref(),
        keyed: dataset
            .as_deref()
            .and_then(|name| catalog.get(name).ok())
            .filter(|ds| ds.key.is_some()),
    };
    let result = load_file(client, job).await;
    bar.finish_and_clear();
    let loaded_months = match &result {
        Ok((_, produced)) => produced.months.clone(),
        Err(_) => BTreeSet::new(),
    };
    drop_unused_partitions(
        client,
        &table,
        &scan.months,
        &loaded_months,
        &mut partitions,
    )
    .await;
    let (import_id, produced) = result?;
    if let Some(deltas) = &produced.deltas {
        rollup::refresh_estimates(deltas, client).await;
    }
    Ok(ImportReport {
        import_id,
        table: table.table.display(),
        rows_loaded: produced.rows_loaded,
        rows_rejected: produced.rows_rejected,
        error_table,
        partitions_created: partitions.created,
        rows_moved: partitions.rows_moved,
        elapsed: started.elapsed(),
    })
}

/// The first pass over the file (on a blocking thread): the checks, the
/// hash, and the months whose rows the partition key's codec accepts (only
/// they ask for a partition).
async fn check_file(
    path: &std::path::Path,
    table: &Table,
    schema: Option<&ValidationSchema>,
    bar: &ProgressBar,
) -> Result<Scan, ImportError> {
    let key_codec = table.time_partitioning.as_ref().and_then(|p| {
        let column = table.column(&p.key)?;
        Some(FieldCodec {
            name: p.key.clone(),
            kind: PgKind::of(column)?,
            nullable: !column.not_null,
            rule: schema.and_then(|s| s.column(&p.key)).cloned(),
        })
    });
    let (owned_path, scan_bar) = (path.to_owned(), bar.clone());
    tokio::task::spawn_blocking(move || {
        scan(
            &owned_path,
            |header| {
                let codec = key_codec.clone()?;
                Some((header.iter().position(|h| *h == codec.name)?, codec))
            },
            &scan_bar,
        )
    })
    .await
    .map_err(|e| ImportError::Internal {
        file: path.display().to_string(),
        what: "the file check",
        reason: e.to_string(),
    })?
}

/// Partitions this import made for rows that did not load (rejected, or
/// the load failed) are dropped again while still empty.
async fn drop_unused_partitions(
    client: &mut tokio_postgres::Client,
    table: &Table,
    scanned: &BTreeSet<Month>,
    loaded: &BTreeSet<Month>,
    partitions: &mut partition::PartitionReport,
) {
    let unused: Vec<String> = scanned
        .iter()
        .filter(|m| !loaded.contains(m))
        .map(|m| partition::partition_name(&table.table.name, *m))
        .filter(|name| partitions.created.contains(name))
        .collect();
    if unused.is_empty() {
        return;
    }
    match partition::drop_if_empty(client, table, &unused).await {
        Ok(dropped) => partitions.created.retain(|p| !dropped.contains(p)),
        Err(e) => tracing::warn!(error = %e, "could not drop unused partitions"),
    }
}

struct Job<'a> {
    table: &'a Table,
    file: &'a str,
    facts: &'a store::imports::JobFacts,
    scan: &'a Scan,
    codecs: Vec<FieldCodec>,
    error_table: Option<&'a str>,
    opts: &'a ImportOptions,
    bar: &'a ProgressBar,
    /// The table's rollups and its dataset's time column, when it has any.
    rollups: Option<(Vec<RollupInfo>, String)>,
    /// The dataset stored in the table, whose cached answers this load changes.
    dataset: Option<&'a str>,
    /// That dataset, when it has a key column (each row's value claimed).
    keyed: Option<&'a Dataset>,
}

/// Feeds the file to the load transaction: its parser thread produces COPY
/// rows, rejects and rollup deltas while the transaction streams them.
async fn load_file(
    client: &mut tokio_postgres::Client,
    job: Job<'_>,
) -> Result<(i64, Produced), ImportError> {
    let deltas = match &job.rollups {
        Some((infos, time_column)) => Some(
            Accumulator::new(infos, time_column, |column| {
                job.codecs.iter().position(|c| c.name == column)
            })
            .ok_or_else(|| ImportError::Header {
                file: job.file.to_owned(),
                reason: format!(
                    "lacks a column that the rollups of table {} aggregate; include every column the dataset's dimensions and measures use",
                    job.table.table.display()
                ),
            })?,
        ),
        None => None,
    };
    let month_index = job
        .table
        .time_partitioning
        .as_ref()
        .and_then(|p| job.codecs.iter().position(|c| c.name == p.key));
    let columns: Vec<String> = job.codecs.iter().map(|c| c.name.clone()).collect();
    // The keys of a keyed dataset's rows are claimed as /ingest claims them.
    let key_plan = job.keyed.and_then(|ds| KeyPlan::new(ds, &columns));
    let produce = Produce {
        deltas,
        month_index,
        keys: job
            .keyed
            .filter(|_| key_plan.is_some())
            .map(|ds| ProducedKeys {
                scope: ds.name.clone(),
                ttl: ds.idempotency_ttl,
                keys: Vec::new(),
            }),
        key_plan,
    };
    let (sender, receiver) = mpsc::channel::<Batch>(8);
    let (path, codecs, bar) = (
        job.opts.csv_path.clone(),
        job.codecs.clone(),
        job.bar.clone(),
    );
    let validated = job.error_table.is_some();
    let parser = std::thread::Builder::new()
        .name("clue-import-parse".into())
        .spawn(move || parse_and_encode(&path, &codecs, validated, produce, &bar, sender))
        .map_err(|e| ImportError::Internal {
            file: job.file.to_owned(),
            what: "starting the parser",
            reason: e.to_string(),
        })?;
    let target = Target {
        table: job.table,
        columns: &columns,
        error_table: job.error_table,
        dataset: job.dataset,
        job: Some(job.facts),
        claims: &[],
    };
    let records = job.scan.records;
    let file = job.file;
    let finish = move || {
        let produced = parser.join().map_err(|_| ImportError::Internal {
            file: file.to_owned(),
            what: "parsing",
            reason: "the CSV parser thread panicked".into(),
        })??;
        let seen = produced.rows_loaded + produced.rows_rejected;
        if seen != records {
            return Err(ImportError::Malformed {
                file: file.to_owned(),
                line: 0,
                reason: format!(
                    "the file changed while it was being imported ({records} records when checked, {seen} when loaded); nothing was loaded"
                ),
            });
        }
        Ok(produced)
    };
    load::load(client, target, receiver, finish)
        .await
        .map_err(|e| match e {
            LoadError::Producer(e) => e,
            LoadError::Concurrent => ImportError::ImportedConcurrently {
                file: job.file.to_owned(),
                table: job.table.table.display(),
            },
            LoadError::Database { message, kind } => ImportError::Load {
                file: job.file.to_owned(),
                message,
                kind,
            },
            LoadError::Duplicate { key, .. } => ImportError::Duplicate {
                file: job.file.to_owned(),
                column: job
                    .keyed
                    .and_then(|ds| ds.key.clone())
                    .unwrap_or_else(|| "key".into()),
                key,
            },
        })
        .map(|(id, produced)| (id.unwrap_or_default(), produced))
}
