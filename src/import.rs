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
use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures_util::SinkExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use postgres_types::{IsNull, ToSql, Type};
use rust_decimal::{Decimal, RoundingStrategy};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::dataset::{Catalog, DatasetError};
use crate::db::{Database, DbError};
use crate::model::{self, ColumnRule, ModelError, ValidationSchema, Violation};
use crate::partition::{self, Month, PartitionError};
use crate::rollup::{self, Accumulator, FieldReader, ReadKind, RollupError, RollupInfo, Scalar};
use crate::schema::{self, Column, SchemaError, Table, quote_ident};

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
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
const COPY_TRAILER: &[u8] = &[0xff, 0xff];
const ERROR_TABLE_COLUMNS: [&str; 9] = [
    "import_id",
    "file_name",
    "line_number",
    "record_number",
    "column_name",
    "raw_value",
    "rule",
    "reason",
    "raw_record",
];

/// What `clue import-data` was asked to do.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub csv_path: PathBuf,
    pub table: String,
    pub schema_path: Option<PathBuf>,
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
    #[error("error table {table}: {reason}")]
    ErrorTable { table: String, reason: String },
    #[error("{file}: the load failed in the database, nothing was loaded: {message}")]
    Load { file: String, message: String },
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

/// A rejected value (or a whole rejected record when `column` is `None`).
#[derive(Debug, Clone)]
struct Reject {
    line: u64,
    record: u64,
    column: Option<String>,
    raw_value: Option<String>,
    rule: &'static str,
    reason: String,
    raw_record: String,
}

/// The PostgreSQL types clue loads, with the limits it checks client-side so
/// that a bad value becomes a reject instead of an aborted COPY.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PgKind {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Text {
        max_chars: Option<usize>,
    },
    Bool,
    Date,
    Timestamp,
    TimestampTz,
    Uuid,
}

impl PgKind {
    fn of(column: &Column) -> Option<PgKind> {
        let modifier = (column.typmod >= 4).then(|| column.typmod - 4);
        Some(match column.ty {
            Type::INT2 => PgKind::Int2,
            Type::INT4 => PgKind::Int4,
            Type::INT8 => PgKind::Int8,
            Type::FLOAT4 => PgKind::Float4,
            Type::FLOAT8 => PgKind::Float8,
            Type::NUMERIC => PgKind::Numeric {
                precision: modifier.map(|m| ((m >> 16) & 0xffff) as u32),
                scale: modifier.map(|m| (m & 0xffff) as u32),
            },
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => PgKind::Text {
                max_chars: modifier.map(|m| m as usize),
            },
            Type::BOOL => PgKind::Bool,
            Type::DATE => PgKind::Date,
            Type::TIMESTAMP => PgKind::Timestamp,
            Type::TIMESTAMPTZ => PgKind::TimestampTz,
            Type::UUID => PgKind::Uuid,
            _ => return None,
        })
    }

    /// How rollups read a value of this kind.
    fn read_kind(self) -> ReadKind {
        match self {
            PgKind::Int2 | PgKind::Int4 | PgKind::Int8 => ReadKind::Int,
            PgKind::Numeric { scale, .. } => ReadKind::Num(scale),
            PgKind::Float4 | PgKind::Float8 => ReadKind::Float,
            PgKind::Date => ReadKind::Date,
            PgKind::Bool => ReadKind::Bool,
            _ => ReadKind::Text,
        }
    }

    fn pg_type(self) -> Type {
        match self {
            PgKind::Int2 => Type::INT2,
            PgKind::Int4 => Type::INT4,
            PgKind::Int8 => Type::INT8,
            PgKind::Float4 => Type::FLOAT4,
            PgKind::Float8 => Type::FLOAT8,
            PgKind::Numeric { .. } => Type::NUMERIC,
            PgKind::Text { .. } => Type::TEXT,
            PgKind::Bool => Type::BOOL,
            PgKind::Date => Type::DATE,
            PgKind::Timestamp => Type::TIMESTAMP,
            PgKind::TimestampTz => Type::TIMESTAMPTZ,
            PgKind::Uuid => Type::UUID,
        }
    }
}

/// How one CSV field becomes one COPY value.
#[derive(Debug, Clone)]
struct FieldCodec {
    name: String,
    kind: PgKind,
    nullable: bool,
    rule: Option<ColumnRule>,
}

impl FieldCodec {
    /// Appends the field's binary COPY encoding (length word and bytes).
    fn encode(&self, raw: &str, out: &mut BytesMut) -> Result<(), Violation> {
        let value = if matches!(self.kind, PgKind::Text { .. }) {
            raw
        } else {
            raw.trim()
        };
        if value.is_empty() {
            let required = self.rule.as_ref().is_some_and(|r| r.required);
            if required || !self.nullable {
                return Err(Violation::new(
                    "required",
                    "is empty but a value is required",
                ));
            }
            out.put_i32(-1);
            return Ok(());
        }
        if let Some(rule) = &self.rule {
            rule.check(raw)?;
        }
        let date_format = self.rule.as_ref().and_then(|r| r.date_format.as_deref());
        let at = out.len();
        out.put_i32(0);
        let ty = self.kind.pg_type();
        let written = match self.kind {
            PgKind::Int2 => int::<i16>(value, "smallint")?.to_sql(&ty, out),
            PgKind::Int4 => int::<i32>(value, "integer")?.to_sql(&ty, out),
            PgKind::Int8 => int::<i64>(value, "bigint")?.to_sql(&ty, out),
            PgKind::Float4 => float(value)
                .filter(|f| f.is_finite() && (*f as f32).is_finite())
                .ok_or_else(|| Violation::new("type", format!("{value:?} is not a number")))
                .map(|f| f as f32)?
                .to_sql(&ty, out),
            PgKind::Float8 => float(value)
                .ok_or_else(|| Violation::new("type", format!("{value:?} is not a number")))?
                .to_sql(&ty, out),
            PgKind::Numeric { precision, scale } => {
                numeric(value, precision, scale)?.to_sql(&ty, out)
            }
            PgKind::Text { max_chars } => {
                if let Some(max) = max_chars {
                    let len = value.chars().count();
                    if len > max {
                        return Err(Violation::new(
                            "type",
                            format!("is {len} characters long; the column holds at most {max}"),
                        ));
                    }
                }
                if value.contains('\0') {
                    return Err(Violation::new(
                        "type",
                        "contains a NUL character, which PostgreSQL text cannot hold",
                    ));
                }
                value.to_sql(&ty, out)
            }
            PgKind::Bool => model::parse_bool(value)
                .ok_or_else(|| Violation::new("type", format!("{value:?} is not true or false")))?
                .to_sql(&ty, out),
            PgKind::Date => model::parse_date(value, date_format)
                .ok_or_else(|| {
                    Violation::new(
                        "type",
                        format!(
                            "{value:?} is not a date in the form {}",
                            date_format.unwrap_or("YYYY-MM-DD")
                        ),
                    )
                })?
                .to_sql(&ty, out),
            PgKind::Timestamp => timestamp(value)
                .ok_or_else(|| {
                    Violation::new(
                        "type",
                        format!("{value:?} is not a timestamp such as 2025-04-01 13:45:00"),
                    )
                })?
                .to_sql(&ty, out),
            PgKind::TimestampTz => timestamptz(value)
                .ok_or_else(|| {
                    Violation::new(
                        "type",
                        format!("{value:?} is not a timestamp such as 2025-04-01T13:45:00Z"),
                    )
                })?
                .to_sql(&ty, out),
            PgKind::Uuid => uuid::Uuid::parse_str(value)
                .map_err(|_| Violation::new("type", format!("{value:?} is not a UUID")))?
                .to_sql(&ty, out),
        };
        match written {
            Ok(IsNull::No) => {
                let len = (out.len() - at - 4) as i32;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                Ok(())
            }
            // No value above encodes as NULL; a driver refusal is a value it cannot send.
            Ok(IsNull::Yes) | Err(_) => Err(Violation::new(
                "type",
                format!("{value:?} cannot be stored in this column"),
            )),
        }
    }
}

fn int<T: FromStr>(value: &str, type_name: &str) -> Result<T, Violation> {
    value.parse::<T>().map_err(|_| {
        if value.parse::<i128>().is_ok() {
            Violation::new("type", format!("{value} is out of range for {type_name}"))
        } else {
            Violation::new("type", format!("{value:?} is not a whole number"))
        }
    })
}

fn float(value: &str) -> Option<f64> {
    value.parse::<f64>().ok()
}

/// Parses and rounds a decimal as PostgreSQL would store it in numeric(p,s),
/// refusing values that would overflow the column.
fn numeric(value: &str, precision: Option<u32>, scale: Option<u32>) -> Result<Decimal, Violation> {
    let mut d = model::parse_number(value)
        .ok_or_else(|| Violation::new("type", format!("{value:?} is not a number")))?;
    if let Some(s) = scale {
        d = d.round_dp_with_strategy(s, RoundingStrategy::MidpointAwayFromZero);
        // Pad to the column's scale, as the stored value will be.
        d.rescale(s);
    }
    if let (Some(p), Some(s)) = (precision, scale) {
        let int_digits = p.saturating_sub(s);
        let limit = if int_digits >= 28 {
            None
        } else {
            Some(Decimal::from_i128_with_scale(10i128.pow(int_digits), 0))
        };
        if limit.is_some_and(|l| d.abs() >= l) {
            return Err(Violation::new(
                "type",
                format!("{value} does not fit numeric({p},{s})"),
            ));
        }
    }
    Ok(d)
}

/// Reads an accepted value as the table stores it (rollup deltas use this,
/// so their sums match the stored, rounded values to the cent).
fn parse_scalar(kind: ReadKind, value: &str, date_format: Option<&str>) -> Option<Scalar> {
    Some(match kind {
        ReadKind::Int => Scalar::Int(value.parse().ok()?),
        ReadKind::Num(scale) => Scalar::Num(numeric(value, None, scale).ok()?),
        ReadKind::Float => Scalar::Float(float(value)?),
        ReadKind::Text => Scalar::Text(value.to_owned()),
        ReadKind::Date => Scalar::Date(model::parse_date(value, date_format)?),
        ReadKind::Bool => Scalar::Bool(model::parse_bool(value)?),
    })
}

fn timestamp(value: &str) -> Option<NaiveDateTime> {
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
    .or_else(|| {
        NaiveDate::from_str(value)
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })
}

fn timestamptz(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .or_else(|_| DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|d| d.with_timezone(&Utc))
        .ok()
        // A timestamp without an offset is taken as UTC.
        .or_else(|| timestamp(value).map(|t| t.and_utc()))
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
    month_field: impl Fn(&[String]) -> Option<(usize, Option<String>)>,
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
    let mut key: Option<(usize, Option<String>)> = None;
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
                if let Some((index, format)) = &key
                    && let Some(d) = fields
                        .get(*index)
                        .and_then(|v| model::parse_date(v.trim(), format.as_deref()))
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

/// A message from the parsing thread to the COPY writer.
enum Msg {
    Data(Bytes),
    Rejects(Vec<Reject>),
}

#[derive(Debug, Default)]
struct ParseOutcome {
    rows_loaded: u64,
    rows_rejected: u64,
    /// Rollup deltas of the loaded rows, when the table has rollups.
    rollups: Option<Accumulator>,
}

/// Second pass (on its own thread): parse, validate and encode every record,
/// streaming COPY data and rejects to the writer.
fn parse_and_encode(
    path: &Path,
    codecs: &[FieldCodec],
    validated: bool,
    rollups: Option<Accumulator>,
    bar: &ProgressBar,
    tx: mpsc::Sender<Msg>,
) -> Result<ParseOutcome, ImportError> {
    let file = path.display().to_string();
    let b = bar.clone();
    let input = open_input(path, move |chunk| b.inc(chunk.len() as u64))?;
    let mut reader = csv_reader(input);
    let mut record = csv::ByteRecord::new();
    let mut out = BytesMut::with_capacity(CHUNK_BYTES + 64 * 1024);
    let mut rejects = Vec::new();
    let mut outcome = ParseOutcome {
        rollups,
        ..ParseOutcome::default()
    };
    let mut record_number = 0u64;
    let mut first = true;
    // A closed channel means the writer failed; it reports why.
    let send = |msg: Msg| tx.blocking_send(msg).is_ok();
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
            for (i, (codec, raw)) in codecs.iter().zip(&fields).enumerate() {
                if let Err(v) = codec.encode(raw, &mut out) {
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
                }
            }
            if bad {
                out.truncate(row_start);
                outcome.rows_rejected += 1;
            } else {
                outcome.rows_loaded += 1;
                if let Some(acc) = outcome.rollups.as_mut() {
                    acc.add(&fields);
                }
            }
        }
        if out.len() >= CHUNK_BYTES && !send(Msg::Data(out.split().freeze())) {
            return Ok(outcome);
        }
        if rejects.len() >= REJECT_BATCH && !send(Msg::Rejects(std::mem::take(&mut rejects))) {
            return Ok(outcome);
        }
    }
    if !out.is_empty() && !send(Msg::Data(out.freeze())) {
        return Ok(outcome);
    }
    if !rejects.is_empty() {
        send(Msg::Rejects(rejects));
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

/// Runs `clue import-data`.
pub async fn import(db: &Database, opts: &ImportOptions) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let started_at = Utc::now();
    let file = opts.csv_path.display().to_string();
    let file_name = opts
        .csv_path
        .file_name()
        .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
    let schema = opts
        .schema_path
        .as_deref()
        .map(ValidationSchema::load)
        .transpose()?;
    let mut client = db.client().await?;
    let table = schema::load_table(&**client, &opts.table).await?;
    // A table with a dataset keeps its rollups exact through this load.
    let catalog = Catalog::from_env()?;
    let dataset = catalog.for_table(&**client, table.table.oid).await?;
    let rollups = match dataset {
        Some(dataset) if !dataset.rollups.is_empty() => {
            rollup::ensure(&mut client, dataset, false).await?;
            Some((
                rollup::current(&**client, dataset).await?,
                dataset.time_column.clone(),
            ))
        }
        _ => None,
    };
    let dataset = dataset.map(|d| d.name.clone());
    let error_table = match schema {
        Some(_) => Some(resolve_error_table(&client, &opts.error_table).await?),
        None => None,
    };

    let bar = progress_bar(opts.progress, &opts.csv_path);
    bar.set_message("checking");
    let key = table.date_partitioning.as_ref().map(|p| p.key.clone());
    let date_format = key
        .as_ref()
        .and_then(|k| schema.as_ref()?.column(k)?.date_format.clone());
    let path = opts.csv_path.clone();
    let scan_bar = bar.clone();
    let scan = tokio::task::spawn_blocking(move || {
        scan(
            &path,
            |header| {
                Some((
                    header.iter().position(|h| Some(h) == key.as_ref())?,
                    date_format.clone(),
                ))
            },
            &scan_bar,
        )
    })
    .await
    .map_err(|e| DbError::Pool(format!("scan task failed: {e}")))??;
    let codecs = plan_fields(&file, &scan.header, &table, schema.as_ref())?;

    if !opts.force
        && let Some(row) = client
            .query_opt(
                "SELECT import_id, to_char(finished_at, 'YYYY-MM-DD HH24:MI:SS TZ') FROM clue.imports
                  WHERE table_name = $1 AND content_sha256 = $2 AND status = 'completed'
                  ORDER BY import_id DESC LIMIT 1",
                &[&table.table.display(), &scan.sha256],
            )
            .await?
    {
        return Err(ImportError::AlreadyImported {
            file,
            table: table.table.display(),
            import_id: row.get(0),
            at: row.get(1),
        });
    }

    let partitions = if table.date_partitioning.is_some() && !scan.months.is_empty() {
        partition::ensure_months(&mut client, &table, &scan.months).await?
    } else {
        partition::PartitionReport::default()
    };

    bar.set_position(0);
    bar.set_message("loading");
    let job = Job {
        table: &table,
        file: &file,
        file_name: &file_name,
        scan: &scan,
        codecs,
        error_table: error_table.as_deref(),
        opts,
        started_at,
        bar: &bar,
        rollups,
        dataset,
    };
    let result = load(&mut client, job).await;
    bar.finish_and_clear();
    match result {
        Ok((import_id, outcome)) => {
            if let Some(acc) = &outcome.rollups {
                acc.refresh_estimates(&client).await;
            }
            Ok(ImportReport {
                import_id,
                table: table.table.display(),
                rows_loaded: outcome.rows_loaded,
                rows_rejected: outcome.rows_rejected,
                error_table,
                partitions_created: partitions.created,
                rows_moved: partitions.rows_moved,
                elapsed: started.elapsed(),
            })
        }
        Err(e) => {
            // Keep a record of the failure; the load itself left nothing behind.
            let _ = client
                .execute(
                    "INSERT INTO clue.imports (table_name, file_name, content_sha256, file_bytes, schema_file,
                                               error_table, forced, status, error, started_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'failed', $8, $9)",
                    &[
                        &table.table.display(),
                        &file_name,
                        &scan.sha256,
                        &(scan.bytes as i64),
                        &opts.schema_path.as_ref().map(|p| p.display().to_string()),
                        &error_table,
                        &opts.force,
                        &e.to_string(),
                        &started_at,
                    ],
                )
                .await;
            Err(e)
        }
    }
}

struct Job<'a> {
    table: &'a Table,
    file: &'a str,
    file_name: &'a str,
    scan: &'a Scan,
    codecs: Vec<FieldCodec>,
    error_table: Option<&'a str>,
    opts: &'a ImportOptions,
    started_at: DateTime<Utc>,
    bar: &'a ProgressBar,
    /// The table's rollups and its dataset's time column, when it has any.
    rollups: Option<(Vec<RollupInfo>, String)>,
    /// The dataset stored in the table, whose cached answers this load changes.
    dataset: Option<String>,
}

/// The load transaction: job row, COPY of the rows, rejects, counts, commit.
async fn load(
    client: &mut tokio_postgres::Client,
    job: Job<'_>,
) -> Result<(i64, ParseOutcome), ImportError> {
    let tx = client.transaction().await?;
    let import_id: i64 = tx
        .query_one(
            "INSERT INTO clue.imports (table_name, file_name, content_sha256, file_bytes, schema_file,
                                       error_table, forced, status, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'completed', $8) RETURNING import_id",
            &[
                &job.table.table.display(),
                &job.file_name,
                &job.scan.sha256,
                &(job.scan.bytes as i64),
                &job.opts.schema_path.as_ref().map(|p| p.display().to_string()),
                &job.error_table,
                &job.opts.force,
                &job.started_at,
            ],
        )
        .await
        .map_err(|e| already_imported(e, &job))?
        .get(0);

    let copy_sql = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        job.table.table.quoted(),
        job.codecs
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let reject_sql = job.error_table.map(|t| {
        format!(
            "COPY {t} ({}) FROM STDIN (FORMAT binary)",
            ERROR_TABLE_COLUMNS.join(", ")
        )
    });

    let (sender, mut receiver) = mpsc::channel::<Msg>(8);
    let path = job.opts.csv_path.clone();
    let codecs = job.codecs.clone();
    let validated = job.error_table.is_some();
    let bar = job.bar.clone();
    let accumulator = job.rollups.as_ref().map(|(infos, time_column)| {
        let time_column = time_column.clone();
        let date_format = job
            .codecs
            .iter()
            .find(|c| c.name == time_column)
            .and_then(|c| c.rule.as_ref()?.date_format.clone());
        Accumulator::new(
            infos,
            &time_column,
            date_format,
            |column| {
                let index = job.codecs.iter().position(|c| c.name == column)?;
                Some(FieldReader {
                    index,
                    kind: job.codecs[index].kind.read_kind(),
                })
            },
            parse_scalar,
        )
    });
    let accumulator = match accumulator {
        Some(None) => {
            return Err(ImportError::Header {
                file: job.file.to_owned(),
                reason: format!(
                    "lacks a column that the rollups of table {} aggregate; include every column the dataset's dimensions and measures use",
                    job.table.table.display()
                ),
            });
        }
        Some(Some(acc)) => Some(acc),
        None => None,
    };
    let parser = std::thread::Builder::new()
        .name("clue-import-parse".into())
        .spawn(move || parse_and_encode(&path, &codecs, validated, accumulator, &bar, sender))
        .map_err(|e| ImportError::Read {
            file: job.file.to_owned(),
            source: e,
        })?;

    let written: Result<u64, tokio_postgres::Error> = async {
        let mut sink = None;
        let mut copied = 0u64;
        while let Some(msg) = receiver.recv().await {
            match msg {
                Msg::Data(bytes) => {
                    if sink.is_none() {
                        let s = tx.copy_in::<_, Bytes>(&copy_sql).await?;
                        let mut s = Box::pin(s);
                        s.send(Bytes::from_static(COPY_HEADER)).await?;
                        sink = Some(s);
                    }
                    if let Some(s) = sink.as_mut() {
                        s.send(bytes).await?;
                    }
                }
                Msg::Rejects(rejects) => {
                    if let Some(mut s) = sink.take() {
                        s.send(Bytes::from_static(COPY_TRAILER)).await?;
                        copied += s.as_mut().finish().await?;
                    }
                    if let Some(sql) = &reject_sql {
                        write_rejects(&tx, sql, import_id, job.file_name, &rejects).await?;
                    }
                }
            }
        }
        // The parser has finished (or failed); only then is the data complete.
        if let Some(mut s) = sink.take() {
            s.send(Bytes::from_static(COPY_TRAILER)).await?;
            copied += s.as_mut().finish().await?;
        }
        Ok(copied)
    }
    .await;
    // Dropping the receiver first unblocks a parser still sending.
    drop(receiver);
    let parsed = parser.join().map_err(|_| ImportError::Load {
        file: job.file.to_owned(),
        message: "the CSV parser thread panicked".into(),
    })?;
    let outcome = parsed?;
    if outcome.rows_loaded + outcome.rows_rejected != job.scan.records {
        return Err(ImportError::Load {
            file: job.file.to_owned(),
            message: format!(
                "the file changed while it was being imported ({} records when checked, {} when loaded)",
                job.scan.records,
                outcome.rows_loaded + outcome.rows_rejected
            ),
        });
    }
    let copied = written.map_err(|e| ImportError::Load {
        file: job.file.to_owned(),
        message: e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
    })?;
    debug_assert_eq!(copied, outcome.rows_loaded);
    if let Some(acc) = &outcome.rollups {
        let started = std::time::Instant::now();
        acc.apply(&tx, job.table).await?;
        tracing::debug!(
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "rollup deltas upserted"
        );
    }
    if let Some(dataset) = &job.dataset {
        // The days loaded, else the months found by the scan, else anywhere.
        let range = outcome
            .rollups
            .as_ref()
            .and_then(Accumulator::date_range)
            .or_else(|| {
                let (first, last) = (job.scan.months.first()?, job.scan.months.last()?);
                Some((first.first_day(), last.next().first_day().pred_opt()?))
            });
        crate::query::notify_write(&tx, dataset, range).await?;
    }
    tx.execute(
        "UPDATE clue.imports SET rows_loaded = $2, rows_rejected = $3, finished_at = clock_timestamp() WHERE import_id = $1",
        &[&import_id, &(outcome.rows_loaded as i64), &(outcome.rows_rejected as i64)],
    )
    .await?;
    tx.commit().await.map_err(|e| already_imported(e, &job))?;
    Ok((import_id, outcome))
}

/// A unique violation on the job row means another process loaded the same
/// file first.
fn already_imported(e: tokio_postgres::Error, job: &Job<'_>) -> ImportError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return ImportError::ImportedConcurrently {
            file: job.file.to_owned(),
            table: job.table.table.display(),
        };
    }
    e.into()
}

async fn write_rejects(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    import_id: i64,
    file_name: &str,
    rejects: &[Reject],
) -> Result<(), tokio_postgres::Error> {
    let mut buf = BytesMut::with_capacity(COPY_HEADER.len() + rejects.len() * 256);
    buf.put_slice(COPY_HEADER);
    for r in rejects {
        buf.put_i16(ERROR_TABLE_COLUMNS.len() as i16);
        let values: [&(dyn ToSql + Sync); 9] = [
            &import_id,
            &file_name,
            &(r.line as i64),
            &(r.record as i64),
            &r.column,
            &r.raw_value,
            &r.rule,
            &r.reason,
            &r.raw_record,
        ];
        let types = [
            Type::INT8,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
        ];
        for (v, ty) in values.iter().zip(&types) {
            let at = buf.len();
            buf.put_i32(0);
            match v.to_sql_checked(ty, &mut buf) {
                Ok(IsNull::No) => {
                    let len = (buf.len() - at - 4) as i32;
                    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
                }
                _ => {
                    buf.truncate(at);
                    buf.put_i32(-1);
                }
            }
        }
    }
    buf.put_slice(COPY_TRAILER);
    let sink = tx.copy_in::<_, Bytes>(sql).await?;
    let mut sink = Box::pin(sink);
    sink.send(buf.freeze()).await?;
    sink.as_mut().finish().await?;
    Ok(())
}

/// Finds or creates the error table, returning its quoted name.
async fn resolve_error_table(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<String, ImportError> {
    let err = |reason: String| ImportError::ErrorTable {
        table: name.to_owned(),
        reason,
    };
    let table = match schema::find_table(client, name).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            schema::parse_table_name(name)?;
            // Same shape as clue's validation_logs, with an identity of its own.
            let quoted = name
                .split('.')
                .map(quote_ident)
                .collect::<Vec<_>>()
                .join(".");
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {quoted} (LIKE public.validation_logs INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS)"
                ))
                .await
                .map_err(|e| err(format!("cannot be created: {}", e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned()))))?;
            schema::find_table(client, name)
                .await?
                .ok_or_else(|| err("vanished after creation".into()))?
        }
        Err(e) => return Err(e.into()),
    };
    let loaded = schema::load_table(client, &table.display()).await?;
    let missing: Vec<&str> = ERROR_TABLE_COLUMNS
        .iter()
        .copied()
        .filter(|c| loaded.column(c).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(err(format!(
            "exists but is not a clue validation log (it lacks {}); name another table with --error_table",
            missing.join(", ")
        )));
    }
    Ok(table.quoted())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(kind: PgKind, nullable: bool) -> FieldCodec {
        FieldCodec {
            name: "c".into(),
            kind,
            nullable,
            rule: None,
        }
    }

    /// Encodes `raw` and returns the value bytes (without the length word), or the violation.
    fn check(kind: PgKind, raw: &str, expect: Result<&[u8], &str>) {
        let mut out = BytesMut::new();
        let got = codec(kind, true)
            .encode(raw, &mut out)
            .map(|()| out[4..].to_vec())
            .map_err(|v| v.reason);
        assert_eq!(
            got,
            expect.map(|b| b.to_vec()).map_err(str::to_owned),
            "{kind:?} {raw:?}"
        );
    }

    #[test]
    fn encodes_values_and_names_bad_ones() {
        check(PgKind::Int4, "42", Ok(&[0, 0, 0, 42]));
        check(PgKind::Int4, " 7 ", Ok(&[0, 0, 0, 7]));
        check(
            PgKind::Int4,
            "3000000000",
            Err("3000000000 is out of range for integer"),
        );
        check(PgKind::Int4, "4x", Err("\"4x\" is not a whole number"));
        check(
            PgKind::Int2,
            "70000",
            Err("70000 is out of range for smallint"),
        );
        check(PgKind::Date, "2000-01-02", Ok(&[0, 0, 0, 1]));
        check(
            PgKind::Date,
            "2025-13-01",
            Err("\"2025-13-01\" is not a date in the form YYYY-MM-DD"),
        );
        check(
            PgKind::Text { max_chars: Some(3) },
            "abcd",
            Err("is 4 characters long; the column holds at most 3"),
        );
        check(PgKind::Text { max_chars: None }, " a ", Ok(b" a "));
        check(PgKind::Bool, "t", Ok(&[1]));
        let num = PgKind::Numeric {
            precision: Some(10),
            scale: Some(2),
        };
        check(num, "xxxx", Err("\"xxxx\" is not a number"));
        check(
            num,
            "123456789",
            Err("123456789 does not fit numeric(10,2)"),
        );
        check(PgKind::Float8, "abc", Err("\"abc\" is not a number"));
    }

    #[test]
    fn numeric_rounds_like_postgres() {
        let n = |v| {
            numeric(v, Some(10), Some(2))
                .map(|d| d.to_string())
                .map_err(|v| v.reason)
        };
        assert_eq!(n("5000.075"), Ok("5000.08".into()));
        assert_eq!(n("-0.005"), Ok("-0.01".into()));
        assert_eq!(n("99999999.994"), Ok("99999999.99".into()));
        assert_eq!(
            n("99999999.995"),
            Err("99999999.995 does not fit numeric(10,2)".into())
        );
        assert_eq!(n("1e3"), Ok("1000.00".into()));
    }

    #[test]
    fn empty_values_are_null_or_required() {
        let mut out = BytesMut::new();
        codec(PgKind::Int4, true).encode("", &mut out).unwrap();
        assert_eq!(&out[..], &(-1i32).to_be_bytes());
        let err = codec(PgKind::Int4, false)
            .encode("  ", &mut BytesMut::new())
            .unwrap_err();
        assert_eq!(err.rule, "required");
    }

    #[test]
    fn csv_lines_are_quoted_as_needed() {
        assert_eq!(
            csv_line(&["1", "a,b", "say \"hi\""]),
            "1,\"a,b\",\"say \"\"hi\"\"\""
        );
    }
}
