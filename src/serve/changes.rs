//! Notified writes as a live stream (the dashboard's, or any client's):
//! every write a server hears of, and a `Resync` whenever notices may have
//! been missed (the listener reconnected, or a reader fell behind), after
//! which a client refetches what it shows.
//!
//! Architecture Invariant: a write's notice reaches the stream only after
//! its transaction committed (it comes from `store::notify`), so a client
//! refetching on it reads the write.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::notify::{WriteListener, WriteNotice};

/// Notices a slow reader may fall behind by before it is told to resync.
const BACKLOG: usize = 1024;

/// What a stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Write(WriteNotice),
    /// Notices may have been missed: refetch everything shown.
    Resync,
}

/// The fan-out of notices to every open stream.
pub struct Changes {
    sender: broadcast::Sender<Change>,
}

impl Changes {
    pub fn new() -> Arc<Changes> {
        Arc::new(Changes {
            sender: broadcast::channel(BACKLOG).0,
        })
    }

    /// A new reader of the changes from now on.
    pub fn subscribe(&self) -> Reader {
        Reader {
            receiver: self.sender.subscribe(),
        }
    }
}

impl WriteListener for Changes {
    fn on_write(&self, notice: WriteNotice) {
        // No reader is not an error: nobody is looking.
        let _ = self.sender.send(Change::Write(notice));
    }

    fn set_listening(&self, _up: bool) {
        // Down: notices may be lost from now; up again: some were.
        let _ = self.sender.send(Change::Resync);
    }
}

/// One stream's reader.
pub struct Reader {
    receiver: broadcast::Receiver<Change>,
}

impl Reader {
    /// The next change; a reader that fell behind gets `Resync` (and goes
    /// on from the oldest change still kept). `None` once the server's
    /// listener is gone.
    pub async fn next(&mut self) -> Option<Change> {
        match self.receiver.recv().await {
            Ok(change) => Some(change),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::DayRange;
    use chrono::NaiveDate;

    fn notice(i: u32) -> WriteNotice {
        let day = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + chrono::Days::new(u64::from(i));
        WriteNotice {
            dataset: "sales".into(),
            days: DayRange::new(day, day),
        }
    }

    #[tokio::test]
    async fn readers_get_every_write_and_a_resync_when_behind_or_reconnected() {
        let changes = Changes::new();
        let mut reader = changes.subscribe();
        changes.on_write(notice(0));
        changes.set_listening(false);
        assert_eq!(reader.next().await, Some(Change::Write(notice(0))));
        assert_eq!(reader.next().await, Some(Change::Resync));
        let mut slow = changes.subscribe();
        for i in 0..(BACKLOG as u32 + 5) {
            changes.on_write(notice(i));
        }
        assert_eq!(slow.next().await, Some(Change::Resync));
        assert_eq!(slow.next().await, Some(Change::Write(notice(5))));
    }
}
