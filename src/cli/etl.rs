//! `clue etl run | status | reset | drop-slot` and `clue export-reports`:
//! the database sync's commands (prototype 004's `run-etl` and
//! `run-continuous-etl` are aliases of `etl run`) and its reports as files.

use std::io::IsTerminal;

use super::args::{EtlAction, EtlRunArgs, EtlSourceArgs, ExportArgs};
use super::with_db;
use crate::app;
use crate::error::Error;
use crate::ingest::sync::cdc::{self, CdcOptions};
use crate::ingest::sync::{self, SyncOptions};
use crate::settings::{Settings, SyncFlags, SyncSettings};
use crate::store;

pub(super) async fn command(settings: &Settings, action: EtlAction) -> Result<(), Error> {
    match action {
        EtlAction::Run(args) => run(settings, args).await,
        EtlAction::Status(args) => status(settings, &args).await,
        EtlAction::Reset(args) => reset(settings, &args).await,
        EtlAction::DropSlot(args) => drop_slot(settings, &args).await,
    }
}

fn sync_settings(source: &EtlSourceArgs, flags: SyncFlags<'_>) -> Result<SyncSettings, Error> {
    Ok(SyncSettings::resolve(
        SyncFlags {
            source_url: source.source_url.as_deref(),
            ..flags
        },
        |name| std::env::var(name).ok(),
    )?)
}

async fn run(settings: &Settings, args: EtlRunArgs) -> Result<(), Error> {
    let sync = sync_settings(
        &args.source,
        SyncFlags {
            batch_size: args.batch_size.map(|n| n as usize),
            polling_interval: args.polling_interval,
            ..SyncFlags::default()
        },
    )?;
    let opts = SyncOptions {
        source: sync.source()?.clone(),
        batch_size: sync.batch_size,
        continuous: args.continuous.then_some(sync.polling_interval),
        progress: !args.no_progress && std::io::stderr().is_terminal(),
        cdc: args.cdc.then(|| CdcOptions {
            slot: args.source.slot.clone(),
            publication: args
                .publication
                .clone()
                .unwrap_or_else(|| cdc::DEFAULT_PUBLICATION.to_owned()),
        }),
    };
    let catalog = app::catalog(settings)?;
    if args.cdc {
        eprintln!(
            "Streaming the changes of {} (change data capture); Ctrl-C to stop.",
            sync::source_name(&opts.source)
        );
    } else if args.continuous {
        eprintln!(
            "Syncing {} every {} s; Ctrl-C to stop.",
            sync::source_name(&opts.source),
            opts.continuous.map_or(0, |d| d.as_secs())
        );
    }
    let started = std::time::Instant::now();
    let report = with_db(settings, async |db| {
        Ok(sync::run(db, &catalog, &opts, crate::api::shutdown_signal()).await?)
    })
    .await?;
    let rounds = if args.cdc {
        format!("{} streamed transaction(s)", report.transactions)
    } else {
        format!("{} cycle(s)", report.cycles)
    };
    println!(
        "Synced {} in {rounds}{}: {} order(s) and {} item(s) written, {} order(s) removed, in {:.2} s.",
        sync::source_name(&opts.source),
        if report.copied {
            ", starting with a full copy"
        } else {
            ""
        },
        report.written.orders,
        report.written.items,
        report.written.deleted_orders,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn status(settings: &Settings, args: &EtlSourceArgs) -> Result<(), Error> {
    let sync = sync_settings(args, SyncFlags::default())?;
    let name = sync::source_name(sync.source()?);
    let (marks, position) = with_db(settings, async |db| {
        let client = db.client().await?;
        let marks = store::sync::watermarks(&**client, &name)
            .await
            .map_err(crate::error::PgError)?;
        let position = store::sync::position(&**client, &name)
            .await
            .map_err(crate::error::PgError)?;
        Ok((marks, position))
    })
    .await?;
    if let Some(slot) = args
        .slot
        .clone()
        .or(position.as_ref().map(|p| p.slot.clone()))
    {
        print_slot(sync.source()?, &name, &slot, position.as_ref()).await;
    }
    if marks.is_empty() && position.is_none() {
        println!("{name}: never synced (the next `clue etl run` copies everything).");
    }
    // What each table has yet to sync, when the source answers.
    let (lag, open) = match sync::lag(sync.source()?, &marks).await {
        Ok(found) => found,
        Err(e) => {
            eprintln!("(lag unknown: {e})");
            (Vec::new(), None)
        }
    };
    if let Some(t) = open {
        println!(
            "{name}: the oldest open transaction, pid {} ({}), began {}; nothing it may still write is read before it ends",
            t.pid,
            if t.state.is_empty() {
                "state unknown"
            } else {
                &t.state
            },
            t.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    for m in &marks {
        let behind = lag
            .iter()
            .find(|l| l.table == m.source_table)
            .map_or(String::new(), |l| match l.oldest {
                Some(oldest) if l.rows > 0 => {
                    format!("; {} row(s) changed since, the oldest at {oldest}", l.rows)
                }
                _ => "; up to date".to_owned(),
            });
        println!(
            "{name} {}: read up to updated_at {} (id {}), moved {}{behind}",
            m.source_table,
            m.mark.updated_at,
            if m.mark.id == i64::MIN {
                "any".to_owned()
            } else {
                m.mark.id.to_string()
            },
            m.synced_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    Ok(())
}

/// What `clue etl status` says of change data capture: clue's position and
/// the source's view of the slot (its lag and the WAL it keeps).
async fn print_slot(
    source: &tokio_postgres::Config,
    name: &str,
    slot: &str,
    position: Option<&store::sync::Position>,
) {
    match position {
        Some(p) if p.slot == slot => println!(
            "{name}: change data capture through slot {slot} (publication {}): {}",
            p.publication,
            match p.lsn {
                Some(lsn) => format!(
                    "changes up to {} are in, moved {}",
                    cdc::format_lsn(lsn),
                    p.synced_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                None => "its first copy has not committed".to_owned(),
            }
        ),
        _ => println!("{name}: no change data capture position for slot {slot}"),
    }
    match cdc::slot_status(source, slot).await {
        Ok(Some(s)) => println!(
            "{name}: slot {slot} is {}; confirmed up to {}, {} of WAL behind, {} kept for it",
            s.active_pid
                .map_or("idle".to_owned(), |pid| format!("streaming to pid {pid}")),
            s.confirmed.map_or("nothing".to_owned(), cdc::format_lsn),
            bytes(s.lag_bytes),
            bytes(s.retained_bytes),
        ),
        Ok(None) => println!("{name}: the source has no slot {slot}"),
        Err(e) => eprintln!("(slot unknown: {e})"),
    }
}

/// The change data capture position clue keeps for source `name`.
async fn stored_position(
    settings: &Settings,
    name: &str,
) -> Result<Option<store::sync::Position>, Error> {
    with_db(settings, async |db| {
        let client = db.client().await?;
        Ok(store::sync::position(&**client, name)
            .await
            .map_err(crate::error::PgError)?)
    })
    .await
}

fn bytes(n: Option<i64>) -> String {
    match n {
        None => "unknown".to_owned(),
        Some(n) if n < 1 << 20 => format!("{n} bytes"),
        Some(n) => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
    }
}

async fn reset(settings: &Settings, args: &EtlSourceArgs) -> Result<(), Error> {
    let sync = sync_settings(args, SyncFlags::default())?;
    let name = sync::source_name(sync.source()?);
    let position = stored_position(settings, &name).await?;
    if let Some(p) = position {
        // The slot's position means nothing without clue's: it goes first,
        // so a source that cannot be reached leaves everything as it was.
        forget_slot(settings, sync.source()?, &name, &p.slot).await?;
    }
    let n = with_db(settings, async |db| {
        let client = db.client().await?;
        Ok(store::sync::reset(&**client, &name)
            .await
            .map_err(crate::error::PgError)?)
    })
    .await?;
    println!("Forgot {n} watermark(s) of {name}; the next run copies everything.");
    Ok(())
}

async fn drop_slot(settings: &Settings, args: &EtlSourceArgs) -> Result<(), Error> {
    let sync = sync_settings(args, SyncFlags::default())?;
    let name = sync::source_name(sync.source()?);
    let position = stored_position(settings, &name).await?;
    let Some(slot) = args.slot.clone().or(position.map(|p| p.slot)) else {
        println!("{name}: no replication slot recorded (name one with --slot).");
        return Ok(());
    };
    forget_slot(settings, sync.source()?, &name, &slot).await
}

/// Drops `slot` on the source, then forgets clue's position for it.
async fn forget_slot(
    settings: &Settings,
    source: &tokio_postgres::Config,
    name: &str,
    slot: &str,
) -> Result<(), Error> {
    let dropped = cdc::drop_slot_of(source, slot).await?;
    with_db(settings, async |db| {
        let client = db.client().await?;
        if store::sync::position(&**client, name)
            .await
            .map_err(crate::error::PgError)?
            .is_some_and(|p| p.slot == slot)
        {
            store::sync::forget_position(&**client, name)
                .await
                .map_err(crate::error::PgError)?;
        }
        Ok(())
    })
    .await?;
    if dropped {
        println!(
            "Dropped the replication slot {slot} of {name}; the next --cdc run copies everything."
        );
    } else {
        println!("{name} has no replication slot {slot}.");
    }
    Ok(())
}

/// Writes the chosen reports into the output directory, each through a
/// temporary file renamed into place: a crash never leaves half a file.
pub(super) async fn export_reports(settings: &Settings, args: &ExportArgs) -> Result<(), Error> {
    use crate::serve::delivery::{self, DeliveryReport};
    let sync = SyncSettings::resolve(
        SyncFlags {
            output_dir: args.output.as_deref(),
            ..SyncFlags::default()
        },
        |name| std::env::var(name).ok(),
    )?;
    let chosen: Vec<DeliveryReport> = DeliveryReport::ALL
        .into_iter()
        .filter(|r| {
            args.all
                || match r {
                    DeliveryReport::OpenOrders => args.open_orders,
                    DeliveryReport::TopDeliveryDates => args.top_dates,
                    DeliveryReport::PendingItems => args.pending_items,
                    DeliveryReport::TopCustomers => args.top_customers,
                }
        })
        .collect();
    let catalog = app::catalog(settings)?;
    let dir = sync.output_dir.clone();
    let io = |what: String, e: std::io::Error| {
        crate::error::Error::new(crate::error::ErrorKind::BadInput, format!("{what}: {e}"))
    };
    std::fs::create_dir_all(&dir).map_err(|e| io(format!("create {}", dir.display()), e))?;
    let written = with_db(settings, async |db| {
        let mut written = Vec::new();
        for report in &chosen {
            let (rows, _) = delivery::run(
                db,
                &catalog,
                None,
                *report,
                &crate::plan::View::everything(),
            )
            .await?;
            let body = rows.to_csv().map_err(|e| {
                crate::error::Error::new(crate::error::ErrorKind::Internal, e.to_string())
            })?;
            let path = dir.join(report.file_name());
            let mut file = tempfile::NamedTempFile::new_in(&dir)
                .map_err(|e| io(format!("write in {}", dir.display()), e))?;
            std::io::Write::write_all(&mut file, &body)
                .and_then(|()| file.as_file().sync_all())
                .map_err(|e| io(format!("write {}", path.display()), e))?;
            file.persist(&path)
                .map_err(|e| io(format!("write {}", path.display()), e.error))?;
            written.push(path);
        }
        Ok(written)
    })
    .await?;
    for path in written {
        println!("Wrote {}.", path.display());
    }
    Ok(())
}
