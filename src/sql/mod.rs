//! Pure SQL building: identifiers quoted one way, the bucket expression of
//! the time model, date literals PostgreSQL reads back as the same day, the
//! description of a table as the catalog gives it, and the script splitter.
//!
//! Architecture Invariant: no I/O; identifiers reach SQL only through
//! [`quote_ident`]/[`qualified`], and values only as bound parameters (the
//! one exception, partition bounds in DDL, goes through [`day_start_literal`]).

pub mod script;
pub mod table;

use chrono::{Datelike, NaiveDate};

use crate::domain::time::Grain;
use table::KeyKind;

/// Schema of the rollup tables.
pub const ROLLUP_SCHEMA: &str = "clue_rollup";

/// A string as an SQL literal (quotes doubled), for text clue writes into
/// DDL such as trigger functions.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

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

/// SQL of the UTC bucket at `grain` of a time column of type `kind`: a
/// `date` for dates, a `timestamptz` (UTC) for instants, where a
/// `timestamp` without zone is read as UTC. The time model's
/// [`Grain::floor`] and [`Grain::floor_instant`] compute the same buckets.
pub fn utc_bucket_sql(expr: &str, grain: Grain, kind: KeyKind) -> String {
    let unit = grain.unit();
    match kind {
        KeyKind::Date => bucket_sql(expr, grain),
        KeyKind::Timestamp => format!("(date_trunc('{unit}', {expr}) AT TIME ZONE 'UTC')"),
        KeyKind::TimestampTz => {
            format!("(date_trunc('{unit}', ({expr}) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')")
        }
    }
}

/// SQL of the bucket at `grain`, in the time zone `zone` (an SQL expression
/// of its name), of an instant expression: the bucket's start as a
/// `timestamptz`, DST and fractional offsets included.
pub fn zone_bucket_sql(instant: &str, grain: Grain, zone: &str) -> String {
    format!(
        "(date_trunc('{}', ({instant}) AT TIME ZONE {zone}) AT TIME ZONE {zone})",
        grain.unit()
    )
}

/// The start of day `d` as a quoted literal of a time key's type (the date,
/// its midnight, or its midnight in UTC) that PostgreSQL reads as the same
/// day: chrono writes year 0 as `0000` and year 10000 as `+10000`, which
/// PostgreSQL reads as an error and a time zone displacement.
pub fn day_start_literal(d: NaiveDate, kind: KeyKind) -> String {
    let (year, era) = if d.year() <= 0 {
        (1 - d.year(), " BC")
    } else {
        (d.year(), "")
    };
    let date = format!("{year:04}-{:02}-{:02}", d.month(), d.day());
    match kind {
        KeyKind::Date => format!("'{date}{era}'"),
        KeyKind::Timestamp => format!("'{date} 00:00:00{era}'"),
        KeyKind::TimestampTz => format!("'{date} 00:00:00+00{era}'"),
    }
}

/// SQL of the start of the day bound as parameter `param` (a `date`), as a
/// value of a time key's type (midnight UTC for `timestamptz`).
pub fn day_start_sql(param: &str, kind: KeyKind) -> String {
    match kind {
        KeyKind::Date => format!("{param}::date"),
        KeyKind::Timestamp => format!("{param}::date::timestamp"),
        KeyKind::TimestampTz => format!("({param}::date::timestamp AT TIME ZONE 'UTC')"),
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
        let d = |y, m, day| {
            day_start_literal(NaiveDate::from_ymd_opt(y, m, day).unwrap(), KeyKind::Date)
        };
        assert_eq!(d(2025, 4, 1), "'2025-04-01'");
        assert_eq!(d(1, 1, 1), "'0001-01-01'");
        assert_eq!(d(0, 1, 1), "'0001-01-01 BC'");
        assert_eq!(d(-1, 12, 1), "'0002-12-01 BC'");
        assert_eq!(d(10000, 1, 1), "'10000-01-01'");
        let day = NaiveDate::from_ymd_opt(2024, 2, 1).unwrap();
        assert_eq!(
            day_start_literal(day, KeyKind::Timestamp),
            "'2024-02-01 00:00:00'"
        );
        assert_eq!(
            day_start_literal(day, KeyKind::TimestampTz),
            "'2024-02-01 00:00:00+00'"
        );
        let bc = NaiveDate::from_ymd_opt(0, 1, 1).unwrap();
        assert_eq!(
            day_start_literal(bc, KeyKind::TimestampTz),
            "'0001-01-01 00:00:00+00 BC'"
        );
        assert_eq!(
            day_start_sql("$1", KeyKind::TimestampTz),
            "($1::date::timestamp AT TIME ZONE 'UTC')"
        );
    }
}
