//! Test harness: a uuid-named database per test on a real server, dropped
//! afterwards, and a way to run the real `clue` binary against it.
//!
//! The server is `CLUE_TEST_DATABASE_URL` when set, else the local one on
//! 127.0.0.1:5432, else a clue embedded cluster started for the tests (so a
//! machine with only the server binaries installed can run them too).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use clue::pg::database::Database;
use clue::settings::DatabaseTarget;
use tokio_postgres::NoTls;

/// Paths of prototype 000's data files, kept in the repository as fixtures
/// (a fresh clone has nothing beside it).
pub fn peer_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/000")
        .join(name)
}

/// The admin connection string of the test server.
fn admin_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("CLUE_TEST_DATABASE_URL") {
            return url;
        }
        let local = "postgresql://postgres@127.0.0.1:5432/postgres";
        let reachable = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async { tokio_postgres::connect(local, NoTls).await.is_ok() })
        })
        .join()
        .unwrap();
        if reachable {
            return local.to_owned();
        }
        // No server: run one of clue's own clusters for the whole test run.
        let home = std::env::temp_dir().join("clue-test-cluster");
        std::fs::create_dir_all(&home).unwrap();
        let cluster = clue::pg::cluster::Cluster::new(home);
        cluster
            .start_kept()
            .expect("start the embedded test cluster");
        cluster.url().replacen("/clue?", "/postgres?", 1)
    })
}

/// The port of [`logical_server`], on 127.0.0.1.
const LOGICAL_PORT: u16 = 54329;

/// The admin connection string of a private server with `wal_level =
/// logical` (the shared one must never be reconfigured), listening on TCP
/// for replication connections: one of clue's embedded clusters, kept
/// running under the temporary directory and reused by later runs.
#[allow(dead_code)]
pub fn logical_server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let home = std::env::temp_dir().join("clue-test-logical");
        std::fs::create_dir_all(&home).unwrap();
        let cluster = clue::pg::cluster::Cluster::new(home)
            .with_tcp_port(LOGICAL_PORT)
            .with_setting("wal_level", "logical")
            // Keepalives (and with them the slot's confirmations) every second.
            .with_setting("wal_sender_timeout", "2s")
            .with_setting("max_replication_slots", "40")
            .with_setting("max_wal_senders", "40")
            .with_setting("max_connections", "200");
        cluster
            .start_kept()
            .expect("start the private logical-replication test cluster");
        format!(
            "postgresql://{}@127.0.0.1:{LOGICAL_PORT}/postgres",
            clue::pg::cluster::USER
        )
    })
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    /// The admin connection string of its server.
    admin: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        TestDb::on(admin_url()).await
    }

    /// A database on the server of `admin` (an admin connection string).
    pub async fn on(admin: &str) -> TestDb {
        let name = format!("clue_test_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(admin, NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut config: tokio_postgres::Config = admin.parse().unwrap();
        config.dbname(&name);
        let url = config_to_url(&config);
        TestDb {
            name,
            url,
            admin: admin.to_owned(),
        }
    }

    /// A fresh database with the built-in schema and prototype 000's `sales_data.csv` loaded.
    pub async fn with_sales_data() -> TestDb {
        let db = TestDb::new().await;
        db.clue(&["create-schema"]).ok();
        db.import(peer_file("sales_data.csv")).ok();
        db
    }

    /// `clue import-data -c FILE -t sales_report` against this database.
    pub fn import(&self, file: impl AsRef<Path>) -> Run {
        let file = file.as_ref().to_str().unwrap();
        self.clue(&["import-data", "-c", file, "-t", "sales_report"])
    }

    /// This database's URL with another user name.
    pub fn url_as(&self, user: &str) -> String {
        let mut config: tokio_postgres::Config = self.url.parse().unwrap();
        config.user(user);
        config_to_url(&config)
    }

    pub fn target(&self) -> DatabaseTarget {
        DatabaseTarget::resolve(Some(&self.url), |_| None).unwrap()
    }

    /// clue's own connection (migrations applied).
    #[allow(dead_code)]
    pub async fn open(&self) -> Database {
        open_writer(&self.target()).await
    }

    /// A plain client for assertions.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// The first column of every row of a query, as text.
    #[allow(dead_code)]
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        self.client()
            .await
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// One value from a query.
    pub async fn value<T: for<'a> tokio_postgres::types::FromSql<'a>>(&self, sql: &str) -> T {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// Runs the clue binary with this database configured.
    pub fn clue(&self, args: &[&str]) -> Run {
        clue_with(args, &[("CLUE_DATABASE_URL", &self.url)])
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = self.admin.clone();
        // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok((client, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                        tokio::spawn(conn);
                        // A test's replication slots would keep its database.
                        let _ = client
                            .execute(
                                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                                  WHERE database = $1 AND NOT active",
                                &[&name],
                            )
                            .await;
                        let _ = client
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                })
        })
        .join();
    }
}

fn config_to_url(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let user = config.get_user().unwrap_or("postgres");
    let db = config.get_dbname().unwrap_or("postgres");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(Host::Unix(dir)) => format!(
            "postgresql://{user}@/{db}?host={}&port={port}",
            dir.display()
        ),
        Some(Host::Tcp(h)) => format!("postgresql://{user}@{h}:{port}/{db}"),
        None => format!("postgresql://{user}@127.0.0.1:{port}/{db}"),
    }
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "clue failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails_with(self, code: i32, needle: &str) -> Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Imports every file into `sales_report` at the same time, one clue process each.
pub fn import_concurrently(db: &TestDb, files: &[PathBuf]) -> Vec<Run> {
    let runs: Vec<_> = files
        .iter()
        .map(|f| {
            let (url, f) = (db.url.clone(), f.clone());
            std::thread::spawn(move || {
                clue_with(
                    &[
                        "import-data",
                        "-c",
                        f.to_str().unwrap(),
                        "-t",
                        "sales_report",
                    ],
                    &[("CLUE_DATABASE_URL", &url)],
                )
            })
        })
        .collect();
    runs.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Runs the clue binary with a clean clue environment plus `env`.
pub fn clue_with(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clue"));
    cmd.args(args);
    for var in [
        "CLUE_DATABASE_URL",
        "CLUE_DB",
        "CLUE_DB_HOST",
        "CLUE_DB_PORT",
        "CLUE_DB_USER",
        "CLUE_DB_PWD",
        "CLUE_HOME",
        "CLUE_PG_BIN",
        "CLUE_SOURCE_DATABASE_URL",
        "SOURCE_DB",
        "SOURCE_DB_USER",
        "SOURCE_DB_PASSWORD",
        "SOURCE_DB_HOST",
        "SOURCE_DB_PORT",
        "BATCH_SIZE",
        "POLLING_INTERVAL",
        "OUTPUT_DIRECTORY",
        "CLUE_SECRET_KEY",
        "CLUE_AUTH",
        "CLUE_RATE_LIMIT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CLUE_FAST_INIT", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run clue");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// A scratch directory the PostgreSQL server account can reach too (clue
/// runs the server unprivileged when tests run as root).
pub fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("clue-it-")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Writes `content` to a file in `dir`.
pub fn write_file(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Opens a database as a writer (migrations applied) with the built-in
/// datasets' rollups reconciled, as `clue serve` does at start.
pub async fn open_writer(target: &DatabaseTarget) -> Database {
    let db = clue::app::open(target, clue::app::Role::Writer)
        .await
        .expect("open test database");
    let catalog = clue::domain::dataset::Catalog::load(None).unwrap();
    clue::app::reconcile_rollups(&db, &catalog)
        .await
        .expect("reconcile rollups");
    db
}

/// A server over `database` with the built-in datasets, bound to port 0.
pub async fn application(database: std::sync::Arc<Database>) -> clue::api::Application {
    let catalog = std::sync::Arc::new(clue::domain::dataset::Catalog::load(None).unwrap());
    clue::api::Application::build(
        database,
        catalog,
        clue::api::Limits::default(),
        clue::api::Security::off(),
        "127.0.0.1",
        0,
    )
    .await
    .unwrap()
}

/// A `clue serve` in-process on port 0 over a test database, stopped when dropped.
pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestApp {
    #[allow(dead_code)]
    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path_and_query}", self.address))
            .send()
            .await
            .unwrap()
    }
}

/// The one way tests start a server: what `clue serve` builds (migrations,
/// rollups reconciled, the cache's listener), bound to port 0.
pub async fn serve_with_timeout(db: TestDb, timeout: Option<std::time::Duration>) -> TestApp {
    let database = std::sync::Arc::new(open_writer(&db.target()).await.with_query_timeout(timeout));
    let app = application(database).await;
    run_app(app, db)
}

/// A server with these bounds and this security over a test database.
#[allow(dead_code)]
pub async fn serve_with(
    db: TestDb,
    limits: clue::api::Limits,
    security: clue::api::Security,
) -> TestApp {
    let database = std::sync::Arc::new(open_writer(&db.target()).await);
    let catalog = std::sync::Arc::new(clue::domain::dataset::Catalog::load(None).unwrap());
    let app = clue::api::Application::build(database, catalog, limits, security, "127.0.0.1", 0)
        .await
        .unwrap();
    run_app(app, db)
}

fn run_app(app: clue::api::Application, db: TestDb) -> TestApp {
    let address = format!("http://{}", app.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        db,
        http: reqwest::Client::new(),
        _stop: stop,
    }
}

/// A problem's `invalid_params` as (name, reason) pairs.
#[allow(dead_code)]
pub fn invalid_params(problem: &serde_json::Value) -> Vec<(String, String)> {
    problem["invalid_params"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or("").to_owned(),
                i["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Another `clue serve` over the same database (its address and its stop
/// handle), as a second process would be.
#[allow(dead_code)]
pub async fn another_server(db: &TestDb) -> (String, tokio::sync::oneshot::Sender<()>) {
    let database = std::sync::Arc::new(open_writer(&db.target()).await);
    let app = application(database).await;
    let address = format!("http://{}", app.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    (address, stop)
}
