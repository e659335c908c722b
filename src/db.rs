//! The connection to PostgreSQL: pool, embedded-cluster lease, migrations,
//! and the translation of connection failures into one-line reasons.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::cluster::{self, ClusterError, Lease};
use crate::config::{DatabaseTarget, describe_config};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Serializes migrations between clue processes that start together.
const MIGRATION_LOCK: i64 = 0x636c_7565_0001; // "clue" 1

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("authentication failed for {target}: {reason}")]
    AuthFailed { target: String, reason: String },
    #[error(
        "database {database:?} does not exist on {target}; create it (createdb {database}) or point CLUE_DB at an existing one"
    )]
    DatabaseMissing { database: String, target: String },
    #[error("cannot reach PostgreSQL at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("applying clue's schema migrations failed: {0}")]
    Migration(String),
    #[error("database error: {}", pg_message(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("no database connection available: {0}")]
    Pool(String),
}

impl DbError {
    /// True when the failure is the database being away, not a bad request.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unreachable { .. }
            | DbError::Pool(_)
            | DbError::Cluster(_)
            | DbError::Migration(_) => true,
            DbError::Query(e) => e.is_closed() || e.as_db_error().is_none(),
            _ => false,
        }
    }
}

/// An open database: a connection pool, plus the lease that keeps clue's
/// embedded cluster running while this process uses it.
pub struct Database {
    pool: Pool,
    config: tokio_postgres::Config,
    lease: Option<Lease>,
    query_timeout: Option<Duration>,
}

impl Database {
    /// Connects (starting the embedded cluster when that is the target),
    /// checks the connection and applies pending migrations.
    pub async fn open(target: &DatabaseTarget) -> Result<Database, DbError> {
        let lease = match target {
            DatabaseTarget::Embedded { home } => {
                let cluster = cluster::Cluster::new(home.clone());
                let lease = tokio::task::spawn_blocking(move || cluster.lease())
                    .await
                    .map_err(|e| DbError::Pool(format!("cluster start task failed: {e}")))??;
                Some(lease)
            }
            DatabaseTarget::Configured(_) => None,
        };
        let config = target.connection_config();
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        let db = Database {
            pool,
            config,
            lease,
            query_timeout: None,
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Cancels queries (`query::execute`) that run longer than `timeout`;
    /// the server sets this so one heavy request cannot hold a connection
    /// and a core indefinitely. Loads and rebuilds are not limited.
    pub fn with_query_timeout(mut self, timeout: Option<Duration>) -> Database {
        self.query_timeout = timeout;
        self
    }

    pub fn query_timeout(&self) -> Option<Duration> {
        self.query_timeout
    }

    /// A pooled connection, with connection failures classified.
    pub async fn client(&self) -> Result<Object, DbError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => classify_connect_error(e, &self.config),
            other => DbError::Pool(other.to_string()),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The connection settings (for connections outside the pool, such as LISTEN).
    pub fn connection_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Closes the pool and releases the embedded cluster (stopping it when this
    /// was its last user and `clue db start` did not ask to keep it).
    pub async fn close(mut self) -> Result<(), DbError> {
        self.pool.close();
        if let Some(lease) = self.lease.take() {
            tokio::task::spawn_blocking(move || lease.release())
                .await
                .map_err(|e| DbError::Pool(format!("cluster stop task failed: {e}")))??;
        }
        Ok(())
    }

    /// Ready to serve: the database answers and every migration this build
    /// knows is applied.
    pub async fn check_ready(&self) -> Result<(), DbError> {
        let client = self.client().await?;
        let applied: Option<i32> = client
            .query_one("SELECT max(version) FROM clue.schema_history", &[])
            .await?
            .get(0);
        let expected = embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| m.version())
            .max();
        if applied < expected {
            return Err(DbError::Migration(format!(
                "database is at migration {applied:?}, this build needs {expected:?}"
            )));
        }
        Ok(())
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let mut client = self.client().await?;
        // The advisory lock makes two clue processes starting at once apply
        // each migration exactly once: the second waits, then finds them done.
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let result = async {
            client
                .batch_execute("CREATE SCHEMA IF NOT EXISTS clue")
                .await?;
            let c: &mut tokio_postgres::Client = &mut client;
            embedded::migrations::runner()
                .set_migration_table_name("clue.schema_history")
                .run_async(c)
                .await
                .map_err(|e| DbError::Migration(e.to_string()))?;
            Ok::<(), DbError>(())
        }
        .await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        result
    }
}

/// The server's own message when there is one (the driver's Display says only "db error").
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// Turns a failed connection attempt into the reason a user can act on.
pub fn classify_connect_error(
    e: tokio_postgres::Error,
    config: &tokio_postgres::Config,
) -> DbError {
    let target = describe_config(config);
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return DbError::AuthFailed {
                target,
                reason: db.message().to_owned(),
            };
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return DbError::DatabaseMissing {
                database: config.get_dbname().unwrap_or("?").to_owned(),
                target,
            };
        }
        return DbError::Query(e);
    }
    // No server answer: report the innermost cause (refused, timed out, no such host).
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    if reason.contains("password missing") {
        return DbError::AuthFailed {
            target,
            reason: "the server asks for a password and none is configured (set CLUE_DB_PWD or put it in the URL)".to_owned(),
        };
    }
    DbError::Unreachable { target, reason }
}
