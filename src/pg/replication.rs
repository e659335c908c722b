//! Logical replication from a source PostgreSQL (the `pgoutput` plugin),
//! spoken by the `pg_walstream` crate (mainline `tokio-postgres` has no
//! replication protocol) and seen by the rest of clue only as [`Change`]s.
//!
//! A [`Stream`] runs the replication connection on a task of its own, so it
//! keeps answering the server's keepalives while the consumer writes a batch;
//! the consumer reports what it has made durable with [`Stream::confirm`],
//! and the task passes that on as the slot's confirmed position.
//!
//! Architecture Invariant: no type of `pg_walstream` leaves this file; a
//! position is confirmed only after the consumer said it is durable.

use std::sync::Arc;

use pg_walstream::{
    CancellationToken, EventType, LogicalReplicationStream, ReplicationSlotOptions,
    ReplicationStreamConfig, RowData, SharedLsnFeedback, StreamingMode,
};
use tokio::sync::mpsc;
use tokio_postgres::config::{Host, SslMode};

/// Changes read ahead of the consumer: enough to keep the connection busy
/// while a batch is written, bounded so a burst cannot take all memory.
const READ_AHEAD: usize = 65_536;

/// How often, at most, progress is confirmed to the server while changes
/// flow (when idle, it is confirmed at the server's keepalives).
const FEEDBACK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The columns of a replicated row, as text (`None` for NULL or a value the
/// server did not send, such as a non-key column of a deleted row without
/// `REPLICA IDENTITY FULL`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, Option<String>)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A column as an integer, when it is one.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|v| v.parse().ok())
    }

    fn of(row: &RowData) -> Fields {
        Fields(
            row.iter()
                .map(|(name, value)| (name.to_string(), value.as_str().map(str::to_owned)))
                .collect(),
        )
    }
}

/// One replicated change, in commit order; a transaction's rows come
/// between its `Begin` and its `Commit`, whole (nothing is streamed before
/// it commits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Begin {
        xid: u32,
    },
    /// An inserted (`old` empty), updated or deleted (`new` empty) row.
    Row {
        schema: String,
        table: String,
        old: Option<Fields>,
        new: Option<Fields>,
    },
    /// Tables emptied, by unqualified name.
    Truncate {
        tables: Vec<String>,
    },
    /// The end of a transaction: confirming `end_lsn` acknowledges it.
    Commit {
        end_lsn: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(
        "change data capture connects over TCP, and the source is a Unix socket directory ({0}): give its host name or address"
    )]
    UnixSocket(String),
    #[error("the replication slot {0} exists already, so it exported no snapshot to copy from")]
    SlotExists(String),
    #[error("{0}")]
    Stream(String),
}

fn stream_error(e: pg_walstream::ReplicationError) -> ReplicationError {
    ReplicationError::Stream(e.to_string())
}

/// A replication connection, before streaming starts.
pub struct Opening {
    stream: LogicalReplicationStream,
    slot: String,
}

impl Opening {
    /// Connects for replication of `publication` through `slot`.
    pub async fn connect(
        config: &tokio_postgres::Config,
        slot: &str,
        publication: &str,
    ) -> Result<Opening, ReplicationError> {
        let config_of_stream = ReplicationStreamConfig::builder(slot, publication)
            // Protocol 2 without streaming: a transaction arrives once it
            // has committed, whole.
            .with_protocol_version(2)
            .with_streaming_mode(StreamingMode::Off)
            .with_feedback_interval(FEEDBACK_INTERVAL)
            .with_slot_options(ReplicationSlotOptions {
                snapshot: Some("export".to_owned()),
                ..Default::default()
            });
        let stream = LogicalReplicationStream::new(&conninfo(config)?, config_of_stream)
            .await
            .map_err(stream_error)?;
        Ok(Opening {
            stream,
            slot: slot.to_owned(),
        })
    }

    /// Creates the slot, which must not exist, and returns the name of the
    /// snapshot it exported: a transaction that imports it (`SET
    /// TRANSACTION SNAPSHOT`) sees exactly what the slot's first change
    /// follows. The name is valid until [`Opening::start`].
    pub async fn create_slot(&mut self) -> Result<String, ReplicationError> {
        self.stream
            .ensure_replication_slot()
            .await
            .map_err(stream_error)?;
        self.stream
            .exported_snapshot_name()
            .map(str::to_owned)
            .ok_or_else(|| ReplicationError::SlotExists(self.slot.clone()))
    }

    /// Starts streaming the changes committed after `from` (the server
    /// starts at the slot's confirmed position if that is later).
    pub async fn start(mut self, from: u64) -> Result<Stream, ReplicationError> {
        self.stream.start(Some(from)).await.map_err(stream_error)?;
        let feedback = self.stream.shared_lsn_feedback.clone();
        let cancel = CancellationToken::new();
        let (sender, changes) = mpsc::channel(READ_AHEAD);
        let task = tokio::spawn(read(self.stream, sender, cancel.clone()));
        Ok(Stream {
            changes,
            feedback,
            cancel,
            task,
        })
    }
}

/// A started replication stream.
pub struct Stream {
    changes: mpsc::Receiver<Result<Change, ReplicationError>>,
    feedback: Arc<SharedLsnFeedback>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Stream {
    /// The next change; `None` once the stream has ended after an error
    /// (which came before it).
    pub async fn next(&mut self) -> Option<Result<Change, ReplicationError>> {
        self.changes.recv().await
    }

    /// The next change if one has arrived already.
    pub fn try_next(&mut self) -> Option<Result<Change, ReplicationError>> {
        self.changes.try_recv().ok()
    }

    /// Everything up to `lsn` is durable: the server may forget it.
    pub fn confirm(&self, lsn: u64) {
        self.feedback.update_flushed_lsn(lsn);
        self.feedback.update_applied_lsn(lsn);
    }

    /// Stops reading and tells the server the last confirmed position.
    pub async fn close(self) {
        self.cancel.cancel();
        drop(self.changes);
        let _ = self.task.await;
    }
}

/// The replication connection's task: changes to the consumer, progress to
/// the server.
async fn read(
    mut stream: LogicalReplicationStream,
    sender: mpsc::Sender<Result<Change, ReplicationError>>,
    cancel: CancellationToken,
) {
    loop {
        match stream.next_event(&cancel).await {
            Ok(event) => {
                if let Some(change) = change_of(event.event_type)
                    && sender.send(Ok(change)).await.is_err()
                {
                    break;
                }
                stream.maybe_send_feedback().await;
            }
            Err(e) if e.is_cancelled() => break,
            Err(e) => {
                let _ = sender.send(Err(stream_error(e))).await;
                return;
            }
        }
    }
    // Sends the last confirmed position.
    let _ = stream.stop().await;
}

fn change_of(event: EventType) -> Option<Change> {
    Some(match event {
        EventType::Begin { transaction_id, .. } => Change::Begin {
            xid: transaction_id,
        },
        EventType::Commit { end_lsn, .. } => Change::Commit {
            end_lsn: end_lsn.value(),
        },
        EventType::Insert {
            schema,
            table,
            data,
            ..
        } => Change::Row {
            schema: schema.to_string(),
            table: table.to_string(),
            old: None,
            new: Some(Fields::of(&data)),
        },
        EventType::Update {
            schema,
            table,
            old_data,
            new_data,
            ..
        } => Change::Row {
            schema: schema.to_string(),
            table: table.to_string(),
            old: old_data.as_ref().map(Fields::of),
            new: Some(Fields::of(&new_data)),
        },
        EventType::Delete {
            schema,
            table,
            old_data,
            ..
        } => Change::Row {
            schema: schema.to_string(),
            table: table.to_string(),
            old: Some(Fields::of(&old_data)),
            new: None,
        },
        EventType::Truncate { tables, .. } => Change::Truncate {
            tables: tables
                .iter()
                .map(|t| {
                    t.rsplit('.')
                        .next()
                        .unwrap_or(t)
                        .trim_matches('"')
                        .to_owned()
                })
                .collect(),
        },
        _ => return None,
    })
}

/// A libpq key/value connection string for the replication connection,
/// from the source's settings.
fn conninfo(config: &tokio_postgres::Config) -> Result<String, ReplicationError> {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => return Err(ReplicationError::UnixSocket(p.display().to_string())),
        None => "localhost".to_owned(),
    };
    let mut parts = vec![
        ("host", host),
        (
            "port",
            config
                .get_ports()
                .first()
                .copied()
                .unwrap_or(5432)
                .to_string(),
        ),
        ("replication", "database".to_owned()),
        (
            "sslmode",
            match config.get_ssl_mode() {
                SslMode::Disable => "disable",
                SslMode::Require => "require",
                _ => "prefer",
            }
            .to_owned(),
        ),
    ];
    if let Some(user) = config.get_user() {
        parts.push(("user", user.to_owned()));
    }
    if let Some(db) = config.get_dbname() {
        parts.push(("dbname", db.to_owned()));
    }
    if let Some(password) = config.get_password() {
        parts.push(("password", String::from_utf8_lossy(password).into_owned()));
    }
    if let Some(timeout) = config.get_connect_timeout() {
        parts.push(("connect_timeout", timeout.as_secs().max(1).to_string()));
    }
    Ok(parts
        .into_iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expect: &str) {
        let config: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(conninfo(&config).unwrap(), expect, "{url}");
    }

    #[test]
    fn the_connection_string_quotes_every_value() {
        check(
            "postgresql://ana:it's%5Cme@db.example:6543/shop?sslmode=disable",
            "host='db.example' port='6543' replication='database' sslmode='disable' user='ana' dbname='shop' password='it\\'s\\\\me'",
        );
        check(
            "host=10.0.0.1 user=u dbname=d connect_timeout=5",
            "host='10.0.0.1' port='5432' replication='database' sslmode='prefer' user='u' dbname='d' connect_timeout='5'",
        );
        let socket: tokio_postgres::Config = "host=/var/run/postgresql user=u".parse().unwrap();
        assert!(matches!(
            conninfo(&socket),
            Err(ReplicationError::UnixSocket(p)) if p == "/var/run/postgresql"
        ));
    }

    #[test]
    fn fields_read_text_and_integers() {
        let fields = Fields(vec![
            ("order_id".into(), Some("42".into())),
            ("status".into(), Some("PENDING".into())),
            ("customer_id".into(), None),
        ]);
        assert_eq!(fields.int("order_id"), Some(42));
        assert_eq!(fields.get("status"), Some("PENDING"));
        assert_eq!(fields.int("status"), None);
        assert_eq!(fields.int("customer_id"), None);
        assert_eq!(fields.int("missing"), None);
    }
}
