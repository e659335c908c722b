//! The generic query: its JSON form, its checks, its execution through the
//! planner, and the cache of answers, dropped by notified writes.
//!
//! Architecture Invariant: a cached answer is never served after a write
//! into its range has been notified: imports and rollup rebuilds send
//! `clue_writes` notifications in their transactions; the cache drops what
//! they touch and refuses to store answers computed before the latest
//! notification. While the notification listener is down, nothing is cached.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;

use crate::dataset::{Catalog, DatasetError, Grain};
use crate::db::{Database, DbError};
use crate::planner::{self, OutKind, Plan, PlanError, PlanParam, RawFilter, Served};
use crate::rollup::{self, RollupError};

/// A query as clients write it (`POST /api/v1/query`, `clue query`).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "dataset": "sales_report",
    "measures": ["revenue", "quantity"],
    "dimensions": ["region"],
    "granularity": "month",
    "start_date": "2024-03-15",
    "end_date": "2024-09-14",
    "filters": [{"dimension": "region", "in": ["North", "South"]}],
    "order": [{"field": "revenue", "desc": true}],
    "limit": 100
}))]
pub struct QueryRequest {
    /// A declared dataset (`clue datasets`).
    pub dataset: String,
    /// Measure names of the dataset.
    pub measures: Vec<String>,
    /// Dimension names to group by.
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// Time bucket of each row; absent: one bucket for the whole range.
    #[serde(default)]
    pub granularity: Option<Grain>,
    /// First day included (`YYYY-MM-DD`).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Date)]
    pub start_date: Option<NaiveDate>,
    /// Last day included (`YYYY-MM-DD`).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Date)]
    pub end_date: Option<NaiveDate>,
    #[serde(default)]
    pub filters: Vec<RawFilter>,
    /// Sort keys: measures, dimensions or `period`; then by period and dimensions.
    #[serde(default)]
    pub order: Vec<OrderRequest>,
    /// At most this many rows (1 to 100000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Return every period of the range, empty ones with zero sums and counts.
    #[serde(default)]
    pub gap_fill: bool,
    /// IANA time zone for bucketing. Datasets with a date time column hold
    /// calendar dates, which no zone shifts; the name is still checked.
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub field: String,
    #[serde(default)]
    pub desc: bool,
}

/// An answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueryResponse {
    pub dataset: String,
    /// Which rollups or fact table answered which days.
    pub served_from: Vec<Served>,
    /// Rows as objects: `period` (with a granularity), dimensions, measures.
    /// Decimal measures are exact JSON numbers.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<Row>,
}

/// One result row: typed values under the answer's column names (shared by
/// every row), serialized as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    names: Arc<[String]>,
    cells: Vec<Cell>,
}

impl Row {
    pub fn get(&self, name: &str) -> Option<&Cell> {
        let i = self.names.iter().position(|n| n == name)?;
        self.cells.get(i)
    }

    /// Moves the value of `name` out, leaving `Null`.
    pub fn take(&mut self, name: &str) -> Option<Cell> {
        let i = self.names.iter().position(|n| n == name)?;
        self.cells.get_mut(i).map(std::mem::take)
    }
}

/// A typed result value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Cell {
    #[default]
    Null,
    Int(i64),
    Decimal(rust_decimal::Decimal),
    Text(String),
    Date(NaiveDate),
    Bool(bool),
}

impl Serialize for Cell {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Null => s.serialize_none(),
            Cell::Int(i) => s.serialize_i64(*i),
            // Every digit, as a JSON number: a float would round.
            Cell::Decimal(d) => serde_json::value::RawValue::from_string(d.to_string())
                .map_err(serde::ser::Error::custom)?
                .serialize(s),
            Cell::Text(t) => s.serialize_str(t),
            Cell::Date(d) => s.serialize_str(&d.to_string()),
            Cell::Bool(b) => s.serialize_bool(*b),
        }
    }
}

/// A `numeric` read exactly: PostgreSQL's base-10000 digits straight into
/// a `Decimal`. (rust_decimal's own reader works through decimal arithmetic
/// and took a tenth of the time of a 500k-row answer.) A value a `Decimal`
/// cannot hold exactly (over 28 digits, NaN, infinity) is an error, never
/// rounded.
struct ExactNumeric(rust_decimal::Decimal);

impl<'a> tokio_postgres::types::FromSql<'a> for ExactNumeric {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        const TOO_BIG: &str = "numeric value has more than 28 significant digits";
        let field = |i: usize| u16::from_be_bytes([raw[i], raw[i + 1]]);
        if raw.len() < 8 || raw.len() != 8 + 2 * field(0) as usize {
            return Err("numeric value is truncated".into());
        }
        let ndigits = i32::from(field(0));
        let weight = i32::from(field(2) as i16);
        let scale = u32::from(field(6));
        let negative = match field(4) {
            0x0000 => false,
            0x4000 => true,
            _ => return Err("numeric NaN or infinity has no exact decimal value".into()),
        };
        let mut m: i128 = 0;
        for i in 0..ndigits as usize {
            m = m
                .checked_mul(10_000)
                .and_then(|m| m.checked_add(i128::from(field(8 + 2 * i))))
                .ok_or(TOO_BIG)?;
        }
        // The digits are m × 10000^(weight + 1 - ndigits); at `scale` decimals:
        let shift = 4 * (weight + 1 - ndigits) + scale as i32;
        if m != 0 {
            let p = 10i128.checked_pow(shift.unsigned_abs()).ok_or(TOO_BIG)?;
            if shift >= 0 {
                m = m.checked_mul(p).ok_or(TOO_BIG)?;
            } else if m % p == 0 {
                m /= p;
            } else {
                return Err("numeric value has digits beyond its scale".into());
            }
        }
        if negative {
            m = -m;
        }
        rust_decimal::Decimal::try_from_i128_with_scale(m, scale)
            .map(ExactNumeric)
            .map_err(|_| TOO_BIG.into())
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::NUMERIC
    }
}

impl Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.cells.len()))?;
        for (k, v) in self.names.iter().zip(&self.cells) {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Rollup(#[from] RollupError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the query ran longer than {} s and was cancelled", .0.as_secs_f64())]
    Timeout(std::time::Duration),
}

impl From<tokio_postgres::Error> for QueryError {
    fn from(e: tokio_postgres::Error) -> Self {
        QueryError::Db(DbError::Query(e))
    }
}

pub const MAX_LIMIT: u32 = 100_000;

impl QueryRequest {
    /// Checks what the planner does not: range order, limit, time zone shape.
    pub fn to_query(&self) -> Result<planner::Query, QueryError> {
        if let (Some(s), Some(e)) = (self.start_date, self.end_date)
            && s > e
        {
            return Err(QueryError::Invalid(format!(
                "start_date: {s} is after end_date {e}"
            )));
        }
        if let Some(l) = self.limit
            && !(1..=MAX_LIMIT).contains(&l)
        {
            return Err(QueryError::Invalid(format!(
                "limit: must be between 1 and {MAX_LIMIT}, got {l}"
            )));
        }
        if let Some(tz) = &self.time_zone
            && (tz.is_empty()
                || tz.len() > 64
                || !tz
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c)))
        {
            return Err(QueryError::Invalid(format!(
                "time_zone: {:?} is not an IANA time zone name",
                tz.chars().take(64).collect::<String>()
            )));
        }
        let filters = self
            .filters
            .iter()
            .map(|f| planner::Filter::try_from(f.clone()).map_err(QueryError::Invalid))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(planner::Query {
            measures: self.measures.clone(),
            dimensions: self.dimensions.clone(),
            granularity: self.granularity,
            start: self.start_date,
            end: self.end_date,
            filters,
            order: self
                .order
                .iter()
                .map(|o| planner::Order {
                    field: o.field.clone(),
                    desc: o.desc,
                })
                .collect(),
            limit: self.limit,
            gap_fill: self.gap_fill,
        })
    }
}

/// Runs the query; `force_fact` answers from the fact table alone.
pub async fn execute(
    db: &Database,
    catalog: &Catalog,
    req: &QueryRequest,
    force_fact: bool,
    cache: Option<&Cache>,
) -> Result<QueryResponse, QueryError> {
    let client = db.client().await?;
    let plan = prepare(&client, catalog, req, force_fact, cache).await?;
    let started = std::time::Instant::now();
    let rows = run(&client, &plan, db.query_timeout()).await?;
    tracing::debug!(
        dataset = %req.dataset,
        rows = rows.len(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "query answered"
    );
    // Only possible without a limit: limits are at most MAX_LIMIT.
    if rows.len() as u64 > planner::MAX_ROWS {
        return Err(QueryError::Invalid(format!(
            "query: the answer has more than {} rows; narrow it with filters, a coarser granularity or a limit",
            planner::MAX_ROWS
        )));
    }
    Ok(QueryResponse {
        dataset: req.dataset.clone(),
        served_from: plan.served_from,
        rows,
    })
}

/// Checks the query and plans it over the dataset's current sources (looked
/// up in the database unless `cache` knows them).
pub async fn prepare(
    client: &tokio_postgres::Client,
    catalog: &Catalog,
    req: &QueryRequest,
    force_fact: bool,
    cache: Option<&Cache>,
) -> Result<Plan, QueryError> {
    let dataset = catalog.get(&req.dataset)?;
    let query = req.to_query()?;
    if let Some(tz) = &req.time_zone {
        // The zone names the server knows, read once per process: the view
        // reads the zone files, tens of milliseconds a request otherwise.
        static ZONES: tokio::sync::OnceCell<std::collections::HashSet<String>> =
            tokio::sync::OnceCell::const_new();
        let zones = ZONES
            .get_or_try_init(|| async {
                let rows = client
                    .query("SELECT name FROM pg_timezone_names", &[])
                    .await?;
                Ok::<_, tokio_postgres::Error>(rows.iter().map(|r| r.get(0)).collect())
            })
            .await?;
        if !zones.contains(tz) {
            return Err(QueryError::Invalid(format!(
                "time_zone: {tz:?} is not an IANA time zone name"
            )));
        }
    }
    let (table, rollups) = match cache.and_then(|c| c.sources(&dataset.name)) {
        Some(known) => known,
        None => {
            let generation = cache.map(Cache::generation);
            let table = crate::schema::find_table(client, &dataset.table)
                .await
                .map_err(|e| QueryError::Invalid(e.to_string()))?
                .ok_or_else(|| {
                    QueryError::Invalid(format!(
                        "dataset: {} has no table yet (create it and import data first)",
                        dataset.name
                    ))
                })?
                .quoted();
            let rollups = rollup::current(client, dataset).await?;
            if let (Some(c), Some(g)) = (cache, generation) {
                c.store_sources(&dataset.name, g, table.clone(), rollups.clone());
            }
            (table, rollups)
        }
    };
    Ok(planner::plan(
        dataset, &table, &rollups, &query, force_fact,
    )?)
}

async fn run(
    client: &deadpool_postgres::Client,
    plan: &Plan,
    timeout: Option<std::time::Duration>,
) -> Result<Vec<Row>, QueryError> {
    let params: Vec<&(dyn ToSql + Sync)> = plan
        .params
        .iter()
        .map(|p| match p {
            PlanParam::Date(d) => d as &(dyn ToSql + Sync),
            PlanParam::Text(t) => t,
            PlanParam::TextArray(v) => v,
        })
        .collect();
    // Preparing takes the tables' locks too: the limit covers both steps.
    let work = async {
        let statement = client.prepare_cached(&plan.sql).await?;
        client.query(&statement, &params).await
    };
    let rows = match timeout {
        None => work.await,
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(answer) => answer,
            Err(_) => {
                // Stop the server's work too, not only our wait for it.
                let _ = client
                    .cancel_token()
                    .cancel_query(tokio_postgres::NoTls)
                    .await;
                return Err(QueryError::Timeout(limit));
            }
        },
    };
    let rows = rows.map_err(|e| {
        // A filter value that does not cast to the column's type is the client's mistake.
        match e.code() {
            Some(c)
                if *c == tokio_postgres::error::SqlState::INVALID_TEXT_REPRESENTATION
                    || *c == tokio_postgres::error::SqlState::NUMERIC_VALUE_OUT_OF_RANGE
                    || *c == tokio_postgres::error::SqlState::INVALID_DATETIME_FORMAT
                    || *c == tokio_postgres::error::SqlState::DATETIME_FIELD_OVERFLOW =>
            {
                QueryError::Invalid(
                    "filters: a value does not match the type of its dimension".into(),
                )
            }
            _ => QueryError::from(e),
        }
    })?;
    let names: Arc<[String]> = plan.columns.iter().map(|c| c.name.clone()).collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut cells = Vec::with_capacity(plan.columns.len());
        for (i, c) in plan.columns.iter().enumerate() {
            // try_get: a value that does not decode is an error, not a panic.
            let v = match c.kind {
                OutKind::Int => row.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
                OutKind::Numeric => row
                    .try_get::<_, Option<ExactNumeric>>(i)
                    .map_err(|e| {
                        // Named by its column: a float dimension decodes here too.
                        QueryError::Invalid(format!(
                            "{}: has a value clue cannot return exactly ({})",
                            c.name,
                            e.into_source().map_or_else(String::new, |s| s.to_string())
                        ))
                    })?
                    .map(|n| Cell::Decimal(n.0)),
                OutKind::Text => row.try_get::<_, Option<String>>(i)?.map(Cell::Text),
                OutKind::Date => row.try_get::<_, Option<NaiveDate>>(i)?.map(Cell::Date),
                OutKind::Bool => row.try_get::<_, Option<bool>>(i)?.map(Cell::Bool),
            };
            cells.push(v.unwrap_or(Cell::Null));
        }
        out.push(Row {
            names: names.clone(),
            cells,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Cache

/// A cached answer: the serialized body and its ETag.
#[derive(Debug, Clone)]
pub struct Cached {
    pub body: Bytes,
    pub etag: String,
    pub content_type: &'static str,
    pub served_from: String,
    /// The body gzip-compressed, for large answers.
    pub gzip: Option<Bytes>,
}

impl Cached {
    /// Memory it holds.
    fn size(&self) -> usize {
        self.body.len() + self.gzip.as_ref().map_or(0, Bytes::len)
    }
}

struct Entry {
    dataset: String,
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    value: Cached,
}

/// The cached answers, oldest first in `order`, and the memory they hold.
#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Entries {
    fn remove(&mut self, key: &str) {
        if let Some(e) = self.map.remove(key) {
            self.bytes -= e.value.size();
            self.order.retain(|k| k != key);
        }
    }

    fn clear(&mut self) {
        *self = Entries::default();
    }
}

/// Answers in memory, each dropped when a notified write touches its range;
/// at most `capacity` of them in at most `max_bytes`, oldest evicted first.
pub struct Cache {
    entries: Mutex<Entries>,
    /// Per dataset: its table and current rollups, so a request plans
    /// without catalog queries. Dropped with the dataset's answers.
    sources: Mutex<HashMap<String, (String, Vec<rollup::RollupInfo>)>>,
    generation: AtomicU64,
    listening: AtomicBool,
    capacity: usize,
    max_bytes: usize,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(2048, 1 << 30)
    }
}

impl Cache {
    pub fn new(capacity: usize, max_bytes: usize) -> Cache {
        Cache {
            entries: Mutex::new(Entries::default()),
            sources: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            capacity,
            max_bytes,
        }
    }

    /// The generation to pass to [`Cache::store`] for an answer computed from now on.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether answers may be cached now: only while writes are heard.
    /// Any range qualifies, open or reaching today: every write path
    /// notifies the days it touched, so a later write drops the answer.
    pub fn enabled(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    pub fn get(&self, key: &str) -> Option<Cached> {
        let guard = self.entries.lock().ok()?;
        guard.map.get(key).map(|e| e.value.clone())
    }

    /// Stores an answer computed at `generation`, unless a write was notified
    /// since. True when it stored a body the cache did not hold (an answer
    /// recomputed unchanged keeps its entry, compressed body included).
    pub fn store(
        &self,
        key: String,
        dataset: &str,
        start: Option<NaiveDate>,
        end: Option<NaiveDate>,
        generation: u64,
        value: Cached,
    ) -> bool {
        let Ok(mut guard) = self.entries.lock() else {
            return false;
        };
        // Checked under the lock that invalidation also takes.
        if generation != self.generation.load(Ordering::SeqCst)
            || !self.listening.load(Ordering::SeqCst)
        {
            return false;
        }
        let entries = &mut *guard;
        if entries
            .map
            .get(&key)
            .is_some_and(|e| e.value.etag == value.etag)
        {
            return false;
        }
        entries.remove(&key);
        // One answer may take at most a quarter of the budget.
        let size = value.size();
        if size > self.max_bytes / 4 {
            return false;
        }
        while entries.map.len() >= self.capacity || entries.bytes + size > self.max_bytes {
            let Some(old) = entries.order.front().cloned() else {
                break;
            };
            entries.remove(&old);
        }
        entries.bytes += size;
        entries.order.push_back(key.clone());
        entries.map.insert(
            key,
            Entry {
                dataset: dataset.to_owned(),
                start,
                end,
                value,
            },
        );
        true
    }

    /// Adds the compressed body to the entry `key` if it still holds the
    /// answer tagged `etag` (a write may have dropped or replaced it since).
    pub fn attach_gzip(&self, key: &str, etag: &str, gzip: Bytes) {
        if let Ok(mut guard) = self.entries.lock() {
            let entries = &mut *guard;
            if entries.bytes + gzip.len() <= self.max_bytes
                && let Some(entry) = entries.map.get_mut(key)
                && entry.value.etag == etag
                && entry.value.gzip.is_none()
            {
                entries.bytes += gzip.len();
                entry.value.gzip = Some(gzip);
            }
        }
    }

    /// The table and rollups of a dataset, when known since the last write to it.
    pub fn sources(&self, dataset: &str) -> Option<(String, Vec<rollup::RollupInfo>)> {
        if !self.listening.load(Ordering::SeqCst) {
            return None;
        }
        self.sources.lock().ok()?.get(dataset).cloned()
    }

    /// Remembers a dataset's sources looked up at `generation`.
    pub fn store_sources(
        &self,
        dataset: &str,
        generation: u64,
        table: String,
        rollups: Vec<rollup::RollupInfo>,
    ) {
        let Ok(guard) = self.entries.lock() else {
            return;
        };
        if generation == self.generation.load(Ordering::SeqCst)
            && self.listening.load(Ordering::SeqCst)
            && let Ok(mut sources) = self.sources.lock()
        {
            sources.insert(dataset.to_owned(), (table, rollups));
        }
        drop(guard);
    }

    /// Drops what a write into `dataset` over `[lo, hi]` (or everything of it) touches.
    pub fn invalidate(&self, dataset: &str, range: Option<(NaiveDate, NaiveDate)>) {
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        // New partitions, rebuilt rollups, fresh row estimates: look them up again.
        if let Ok(mut sources) = self.sources.lock() {
            sources.remove(dataset);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        let Entries { map, order, bytes } = &mut *guard;
        map.retain(|_, e| {
            let keep = e.dataset != dataset
                || match range {
                    None => false,
                    Some((lo, hi)) => {
                        e.end.is_some_and(|end| end < lo) || e.start.is_some_and(|s| s > hi)
                    }
                };
            if !keep {
                *bytes -= e.value.size();
            }
            keep
        });
        order.retain(|k| map.contains_key(k));
    }

    /// Parses a `clue_writes` payload (`dataset lo hi` or `dataset *`).
    pub fn on_notification(&self, payload: &str) {
        let mut parts = payload.split_whitespace();
        let dataset = parts.next().unwrap_or("");
        let lo = parts.next().and_then(|s| s.parse::<NaiveDate>().ok());
        let hi = parts.next().and_then(|s| s.parse::<NaiveDate>().ok());
        match (lo, hi) {
            (Some(lo), Some(hi)) => self.invalidate(dataset, Some((lo, hi))),
            _ => self.invalidate(dataset, None),
        }
    }

    /// Marks the listener up or down; going down forgets everything.
    pub fn set_listening(&self, up: bool) {
        if !up && let Ok(mut guard) = self.entries.lock() {
            guard.clear();
            if let Ok(mut sources) = self.sources.lock() {
                sources.clear();
            }
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.listening.store(up, Ordering::SeqCst);
    }
}

/// Tells every server's cache, when `tx` commits, that `dataset` changed over
/// `[lo, hi]` (or anywhere, with `None`). The payload is what
/// [`Cache::on_notification`] reads.
pub async fn notify_write(
    tx: &tokio_postgres::Transaction<'_>,
    dataset: &str,
    range: Option<(NaiveDate, NaiveDate)>,
) -> Result<(), tokio_postgres::Error> {
    let payload = match range {
        Some((lo, hi)) => format!("{dataset} {lo} {hi}"),
        None => format!("{dataset} *"),
    };
    tx.execute("SELECT pg_notify('clue_writes', $1)", &[&payload])
        .await?;
    Ok(())
}

/// ETag of a body.
pub fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

/// Keeps `cache` informed of writes: LISTENs on `clue_writes` over a
/// dedicated connection, reconnecting (with the cache off) when it drops.
pub fn spawn_listener(
    config: tokio_postgres::Config,
    cache: Arc<Cache>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match listen_once(&config, &cache).await {
                Ok(()) | Err(_) => cache.set_listening(false),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    })
}

async fn listen_once(
    config: &tokio_postgres::Config,
    cache: &Cache,
) -> Result<(), tokio_postgres::Error> {
    use futures_util::StreamExt;
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let forward = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(message) = stream.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client.batch_execute("LISTEN clue_writes").await?;
    cache.set_listening(true);
    while let Some(payload) = rx.recv().await {
        cache.on_notification(&payload);
    }
    forward.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn value(tag: &str) -> Cached {
        Cached {
            body: Bytes::from(tag.to_owned()),
            etag: etag(tag.as_bytes()),
            content_type: "text/plain",
            gzip: None,
            served_from: String::new(),
        }
    }

    #[test]
    fn writes_invalidate_overlapping_answers_only() {
        let cache = Cache::new(10, 1 << 20);
        cache.set_listening(true);
        let g = cache.generation();
        cache.store(
            "q1".into(),
            "sales",
            Some(d("2024-01-01")),
            Some(d("2024-03-31")),
            g,
            value("1"),
        );
        cache.store(
            "q2".into(),
            "sales",
            Some(d("2024-06-01")),
            Some(d("2024-06-30")),
            g,
            value("2"),
        );
        cache.store("q3".into(), "other", None, None, g, value("3"));
        // Open ranges: from a day on, and everything.
        cache.store(
            "q4".into(),
            "sales",
            Some(d("2024-05-01")),
            None,
            g,
            value("4"),
        );
        cache.store("q5".into(), "sales", None, None, g, value("5"));
        cache.on_notification("sales 2024-03-15 2024-04-02");
        assert!(cache.get("q1").is_none(), "overlapping answer dropped");
        assert!(cache.get("q2").is_some());
        assert!(cache.get("q3").is_some(), "other datasets untouched");
        assert!(cache.get("q4").is_some(), "starts after the write");
        assert!(cache.get("q5").is_none(), "the whole range holds the write");
        cache.on_notification("sales 2030-01-01 2030-01-01");
        assert!(cache.get("q4").is_none(), "a late write into an open range");
        cache.on_notification("sales *");
        assert!(cache.get("q2").is_none());
    }

    #[test]
    fn an_answer_computed_before_a_write_is_not_stored() {
        let cache = Cache::new(10, 1 << 20);
        cache.set_listening(true);
        let before = cache.generation();
        cache.on_notification("sales 2030-01-01 2030-01-01");
        cache.store(
            "q".into(),
            "sales",
            None,
            Some(d("2024-01-31")),
            before,
            value("stale"),
        );
        assert!(cache.get("q").is_none());
    }

    #[test]
    fn nothing_is_cached_without_the_listener() {
        let cache = Cache::new(10, 1 << 20);
        assert!(!cache.enabled());
        cache.store(
            "q".into(),
            "sales",
            None,
            None,
            cache.generation(),
            value("x"),
        );
        assert!(cache.get("q").is_none(), "not stored while not listening");
        cache.set_listening(true);
        assert!(cache.enabled());
        cache.store(
            "q".into(),
            "sales",
            None,
            Some(d("2024-01-31")),
            cache.generation(),
            value("x"),
        );
        cache.set_listening(false);
        assert!(
            cache.get("q").is_none(),
            "losing the listener forgets everything"
        );
    }

    #[test]
    fn numerics_decode_exactly_or_not_at_all() {
        use tokio_postgres::types::{FromSql, ToSql, Type};
        let check = |text: &str| {
            let d: rust_decimal::Decimal = text.parse().unwrap();
            let mut buf = bytes::BytesMut::new();
            d.to_sql(&Type::NUMERIC, &mut buf).unwrap();
            let back = ExactNumeric::from_sql(&Type::NUMERIC, &buf).unwrap().0;
            assert_eq!(back.to_string(), text, "{buf:?}");
        };
        for t in [
            "0",
            "1",
            "-1",
            "0.01",
            "70575.00",
            "-2.50",
            "10000",
            "123456789.123456789",
            "12345678901234567.89",
            "0.0001",
            "79228162514264337593543950335",
            "-0.0000000000000000000000000001",
        ] {
            check(t);
        }
        // Raw wire values: ndigits, weight, sign, dscale, base-10000 digits.
        let raw = |words: &[u16]| {
            words
                .iter()
                .flat_map(|w| w.to_be_bytes())
                .collect::<Vec<u8>>()
        };
        let decode = |words: &[u16]| {
            ExactNumeric::from_sql(&Type::NUMERIC, &raw(words))
                .map(|n| n.0.to_string())
                .map_err(|e| e.to_string())
        };
        assert_eq!(decode(&[2, 0, 0, 1, 12, 5000]), Ok("12.5".into()));
        assert_eq!(decode(&[0, 0, 0, 2]), Ok("0.00".into()));
        assert_eq!(decode(&[1, 0xFFFF, 0x4000, 4, 25]), Ok("-0.0025".into()));
        assert_eq!(
            decode(&[0, 0, 0xC000, 0]).unwrap_err(),
            "numeric NaN or infinity has no exact decimal value"
        );
        assert_eq!(
            decode(&[8, 7, 0, 0, 9999, 9999, 9999, 9999, 9999, 9999, 9999, 9999]).unwrap_err(),
            "numeric value has more than 28 significant digits"
        );
        assert_eq!(
            decode(&[3, 0, 0, 0, 1]).unwrap_err(),
            "numeric value is truncated"
        );
        assert_eq!(decode(&[1]).unwrap_err(), "numeric value is truncated");
    }

    #[test]
    fn compressed_bodies_attach_to_the_answer_they_were_made_from() {
        let cache = Cache::new(10, 1 << 20);
        cache.set_listening(true);
        let v = value("x");
        cache.store("q".into(), "s", None, None, cache.generation(), v.clone());
        cache.attach_gzip("q", "\"other\"", Bytes::from_static(b"gz-other"));
        assert_eq!(cache.get("q").unwrap().gzip, None, "another answer's body");
        cache.attach_gzip("q", &v.etag, Bytes::from_static(b"gz"));
        assert_eq!(
            cache.get("q").unwrap().gzip,
            Some(Bytes::from_static(b"gz"))
        );
        cache.attach_gzip("gone", &v.etag, Bytes::from_static(b"gz"));
        assert!(cache.get("gone").is_none());
        // Recomputed unchanged (Cache-Control: no-cache): kept, compressed body too.
        assert!(!cache.store("q".into(), "s", None, None, cache.generation(), v.clone()));
        assert_eq!(
            cache.get("q").unwrap().gzip,
            Some(Bytes::from_static(b"gz"))
        );
        // Recomputed different: replaced, once.
        assert!(cache.store("q".into(), "s", None, None, cache.generation(), value("y")));
        assert_eq!(cache.get("q").unwrap().body, Bytes::from_static(b"y"));
        assert_eq!(cache.get("q").unwrap().gzip, None);
        assert_eq!(cache.entries.lock().unwrap().order.len(), 1);
        assert_eq!(cache.entries.lock().unwrap().bytes, 1);
    }

    #[test]
    fn the_byte_budget_evicts_the_oldest_and_refuses_giants() {
        let cache = Cache::new(100, 40);
        cache.set_listening(true);
        let sized = |n: usize| Cached {
            body: Bytes::from(vec![b'x'; n]),
            etag: etag(&n.to_le_bytes()),
            content_type: "text/plain",
            gzip: None,
            served_from: String::new(),
        };
        let g = cache.generation();
        assert!(cache.store("a".into(), "s", None, None, g, sized(10)));
        assert!(cache.store("b".into(), "s", None, None, g, sized(10)));
        assert!(cache.store("c".into(), "s", None, None, g, sized(10)));
        assert!(cache.store("d".into(), "s", None, None, g, sized(10)));
        assert!(
            !cache.store("giant".into(), "s", None, None, g, sized(11)),
            "over a quarter of the budget"
        );
        assert!(cache.store("e".into(), "s", None, None, g, sized(5)));
        assert!(cache.get("a").is_none(), "the oldest made room");
        assert!(cache.get("b").is_some() && cache.get("e").is_some());
        assert_eq!(cache.entries.lock().unwrap().bytes, 35);
        // A compressed body that does not fit is not attached.
        cache.attach_gzip("b", &sized(10).etag, Bytes::from(vec![b'z'; 6]));
        assert_eq!(cache.get("b").unwrap().gzip, None);
        cache.on_notification("s *");
        assert_eq!(cache.entries.lock().unwrap().bytes, 0);
    }

    #[test]
    fn capacity_evicts_the_oldest() {
        let cache = Cache::new(2, 1 << 20);
        cache.set_listening(true);
        for k in ["a", "b", "c"] {
            cache.store(
                k.into(),
                "s",
                None,
                Some(d("2024-01-01")),
                cache.generation(),
                value(k),
            );
        }
        assert!(cache.get("a").is_none());
        assert!(cache.get("c").is_some());
    }

    #[test]
    fn requests_are_checked() {
        let req: QueryRequest = serde_json::from_value(serde_json::json!({
            "dataset": "sales_report", "measures": ["revenue"], "start_date": "2025-02-01", "end_date": "2025-01-01"
        }))
        .unwrap();
        assert_eq!(
            req.to_query().unwrap_err().to_string(),
            "start_date: 2025-02-01 is after end_date 2025-01-01"
        );
        let bad = serde_json::from_value::<QueryRequest>(
            serde_json::json!({"dataset": "s", "measures": [], "colour": 1}),
        );
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("unknown field `colour`")
        );
        let req: QueryRequest = serde_json::from_value(serde_json::json!({
            "dataset": "s", "measures": ["m"], "filters": [{"dimension": "region", "equals": "N", "in": ["S"]}]
        }))
        .unwrap();
        assert_eq!(
            req.to_query().unwrap_err().to_string(),
            "filters: \"region\" needs exactly one of `equals`, `in`, or `min`/`max`"
        );
        let req: QueryRequest = serde_json::from_value(
            serde_json::json!({"dataset": "s", "measures": ["m"], "limit": 0}),
        )
        .unwrap();
        assert_eq!(
            req.to_query().unwrap_err().to_string(),
            "limit: must be between 1 and 100000, got 0"
        );
        let req: QueryRequest = serde_json::from_value(serde_json::json!({"dataset": "s", "measures": ["m"], "time_zone": "Europe/Paris; drop"})).unwrap();
        assert!(
            req.to_query()
                .unwrap_err()
                .to_string()
                .starts_with("time_zone:")
        );
    }
}
