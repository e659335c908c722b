//! Settings, resolved once: the raw CLI arguments (`cli::args`) and the
//! environment (passed in as a lookup) become one [`Settings`] value that is
//! handed down; nothing below the CLI reads the process environment.
//!
//! The database, highest precedence first: `--database-url`,
//! `CLUE_DATABASE_URL`, the `CLUE_DB_*` variables of prototype 000, and
//! finally clue's embedded cluster in `--home`/`CLUE_HOME`.

use std::path::PathBuf;
use std::str::FromStr;

use tokio_postgres::config::Host;

/// Where user dataset definitions are read from when `CLUE_MODELS` is not set.
pub const DEFAULT_MODELS_DIR: &str = "models";

/// Where clue keeps its private cluster when no database is configured.
pub const DEFAULT_HOME: &str = ".clue";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{source_name} is not a valid PostgreSQL connection string: {reason}")]
    InvalidUrl {
        source_name: &'static str,
        reason: String,
    },
    #[error("{name} must be a port number (1-65535), got {value:?}")]
    InvalidPort { name: &'static str, value: String },
    #[error("{name} must be {what}, got {value:?}")]
    InvalidNumber {
        name: &'static str,
        what: &'static str,
        value: String,
    },
    #[error(
        "no source database to sync from: pass --source-url or set CLUE_SOURCE_DATABASE_URL (or prototype 004's SOURCE_DB, SOURCE_DB_USER, SOURCE_DB_PASSWORD, SOURCE_DB_HOST, SOURCE_DB_PORT)"
    )]
    NoSource,
}

impl crate::error::Classify for ConfigError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::BadInput
    }
}

/// Everything a command needs to know from flags and environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseTarget,
    /// Where user dataset definitions are read from (`CLUE_MODELS`, default `./models`).
    pub models_dir: PathBuf,
    /// clue's home (`--home`, `CLUE_HOME`, default `./.clue`): the embedded
    /// cluster, and the generated secret key when none is set.
    pub home: PathBuf,
    /// Signs dashboard sessions (`CLUE_SECRET_KEY`, prototype 000's name);
    /// unset, one is generated and kept in the home.
    pub secret_key: Option<String>,
}

impl Settings {
    /// Resolves every setting from the `--database-url` and `--home` flags
    /// and the environment lookup `env`.
    pub fn resolve(
        url_flag: Option<&str>,
        home_flag: Option<&std::path::Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut database = DatabaseTarget::resolve(url_flag, &env)?;
        if let (DatabaseTarget::Embedded(embedded), Some(home)) = (&mut database, home_flag) {
            embedded.home = home.to_owned();
        }
        let models_dir = env("CLUE_MODELS")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_MODELS_DIR.to_owned());
        let home = match home_flag {
            Some(h) => h.to_owned(),
            None => PathBuf::from(
                env("CLUE_HOME")
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| DEFAULT_HOME.to_owned()),
            ),
        };
        let secret_key = env("CLUE_SECRET_KEY").filter(|v| !v.is_empty());
        if secret_key.as_ref().is_some_and(|k| k.len() < 32) {
            return Err(ConfigError::InvalidNumber {
                name: "CLUE_SECRET_KEY",
                what: "at least 32 characters (for example `openssl rand -hex 32`)",
                value: "(hidden)".into(),
            });
        }
        Ok(Settings {
            database,
            models_dir: PathBuf::from(models_dir),
            home,
            secret_key,
        })
    }
}

/// The database sync's source and knobs (`clue etl`, `clue export-reports`).
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// The source database: `--source-url`, `CLUE_SOURCE_DATABASE_URL`, or
    /// prototype 004's `SOURCE_DB*` variables.
    pub source: Option<tokio_postgres::Config>,
    /// Orders per transaction (`--batch-size`, `BATCH_SIZE`, default 1,000).
    pub batch_size: usize,
    /// Between cycles of a continuous sync (`--polling-interval`,
    /// `POLLING_INTERVAL` in seconds, default 60).
    pub polling_interval: std::time::Duration,
    /// Where `clue export-reports` writes (`--output`, `OUTPUT_DIRECTORY`,
    /// default `output`).
    pub output_dir: PathBuf,
}

/// The raw flags `SyncSettings` resolves.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncFlags<'a> {
    pub source_url: Option<&'a str>,
    pub batch_size: Option<usize>,
    pub polling_interval: Option<u64>,
    pub output_dir: Option<&'a std::path::Path>,
}

impl SyncSettings {
    pub fn resolve(
        flags: SyncFlags<'_>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SyncSettings, ConfigError> {
        let nonempty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let number = |name: &'static str| -> Result<Option<u64>, ConfigError> {
            nonempty(name)
                .map(|v| {
                    v.trim().parse::<u64>().ok().filter(|n| *n > 0).ok_or(
                        ConfigError::InvalidNumber {
                            name,
                            what: "a whole number from 1",
                            value: v,
                        },
                    )
                })
                .transpose()
        };
        let source = if let Some(url) = flags.source_url {
            Some(parse_url(url, "--source-url")?)
        } else if let Some(url) = nonempty("CLUE_SOURCE_DATABASE_URL") {
            Some(parse_url(&url, "CLUE_SOURCE_DATABASE_URL")?)
        } else if let Some(db) = nonempty("SOURCE_DB") {
            let mut config = tokio_postgres::Config::new();
            config.host(
                nonempty("SOURCE_DB_HOST")
                    .as_deref()
                    .unwrap_or("127.0.0.1")
                    .trim(),
            );
            config.port(port("SOURCE_DB_PORT", nonempty("SOURCE_DB_PORT"))?);
            config.dbname(db.trim());
            config.user(
                nonempty("SOURCE_DB_USER")
                    .unwrap_or_else(|| os_user_name(nonempty("USER")))
                    .trim(),
            );
            if let Some(pwd) = env("SOURCE_DB_PASSWORD").filter(|p| !p.is_empty()) {
                config.password(pwd);
            }
            Some(config)
        } else {
            None
        };
        Ok(SyncSettings {
            source,
            batch_size: match flags.batch_size {
                Some(n) => n.max(1),
                None => number("BATCH_SIZE")?.map_or(1_000, |n| n as usize),
            },
            polling_interval: std::time::Duration::from_secs(match flags.polling_interval {
                Some(n) => n.max(1),
                None => number("POLLING_INTERVAL")?.unwrap_or(60),
            }),
            output_dir: match flags.output_dir {
                Some(d) => d.to_owned(),
                None => {
                    PathBuf::from(nonempty("OUTPUT_DIRECTORY").unwrap_or_else(|| "output".into()))
                }
            },
        })
    }

    /// The source, or why there is none.
    pub fn source(&self) -> Result<&tokio_postgres::Config, ConfigError> {
        self.source.as_ref().ok_or(ConfigError::NoSource)
    }
}

/// How clue runs its embedded cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedSettings {
    /// The cluster's home (`--home`, `CLUE_HOME`, default `./.clue`).
    pub home: PathBuf,
    /// Directory of `initdb`, `pg_ctl`, `postgres` (`CLUE_PG_BIN`); found
    /// through `pg_config`, `PATH` and `/usr/lib/postgresql` when unset.
    pub pg_bin: Option<PathBuf>,
    /// As root, the account the server runs as (`CLUE_SERVER_USER`).
    pub server_user: Option<String>,
    /// `initdb --no-sync` (`CLUE_FAST_INIT=1`), for tests.
    pub fast_init: bool,
}

impl EmbeddedSettings {
    /// The defaults for a home: binaries searched for, no other overrides.
    pub fn at(home: impl Into<PathBuf>) -> EmbeddedSettings {
        EmbeddedSettings {
            home: home.into(),
            pg_bin: None,
            server_user: None,
            fast_init: false,
        }
    }
}

/// The database a command works on.
#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    /// A server the user configured.
    Configured(Box<tokio_postgres::Config>),
    /// clue's own private cluster.
    Embedded(EmbeddedSettings),
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
            config.port(port("CLUE_DB_PORT", nonempty("CLUE_DB_PORT"))?);
            // Like libpq: the user defaults to the OS account, the database to the user.
            let user = nonempty("CLUE_DB_USER").unwrap_or_else(|| os_user_name(nonempty("USER")));
            config.dbname(nonempty("CLUE_DB").as_deref().unwrap_or(&user));
            config.user(&user);
            if let Some(pwd) = env("CLUE_DB_PWD").filter(|p| !p.is_empty()) {
                config.password(pwd);
            }
            return Ok(DatabaseTarget::Configured(Box::new(config)));
        }
        let home = nonempty("CLUE_HOME").unwrap_or_else(|| DEFAULT_HOME.to_owned());
        Ok(DatabaseTarget::Embedded(EmbeddedSettings {
            home: PathBuf::from(home),
            pg_bin: nonempty("CLUE_PG_BIN").map(PathBuf::from),
            server_user: nonempty("CLUE_SERVER_USER"),
            fast_init: env("CLUE_FAST_INIT").is_some_and(|v| v == "1"),
        }))
    }

    /// A human description for messages, never including a password.
    pub fn describe(&self) -> String {
        match self {
            DatabaseTarget::Embedded(e) => {
                format!("clue's embedded cluster in {}", e.home.display())
            }
            DatabaseTarget::Configured(config) => describe_config(config),
        }
    }
}

/// The port in variable `name` (5432 when unset), 1-65535.
fn port(name: &'static str, value: Option<String>) -> Result<u16, ConfigError> {
    match value {
        None => Ok(5432),
        Some(v) => v
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or(ConfigError::InvalidPort { name, value: v }),
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

fn os_user_name(user_var: Option<String>) -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or(user_var)
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

    /// The sync's source and knobs: `(flag, environment) -> description`.
    #[test]
    fn sync_settings_from_flags_and_prototype_variables() {
        let check = |flags: SyncFlags<'_>, env: &[(&str, &str)], expect: &str| {
            let got = SyncSettings::resolve(flags, |name| {
                env.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            })
            .map(|s| {
                format!(
                    "{} batch {} every {}s into {}",
                    s.source.as_ref().map_or("none".into(), describe_config),
                    s.batch_size,
                    s.polling_interval.as_secs(),
                    s.output_dir.display()
                )
            })
            .unwrap_or_else(|e| format!("error: {e}"));
            assert_eq!(got, expect, "{env:?}");
        };
        check(
            SyncFlags::default(),
            &[],
            "none batch 1000 every 60s into output",
        );
        check(
            SyncFlags::default(),
            &[
                ("SOURCE_DB", "finance_db"),
                ("SOURCE_DB_USER", "finance_db_user"),
                ("SOURCE_DB_PASSWORD", "1234"),
                ("SOURCE_DB_HOST", "localhost  "),
                ("SOURCE_DB_PORT", "5433"),
                ("BATCH_SIZE", "500"),
                ("POLLING_INTERVAL", "30"),
                ("OUTPUT_DIRECTORY", "./reports"),
            ],
            "finance_db_user@localhost:5433/finance_db batch 500 every 30s into ./reports",
        );
        check(
            SyncFlags {
                source_url: Some("postgresql://a@h:1/d"),
                batch_size: Some(7),
                polling_interval: Some(2),
                output_dir: Some(std::path::Path::new("out")),
            },
            &[
                ("CLUE_SOURCE_DATABASE_URL", "postgresql://b@h:2/e"),
                ("BATCH_SIZE", "500"),
            ],
            "a@h:1/d batch 7 every 2s into out",
        );
        check(
            SyncFlags::default(),
            &[
                ("CLUE_SOURCE_DATABASE_URL", "postgresql://b@h:2/e"),
                ("SOURCE_DB", "x"),
            ],
            "b@h:2/e batch 1000 every 60s into output",
        );
        check(
            SyncFlags::default(),
            &[("POLLING_INTERVAL", "soon")],
            "error: POLLING_INTERVAL must be a whole number from 1, got \"soon\"",
        );
        check(
            SyncFlags::default(),
            &[("SOURCE_DB", "d"), ("SOURCE_DB_PORT", "70000")],
            "error: SOURCE_DB_PORT must be a port number (1-65535), got \"70000\"",
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
    fn settings_resolve_once_from_flags_and_environment() {
        let env = [
            ("CLUE_HOME", "/tmp/h"),
            ("CLUE_PG_BIN", "/opt/pg/bin"),
            ("CLUE_SERVER_USER", "pg"),
            ("CLUE_FAST_INIT", "1"),
            ("CLUE_MODELS", "/etc/clue/models"),
        ];
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let s = Settings::resolve(None, None, lookup).unwrap();
        assert_eq!(s.models_dir, PathBuf::from("/etc/clue/models"));
        let DatabaseTarget::Embedded(e) = &s.database else {
            panic!("embedded expected")
        };
        assert_eq!(
            e,
            &EmbeddedSettings {
                home: "/tmp/h".into(),
                pg_bin: Some("/opt/pg/bin".into()),
                server_user: Some("pg".into()),
                fast_init: true
            }
        );
        let s = Settings::resolve(None, Some(std::path::Path::new("/elsewhere")), lookup).unwrap();
        let DatabaseTarget::Embedded(e) = &s.database else {
            panic!("embedded expected")
        };
        assert_eq!(
            e.home,
            PathBuf::from("/elsewhere"),
            "--home wins over CLUE_HOME"
        );
        let s = Settings::resolve(None, None, |_| None).unwrap();
        assert_eq!(s.models_dir, PathBuf::from("models"));
    }
}
