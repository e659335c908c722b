//! The binary COPY codec: which PostgreSQL column types clue loads, how a
//! raw field becomes the typed value the column will store (checked against
//! the schema's rules and the type's limits), and how a typed value is
//! written in COPY's binary format.
//!
//! Architecture Invariant: a value the codec accepts is one PostgreSQL
//! accepts for the column (range, length, precision checked client-side),
//! so a bad value becomes a reject, never an aborted COPY.

use std::borrow::Cow;
use std::str::FromStr;

use bytes::{BufMut, BytesMut};
use postgres_types::{IsNull, ToSql, Type};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::domain::rules::{ColumnRule, Violation};
use crate::domain::value::{
    Value, parse_bool, parse_date, parse_number, parse_timestamp, parse_timestamptz,
};
use crate::sql::table::Column;

/// The PostgreSQL types clue loads, with the limits it checks client-side so
/// that a bad value becomes a reject instead of an aborted COPY.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PgKind {
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
    pub fn of(column: &Column) -> Option<PgKind> {
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
pub struct FieldCodec {
    pub name: String,
    pub kind: PgKind,
    pub nullable: bool,
    pub rule: Option<ColumnRule>,
}

impl FieldCodec {
    /// Parses one raw field into the value the column will store, checking
    /// the schema's rules and what the column's type can hold.
    pub fn parse<'a>(&self, raw: &'a str) -> Result<Value<'a>, Violation> {
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
            return Ok(Value::Null);
        }
        let value = self.parse_typed(value)?;
        // The rules check the value as parsed: nothing is parsed twice.
        if let Some(rule) = &self.rule {
            rule.check_value(raw, &value)?;
        }
        Ok(value)
    }

    /// Parses a non-empty, trimmed (unless text) value by the column's type.
    fn parse_typed<'a>(&self, value: &'a str) -> Result<Value<'a>, Violation> {
        let date_format = self.rule.as_ref().and_then(|r| r.date_format.as_deref());
        let not_a = |what: &str| Violation::new("type", format!("{value:?} is not {what}"));
        Ok(match self.kind {
            PgKind::Int2 => Value::Int(i64::from(int::<i16>(value, "smallint")?)),
            PgKind::Int4 => Value::Int(i64::from(int::<i32>(value, "integer")?)),
            PgKind::Int8 => Value::Int(int::<i64>(value, "bigint")?),
            // As stored: a real keeps a real's precision.
            PgKind::Float4 => Value::Float(f64::from(
                float(value)
                    .filter(|f| f.is_finite() && (*f as f32).is_finite())
                    .ok_or_else(|| not_a("a number"))? as f32,
            )),
            PgKind::Float8 => Value::Float(float(value).ok_or_else(|| not_a("a number"))?),
            PgKind::Numeric { precision, scale } => Value::Num(numeric(value, precision, scale)?),
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
                Value::Text(Cow::Borrowed(value))
            }
            PgKind::Bool => Value::Bool(parse_bool(value).ok_or_else(|| not_a("true or false"))?),
            PgKind::Date => Value::Date(parse_date(value, date_format).ok_or_else(|| {
                Violation::new(
                    "type",
                    format!(
                        "{value:?} is not a date in the form {}",
                        date_format.unwrap_or("YYYY-MM-DD")
                    ),
                )
            })?),
            PgKind::Timestamp => Value::Timestamp(
                parse_timestamp(value)
                    .ok_or_else(|| not_a("a timestamp such as 2025-04-01 13:45:00"))?,
            ),
            PgKind::TimestampTz => Value::TimestampTz(
                parse_timestamptz(value)
                    .ok_or_else(|| not_a("a timestamp such as 2025-04-01T13:45:00Z"))?,
            ),
            PgKind::Uuid => Value::Uuid(uuid::Uuid::parse_str(value).map_err(|_| not_a("a UUID"))?),
        })
    }

    /// Appends a parsed value's binary COPY encoding (length word and bytes).
    pub fn write(&self, value: &Value<'_>, out: &mut BytesMut) -> Result<(), Violation> {
        if value.is_null() {
            out.put_i32(-1);
            return Ok(());
        }
        let at = out.len();
        out.put_i32(0);
        let ty = self.kind.pg_type();
        let written = match (self.kind, value) {
            (PgKind::Int2, Value::Int(i)) => (*i as i16).to_sql(&ty, out),
            (PgKind::Int4, Value::Int(i)) => (*i as i32).to_sql(&ty, out),
            (PgKind::Int8, Value::Int(i)) => i.to_sql(&ty, out),
            (PgKind::Float4, Value::Float(f)) => (*f as f32).to_sql(&ty, out),
            (PgKind::Float8, Value::Float(f)) => f.to_sql(&ty, out),
            (PgKind::Numeric { .. }, Value::Num(d)) => d.to_sql(&ty, out),
            (PgKind::Text { .. }, Value::Text(t)) => t.as_ref().to_sql(&ty, out),
            (PgKind::Bool, Value::Bool(b)) => b.to_sql(&ty, out),
            (PgKind::Date, Value::Date(d)) => d.to_sql(&ty, out),
            (PgKind::Timestamp, Value::Timestamp(t)) => t.to_sql(&ty, out),
            (PgKind::TimestampTz, Value::TimestampTz(t)) => t.to_sql(&ty, out),
            (PgKind::Uuid, Value::Uuid(u)) => u.to_sql(&ty, out),
            _ => Err("a value of another type".into()),
        };
        match written {
            Ok(IsNull::No) => {
                let len = (out.len() - at - 4) as i32;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                Ok(())
            }
            // No value above encodes as NULL; a driver refusal is a value it cannot send.
            Ok(IsNull::Yes) | Err(_) => {
                out.truncate(at);
                Err(Violation::new(
                    "type",
                    format!("{value:?} cannot be stored in this column"),
                ))
            }
        }
    }

    /// Parses and writes one raw field, returning the value it stored.
    pub fn encode<'a>(&self, raw: &'a str, out: &mut BytesMut) -> Result<Value<'a>, Violation> {
        let value = self.parse(raw)?;
        self.write(&value, out)?;
        Ok(value)
    }
}

impl PgKind {
    /// Reads column `idx` of a row as the value this kind of column holds
    /// (the inverse of [`FieldCodec::write`]), for rows read back from a
    /// table or a source database.
    pub fn read(
        self,
        row: &tokio_postgres::Row,
        idx: usize,
    ) -> Result<Value<'static>, tokio_postgres::Error> {
        use crate::pg::numeric::ExactNumeric;
        let value = match self {
            PgKind::Int2 => row
                .try_get::<_, Option<i16>>(idx)?
                .map(|v| Value::Int(v.into())),
            PgKind::Int4 => row
                .try_get::<_, Option<i32>>(idx)?
                .map(|v| Value::Int(v.into())),
            PgKind::Int8 => row.try_get::<_, Option<i64>>(idx)?.map(Value::Int),
            PgKind::Float4 => row
                .try_get::<_, Option<f32>>(idx)?
                .map(|v| Value::Float(v.into())),
            PgKind::Float8 => row.try_get::<_, Option<f64>>(idx)?.map(Value::Float),
            PgKind::Numeric { .. } => row
                .try_get::<_, Option<ExactNumeric>>(idx)?
                .map(|v| Value::Num(v.0)),
            PgKind::Text { .. } => row
                .try_get::<_, Option<String>>(idx)?
                .map(|v| Value::Text(Cow::Owned(v))),
            PgKind::Bool => row.try_get::<_, Option<bool>>(idx)?.map(Value::Bool),
            PgKind::Date => row
                .try_get::<_, Option<chrono::NaiveDate>>(idx)?
                .map(Value::Date),
            PgKind::Timestamp => row
                .try_get::<_, Option<chrono::NaiveDateTime>>(idx)?
                .map(Value::Timestamp),
            PgKind::TimestampTz => row
                .try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(idx)?
                .map(Value::TimestampTz),
            PgKind::Uuid => row.try_get::<_, Option<uuid::Uuid>>(idx)?.map(Value::Uuid),
        };
        Ok(value.unwrap_or(Value::Null))
    }
}

/// Binary COPY framing.
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// Writes one binary COPY row of driver values, each with its column's
/// type (for the tables clue keeps itself: rejects, ledger entries).
pub fn put_row(out: &mut BytesMut, values: &[(&(dyn ToSql + Sync), Type)]) {
    out.put_i16(values.len() as i16);
    for (v, ty) in values {
        let at = out.len();
        out.put_i32(0);
        match v.to_sql_checked(ty, out) {
            Ok(IsNull::No) => {
                let len = (out.len() - at - 4) as i32;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            _ => {
                out.truncate(at);
                out.put_i32(-1);
            }
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
pub fn numeric(
    value: &str,
    precision: Option<u32>,
    scale: Option<u32>,
) -> Result<Decimal, Violation> {
    let mut d = parse_number(value)
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
            .map(|_| out[4..].to_vec())
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
    fn rules_check_the_value_as_stored() {
        let rules = crate::domain::rules::ValidationSchema::parse(
            "amount: {type: float, min: 0}\nqty: {type: int, max: 10}\n",
            "s.yaml",
        )
        .unwrap();
        let num = PgKind::Numeric {
            precision: Some(10),
            scale: Some(2),
        };
        let with = |name: &str, kind| FieldCodec {
            name: name.into(),
            kind,
            nullable: true,
            rule: rules.column(name).cloned(),
        };
        let amount = with("amount", num);
        // Rounded to the column's scale first: -0.001 is stored as 0.00.
        assert_eq!(
            amount.parse("-0.001"),
            Ok(Value::Num("0.00".parse().unwrap()))
        );
        assert_eq!(
            amount.parse("-0.01").unwrap_err().reason,
            "-0.01 is below the minimum 0"
        );
        // A whole-number rule on a numeric column still wants a whole number.
        let qty = with("qty", num);
        assert_eq!(
            qty.parse("4.5").unwrap_err().reason,
            "\"4.5\" is not a whole number"
        );
        assert_eq!(qty.parse("11").unwrap_err().rule, "max");
        assert_eq!(qty.parse(" 7 "), Ok(Value::Num("7.00".parse().unwrap())));
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
}
