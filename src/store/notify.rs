//! Write notifications: every write into a dataset's table tells, in its
//! transaction, which days it touched (`clue_writes`); servers listen and
//! drop what the write made stale.
//!
//! Architecture Invariant: [`notify_write`] is the one writer of the
//! channel, and every load into a dataset's table and every rollup rebuild
//! calls it inside its transaction, so the notice arrives exactly when the
//! write becomes visible.

use std::sync::Arc;

use chrono::NaiveDate;

use crate::domain::time::DayRange;

/// A notified write: the dataset and the days it touched (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteNotice {
    pub dataset: String,
    pub days: Option<DayRange>,
}

impl WriteNotice {
    /// The channel payload: `dataset lo hi`, or `dataset *`.
    pub fn payload(&self) -> String {
        match self.days {
            Some(r) => format!("{} {} {}", self.dataset, r.first, r.last),
            None => format!("{} *", self.dataset),
        }
    }

    /// Reads a payload; anything unreadable means "anywhere in the dataset".
    pub fn parse(payload: &str) -> WriteNotice {
        let mut parts = payload.split_whitespace();
        let dataset = parts.next().unwrap_or("").to_owned();
        let lo = parts.next().and_then(|s| s.parse::<NaiveDate>().ok());
        let hi = parts.next().and_then(|s| s.parse::<NaiveDate>().ok());
        let days = match (lo, hi) {
            (Some(lo), Some(hi)) => DayRange::new(lo, hi),
            _ => None,
        };
        WriteNotice { dataset, days }
    }
}

/// Tells every listener, when `tx` commits, that `dataset` changed over
/// `days` (or anywhere, with `None`).
pub async fn notify_write(
    tx: &tokio_postgres::Transaction<'_>,
    dataset: &str,
    days: Option<DayRange>,
) -> Result<(), tokio_postgres::Error> {
    let notice = WriteNotice {
        dataset: dataset.to_owned(),
        days,
    };
    tx.execute("SELECT pg_notify('clue_writes', $1)", &[&notice.payload()])
        .await?;
    Ok(())
}

/// What hears the notices (the answer cache).
pub trait WriteListener: Send + Sync + 'static {
    fn on_write(&self, notice: WriteNotice);
    /// The listener is up (notices will arrive) or down (they may be lost).
    fn set_listening(&self, up: bool);
}

/// LISTENs on `clue_writes` over a dedicated connection, feeding
/// `listener`; reconnects (after telling it it is down) when the
/// connection drops.
pub fn spawn_listener<L: WriteListener>(
    config: tokio_postgres::Config,
    listener: Arc<L>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = listen_once(&config, &*listener).await;
            listener.set_listening(false);
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    })
}

async fn listen_once<L: WriteListener>(
    config: &tokio_postgres::Config,
    listener: &L,
) -> Result<(), tokio_postgres::Error> {
    use futures_util::StreamExt;
    let (client, mut connection) = config.connect(tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let forward = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(message) = stream.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client.batch_execute("LISTEN clue_writes").await?;
    listener.set_listening(true);
    while let Some(payload) = rx.recv().await {
        listener.on_write(WriteNotice::parse(&payload));
    }
    forward.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let n = WriteNotice {
            dataset: "sales".into(),
            days: DayRange::new(d("2024-03-15"), d("2024-04-02")),
        };
        assert_eq!(n.payload(), "sales 2024-03-15 2024-04-02");
        assert_eq!(WriteNotice::parse(&n.payload()), n);
        let any = WriteNotice::parse("sales *");
        assert_eq!((any.dataset.as_str(), any.days), ("sales", None));
        assert_eq!(WriteNotice::parse("sales 2024-05-01 2024-04-01").days, None);
    }
}
