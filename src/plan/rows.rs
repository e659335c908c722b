//! Plans that read rows, not aggregates: one row by its key, and pages of
//! rows in a stable order with a keyset cursor (`GET /sales`).
//!
//! Architecture Invariant: pure; identifiers come only from the dataset
//! definition, values are parameters.

use chrono::{DateTime, NaiveDate, Utc};

use super::{LogicalPlan, OutKind, OutputColumn, Plan, PlanParam, render};
use crate::domain::dataset::Dataset;
use crate::sql::quote_ident;

/// The dataset's columns in definition order, typed for decoding.
fn columns(dataset: &Dataset) -> (Vec<OutputColumn>, String) {
    let columns: Vec<OutputColumn> = dataset
        .columns
        .columns
        .iter()
        .map(|c| OutputColumn {
            name: c.name.clone(),
            kind: render::out_kind_of(c.ty),
        })
        .collect();
    let select = columns
        .iter()
        .map(|c| {
            let col = quote_ident(&c.name);
            match c.kind {
                // Numbers come back as exact numerics.
                OutKind::Numeric => format!("{col}::numeric"),
                _ => col,
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    (columns, select)
}

fn plan(sql: String, params: Vec<PlanParam>, columns: Vec<OutputColumn>) -> Plan {
    Plan {
        sql,
        params,
        served_from: Vec::new(),
        columns,
        logical: LogicalPlan {
            pieces: Vec::new(),
            combine: super::Combine::Stack,
        },
    }
}

/// The row whose `key` column equals a value.
pub fn by_key(dataset: &Dataset, table_sql: &str, key: &str, value: &str) -> Plan {
    let (columns, select) = columns(dataset);
    plan(
        format!(
            "SELECT {select} FROM {table_sql} WHERE {} = $1::text LIMIT 1",
            quote_ident(key)
        ),
        vec![PlanParam::Text(value.to_owned())],
        columns,
    )
}

/// What a page of rows is filtered by.
#[derive(Debug, Clone, Default)]
pub struct PageFilter {
    /// A text column and a value matched case-insensitively.
    pub equals_ci: Option<(String, String)>,
    /// Days of the time column, both included.
    pub start: Option<NaiveDate>,
    pub end: Option<NaiveDate>,
    /// The page starts after this (time, key), exclusive.
    pub after: Option<(DateTime<Utc>, String)>,
}

/// A page of at most `limit` rows in the order of a time column and a key.
pub fn page(
    dataset: &Dataset,
    table_sql: &str,
    (time, key): (&str, &str),
    filter: &PageFilter,
    limit: u32,
) -> Plan {
    let (columns, select) = columns(dataset);
    let time = quote_ident(time);
    let key = quote_ident(key);
    let mut params = Vec::new();
    let mut push = |p: PlanParam| {
        params.push(p);
        format!("${}", params.len())
    };
    let mut conditions = Vec::new();
    if let Some((column, value)) = &filter.equals_ci {
        let p = push(PlanParam::Text(value.clone()));
        conditions.push(format!("lower({}) = lower({p}::text)", quote_ident(column)));
    }
    if let Some(s) = filter.start {
        let p = push(PlanParam::Date(s));
        conditions.push(format!(
            "{time} >= ({p}::date::timestamp AT TIME ZONE 'UTC')"
        ));
    }
    if let Some(e) = filter.end.and_then(|e| e.succ_opt()) {
        let p = push(PlanParam::Date(e));
        conditions.push(format!(
            "{time} < ({p}::date::timestamp AT TIME ZONE 'UTC')"
        ));
    }
    if let Some((t, k)) = &filter.after {
        let pt = push(PlanParam::Instant(*t));
        let pk = push(PlanParam::Text(k.clone()));
        conditions.push(format!("({time}, {key}) > ({pt}::timestamptz, {pk}::text)"));
    }
    let mut sql = format!("SELECT {select} FROM {table_sql}");
    if !conditions.is_empty() {
        sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
    }
    sql.push_str(&format!(" ORDER BY {time}, {key} LIMIT {limit}"));
    plan(sql, params, columns)
}
