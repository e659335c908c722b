//! The write path for CSV files: check the file, make the partitions it
//! needs, then parse, validate and type every row and load it with binary
//! COPY in one transaction, recording rejects and the import job.
//!
//! Two passes over the file: a cheap scan (content hash, encoding, header,
//! months present) and the load. The scan lets every file-level problem be
//! reported before anything loads, and lets missing month partitions be
//! created in their own short transactions: creating them inside the load
//! would hold the table's exclusive lock for the whole import and block every
//! report and concurrent load.
//!
//! Architecture Invariant: a load is all or nothing. Rows, rejects and the
//! import's bookkeeping row commit together or not at all; only empty
//! partitions may outlive a failed load.
//! Architecture Invariant: parsing runs on its own thread and streams COPY
//! chunks to the connection, so client-side validation overlaps the server's
//! work instead of adding to it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::domain::dataset::{Catalog, DatasetError};
use crate::domain::delta::Accumulator;
use crate::domain::rollup::RollupInfo;
use crate::domain::rules::{ModelError, ValidationSchema};
use crate::domain::time::Month;
use crate::domain::value::Value;
use crate::error::{Classify, ErrorKind};
use crate::pg::catalog::{self as schema, SchemaError};
use crate::pg::copy::{FieldCodec, PgKind};
use crate::pg::database::{Database, DbError};
use crate::sql::table::Table;
use crate::store;
use crate::write::load::{self, Batch, ErrorTableError, LoadError, Produced, Reject, Target};
use crate::write::partitions::{self as partition, PartitionError};
use crate::write::rollups::{self as rollup, RollupError};

/// The default error table of prototype 000.
pub const DEFAULT_ERROR_TABLE: &str = "validation_logs";
/// A record larger than this is not a sales row: the file is not what it claims.
const MAX_RECORD_BYTES: usize = 1 << 20;
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
            ImportError::AlreadyImported { .. } | ImportError::ImportedConcurrently { .. } => {
                ErrorKind::Conflict
            }
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

/// Opens the file for reading, transparently gunzipping `.gz` content, with
/// every raw byte read reported to `on_read` (for hashing and progress).
fn open_input(
    path: &Path,
    on_read: impl FnMut(&[u8]) + Send + 'static,
) -> Result<Box<dyn Read + Send>, ImportError> {
    let file_err = |e| ImportError::Read {
        file: path.display().to_string(),
        source: e,
    };
    let file = File::open(path).map_err(file_err)?;
    let mut raw = BufReader::with_capacity(
        256 * 1024,
        Tap {
            inner: file,
            on_read,
        },
    );
    let gz = raw.fill_buf().map_err(file_err)?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(raw),
        ))
    } else {
        Box::new(raw)
    })
}

/// A reader that shows every chunk it reads to a callback.
struct Tap<R, F> {
    inner: R,
    on_read: F,
}

impl<R: Read, F: FnMut(&[u8])> Read for Tap<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_read)(&buf[..n]);
        Ok(n)
    }
}

fn csv_reader(input: Box<dyn Read + Send>) -> csv::Reader<Box<dyn Read + Send>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        // Records of the wrong length are reported by clue with their line.
        .flexible(true)
        .buffer_capacity(256 * 1024)
        .from_reader(input)
}

/// What the scan learned about the file.
#[derive(Debug)]
struct Scan {
    sha256: String,
    bytes: u64,
    header: Vec<String>,
    records: u64,
    months: BTreeSet<Month>,
}

fn progress_bar(enabled: bool, path: &Path) -> ProgressBar {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// First pass: content hash, text and encoding checks, header, and the
/// months present in the partition key column.
fn scan(
    path: &Path,
    month_field: impl Fn(&[String]) -> Option<(usize, FieldCodec)>,
    bar: &ProgressBar,
) -> Result<Scan, ImportError> {
    let file = path.display().to_string();
    // Hashing runs beside the parse, on the other core: one after the other
    // they would take twice as long.
    let hashing = {
        let path = path.to_owned();
        std::thread::spawn(move || -> io::Result<(String, u64)> {
            let mut f = File::open(path)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Ok((hex::encode(hasher.finalize()), total))
        })
    };
    let b = bar.clone();
    let mut head = Vec::with_capacity(8192);
    let input = open_input(path, move |chunk| b.inc(chunk.len() as u64))?;
    let mut input = BufReader::new(input);
    // Look at the start of the (decompressed) content before parsing it.
    {
        let start = input.fill_buf().map_err(|e| ImportError::Read {
            file: file.clone(),
            source: e,
        })?;
        head.extend_from_slice(&start[..start.len().min(8192)]);
    }
    if head.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ImportError::Empty { file });
    }
    if head.starts_with(&[0xff, 0xfe]) || head.starts_with(&[0xfe, 0xff]) {
        return Err(ImportError::NotText {
            file,
            what: "it is UTF-16 encoded; convert it to UTF-8, e.g. iconv -f UTF-16 -t UTF-8".into(),
        });
    }
    if head.contains(&0) {
        return Err(ImportError::NotText {
            file,
            what: "it contains binary data".into(),
        });
    }
    let mut reader = csv_reader(Box::new(input));
    let mut record = csv::ByteRecord::new();
    let mut header: Option<Vec<String>> = None;
    let mut key: Option<(usize, FieldCodec)> = None;
    let mut records = 0u64;
    let mut months = BTreeSet::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(&file, e)),
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.as_slice().len() > MAX_RECORD_BYTES {
            return Err(ImportError::Malformed {
                file,
                line,
                reason: "record is larger than 1 MiB; this does not look like a sales CSV file"
                    .into(),
            });
        }
        let fields = utf8_fields(&file, line, &record)?;
        match &header {
            None => {
                let names: Vec<String> = fields.iter().map(|f| f.trim().to_owned()).collect();
                key = month_field(&names);
                header = Some(names);
            }
            Some(_) => {
                records += 1;
                // Only values the load will accept (type, rules, what
                // PostgreSQL can store) ask for a partition.
                if let Some((index, codec)) = &key
                    && let Some(Ok(Value::Date(d))) = fields.get(*index).map(|v| codec.parse(v))
                {
                    months.insert(Month::of(d));
                }
            }
        }
    }
    let header = header.ok_or_else(|| ImportError::Empty { file: file.clone() })?;
    let (sha256, bytes) = hashing
        .join()
        .map_err(|_| ImportError::Read {
            file: file.clone(),
            source: io::Error::other("the hashing thread panicked"),
        })?
        .map_err(|e| ImportError::Read {
            file: file.clone(),
            source: e,
        })?;
    Ok(Scan {
        sha256,
        bytes,
        header,
        records,
        months,
    })
}

fn csv_error(file: &str, e: csv::Error) -> ImportError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => ImportError::Read {
            file: file.to_owned(),
            source,
        },
        other => ImportError::Malformed {
            file: file.to_owned(),
            line,
            reason: format!("{other:?}"),
        },
    }
}

fn utf8_fields<'r>(
    file: &str,
    line: u64,
    record: &'r csv::ByteRecord,
) -> Result<Vec<&'r str>, ImportError> {
    record
        .iter()
        .enumerate()
        .map(|(i, f)| {
            std::str::from_utf8(f).map_err(|_| ImportError::Encoding {
                file: file.to_owned(),
                line,
                column: i + 1,
            })
        })
        .collect()
}

/// Matches the header against the table (and the schema), giving the codec
/// of every CSV field in order.
fn plan_fields(
    file: &str,
    header: &[String],
    table: &Table,
    schema: Option<&ValidationSchema>,
) -> Result<Vec<FieldCodec>, ImportError> {
    let header_err = |reason: String| ImportError::Header {
        file: file.to_owned(),
        reason,
    };
    if header.len() > MAX_COLUMNS {
        return Err(header_err(format!(
            "has {} columns; PostgreSQL tables hold at most {MAX_COLUMNS}",
            header.len()
        )));
    }
    for (i, name) in header.iter().enumerate() {
        if name.is_empty() {
            return Err(header_err(format!("column {} has no name", i + 1)));
        }
        if header[..i].contains(name) {
            return Err(header_err(format!("names column {name:?} twice")));
        }
    }
    if let Some(schema) = schema {
        let missing: Vec<&str> = schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .filter(|n| !header.iter().any(|h| h == n))
            .collect();
        let unexpected: Vec<&str> = header
            .iter()
            .map(String::as_str)
            .filter(|h| schema.column(h).is_none())
            .collect();
        if !missing.is_empty() || !unexpected.is_empty() {
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("lacks schema column(s) {}", missing.join(", ")));
            }
            if !unexpected.is_empty() {
                parts.push(format!(
                    "has column(s) {} that the schema does not declare",
                    unexpected.join(", ")
                ));
            }
            return Err(header_err(format!(
                "does not match the schema: it {}",
                parts.join(" and ")
            )));
        }
    }
    let table_name = table.table.display();
    let mut codecs = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let column = table.column(name).ok_or_else(|| {
            header_err(format!(
                "column {} ({name:?}) is not a column of table {table_name} (its columns: {})",
                i + 1,
                table
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if column.generated {
            return Err(header_err(format!(
                "column {name:?} is generated by table {table_name} and cannot be loaded"
            )));
        }
        let kind = PgKind::of(column).ok_or_else(|| ImportError::UnsupportedColumn {
            table: table_name.clone(),
            column: name.clone(),
            ty: column.ty.name().to_owned(),
        })?;
        codecs.push(FieldCodec {
            name: name.clone(),
            kind,
            nullable: !column.not_null,
            rule: schema.and_then(|s| s.column(name)).cloned(),
        });
    }
    let absent: Vec<&str> = table
        .columns
        .iter()
        .filter(|c| c.not_null && !c.has_default && !header.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    if !absent.is_empty() {
        return Err(header_err(format!(
            "lacks column(s) {} that table {table_name} requires",
            absent.join(", ")
        )));
    }
    Ok(codecs)
}

/// Second pass (on its own thread): parse, validate and encode every record,
/// streaming COPY data and rejects to the writer.
fn parse_and_encode(
    path: &Path,
    codecs: &[FieldCodec],
    validated: bool,
    deltas: Option<Accumulator>,
    month_index: Option<usize>,
    bar: &ProgressBar,
    tx: mpsc::Sender<Batch>,
) -> Result<Produced, ImportError> {
    let file = path.display().to_string();
    let b = bar.clone();
    let input = open_input(path, move |chunk| b.inc(chunk.len() as u64))?;
    let mut reader = csv_reader(input);
    let mut record = csv::ByteRecord::new();
    let mut out = BytesMut::with_capacity(CHUNK_BYTES + 64 * 1024);
    let mut rejects = Vec::new();
    let mut outcome = Produced {
        deltas,
        ..Produced::default()
    };
    let mut record_number = 0u64;
    let mut first = true;
    let mut last_month: Option<Month> = None;
    // The typed values of a row, for the rollup deltas.
    let keep_values = outcome.deltas.is_some();
    // A closed channel means the writer failed; it reports why.
    let send = |batch: Batch| tx.blocking_send(batch).is_ok();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(&file, e)),
        }
        if first {
            first = false;
            continue;
        }
        record_number += 1;
        let line = record.position().map_or(0, |p| p.line());
        if record.as_slice().len() > MAX_RECORD_BYTES {
            return Err(ImportError::Malformed {
                file,
                line,
                reason: "record is larger than 1 MiB".into(),
            });
        }
        let fields = utf8_fields(&file, line, &record)?;
        if fields.len() != codecs.len() {
            let reason = format!(
                "expected {} fields as in the header, found {}",
                codecs.len(),
                fields.len()
            );
            if !validated {
                return Err(ImportError::Malformed { file, line, reason });
            }
            rejects.push(Reject {
                line,
                record: record_number,
                column: None,
                raw_value: None,
                rule: "field_count",
                reason,
                raw_record: csv_line(&fields),
            });
            outcome.rows_rejected += 1;
        } else {
            let row_start = out.len();
            out.put_i16(codecs.len() as i16);
            let mut bad = false;
            let mut values: Vec<Value<'_>> =
                Vec::with_capacity(if keep_values { codecs.len() } else { 0 });
            let mut month = None;
            for (i, (codec, raw)) in codecs.iter().zip(&fields).enumerate() {
                match codec.encode(raw, &mut out) {
                    Ok(value) => {
                        if Some(i) == month_index
                            && let Value::Date(d) = value
                        {
                            month = Some(Month::of(d));
                        }
                        if keep_values {
                            values.push(value);
                        }
                    }
                    Err(v) => {
                        if !validated {
                            return Err(ImportError::BadValue {
                                file,
                                line,
                                column: i + 1,
                                name: codec.name.clone(),
                                reason: v.reason,
                            });
                        }
                        bad = true;
                        rejects.push(Reject {
                            line,
                            record: record_number,
                            column: Some(codec.name.clone()),
                            raw_value: Some((*raw).to_owned()),
                            rule: v.rule,
                            reason: v.reason,
                            raw_record: csv_line(&fields),
                        });
                        // Keep going: every bad value of the row is logged, not just the first.
                        out.put_i32(-1);
                        if keep_values {
                            values.push(Value::Null);
                        }
                    }
                }
            }
            if bad {
                out.truncate(row_start);
                outcome.rows_rejected += 1;
            } else {
                outcome.rows_loaded += 1;
                if let Some(acc) = outcome.deltas.as_mut() {
                    acc.add(&values);
                }
                if month.is_some() && month != last_month {
                    last_month = month;
                    outcome.months.extend(month);
                }
            }
        }
        if out.len() >= CHUNK_BYTES && !send(Batch::Rows(out.split().freeze())) {
            return Ok(outcome);
        }
        if rejects.len() >= REJECT_BATCH && !send(Batch::Rejects(std::mem::take(&mut rejects))) {
            return Ok(outcome);
        }
    }
    if !out.is_empty() && !send(Batch::Rows(out.freeze())) {
        return Ok(outcome);
    }
    if !rejects.is_empty() {
        send(Batch::Rejects(rejects));
    }
    Ok(outcome)
}

/// The record as one CSV line, for the error table.
fn csv_line(fields: &[&str]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = w.write_record(fields);
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('\n')
        .to_owned()
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

/// Refuses inputs that cannot be read twice, before reading them.
fn check_regular_file(path: &Path) -> Result<(), ImportError> {
    use std::os::unix::fs::FileTypeExt;
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| ImportError::Read {
        file: file.clone(),
        source: e,
    })?;
    let t = meta.file_type();
    let what = if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_dir() {
        "directory"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        return Ok(());
    };
    Err(ImportError::NotAFile { file, what })
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
    // A table with a dataset (or a partition of one) keeps its rollups
    // exact through this load, and tells the caches what it wrote.
    let root = table
        .partition_of
        .as_ref()
        .map_or(table.table.oid, |p| p.root.oid);
    let dataset = schema::dataset_for_table(catalog, &***client, root).await?;
    let rollups = match dataset {
        Some(dataset) if !dataset.rollups.is_empty() => {
            let mut current = store::rollups::current(&***client, dataset).await?;
            // Rollups are reconciled when a writer starts; only a missing
            // one (a table created since) is built here.
            if current.len() < dataset.rollups.len() {
                rollup::ensure(client, dataset, false).await?;
                current = store::rollups::current(&***client, dataset).await?;
            }
            Some((current, dataset.time_column.clone()))
        }
        _ => None,
    };
    let dataset = dataset.map(|d| d.name.clone());
    let error_table = match schema {
        Some(_) => Some(load::resolve_error_table(client, &opts.error_table).await?),
        None => None,
    };
    facts.error_table = error_table.clone();

    let bar = progress_bar(opts.progress, &opts.csv_path);
    bar.set_message("checking");
    // The partition key's codec: only rows it accepts ask for a partition.
    let key_codec = table.date_partitioning.as_ref().and_then(|p| {
        let column = table.column(&p.key)?;
        Some(FieldCodec {
            name: p.key.clone(),
            kind: PgKind::of(column)?,
            nullable: !column.not_null,
            rule: schema.and_then(|s| s.column(&p.key)).cloned(),
        })
    });
    let path = opts.csv_path.clone();
    let scan_bar = bar.clone();
    let scanned = tokio::task::spawn_blocking(move || {
        scan(
            &path,
            |header| {
                let codec = key_codec.clone()?;
                Some((header.iter().position(|h| *h == codec.name)?, codec))
            },
            &scan_bar,
        )
    })
    .await
    .map_err(|e| ImportError::Internal {
        file: file.clone(),
        what: "the file check",
        reason: e.to_string(),
    })?;
    let scan = match scanned {
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

    let mut partitions = if table.date_partitioning.is_some() && !scan.months.is_empty() {
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
        .date_partitioning
        .as_ref()
        .and_then(|p| job.codecs.iter().position(|c| c.name == p.key));
    let (sender, receiver) = mpsc::channel::<Batch>(8);
    let (path, codecs, bar) = (
        job.opts.csv_path.clone(),
        job.codecs.clone(),
        job.bar.clone(),
    );
    let validated = job.error_table.is_some();
    let parser = std::thread::Builder::new()
        .name("clue-import-parse".into())
        .spawn(move || {
            parse_and_encode(&path, &codecs, validated, deltas, month_index, &bar, sender)
        })
        .map_err(|e| ImportError::Internal {
            file: job.file.to_owned(),
            what: "starting the parser",
            reason: e.to_string(),
        })?;
    let columns: Vec<String> = job.codecs.iter().map(|c| c.name.clone()).collect();
    let target = Target {
        table: job.table,
        columns: &columns,
        error_table: job.error_table,
        dataset: job.dataset,
        job: job.facts,
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
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_are_quoted_as_needed() {
        assert_eq!(
            csv_line(&["1", "a,b", "say \"hi\""]),
            "1,\"a,b\",\"say \"\"hi\"\"\""
        );
    }
}
