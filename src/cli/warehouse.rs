//! `clue warehouse load | report | refresh`: prototype 002's daily batches
//! from the command line.

use super::args::{WarehouseAction, WarehouseLoadArgs, WarehouseRulesArgs};
use super::with_db;
use crate::domain::warehouse::WarehouseRules;
use crate::error::{Error, ErrorKind};
use crate::ingest::warehouse::{self, LoadOptions, Outcome, Report};
use crate::settings::Settings;

pub(super) async fn command(settings: &Settings, action: WarehouseAction) -> Result<(), Error> {
    match action {
        WarehouseAction::Load(args) => load(settings, &args).await,
        WarehouseAction::Report { batch_date, json } => {
            let report = with_db(settings, async |db| {
                Ok(warehouse::report(db, batch_date).await?)
            })
            .await?;
            print_report(&report, json);
            Ok(())
        }
        WarehouseAction::ReplayQuarantine(args) => {
            let rules = rules(&args)?;
            let done = with_db(settings, async |db| {
                Ok(warehouse::replay_quarantine(db, &rules).await?)
            })
            .await?;
            println!(
                "Released {} quarantined sale(s) into the facts.",
                done.released
            );
            for (rule, n) in &done.still {
                println!("  still quarantined, {rule}: {n}");
            }
            Ok(())
        }
        WarehouseAction::Generate {
            days,
            customers,
            sales_per_day,
            change_rate,
            fault_rate,
            start,
            seed,
            gzip,
            parquet,
            out,
        } => {
            for (flag, share) in [("--change-rate", change_rate), ("--fault-rate", fault_rate)] {
                if !(0.0..=1.0).contains(&share) {
                    return Err(Error::new(
                        ErrorKind::BadInput,
                        format!("{flag} {share}: a share, from 0 to 1"),
                    ));
                }
            }
            let opts = crate::demo::warehouse::WarehouseGenerateOptions {
                days,
                customers,
                sales_per_day,
                start,
                seed,
                change_rate,
                fault_rate,
                gzip,
                parquet,
            };
            let files = crate::demo::warehouse::generate(&out, &opts).map_err(|e| {
                Error::new(
                    ErrorKind::BadInput,
                    format!("write in {}: {e}", out.display()),
                )
            })?;
            println!(
                "Wrote {} daily batch(es) into {} ({} to {}).",
                files.len(),
                out.display(),
                start,
                start + chrono::Days::new(u64::from(days - 1))
            );
            Ok(())
        }
        WarehouseAction::Watch {
            dir,
            interval,
            once,
            rules: rules_args,
        } => {
            let rules = rules(&rules_args)?;
            if !dir.is_dir() {
                return Err(Error::new(
                    ErrorKind::BadInput,
                    format!("{}: not a directory", dir.display()),
                ));
            }
            if !once {
                eprintln!(
                    "Watching {} for daily batches every {interval} s; Ctrl-C to stop.",
                    dir.display()
                );
            }
            let done = with_db(settings, async |db| {
                Ok(warehouse::watch::watch(
                    db,
                    &dir,
                    &rules,
                    std::time::Duration::from_secs(interval),
                    once,
                    crate::api::shutdown_signal(),
                )
                .await?)
            })
            .await?;
            println!(
                "Loaded {} batch(es) from {}; {} could not be loaded.",
                done.loaded,
                dir.display(),
                done.failed
            );
            Ok(())
        }
        WarehouseAction::Refresh => {
            with_db(settings, async |db| Ok(warehouse::refresh(db).await?)).await?;
            println!("Recomputed the KPI marts from the facts.");
            Ok(())
        }
    }
}

/// The cleaning rules: built in or from a file, with the amount threshold.
fn rules(args: &WarehouseRulesArgs) -> Result<WarehouseRules, Error> {
    let mut rules = match &args.rules {
        Some(path) => {
            let bad =
                |e: String| Error::new(ErrorKind::BadInput, format!("{}: {e}", path.display()));
            let size = std::fs::metadata(path)
                .map_err(|e| bad(e.to_string()))?
                .len();
            if size > crate::domain::rules::MAX_SCHEMA_BYTES {
                return Err(bad(format!(
                    "is {size} bytes; a rules file is at most 1 MiB"
                )));
            }
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            WarehouseRules::parse(&text, &path.display().to_string())
                .map_err(|e| Error::new(ErrorKind::BadInput, e.to_string()))?
        }
        None => WarehouseRules::builtin(),
    };
    if let Some(max) = args.max_amount {
        rules = rules.with_max_amount(max);
    }
    Ok(rules)
}

async fn load(settings: &Settings, args: &WarehouseLoadArgs) -> Result<(), Error> {
    let rules = rules(&args.rules)?;
    let batch_date = args
        .batch_date
        .or_else(|| warehouse::date_in_name(&args.sales))
        .or_else(|| warehouse::date_in_name(&args.customers))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::BadInput,
                "no batch date: pass --batch-date YYYY-MM-DD (or name a file after its date, sales_2025-03-01.csv)",
            )
        })?;
    let opts = LoadOptions {
        customers: args.customers.clone(),
        sales: args.sales.clone(),
        batch_date,
        replace: args.replace,
        rules,
    };
    match with_db(settings, async |db| Ok(warehouse::load(db, &opts).await?)).await? {
        Outcome::AlreadyLoaded(date) => println!(
            "Batch {date} is loaded already from these files; nothing changed (--replace reloads it)."
        ),
        Outcome::Loaded(report) => print_report(&report, args.json),
    }
    Ok(())
}

fn print_report(report: &Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).expect("a report serializes")
        );
        return;
    }
    let c = &report.customers;
    let s = &report.sales;
    println!(
        "Batch {}: {} customer row(s): {} new, {} changed (a new version each), {} unchanged, {} quarantined.",
        report.batch_date, c.received, c.new, c.changed, c.unchanged, c.quarantined
    );
    println!(
        "  {} sales row(s): {} loaded, {} quarantined.",
        s.received, s.loaded, s.quarantined
    );
    for r in &report.rules {
        println!("  {} {}: {} row(s)", r.source, r.rule, r.count);
        for e in &r.examples {
            println!(
                "    line {}: {}",
                e.get("line").map_or(String::new(), ToString::to_string),
                e.get("reason").and_then(|v| v.as_str()).unwrap_or("")
            );
        }
    }
    println!(
        "  {:.2} s: read {:.2}, clean {:.2}, load {:.2}.",
        report.seconds.total, report.seconds.read, report.seconds.clean, report.seconds.load
    );
}
