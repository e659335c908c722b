//! The one time model: grains, the bucket a day falls in, bucket boundaries,
//! ranges of days, and the calendar months partitions are made of.
//!
//! Every other place that buckets time (rollup keys, the delta accumulator,
//! the planner's range splitting, gap filling, partition months, the SQL
//! bucket expression) asks this module, so they cannot disagree.
//!
//! Architecture Invariant: pure; weeks start on Monday, quarters in January,
//! April, July and October, as PostgreSQL's `date_trunc` has them.

use std::fmt;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveTime, Utc};
use serde::Deserialize;

/// A time granularity.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Grain {
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

/// What a time column holds, which bounds the grains it can be bucketed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeKind {
    /// Calendar dates: no time of day, no zone.
    Date,
    /// Instants (`timestamptz`, or a `timestamp` read as UTC): bucketed in
    /// any time zone, kept in rollups by UTC hour, day and month.
    Instant,
}

impl TimeKind {
    /// The finest grain the column can answer.
    pub fn finest_grain(self) -> Grain {
        match self {
            TimeKind::Date => Grain::Day,
            TimeKind::Instant => Grain::Hour,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TimeKind::Date => "date",
            TimeKind::Instant => "timestamp",
        }
    }

    /// The grains rollups of such a column are kept at (coarser answers
    /// combine them).
    pub fn rollup_grains(self) -> &'static [Grain] {
        match self {
            TimeKind::Date => &[Grain::Day, Grain::Month],
            TimeKind::Instant => &[Grain::Hour, Grain::Day, Grain::Month],
        }
    }
}

impl Grain {
    pub const ALL: [Grain; 6] = [
        Grain::Hour,
        Grain::Day,
        Grain::Week,
        Grain::Month,
        Grain::Quarter,
        Grain::Year,
    ];

    pub fn parse(s: &str) -> Option<Grain> {
        Grain::ALL.into_iter().find(|g| g.unit() == s)
    }

    /// The unit `date_trunc` and `interval` understand.
    pub fn unit(self) -> &'static str {
        match self {
            Grain::Hour => "hour",
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::Quarter => "quarter",
            Grain::Year => "year",
        }
    }

    /// One bucket as a PostgreSQL interval.
    pub fn interval(self) -> &'static str {
        match self {
            Grain::Hour => "1 hour",
            Grain::Day => "1 day",
            Grain::Week => "1 week",
            Grain::Month => "1 month",
            Grain::Quarter => "3 months",
            Grain::Year => "1 year",
        }
    }

    /// Whether a time column of `kind` can be bucketed at this grain (an
    /// hour of a date column does not exist).
    pub fn fits(self, kind: TimeKind) -> bool {
        self >= kind.finest_grain()
    }

    /// The first day of the bucket holding `day` (for `Hour`, the day itself:
    /// a day is made of whole hours).
    pub fn floor(self, day: NaiveDate) -> NaiveDate {
        match self {
            Grain::Hour | Grain::Day => day,
            Grain::Week => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
            Grain::Month => first_of_month(day.year(), day.month()),
            Grain::Quarter => first_of_month(day.year(), day.month0() / 3 * 3 + 1),
            Grain::Year => first_of_month(day.year(), 1),
        }
    }

    /// The first day of the first bucket starting on or after `day`: `day`
    /// itself when it starts a bucket, else the start of the next one.
    /// `None` past the calendar's end.
    pub fn ceil(self, day: NaiveDate) -> Option<NaiveDate> {
        if self.starts_bucket(day) {
            Some(day)
        } else {
            self.next_start(self.floor(day))
        }
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next_start(self, start: NaiveDate) -> Option<NaiveDate> {
        match self {
            Grain::Hour | Grain::Day => start.checked_add_days(Days::new(1)),
            Grain::Week => start.checked_add_days(Days::new(7)),
            Grain::Month => start.checked_add_months(Months::new(1)),
            Grain::Quarter => start.checked_add_months(Months::new(3)),
            Grain::Year => start.checked_add_months(Months::new(12)),
        }
    }

    /// The start of the bucket (in UTC) holding instant `t`.
    pub fn floor_instant(self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            // By the clock's fields, not `duration_trunc`: that counts
            // nanoseconds in an i64 and fails past 2262 (a probe's year 9999
            // stopped the record writer).
            Grain::Hour => {
                use chrono::Timelike;
                let hour = NaiveTime::from_hms_opt(t.hour(), 0, 0).unwrap_or(NaiveTime::MIN);
                t.date_naive().and_time(hour).and_utc()
            }
            _ => self
                .floor(t.date_naive())
                .and_time(NaiveTime::MIN)
                .and_utc(),
        }
    }

    /// Whether `day` is the first day of one of this grain's buckets.
    pub fn starts_bucket(self, day: NaiveDate) -> bool {
        self.floor(day) == day
    }

    /// Whether buckets of `self` are unions of buckets of `finer`.
    pub fn is_coarsening_of(self, finer: Grain) -> bool {
        match finer {
            Grain::Hour => true,
            Grain::Day => self != Grain::Hour,
            // Weeks do not nest in months.
            Grain::Week => self == Grain::Week,
            Grain::Month => matches!(self, Grain::Month | Grain::Quarter | Grain::Year),
            Grain::Quarter => matches!(self, Grain::Quarter | Grain::Year),
            Grain::Year => self == Grain::Year,
        }
    }

    /// The starts of the buckets that hold any day of `range`, in order.
    pub fn buckets(self, range: DayRange) -> impl Iterator<Item = NaiveDate> {
        let last = range.last;
        let mut next = Some(self.floor(range.first));
        std::iter::from_fn(move || {
            let start = next.filter(|s| *s <= last)?;
            next = self.next_start(start);
            Some(start)
        })
    }
}

impl fmt::Display for Grain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.unit())
    }
}

fn first_of_month(year: i32, month: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, 1).expect("the first of a month exists")
}

/// An inclusive range of days, first ≤ last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRange {
    pub first: NaiveDate,
    pub last: NaiveDate,
}

impl DayRange {
    /// `None` when `first` is after `last`.
    pub fn new(first: NaiveDate, last: NaiveDate) -> Option<DayRange> {
        (first <= last).then_some(DayRange { first, last })
    }

    /// The smallest range holding both.
    pub fn union(self, other: DayRange) -> DayRange {
        DayRange {
            first: self.first.min(other.first),
            last: self.last.max(other.last),
        }
    }

    /// Adds one day to the range.
    pub fn including(range: Option<DayRange>, day: NaiveDate) -> DayRange {
        let one = DayRange {
            first: day,
            last: day,
        };
        range.map_or(one, |r| r.union(one))
    }
}

/// A calendar month: what one partition of a fact table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    pub fn of(date: NaiveDate) -> Month {
        Month {
            year: date.year(),
            month: date.month(),
        }
    }

    pub fn first_day(self) -> NaiveDate {
        first_of_month(self.year, self.month)
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Its days.
    pub fn days(self) -> DayRange {
        let last = self
            .next()
            .first_day()
            .pred_opt()
            .expect("a month has days");
        DayRange {
            first: self.first_day(),
            last,
        }
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    /// Every instant a timestamptz can hold has an hour (a probe sent 9999).
    #[test]
    fn hours_floor_at_the_ends_of_time() {
        use chrono::{DateTime, Utc};
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        for (at, floor) in [
            ("9999-12-31T23:59:59.999Z", "9999-12-31T23:00:00Z"),
            ("0001-01-01T00:30:00Z", "0001-01-01T00:00:00Z"),
            ("2024-03-10T07:15:42.5Z", "2024-03-10T07:00:00Z"),
        ] {
            assert_eq!(super::Grain::Hour.floor_instant(t(at)), t(floor), "{at}");
        }
    }

    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// `grain`: floor of `day`, ceil of `day`, next start after the floor.
    fn check(grain: Grain, day: &str, expect: (&str, &str, &str)) {
        let day = d(day);
        let floor = grain.floor(day);
        let got = (
            floor.to_string(),
            grain.ceil(day).unwrap().to_string(),
            grain.next_start(floor).unwrap().to_string(),
        );
        let expect = (
            expect.0.to_owned(),
            expect.1.to_owned(),
            expect.2.to_owned(),
        );
        assert_eq!(got, expect, "{grain} of {day}");
        assert!(grain.starts_bucket(floor));
    }

    #[test]
    fn buckets_of_days() {
        check(
            Grain::Day,
            "2024-02-29",
            ("2024-02-29", "2024-02-29", "2024-03-01"),
        );
        // 2024-01-03 is a Wednesday; weeks start on Monday.
        check(
            Grain::Week,
            "2024-01-03",
            ("2024-01-01", "2024-01-08", "2024-01-08"),
        );
        check(
            Grain::Week,
            "2024-01-01",
            ("2024-01-01", "2024-01-01", "2024-01-08"),
        );
        check(
            Grain::Week,
            "2025-01-01",
            ("2024-12-30", "2025-01-06", "2025-01-06"),
        );
        check(
            Grain::Month,
            "2024-02-15",
            ("2024-02-01", "2024-03-01", "2024-03-01"),
        );
        check(
            Grain::Month,
            "2024-12-31",
            ("2024-12-01", "2025-01-01", "2025-01-01"),
        );
        check(
            Grain::Quarter,
            "2024-05-20",
            ("2024-04-01", "2024-07-01", "2024-07-01"),
        );
        check(
            Grain::Quarter,
            "2024-10-01",
            ("2024-10-01", "2024-10-01", "2025-01-01"),
        );
        check(
            Grain::Year,
            "2024-07-04",
            ("2024-01-01", "2025-01-01", "2025-01-01"),
        );
    }

    #[test]
    fn buckets_of_instants_are_utc() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let check = |g: Grain, at: &str, expect: &str| {
            assert_eq!(g.floor_instant(t(at)), t(expect), "{g} of {at}");
        };
        check(
            Grain::Hour,
            "2024-03-10T07:59:59.999Z",
            "2024-03-10T07:00:00Z",
        );
        check(Grain::Hour, "2024-03-10T07:00:00Z", "2024-03-10T07:00:00Z");
        check(Grain::Day, "2024-03-10T23:30:00Z", "2024-03-10T00:00:00Z");
        check(Grain::Week, "2024-03-10T23:30:00Z", "2024-03-04T00:00:00Z");
        check(Grain::Month, "2024-02-29T12:00:00Z", "2024-02-01T00:00:00Z");
        assert!(Grain::Hour.fits(TimeKind::Instant));
        assert_eq!(
            TimeKind::Instant.rollup_grains(),
            &[Grain::Hour, Grain::Day, Grain::Month]
        );
    }

    #[test]
    fn the_calendar_ends() {
        assert_eq!(Grain::Year.ceil(NaiveDate::MAX), None);
        assert_eq!(Grain::Day.next_start(NaiveDate::MAX), None);
        let tail = DayRange::new(NaiveDate::MAX - Days::new(2), NaiveDate::MAX).unwrap();
        assert_eq!(Grain::Day.buckets(tail).count(), 3);
    }

    #[test]
    fn buckets_cover_a_range_once() {
        let range = DayRange::new(d("2024-01-31"), d("2024-04-01")).unwrap();
        let months: Vec<String> = Grain::Month.buckets(range).map(|m| m.to_string()).collect();
        assert_eq!(
            months,
            ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]
        );
        let days = Grain::Day.buckets(range).count();
        assert_eq!(days, 31 + 29 + 1 + 1);
        let quarters: Vec<String> = Grain::Quarter
            .buckets(range)
            .map(|m| m.to_string())
            .collect();
        assert_eq!(quarters, ["2024-01-01", "2024-04-01"]);
    }

    #[test]
    fn grains_fit_time_columns() {
        assert!(!Grain::Hour.fits(TimeKind::Date));
        for g in [
            Grain::Day,
            Grain::Week,
            Grain::Month,
            Grain::Quarter,
            Grain::Year,
        ] {
            assert!(g.fits(TimeKind::Date), "{g}");
            assert_eq!(Grain::parse(g.unit()), Some(g));
        }
        assert_eq!(Grain::parse("fortnight"), None);
    }

    #[test]
    fn nesting() {
        assert!(Grain::Month.is_coarsening_of(Grain::Day));
        assert!(Grain::Year.is_coarsening_of(Grain::Quarter));
        assert!(!Grain::Month.is_coarsening_of(Grain::Week));
        assert!(!Grain::Day.is_coarsening_of(Grain::Month));
    }

    #[test]
    fn months() {
        let m = Month::of(d("2024-02-10"));
        assert_eq!(m.to_string(), "2024-02");
        assert_eq!(
            m.days(),
            DayRange::new(d("2024-02-01"), d("2024-02-29")).unwrap()
        );
        assert_eq!(Month::of(d("2024-12-31")).next().to_string(), "2025-01");
    }
}
