//! `clue etl run | status | reset`: the database sync's commands (prototype
//! 004's `run-etl` and `run-continuous-etl` are aliases of `etl run`).

use std::io::IsTerminal;

use super::args::{EtlAction, EtlRunArgs, EtlSourceArgs};
use super::with_db;
use crate::app;
use crate::error::Error;
use crate::ingest::sync::{self, SyncOptions};
use crate::settings::{Settings, SyncFlags, SyncSettings};
use crate::store;

pub(super) async fn command(settings: &Settings, action: EtlAction) -> Result<(), Error> {
    match action {
        EtlAction::Run(args) => run(settings, args).await,
        EtlAction::Status(args) => status(settings, &args).await,
        EtlAction::Reset(args) => reset(settings, &args).await,
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
    };
    let catalog = app::catalog(settings)?;
    if args.continuous {
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
    println!(
        "Synced {} in {} cycle(s){}: {} order(s) and {} item(s) written, {} order(s) removed, in {:.2} s.",
        sync::source_name(&opts.source),
        report.cycles,
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
    let marks = with_db(settings, async |db| {
        let client = db.client().await?;
        Ok(store::sync::watermarks(&**client, &name)
            .await
            .map_err(crate::error::PgError)?)
    })
    .await?;
    if marks.is_empty() {
        println!("{name}: never synced (the next `clue etl run` copies everything).");
    }
    for m in marks {
        println!(
            "{name} {}: read up to updated_at {} (id {}), moved {}",
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

async fn reset(settings: &Settings, args: &EtlSourceArgs) -> Result<(), Error> {
    let sync = sync_settings(args, SyncFlags::default())?;
    let name = sync::source_name(sync.source()?);
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
