//! Clue's embedded PostgreSQL cluster: finds the locally installed server
//! programs, creates a private cluster under the clue home, and starts and
//! stops it so that any number of concurrent clue processes can share it.
//!
//! Layout under the home directory:
//! - `pgdata/`  data directory (0700, owned by the server account)
//! - `run/`     Unix socket directory; the server listens nowhere else
//! - `log/postgresql.log` server log
//! - `cluster.lock` exclusive flock serialising init/start/stop decisions
//! - `users.lock` shared flock held by every process using the server
//! - `keep`     marker written by `clue db start`: commands must not stop it
//!
//! Lifecycle: a [`Lease`] starts the server if needed and stops it when the
//! last lease goes away, unless the keep marker is present. Because flocks
//! die with their process, a crashed command never blocks the shutdown: the
//! next release sees nobody holding `users.lock` and stops the server.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use nix::unistd::{User, geteuid};

use crate::settings::EmbeddedSettings;

/// Database created in the cluster and used by clue.
pub const DATABASE: &str = "clue";
/// Superuser role created by initdb; authentication is `trust` because only
/// the socket directory's permissions decide who can connect.
pub const USER: &str = "clue";
/// Only names the socket file (`.s.PGSQL.5432`); no TCP port is opened.
pub const PORT: u16 = 5432;

/// `sun_path` is 108 bytes on Linux including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// How many lines of a log or stderr to quote in an error.
const TAIL_LINES: usize = 20;
/// The three programs clue runs; they must come from one installation.
const PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server programs not found: {missing}. Install PostgreSQL \
         (Debian/Ubuntu: `apt-get install postgresql`, Fedora/RHEL: `dnf install postgresql-server`, \
         macOS: `brew install postgresql@16`) or set CLUE_PG_BIN to the directory holding them; \
         to use an existing server instead, set CLUE_DATABASE_URL or pass --database-url"
    )]
    BinariesNotFound { missing: String },

    #[error(
        "the database socket path {path} is {len} bytes, over the {max}-byte limit for Unix sockets; \
         set CLUE_HOME to a shorter directory"
    )]
    SocketPathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },

    #[error(
        "the database server runs as user `{user}`, which cannot enter {dir}; \
         set CLUE_HOME to a directory it can reach, e.g. CLUE_HOME=/var/tmp/clue"
    )]
    HomeNotReachable { user: String, dir: PathBuf },

    #[error(
        "the database server account `{user}` does not exist; \
         set CLUE_SERVER_USER to an existing unprivileged account"
    )]
    UnknownServerUser { user: String },

    #[error("could not {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },

    #[error("could not create the database cluster in {dir}: {detail}")]
    InitFailed { dir: PathBuf, detail: String },

    #[error("could not start the database server: {detail}")]
    StartFailed { detail: String },

    #[error("could not stop the database server: {detail}")]
    StopFailed { detail: String },

    #[error("could not check whether the database server is running: {detail}")]
    StatusFailed { detail: String },
}

impl crate::error::Classify for ClusterError {
    fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Unavailable
    }
}

fn io_err(action: impl Into<String>) -> impl FnOnce(io::Error) -> ClusterError {
    let action = action.into();
    move |source| ClusterError::Io { action, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    NotInitialized,
    Stopped,
    Running { pid: u32 },
}

/// Handle on the embedded cluster under one clue home.
#[derive(Debug, Clone)]
pub struct Cluster {
    home: PathBuf,
    /// Found on first need, so commands that never touch the cluster do not
    /// fail on machines without PostgreSQL.
    bin_dir: OnceLock<PathBuf>,
    /// Where the server programs are (`CLUE_PG_BIN`); searched for when unset.
    pg_bin: Option<PathBuf>,
    /// As root, the account the server runs as (`CLUE_SERVER_USER`).
    server_user: Option<String>,
    /// `initdb --no-sync` (`CLUE_FAST_INIT=1`).
    fast_init: bool,
    /// Where the server also listens on TCP (127.0.0.1), with this port
    /// for its socket too; only on its Unix socket, at [`PORT`], without.
    tcp_port: Option<u16>,
    /// Server settings added to clue's (`wal_level = logical` for a test
    /// source that streams changes, say).
    settings: Vec<(String, String)>,
}

/// Who the server programs run as, when that differs from us.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

/// Everything needed to run a server program.
struct Ctx {
    bin: PathBuf,
    account: Option<Account>,
}

impl Cluster {
    pub fn new(home: impl Into<PathBuf>) -> Cluster {
        let home = home.into();
        // Lexical only (no filesystem access): the socket path written into
        // the server config and the URL must not depend on the cwd later.
        let home = std::path::absolute(&home).unwrap_or(home);
        Cluster {
            home,
            bin_dir: OnceLock::new(),
            pg_bin: None,
            server_user: None,
            fast_init: false,
            tcp_port: None,
            settings: Vec::new(),
        }
    }

    /// The cluster also listening on `127.0.0.1:port` (its socket is named
    /// for that port too).
    pub fn with_tcp_port(mut self, port: u16) -> Cluster {
        self.tcp_port = Some(port);
        self
    }

    /// The cluster started with `name = value` added to clue's settings.
    pub fn with_setting(mut self, name: &str, value: &str) -> Cluster {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    fn port(&self) -> u16 {
        self.tcp_port.unwrap_or(PORT)
    }

    /// The cluster the resolved settings describe.
    pub fn from_settings(settings: &EmbeddedSettings) -> Cluster {
        Cluster {
            pg_bin: settings.pg_bin.clone(),
            server_user: settings.server_user.clone(),
            fast_init: settings.fast_init,
            ..Cluster::new(settings.home.clone())
        }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.home.join("run")
    }

    /// A libpq connection URL (psql and most drivers accept it).
    pub fn url(&self) -> String {
        format!(
            "postgresql://{USER}@/{DATABASE}?host={}&port={}",
            percent_encode(self.socket_dir().as_os_str()),
            self.port()
        )
    }

    pub fn status(&self) -> Result<Status, ClusterError> {
        if !self.is_initialized() {
            return Ok(Status::NotInitialized);
        }
        let ctx = self.context()?;
        self.status_with(&ctx)
    }

    /// `clue db start`: make sure the server runs and stays running after
    /// commands release it. Returns true if it was started by this call.
    pub fn start_kept(&self) -> Result<bool, ClusterError> {
        let ctx = self.prepare()?;
        let _control = self.lock_control()?;
        let started = self.ensure_running(&ctx)?;
        fs::write(self.keep_path(), b"")
            .map_err(io_err(format!("write {}", self.keep_path().display())))?;
        Ok(started)
    }

    /// `clue db stop`: drop the keep marker and stop the server if it runs.
    /// Returns true if it was running.
    pub fn stop(&self) -> Result<bool, ClusterError> {
        if !self.home.is_dir() {
            return Ok(false);
        }
        let _control = self.lock_control()?;
        match fs::remove_file(self.keep_path()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err(format!("remove {}", self.keep_path().display()))(e));
            }
            _ => {}
        }
        if !self.is_initialized() {
            return Ok(false);
        }
        let ctx = self.context()?;
        self.stop_if_running(&ctx)
    }

    /// For any command needing the database: create and start the server as
    /// needed and register this process as a user until the lease ends.
    pub fn lease(&self) -> Result<Lease, ClusterError> {
        let ctx = self.prepare()?;
        let control = self.lock_control()?;
        self.ensure_running(&ctx)?;
        let users = open_lock_file(&self.users_lock_path())?;
        users
            .lock_shared()
            .map_err(io_err(format!("lock {}", self.users_lock_path().display())))?;
        // Only now may another process's release decide on a stop: it will
        // see our shared lock and leave the server running.
        drop(control);
        Ok(Lease {
            cluster: self.clone(),
            users: Some(users),
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.home.join("pgdata")
    }
    fn log_dir(&self) -> PathBuf {
        self.home.join("log")
    }
    fn log_file(&self) -> PathBuf {
        self.log_dir().join("postgresql.log")
    }
    fn keep_path(&self) -> PathBuf {
        self.home.join("keep")
    }
    fn users_lock_path(&self) -> PathBuf {
        self.home.join("users.lock")
    }

    fn is_initialized(&self) -> bool {
        self.data_dir().join("PG_VERSION").is_file()
    }

    fn fast_init(&self) -> bool {
        self.fast_init
    }

    fn bin_dir(&self) -> Result<PathBuf, ClusterError> {
        if let Some(dir) = self.bin_dir.get() {
            return Ok(dir.clone());
        }
        let dir = locate_binaries(self.pg_bin.clone())?;
        // A concurrent caller may have set it first; both found the same.
        let _ = self.bin_dir.set(dir.clone());
        Ok(dir)
    }

    fn context(&self) -> Result<Ctx, ClusterError> {
        Ok(Ctx {
            bin: self.bin_dir()?,
            account: server_account(self.server_user.as_deref())?,
        })
    }

    /// Checks that can fail with a helpful message, done before any lock or
    /// server program is involved, plus creating the home itself.
    fn prepare(&self) -> Result<Ctx, ClusterError> {
        let socket = self.socket_dir().join(format!(".s.PGSQL.{}", self.port()));
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(ClusterError::SocketPathTooLong {
                path: socket,
                len,
                max: MAX_SOCKET_PATH,
            });
        }
        let ctx = self.context()?;
        fs::create_dir_all(&self.home)
            .map_err(io_err(format!("create {}", self.home.display())))?;
        if let Some(account) = &ctx.account {
            let real = fs::canonicalize(&self.home)
                .map_err(io_err(format!("resolve {}", self.home.display())))?;
            check_reachable(&real, account)?;
        }
        Ok(ctx)
    }

    fn lock_control(&self) -> Result<File, ClusterError> {
        let path = self.home.join("cluster.lock");
        let file = open_lock_file(&path)?;
        file.lock()
            .map_err(io_err(format!("lock {}", path.display())))?;
        Ok(file)
    }

    /// Caller holds the control lock. Returns true if it started the server.
    fn ensure_running(&self, ctx: &Ctx) -> Result<bool, ClusterError> {
        if !self.is_initialized() {
            self.init(ctx)?;
        }
        match self.status_with(ctx)? {
            Status::Running { .. } => Ok(false),
            _ => self.start(ctx).map(|()| true),
        }
    }

    /// Builds the cluster in a staging directory and renames it into place,
    /// so an interrupted init (even a killed process) never leaves a
    /// half-made `pgdata` that looks initialized.
    fn init(&self, ctx: &Ctx) -> Result<(), ClusterError> {
        let staging = self.home.join("pgdata.init");
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .map_err(io_err(format!("remove {}", staging.display())))?;
        }
        // initdb cannot create it itself when it runs as another account in
        // a home owned by us.
        make_server_dir(&staging, ctx)?;
        let result = self.init_in(&staging, ctx);
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result?;
        let data = self.data_dir();
        fs::rename(&staging, &data).map_err(io_err(format!(
            "move {} to {}",
            staging.display(),
            data.display()
        )))
    }

    fn init_in(&self, dir: &Path, ctx: &Ctx) -> Result<(), ClusterError> {
        let failed = |detail: String| ClusterError::InitFailed {
            dir: self.data_dir(),
            detail,
        };
        let mut initdb = command(ctx, "initdb");
        initdb
            .arg("-D")
            .arg(dir)
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C"]);
        if self.fast_init() {
            initdb.arg("--no-sync");
        }
        let out = run(&mut initdb, "initdb")?;
        if !out.status.success() {
            return Err(failed(format!(
                "initdb {}:\n{}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr), TAIL_LINES)
            )));
        }

        // clue.conf must exist before the include is added: a missing include
        // file is fatal to the server.
        self.write_conf(dir, ctx)?;
        let main_conf = dir.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&main_conf)
            .and_then(|mut f| f.write_all(b"\ninclude 'clue.conf'\n"))
            .map_err(io_err(format!("update {}", main_conf.display())))?;

        // Single-user mode creates the database without starting a server
        // (no socket, no waiting for it to accept connections).
        let mut single = command(ctx, "postgres");
        single
            .arg("--single")
            .arg("-D")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.fast_init() {
            // Matches initdb --no-sync: skip the shutdown checkpoint's fsyncs.
            single.args(["-c", "fsync=off"]);
        }
        single.arg("postgres");
        let mut child = single.spawn().map_err(io_err("run postgres --single"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(format!("CREATE DATABASE {DATABASE};\n").as_bytes())
                .map_err(io_err("send CREATE DATABASE to postgres --single"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(io_err("run postgres --single"))?;
        // A failed statement does not change the exit status in single-user
        // mode, so the error output is checked as well.
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stderr.contains("ERROR:") || stderr.contains("FATAL:") {
            return Err(failed(format!(
                "creating database {DATABASE} failed ({}):\n{}",
                out.status,
                tail(&stderr, TAIL_LINES)
            )));
        }
        Ok(())
    }

    /// Rewritten on every start so a moved or renamed home still points the
    /// server at its own socket directory.
    fn write_conf(&self, data: &Path, ctx: &Ctx) -> Result<(), ClusterError> {
        let mut conf = format!(
            "# Written by clue on every start; edits are overwritten.\n\
             listen_addresses = '{}'\n\
             unix_socket_directories = '{}'\n\
             port = {}\n\
             jit = off\n\
             # The role is named clue, like clue's own schema: without this,\n\
             # the default \"$user\", public path would put user tables there.\n\
             search_path = 'public'\n\
             max_wal_size = '2GB'\n\
             checkpoint_timeout = '15min'\n\
             logging_collector = off\n",
            if self.tcp_port.is_some() {
                "127.0.0.1"
            } else {
                ""
            },
            conf_quote(&self.socket_dir().to_string_lossy()),
            self.port()
        );
        for (name, value) in &self.settings {
            conf.push_str(&format!("{name} = '{}'\n", conf_quote(value)));
        }
        let path = data.join("clue.conf");
        fs::write(&path, conf).map_err(io_err(format!("write {}", path.display())))?;
        chown_to(&path, ctx)
    }

    fn start(&self, ctx: &Ctx) -> Result<(), ClusterError> {
        make_server_dir(&self.socket_dir(), ctx)?;
        make_server_dir(&self.log_dir(), ctx)?;
        self.write_conf(&self.data_dir(), ctx)?;
        let mut cmd = command(ctx, "pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-s", "start"]);
        let out = run(&mut cmd, "pg_ctl start")?;
        if out.status.success() {
            return Ok(());
        }
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        Err(ClusterError::StartFailed {
            detail: format!(
                "pg_ctl {}; {}\nlast lines of {}:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_file().display(),
                tail(&log, TAIL_LINES)
            ),
        })
    }

    fn stop_if_running(&self, ctx: &Ctx) -> Result<bool, ClusterError> {
        if !matches!(self.status_with(ctx)?, Status::Running { .. }) {
            return Ok(false);
        }
        let mut cmd = command(ctx, "pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "60", "-s", "stop"]);
        let out = run(&mut cmd, "pg_ctl stop")?;
        if !out.status.success() {
            return Err(ClusterError::StopFailed {
                detail: format!(
                    "pg_ctl {}: {}",
                    out.status,
                    tail(&String::from_utf8_lossy(&out.stderr), TAIL_LINES)
                ),
            });
        }
        Ok(true)
    }

    fn status_with(&self, ctx: &Ctx) -> Result<Status, ClusterError> {
        if !self.is_initialized() {
            return Ok(Status::NotInitialized);
        }
        let mut cmd = command(ctx, "pg_ctl");
        // C locale keeps the "(PID: n)" text parseable.
        cmd.env("LC_ALL", "C")
            .arg("-D")
            .arg(self.data_dir())
            .arg("status");
        let out = run(&mut cmd, "pg_ctl status")?;
        match out.status.code() {
            Some(0) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let pid = parse_pid(&stdout)
                    .or_else(|| {
                        let pidfile =
                            fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
                        pidfile.lines().next()?.trim().parse().ok()
                    })
                    .ok_or_else(|| ClusterError::StatusFailed {
                        detail: format!("no server process id in pg_ctl output: {}", stdout.trim()),
                    })?;
                Ok(Status::Running { pid })
            }
            Some(3) => Ok(Status::Stopped),
            _ => Err(ClusterError::StatusFailed {
                detail: format!(
                    "pg_ctl status {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            }),
        }
    }
}

/// How often a release looks for other users before leaving the server up.
const PROBE_ATTEMPTS: u32 = 5;

/// A process's registration as a user of the running server.
#[derive(Debug)]
pub struct Lease {
    cluster: Cluster,
    users: Option<File>,
}

impl Lease {
    /// Ends the lease; stops the server if this was the last user and
    /// `clue db start` did not ask to keep it.
    pub fn release(mut self) -> Result<(), ClusterError> {
        match self.users.take() {
            Some(users) => self.finish(users),
            None => Ok(()),
        }
    }

    fn finish(&self, users: File) -> Result<(), ClusterError> {
        let cluster = &self.cluster;
        // Closing the file drops our shared lock before we look for others.
        drop(users);
        let _control = cluster.lock_control()?;
        if cluster.keep_path().exists() {
            return Ok(());
        }
        let path = cluster.users_lock_path();
        let probe = open_lock_file(&path)?;
        // A thread of this process forking a child between our open and
        // close of `users.lock` lends the child our lock until it execs
        // (the descriptor is close-on-exec, the lock belongs to the open
        // file): a moment's wait tells that from a real user.
        for attempt in 0..PROBE_ATTEMPTS {
            match probe.try_lock() {
                // Nobody else holds a shared lock, and none can take one while
                // we hold the control lock: safe to stop.
                Ok(()) => {
                    let ctx = cluster.context()?;
                    cluster.stop_if_running(&ctx)?;
                    return Ok(());
                }
                Err(TryLockError::WouldBlock) if attempt + 1 < PROBE_ATTEMPTS => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => return Ok(()),
                Err(TryLockError::Error(e)) => {
                    return Err(io_err(format!("lock {}", path.display()))(e));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(users) = self.users.take() {
            // Best effort: errors cannot be reported from drop, and the next
            // release will stop the server anyway.
            let _ = self.finish(users);
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File, ClusterError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(format!("open {}", path.display())))
}

/// A server program as a command; under root it runs as the server account
/// (PostgreSQL refuses to run as root). cwd "/" because our own cwd may be
/// unreadable by that account, and every path passed is absolute.
fn command(ctx: &Ctx, program: &str) -> Command {
    let mut cmd = Command::new(ctx.bin.join(program));
    cmd.current_dir("/").stdin(Stdio::null());
    if let Some(account) = &ctx.account {
        cmd.uid(account.uid).gid(account.gid);
    }
    cmd
}

fn run(cmd: &mut Command, what: &str) -> Result<Output, ClusterError> {
    cmd.output().map_err(io_err(format!("run {what}")))
}

/// Creates a directory only the server account may use (0700, chowned).
fn make_server_dir(dir: &Path, ctx: &Ctx) -> Result<(), ClusterError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(format!("create {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("set permissions on {}", dir.display())))?;
    chown_to(dir, ctx)
}

fn chown_to(path: &Path, ctx: &Ctx) -> Result<(), ClusterError> {
    match &ctx.account {
        Some(a) => std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid)).map_err(io_err(
            format!("change owner of {} to {}", path.display(), a.name),
        )),
        None => Ok(()),
    }
}

/// The account the server programs run as, or None to run them as ourselves.
fn server_account(server_user: Option<&str>) -> Result<Option<Account>, ClusterError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    let lookup = |name: &str| {
        User::from_name(name)
            .map_err(|e| io_err(format!("look up user {name}"))(io::Error::from(e)))
    };
    let user = match server_user {
        Some(name) => lookup(name)?.ok_or(ClusterError::UnknownServerUser {
            user: name.to_owned(),
        })?,
        None => match lookup("postgres")? {
            Some(user) => user,
            None => lookup("nobody")?.ok_or_else(|| ClusterError::UnknownServerUser {
                user: "nobody".into(),
            })?,
        },
    };
    Ok(Some(Account {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

/// The server account must be able to traverse every directory down to the
/// home, or initdb fails with an obscure "permission denied". Mirrors the
/// kernel's owner/group/other precedence; std drops supplementary groups, so
/// only the primary group counts.
fn check_reachable(home: &Path, account: &Account) -> Result<(), ClusterError> {
    for dir in home.ancestors() {
        let meta = fs::metadata(dir).map_err(io_err(format!("inspect {}", dir.display())))?;
        let mode = meta.mode();
        let bit = if meta.uid() == account.uid {
            0o100
        } else if meta.gid() == account.gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Err(ClusterError::HomeNotReachable {
                user: account.name.clone(),
                dir: dir.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Finds the directory holding initdb, pg_ctl and postgres.
fn locate_binaries(explicit: Option<PathBuf>) -> Result<PathBuf, ClusterError> {
    if let Some(dir) = explicit {
        let missing = missing_programs(&dir);
        if missing.is_empty() {
            return Ok(dir);
        }
        return Err(ClusterError::BinariesNotFound {
            missing: format!(
                "{} not in {} (from CLUE_PG_BIN)",
                missing.join(", "),
                dir.display()
            ),
        });
    }
    search_binaries().ok_or_else(|| ClusterError::BinariesNotFound {
        missing: "initdb, pg_ctl and postgres are not in `pg_config --bindir`, PATH, \
                  /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin, \
                  /opt/homebrew/opt/postgresql*/bin or /usr/pgsql-*/bin"
            .into(),
    })
}

fn search_binaries() -> Option<PathBuf> {
    let complete = |dir: &Path| missing_programs(dir).is_empty();
    if let Some(dir) = pg_config_bindir()
        && complete(&dir)
    {
        return Some(dir);
    }
    // Resolve symlinks such as /usr/local/bin/pg_ctl to find the real
    // installation, where initdb and postgres live too.
    if let Some(dir) = find_in_path("pg_ctl")
        .and_then(|p| fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        && complete(&dir)
    {
        return Some(dir);
    }
    let mut dirs = versioned_dirs(Path::new("/usr/lib/postgresql"), "");
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs.extend(versioned_dirs(Path::new("/opt/homebrew/opt"), "postgresql"));
    dirs.extend(versioned_dirs(Path::new("/usr"), "pgsql-"));
    dirs.into_iter().find(|d| complete(d))
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = dir.trim();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

/// `parent/<prefix><version>/bin`, highest version first.
fn versioned_dirs(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix(prefix)?;
            Some((version_key(version), entry.path().join("bin")))
        })
        .collect();
    found.sort_by(|a, b| b.cmp(a));
    found.into_iter().map(|(_, dir)| dir).collect()
}

/// "16" → [16], "@9.6" → [9, 6]; no number sorts lowest.
fn version_key(s: &str) -> Vec<u32> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

fn missing_programs(dir: &Path) -> Vec<&'static str> {
    PROGRAMS
        .into_iter()
        .filter(|p| !is_executable(&dir.join(p)))
        .collect()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// Parses "... (PID: 1234)" from `pg_ctl status`.
fn parse_pid(text: &str) -> Option<u32> {
    let rest = &text[text.find("PID:")? + 4..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Quotes a value for postgresql.conf, where both `'` and `\` are special.
fn conf_quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so any
/// path is safe inside the URL's query string.
fn percent_encode(value: &OsStr) -> String {
    let mut out = String::new();
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    /// A unique home under /tmp whose server is stopped and files removed
    /// when the test ends, pass or fail.
    struct TestHome {
        root: PathBuf,
        cluster: Cluster,
    }

    impl TestHome {
        fn new(name: &str) -> TestHome {
            TestHome::nested(name, "home")
        }

        fn nested(name: &str, sub: &str) -> TestHome {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let root = PathBuf::from(format!("/tmp/clue-test-{}-{n}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            let cluster = test_cluster(root.join(sub));
            TestHome { root, cluster }
        }
    }

    impl Drop for TestHome {
        fn drop(&mut self) {
            let _ = self.cluster.stop();
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn test_cluster(home: PathBuf) -> Cluster {
        Cluster {
            fast_init: true,
            ..Cluster::new(home)
        }
    }

    fn psql(cluster: &Cluster, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                &cluster.url(),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn running_pid(cluster: &Cluster) -> u32 {
        match cluster.status().unwrap() {
            Status::Running { pid } => pid,
            other => panic!("expected Running, got {other:?}"),
        }
    }

    /// A test's private cluster may listen on TCP, at its own port, with
    /// settings of its own; the socket and the URL follow the port.
    #[test]
    fn extra_settings_and_a_tcp_port_reach_the_config_and_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster::new(dir.path().join("home"))
            .with_tcp_port(54999)
            .with_setting("wal_level", "logical")
            .with_setting("application_name", "it's");
        fs::create_dir_all(dir.path().join("data")).unwrap();
        let ctx = Ctx {
            bin: PathBuf::new(),
            account: None,
        };
        c.write_conf(&dir.path().join("data"), &ctx).unwrap();
        let conf = fs::read_to_string(dir.path().join("data/clue.conf")).unwrap();
        for line in [
            "listen_addresses = '127.0.0.1'",
            "port = 54999",
            "wal_level = 'logical'",
            "application_name = 'it''s'",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} in {conf}");
        }
        assert!(c.url().ends_with("&port=54999"), "{}", c.url());
        let plain = Cluster::new(dir.path().join("other"));
        assert!(plain.url().ends_with("&port=5432"));
    }

    #[test]
    fn lease_starts_and_release_stops() {
        let t = TestHome::new("lease");
        let c = &t.cluster;
        assert_eq!(c.status().unwrap(), Status::NotInitialized);
        let lease = c.lease().unwrap();
        let pid = running_pid(c);
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        assert!(c.socket_dir().join(".s.PGSQL.5432").exists());
        assert_eq!(
            psql(c, "select current_user || '/' || current_database()"),
            "clue/clue"
        );
        let conf = fs::read_to_string(c.home().join("pgdata/clue.conf")).unwrap();
        assert!(conf.contains("listen_addresses = ''"));
        if let Some(account) = server_account(None).unwrap() {
            for dir in ["pgdata", "run", "log"] {
                let meta = fs::metadata(c.home().join(dir)).unwrap();
                assert_eq!(meta.uid(), account.uid, "{dir}");
                assert_eq!(meta.mode() & 0o777, 0o700, "{dir}");
            }
        }
        lease.release().unwrap();
        assert_eq!(c.status().unwrap(), Status::Stopped);
        assert!(!c.home().join("pgdata.init").exists());
    }

    #[test]
    fn data_persists_across_restart() {
        let t = TestHome::new("persist");
        let c = &t.cluster;
        let lease = c.lease().unwrap();
        psql(c, "create table t (v text); insert into t values ('kept')");
        lease.release().unwrap();
        assert_eq!(c.status().unwrap(), Status::Stopped);
        let lease = c.lease().unwrap();
        assert_eq!(psql(c, "select v from t"), "kept");
        lease.release().unwrap();
    }

    #[test]
    fn start_kept_survives_lease_release() {
        let t = TestHome::new("kept");
        let c = &t.cluster;
        assert!(c.start_kept().unwrap());
        let pid = running_pid(c);
        c.lease().unwrap().release().unwrap();
        assert_eq!(running_pid(c), pid);
        // A dropped (not released) lease must not stop it either.
        drop(c.lease().unwrap());
        assert_eq!(running_pid(c), pid);
        assert!(!c.start_kept().unwrap());
        assert!(c.stop().unwrap());
        assert_eq!(c.status().unwrap(), Status::Stopped);
        assert!(!c.home().join("keep").exists());
        assert!(!c.stop().unwrap());
    }

    #[test]
    fn concurrent_leases_share_one_server() {
        let t = TestHome::new("concurrent");
        let barrier = Arc::new(Barrier::new(2));
        let pids: Vec<u32> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let barrier = Arc::clone(&barrier);
                    // Separate Cluster values, as separate processes would have.
                    let c = test_cluster(t.cluster.home().to_path_buf());
                    s.spawn(move || {
                        let lease = c.lease().unwrap();
                        assert_eq!(psql(&c, "select 1"), "1");
                        let pid = running_pid(&c);
                        // Both hold leases before either releases.
                        barrier.wait();
                        lease.release().unwrap();
                        pid
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(pids[0], pids[1]);
        let data = t.cluster.home().join("pgdata");
        assert!(data.join("PG_VERSION").is_file());
        let conf = fs::read_to_string(data.join("postgresql.conf")).unwrap();
        assert_eq!(conf.matches("include 'clue.conf'").count(), 1);
        assert_eq!(t.cluster.status().unwrap(), Status::Stopped);
    }

    #[test]
    fn empty_pg_bin_reports_missing_binaries() {
        let t = TestHome::new("nobin");
        let empty = t.root.join("empty-bin");
        fs::create_dir_all(&empty).unwrap();
        let c = Cluster {
            pg_bin: Some(empty.clone()),
            ..Cluster::new(t.root.join("home"))
        };
        let err = c.lease().unwrap_err();
        assert!(
            matches!(err, ClusterError::BinariesNotFound { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("CLUE_DATABASE_URL"), "{msg}");
        assert!(msg.contains("initdb, pg_ctl, postgres not in"), "{msg}");
        assert!(msg.contains(&empty.display().to_string()), "{msg}");
    }

    #[test]
    fn failed_initdb_leaves_no_data_dir() {
        let t = TestHome::new("badinit");
        let bin = t.root.join("bin");
        fs::create_dir_all(&bin).unwrap();
        let real = locate_binaries(None).unwrap();
        for program in ["pg_ctl", "postgres"] {
            std::os::unix::fs::symlink(real.join(program), bin.join(program)).unwrap();
        }
        // A fake initdb that gets halfway: leaves a file, then fails.
        let script =
            "#!/bin/sh\ntouch \"$2/PG_VERSION\"\necho 'initdb: error: disk on fire' >&2\nexit 1\n";
        fs::write(bin.join("initdb"), script).unwrap();
        fs::set_permissions(bin.join("initdb"), fs::Permissions::from_mode(0o755)).unwrap();
        let c = Cluster {
            pg_bin: Some(bin),
            ..test_cluster(t.root.join("home"))
        };
        let err = c.lease().unwrap_err();
        assert!(matches!(err, ClusterError::InitFailed { .. }), "{err:?}");
        assert!(err.to_string().contains("disk on fire"), "{err}");
        assert!(!c.home().join("pgdata").exists());
        assert!(!c.home().join("pgdata.init").exists());
        assert_eq!(c.status().unwrap(), Status::NotInitialized);
    }

    #[test]
    fn failed_start_quotes_the_log() {
        let t = TestHome::new("badstart");
        let c = &t.cluster;
        c.lease().unwrap().release().unwrap();
        let conf = c.home().join("pgdata/postgresql.conf");
        let mut f = OpenOptions::new().append(true).open(conf).unwrap();
        f.write_all(b"\nshared_buffers = 'lots'\n").unwrap();
        let err = c.lease().unwrap_err();
        assert!(matches!(err, ClusterError::StartFailed { .. }), "{err:?}");
        assert!(err.to_string().contains("shared_buffers"), "{err}");
        assert_eq!(c.status().unwrap(), Status::Stopped);
    }

    #[test]
    fn long_home_reports_socket_path() {
        let t = TestHome::nested("long", &"x".repeat(100));
        let err = t.cluster.lease().unwrap_err();
        match &err {
            ClusterError::SocketPathTooLong { len, max, .. } => {
                assert!(*len > 107);
                assert_eq!(*max, 107);
            }
            other => panic!("expected SocketPathTooLong, got {other:?}"),
        }
        assert!(err.to_string().contains("shorter"), "{err}");
        // Nothing was created for a home that can never work.
        assert!(!t.cluster.home().exists());
    }

    #[test]
    fn unreachable_home_is_reported_as_root() {
        if !geteuid().is_root() {
            return; // Only root switches to a server account.
        }
        let t = TestHome::nested("locked", "locked/home");
        let locked = t.root.join("locked");
        fs::create_dir_all(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
        let err = t.cluster.lease().unwrap_err();
        match &err {
            ClusterError::HomeNotReachable { dir, .. } => assert_eq!(dir, &locked),
            other => panic!("expected HomeNotReachable, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&locked.display().to_string()), "{msg}");
        assert!(msg.contains("CLUE_HOME=/var/tmp"), "{msg}");
    }

    #[test]
    fn url_and_quoting() {
        let c = Cluster::new("/tmp/a b/.clue");
        assert_eq!(
            c.url(),
            "postgresql://clue@/clue?host=%2Ftmp%2Fa%20b%2F.clue%2Frun&port=5432"
        );
        assert_eq!(c.socket_dir(), Path::new("/tmp/a b/.clue/run"));
        assert!(Cluster::new("rel").home().is_absolute());
        assert_eq!(conf_quote("it's a\\b"), "it''s a\\\\b");
        assert_eq!(
            parse_pid("pg_ctl: server is running (PID: 4242)\n/usr/bin/postgres"),
            Some(4242)
        );
        assert_eq!(version_key("@9.6"), vec![9, 6]);
    }
}
