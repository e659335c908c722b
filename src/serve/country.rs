//! Prototype 001's batch analytics over the `sales` dataset, through the
//! planner: each seller country's share of revenue and items, the pair of
//! countries trading the most, and the revenue of buyers back a week later.
//!
//! Architecture Invariant: the database answers planner queries (rollups
//! where they cover); shares, pairs and changes are folded here in exact
//! decimals, so they equal the same SQL over the facts.

use std::collections::{BTreeMap, HashMap};

use chrono::{Days, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

use crate::domain::dataset::Catalog;
use crate::pg::database::Database;
use crate::plan::Served;
use crate::plan::View;
use crate::serve::cache::Cache;
use crate::serve::execute::{self, Cell, Row};
use crate::serve::query::{OrderRequest, QueryError, QueryRequest};
use crate::serve::reports::Money;

/// The dataset the analytics read.
pub const DATASET: &str = "sales";
/// The prototype's weeks: the first and second of January 2021.
pub const WEEK1_START: NaiveDate = NaiveDate::from_ymd_opt(2021, 1, 1).expect("a date");
pub const WEEK2_START: NaiveDate = NaiveDate::from_ymd_opt(2021, 1, 8).expect("a date");

/// A percentage with two decimals (half away from zero), a JSON number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percent(Decimal);

impl Percent {
    /// `part` as a percentage of `whole`; `None` when `whole` is 0.
    pub fn of(part: Decimal, whole: Decimal) -> Option<Percent> {
        if whole.is_zero() {
            return None;
        }
        let mut p = (part * Decimal::ONE_HUNDRED / whole)
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        p.rescale(2);
        Some(Percent(p))
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Cell::Decimal(self.0).serialize(s)
    }
}

impl utoipa::PartialSchema for Percent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some("A percentage with exactly two decimals."))
            .examples([serde_json::json!(12.5)])
            .into()
    }
}

impl utoipa::ToSchema for Percent {}

/// A seller country's part of the sales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CountryContribution {
    pub seller_country: String,
    pub revenue: Money,
    /// Percent of the total revenue (null when the total is 0).
    pub revenue_share: Option<Percent>,
    /// Items sold (one per sale).
    pub items: i64,
    pub items_share: Option<Percent>,
}

/// Two distinct countries and the revenue of their trade, both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CountryRelationship {
    /// The pair in alphabetical order.
    pub country_a: String,
    pub country_b: String,
    /// Sales with a seller in one and a buyer in the other.
    pub revenue: Money,
}

/// The buyers of two weeks who bought in both, and their revenue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RepeatBuyerRevenue {
    #[schema(value_type = String, format = Date)]
    pub week1_start: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub week2_start: NaiveDate,
    pub repeat_buyers: i64,
    pub week1_revenue: Money,
    pub week2_revenue: Money,
    /// (week 2 − week 1) / week 1 in percent; null when week 1 is 0.
    pub change_pct: Option<Percent>,
}

/// Which analysis, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountryReport {
    Contribution {
        start_date: Option<NaiveDate>,
        end_date: Option<NaiveDate>,
    },
    Relationships {
        start_date: Option<NaiveDate>,
        end_date: Option<NaiveDate>,
    },
    RepeatBuyers {
        week1_start: NaiveDate,
        week2_start: NaiveDate,
    },
}

impl CountryReport {
    /// The path segment, also naming CSV downloads.
    pub fn slug(&self) -> &'static str {
        match self {
            CountryReport::Contribution { .. } => "country-contribution",
            CountryReport::Relationships { .. } => "top-country-relationships",
            CountryReport::RepeatBuyers { .. } => "repeat-buyer-revenue",
        }
    }

    /// The days the answer reads (for the cache), both included.
    pub fn range(&self) -> (Option<NaiveDate>, Option<NaiveDate>) {
        match *self {
            CountryReport::Contribution {
                start_date,
                end_date,
            }
            | CountryReport::Relationships {
                start_date,
                end_date,
            } => (start_date, end_date),
            CountryReport::RepeatBuyers {
                week1_start,
                week2_start,
            } => (
                Some(week1_start.min(week2_start)),
                Some(week_end(week1_start.max(week2_start))),
            ),
        }
    }
}

/// The last day of the week starting on `start`.
fn week_end(start: NaiveDate) -> NaiveDate {
    start
        .checked_add_days(Days::new(6))
        .unwrap_or(NaiveDate::MAX)
}

/// An analysis's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountryRows {
    Contribution(Vec<CountryContribution>),
    Relationships(Vec<CountryRelationship>),
    RepeatBuyers(Vec<RepeatBuyerRevenue>),
}

fn query(
    measures: &[&str],
    dimensions: &[&str],
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
) -> QueryRequest {
    QueryRequest {
        dataset: DATASET.to_owned(),
        measures: measures.iter().map(|s| s.to_string()).collect(),
        dimensions: dimensions.iter().map(|s| s.to_string()).collect(),
        granularity: None,
        start_date,
        end_date,
        from: None,
        to: None,
        filters: vec![],
        order: dimensions
            .iter()
            .map(|d| OrderRequest {
                field: d.to_string(),
                desc: false,
            })
            .collect(),
        limit: None,
        gap_fill: false,
        time_zone: None,
    }
}

/// Runs an analysis; returns its rows and where they came from.
pub async fn run(
    db: &Database,
    catalog: &Catalog,
    cache: Option<&Cache>,
    report: &CountryReport,
    view: &View,
) -> Result<(CountryRows, Vec<Served>), QueryError> {
    let ask = |q: QueryRequest| async move {
        execute::execute(db, catalog, &q, view, false, cache).await
    };
    match *report {
        CountryReport::Contribution {
            start_date,
            end_date,
        } => {
            let q = query(
                &["revenue", "sales_count"],
                &["ID_SELLER_COUNTRY"],
                start_date,
                end_date,
            );
            let answer = ask(q).await?;
            Ok((
                CountryRows::Contribution(contributions(&answer.rows)),
                answer.served_from,
            ))
        }
        CountryReport::Relationships {
            start_date,
            end_date,
        } => {
            let q = query(
                &["revenue"],
                &["ID_SELLER_COUNTRY", "ID_BUYER_COUNTRY"],
                start_date,
                end_date,
            );
            let answer = ask(q).await?;
            Ok((
                CountryRows::Relationships(top_relationship(&answer.rows)),
                answer.served_from,
            ))
        }
        CountryReport::RepeatBuyers {
            week1_start,
            week2_start,
        } => {
            let week = |start: NaiveDate| {
                query(
                    &["revenue"],
                    &["ID_BUYER"],
                    Some(start),
                    Some(week_end(start)),
                )
            };
            let first = ask(week(week1_start)).await?;
            let second = ask(week(week2_start)).await?;
            let row = repeat_buyers(week1_start, week2_start, &first.rows, &second.rows);
            let mut served = first.served_from;
            served.extend(second.served_from);
            Ok((CountryRows::RepeatBuyers(vec![row]), served))
        }
    }
}

/// Shares of revenue and items, largest revenue first (then by country).
fn contributions(rows: &[Row]) -> Vec<CountryContribution> {
    let revenue_total: Decimal = rows.iter().map(|r| r.decimal("revenue")).sum();
    let items_total: Decimal = rows.iter().map(|r| r.decimal("sales_count")).sum();
    let mut out: Vec<CountryContribution> = rows
        .iter()
        .map(|r| {
            let revenue = r.decimal("revenue");
            let items = r.decimal("sales_count");
            CountryContribution {
                seller_country: r.text("ID_SELLER_COUNTRY").to_owned(),
                revenue: Money::new(revenue),
                revenue_share: Percent::of(revenue, revenue_total),
                items: i64::try_from(items).unwrap_or(i64::MAX),
                items_share: Percent::of(items, items_total),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.revenue
            .cmp(&a.revenue)
            .then_with(|| a.seller_country.cmp(&b.seller_country))
    });
    out
}

/// The pair of distinct countries with the most revenue between them,
/// either direction; a tie goes to the alphabetically first pair.
fn top_relationship(rows: &[Row]) -> Vec<CountryRelationship> {
    let mut pairs: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    for r in rows {
        let (s, b) = (
            r.text("ID_SELLER_COUNTRY").to_owned(),
            r.text("ID_BUYER_COUNTRY").to_owned(),
        );
        if s == b {
            continue;
        }
        let key = if s < b { (s, b) } else { (b, s) };
        *pairs.entry(key).or_default() += r.decimal("revenue");
    }
    // BTreeMap order and a strict `>` keep the first pair of a tie.
    let mut best: Option<((String, String), Decimal)> = None;
    for (pair, revenue) in pairs {
        if best.as_ref().is_none_or(|(_, top)| revenue > *top) {
            best = Some((pair, revenue));
        }
    }
    best.map(|((country_a, country_b), revenue)| CountryRelationship {
        country_a,
        country_b,
        revenue: Money::new(revenue),
    })
    .into_iter()
    .collect()
}

/// Buyers present in both weeks, their revenue in each and the change.
fn repeat_buyers(
    week1_start: NaiveDate,
    week2_start: NaiveDate,
    first: &[Row],
    second: &[Row],
) -> RepeatBuyerRevenue {
    let week1: HashMap<&str, Decimal> = first
        .iter()
        .map(|r| (r.text("ID_BUYER"), r.decimal("revenue")))
        .collect();
    let (mut buyers, mut w1, mut w2) = (0i64, Decimal::ZERO, Decimal::ZERO);
    for r in second {
        if let Some(r1) = week1.get(r.text("ID_BUYER")) {
            buyers += 1;
            w1 += *r1;
            w2 += r.decimal("revenue");
        }
    }
    RepeatBuyerRevenue {
        week1_start,
        week2_start,
        repeat_buyers: buyers,
        week1_revenue: Money::new(w1),
        week2_revenue: Money::new(w2),
        change_pct: Percent::of(w2 - w1, w1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_percent(part: &str, whole: &str, expect: Option<&str>) {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(
            Percent::of(d(part), d(whole)).map(|p| p.to_string()),
            expect.map(str::to_owned),
            "{part} of {whole}"
        );
    }

    #[test]
    fn percentages_round_half_away_from_zero_to_two_places() {
        check_percent("1", "3", Some("33.33"));
        check_percent("2", "3", Some("66.67"));
        check_percent("1", "8", Some("12.50"));
        check_percent("-1", "8", Some("-12.50"));
        check_percent("1", "80000", Some("0.00"));
        check_percent("1", "0", None);
        check_percent("5", "5", Some("100.00"));
    }

    #[test]
    fn repeat_buyer_weeks_cover_the_cache_range() {
        let r = CountryReport::RepeatBuyers {
            week1_start: WEEK2_START,
            week2_start: WEEK1_START,
        };
        assert_eq!(
            r.range(),
            (Some(WEEK1_START), NaiveDate::from_ymd_opt(2021, 1, 14))
        );
    }
}
