//! `clue warehouse watch DIR`: prototype 002's "a file lands, its batch
//! runs" on a local or mounted directory, by polling (inotify does not see
//! writes made on another machine to a mounted directory).
//!
//! A batch is a pair `customers…YYYY-MM-DD….ext` and `sales…YYYY-MM-DD….ext`
//! (CSV, gzip or Parquet). Pairs load in date order, each once: the batch
//! registry is the memory, so a restart goes on where it was. A file still
//! growing (its size or time changed since the last look) waits for the
//! next look; a batch that fails is logged once and waits until one of its
//! files changes, holding back the later dates.
//!
//! Architecture Invariant: the watcher loads through `load` like the CLI,
//! and never loads a date while an earlier complete pair is unloaded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::NaiveDate;

use super::{LoadOptions, Outcome, WarehouseError, date_in_name, load};
use crate::domain::warehouse::WarehouseRules;
use crate::pg::database::Database;

/// A file as last seen: its size and modification time.
type Seen = (u64, Option<SystemTime>);

/// The two files of a day, as found.
#[derive(Debug, Default, Clone)]
struct Pair {
    customers: Option<PathBuf>,
    sales: Option<PathBuf>,
}

/// What a watcher did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    pub loaded: u64,
    pub failed: u64,
}

/// The day's pairs in `dir`, by date.
fn pairs(dir: &Path) -> std::io::Result<BTreeMap<NaiveDate, Pair>> {
    let mut out: BTreeMap<NaiveDate, Pair> = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        if lower.starts_with('.') || lower.ends_with(".tmp") || lower.ends_with(".part") {
            continue;
        }
        let Some(date) = date_in_name(&path) else {
            continue;
        };
        let slot = out.entry(date).or_default();
        if lower.starts_with("sales") || lower.starts_with("customer_sales") {
            slot.sales = Some(path);
        } else if lower.starts_with("customer") {
            slot.customers = Some(path);
        }
    }
    Ok(out)
}

fn seen(path: &Path) -> Seen {
    std::fs::metadata(path).map_or((0, None), |m| (m.len(), m.modified().ok()))
}

/// Watches `dir` every `interval` until `stop` resolves (`once`: one look,
/// then return).
pub async fn watch(
    db: &Database,
    dir: &Path,
    rules: &WarehouseRules,
    interval: Duration,
    once: bool,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Watched, WarehouseError> {
    let mut stop = std::pin::pin!(stop);
    let mut sizes: HashMap<PathBuf, Seen> = HashMap::new();
    // A batch that failed, with its files as they were: retried when they change.
    let mut failed: HashMap<NaiveDate, (Seen, Seen, String)> = HashMap::new();
    let mut done = Watched::default();
    tracing::info!(dir = %dir.display(), "watching for daily batches");
    loop {
        let found = pairs(dir).map_err(|e| WarehouseError::Input {
            file: dir.display().to_string(),
            line: None,
            reason: e.to_string(),
        })?;
        let loaded: std::collections::HashSet<NaiveDate> = {
            let client = db.client().await?;
            crate::store::warehouse::batches(&**client)
                .await?
                .into_iter()
                .map(|b| b.batch_date)
                .collect()
        };
        for (date, pair) in &found {
            if loaded.contains(date) {
                continue;
            }
            let (Some(customers), Some(sales)) = (&pair.customers, &pair.sales) else {
                break; // Its other file has not landed yet: later dates wait.
            };
            let now = (seen(customers), seen(sales));
            let steady = sizes.get(customers) == Some(&now.0) && sizes.get(sales) == Some(&now.1);
            sizes.insert(customers.clone(), now.0);
            sizes.insert(sales.clone(), now.1);
            if !steady && !once {
                break; // Still being written, maybe: look again next time.
            }
            if let Some((c, s, _)) = failed.get(date)
                && (*c, *s) == now
            {
                break;
            }
            let opts = LoadOptions {
                customers: customers.clone(),
                sales: sales.clone(),
                batch_date: *date,
                replace: false,
                rules: rules.clone(),
            };
            match load(db, &opts).await {
                Ok(Outcome::Loaded(report)) => {
                    failed.remove(date);
                    done.loaded += 1;
                    tracing::info!(
                        batch = %date,
                        customers = %customers.display(),
                        sales = %sales.display(),
                        loaded = report.sales.loaded,
                        quarantined = report.sales.quarantined + report.customers.quarantined,
                        new_customers = report.customers.new,
                        changed_customers = report.customers.changed,
                        seconds = report.seconds.total,
                        "batch loaded"
                    );
                }
                Ok(Outcome::AlreadyLoaded(_)) => {}
                Err(e) => {
                    let text = e.to_string();
                    if failed.get(date).is_none_or(|(_, _, t)| *t != text) {
                        tracing::warn!(batch = %date, error = %text, "batch not loaded; waiting for its files to change");
                        done.failed += 1;
                    }
                    failed.insert(*date, (now.0, now.1, text));
                    break;
                }
            }
        }
        if once {
            return Ok(done);
        }
        tokio::select! {
            () = &mut stop => return Ok(done),
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pairs;

    #[test]
    fn files_pair_up_by_the_date_in_their_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "customers_2025-03-02.csv",
            "sales_2025-03-02.csv.gz",
            "customers_2025-03-01.parquet",
            "sales_2025-03-01.parquet",
            "sales_2025-03-03.csv",
            ".sales_2025-03-04.csv",
            "customers_2025-03-04.csv.part",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let found = pairs(dir.path()).unwrap();
        let shown: Vec<String> = found
            .iter()
            .map(|(d, p)| {
                format!(
                    "{d} {} {}",
                    p.customers.is_some(),
                    p.sales.as_ref().map_or("-".into(), |s| s
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned())
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "2025-03-01 true sales_2025-03-01.parquet",
                "2025-03-02 true sales_2025-03-02.csv.gz",
                "2025-03-03 false sales_2025-03-03.csv",
            ]
        );
    }
}
