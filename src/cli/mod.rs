//! The `clue` command line: raw arguments (`args`), settings resolved once
//! from them and the environment, one function per command, and the one
//! mapping of error kinds to exit codes.
//!
//! Architecture Invariant: commands hold no business logic and no SQL; they
//! call one service and print its report.

pub mod args;
mod etl;
mod keys;
mod warehouse;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::api;
use crate::app::{self, Role};
use crate::demo::{self, generate};
use crate::domain::dataset::Catalog;
use crate::domain::rules::ValidationSchema;
use crate::error::{Error, ErrorKind};
use crate::ingest::csv::{self as import, ImportOptions, NamedSchema};
use crate::pg::catalog as schema;
use crate::pg::cluster::{Cluster, Status};
use crate::pg::database::Database;
use crate::plan::View;
use crate::serve::{execute, query};
use crate::settings::{DatabaseTarget, Settings};
use crate::write::partitions;
use args::{
    Cli, Command, DbAction, EtlAction, ImportArgs, LogFormat, RollupAction, ServeArgs,
    WarehouseAction,
};

/// Exit codes, so scripts can tell a bad file from a missing database.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DATABASE_UNAVAILABLE: u8 = 3;
    pub const BAD_INPUT: u8 = 4;
}

/// The one mapping of error kinds to exit codes.
fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::BadInput | ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Denied => {
            exit::BAD_INPUT
        }
        ErrorKind::Unavailable => exit::DATABASE_UNAVAILABLE,
        ErrorKind::Timeout | ErrorKind::Internal => exit::FAILURE,
    }
}

/// A failure of a command's own (not of a service): a message and its kind.
fn failure(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::new(kind, message.into())
}

/// The OpenAPI document as YAML, as committed in `docs/openapi.yaml`.
pub fn openapi_yaml() -> Result<String, Error> {
    api::openapi()
        .to_yaml()
        .map_err(|e| failure(ErrorKind::Internal, e.to_string()))
}

/// Parses the arguments, runs the command and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    let server = matches!(cli.command, Command::Serve(_) | Command::Demo { .. });
    // Like other Unix tools, end quietly when the reader of stdout goes away
    // (`clue datasets | head`) instead of panicking on a broken pipe. Never
    // in the servers: there a client hanging up mid-answer (a write to its
    // closed socket) must cost that answer only, not kill the process.
    #[cfg(unix)]
    if !server {
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    // A continuous sync is a service too: it logs what it recovers from.
    let continuous = match &cli.command {
        Command::Etl {
            action: EtlAction::Run(args),
        } => args.continuous || args.cdc,
        Command::RunContinuousEtl(_) => true,
        Command::Warehouse {
            action: WarehouseAction::Watch { .. },
        } => true,
        _ => false,
    };
    init_logs(&cli, server || continuous);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.chain());
            ExitCode::from(exit_code(e.kind()))
        }
    }
}

/// Servers log every request; one-shot commands only warnings.
fn init_logs(cli: &Cli, server: bool) {
    let default_level = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLUE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{default_level},tokio_postgres=warn,refinery_core=warn"
        ))
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let settings = Settings::resolve(cli.database_url.as_deref(), cli.home.as_deref(), |name| {
        std::env::var(name).ok()
    })?;
    match cli.command {
        Command::CreateSchema { source } => create_schema(&settings, source.as_deref()).await,
        Command::CreateMonthlyPartitions { table, start, end } => {
            create_monthly_partitions(&settings, &table, start, end).await
        }
        Command::ImportData(args) => import_data(&settings, args).await,
        Command::GenerateSales {
            rows,
            out,
            seed,
            products,
        } => generate_sales(rows, &out, seed, products),
        Command::Serve(args) => serve_command(&settings, &args).await,
        Command::Keys { action } => keys::command(&settings, action).await,
        Command::Demo { rows, serve } => demo_command(&settings, rows, &serve).await,
        Command::Openapi => {
            print!("{}", openapi_yaml()?);
            Ok(())
        }
        Command::Query {
            json,
            fact,
            explain,
        } => query_command(&settings, &json, fact, explain).await,
        Command::Datasets => datasets(&settings),
        Command::Rollups { action } => rollups_command(&settings, action).await,
        Command::Db { action } => db_command(&settings, action).await,
        Command::Etl { action } => etl::command(&settings, action).await,
        Command::ExportReports(args) => etl::export_reports(&settings, &args).await,
        Command::Warehouse { action } => warehouse::command(&settings, action).await,
        Command::RunEtl(args) => etl::command(&settings, EtlAction::Run(args)).await,
        Command::RunContinuousEtl(mut args) => {
            args.continuous = true;
            etl::command(&settings, EtlAction::Run(args)).await
        }
    }
}

/// Opens the database as a writer, runs `f`, and closes it (stopping an
/// embedded cluster this command started) whether `f` succeeded or not.
async fn with_db<T, F>(settings: &Settings, f: F) -> Result<T, Error>
where
    F: AsyncFnOnce(&Database) -> Result<T, Error>,
{
    let db = app::open(&settings.database, Role::Writer).await?;
    let result = f(&db).await;
    let closed = db.close().await;
    let value = result?;
    closed?;
    Ok(value)
}

async fn create_schema(settings: &Settings, source: Option<&Path>) -> Result<(), Error> {
    let n = with_db(settings, async |db| {
        let mut client = db.client().await?;
        Ok(schema::create_schema(&mut client, source).await?)
    })
    .await?;
    match source {
        Some(path) => println!(
            "Ran {n} statement(s) from {} in one transaction.",
            path.display()
        ),
        None => println!(
            "Created table sales_report (partitioned by month of sales_date) with its default partition sales_report_other."
        ),
    }
    Ok(())
}

async fn create_monthly_partitions(
    settings: &Settings,
    table: &str,
    start: i32,
    end: i32,
) -> Result<(), Error> {
    let report = with_db(settings, async |db| {
        let mut client = db.client().await?;
        Ok(partitions::create_monthly_partitions(&mut client, table, start, end).await?)
    })
    .await?;
    println!(
        "{}: created {} monthly partition(s), {} already present{}{}.",
        table,
        report.created.len(),
        report.already_present,
        report
            .default_created
            .map(|d| format!(", default partition {d}"))
            .unwrap_or_default(),
        if report.rows_moved > 0 {
            format!(
                ", moved {} row(s) out of the default partition",
                report.rows_moved
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

async fn import_data(settings: &Settings, args: ImportArgs) -> Result<(), Error> {
    let catalog = app::catalog(settings)?;
    let schema = match &args.schema_path {
        Some(path) => Some(NamedSchema {
            schema: ValidationSchema::load(path)?,
            name: path.display().to_string(),
        }),
        None => None,
    };
    let opts = ImportOptions {
        csv_path: args.csv_path,
        table: args.table,
        schema,
        error_table: args.error_table,
        force: args.force,
        progress: !args.no_progress && std::io::stderr().is_terminal(),
    };
    let r = with_db(settings, async |db| {
        Ok(import::import(db, &catalog, &opts).await?)
    })
    .await?;
    let secs = r.elapsed.as_secs_f64();
    println!(
        "Imported {} row(s) into {} from {} in {:.2} s ({:.0} rows/s), import #{}.",
        r.rows_loaded,
        r.table,
        opts.csv_path.display(),
        secs,
        r.rows_loaded as f64 / secs.max(1e-9),
        r.import_id
    );
    if let Some(t) = &r.error_table {
        println!(
            "Rejected {} row(s); see {} where import_id = {}.",
            r.rows_rejected, t, r.import_id
        );
    }
    if !r.partitions_created.is_empty() {
        println!("Created partition(s): {}.", r.partitions_created.join(", "));
    }
    if r.rows_moved > 0 {
        println!(
            "Moved {} row(s) out of the default partition.",
            r.rows_moved
        );
    }
    Ok(())
}

fn generate_sales(rows: u64, out: &Path, seed: u64, products: u32) -> Result<(), Error> {
    let opts = generate::GenerateOptions {
        rows,
        seed,
        products,
        ..generate::GenerateOptions::default()
    };
    let io = |e: std::io::Error| failure(ErrorKind::BadInput, format!("{}: {e}", out.display()));
    let summary = if out.as_os_str() == "-" {
        generate::generate_sales(&opts, std::io::stdout().lock()).map_err(io)?
    } else {
        let file = std::fs::File::create(out).map_err(|e| {
            failure(
                ErrorKind::BadInput,
                format!("cannot create {}: {e}", out.display()),
            )
        })?;
        if out.extension().is_some_and(|e| e == "gz") {
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            let s = generate::generate_sales(&opts, &mut gz).map_err(io)?;
            gz.finish().map_err(io)?;
            s
        } else {
            generate::generate_sales(&opts, file).map_err(io)?
        }
    };
    eprintln!(
        "Wrote {} rows ({} to {}), total quantity {}, total revenue {}.",
        summary.rows,
        summary
            .first_date
            .map(|d| d.to_string())
            .unwrap_or_default(),
        summary.last_date.map(|d| d.to_string()).unwrap_or_default(),
        summary.total_quantity,
        summary.total_revenue
    );
    Ok(())
}

/// Opens the database for a server: a writer reconciles the rollups, a
/// reader (`--read-only`) only checks the schema version.
async fn open_server(
    settings: &Settings,
    args: &ServeArgs,
) -> Result<(Arc<Database>, Arc<Catalog>), Error> {
    let catalog = app::catalog(settings)?;
    let role = if args.read_only {
        Role::Reader
    } else {
        Role::Writer
    };
    let db = app::open(&settings.database, role).await?;
    if role == Role::Writer
        && let Err(e) = app::reconcile_rollups(&db, &catalog).await
    {
        let _ = db.close().await;
        return Err(e);
    }
    let db = Arc::new(db.with_query_timeout(args.query_timeout()));
    if role == Role::Writer {
        app::spawn_ledger_purge(&db);
    }
    Ok((db, Arc::new(catalog)))
}

async fn serve_command(settings: &Settings, args: &ServeArgs) -> Result<(), Error> {
    let (db, catalog) = open_server(settings, args).await?;
    let result = serve(settings, db.clone(), catalog, args, None).await;
    close_shared(db).await?;
    result
}

async fn demo_command(settings: &Settings, rows: u64, args: &ServeArgs) -> Result<(), Error> {
    if args.read_only {
        return Err(failure(
            ErrorKind::BadInput,
            "the demo loads data, so it cannot run --read-only",
        ));
    }
    let (db, catalog) = open_server(settings, args).await?;
    let work_dir = match &settings.database {
        DatabaseTarget::Embedded(e) => e.home.clone(),
        DatabaseTarget::Configured(_) => std::env::temp_dir(),
    };
    let result = async {
        let data = demo::prepare(
            &db,
            &catalog,
            rows,
            &work_dir,
            std::io::stderr().is_terminal(),
        )
        .await
        .map_err(|e| failure(ErrorKind::Internal, e.to_string()))?;
        if !data.loaded_now {
            eprintln!(
                "Reusing the {} rows already loaded (empty the table to generate again).",
                data.rows
            );
        }
        // The delivery source, its activity and the sync run beside the
        // server; a server without the right to create it goes on without.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let delivery = match demo::delivery::source(&db).await {
            Ok(config) => Some(tokio::spawn(demo::delivery::run(
                db.clone(),
                catalog.clone(),
                config,
                stopped,
            ))),
            Err(e) => {
                eprintln!("No delivery demo (the sync's source could not be made: {e}).");
                None
            }
        };
        let served = serve(settings, db.clone(), catalog, args, Some(&data)).await;
        let _ = stop.send(true);
        if let Some(task) = delivery {
            let _ = task.await;
        }
        served
    }
    .await;
    close_shared(db).await?;
    result
}

/// Whether requests need keys: as asked, else off on a loopback address
/// only. A server that needs keys and has none refuses to start (nobody
/// could use it); one told `--auth off` off loopback warns.
async fn auth_mode(db: &Database, args: &ServeArgs) -> Result<api::auth::AuthMode, Error> {
    use api::auth::AuthMode;
    let loopback = match args.host.as_str() {
        "localhost" => true,
        host => host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
    };
    let mode = match args.auth.as_deref() {
        Some("required") => AuthMode::Required,
        Some(_) => AuthMode::Off,
        None if loopback => AuthMode::Off,
        None => AuthMode::Required,
    };
    if mode == AuthMode::Off && !loopback {
        tracing::warn!(
            host = %args.host,
            "serving without API keys on a non-loopback address (--auth off): anyone who reaches it can read and write everything"
        );
    }
    if mode == AuthMode::Required {
        let client = db.client().await?;
        let live = crate::store::keys::live_count(&**client)
            .await
            .map_err(crate::error::PgError::from)?;
        if live == 0 {
            return Err(failure(
                ErrorKind::BadInput,
                format!(
                    "serving on {} needs API keys and there are none: create one with `clue keys create --name NAME --scope admin`, or pass --auth off to serve without keys",
                    args.host
                ),
            ));
        }
    }
    Ok(mode)
}

/// The most connections the server keeps open: the open-file limit (raised
/// to its hard limit first), less a margin for the pool, the cluster's
/// files and the listener.
fn connection_cap(asked: Option<u32>) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Some(n) = asked {
        return n as usize;
    }
    let files = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    };
    (files.saturating_sub(256) as usize).clamp(64, 1_000_000)
}

/// Serves until SIGINT/SIGTERM, printing where to look.
async fn serve(
    settings: &Settings,
    db: Arc<Database>,
    catalog: Arc<Catalog>,
    args: &ServeArgs,
    demo: Option<&demo::DemoData>,
) -> Result<(), Error> {
    let mode = auth_mode(&db, args).await?;
    let security = api::Security {
        mode,
        secret_key: keys::session_secret(settings)?,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(api::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
        cors_origins: args.cors_origins.clone(),
    };
    let pool = db.pool().status().max_size;
    let work_total = args.max_expensive.map_or(pool, usize::from);
    // A rate applies when asked for, or by default once keys are required.
    let rate = match args.rate_limit {
        Some(args::RateLimit(r)) => r.map(|r| r.get()),
        None if mode == api::auth::AuthMode::Required => Some(100.0),
        None => None,
    };
    let limits = api::Limits {
        cache_bytes: args.cache_bytes(),
        max_periods: args.max_periods,
        group_commit: !args.no_group_commit,
        bulk_writers: args.bulk_writers.map_or_else(
            || std::thread::available_parallelism().map_or(2, |n| n.get()),
            usize::from,
        ),
        max_streams: args.max_streams as usize,
        header_wait: api::HEADER_WAIT,
        rates: api::limits::RateSettings {
            per_key: rate,
            per_address: rate,
            work_total,
            work_per_caller: args
                .max_expensive_per_caller
                .map_or((work_total / 2).max(1), usize::from),
        },
        max_connections: connection_cap(args.max_connections),
        metrics: !args.no_metrics,
    };
    if let Some(addr) = args.metrics_address {
        api::metrics::serve_on(addr).await.map_err(|e| {
            failure(
                ErrorKind::BadInput,
                format!("cannot serve metrics on {addr}: {e}"),
            )
        })?;
        println!("  metrics:       http://{addr}/metrics");
    }
    let app = api::Application::build(db, catalog, limits, security, &args.host, args.port)
        .await
        .map_err(|e| {
            let message = match e.kind() {
                // The TLS files (build's only InvalidInput).
                std::io::ErrorKind::InvalidInput => format!("cannot serve HTTPS: {e}"),
                _ => format!("cannot listen on {}:{}: {e}", args.host, args.port),
            };
            failure(ErrorKind::BadInput, message)
        })?;
    let addr = app
        .local_addr()
        .map_err(|e| failure(ErrorKind::Internal, e.to_string()))?;
    let base = format!("{}://{addr}", app.scheme());
    println!("clue is serving on {base}  (Ctrl-C stops it)");
    println!("  API docs:      {base}/docs");
    println!("  OpenAPI:       {base}/openapi.json");
    let day = |d: Option<chrono::NaiveDate>, default: &str| {
        d.map_or_else(|| default.to_owned(), |d| d.to_string())
    };
    let (from, to) = match demo {
        Some(d) => (
            day(d.first_date, "2024-01-01"),
            day(d.last_date, "2025-12-31"),
        ),
        None => ("2024-01-01".into(), "2025-12-31".into()),
    };
    println!(
        "  summary:       {base}/reports/monthly-sales-summary?start_date={from}&end_date={to}"
    );
    println!(
        "  breakdown:     {base}/reports/monthly-sales-breakdown?start_date={from}&end_date={to}&region=North"
    );
    println!("  top 5:         {base}/reports/top-5-by-revenue?start_date={from}&end_date={to}");
    println!(
        "  as CSV:        {base}/reports/top-5-by-revenue?start_date={from}&end_date={to}&format=csv"
    );
    println!(
        "  learning:      {base}/users/user01/summary?from=2025-01-01&to=2025-12-31T23:59:59&granularity=month"
    );
    if demo.is_some() {
        println!(
            "  deliveries:    {base}/reports/open-orders  (synced every second from a busy source)"
        );
    }
    app.run_until(api::shutdown_signal())
        .await
        .map_err(|e| failure(ErrorKind::Internal, e.to_string()))
}

/// Closes a database shared with a server that has stopped.
async fn close_shared(db: Arc<Database>) -> Result<(), Error> {
    match Arc::try_unwrap(db) {
        Ok(db) => Ok(db.close().await?),
        // Still referenced: dropping releases the lease on a best-effort basis.
        Err(_) => Ok(()),
    }
}

async fn query_command(
    settings: &Settings,
    json: &str,
    fact: bool,
    explain: bool,
) -> Result<(), Error> {
    let text = if json == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| failure(ErrorKind::BadInput, format!("cannot read the query: {e}")))?
    } else {
        json.to_owned()
    };
    let req = query::parse_request(text.as_bytes())?;
    let catalog = app::catalog(settings)?;
    if explain {
        let plan = with_db(settings, async |db| {
            let client = db.client().await?;
            Ok(execute::prepare(&client, &catalog, &req, &View::everything(), fact, None).await?)
        })
        .await?;
        print!("{plan}");
    } else {
        let answer = with_db(settings, async |db| {
            Ok(execute::execute(db, &catalog, &req, &View::everything(), fact, None).await?)
        })
        .await?;
        let text = serde_json::to_string_pretty(&answer)
            .map_err(|e| failure(ErrorKind::Internal, e.to_string()))?;
        println!("{text}");
    }
    Ok(())
}

fn datasets(settings: &Settings) -> Result<(), Error> {
    let catalog = app::catalog(settings)?;
    for d in &catalog.datasets {
        println!(
            "{} (table {}, {}, from {})",
            d.name,
            d.table,
            d.time_column
                .as_ref()
                .map_or("no time column".to_owned(), |t| format!("time column {t}")),
            d.source
        );
        println!("  dimensions: {}", d.dimensions.join(", "));
        let measures: Vec<String> = d
            .measures
            .iter()
            .map(|m| {
                format!(
                    "{} = {}({})",
                    m.name,
                    m.agg.name(),
                    m.column.as_deref().unwrap_or("*")
                )
            })
            .collect();
        println!("  measures:   {}", measures.join(", "));
        for r in &d.rollups {
            println!(
                "  rollup {}: by {}{}",
                r.name,
                r.grain,
                r.dimensions
                    .iter()
                    .map(|x| format!(", {x}"))
                    .collect::<String>()
            );
        }
    }
    Ok(())
}

async fn rollups_command(settings: &Settings, action: RollupAction) -> Result<(), Error> {
    let catalog = app::catalog(settings)?;
    let (only, verify) = match &action {
        RollupAction::Rebuild { dataset } => (dataset.clone(), false),
        RollupAction::Verify { dataset } => (dataset.clone(), true),
    };
    let outcomes = with_db(settings, async |db| {
        if verify {
            app::verify_rollups(db, &catalog, only.as_deref()).await
        } else {
            app::rebuild_rollups(db, &catalog, only.as_deref(), &keys::actor()).await
        }
    })
    .await?;
    let mut differences = 0;
    for o in &outcomes {
        if verify {
            let verdict = if o.differences == 0 {
                "ok".to_owned()
            } else {
                format!("{} row(s) differ", o.differences)
            };
            println!("{}: {} ({} rows): {verdict}", o.dataset, o.rollup, o.rows);
            differences += o.differences;
        } else {
            println!("{}: rebuilt {} ({} rows)", o.dataset, o.rollup, o.rows);
        }
    }
    if differences > 0 {
        return Err(failure(
            ErrorKind::Internal,
            format!(
                "{differences} rollup row(s) differ from the fact table; run `clue rollups rebuild`"
            ),
        ));
    }
    Ok(())
}

async fn db_command(settings: &Settings, action: DbAction) -> Result<(), Error> {
    let DatabaseTarget::Embedded(embedded) = &settings.database else {
        if matches!(action, DbAction::Status) {
            let db = app::open(&settings.database, Role::Writer).await?;
            db.close().await?;
            println!(
                "using the configured database {} (reachable); clue db manages only the embedded cluster",
                settings.database.describe()
            );
            return Ok(());
        }
        return Err(failure(
            ErrorKind::Internal,
            format!(
                "a database is configured ({}); clue db manages only the embedded cluster, used when CLUE_DATABASE_URL, CLUE_DB_* and --database-url are all unset",
                settings.database.describe()
            ),
        ));
    };
    let cluster = Cluster::from_settings(embedded);
    let blocking = |e: tokio::task::JoinError| failure(ErrorKind::Internal, e.to_string());
    match action {
        DbAction::Start => {
            let c = cluster.clone();
            let started = tokio::task::spawn_blocking(move || c.start_kept())
                .await
                .map_err(blocking)??;
            // Apply migrations now, so the first real command does not pay for them.
            app::open(&settings.database, Role::Writer)
                .await?
                .close()
                .await?;
            println!(
                "{} embedded PostgreSQL in {}; it keeps running until `clue db stop`.\nurl: {}",
                if started {
                    "Started"
                } else {
                    "Already running:"
                },
                cluster.home().display(),
                cluster.url()
            );
        }
        DbAction::Stop => {
            let c = cluster.clone();
            let was_running = tokio::task::spawn_blocking(move || c.stop())
                .await
                .map_err(blocking)??;
            println!(
                "{}",
                if was_running {
                    "Stopped the embedded cluster."
                } else {
                    "The embedded cluster was not running."
                }
            );
        }
        DbAction::Status => match cluster.status()? {
            Status::NotInitialized => println!(
                "not initialized: no cluster in {} yet (any command creates it)",
                cluster.home().display()
            ),
            Status::Stopped => println!("stopped: cluster in {}", cluster.home().display()),
            Status::Running { pid } => println!(
                "running: pid {pid}, cluster in {}\nurl: {}",
                cluster.home().display(),
                cluster.url()
            ),
        },
        DbAction::Url => println!("{}", cluster.url()),
    }
    Ok(())
}
