//! Query parameters of the reports: their documentation for OpenAPI and
//! [`parse_params`], which parses a query string strictly.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, header};
use chrono::NaiveDate;
use utoipa::{IntoParams, ToSchema};

use super::problem::ApiError;
use crate::serve::reports::{Report, ReportFilter};

/// Response format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Csv,
}

/// Parameters of every report (documentation; parsing is [`parse_params`]).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct ReportParams {
    /// First day included, `YYYY-MM-DD`.
    #[param(example = "2024-01-01")]
    start_date: Option<NaiveDate>,
    /// Last day included, `YYYY-MM-DD`.
    #[param(example = "2025-12-31")]
    end_date: Option<NaiveDate>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    format: Option<Format>,
}

/// Parameters of the breakdown report (documentation).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct BreakdownParams {
    /// First day included, `YYYY-MM-DD`.
    #[param(example = "2024-01-01")]
    start_date: Option<NaiveDate>,
    /// Last day included, `YYYY-MM-DD`.
    #[param(example = "2025-12-31")]
    end_date: Option<NaiveDate>,
    /// Only this product name (exact match).
    #[param(example = "WidgetA")]
    product: Option<String>,
    /// Only this region (exact match).
    #[param(example = "North")]
    region: Option<String>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    format: Option<Format>,
}

/// A string schema of these values only.
pub(super) fn one_of(values: &[&str]) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// A day (`YYYY-MM-DD`) or an instant (RFC 3339).
pub(super) fn date_or_instant() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{
        KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
    };
    let of = |f| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(f)))
    };
    Schema::OneOf(
        OneOfBuilder::new()
            .item(of(KnownFormat::Date))
            .item(of(KnownFormat::DateTime))
            .build(),
    )
}

const MAX_TEXT_PARAM: usize = 255;

/// Splits a query string into decoded name/value pairs, refusing (rather
/// than replacing) bytes that do not decode to UTF-8 text.
pub(super) fn query_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |part: &str, name: Option<&str>| -> Result<String, ApiError> {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| ApiError::InvalidParameter {
                name: name.map_or_else(|| "query".to_owned(), |n| n.chars().take(64).collect()),
                reason: "is not valid UTF-8 text once percent-decoded".into(),
            })
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name, None)?;
            let value = decode(value, Some(&name))?;
            Ok((name, value))
        })
        .collect()
}

/// A report's query string, parsed strictly: known names only, each at
/// most once; typed by the accessors, each naming its parameter.
pub(super) struct ParamValues(BTreeMap<String, String>);

fn invalid(name: &str, reason: String) -> ApiError {
    ApiError::InvalidParameter {
        name: name.to_owned(),
        reason,
    }
}

impl ParamValues {
    pub(super) fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<ParamValues, ApiError> {
        let mut values = BTreeMap::new();
        for (name, value) in query_pairs(raw.unwrap_or(""))? {
            if !allowed.contains(&name.as_str()) {
                let shown: String = name.chars().take(64).collect();
                return Err(invalid(
                    &shown,
                    format!(
                        "is not a parameter of this report (expected {})",
                        allowed.join(", ")
                    ),
                ));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(invalid(&name, "is given more than once".into()));
            }
        }
        Ok(ParamValues(values))
    }

    pub(super) fn date(&self, name: &str) -> Result<Option<NaiveDate>, ApiError> {
        match self.0.get(name).map(|v| v.trim()) {
            None => Ok(None),
            Some("") => Err(invalid(
                name,
                "is empty; give a date in the form YYYY-MM-DD or leave the parameter out".into(),
            )),
            Some(v) => crate::domain::value::parse_date(v, None)
                .map(Some)
                .ok_or_else(|| {
                    invalid(
                        name,
                        format!(
                            "{:?} is not a date in the form YYYY-MM-DD",
                            v.chars().take(64).collect::<String>()
                        ),
                    )
                }),
        }
    }

    /// A whole-number parameter, or a 400 naming it.
    pub(super) fn integer<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.text(name)?
            .map(|v| {
                v.trim().parse::<T>().map_err(|_| {
                    invalid(
                        name,
                        format!(
                            "{:?} is not a whole number",
                            v.chars().take(64).collect::<String>()
                        ),
                    )
                })
            })
            .transpose()
    }

    pub(super) fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) if v.chars().count() > MAX_TEXT_PARAM => Err(invalid(
                name,
                format!("is longer than {MAX_TEXT_PARAM} characters"),
            )),
            Some(v) if v.contains('\0') => Err(invalid(name, "contains a NUL character".into())),
            Some(v) => Ok(Some(v.clone())),
        }
    }

    /// `start_date` and `end_date`, in order.
    pub(super) fn range(&self) -> Result<(Option<NaiveDate>, Option<NaiveDate>), ApiError> {
        let (start, end) = (self.date("start_date")?, self.date("end_date")?);
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            return Err(invalid("start_date", format!("{s} is after end_date {e}")));
        }
        Ok((start, end))
    }

    /// `format`, else the `Accept` header, else JSON.
    pub(super) fn format(&self, headers: &HeaderMap) -> Result<Format, ApiError> {
        match self.0.get("format").map(|f| f.to_ascii_lowercase()) {
            Some(f) if f == "csv" => Ok(Format::Csv),
            Some(f) if f == "json" => Ok(Format::Json),
            Some(f) => Err(invalid(
                "format",
                format!(
                    "{:?} is not json or csv",
                    f.chars().take(32).collect::<String>()
                ),
            )),
            None => {
                let accept = headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if accept.split(',').any(|m| m.trim().starts_with("text/csv")) {
                    Ok(Format::Csv)
                } else {
                    Ok(Format::Json)
                }
            }
        }
    }
}

/// Parses a prototype-000 report's query string.
pub(super) fn parse_params(
    raw: Option<&str>,
    headers: &HeaderMap,
    report: Report,
) -> Result<(ReportFilter, Format), ApiError> {
    let allowed: &[&str] = match report {
        Report::MonthlyBreakdown => &["start_date", "end_date", "product", "region", "format"],
        _ => &["start_date", "end_date", "format"],
    };
    let values = ParamValues::parse(raw, allowed)?;
    let (start_date, end_date) = values.range()?;
    let filter = ReportFilter {
        start_date,
        end_date,
        product: values.text("product")?,
        region: values.text("region")?,
    };
    Ok((filter, values.format(headers)?))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};

    use super::*;

    fn check(query: &str, report: Report, expect: Result<(&str, Format), (&str, &str)>) {
        let got = parse_params(Some(query), &HeaderMap::new(), report);
        match (got, expect) {
            (Ok((filter, format)), Ok((debug, f))) => {
                assert_eq!(format, f, "{query}");
                let shown = format!(
                    "{:?} {:?} {:?} {:?}",
                    filter.start_date.map(|d| d.to_string()),
                    filter.end_date.map(|d| d.to_string()),
                    filter.product,
                    filter.region
                );
                assert_eq!(shown, debug, "{query}");
            }
            (Err(ApiError::InvalidParameter { name, reason }), Err((n, r))) => {
                assert_eq!((name.as_str(), reason.as_str()), (n, r), "{query}");
            }
            (got, expect) => panic!("{query}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn report_parameters() {
        use Report::*;
        check(
            "",
            MonthlySummary,
            Ok(("None None None None", Format::Json)),
        );
        check(
            "start_date=2024-01-01&end_date=2025-12-12",
            MonthlySummary,
            Ok((
                "Some(\"2024-01-01\") Some(\"2025-12-12\") None None",
                Format::Json,
            )),
        );
        check(
            "format=CSV",
            Top5ByRevenue,
            Ok(("None None None None", Format::Csv)),
        );
        // The document says a date: an empty one is not "absent".
        check(
            "start_date=&format=CSV",
            Top5ByRevenue,
            Err((
                "start_date",
                "is empty; give a date in the form YYYY-MM-DD or leave the parameter out",
            )),
        );
        // Bytes that are not UTF-8 are refused, not replaced.
        check(
            "region=%FF%FE",
            MonthlyBreakdown,
            Err(("region", "is not valid UTF-8 text once percent-decoded")),
        );
        check(
            "%FF=1",
            MonthlyBreakdown,
            Err(("query", "is not valid UTF-8 text once percent-decoded")),
        );
        check(
            "region=North+East&product=Widget%2BA",
            MonthlyBreakdown,
            Ok((
                "None None Some(\"Widget+A\") Some(\"North East\")",
                Format::Json,
            )),
        );
        check(
            "product=Widget%20A&region=North",
            MonthlyBreakdown,
            Ok(("None None Some(\"Widget A\") Some(\"North\")", Format::Json)),
        );
        check(
            "start_date=2025-13-01",
            MonthlySummary,
            Err((
                "start_date",
                "\"2025-13-01\" is not a date in the form YYYY-MM-DD",
            )),
        );
        check(
            "end_date=yesterday",
            MonthlySummary,
            Err((
                "end_date",
                "\"yesterday\" is not a date in the form YYYY-MM-DD",
            )),
        );
        check(
            "start_date=2025-02-01&end_date=2025-01-31",
            MonthlySummary,
            Err(("start_date", "2025-02-01 is after end_date 2025-01-31")),
        );
        // Compared as dates, not strings (prototype 000 compared strings).
        check(
            "start_date=2025-9-01",
            MonthlySummary,
            Err((
                "start_date",
                "\"2025-9-01\" is not a date in the form YYYY-MM-DD",
            )),
        );
        check(
            "product=x",
            MonthlySummary,
            Err((
                "product",
                "is not a parameter of this report (expected start_date, end_date, format)",
            )),
        );
        check(
            "start_date=2025-01-01&start_date=2025-02-01",
            MonthlySummary,
            Err(("start_date", "is given more than once")),
        );
        check(
            "format=xml",
            MonthlySummary,
            Err(("format", "\"xml\" is not json or csv")),
        );
        check(
            &format!("region={}", "r".repeat(300)),
            MonthlyBreakdown,
            Err(("region", "is longer than 255 characters")),
        );
    }

    #[test]
    fn accept_header_selects_csv() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/csv;q=0.9, */*;q=0.1"),
        );
        let (_, format) = parse_params(None, &headers, Report::MonthlySummary).unwrap();
        assert_eq!(format, Format::Csv);
    }
}
