//! `clue demo`: make sure the database holds a realistic data set (schema,
//! generated sales, validated import; learning logs; sales events; two weeks of
//! warehouse batches), reusing
//! what an earlier run loaded.

use std::path::Path;

use chrono::NaiveDate;

use crate::domain::dataset::Catalog;
use crate::ingest::csv::{self as import, ImportOptions, NamedSchema};
use crate::pg::catalog as schema;
use crate::pg::database::Database;

pub mod delivery;
pub mod events;
pub mod generate;
pub mod warehouse;

use generate::GenerateOptions;

/// What the demo data looks like once loaded.
#[derive(Debug, Clone)]
pub struct DemoData {
    pub rows: i64,
    pub first_date: Option<NaiveDate>,
    pub last_date: Option<NaiveDate>,
    /// True when this run generated and imported it.
    pub loaded_now: bool,
}

/// Users of the demo learning logs (`user01` …).
pub const LEARNERS: u32 = 12;

/// When `learning_log` is empty, records a year of learning for
/// [`LEARNERS`] users (a few sessions on most days, every user at their own
/// pace) through the same write path as `POST /recordsjson`.
async fn learning_logs(
    db: &Database,
    catalog: &Catalog,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use rand::{RngExt, SeedableRng};
    let client = db.client().await?;
    let has_rows: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM learning_log)", &[])
        .await?
        .get(0);
    if has_rows {
        return Ok(());
    }
    eprintln!("Recording demo learning logs...");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let start = NaiveDate::from_ymd_opt(2025, 1, 1).expect("a date");
    let mut batch = Vec::new();
    let mut total = 0u64;
    for user in 1..=LEARNERS {
        let pace = rng.random_range(10..=60);
        for day in 0..365 {
            if !rng.random_bool(0.7) {
                continue;
            }
            for _ in 0..rng.random_range(1..=3) {
                let at = start.and_hms_opt(rng.random_range(6..23), rng.random_range(0..60), 0);
                let at = at.expect("a time") + chrono::Days::new(day);
                let id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
                batch.push(crate::ingest::records::Record {
                    fields: vec![
                        ("request_id".into(), id.to_string()),
                        ("user_id".into(), format!("user{user:02}")),
                        (
                            "word_count".into(),
                            rng.random_range(0..=pace * 2).to_string(),
                        ),
                        (
                            "timestamp".into(),
                            format!("{}Z", at.format("%Y-%m-%dT%H:%M:%S")),
                        ),
                    ],
                });
            }
        }
        total += batch.len() as u64;
        crate::ingest::records::record(db, catalog, "learning_log", &batch).await?;
        batch.clear();
    }
    eprintln!("Recorded {total} learning records of {LEARNERS} users.");
    Ok(())
}

/// Two weeks of prototype 002's daily batches into the warehouse when it
/// has none: generated, loaded in date order, the quarantine replayed.
async fn warehouse_batches(
    db: &Database,
    work_dir: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use crate::ingest::warehouse::{self as wh, LoadOptions, Outcome};
    let client = db.client().await?;
    if !crate::store::warehouse::batches(&**client)
        .await?
        .is_empty()
    {
        return Ok(());
    }
    drop(client);
    let dir = work_dir.join("warehouse");
    let opts = warehouse::WarehouseGenerateOptions {
        days: 14,
        customers: 2_000,
        sales_per_day: 5_000,
        start: chrono::Utc::now().date_naive() - chrono::Days::new(14),
        ..Default::default()
    };
    let generate_in = dir.clone();
    let files =
        tokio::task::spawn_blocking(move || warehouse::generate(&generate_in, &opts)).await??;
    let rules = crate::domain::warehouse::WarehouseRules::builtin();
    let (mut loaded, mut quarantined) = (0, 0);
    for (customers, sales) in &files {
        let load = LoadOptions {
            batch_date: wh::date_in_name(sales).ok_or("a generated file has a date")?,
            customers: customers.clone(),
            sales: sales.clone(),
            replace: false,
            rules: rules.clone(),
        };
        if let Outcome::Loaded(report) = wh::load(db, &load).await? {
            loaded += report.sales.loaded;
            quarantined += report.sales.quarantined;
        }
    }
    let replayed = wh::replay_quarantine(db, &rules).await?;
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "Loaded {} warehouse batches: {} sales, {} quarantined ({} released by the replay).",
        files.len(),
        loaded + replayed.released,
        quarantined - replayed.released,
        replayed.released
    );
    Ok(())
}

/// Creates `sales_report` if missing and, when it is empty, generates `rows`
/// rows into `work_dir` and imports them with validation.
pub async fn prepare(
    db: &Database,
    catalog: &Catalog,
    rows: u64,
    work_dir: &Path,
    progress: bool,
) -> Result<DemoData, Box<dyn std::error::Error + Send + Sync>> {
    let mut client = db.client().await?;
    if schema::find_table(&**client, "sales_report")
        .await?
        .is_none()
    {
        eprintln!("Creating table sales_report...");
        schema::create_schema(&mut client, None).await?;
    }
    let has_rows: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM sales_report)", &[])
        .await?
        .get(0);
    let mut loaded_now = false;
    if !has_rows {
        std::fs::create_dir_all(work_dir)?;
        let csv = work_dir.join("demo-sales.csv");
        // The rules of the built-in dataset, as loaded with the catalog.
        let rules = NamedSchema {
            schema: catalog.get("sales_report")?.columns.clone(),
            name: "built-in sales_report rules".into(),
        };
        eprintln!("Generating {rows} sales rows...");
        let opts = GenerateOptions {
            rows,
            ..GenerateOptions::default()
        };
        let path = csv.clone();
        tokio::task::spawn_blocking(move || {
            generate::generate_sales(&opts, std::fs::File::create(&path)?)
        })
        .await??;
        eprintln!("Importing them with validation...");
        let report = import::import(
            db,
            catalog,
            &ImportOptions {
                csv_path: csv.clone(),
                table: "sales_report".into(),
                schema: Some(rules),
                error_table: import::DEFAULT_ERROR_TABLE.into(),
                force: false,
                progress,
            },
        )
        .await;
        let _ = std::fs::remove_file(&csv);
        let report = report?;
        eprintln!(
            "Imported {} rows in {:.1} s ({:.0} rows/s).",
            report.rows_loaded,
            report.elapsed.as_secs_f64(),
            report.rows_loaded as f64 / report.elapsed.as_secs_f64().max(1e-9)
        );
        loaded_now = true;
    }
    learning_logs(db, catalog).await?;
    events::sales_events(db, catalog).await?;
    warehouse_batches(db, work_dir).await?;
    let row = client
        .query_one(
            "SELECT count(*), min(sales_date), max(sales_date) FROM sales_report",
            &[],
        )
        .await?;
    Ok(DemoData {
        rows: row.get(0),
        first_date: row.get(1),
        last_date: row.get(2),
        loaded_now,
    })
}
