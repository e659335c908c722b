//! A table as the catalog describes it (`pg::catalog` reads it): its name,
//! columns with their types, and how it is partitioned.

use tokio_postgres::types::Type;

use crate::sql::{qualified, quote_ident};

/// A table resolved from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub oid: u32,
    pub schema: String,
    pub name: String,
}

impl TableRef {
    /// `"schema"."name"`, safe to splice into SQL.
    pub fn quoted(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    /// `schema.name` for messages and bookkeeping.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Another relation in the same schema, quoted.
    pub fn sibling(&self, name: &str) -> String {
        qualified(&self.schema, name)
    }
}

/// A column of a table, as the importer needs it.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: Type,
    /// `atttypmod`: length of varchar(n), precision/scale of numeric(p,s); -1 when unset.
    pub typmod: i32,
    pub not_null: bool,
    /// Has a default, identity or generation expression: may be left out of a load.
    pub has_default: bool,
    pub generated: bool,
}

impl Column {
    /// The column's type as DDL writes it (for rollup columns copied from it).
    pub fn type_sql(&self) -> &'static str {
        match self.ty {
            Type::INT2 => "smallint",
            Type::INT4 => "integer",
            Type::INT8 => "bigint",
            Type::NUMERIC => "numeric",
            Type::FLOAT4 => "real",
            Type::FLOAT8 => "double precision",
            Type::DATE => "date",
            Type::BOOL => "boolean",
            Type::TIMESTAMP => "timestamp",
            Type::TIMESTAMPTZ => "timestamptz",
            _ => "text",
        }
    }

    pub fn quoted(&self) -> String {
        quote_ident(&self.name)
    }
}

/// How a table is range-partitioned on a single time column, if it is.
#[derive(Debug, Clone)]
pub struct TimePartitioning {
    pub key: String,
    pub kind: KeyKind,
}

/// The type of a time partition key; month partitions are calendar months
/// (in UTC for `timestamptz`; a `timestamp` is read as UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Date,
    Timestamp,
    TimestampTz,
}

impl KeyKind {
    /// The key type of a column, when it is one of these.
    pub fn of(ty: &Type) -> Option<KeyKind> {
        Some(match *ty {
            Type::DATE => KeyKind::Date,
            Type::TIMESTAMP => KeyKind::Timestamp,
            Type::TIMESTAMPTZ => KeyKind::TimestampTz,
            _ => return None,
        })
    }
}

/// When the table is itself a partition: the partitioned table at the root
/// of its tree (whose dataset a load into it belongs to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOf {
    pub root: TableRef,
}

/// A table with its columns and partitioning.
#[derive(Debug, Clone)]
pub struct Table {
    pub table: TableRef,
    pub columns: Vec<Column>,
    /// `Some` when range-partitioned by one `date`, `timestamp` or `timestamptz` column.
    pub time_partitioning: Option<TimePartitioning>,
    /// `Some(description)` when partitioned some other way.
    pub other_partitioning: Option<String>,
    /// `Some` when the table is a partition of another.
    pub partition_of: Option<PartitionOf>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}
