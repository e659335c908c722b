//! The shape of the database as clue sees it: table lookup from the catalog,
//! safe identifiers, and `create-schema` (a SQL script run in one transaction).
//!
//! Architecture Invariant: identifiers reach SQL only through [`quote_ident`]
//! applied to names read from the catalog or declared by clue itself; values
//! are always bound parameters.

use std::path::Path;

use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::domain::dataset::{Catalog, Dataset, check_table_name};
use crate::sql::script::{self as sqlscript, Kind, SplitError};
use crate::sql::table::{Column, KeyKind, PartitionOf, Table, TableRef, TimePartitioning};

/// The built-in table of prototype 000, created by `create-schema` without `--source`.
pub const SALES_REPORT_DDL: &str = include_str!("../../sql/sales_report.sql");

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "{0:?} is not a table name clue accepts (letters, digits, _ and $, optionally schema-qualified as schema.table)"
    )]
    BadName(String),
    #[error("table {0:?} does not exist")]
    NoSuchTable(String),
    #[error("{0:?} is not a table (it is a {1})")]
    NotATable(String, &'static str),
    #[error("{source_name}: {0}", source_name = .1)]
    Split(SplitError, String),
    #[error("{source_name}:{line}:{column}: {message}")]
    Statement {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("database error: {}", crate::error::pg_message(.0))]
    Db(#[from] tokio_postgres::Error),
}

impl crate::error::Classify for SchemaError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            SchemaError::Db(e) => crate::error::classify_pg(e),
            SchemaError::NoSuchTable(_) => ErrorKind::BadInput,
            _ => ErrorKind::BadInput,
        }
    }
}

/// Checks a user-given table name before it goes near the catalog.
pub fn parse_table_name(name: &str) -> Result<(), SchemaError> {
    check_table_name(name).map_err(|_| SchemaError::BadName(name.to_owned()))
}

/// Finds a table by the name a user typed (search path and case folding as
/// in SQL), or `None` when there is none.
pub async fn find_table(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<TableRef>, SchemaError> {
    parse_table_name(name)?;
    let row = client
        .query_opt(
            "SELECT c.oid, n.nspname, c.relname, c.relkind::text
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = to_regclass($1)",
            &[&name],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let kind: String = row.get(3);
    let what = match kind.as_str() {
        "r" | "p" => None,
        "v" => Some("view"),
        "m" => Some("materialized view"),
        "i" | "I" => Some("index"),
        "S" => Some("sequence"),
        "f" => Some("foreign table"),
        _ => Some("relation of another kind"),
    };
    if let Some(what) = what {
        return Err(SchemaError::NotATable(name.to_owned(), what));
    }
    Ok(Some(TableRef {
        oid: row.get::<_, u32>(0),
        schema: row.get(1),
        name: row.get(2),
    }))
}

/// Loads a table's columns and partitioning.
pub async fn load_table(client: &impl GenericClient, name: &str) -> Result<Table, SchemaError> {
    let table = find_table(client, name)
        .await?
        .ok_or_else(|| SchemaError::NoSuchTable(name.to_owned()))?;
    let rows = client
        .query(
            "SELECT a.attname, a.atttypid, a.atttypmod, a.attnotnull,
                    a.atthasdef OR a.attidentity <> '', a.attgenerated <> ''
               FROM pg_attribute a
              WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&table.oid],
        )
        .await?;
    let columns = rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            ty: Type::from_oid(r.get::<_, u32>(1)).unwrap_or(Type::UNKNOWN),
            typmod: r.get(2),
            not_null: r.get(3),
            has_default: r.get(4),
            generated: r.get(5),
        })
        .collect::<Vec<_>>();
    let part = client
        .query_opt(
            "SELECT p.partstrat::text, p.partnatts::int,
                    (SELECT a.attname FROM pg_attribute a
                      WHERE a.attrelid = p.partrelid AND a.attnum = p.partattrs[0])
               FROM pg_partitioned_table p WHERE p.partrelid = $1",
            &[&table.oid],
        )
        .await?;
    let (mut time_partitioning, mut other_partitioning) = (None, None);
    if let Some(p) = part {
        let strategy: String = p.get(0);
        let natts: i32 = p.get(1);
        let key: Option<String> = p.get(2);
        let key_kind = key
            .as_deref()
            .and_then(|k| columns.iter().find(|c| c.name == k))
            .and_then(|c| KeyKind::of(&c.ty));
        match (key, key_kind) {
            (Some(key), Some(kind)) if strategy == "r" && natts == 1 => {
                time_partitioning = Some(TimePartitioning { key, kind });
            }
            _ => {
                let how = match strategy.as_str() {
                    "r" => "range",
                    "l" => "list",
                    _ => "hash",
                };
                other_partitioning = Some(format!(
                    "partitioned by {how}, not by range of one date or timestamp column"
                ));
            }
        }
    }
    // A partition belongs to the tree's root (and its dataset).
    let root = client
        .query_opt(
            "SELECT r.oid, n.nspname, r.relname
               FROM pg_class c
               JOIN pg_class r ON r.oid = pg_partition_root(c.oid)
               JOIN pg_namespace n ON n.oid = r.relnamespace
              WHERE c.oid = $1 AND c.relispartition",
            &[&table.oid],
        )
        .await?;
    let partition_of = root.map(|r| PartitionOf {
        root: TableRef {
            oid: r.get(0),
            schema: r.get(1),
            name: r.get(2),
        },
    });
    Ok(Table {
        table,
        columns,
        time_partitioning,
        other_partitioning,
        partition_of,
    })
}

/// The dataset stored in the table with this oid, resolving each dataset's
/// table name as SQL would (search path included), so a load into a table
/// (or into any partition of it: pass the root's oid) keeps the rollups its
/// dataset declares.
pub async fn dataset_for_table<'c>(
    catalog: &'c Catalog,
    client: &impl GenericClient,
    oid: u32,
) -> Result<Option<&'c Dataset>, SchemaError> {
    for d in &catalog.datasets {
        if find_table(client, &d.table)
            .await?
            .is_some_and(|t| t.oid == oid)
        {
            return Ok(Some(d));
        }
    }
    Ok(None)
}

/// Runs a SQL script in one transaction, statement by statement, so that a
/// failure names its line and column and leaves nothing applied. Returns the
/// number of statements run.
pub async fn run_script(
    client: &mut tokio_postgres::Client,
    script: &str,
    source_name: &str,
) -> Result<usize, SchemaError> {
    let statements =
        sqlscript::split(script).map_err(|e| SchemaError::Split(e, source_name.to_owned()))?;
    let tx = client.transaction().await?;
    let mut count = 0;
    for stmt in &statements {
        match stmt.kind() {
            // The whole script already runs in one transaction of ours.
            Kind::TransactionControl => continue,
            Kind::PsqlMeta => {
                return Err(SchemaError::Statement {
                    source_name: source_name.to_owned(),
                    line: stmt.line,
                    column: stmt.column,
                    message: format!(
                        "psql meta-command {:?} is not SQL; remove it (clue runs the script itself)",
                        stmt.text.split_whitespace().next().unwrap_or(stmt.text)
                    ),
                });
            }
            Kind::Sql => {}
        }
        if let Err(e) = tx.batch_execute(stmt.text).await {
            let Some(db) = e.as_db_error() else {
                return Err(SchemaError::Db(e));
            };
            let (line, column) = match db.position() {
                Some(tokio_postgres::error::ErrorPosition::Original(pos)) => {
                    sqlscript::position_in_script(stmt, *pos as usize)
                }
                _ => (stmt.line, stmt.column),
            };
            let mut message = format!("ERROR: {}", db.message());
            if let Some(detail) = db.detail() {
                message.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                message.push_str(&format!("; hint: {hint}"));
            }
            message.push_str("; nothing was applied");
            return Err(SchemaError::Statement {
                source_name: source_name.to_owned(),
                line,
                column,
                message,
            });
        }
        count += 1;
    }
    tx.commit().await?;
    Ok(count)
}

/// `create-schema`: the script at `source`, or the built-in `sales_report`.
pub async fn create_schema(
    client: &mut tokio_postgres::Client,
    source: Option<&Path>,
) -> Result<usize, SchemaError> {
    match source {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| SchemaError::Read {
                path: path.display().to_string(),
                source: e,
            })?;
            let script = String::from_utf8(bytes).map_err(|e| SchemaError::Read {
                path: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "not UTF-8 text (invalid byte at offset {})",
                        e.utf8_error().valid_up_to()
                    ),
                ),
            })?;
            run_script(client, &script, &path.display().to_string()).await
        }
        None => run_script(client, SALES_REPORT_DDL, "built-in sales_report schema").await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for ok in ["sales_report", "public.sales_report", "_t1", "Sales$2"] {
            assert!(parse_table_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a.b.c",
            "sales; drop table x",
            "\"q\"",
            "a b",
            "x.",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(parse_table_name(bad), Err(SchemaError::BadName(_))),
                "{bad}"
            );
        }
    }
}
