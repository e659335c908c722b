//! The raw command-line arguments (clap), kept apart from the settings
//! they resolve to (`settings`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::ingest::csv as import;

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
    /// Memory for cached answers, in MiB (0: no cache).
    #[arg(
        long,
        env = "CLUE_CACHE_MB",
        default_value_t = 1024,
        value_name = "MIB"
    )]
    pub cache_mb: u32,
    /// The most periods one `/users/{id}/summary` answer may have.
    #[arg(
        long,
        env = "CLUE_MAX_PERIODS",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub max_periods: usize,
    /// Write each learning record in a transaction of its own instead of
    /// committing the records that arrive together at once (for comparison).
    #[arg(long)]
    pub no_group_commit: bool,
    /// The most event batches (`POST /api/v1/datasets/{name}/events`)
    /// written at once; others wait their turn. Default: this machine's cores.
    #[arg(long, env = "CLUE_BULK_WRITERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub bulk_writers: Option<u16>,
    /// The most live streams (`GET /api/v1/changes`) open at once; more are
    /// refused with a 503.
    #[arg(long, env = "CLUE_MAX_STREAMS", value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams: u32,
    /// Serve without changing the database: no migrations and no rollup
    /// builds, only a check that the schema is this build's (for a server
    /// on a read replica, or a role that may only read).
    #[arg(long)]
    pub read_only: bool,
    /// Whether requests need an API key: `required`, or `off`. Default:
    /// off on a loopback address, required on any other (where clue
    /// refuses to start with no keys).
    #[arg(long, env = "CLUE_AUTH", value_name = "MODE", value_parser = ["required", "off"])]
    pub auth: Option<String>,
    /// Requests per second of a key without a rate of its own, and of a
    /// client address sending no key (`10/s`, `600/min`, `0`: none).
    /// Default: 100/s when keys are required, none when they are off.
    #[arg(long, env = "CLUE_RATE_LIMIT", value_name = "RATE", value_parser = parse_rate)]
    pub rate_limit: Option<RateLimit>,
    /// The most uncached answers and event batches computed at once, in
    /// all; more wait up to 2 s for a turn, then get a 503. Default: the
    /// pool's size.
    #[arg(long, env = "CLUE_MAX_EXPENSIVE", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_expensive: Option<u16>,
    /// The most of those one caller (key, or address without one) runs at
    /// once. Default: half of --max-expensive.
    #[arg(long, env = "CLUE_MAX_EXPENSIVE_PER_CALLER", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_expensive_per_caller: Option<u16>,
    /// The most client connections open at once; more wait to be accepted.
    /// Default: what the process's open-file limit allows, less a margin.
    #[arg(long, env = "CLUE_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,
    /// Also serve `/metrics` without a key on this address (for example
    /// 127.0.0.1:9090); on the main address it needs an admin key.
    #[arg(
        long,
        env = "CLUE_METRICS_ADDRESS",
        value_name = "HOST:PORT",
        conflicts_with = "no_metrics"
    )]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Record no metrics and serve no `/metrics`.
    #[arg(long)]
    pub no_metrics: bool,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain
    /// (needs --tls-key); session cookies are then `Secure`.
    #[arg(long, env = "CLUE_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Let pages of this origin call the API from a browser, with a bearer
    /// key (CORS; repeatable, e.g. https://bi.example.com). Off by default.
    #[arg(long = "cors-origin", env = "CLUE_CORS_ORIGINS", value_delimiter = ',', value_name = "ORIGIN", value_parser = parse_origin)]
    pub cors_origins: Vec<String>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CLUE_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `--cors-origin`: `scheme://host[:port]`, nothing more.
fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    let ok = (s.starts_with("https://") || s.starts_with("http://"))
        && !s.split("://").nth(1).unwrap_or("").is_empty()
        && !s
            .split("://")
            .nth(1)
            .unwrap_or("")
            .contains(['/', '?', '#', ' ', '*']);
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not an origin like https://bi.example.com"
        ))
    }
}

/// `--rate-limit`: a rate, or none (`0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit(pub Option<crate::domain::access::Rate>);

fn parse_rate(s: &str) -> Result<RateLimit, String> {
    if s.trim() == "0" {
        return Ok(RateLimit(None));
    }
    s.parse().map(|r| RateLimit(Some(r)))
}

impl ServeArgs {
    /// The cache's memory budget in bytes.
    pub fn cache_bytes(&self) -> usize {
        (self.cache_mb as usize) << 20
    }

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
    /// API keys: create (the secret is printed once), list, revoke; and
    /// the log of administrative actions.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
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
    /// Sync a source database's orders into the analytics tables (prototype 004).
    Etl {
        #[command(subcommand)]
        action: EtlAction,
    },
    /// Write prototype 004's delivery reports as CSV files (each written whole or not at all).
    ExportReports(ExportArgs),
    /// Daily warehouse batches (prototype 002): load, report, refresh the KPIs.
    Warehouse {
        #[command(subcommand)]
        action: WarehouseAction,
    },
    /// Prototype 004's name for `clue etl run`.
    #[command(name = "run-etl", hide = true)]
    RunEtl(EtlRunArgs),
    /// Prototype 004's name for `clue etl run --continuous`.
    #[command(name = "run-continuous-etl", hide = true)]
    RunContinuousEtl(EtlRunArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("reports").required(true).multiple(true)))]
pub struct ExportArgs {
    /// All four reports.
    #[arg(long, group = "reports")]
    pub all: bool,
    /// open_orders_by_date_status.csv
    #[arg(long, group = "reports")]
    pub open_orders: bool,
    /// top_delivery_dates.csv
    #[arg(long, group = "reports")]
    pub top_dates: bool,
    /// pending_items_by_product.csv
    #[arg(long, group = "reports")]
    pub pending_items: bool,
    /// top_customers_with_pending_orders.csv
    #[arg(long, group = "reports")]
    pub top_customers: bool,
    /// Where to write [env: OUTPUT_DIRECTORY] [default: output].
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum WarehouseAction {
    /// Load one daily batch (a customers file and a sales file, CSV, plain or
    /// gzip) in one transaction; the same batch again changes nothing.
    Load(WarehouseLoadArgs),
    /// A batch's quality report: rows received, quarantined by each rule
    /// (with examples), loaded.
    Report {
        /// The batch [default: the latest].
        #[arg(long, value_name = "YYYY-MM-DD")]
        batch_date: Option<chrono::NaiveDate>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recompute the KPI marts from the facts (after changes made outside
    /// clue); readers keep the old figures until it commits.
    Refresh,
    /// Clean every quarantined sale again (its record as it is now, fixed or
    /// not) and load those that pass and whose customer has arrived.
    #[command(name = "replay-quarantine")]
    ReplayQuarantine(WarehouseRulesArgs),
    /// Load each new pair of batch files landing in a directory
    /// (customers_YYYY-MM-DD.* and sales_YYYY-MM-DD.*), once, in date order,
    /// until stopped.
    Watch {
        /// The directory to watch.
        dir: PathBuf,
        /// Seconds between looks.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        interval: u64,
        /// Load what is there, then exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        rules: WarehouseRulesArgs,
    },
    /// Write realistic daily batch files (customers who move, late sales, a
    /// sprinkling of every fault) for the demo, tests and benchmarks.
    Generate {
        /// Days of batches.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Customers on the first day.
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
        customers: u32,
        /// Sales rows a day.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=1_000_000_000))]
        sales_per_day: u32,
        /// Share of customers who move or change name each day (0 to 1).
        #[arg(long, default_value_t = 0.02)]
        change_rate: f64,
        /// Share of sales rows with a fault (0 to 1).
        #[arg(long, default_value_t = 0.01)]
        fault_rate: f64,
        /// The first batch's date.
        #[arg(long, value_name = "YYYY-MM-DD", default_value = "2025-03-01")]
        start: chrono::NaiveDate,
        #[arg(long, default_value_t = 2)]
        seed: u64,
        /// Write gzip files.
        #[arg(long, conflicts_with = "parquet")]
        gzip: bool,
        /// Write typed Parquet files (a value its column's type cannot hold is NULL).
        #[arg(long)]
        parquet: bool,
        /// Where to write the files.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct WarehouseRulesArgs {
    /// Cleaning rules in place of the built-in models/warehouse.yaml.
    #[arg(long, value_name = "YAML")]
    pub rules: Option<PathBuf>,
    /// Sales above this amount are absurd: quarantined [default: the rules' max, 100000].
    #[arg(long, value_name = "AMOUNT")]
    pub max_amount: Option<rust_decimal::Decimal>,
}

#[derive(Debug, Args)]
pub struct WarehouseLoadArgs {
    /// The customers file (columns ID, Name, City).
    #[arg(long, value_name = "FILE")]
    pub customers: PathBuf,
    /// The sales file (columns CustomerID, Product, SalesAmount, ShopId, TransactionDate).
    #[arg(long, value_name = "FILE")]
    pub sales: PathBuf,
    /// The batch's date [default: the date in the sales file's name, else the customers file's].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub batch_date: Option<chrono::NaiveDate>,
    /// Reload the batch if it is loaded (only the latest batch can be).
    #[arg(long)]
    pub replace: bool,
    #[command(flatten)]
    pub rules: WarehouseRulesArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EtlAction {
    /// Sync once (a full copy the first time, then what changed), or with
    /// --continuous until stopped (SIGINT/SIGTERM finish the current batch).
    Run(EtlRunArgs),
    /// The watermarks of the source's tables and when each moved.
    Status(EtlSourceArgs),
    /// Forget the watermarks and the change data capture position (dropping
    /// its replication slot): the next run copies everything again.
    Reset(EtlSourceArgs),
    /// Drop the replication slot of change data capture on the source (so it
    /// keeps no WAL for clue) and forget its position.
    #[command(name = "drop-slot")]
    DropSlot(EtlSourceArgs),
}

#[derive(Debug, Args)]
pub struct EtlSourceArgs {
    /// The source database [env: CLUE_SOURCE_DATABASE_URL, or SOURCE_DB, SOURCE_DB_USER,
    /// SOURCE_DB_PASSWORD, SOURCE_DB_HOST, SOURCE_DB_PORT].
    #[arg(long, value_name = "URL")]
    pub source_url: Option<String>,
    /// The replication slot of change data capture [default: the one the
    /// first `--cdc` run made, named clue_…].
    #[arg(long, value_name = "NAME")]
    pub slot: Option<String>,
}

#[derive(Debug, Args)]
pub struct EtlRunArgs {
    #[command(flatten)]
    pub source: EtlSourceArgs,
    /// Keep syncing until stopped.
    #[arg(long)]
    pub continuous: bool,
    /// Seconds between cycles of a continuous sync [env: POLLING_INTERVAL] [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub polling_interval: Option<u64>,
    /// Orders per transaction [env: BATCH_SIZE] [default: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Stream changes through logical replication (the source needs
    /// wal_level = logical and a role with REPLICATION) until stopped,
    /// instead of polling.
    #[arg(long, conflicts_with = "polling_interval")]
    pub cdc: bool,
    /// The publication --cdc streams (made if missing) [default: clue_sync].
    #[arg(long, value_name = "NAME", requires = "cdc")]
    pub publication: Option<String>,
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

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print its secret (shown this once; only a hash is kept).
    Create {
        /// What the key is for (unique among live keys).
        #[arg(long)]
        name: String,
        /// `read` (reports, queries, dashboard), `ingest` (event
        /// endpoints) or `admin` (everything, keys, rollups, metrics).
        #[arg(long, value_parser = ["read", "ingest", "admin"])]
        scope: String,
        /// Only this dataset (repeatable; default: all).
        #[arg(long = "dataset", value_name = "DATASET")]
        datasets: Vec<String>,
        /// Only rows where DIMENSION equals VALUE, in every answer
        /// (repeatable; all must hold).
        #[arg(long = "where", value_name = "DIMENSION=VALUE")]
        conditions: Vec<crate::domain::access::Condition>,
        /// Its own rate (`10/s`, `600/min`, `1000/h`) instead of the server's.
        #[arg(long)]
        rate: Option<crate::domain::access::Rate>,
        /// It stops working after this long (`12h`, `90d`, `52w`).
        #[arg(long, value_name = "DURATION", value_parser = crate::domain::access::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// The live keys (never their secrets).
    List {
        /// Revoked keys too.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a key by id or name: it stops working at once on servers
    /// that revoke it, within 2 seconds on the others.
    Revoke {
        #[arg(value_name = "ID_OR_NAME")]
        key: String,
    },
    /// The latest administrative actions, with who did them.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Every flag of `serve` parses into what the server is given (clap
    /// checks a flag's type only when it is read: a mismatch is a panic at
    /// start, which a probe found in `--rate-limit`).
    #[test]
    fn serve_flags_parse() {
        let serve = |args: &[&str]| {
            let mut all = vec!["clue", "serve"];
            all.extend_from_slice(args);
            match Cli::try_parse_from(all).map(|c| c.command) {
                Ok(Command::Serve(s)) => Ok(s),
                Ok(_) => Err("not serve".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        };
        let s = serve(&[
            "--rate-limit",
            "600/min",
            "--auth",
            "off",
            "--max-expensive",
            "4",
            "--max-expensive-per-caller",
            "2",
            "--max-connections",
            "100",
            "--metrics-address",
            "127.0.0.1:9090",
            "--cors-origin",
            "https://bi.example.com/",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(s.rate_limit.and_then(|r| r.0).map(|r| r.get()), Some(10.0));
        assert_eq!(s.auth.as_deref(), Some("off"));
        assert_eq!(
            (
                s.max_expensive,
                s.max_expensive_per_caller,
                s.max_connections
            ),
            (Some(4), Some(2), Some(100))
        );
        assert_eq!(s.metrics_address.map(|a| a.port()), Some(9090));
        assert_eq!(s.cors_origins, ["https://bi.example.com"]);
        assert!(s.tls_cert.is_some() && s.tls_key.is_some());
        assert_eq!(
            serve(&["--rate-limit", "0"]).unwrap().rate_limit,
            Some(RateLimit(None))
        );
        assert_eq!(serve(&[]).unwrap().rate_limit, None);
        for bad in [
            &["--rate-limit", "fast"][..],
            &["--auth", "maybe"],
            &["--tls-cert", "c.pem"],
            &["--cors-origin", "bi.example.com"],
            &["--cors-origin", "https://*.example.com"],
            &["--max-expensive", "0"],
            &["--no-metrics", "--metrics-address", "127.0.0.1:9090"],
        ] {
            assert!(serve(bad).is_err(), "{bad:?}");
        }
    }
}
