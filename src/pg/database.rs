//! The connection to PostgreSQL: pool, embedded-cluster lease, the session
//! settings of every connection, and the translation of connection failures
//! into one-line reasons. (Migrations are `store::migrations`.)

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::error::{Classify, ErrorKind, classify_pg, pg_message};
use crate::pg::cluster::{self, ClusterError, Lease};
use crate::settings::{DatabaseTarget, describe_config};

/// The connection settings clue uses for a target, with the session
/// settings every clue connection gets.
pub fn connection_config(target: &DatabaseTarget) -> tokio_postgres::Config {
    let mut config = match target {
        DatabaseTarget::Configured(config) => (**config).clone(),
        DatabaseTarget::Embedded(embedded) => {
            let cluster = cluster::Cluster::from_settings(embedded);
            let mut config = tokio_postgres::Config::new();
            config
                .host_path(cluster.socket_dir())
                .port(cluster::PORT)
                .user(cluster::USER)
                .dbname(cluster::DATABASE);
            config
        }
    };
    if config.get_application_name().is_none() {
        config.application_name("clue");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    // JIT makes clue's aggregate queries 1.3-1.5x slower (DESIGN.md). Times
    // are read and written in UTC whatever the server's default zone
    // (partition bounds of timestamptz keys are printed in the session's).
    let options = config.get_options().unwrap_or("").to_owned();
    config.options(format!("{options} -c jit=off -c TimeZone=UTC").trim());
    config
}

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
    #[error("database error: {}", pg_message(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("no database connection available: {0}")]
    Pool(String),
    #[error("no database connection became free within {0:?}")]
    PoolTimeout(Duration),
}

impl Classify for DbError {
    fn kind(&self) -> ErrorKind {
        match self {
            DbError::Query(e) => classify_pg(e),
            DbError::Cluster(_)
            | DbError::AuthFailed { .. }
            | DbError::DatabaseMissing { .. }
            | DbError::Unreachable { .. }
            | DbError::Pool(_)
            | DbError::PoolTimeout(_) => ErrorKind::Unavailable,
        }
    }
}

/// How long a request waits for a free pooled connection (no longer than
/// the query timeout, when one is set).
const POOL_WAIT: Duration = Duration::from_secs(30);

/// How long a new connection may take, handshake included (the driver's
/// connect timeout covers the TCP connect alone, so a server that accepts
/// and then stalls would hold the request forever).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

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
            DatabaseTarget::Embedded(embedded) => {
                let cluster = cluster::Cluster::from_settings(embedded);
                let lease = tokio::task::spawn_blocking(move || cluster.lease())
                    .await
                    .map_err(|e| DbError::Pool(format!("cluster start task failed: {e}")))??;
                Some(lease)
            }
            DatabaseTarget::Configured(_) => None,
        };
        let mut db = Database::unconnected(connection_config(target))?;
        db.lease = lease;
        // Connect once now, so a wrong password or a missing database is
        // reported by `open`, not by the first statement.
        drop(db.client().await?);
        Ok(db)
    }

    /// A pool that connects on first use (for in-process tests of the
    /// surfaces, which need no database until a request reaches one).
    pub fn unconnected(config: tokio_postgres::Config) -> Result<Database, DbError> {
        let pool = pool(config.clone())?;
        Ok(Database {
            pool,
            config,
            lease: None,
            query_timeout: None,
        })
    }

    /// Cancels queries (`query::execute`) that run longer than `timeout`;
    /// the server sets this so one heavy request cannot hold a connection
    /// and a core indefinitely. Every other statement on the pool's new
    /// connections gets the database's own `statement_timeout` a second
    /// later, as a backstop for paths without a limit of their own (reads of
    /// single rows, event writes). Loads and rebuilds of the CLI are not
    /// limited (their processes never set one).
    pub fn with_query_timeout(mut self, timeout: Option<Duration>) -> Database {
        self.query_timeout = timeout;
        if let Some(limit) = timeout {
            let mut config = self.config.clone();
            let ms = (limit + Duration::from_secs(1)).as_millis();
            let backstop = format!("-c statement_timeout={ms}");
            match config.get_options() {
                Some(own) if !own.trim().is_empty() => {
                    let both = format!("{own} {backstop}");
                    config.options(both)
                }
                _ => config.options(backstop),
            };
            // Connections made from now on carry it; the few the start-up
            // made are closed with the old pool.
            if let Ok(pool) = pool(config) {
                self.pool.close();
                self.pool = pool;
            }
        }
        self
    }
}

/// A pool of connections made with `config`.
fn pool(config: tokio_postgres::Config) -> Result<Pool, DbError> {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(16)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_WAIT))
        .recycle_timeout(Some(CONNECT_WAIT))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))?;
    Ok(pool)
}

impl Database {
    pub fn query_timeout(&self) -> Option<Duration> {
        self.query_timeout
    }

    /// A pooled connection, with connection failures classified.
    pub async fn client(&self) -> Result<Object, DbError> {
        let wait = self.query_timeout.map_or(POOL_WAIT, |q| q.min(POOL_WAIT));
        let connect = self
            .query_timeout
            .map_or(CONNECT_WAIT, |q| q.min(CONNECT_WAIT));
        let timeouts = deadpool_postgres::Timeouts {
            wait: Some(wait),
            create: Some(connect),
            recycle: Some(connect),
        };
        let started = std::time::Instant::now();
        let got = self.pool.timeout_get(&timeouts).await;
        metrics::histogram!("clue_pool_wait_seconds").record(started.elapsed().as_secs_f64());
        got.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => classify_connect_error(e, &self.config),
            deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
                metrics::counter!("clue_pool_timeouts_total").increment(1);
                DbError::PoolTimeout(wait)
            }
            deadpool_postgres::PoolError::Timeout(_) => DbError::Unreachable {
                target: describe_config(&self.config),
                reason: format!("it did not answer a new connection within {connect:?}"),
            },
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
}

/// One connection of its own, outside the pool (to another database, such
/// as a sync's source), its connection task spawned; failures classified
/// as the pool's are.
pub async fn connect_direct(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| classify_connect_error(e, config))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "direct connection closed");
        }
    });
    Ok(client)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::EmbeddedSettings;
    use std::path::PathBuf;
    use tokio_postgres::config::Host;

    #[test]
    fn sessions_turn_jit_off() {
        let t = DatabaseTarget::Configured(Box::new(
            "postgresql://u@h/d?options=-c%20work_mem%3D64MB"
                .parse()
                .unwrap(),
        ));
        assert_eq!(
            connection_config(&t).get_options(),
            Some("-c work_mem=64MB -c jit=off -c TimeZone=UTC")
        );
        let embedded = connection_config(&DatabaseTarget::Embedded(EmbeddedSettings::at("/tmp/x")));
        assert_eq!(embedded.get_user(), Some("clue"));
        assert_eq!(
            embedded.get_hosts(),
            &[Host::Unix(PathBuf::from("/tmp/x/run"))]
        );
    }
}
