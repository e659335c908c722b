//! Resolved settings: which PostgreSQL clue talks to and where its home is.
//!
//! The CLI keeps raw arguments (`cli.rs`); this module turns them plus the
//! environment into one [`DatabaseTarget`]. Precedence, highest first:
//! `--database-url`, `CLUE_DATABASE_URL`, the `CLUE_DB_*` variables of
//! prototype 000, and finally clue's embedded cluster in `CLUE_HOME`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::cluster;

/// Where clue keeps its private cluster when no database is configured.
pub const DEFAULT_HOME: &str = ".clue";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{source_name} is not a valid PostgreSQL connection string: {reason}")]
    InvalidUrl {
        source_name: &'static str,
        reason: String,
    },
    #[error("CLUE_DB_PORT must be a port number (1-65535), got {0:?}")]
    InvalidPort(String),
}

/// The database a command works on.
#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    /// A server the user configured.
    Configured(Box<tokio_postgres::Config>),
    /// clue's own private cluster under `home`.
    Embedded { home: PathBuf },
}

impl DatabaseTarget {
    /// Resolves the target from the `--database-url` flag and the environment
    /// (passed as a lookup so tests need not touch the process environment).
    pub fn resolve(
        url_flag: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<DatabaseTarget, ConfigError> {
        let nonempty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if let Some(url) = url_flag {
            return parse_url(url, "--database-url")
                .map(|c| DatabaseTarget::Configured(Box::new(c)));
        }
        if let Some(url) = nonempty("CLUE_DATABASE_URL") {
            return parse_url(&url, "CLUE_DATABASE_URL")
                .map(|c| DatabaseTarget::Configured(Box::new(c)));
        }
        const PROTOTYPE_VARS: [&str; 5] = [
            "CLUE_DB_HOST",
            "CLUE_DB",
            "CLUE_DB_PORT",
            "CLUE_DB_USER",
            "CLUE_DB_PWD",
        ];
        if PROTOTYPE_VARS.iter().any(|v| nonempty(v).is_some()) {
            let mut config = tokio_postgres::Config::new();
            config.host(nonempty("CLUE_DB_HOST").as_deref().unwrap_or("127.0.0.1"));
            let port = match nonempty("CLUE_DB_PORT") {
                Some(p) => p
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or(ConfigError::InvalidPort(p))?,
                None => 5432,
            };
            config.port(port);
            // Like libpq: the user defaults to the OS account, the database to the user.
            let user = nonempty("CLUE_DB_USER").unwrap_or_else(os_user_name);
            config.dbname(nonempty("CLUE_DB").as_deref().unwrap_or(&user));
            config.user(&user);
            if let Some(pwd) = env("CLUE_DB_PWD").filter(|p| !p.is_empty()) {
                config.password(pwd);
            }
            return Ok(DatabaseTarget::Configured(Box::new(config)));
        }
        let home = nonempty("CLUE_HOME").unwrap_or_else(|| DEFAULT_HOME.to_owned());
        Ok(DatabaseTarget::Embedded {
            home: PathBuf::from(home),
        })
    }

    /// The target as seen by a process environment.
    pub fn from_env(url_flag: Option<&str>) -> Result<DatabaseTarget, ConfigError> {
        Self::resolve(url_flag, |name| std::env::var(name).ok())
    }

    /// The connection settings clue uses for this target, with the session
    /// settings every clue connection gets.
    pub fn connection_config(&self) -> tokio_postgres::Config {
        let mut config = match self {
            DatabaseTarget::Configured(config) => (**config).clone(),
            DatabaseTarget::Embedded { home } => {
                let cluster = cluster::Cluster::new(home.clone());
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
        // JIT makes clue's aggregate queries 1.3-1.5x slower (DESIGN.md).
        let options = config.get_options().unwrap_or("").to_owned();
        config.options(format!("{options} -c jit=off").trim());
        config
    }

    /// A human description for messages, never including a password.
    pub fn describe(&self) -> String {
        match self {
            DatabaseTarget::Embedded { home } => {
                format!("clue's embedded cluster in {}", home.display())
            }
            DatabaseTarget::Configured(config) => describe_config(config),
        }
    }
}

/// `user@host:port/dbname` for messages.
pub fn describe_config(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{}:{}/{}",
        config.get_user().unwrap_or("?"),
        host,
        port,
        config.get_dbname().unwrap_or("?")
    )
}

fn parse_url(url: &str, source_name: &'static str) -> Result<tokio_postgres::Config, ConfigError> {
    tokio_postgres::Config::from_str(url.trim()).map_err(|e| ConfigError::InvalidUrl {
        source_name,
        // The driver's message names the bad part without echoing the URL,
        // which may hold a password.
        reason: e.to_string(),
    })
}

fn os_user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "postgres".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flag: Option<&str>, vars: &[(&str, &str)]) -> Result<DatabaseTarget, ConfigError> {
        DatabaseTarget::resolve(flag, |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn check(flag: Option<&str>, vars: &[(&str, &str)], expect: &str) {
        let got = match resolve(flag, vars) {
            Ok(t) => t.describe(),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expect, "flag {flag:?} vars {vars:?}");
    }

    #[test]
    fn precedence_and_defaults() {
        check(None, &[], "clue's embedded cluster in .clue");
        check(
            None,
            &[("CLUE_HOME", "/srv/clue")],
            "clue's embedded cluster in /srv/clue",
        );
        check(
            None,
            &[("CLUE_DB", "sales"), ("CLUE_DB_USER", "me")],
            "me@127.0.0.1:5432/sales",
        );
        check(
            None,
            &[
                ("CLUE_DB_HOST", "db"),
                ("CLUE_DB_PORT", "6543"),
                ("CLUE_DB_USER", "me"),
            ],
            "me@db:6543/me",
        );
        check(
            None,
            &[
                ("CLUE_DATABASE_URL", "postgresql://a@h:1/d"),
                ("CLUE_DB", "x"),
            ],
            "a@h:1/d",
        );
        check(
            Some("postgresql://b@h2/d2"),
            &[("CLUE_DATABASE_URL", "postgresql://a@h:1/d")],
            "b@h2:5432/d2",
        );
        // Empty variables count as unset, as a shell `export X=` user expects.
        check(
            None,
            &[("CLUE_DATABASE_URL", ""), ("CLUE_DB", " ")],
            "clue's embedded cluster in .clue",
        );
    }

    #[test]
    fn bad_values_are_named() {
        check(
            None,
            &[("CLUE_DB", "d"), ("CLUE_DB_PORT", "54x")],
            "error: CLUE_DB_PORT must be a port number (1-65535), got \"54x\"",
        );
        let err = resolve(
            None,
            &[("CLUE_DATABASE_URL", "postgresql://u:secret@h:notaport/d")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("CLUE_DATABASE_URL is not a valid PostgreSQL connection string"),
            "{err}"
        );
        assert!(!err.contains("secret"), "password leaked: {err}");
    }

    #[test]
    fn sessions_turn_jit_off() {
        let t = resolve(Some("postgresql://u@h/d?options=-c%20work_mem%3D64MB"), &[]).unwrap();
        assert_eq!(
            t.connection_config().get_options(),
            Some("-c work_mem=64MB -c jit=off")
        );
        let embedded = resolve(None, &[("CLUE_HOME", "/tmp/x")])
            .unwrap()
            .connection_config();
        assert_eq!(embedded.get_user(), Some("clue"));
        assert_eq!(
            embedded.get_hosts(),
            &[Host::Unix(PathBuf::from("/tmp/x/run"))]
        );
    }
}
