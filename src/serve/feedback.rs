//! Prototype 001's `/feedback`: sales count and revenue per category and
//! UTC day, held in memory so a request runs no SQL. The days a write
//! touched (its `clue_writes` notice, whichever process wrote) are re-read
//! from the day rollup in the background and replaced, so every server
//! converges on the database within moments of each commit.
//!
//! Architecture Invariant: the memory only ever holds whole days as the
//! database has them committed (replaced, never incremented), so an answer
//! equals the same sums over the facts once the notices are in; until the
//! first full read (or while notices may be lost) it answers nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::domain::dataset::Catalog;
use crate::domain::time::{DayRange, Grain};
use crate::pg::database::Database;
use crate::plan::View;
use crate::serve::execute::{self, Cell};
use crate::serve::query::{QueryError, QueryRequest};
use crate::serve::reports::Money;
use crate::store::notify::{WriteListener, WriteNotice};

/// The dataset `/feedback` counts.
const DATASET: &str = "sales";
/// How many categories an answer has.
const TOP: usize = 3;

/// One category's sales.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CategoryFeedback {
    pub category: String,
    pub sales_count: i64,
    pub total_revenue: Money,
}

/// What `/feedback` is filtered by; days inclusive (UTC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedbackFilter {
    pub category: Option<String>,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
}

type Days = BTreeMap<NaiveDate, HashMap<String, (i64, Decimal)>>;

/// The in-memory aggregates and the queue of days to re-read.
pub struct Feedback {
    days: RwLock<Days>,
    /// Notices are arriving (the listener is up).
    listening: AtomicBool,
    /// A full read has completed since the listener last came up.
    ready: AtomicBool,
    refresh: mpsc::UnboundedSender<Option<DayRange>>,
}

impl Feedback {
    /// Starts the worker that (re)reads days; the first full read is
    /// queued when the listener comes up (`store::notify::spawn_listener`).
    pub fn spawn(db: Arc<Database>, catalog: Arc<Catalog>) -> Arc<Feedback> {
        let (tx, rx) = mpsc::unbounded_channel();
        let feedback = Arc::new(Feedback {
            days: RwLock::new(BTreeMap::new()),
            listening: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            refresh: tx,
        });
        tokio::spawn(worker(Arc::downgrade(&feedback), db, catalog, rx));
        feedback
    }

    /// The three categories with the most sales (then the most revenue,
    /// then by name), most first; `None` until the first full read.
    pub fn top(&self, filter: &FeedbackFilter) -> Option<Vec<CategoryFeedback>> {
        if !self.ready.load(Ordering::SeqCst) {
            return None;
        }
        let days = self.days.read().ok()?;
        let lo = filter.start_date.unwrap_or(NaiveDate::MIN);
        let hi = filter.end_date.unwrap_or(NaiveDate::MAX);
        let wanted = filter.category.as_ref().map(|c| c.to_lowercase());
        let mut sums: HashMap<&str, (i64, Decimal)> = HashMap::new();
        for (_, categories) in days.range(lo..=hi) {
            for (category, (count, revenue)) in categories {
                if wanted
                    .as_ref()
                    .is_some_and(|w| *w != category.to_lowercase())
                {
                    continue;
                }
                let sum = sums.entry(category).or_default();
                sum.0 += count;
                sum.1 += revenue;
            }
        }
        let mut out: Vec<CategoryFeedback> = sums
            .into_iter()
            .map(|(category, (count, revenue))| CategoryFeedback {
                category: category.to_owned(),
                sales_count: count,
                total_revenue: Money::new(revenue),
            })
            .collect();
        out.sort_by(|a, b| {
            b.sales_count
                .cmp(&a.sales_count)
                .then_with(|| b.total_revenue.cmp(&a.total_revenue))
                .then_with(|| a.category.cmp(&b.category))
        });
        out.truncate(TOP);
        Some(out)
    }

    /// Replaces the days of `range` (all, with `None`) by `rows`.
    fn replace(&self, range: Option<DayRange>, rows: Days) {
        let Ok(mut days) = self.days.write() else {
            return;
        };
        match range {
            None => *days = rows,
            Some(r) => {
                let stale: Vec<NaiveDate> = days.range(r.first..=r.last).map(|(d, _)| *d).collect();
                for d in stale {
                    days.remove(&d);
                }
                days.extend(rows);
            }
        }
    }
}

impl WriteListener for Feedback {
    fn on_write(&self, notice: WriteNotice) {
        if notice.dataset == DATASET {
            let _ = self.refresh.send(notice.days);
        }
    }

    /// Back up after a drop: notices may have been lost, so read it all.
    fn set_listening(&self, up: bool) {
        self.listening.store(up, Ordering::SeqCst);
        if up {
            let _ = self.refresh.send(None);
        } else {
            self.ready.store(false, Ordering::SeqCst);
        }
    }
}

/// Reads what is queued, merging what arrived together into one read;
/// retries a failed read after a second. Ends with the `Feedback`.
async fn worker(
    feedback: std::sync::Weak<Feedback>,
    db: Arc<Database>,
    catalog: Arc<Catalog>,
    mut rx: mpsc::UnboundedReceiver<Option<DayRange>>,
) {
    while let Some(first) = rx.recv().await {
        let mut range = Some(first);
        while let Ok(next) = rx.try_recv() {
            range = match (range, next) {
                (Some(Some(a)), Some(b)) => Some(Some(a.union(b))),
                _ => Some(None),
            };
        }
        let range = range.flatten();
        loop {
            let Some(feedback) = feedback.upgrade() else {
                return;
            };
            match read_days(&db, &catalog, range).await {
                Ok(rows) => {
                    feedback.replace(range, rows);
                    if range.is_none() && feedback.listening.load(Ordering::SeqCst) {
                        feedback.ready.store(true, Ordering::SeqCst);
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "feedback: reading sales days failed; retrying");
                    drop(feedback);
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Count and revenue per category and day over `range` (all days with
/// `None`), through the planner (the day rollup).
async fn read_days(
    db: &Database,
    catalog: &Catalog,
    range: Option<DayRange>,
) -> Result<Days, QueryError> {
    let q = QueryRequest {
        dataset: DATASET.into(),
        measures: vec!["sales_count".into(), "revenue".into()],
        dimensions: vec!["CATEGORY".into()],
        granularity: Some(Grain::Day),
        start_date: range.map(|r| r.first),
        end_date: range.map(|r| r.last),
        from: None,
        to: None,
        filters: vec![],
        order: vec![],
        limit: None,
        gap_fill: false,
        time_zone: None,
    };
    let answer = execute::execute(db, catalog, &q, &View::everything(), false, None).await?;
    let mut days = Days::new();
    for row in &answer.rows {
        let day = match row.get("period") {
            Some(Cell::Date(d)) => *d,
            Some(Cell::Timestamp(t)) => t.date_naive(),
            _ => continue,
        };
        let category = row.text("CATEGORY");
        if category.is_empty() {
            continue;
        }
        let count = i64::try_from(row.decimal("sales_count")).unwrap_or(i64::MAX);
        let revenue = row.decimal("revenue");
        days.entry(day)
            .or_default()
            .insert(category.to_owned(), (count, revenue));
    }
    Ok(days)
}
