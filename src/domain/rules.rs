//! Validation schemas for imports: prototype 000's YAML (`column: type`) and
//! the richer per-column form with rules, parsed into checked column rules.
//!
//! ```yaml
//! product_id: int                      # prototype 000's form
//! region: {type: str, allowed: [North, South, East, West]}
//! sales_amount: {type: float, min: 0, max: 1000000}
//! product_name: {type: str, max_length: 255, pattern: "^[A-Za-z0-9 ]+$"}
//! sales_date: {type: date, format: "%d/%m/%Y", required: true}
//! ```
//!
//! Architecture Invariant: this module does no I/O beyond reading the file it
//! is given; checking a value allocates only when the value is rejected.

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use regex::Regex;
use rust_decimal::Decimal;

use crate::domain::value::{
    Value, ValueType, parse_bool, parse_date, parse_number, parse_timestamptz,
};

/// Why a value broke a rule: the rule's name (stored in the error table) and a
/// sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub reason: String,
}

impl Violation {
    pub fn new(rule: &'static str, reason: impl Into<String>) -> Violation {
        Violation {
            rule,
            reason: reason.into(),
        }
    }
}

/// The rules of one column.
#[derive(Debug, Clone)]
pub struct ColumnRule {
    pub name: String,
    pub ty: ValueType,
    pub required: bool,
    pub min: Option<Bound>,
    pub max: Option<Bound>,
    pub pattern: Option<Regex>,
    pub allowed: Option<Vec<String>>,
    pub max_length: Option<usize>,
    /// chrono format of dates; ISO `%Y-%m-%d` when unset.
    pub date_format: Option<String>,
}

/// A min/max bound: a number, or a date for date columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Number(Decimal),
    Date(NaiveDate),
    Instant(DateTime<Utc>),
}

/// A parsed validation schema: columns in file order.
#[derive(Debug, Clone)]
pub struct ValidationSchema {
    pub columns: Vec<ColumnRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read schema {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: not valid YAML: {reason}")]
    Yaml { file: String, reason: String },
    #[error("{file}: {reason}")]
    Shape { file: String, reason: String },
    #[error("{file}: column {column:?}, field {field:?}: {reason}")]
    Field {
        file: String,
        column: String,
        field: String,
        reason: String,
    },
}

impl crate::error::Classify for ModelError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::BadInput
    }
}

const FIELDS: &[&str] = &[
    "type",
    "required",
    "min",
    "max",
    "pattern",
    "allowed",
    "max_length",
    "format",
];

/// The largest schema file clue reads: a schema is a page of text, not data.
pub const MAX_SCHEMA_BYTES: u64 = 1 << 20;

/// The deepest a definition file may nest: they are a few levels deep, and
/// a parser handed a hundred thousand levels spends seconds refusing them.
pub const MAX_NESTING: usize = 32;

/// Refuses YAML nested deeper than [`MAX_NESTING`] (flow `[`/`{`, or block
/// indentation), before any parser sees it. Returns the reason.
pub fn nesting(text: &str) -> Result<(), String> {
    let (mut depth, mut quote) = (0usize, None::<char>);
    for line in text.lines() {
        let indent = line.len() - line.trim_start_matches([' ', '-']).len();
        if quote.is_none() && indent / 2 > MAX_NESTING {
            return Err(format!("is indented deeper than {MAX_NESTING} levels"));
        }
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '#') => break,
                (None, '"' | '\'') => quote = Some(c),
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(format!("nests deeper than {MAX_NESTING} levels"));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        // A single-quoted scalar does not run on past its line here.
        if quote == Some('\'') {
            quote = None;
        }
    }
    Ok(())
}

impl ValidationSchema {
    pub fn load(path: &Path) -> Result<ValidationSchema, ModelError> {
        let file = path.display().to_string();
        let read_err = |source| ModelError::Read {
            file: file.clone(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_SCHEMA_BYTES {
            return Err(ModelError::Shape {
                file,
                reason: format!("is {size} bytes; a schema file is at most 1 MiB"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        ValidationSchema::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<ValidationSchema, ModelError> {
        nesting(text).map_err(|reason| ModelError::Shape {
            file: file.to_owned(),
            reason,
        })?;
        let value: yaml_serde::Value =
            yaml_serde::from_str(text).map_err(|e| ModelError::Yaml {
                file: file.to_owned(),
                reason: e.to_string(),
            })?;
        // A dataset definition carries its import schema as `columns`.
        if let Some(columns) = value.get("dataset").and(value.get("columns")) {
            return ValidationSchema::from_yaml(columns.clone(), file);
        }
        ValidationSchema::from_yaml(value, file)
    }

    /// Parses the `column: rules` mapping of a schema or dataset file.
    pub fn from_yaml(value: yaml_serde::Value, file: &str) -> Result<ValidationSchema, ModelError> {
        let shape = |reason: String| ModelError::Shape {
            file: file.to_owned(),
            reason,
        };
        let map = match value {
            yaml_serde::Value::Mapping(m) => m,
            yaml_serde::Value::Null => {
                return Err(shape("is empty; expected `column: type` lines".into()));
            }
            _ => return Err(shape("must be a mapping of column names to types".into())),
        };
        let mut columns: Vec<ColumnRule> = Vec::with_capacity(map.len());
        for (key, spec) in map {
            let name = match key {
                yaml_serde::Value::String(s) if !s.trim().is_empty() => s,
                other => {
                    return Err(shape(format!(
                        "column names must be text, found {}",
                        describe(&other)
                    )));
                }
            };
            let field_err = |field: &str, reason: String| ModelError::Field {
                file: file.to_owned(),
                column: name.clone(),
                field: field.to_owned(),
                reason,
            };
            let rule = match spec {
                yaml_serde::Value::String(ty) => {
                    ColumnRule::plain(&name, parse_type(&ty).map_err(|r| field_err("type", r))?)
                }
                yaml_serde::Value::Mapping(fields) => rule_of_mapping(&name, &fields, &field_err)?,
                other => {
                    return Err(field_err(
                        "type",
                        format!(
                            "expected a type name or a mapping of rules, found {}",
                            describe(&other)
                        ),
                    ));
                }
            };
            if columns.iter().any(|c| c.name == rule.name) {
                return Err(shape(format!("column {:?} appears twice", rule.name)));
            }
            columns.push(rule);
        }
        if columns.is_empty() {
            return Err(shape("declares no columns".into()));
        }
        Ok(ValidationSchema { columns })
    }

    pub fn column(&self, name: &str) -> Option<&ColumnRule> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// A value read as what bounds compare: a number, a date or an instant.
struct Point {
    number: Option<Decimal>,
    date: Option<NaiveDate>,
    instant: Option<DateTime<Utc>>,
}

impl ColumnRule {
    fn plain(name: &str, ty: ValueType) -> ColumnRule {
        ColumnRule {
            name: name.to_owned(),
            ty,
            required: true,
            min: None,
            max: None,
            pattern: None,
            allowed: None,
            max_length: None,
            date_format: None,
        }
    }

    /// Checks one raw value against the column's rules, reading it by the
    /// rule's own type (for values no column type has parsed). Empty values
    /// are the caller's business (they mean NULL unless the column is required).
    pub fn check(&self, raw: &str) -> Result<(), Violation> {
        let text = self.text_of(raw);
        let value = match self.ty {
            ValueType::Int => text.parse::<i64>().map(Value::Int).ok(),
            ValueType::Float => parse_number(text).map(Value::Num),
            ValueType::Date => parse_date(text, self.date_format.as_deref()).map(Value::Date),
            ValueType::Timestamp => parse_timestamptz(text).map(Value::TimestampTz),
            ValueType::Bool => parse_bool(text).map(Value::Bool),
            ValueType::Str => Some(Value::Text(text.into())),
        };
        self.check_value(raw, &value.unwrap_or(Value::Null))
    }

    /// Checks the rules against a value already parsed (by its column's
    /// type, as it will be stored), `raw` being the text it came from: the
    /// value is not parsed again unless the rule's type differs from the
    /// column's.
    pub fn check_value(&self, raw: &str, value: &Value<'_>) -> Result<(), Violation> {
        let text = self.text_of(raw);
        let number = match (self.ty, value) {
            (ValueType::Int | ValueType::Float, Value::Int(i)) => Some(Decimal::from(*i)),
            (ValueType::Int | ValueType::Float, Value::Num(d)) => Some(*d),
            (ValueType::Int | ValueType::Float, Value::Float(f)) => Decimal::try_from(*f).ok(),
            (ValueType::Int | ValueType::Float, _) => parse_number(text),
            _ => None,
        };
        let date = match (self.ty, value) {
            (ValueType::Date, Value::Date(d)) => Some(*d),
            (ValueType::Date, _) => parse_date(text, self.date_format.as_deref()),
            _ => None,
        };
        let instant = match (self.ty, value) {
            (ValueType::Timestamp, Value::TimestampTz(t)) => Some(*t),
            (ValueType::Timestamp, Value::Timestamp(t)) => Some(t.and_utc()),
            (ValueType::Timestamp, _) => parse_timestamptz(text),
            _ => None,
        };
        let point = Point {
            number,
            date,
            instant,
        };
        self.check_type(text, value, &point)?;
        self.check_bounds(text, &point)?;
        if let Some(allowed) = &self.allowed
            && !allowed.iter().any(|a| a == text)
        {
            return Err(Violation::new(
                "allowed",
                format!("{text:?} is not one of {}", allowed.join(", ")),
            ));
        }
        if let Some(max) = self.max_length {
            let len = text.chars().count();
            if len > max {
                return Err(Violation::new(
                    "max_length",
                    format!("is {len} characters long, more than {max}"),
                ));
            }
        }
        if let Some(p) = &self.pattern
            && !p.is_match(text)
        {
            return Err(Violation::new(
                "pattern",
                format!("{text:?} does not match {}", p.as_str()),
            ));
        }
        Ok(())
    }

    /// The text rules apply to: as received for text, trimmed otherwise.
    fn text_of<'r>(&self, raw: &'r str) -> &'r str {
        if self.ty == ValueType::Str {
            raw
        } else {
            raw.trim()
        }
    }

    /// Whether the value is of the rule's type.
    fn check_type(&self, text: &str, value: &Value<'_>, point: &Point) -> Result<(), Violation> {
        let fits = match self.ty {
            ValueType::Int => matches!(value, Value::Int(_)) || text.parse::<i64>().is_ok(),
            ValueType::Float => point.number.is_some(),
            ValueType::Date => point.date.is_some(),
            ValueType::Timestamp => point.instant.is_some(),
            ValueType::Bool => matches!(value, Value::Bool(_)) || parse_bool(text).is_some(),
            ValueType::Str => true,
        };
        if fits {
            return Ok(());
        }
        let what = match self.ty {
            ValueType::Int => "a whole number".to_owned(),
            ValueType::Float => "a number".to_owned(),
            ValueType::Date => format!(
                "a date in the form {}",
                self.date_format.as_deref().unwrap_or("YYYY-MM-DD")
            ),
            ValueType::Timestamp => "a timestamp such as 2025-04-01T13:45:00Z".to_owned(),
            _ => "true or false".to_owned(),
        };
        Err(Violation::new("type", format!("{text:?} is not {what}")))
    }

    /// `min` and `max`, on numbers and dates.
    fn check_bounds(&self, text: &str, point: &Point) -> Result<(), Violation> {
        for (bound, is_min) in [(&self.min, true), (&self.max, false)] {
            let Some(bound) = bound else { continue };
            let order = match (bound, point) {
                (
                    Bound::Number(b),
                    Point {
                        number: Some(n), ..
                    },
                ) => Some(n.cmp(b)),
                (Bound::Date(b), Point { date: Some(d), .. }) => Some(d.cmp(b)),
                (
                    Bound::Instant(b),
                    Point {
                        instant: Some(t), ..
                    },
                ) => Some(t.cmp(b)),
                _ => None,
            };
            let out = match order {
                Some(std::cmp::Ordering::Less) => is_min,
                Some(std::cmp::Ordering::Greater) => !is_min,
                _ => false,
            };
            if out {
                let (rule, word) = if is_min {
                    ("min", "below the minimum")
                } else {
                    ("max", "above the maximum")
                };
                let shown = match bound {
                    Bound::Number(b) => b.to_string(),
                    Bound::Date(d) => d.to_string(),
                    Bound::Instant(t) => t.to_rfc3339(),
                };
                return Err(Violation::new(rule, format!("{text} is {word} {shown}")));
            }
        }
        Ok(())
    }

    pub fn type_name(&self) -> &'static str {
        self.ty.name()
    }
}

/// The rules of a column written as a mapping (`{type: int, min: 0, ...}`).
fn rule_of_mapping(
    name: &str,
    fields: &yaml_serde::Mapping,
    field_err: &impl Fn(&str, String) -> ModelError,
) -> Result<ColumnRule, ModelError> {
    let get = |k: &str| fields.get(k).cloned();
    for k in fields.keys() {
        let k = k.as_str().unwrap_or("");
        if !FIELDS.contains(&k) {
            return Err(field_err(
                k,
                format!("unknown field; expected one of {}", FIELDS.join(", ")),
            ));
        }
    }
    let ty = match get("type") {
        Some(yaml_serde::Value::String(t)) => parse_type(&t).map_err(|r| field_err("type", r))?,
        Some(other) => {
            return Err(field_err(
                "type",
                format!("must be text, found {}", describe(&other)),
            ));
        }
        None => return Err(field_err("type", "is missing".into())),
    };
    let mut rule = ColumnRule::plain(name, ty);
    if let Some(v) = get("required") {
        rule.required = v.as_bool().ok_or_else(|| {
            field_err(
                "required",
                format!("must be true or false, found {}", describe(&v)),
            )
        })?;
    }
    if let Some(v) = get("format") {
        if ty != ValueType::Date {
            return Err(field_err("format", "applies only to date columns".into()));
        }
        let f = v
            .as_str()
            .ok_or_else(|| field_err("format", "must be text such as \"%d/%m/%Y\"".into()))?;
        check_date_format(f).map_err(|r| field_err("format", r))?;
        rule.date_format = Some(f.to_owned());
    }
    for (field, slot) in [("min", &mut rule.min), ("max", &mut rule.max)] {
        if let Some(v) = get(field) {
            *slot = Some(
                parse_bound(&v, ty, rule.date_format.as_deref())
                    .map_err(|r| field_err(field, r))?,
            );
        }
    }
    if let (Some(lo), Some(hi)) = (&rule.min, &rule.max) {
        let inverted = match (lo, hi) {
            (Bound::Number(a), Bound::Number(b)) => a > b,
            (Bound::Date(a), Bound::Date(b)) => a > b,
            _ => false,
        };
        if inverted {
            return Err(field_err("max", "is smaller than min".into()));
        }
    }
    if let Some(v) = get("pattern") {
        let p = v
            .as_str()
            .ok_or_else(|| field_err("pattern", "must be a regular expression in quotes".into()))?;
        rule.pattern = Some(Regex::new(p).map_err(|e| {
            field_err("pattern", format!("is not a valid regular expression: {e}"))
        })?);
    }
    if let Some(v) = get("allowed") {
        let items = v
            .as_sequence()
            .ok_or_else(|| field_err("allowed", "must be a list such as [North, South]".into()))?;
        let mut allowed = Vec::with_capacity(items.len());
        for item in items {
            allowed.push(scalar_text(item).ok_or_else(|| {
                field_err(
                    "allowed",
                    format!("items must be plain values, found {}", describe(item)),
                )
            })?);
        }
        if allowed.is_empty() {
            return Err(field_err(
                "allowed",
                "is empty, so no value could pass".into(),
            ));
        }
        rule.allowed = Some(allowed);
    }
    if let Some(v) = get("max_length") {
        let n = v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
            field_err(
                "max_length",
                format!("must be a positive whole number, found {}", describe(&v)),
            )
        })?;
        rule.max_length = Some(n as usize);
    }
    Ok(rule)
}

fn parse_type(name: &str) -> Result<ValueType, String> {
    ValueType::parse(name)
        .ok_or_else(|| format!("unknown type {name:?}; expected int, float, str, date or bool"))
}

fn check_date_format(f: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "{f:?} is not a valid date format (use strftime codes such as %Y-%m-%d)"
        ));
    }
    Ok(())
}

fn parse_bound(
    v: &yaml_serde::Value,
    ty: ValueType,
    date_format: Option<&str>,
) -> Result<Bound, String> {
    match ty {
        ValueType::Int | ValueType::Float => scalar_text(v)
            .as_deref()
            .and_then(parse_number)
            .map(Bound::Number)
            .ok_or_else(|| format!("must be a number, found {}", describe(v))),
        ValueType::Date => scalar_text(v)
            .as_deref()
            .and_then(|s| parse_date(s, None).or_else(|| parse_date(s, date_format)))
            .map(Bound::Date)
            .ok_or_else(|| format!("must be a date YYYY-MM-DD, found {}", describe(v))),
        ValueType::Timestamp => scalar_text(v)
            .as_deref()
            .and_then(parse_timestamptz)
            .map(Bound::Instant)
            .ok_or_else(|| {
                format!(
                    "must be a timestamp such as 2025-04-01T00:00:00Z, found {}",
                    describe(v)
                )
            }),
        ValueType::Str | ValueType::Bool => Err(format!(
            "does not apply to {} columns (use max_length, pattern or allowed)",
            ty.name()
        )),
    }
}

fn scalar_text(v: &yaml_serde::Value) -> Option<String> {
    match v {
        yaml_serde::Value::String(s) => Some(s.clone()),
        yaml_serde::Value::Number(n) => Some(n.to_string()),
        yaml_serde::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn describe(v: &yaml_serde::Value) -> String {
    match v {
        yaml_serde::Value::Null => "nothing".into(),
        yaml_serde::Value::Bool(b) => format!("{b}"),
        yaml_serde::Value::Number(n) => format!("{n}"),
        yaml_serde::Value::String(s) => format!("{s:?}"),
        yaml_serde::Value::Sequence(_) => "a list".into(),
        yaml_serde::Value::Mapping(_) => "a mapping".into(),
        yaml_serde::Value::Tagged(_) => "a tagged value".into(),
    }
}

#[cfg(test)]
mod tests {
    /// Nesting is refused before parsing (a probe's 100,000 levels took a
    /// parser 18 s); brackets in quotes and comments do not count.
    #[test]
    fn definitions_nested_too_deep_are_refused_before_parsing() {
        let check = |text: &str, expect: Result<(), &str>| {
            assert_eq!(
                super::nesting(text),
                expect.map_err(str::to_owned),
                "{text:.60}"
            );
        };
        let deep = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        check(&deep, Err("nests deeper than 32 levels"));
        let indented: String = (0..40)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect();
        check(&indented, Err("is indented deeper than 32 levels"));
        check(
            "name: {type: str, pattern: \"^[[[[{{{{[A-Z]+$\", allowed: [a, b]} # [[[[[\n",
            Ok(()),
        );
        check("x: '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['\n", Ok(()));
        let err = ValidationSchema::parse(&deep, "deep.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "deep.yaml: nests deeper than 32 levels");
    }

    use super::*;

    const PROTOTYPE: &str = "product_id: int\nproduct_name: str\nregion: str\nsales_date: date\nquantity_sold: int\nsales_amount: float\nunit_price: float\n";

    #[test]
    fn prototype_schema_parses_in_order() {
        let s = ValidationSchema::parse(PROTOTYPE, "sales_data.yaml").unwrap();
        let names: Vec<_> = s
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_name()))
            .collect();
        assert_eq!(
            names,
            [
                ("product_id", "int"),
                ("product_name", "str"),
                ("region", "str"),
                ("sales_date", "date"),
                ("quantity_sold", "int"),
                ("sales_amount", "float"),
                ("unit_price", "float")
            ]
        );
    }

    fn check_schema_error(yaml: &str, expect: &str) {
        let err = ValidationSchema::parse(yaml, "s.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(err, expect, "for {yaml:?}");
    }

    #[test]
    fn malformed_schemas_name_file_and_field() {
        check_schema_error("", "s.yaml: is empty; expected `column: type` lines");
        check_schema_error(
            "- a\n- b\n",
            "s.yaml: must be a mapping of column names to types",
        );
        check_schema_error(
            "a: integr\n",
            "s.yaml: column \"a\", field \"type\": unknown type \"integr\"; expected int, float, str, date or bool",
        );
        check_schema_error(
            "a: {min: 1}\n",
            "s.yaml: column \"a\", field \"type\": is missing",
        );
        check_schema_error(
            "a: {type: int, mni: 1}\n",
            "s.yaml: column \"a\", field \"mni\": unknown field; expected one of type, required, min, max, pattern, allowed, max_length, format",
        );
        check_schema_error(
            "a: {type: int, min: 5, max: 1}\n",
            "s.yaml: column \"a\", field \"max\": is smaller than min",
        );
        check_schema_error(
            "a: {type: str, pattern: \"(\"}\n",
            "s.yaml: column \"a\", field \"pattern\": is not a valid regular expression: regex parse error:\n    (\n    ^\nerror: unclosed group",
        );
        check_schema_error(
            "a: {type: str, min: 3}\n",
            "s.yaml: column \"a\", field \"min\": does not apply to str columns (use max_length, pattern or allowed)",
        );
        check_schema_error(
            "a: {type: int, format: \"%Y\"}\n",
            "s.yaml: column \"a\", field \"format\": applies only to date columns",
        );
        check_schema_error(
            "a: {type: str, allowed: []}\n",
            "s.yaml: column \"a\", field \"allowed\": is empty, so no value could pass",
        );
        check_schema_error(
            "a: {type: str, max_length: -2}\n",
            "s.yaml: column \"a\", field \"max_length\": must be a positive whole number, found -2",
        );
        check_schema_error(
            "a: [1]\n",
            "s.yaml: column \"a\", field \"type\": expected a type name or a mapping of rules, found a list",
        );
        assert!(
            ValidationSchema::parse("a: int\n  b: : :\n", "s.yaml")
                .unwrap_err()
                .to_string()
                .starts_with("s.yaml: not valid YAML")
        );
    }

    fn check_value(rule_yaml: &str, raw: &str, expect: Result<(), (&str, &str)>) {
        let s = ValidationSchema::parse(&format!("c: {rule_yaml}\n"), "s.yaml").unwrap();
        let got = s.columns[0].check(raw);
        let got = got.map_err(|v| (v.rule, v.reason));
        let expect = expect.map_err(|(r, m)| (r, m.to_owned()));
        assert_eq!(got, expect, "rule {rule_yaml} value {raw:?}");
    }

    #[test]
    fn values_against_rules() {
        check_value("int", "42", Ok(()));
        check_value("int", " 42 ", Ok(()));
        check_value("int", "4.2", Err(("type", "\"4.2\" is not a whole number")));
        check_value("float", "xxxx", Err(("type", "\"xxxx\" is not a number")));
        check_value("float", "1e3", Ok(()));
        check_value("float", "NaN", Err(("type", "\"NaN\" is not a number")));
        check_value("date", "2025-04-01", Ok(()));
        check_value(
            "date",
            "2025-02-30",
            Err((
                "type",
                "\"2025-02-30\" is not a date in the form YYYY-MM-DD",
            )),
        );
        check_value("{type: date, format: \"%d/%m/%Y\"}", "01/04/2025", Ok(()));
        check_value(
            "{type: date, min: 2020-01-01}",
            "2019-12-31",
            Err(("min", "2019-12-31 is below the minimum 2020-01-01")),
        );
        check_value(
            "{type: float, min: 0}",
            "-0.01",
            Err(("min", "-0.01 is below the minimum 0")),
        );
        check_value(
            "{type: int, max: 100}",
            "101",
            Err(("max", "101 is above the maximum 100")),
        );
        check_value(
            "{type: str, allowed: [North, South]}",
            "East",
            Err(("allowed", "\"East\" is not one of North, South")),
        );
        check_value(
            "{type: str, max_length: 3}",
            "Über",
            Err(("max_length", "is 4 characters long, more than 3")),
        );
        check_value("{type: str, max_length: 4}", "Über", Ok(()));
        check_value(
            "{type: str, pattern: \"^W\"}",
            "Gadget",
            Err(("pattern", "\"Gadget\" does not match ^W")),
        );
        check_value("timestamp", "2024-01-10T01:00:00+11:00", Ok(()));
        check_value("timestamp", "2024-01-10 01:00:00", Ok(()));
        check_value(
            "timestamp",
            "yesterday",
            Err((
                "type",
                "\"yesterday\" is not a timestamp such as 2025-04-01T13:45:00Z",
            )),
        );
        // Offsets are honoured: 2024-01-01T00:30:00+01:00 is 2023-12-31T23:30Z.
        check_value(
            "{type: timestamp, min: \"2024-01-01T00:00:00Z\"}",
            "2024-01-01T00:30:00+01:00",
            Err((
                "min",
                "2024-01-01T00:30:00+01:00 is below the minimum 2024-01-01T00:00:00+00:00",
            )),
        );
        check_value(
            "{type: timestamp, min: \"2024-01-01T00:00:00Z\"}",
            "2024-01-01T00:30:00-01:00",
            Ok(()),
        );
        check_value("bool", "yes", Ok(()));
        check_value(
            "bool",
            "maybe",
            Err(("type", "\"maybe\" is not true or false")),
        );
    }
}
