//! The `clue` command line: raw arguments (clap) and the dispatch to services.
//!
//! Architecture Invariant: commands hold no business logic and no SQL; they
//! resolve settings, call one service and print its report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::api;
use crate::cluster::{self, Cluster, Status};
use crate::config::DatabaseTarget;
use crate::dataset::{Catalog, Dataset};
use crate::db::{Database, DbError};
use crate::demo;
use crate::generate::{self, GenerateOptions};
use crate::import::{self, ImportError, ImportOptions};
use crate::partition;
use crate::rollup;
use crate::schema;

/// Exit codes, so scripts can tell a bad file from a missing database.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DATABASE_UNAVAILABLE: u8 = 3;
    pub const BAD_INPUT: u8 = 4;
}

#[derive(Debug, Parser)]
#[command(name = "clue", version, about = "Fast, exact sales and activity aggregates on PostgreSQL", long_about = None)]
pub struct Cli {
    /// PostgreSQL connection string (overrides CLUE_DATABASE_URL and CLUE_DB_*).
    /// Without any, clue runs its own private cluster in CLUE_HOME.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Home of the embedded cluster [env: CLUE_HOME] [default: ./.clue]
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Cancel a query that runs longer than this many seconds and answer
    /// 504 (0: no limit).
    #[arg(
        long,
        env = "CLUE_QUERY_TIMEOUT",
        default_value_t = 30.0,
        value_name = "SECONDS",
        value_parser = parse_timeout
    )]
    pub query_timeout: f64,
}

impl ServeArgs {
    pub fn query_timeout(&self) -> Option<std::time::Duration> {
        (self.query_timeout > 0.0).then(|| std::time::Duration::from_secs_f64(self.query_timeout))
    }
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the sales report database schema (the built-in sales_report
    /// table, or run a SQL script in one transaction).
    CreateSchema {
        /// SQL script to run; without it, the built-in partitioned sales_report table is created.
        #[arg(short = 's', long, value_name = "FILE")]
        source: Option<PathBuf>,
    },
    /// Create monthly partitions TABLE_YYYY_MM (with product_name and region
    /// indexes) and the default partition TABLE_other.
    CreateMonthlyPartitions {
        #[arg(short = 't', long, value_name = "TABLE")]
        table: String,
        /// First year.
        #[arg(short = 's', long, value_name = "YEAR")]
        start: i32,
        /// Last year (inclusive).
        #[arg(short = 'e', long, value_name = "YEAR")]
        end: i32,
    },
    /// Load a CSV file (optionally gzip-compressed) into a table.
    ImportData(ImportArgs),
    /// Write a realistic demo sales CSV in prototype 000's format.
    GenerateSales {
        /// Number of rows.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Output file ('-' for standard output).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Random seed: the same seed writes the same file.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Number of distinct products.
        #[arg(long, default_value_t = 5_000)]
        products: u32,
    },
    /// Serve the report API (with OpenAPI docs at /docs) until Ctrl-C.
    Serve(ServeArgs),
    /// The one-command demo: embedded database, realistic data (generated and
    /// imported on first run), then the API with URLs to try.
    Demo {
        /// Rows to generate on first run.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Print the OpenAPI document (YAML) that `clue serve` serves as /openapi.json.
    Openapi,
    /// List the declared datasets (built-in and in CLUE_MODELS, default ./models).
    Datasets,
    /// Run a query (the JSON of POST /api/v1/query) and print the answer as JSON.
    Query {
        /// The query JSON, or '-' to read it from standard input.
        json: String,
        /// Answer from the fact table only, ignoring rollups (for checking).
        #[arg(long)]
        fact: bool,
        /// Print the plan (sources, SQL and parameters) instead of running it.
        #[arg(long)]
        explain: bool,
    },
    /// Rebuild or verify the rollups that imports keep exact.
    Rollups {
        #[command(subcommand)]
        action: RollupAction,
    },
    /// Manage clue's embedded PostgreSQL cluster.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file; its header names the table columns it fills.
    #[arg(
        short = 'c',
        long = "csv_path",
        visible_alias = "csv-path",
        value_name = "FILE"
    )]
    pub csv_path: PathBuf,
    /// Target table.
    #[arg(short = 't', long, value_name = "TABLE")]
    pub table: String,
    /// YAML validation schema: valid rows load, invalid ones go to the error table.
    /// Without it, the first bad value aborts the whole load.
    #[arg(
        short = 'p',
        long = "schema_path",
        visible_alias = "schema-path",
        value_name = "YAML"
    )]
    pub schema_path: Option<PathBuf>,
    /// Table for rejected rows (validated imports).
    #[arg(short = 'e', long = "error_table", visible_alias = "error-table", default_value = import::DEFAULT_ERROR_TABLE)]
    pub error_table: String,
    /// Load the file even if the same content was imported into the table before.
    #[arg(long)]
    pub force: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum RollupAction {
    /// Recompute rollups from the fact table (after changing facts with plain SQL).
    Rebuild {
        /// Only this dataset (default: all).
        dataset: Option<String>,
    },
    /// Compare every rollup with the fact table and report differences (exit 1 if any).
    Verify {
        /// Only this dataset (default: all).
        dataset: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Start the embedded cluster and keep it running after commands end.
    Start,
    /// Stop the embedded cluster.
    Stop,
    /// Show whether the embedded cluster runs (or which database is configured).
    Status,
    /// Print a connection string for psql and other tools.
    Url,
}

/// The OpenAPI document as YAML, as committed in `docs/openapi.yaml`.
pub fn openapi_yaml() -> Result<String, BoxError> {
    Ok(api::openapi().to_yaml()?)
}

/// Serves until SIGINT/SIGTERM, printing where to look.
async fn serve(
    db: std::sync::Arc<Database>,
    args: &ServeArgs,
    demo: Option<&demo::DemoData>,
) -> Result<(), BoxError> {
    let app = api::Application::build(db, &args.host, args.port)
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let addr = app.local_addr()?;
    let base = format!("http://{addr}");
    println!("clue is serving on {base}  (Ctrl-C stops it)");
    println!("  API docs:      {base}/docs");
    println!("  OpenAPI:       {base}/openapi.json");
    let (from, to) = match demo {
        Some(d) => (
            d.first_date
                .map(|d| d.to_string())
                .unwrap_or_else(|| "2024-01-01".into()),
            d.last_date
                .map(|d| d.to_string())
                .unwrap_or_else(|| "2025-12-31".into()),
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
    app.run_until(api::shutdown_signal()).await?;
    Ok(())
}

/// Closes a database shared with a server that has stopped.
async fn close_shared(db: std::sync::Arc<Database>) -> Result<(), BoxError> {
    match std::sync::Arc::try_unwrap(db) {
        Ok(db) => Ok(db.close().await?),
        // Still referenced: dropping releases the lease on a best-effort basis.
        Err(_) => Ok(()),
    }
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
    // Like other Unix tools, end quietly when the reader of stdout goes away
    // (`clue datasets | head`) instead of panicking on a broken pipe. Never
    // in the servers: there a client hanging up mid-answer (a write to its
    // closed socket) must cost that answer only, not kill the process.
    #[cfg(unix)]
    if !matches!(cli.command, Command::Serve(_) | Command::Demo { .. }) {
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    // Servers log every request; one-shot commands only warnings.
    let default_level = if matches!(cli.command, Command::Serve(_) | Command::Demo { .. }) {
        "info"
    } else {
        "warn"
    };
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
            eprintln!("error: {}", error_chain(&*e));
            ExitCode::from(exit_code(&*e))
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error and its causes on one line each, skipping causes that the
/// message above already quotes.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut last = text.clone();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        // tokio-postgres wraps server errors in a bare "db error".
        if !last.contains(&msg) && msg != "db error" {
            text.push_str(&format!("\n  caused by: {msg}"));
        }
        last = msg;
        source = s.source();
    }
    text
}

fn exit_code(e: &(dyn std::error::Error + 'static)) -> u8 {
    let db_code = |d: &DbError| {
        if matches!(d, DbError::Query(_) | DbError::Migration(_)) {
            exit::FAILURE
        } else {
            exit::DATABASE_UNAVAILABLE
        }
    };
    if let Some(d) = e.downcast_ref::<DbError>() {
        return db_code(d);
    }
    if let Some(i) = e.downcast_ref::<ImportError>() {
        return match i {
            ImportError::Db(d) => db_code(d),
            ImportError::Load { .. } => exit::FAILURE,
            _ => exit::BAD_INPUT,
        };
    }
    if e.downcast_ref::<schema::SchemaError>().is_some()
        || e.downcast_ref::<partition::PartitionError>().is_some()
        || e.downcast_ref::<crate::config::ConfigError>().is_some()
    {
        return exit::BAD_INPUT;
    }
    if e.downcast_ref::<cluster::ClusterError>().is_some() {
        return exit::DATABASE_UNAVAILABLE;
    }
    exit::FAILURE
}

fn target(cli: &Cli) -> Result<DatabaseTarget, BoxError> {
    let target = DatabaseTarget::from_env(cli.database_url.as_deref())?;
    Ok(match (target, &cli.home) {
        (DatabaseTarget::Embedded { .. }, Some(home)) => {
            DatabaseTarget::Embedded { home: home.clone() }
        }
        (t, _) => t,
    })
}

/// Opens the database, runs `f`, and closes it (stopping an embedded cluster
/// this command started) whether `f` succeeded or not.
async fn with_db<T, F>(target: &DatabaseTarget, f: F) -> Result<T, BoxError>
where
    F: AsyncFnOnce(&Database) -> Result<T, BoxError>,
{
    let db = Database::open(target).await?;
    let result = f(&db).await;
    let closed = db.close().await;
    let value = result?;
    closed?;
    Ok(value)
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    let target = target(&cli)?;
    match cli.command {
        Command::CreateSchema { source } => {
            let n = with_db(&target, async |db| {
                let mut client = db.client().await?;
                Ok(schema::create_schema(&mut client, source.as_deref()).await?)
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
        }
        Command::CreateMonthlyPartitions { table, start, end } => {
            let report = with_db(&target, async |db| {
                let mut client = db.client().await?;
                Ok(partition::create_monthly_partitions(&mut client, &table, start, end).await?)
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
        }
        Command::ImportData(args) => {
            let opts = ImportOptions {
                csv_path: args.csv_path,
                table: args.table,
                schema_path: args.schema_path,
                error_table: args.error_table,
                force: args.force,
                progress: !args.no_progress && std::io::stderr().is_terminal(),
            };
            let r = with_db(&target, async |db| Ok(import::import(db, &opts).await?)).await?;
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
        }
        Command::GenerateSales {
            rows,
            out,
            seed,
            products,
        } => {
            let opts = GenerateOptions {
                rows,
                seed,
                products,
                ..GenerateOptions::default()
            };
            let summary = if out.as_os_str() == "-" {
                generate::generate_sales(&opts, std::io::stdout().lock())?
            } else {
                let file = std::fs::File::create(&out)
                    .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
                if out.extension().is_some_and(|e| e == "gz") {
                    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
                    let s = generate::generate_sales(&opts, &mut gz)?;
                    gz.finish()?;
                    s
                } else {
                    generate::generate_sales(&opts, file)?
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
        }
        Command::Serve(args) => {
            let db = std::sync::Arc::new(
                Database::open(&target)
                    .await?
                    .with_query_timeout(args.query_timeout()),
            );
            let result = serve(db.clone(), &args, None).await;
            close_shared(db).await?;
            result?;
        }
        Command::Demo { rows, serve: args } => {
            let db = std::sync::Arc::new(
                Database::open(&target)
                    .await?
                    .with_query_timeout(args.query_timeout()),
            );
            let work_dir = match &target {
                DatabaseTarget::Embedded { home } => home.clone(),
                DatabaseTarget::Configured(_) => std::env::temp_dir(),
            };
            let result = async {
                let data =
                    demo::prepare(&db, rows, &work_dir, std::io::stderr().is_terminal()).await?;
                if !data.loaded_now {
                    eprintln!(
                        "Reusing the {} rows already loaded (empty the table to generate again).",
                        data.rows
                    );
                }
                serve(db.clone(), &args, Some(&data)).await
            }
            .await;
            close_shared(db).await?;
            result?;
        }
        Command::Openapi => {
            print!("{}", openapi_yaml()?);
        }
        Command::Query {
            json,
            fact,
            explain,
        } => {
            let text = if json == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                json
            };
            let req: crate::query::QueryRequest = serde_json::from_str(&text)
                .map_err(|e| format!("the query is not valid JSON for a query: {e}"))?;
            let catalog = Catalog::from_env()?;
            if explain {
                let plan = with_db(&target, async |db| {
                    let client = db.client().await?;
                    Ok(crate::query::prepare(&client, &catalog, &req, fact, None).await?)
                })
                .await?;
                print!("{plan}");
            } else {
                let answer = with_db(&target, async |db| {
                    Ok(crate::query::execute(db, &catalog, &req, fact, None).await?)
                })
                .await?;
                println!("{}", serde_json::to_string_pretty(&answer)?);
            }
        }
        Command::Datasets => {
            let catalog = Catalog::from_env()?;
            for d in &catalog.datasets {
                println!(
                    "{} (table {}, time column {}, from {})",
                    d.name, d.table, d.time_column, d.source
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
        }
        Command::Rollups { action } => {
            let catalog = Catalog::from_env()?;
            let (only, verify) = match &action {
                RollupAction::Rebuild { dataset } => (dataset.clone(), false),
                RollupAction::Verify { dataset } => (dataset.clone(), true),
            };
            let datasets: Vec<&Dataset> = match &only {
                Some(name) => vec![catalog.get(name)?],
                None => catalog.datasets.iter().collect(),
            };
            let differences = with_db(&target, async |db| {
                let mut client = db.client().await?;
                let mut differences = 0;
                for d in &datasets {
                    if verify {
                        for v in rollup::verify(&mut client, d).await? {
                            let verdict = if v.differences == 0 {
                                "ok".to_owned()
                            } else {
                                format!("{} row(s) differ", v.differences)
                            };
                            println!("{}: {} ({} rows): {verdict}", d.name, v.rollup, v.rows);
                            differences += v.differences;
                        }
                    } else {
                        let report = rollup::ensure(&mut client, d, true).await?;
                        for (name, rows) in report.built {
                            println!("{}: rebuilt {name} ({rows} rows)", d.name);
                        }
                    }
                }
                Ok(differences)
            })
            .await?;
            if differences > 0 {
                return Err(format!("{differences} rollup row(s) differ from the fact table; run `clue rollups rebuild`").into());
            }
        }
        Command::Db { action } => {
            let DatabaseTarget::Embedded { home } = &target else {
                if matches!(action, DbAction::Status) {
                    let db = Database::open(&target).await?;
                    db.close().await?;
                    println!(
                        "using the configured database {} (reachable); clue db manages only the embedded cluster",
                        target.describe()
                    );
                    return Ok(());
                }
                return Err(format!(
                    "a database is configured ({}); clue db manages only the embedded cluster, used when CLUE_DATABASE_URL, CLUE_DB_* and --database-url are all unset",
                    target.describe()
                )
                .into());
            };
            let cluster = Cluster::new(home.clone());
            match action {
                DbAction::Start => {
                    let c = cluster.clone();
                    let started = tokio::task::spawn_blocking(move || c.start_kept()).await??;
                    // Apply migrations now, so the first real command does not pay for them.
                    Database::open(&target).await?.close().await?;
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
                    let was_running = tokio::task::spawn_blocking(move || c.stop()).await??;
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
        }
    }
    Ok(())
}
