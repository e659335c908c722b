//! Pure SQL building: identifiers quoted one way, the bucket expression of
//! the time model, date literals PostgreSQL reads back as the same day, the
//! description of a table as the catalog gives it, and the script splitter.
//!
//! Architecture Invariant: no I/O; identifiers reach SQL only through
//! [`quote_ident`]/[`qualified`], and values only as bound parameters (the
//! one exception, partition bounds in DDL, goes through [`date_literal`]).

pub mod script;
pub mod table;

use chrono::{Datelike, NaiveDate};

use crate::domain::time::Grain;

/// Schema of the rollup tables.
pub const ROLLUP_SCHEMA: &str = "clue_rollup";

/// Quotes an identifier for SQL (`"` doubled), as PostgreSQL's `quote_ident` does.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// The table of a rollup, quoted.
pub fn rollup_table(name: &str) -> String {
    qualified(ROLLUP_SCHEMA, name)
}

/// SQL of the bucket at `grain` of a date expression: the first day of the
/// bucket, as [`Grain::floor`] computes it.
pub fn bucket_sql(expr: &str, grain: Grain) -> String {
    match grain {
        Grain::Day | Grain::Hour => format!("({expr})::date"),
        g => format!("date_trunc('{}', {expr})::date", g.unit()),
    }
}

/// A date as a quoted SQL literal PostgreSQL reads as the same day: chrono
/// writes year 0 as `0000` and year 10000 as `+10000`, which PostgreSQL
/// reads as an error and a time zone displacement.
pub fn date_literal(d: NaiveDate) -> String {
    if d.year() <= 0 {
        format!("'{:04}-{:02}-{:02} BC'", 1 - d.year(), d.month(), d.day())
    } else {
        format!("'{:04}-{:02}-{:02}'", d.year(), d.month(), d.day())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("sales_report"), "\"sales_report\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(qualified("a", "b\""), "\"a\".\"b\"\"\"");
    }

    #[test]
    fn date_literals() {
        let d = |y, m, day| date_literal(NaiveDate::from_ymd_opt(y, m, day).unwrap());
        assert_eq!(d(2025, 4, 1), "'2025-04-01'");
        assert_eq!(d(1, 1, 1), "'0001-01-01'");
        assert_eq!(d(0, 1, 1), "'0001-01-01 BC'");
        assert_eq!(d(-1, 12, 1), "'0002-12-01 BC'");
        assert_eq!(d(10000, 1, 1), "'10000-01-01'");
    }
}
