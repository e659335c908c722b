//! Records that arrive one by one (or a few at a time) over HTTP: fields as
//! text, checked by the dataset's rules and the table's column types,
//! encoded for COPY and fed to the one write path with their idempotency
//! keys claimed in the same transaction.
//!
//! Architecture Invariant: a batch of records is all or nothing: a bad
//! field anywhere, or a key taken before, writes none of it.

use std::collections::BTreeSet;

use bytes::{BufMut, BytesMut};
use tokio::sync::mpsc;

use crate::domain::dataset::Catalog;
use crate::domain::delta::Accumulator;
use crate::domain::time::Month;
use crate::error::{Classify, ErrorKind};
use crate::pg::catalog::{self as schema, SchemaError};
use crate::pg::copy::{FieldCodec, PgKind};
use crate::pg::database::{Database, DbError};
use crate::write::load::{self, Batch, ClaimSpec, LoadError, Produced, Target};
use crate::write::partitions::{self, PartitionError};
use crate::write::rollups::RollupError;

/// A field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{}", describe(.0))]
    Invalid(Vec<FieldProblem>),
    /// The key guards a record written before (`replay`: with the same payload).
    #[error("{key} was recorded before")]
    Duplicate { key: String, replay: bool },
    #[error("unknown dataset {0:?}")]
    UnknownDataset(String),
    #[error("the database refused the record: {message}")]
    Load { message: String, kind: ErrorKind },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
    #[error(transparent)]
    Rollup(#[from] RollupError),
    #[error(transparent)]
    Db(#[from] DbError),
}

fn describe(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<tokio_postgres::Error> for RecordError {
    fn from(e: tokio_postgres::Error) -> Self {
        RecordError::Db(DbError::Query(e))
    }
}

impl From<super::DatasetOfError> for RecordError {
    fn from(e: super::DatasetOfError) -> Self {
        match e {
            super::DatasetOfError::Schema(e) => RecordError::Schema(e),
            super::DatasetOfError::Rollup(e) => RecordError::Rollup(e),
            super::DatasetOfError::Db(e) => RecordError::from(e),
        }
    }
}

impl Classify for RecordError {
    fn kind(&self) -> ErrorKind {
        match self {
            RecordError::Invalid(_) | RecordError::UnknownDataset(_) => ErrorKind::BadInput,
            RecordError::Duplicate { .. } => ErrorKind::Conflict,
            RecordError::Load { kind, .. } => *kind,
            RecordError::Schema(e) => e.kind(),
            RecordError::Partition(e) => e.kind(),
            RecordError::Rollup(e) => e.kind(),
            RecordError::Db(e) => e.kind(),
        }
    }
}

/// One record: its fields (column, raw text) and the idempotency key that
/// guards it, if any.
#[derive(Debug, Clone)]
pub struct Record {
    pub fields: Vec<(String, String)>,
    pub key: Option<RecordKey>,
}

/// An idempotency key and the fingerprint of the payload it guards.
#[derive(Debug, Clone)]
pub struct RecordKey {
    pub key: String,
    pub fingerprint: String,
}

/// Writes `records` (all with the same fields) into `dataset`'s table in
/// one transaction, claiming their keys in the ledger under `scope`.
/// Returns how many rows were written.
pub async fn record(
    db: &Database,
    catalog: &Catalog,
    dataset: &str,
    records: &[Record],
    scope: &str,
) -> Result<u64, RecordError> {
    let ds = catalog
        .get(dataset)
        .map_err(|_| RecordError::UnknownDataset(dataset.to_owned()))?;
    let Some(first) = records.first() else {
        return Ok(0);
    };
    let mut client = db.client().await?;
    let table = schema::load_table(&**client, &ds.table).await?;
    let columns: Vec<String> = first.fields.iter().map(|(c, _)| c.clone()).collect();
    let codecs = codecs(&table, ds, &columns)?;
    let (dataset_name, rollups) = super::dataset_of(&mut client, catalog, &table).await?;
    let time_index = columns.iter().position(|c| *c == ds.time_column);
    let mut deltas = match &rollups {
        Some((infos, time_column)) => {
            Accumulator::new(infos, time_column, |c| columns.iter().position(|x| x == c))
        }
        None => None,
    };
    let mut out = BytesMut::new();
    let mut months = BTreeSet::new();
    for r in records {
        let values = encode(&codecs, r, &mut out)?;
        if let Some(day) = time_index.and_then(|i| values[i].day()) {
            months.insert(Month::of(day));
        }
        if let Some(d) = deltas.as_mut() {
            d.add(&values);
        }
    }
    if table.time_partitioning.is_some() && !months.is_empty() {
        partitions::ensure_months(&mut client, &table, &months).await?;
    }
    let claims: Vec<ClaimSpec<'_>> = records
        .iter()
        .filter_map(|r| r.key.as_ref())
        .map(|k| ClaimSpec {
            scope,
            key: &k.key,
            fingerprint: &k.fingerprint,
            ttl: None,
        })
        .collect();
    let (sender, receiver) = mpsc::channel(1);
    sender
        .try_send(Batch::Rows(out.freeze()))
        .expect("an empty channel takes one batch");
    drop(sender);
    let produced = Produced {
        rows_loaded: records.len() as u64,
        rows_rejected: 0,
        deltas,
        months,
    };
    let target = Target {
        table: &table,
        columns: &columns,
        error_table: None,
        dataset: dataset_name.as_deref(),
        job: None,
        claims: &claims,
    };
    match load::load(&mut client, target, receiver, || {
        Ok::<_, std::convert::Infallible>(produced)
    })
    .await
    {
        Ok((_, produced)) => Ok(produced.rows_loaded),
        Err(LoadError::Duplicate { key, replay, .. }) => {
            Err(RecordError::Duplicate { key, replay })
        }
        Err(LoadError::Database { message, kind }) => Err(RecordError::Load { message, kind }),
        Err(LoadError::Concurrent) => Err(RecordError::Load {
            message: "a concurrent write took a unique value".into(),
            kind: ErrorKind::Conflict,
        }),
        Err(LoadError::Producer(never)) => match never {},
    }
}

/// The codec of every field, with the dataset's rules; a field that is no
/// column, or a required column no field gives, is a problem.
fn codecs(
    table: &crate::sql::table::Table,
    dataset: &crate::domain::dataset::Dataset,
    columns: &[String],
) -> Result<Vec<FieldCodec>, RecordError> {
    let mut problems = Vec::new();
    let mut codecs = Vec::new();
    for name in columns {
        match table.column(name).and_then(|c| Some((c, PgKind::of(c)?))) {
            Some((column, kind)) => codecs.push(FieldCodec {
                name: name.clone(),
                kind,
                nullable: !column.not_null,
                rule: dataset.columns.column(name).cloned(),
            }),
            None => problems.push(FieldProblem {
                field: name.clone(),
                reason: "is not a field of these records".into(),
            }),
        }
    }
    for c in &table.columns {
        if c.not_null && !c.has_default && !columns.contains(&c.name) {
            problems.push(FieldProblem {
                field: c.name.clone(),
                reason: "is required".into(),
            });
        }
    }
    if problems.is_empty() {
        Ok(codecs)
    } else {
        Err(RecordError::Invalid(problems))
    }
}

/// Encodes one record as a COPY row, returning its typed values; every
/// field at fault is named.
fn encode<'r>(
    codecs: &[FieldCodec],
    record: &'r Record,
    out: &mut BytesMut,
) -> Result<Vec<crate::domain::value::Value<'r>>, RecordError> {
    out.put_i16(codecs.len() as i16);
    let mut values = Vec::with_capacity(codecs.len());
    let mut problems = Vec::new();
    for (codec, (name, raw)) in codecs.iter().zip(&record.fields) {
        match codec.encode(raw, out) {
            Ok(v) => values.push(v),
            Err(v) => problems.push(FieldProblem {
                field: name.clone(),
                reason: v.reason,
            }),
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(RecordError::Invalid(problems))
    }
}
