//! Rollup deltas: typed rows in, partial aggregates per rollup key out.
//!
//! A producer hands every row it loads to an [`Accumulator`] (as the typed
//! values it stores); the write path applies the resulting [`Entry`]s to the
//! rollup tables in the load transaction (`write::rollups`).
//!
//! Architecture Invariant: pure; the sums are exact (`Decimal`), over the
//! values exactly as stored (numerics rounded to their column's scale), so a
//! rollup equals the aggregation of its facts.

use std::collections::HashMap;

use rust_decimal::Decimal;

use crate::domain::rollup::{PartialKind, RollupInfo};
use crate::domain::time::DayRange;
use crate::domain::value::Value;

/// The running value of one partial aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum PartialValue {
    Sum(Decimal),
    Count(i64),
    Min(Option<Value<'static>>),
    Max(Option<Value<'static>>),
}

/// One rollup key's delta.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The bucket's start: a `Date`, or for instants a `TimestampTz` in UTC.
    pub bucket: Value<'static>,
    pub dims: Vec<Value<'static>>,
    pub row_count: i64,
    pub partials: Vec<PartialValue>,
}

/// Per-rollup running deltas.
pub struct RollupDelta {
    pub info: RollupInfo,
    /// Where each dimension is in a row.
    dims: Vec<usize>,
    /// For each of the rollup's partials, where its source column is in a row.
    sources: Vec<usize>,
    map: HashMap<Vec<u8>, Entry>,
    /// Whether rows were taken away: a key may be left with no rows.
    removals: bool,
}

impl RollupDelta {
    /// The entries in key order (bucket, then dimensions), the order new
    /// rows should extend a rollup's heap in.
    pub fn sorted_entries(&self) -> Vec<&Entry> {
        let mut entries: Vec<&Entry> = self.map.values().collect();
        entries.sort_by(|a, b| {
            (&a.bucket, &a.dims)
                .partial_cmp(&(&b.bucket, &b.dims))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        entries
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether rows were taken away (keys may be left with none).
    pub fn has_removals(&self) -> bool {
        self.removals
    }
}

/// Accumulates the rollup deltas of the rows a load adds.
pub struct Accumulator {
    time: usize,
    rollups: Vec<RollupDelta>,
    key: Vec<u8>,
    days: Option<DayRange>,
    /// Whether the time values are instants.
    instants: bool,
}

impl Accumulator {
    /// `position(column)` says where a column is in the rows that will be
    /// added; `None` when the rows lack a column a rollup needs (then the
    /// load cannot keep rollups exact and must refuse).
    pub fn new(
        infos: &[RollupInfo],
        time_column: &str,
        position: impl Fn(&str) -> Option<usize>,
    ) -> Option<Accumulator> {
        let time = position(time_column)?;
        let rollups = infos
            .iter()
            .map(|info| {
                Some(RollupDelta {
                    info: info.clone(),
                    dims: info
                        .dimensions
                        .iter()
                        .map(|d| position(d))
                        .collect::<Option<_>>()?,
                    sources: info
                        .partials
                        .iter()
                        .map(|p| position(&p.source))
                        .collect::<Option<_>>()?,
                    map: HashMap::new(),
                    removals: false,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Accumulator {
            time,
            rollups,
            key: Vec::with_capacity(64),
            days: None,
            instants: false,
        })
    }

    /// Adds one loaded row. A row without a time value belongs to no bucket
    /// (the time column of a dataset is never NULL once loaded).
    pub fn add(&mut self, row: &[Value<'_>]) {
        self.count(row, 1);
    }

    /// Takes away one row that leaves the facts (deleted, or the old
    /// version of an updated row). Only [`removable`](Self::removable)
    /// rollups can: a minimum or maximum cannot be un-counted.
    pub fn remove(&mut self, row: &[Value<'_>]) {
        debug_assert!(
            self.removable(),
            "a min or max partial cannot take a removal"
        );
        self.count(row, -1);
    }

    /// Whether every partial can take removals (sums and counts only).
    pub fn removable(&self) -> bool {
        self.rollups.iter().all(|r| {
            r.info
                .partials
                .iter()
                .all(|p| matches!(p.kind, PartialKind::Sum | PartialKind::Count))
        })
    }

    fn count(&mut self, row: &[Value<'_>], sign: i64) {
        let instant = match row[self.time] {
            Value::TimestampTz(t) => Some(t),
            Value::Timestamp(t) => Some(t.and_utc()),
            _ => None,
        };
        let Some(date) = row[self.time].day() else {
            return;
        };
        self.instants |= instant.is_some();
        self.days = Some(DayRange::including(self.days, date));
        for delta in &mut self.rollups {
            let bucket = match instant {
                Some(t) => Value::TimestampTz(delta.info.grain.floor_instant(t)),
                None => Value::Date(delta.info.grain.floor(date)),
            };
            self.key.clear();
            bucket.key_bytes(&mut self.key);
            for &d in &delta.dims {
                row[d].key_bytes(&mut self.key);
            }
            let entry = match delta.map.get_mut(self.key.as_slice()) {
                Some(e) => e,
                None => delta.map.entry(self.key.clone()).or_insert_with(|| Entry {
                    bucket: bucket.clone(),
                    dims: delta
                        .dims
                        .iter()
                        .map(|&d| row[d].clone().into_owned())
                        .collect(),
                    row_count: 0,
                    partials: delta
                        .info
                        .partials
                        .iter()
                        .map(|p| match p.kind {
                            PartialKind::Sum => PartialValue::Sum(Decimal::ZERO),
                            PartialKind::Count => PartialValue::Count(0),
                            PartialKind::Min => PartialValue::Min(None),
                            PartialKind::Max => PartialValue::Max(None),
                        })
                        .collect(),
                }),
            };
            entry.row_count += sign;
            delta.removals |= sign < 0;
            for (partial, &source) in entry.partials.iter_mut().zip(&delta.sources) {
                let value = &row[source];
                if value.is_null() {
                    continue;
                }
                match partial {
                    PartialValue::Sum(s) => {
                        let v = match value {
                            Value::Int(i) => Decimal::from(*i),
                            Value::Num(d) => *d,
                            // Sums are kept only of exact columns.
                            _ => Decimal::ZERO,
                        };
                        *s += if sign < 0 { -v } else { v };
                    }
                    PartialValue::Count(c) => *c += sign,
                    PartialValue::Min(m) => {
                        if m.as_ref().is_none_or(|m| value < m) {
                            *m = Some(value.clone().into_owned());
                        }
                    }
                    PartialValue::Max(m) => {
                        if m.as_ref().is_none_or(|m| value > m) {
                            *m = Some(value.clone().into_owned());
                        }
                    }
                }
            }
        }
    }

    /// The days of the rows added: their dates, or (for instants) their
    /// UTC days widened by one on each side, so that they hold the rows'
    /// days in every time zone (offsets are within ±14 hours).
    pub fn days(&self) -> Option<DayRange> {
        let days = self.days?;
        if !self.instants {
            return Some(days);
        }
        Some(DayRange {
            first: days.first.pred_opt().unwrap_or(days.first),
            last: days.last.succ_opt().unwrap_or(days.last),
        })
    }

    pub fn rollups(&self) -> &[RollupDelta] {
        &self.rollups
    }
}

impl std::fmt::Debug for Accumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accumulator")
            .field(
                "rollups",
                &self
                    .rollups
                    .iter()
                    .map(|r| (&r.info.name, r.map.len()))
                    .collect::<Vec<_>>(),
            )
            .field("days", &self.days)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rollup::Partial;
    use crate::domain::time::Grain;
    use std::borrow::Cow;

    fn info(grain: Grain, dims: &[&str], partials: &[(PartialKind, &str)]) -> RollupInfo {
        RollupInfo {
            name: "r".into(),
            dataset: "d".into(),
            grain,
            dimensions: dims.iter().map(|d| d.to_string()).collect(),
            partials: partials
                .iter()
                .map(|(kind, source)| Partial {
                    kind: *kind,
                    source: source.to_string(),
                })
                .collect(),
            rows: 0,
            read_by: None,
        }
    }

    fn row(day: &str, region: &'static str, amount: &str) -> Vec<Value<'static>> {
        vec![
            Value::Date(day.parse().unwrap()),
            Value::Text(Cow::Borrowed(region)),
            if amount.is_empty() {
                Value::Null
            } else {
                Value::Num(amount.parse().unwrap())
            },
        ]
    }

    /// Adds `rows`, then shows each entry as `bucket dims: count partials`.
    fn check(info: RollupInfo, rows: &[Vec<Value<'static>>], expect: &[&str]) {
        let columns = ["day", "region", "amount"];
        let mut acc = Accumulator::new(&[info], "day", |c| columns.iter().position(|x| *x == c))
            .expect("every column is present");
        for r in rows {
            acc.add(r);
        }
        let got: Vec<String> = acc.rollups()[0]
            .sorted_entries()
            .iter()
            .map(|e| {
                let dims: Vec<String> = e.dims.iter().map(|d| format!("{d:?}")).collect();
                let partials: Vec<String> = e.partials.iter().map(|p| format!("{p:?}")).collect();
                format!(
                    "{} {}: {} {}",
                    e.bucket.day().map_or(String::new(), |d| d.to_string()),
                    dims.join(","),
                    e.row_count,
                    partials.join(",")
                )
            })
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn month_buckets_sum_exactly_and_skip_nulls() {
        let rows = [
            row("2024-01-31", "North", "10.10"),
            row("2024-01-01", "North", "0.20"),
            row("2024-02-01", "North", ""),
            row("2024-01-15", "South", "5"),
        ];
        check(
            info(
                Grain::Month,
                &["region"],
                &[
                    (PartialKind::Sum, "amount"),
                    (PartialKind::Count, "amount"),
                    (PartialKind::Max, "amount"),
                ],
            ),
            &rows,
            &[
                "2024-01-01 Text(\"North\"): 2 Sum(10.30),Count(2),Max(Some(Num(10.10)))",
                "2024-01-01 Text(\"South\"): 1 Sum(5),Count(1),Max(Some(Num(5)))",
                "2024-02-01 Text(\"North\"): 1 Sum(0),Count(0),Max(None)",
            ],
        );
    }

    #[test]
    fn removals_take_rows_back_out() {
        let sums = info(
            Grain::Month,
            &["region"],
            &[(PartialKind::Sum, "amount"), (PartialKind::Count, "amount")],
        );
        let columns = ["day", "region", "amount"];
        let mut acc =
            Accumulator::new(&[sums], "day", |c| columns.iter().position(|x| *x == c)).unwrap();
        assert!(acc.removable());
        // An update moving 2.50 from North to South, and a deleted row.
        acc.add(&row("2024-01-02", "South", "2.50"));
        acc.remove(&row("2024-01-02", "North", "2.50"));
        acc.remove(&row("2024-01-09", "North", ""));
        let got: Vec<(String, i64, Vec<PartialValue>)> = acc.rollups()[0]
            .sorted_entries()
            .iter()
            .map(|e| (format!("{:?}", e.dims[0]), e.row_count, e.partials.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "Text(\"North\")".to_owned(),
                    -2,
                    vec![
                        PartialValue::Sum("-2.50".parse().unwrap()),
                        PartialValue::Count(-1)
                    ]
                ),
                (
                    "Text(\"South\")".to_owned(),
                    1,
                    vec![
                        PartialValue::Sum("2.50".parse().unwrap()),
                        PartialValue::Count(1)
                    ]
                ),
            ]
        );
        assert!(acc.rollups()[0].has_removals());
        let extremes = info(Grain::Day, &[], &[(PartialKind::Min, "amount")]);
        let acc =
            Accumulator::new(&[extremes], "day", |c| columns.iter().position(|x| *x == c)).unwrap();
        assert!(!acc.removable(), "a minimum cannot be un-counted");
    }

    #[test]
    fn day_buckets_and_a_missing_column() {
        check(
            info(Grain::Day, &[], &[(PartialKind::Min, "amount")]),
            &[row("2024-03-02", "N", "2"), row("2024-03-02", "S", "1.5")],
            &["2024-03-02 : 2 Min(Some(Num(1.5)))"],
        );
        let none = Accumulator::new(&[info(Grain::Day, &["colour"], &[])], "day", |c| {
            (c == "day").then_some(0)
        });
        assert!(
            none.is_none(),
            "rows without a rollup's column cannot keep it exact"
        );
    }

    #[test]
    fn instants_bucket_in_utc_and_notify_a_day_either_side() {
        let t = |s: &str| Value::TimestampTz(s.parse().unwrap());
        let hourly = info(Grain::Hour, &[], &[(PartialKind::Sum, "amount")]);
        let mut acc = Accumulator::new(&[hourly], "day", |c| {
            ["day", "region", "amount"].iter().position(|x| *x == c)
        })
        .unwrap();
        for (at, amount) in [("2024-03-10T06:59:59Z", "1"), ("2024-03-10T06:00:00Z", "2")] {
            acc.add(&[t(at), Value::Null, Value::Num(amount.parse().unwrap())]);
        }
        let entries = acc.rollups()[0].sorted_entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].bucket, t("2024-03-10T06:00:00Z"));
        assert_eq!(
            entries[0].partials,
            [PartialValue::Sum("3".parse().unwrap())]
        );
        // Answers in any zone may hold these rows on March 9, 10 or 11.
        let d = |s: &str| s.parse().unwrap();
        assert_eq!(acc.days(), DayRange::new(d("2024-03-09"), d("2024-03-11")));
    }
}
