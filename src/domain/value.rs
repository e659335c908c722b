//! Typed values: the value types datasets and validation schemas declare,
//! and the one parser of each kind of raw text (numbers, ISO and formatted
//! dates, timestamps, booleans), each refusing what PostgreSQL cannot store.
//!
//! Architecture Invariant: pure; a value a parser here accepts is one
//! PostgreSQL can hold in a column of its type.

use std::borrow::Cow;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;

/// One typed value as a column stores it (numerics already rounded to the
/// column's scale). Text borrows from the input it was read from;
/// `Value<'static>` owns it. Producers (CSV rows today; events, replicated
/// tuples and warehouse batches next) hand rows of these to the write path,
/// which encodes them for COPY and adds them to rollup deltas.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Num(Decimal),
    Float(f64),
    Text(Cow<'a, str>),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
    Bool(bool),
    Uuid(uuid::Uuid),
}

impl Value<'_> {
    /// The same value, owning its text.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(i),
            Value::Num(d) => Value::Num(d),
            Value::Float(f) => Value::Float(f),
            Value::Date(d) => Value::Date(d),
            Value::Timestamp(t) => Value::Timestamp(t),
            Value::TimestampTz(t) => Value::TimestampTz(t),
            Value::Bool(b) => Value::Bool(b),
            Value::Uuid(u) => Value::Uuid(u),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The day of a time value (in UTC for instants; a timestamp without
    /// zone is read as UTC).
    pub fn day(&self) -> Option<NaiveDate> {
        match self {
            Value::Date(d) => Some(*d),
            Value::Timestamp(t) => Some(t.date()),
            Value::TimestampTz(t) => Some(t.date_naive()),
            _ => None,
        }
    }

    /// Appends bytes that identify the value (equal values, equal bytes;
    /// `1.50` and `1.5` are one number), for grouping keys.
    pub fn key_bytes(&self, out: &mut Vec<u8>) {
        let tagged = |out: &mut Vec<u8>, tag: u8, bytes: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        match self {
            Value::Null => out.push(0),
            Value::Int(i) => tagged(out, 1, &i.to_le_bytes()),
            Value::Num(d) => tagged(out, 2, d.normalize().to_string().as_bytes()),
            // One zero, whatever its sign.
            Value::Float(f) => tagged(out, 3, &(if *f == 0.0 { 0.0f64 } else { *f }).to_le_bytes()),
            Value::Text(t) => tagged(out, 4, t.as_bytes()),
            Value::Date(d) => tagged(out, 5, &d.num_days_from_ce().to_le_bytes()),
            Value::Timestamp(t) => tagged(out, 6, &t.and_utc().timestamp_micros().to_le_bytes()),
            Value::TimestampTz(t) => tagged(out, 7, &t.timestamp_micros().to_le_bytes()),
            Value::Bool(b) => tagged(out, 8, &[u8::from(*b)]),
            Value::Uuid(u) => tagged(out, 9, u.as_bytes()),
        }
    }
}

/// The value types of a validation schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Int,
    Float,
    Str,
    Date,
    /// An instant (`timestamptz`; a `timestamp` without zone is read as UTC).
    Timestamp,
    Bool,
}

impl ValueType {
    pub fn parse(name: &str) -> Option<ValueType> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "int" | "integer" | "bigint" | "smallint" => ValueType::Int,
            "float" | "double" | "decimal" | "numeric" | "number" => ValueType::Float,
            "str" | "string" | "text" | "varchar" => ValueType::Str,
            "date" => ValueType::Date,
            "timestamp" | "timestamptz" | "datetime" => ValueType::Timestamp,
            "bool" | "boolean" => ValueType::Bool,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::Str => "str",
            ValueType::Date => "date",
            ValueType::Timestamp => "timestamp",
            ValueType::Bool => "bool",
        }
    }
}

/// Parses a decimal number as a CSV writer would print it: `12`, `-3.50`,
/// `1e3`; not `NaN` or `inf`, which no sales figure is.
pub fn parse_number(s: &str) -> Option<Decimal> {
    if s.is_empty() {
        return None;
    }
    Decimal::from_str(s).ok().or_else(|| {
        if s.contains(['e', 'E']) {
            Decimal::from_scientific(s).ok()
        } else {
            None
        }
    })
}

/// Parses a date in `format`, or ISO `YYYY-MM-DD` when none is given.
pub fn parse_date(s: &str, format: Option<&str>) -> Option<NaiveDate> {
    match format {
        None => parse_iso_date(s),
        Some(f) => NaiveDate::parse_from_str(s, f)
            .ok()
            .filter(|d| storable_date(*d)),
    }
}

/// `YYYY-MM-DD`, read directly: every imported row has a date, and chrono's
/// general parser costs more than the rest of the row's checks together.
fn parse_iso_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)
}

pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// PostgreSQL's dates begin on 4714-11-24 BC (proleptic Gregorian year −4713).
const PG_MIN_YEAR: i32 = -4713;

/// Whether PostgreSQL can store this date (chrono reaches further back).
pub fn storable_date(d: NaiveDate) -> bool {
    d.year() > PG_MIN_YEAR || (d.year() == PG_MIN_YEAR && d.ordinal() >= 328)
}

/// A timestamp without zone: `2025-04-01 13:45:00`, `2025-04-01T13:45`, or a
/// bare ISO date (midnight).
pub fn parse_timestamp(value: &str) -> Option<NaiveDateTime> {
    match parse_iso_datetime(value) {
        Some((t, None)) => Some(t).filter(|t| storable_date(t.date())),
        _ => general_timestamp(value),
    }
}

fn general_timestamp(value: &str) -> Option<NaiveDateTime> {
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
    .filter(|t| storable_date(t.date()))
}

/// A timestamp with an offset (RFC 3339 or `2025-04-01 13:45:00+02`); one
/// without an offset is taken as UTC.
pub fn parse_timestamptz(value: &str) -> Option<DateTime<Utc>> {
    match parse_iso_datetime(value) {
        Some((t, offset)) => t
            .checked_sub_signed(chrono::TimeDelta::seconds(offset.unwrap_or(0).into()))
            .map(|t| t.and_utc())
            .filter(|t| storable_date(t.date_naive())),
        None => general_timestamptz(value),
    }
}

fn general_timestamptz(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .or_else(|_| DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| parse_timestamp(value).map(|t| t.and_utc()))
        .filter(|t| storable_date(t.date_naive()))
}

/// `YYYY-MM-DD HH:MM[:SS[.fraction]]` (or `T` between), then nothing,
/// `Z`, or an offset `±HH`, `±HHMM`, `±HH:MM` (its seconds east of UTC),
/// read directly: the usual spellings of every event's time, where chrono's
/// format-driven parser costs more than the rest of the row. `None` for
/// anything else, which the general parsers then try.
fn parse_iso_datetime(s: &str) -> Option<(NaiveDateTime, Option<i32>)> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r)?.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() < 16
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b' ' | b'T')
        || b[13] != b':'
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)?;
    let (hour, minute) = (digits(11..13)?, digits(14..16)?);
    let mut at = 16;
    let (mut second, mut nanos) = (0, 0);
    if b.get(at) == Some(&b':') {
        second = digits(at + 1..at + 3)?;
        at += 3;
        if b.get(at) == Some(&b'.') {
            let start = at + 1;
            let end = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
            if end == start || end - start > 9 {
                return None;
            }
            nanos = digits(start..end)? * 10u32.pow((9 - (end - start)) as u32);
            at = end;
        }
    }
    // 60 (a leap second) is left to chrono.
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, minute, second.min(60), nanos)
        .filter(|_| second < 60)?;
    let offset = match &b[at..] {
        [] => None,
        // Minutes then a zone is not a spelling the general parsers take.
        _ if at == 16 => return None,
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            // After a `T` only RFC 3339's `±HH:MM`, as the general parsers.
            let basic = b[10] == b' ';
            let (h, m) = match rest.len() {
                2 if basic => (digits(at + 1..at + 3)?, 0),
                4 if basic => (digits(at + 1..at + 3)?, digits(at + 3..at + 5)?),
                5 if rest[2] == b':' => (digits(at + 1..at + 3)?, digits(at + 4..at + 6)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i32;
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => return None,
    };
    Some((date.and_time(time), offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_are_strict() {
        let d = |s| parse_date(s, None).map(|d| d.to_string());
        assert_eq!(d("2025-04-01"), Some("2025-04-01".into()));
        assert_eq!(d("0001-01-01"), Some("0001-01-01".into()));
        assert_eq!(
            d("0000-01-01"),
            Some("0000-01-01".into()),
            "1 BC exists in PostgreSQL"
        );
        assert_eq!(d("9999-12-31"), Some("9999-12-31".into()));
        assert_eq!(d("2024-02-29"), Some("2024-02-29".into()));
        for bad in [
            "2025-02-29",
            "2025-4-01",
            "+025-04-01",
            "2025/04/01",
            "2025-04-01 ",
            "",
            "20250401",
            "2025-0a-01",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dates_postgres_cannot_store_are_refused() {
        assert_eq!(parse_date("-5000-01-01", Some("%Y-%m-%d")), None);
        assert!(parse_date("-4713-11-24", Some("%Y-%m-%d")).is_some());
        assert_eq!(parse_date("-4713-11-23", Some("%Y-%m-%d")), None);
        assert_eq!(parse_timestamp("-5000-01-01 00:00:00"), None);
    }

    #[test]
    fn timestamps() {
        let t = |s| parse_timestamptz(s).map(|t| t.to_rfc3339());
        assert_eq!(
            t("2024-01-10T01:00:00+11:00"),
            Some("2024-01-09T14:00:00+00:00".into())
        );
        assert_eq!(
            t("2024-01-10 01:00:00"),
            Some("2024-01-10T01:00:00+00:00".into())
        );
        assert_eq!(t("2024-01-10"), Some("2024-01-10T00:00:00+00:00".into()));
        assert_eq!(t("yesterday"), None);
    }

    /// The direct reading agrees with chrono's general parsers on every
    /// spelling it takes, and leaves the others to them.
    #[test]
    fn the_direct_reading_agrees_with_the_general_parsers() {
        let mut taken = 0;
        for date in [
            "2024-01-10",
            "2024-02-29",
            "2023-02-29",
            "0001-01-01",
            "9999-12-31",
            "2024-13-01",
        ] {
            for sep in [" ", "T", "t", "  "] {
                for time in [
                    "01:00",
                    "23:59:59",
                    "00:00:00.5",
                    "12:34:56.123456789",
                    "12:34:56.1234567891",
                    "24:00:00",
                    "12:60:00",
                    "12:00:60",
                    "1:00:00",
                    "12:00:00.",
                ] {
                    for offset in [
                        "", "Z", "z", "+11:00", "-03:30", "+0530", "+05", "-12", "+24:00", "+05:3",
                        " +01", "UTC",
                    ] {
                        let s = format!("{date}{sep}{time}{offset}");
                        taken += usize::from(parse_iso_datetime(&s).is_some());
                        assert_eq!(parse_timestamptz(&s), general_timestamptz(&s), "{s:?}");
                        assert_eq!(parse_timestamp(&s), general_timestamp(&s), "{s:?}");
                    }
                }
            }
        }
        assert!(taken >= 150, "the direct reading took only {taken}");
    }
}
