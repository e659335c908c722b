//! The one idempotency ledger (`clue.idempotency`): every idempotent write
//! claims its key `(scope, key)` with a fingerprint of its payload, in the
//! transaction of the rows the key guards. A repeat of a committed key is a
//! replay (same fingerprint) or a conflict (another fingerprint); an entry
//! past its `expires_at` counts as absent.
//!
//! Architecture Invariant: the claim is written in the same transaction as
//! the rows it guards, so both commit or neither does; under concurrent
//! duplicates exactly one claim succeeds (the table's primary key, not an
//! advisory lock or a read before the write).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::SinkExt;
use postgres_types::Type;
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;
use tokio_postgres::error::SqlState;

use crate::pg::copy::{COPY_HEADER, COPY_TRAILER, put_row};

use crate::error::{Classify, ErrorKind};

/// The longest key the ledger stores, in bytes (the table checks it too).
pub const MAX_KEY_BYTES: usize = 200;

/// What claiming a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key is this transaction's now: write the rows it guards.
    New,
    /// The key was committed before with the same fingerprint, at `created_at`:
    /// the write already happened.
    Replay { created_at: DateTime<Utc> },
    /// The key was committed before with another fingerprint, at `created_at`:
    /// a different payload under a used key.
    Conflict { created_at: DateTime<Utc> },
}

/// A key the ledger refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {bytes} bytes long, longer than {MAX_KEY_BYTES}")]
    TooLong { bytes: usize },
}

impl Classify for KeyError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

/// Checks a client's key before it is claimed: not empty, at most
/// [`MAX_KEY_BYTES`] bytes. (The table refuses such keys too, as a check
/// violation, which `error::classify_pg` calls bad input.)
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        Err(KeyError::Empty)
    } else if key.len() > MAX_KEY_BYTES {
        Err(KeyError::TooLong { bytes: key.len() })
    } else {
        Ok(())
    }
}

/// The fingerprint of a payload: its SHA-256 as lowercase hex.
pub fn fingerprint(payload: &[u8]) -> String {
    hex::encode(Sha256::digest(payload))
}

/// Claims `(scope, key)` for the payload with `fingerprint`, inside `tx`,
/// the transaction that writes the rows the key guards. With a `ttl` the
/// entry expires that long after the transaction's start; with `None` it
/// never does (ids that are the row's identity).
///
/// A new key is one round trip (an `INSERT … ON CONFLICT DO NOTHING`). When
/// the key is there, its entry is read: a live entry is a `Replay` or a
/// `Conflict` (with the entry's `created_at`), an expired one is replaced
/// (fingerprint, `created_at` and `expires_at`) by an `UPDATE` that only
/// matches while it is still expired, and the claim is `New`.
///
/// Concurrency, PostgreSQL's own (at READ COMMITTED, the default): a
/// transaction claiming a key another open transaction has claimed waits
/// for that transaction to end (no lock timeout; a claim's transaction is
/// expected to last milliseconds). If the other commits, this claim is a
/// `Replay` or a `Conflict`; if it rolls back, this claim is `New`. So of
/// concurrent duplicates exactly one writes. A replay takes no lock. At
/// REPEATABLE READ or SERIALIZABLE a key claimed by a transaction that
/// committed after this one's snapshot is a serialization failure (retry).
///
/// Keys and scopes are bound parameters; check a client's key with
/// [`check_key`] first to report it as the client's mistake.
pub async fn claim(
    tx: &impl GenericClient,
    scope: &str,
    key: &str,
    fingerprint: &str,
    ttl: Option<Duration>,
) -> Result<Claim, tokio_postgres::Error> {
    let ttl_secs = ttl.map(|t| t.as_secs_f64());
    // Each turn either decides or follows a change another transaction
    // committed to the entry meanwhile (purged, or replaced after expiry).
    loop {
        let inserted = tx
            .execute(
                "INSERT INTO clue.idempotency (scope, key, fingerprint, expires_at)
                 VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8))
                 ON CONFLICT (scope, key) DO NOTHING",
                &[&scope, &key, &fingerprint, &ttl_secs],
            )
            .await?;
        if inserted == 1 {
            return Ok(Claim::New);
        }
        let Some(row) = tx
            .query_opt(
                "SELECT fingerprint, created_at, coalesce(expires_at < now(), false)
                   FROM clue.idempotency WHERE scope = $1 AND key = $2",
                &[&scope, &key],
            )
            .await?
        else {
            continue; // purged since the insert: claim again
        };
        let (existing, created_at, expired): (String, DateTime<Utc>, bool) =
            (row.get(0), row.get(1), row.get(2));
        if !expired {
            return Ok(if existing == fingerprint {
                Claim::Replay { created_at }
            } else {
                Claim::Conflict { created_at }
            });
        }
        let replaced = tx
            .execute(
                "UPDATE clue.idempotency
                    SET fingerprint = $3, created_at = now(),
                        expires_at = now() + make_interval(secs => $4::float8)
                  WHERE scope = $1 AND key = $2 AND expires_at < now()",
                &[&scope, &key, &fingerprint, &ttl_secs],
            )
            .await?;
        if replaced == 1 {
            return Ok(Claim::New);
        }
        // Another transaction replaced (or purged) the expired entry first.
    }
}

/// Claims many new keys of one scope in one statement; returns the keys it
/// inserted. A key not returned is there already (or twice in `keys`):
/// settle it with [`claim`], which tells a replay, a conflict or an expired
/// entry apart. Waits, like [`claim`], for open transactions holding a key.
pub async fn claim_new(
    tx: &impl GenericClient,
    scope: &str,
    keys: &[&str],
    fingerprints: &[&str],
    ttl: Option<Duration>,
) -> Result<std::collections::HashSet<String>, tokio_postgres::Error> {
    let ttl_secs = ttl.map(|t| t.as_secs_f64());
    let rows = tx
        .query(
            "INSERT INTO clue.idempotency (scope, key, fingerprint, expires_at)
             SELECT $1, k, f, now() + make_interval(secs => $4::float8)
               FROM unnest($2::text[], $3::text[]) AS c(k, f)
             ON CONFLICT (scope, key) DO NOTHING
             RETURNING key",
            &[&scope, &keys, &fingerprints, &ttl_secs],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Claims many keys of one scope, all new, with one binary COPY (a bulk
/// write, several times cheaper than [`claim_new`]'s checked insert).
/// Returns `false`, having claimed none, when any key is there already (or
/// twice in `keys`): claim them with [`claim_new`] then. Runs in a
/// savepoint of `tx`, so the refused COPY leaves `tx` usable; waits, like
/// [`claim`], for open transactions holding a key.
pub async fn claim_copy(
    tx: &tokio_postgres::Transaction<'_>,
    scope: &str,
    keys: &[&str],
    fingerprints: &[&str],
    ttl: Option<Duration>,
) -> Result<bool, tokio_postgres::Error> {
    // The expiry is the transaction's start plus the ttl, as `claim` has it.
    let expires_at: Option<DateTime<Utc>> = match ttl {
        Some(t) => Some(
            tx.query_one(
                "SELECT now() + make_interval(secs => $1::float8)",
                &[&t.as_secs_f64()],
            )
            .await?
            .get(0),
        ),
        None => None,
    };
    let mut rows = BytesMut::with_capacity(
        COPY_HEADER.len()
            + keys
                .iter()
                .map(|k| k.len() + scope.len() + 100)
                .sum::<usize>(),
    );
    rows.put_slice(COPY_HEADER);
    // In key order: neighbours in the index go in together.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by_key(|&i| keys[i]);
    for (key, fingerprint) in order.iter().map(|&i| (&keys[i], &fingerprints[i])) {
        put_row(
            &mut rows,
            &[
                (&scope, Type::TEXT),
                (key, Type::TEXT),
                (fingerprint, Type::TEXT),
                (&expires_at, Type::TIMESTAMPTZ),
            ],
        );
    }
    rows.put_slice(COPY_TRAILER);
    tx.batch_execute("SAVEPOINT clue_claim_copy").await?;
    let copied = async {
        let sink = tx
            .copy_in::<_, Bytes>(
                "COPY clue.idempotency (scope, key, fingerprint, expires_at) FROM STDIN (FORMAT binary)",
            )
            .await?;
        let mut sink = Box::pin(sink);
        sink.send(rows.freeze()).await?;
        sink.as_mut().finish().await
    }
    .await;
    match copied {
        Ok(_) => {
            tx.batch_execute("RELEASE SAVEPOINT clue_claim_copy")
                .await?;
            Ok(true)
        }
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT clue_claim_copy")
                .await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Keeps the answer to replay for a key just claimed in `tx`.
pub async fn keep_response(
    tx: &impl GenericClient,
    scope: &str,
    key: &str,
    response: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE clue.idempotency SET response = $3::text::jsonb WHERE scope = $1 AND key = $2",
        &[&scope, &key, &response],
    )
    .await?;
    Ok(())
}

/// A committed, live key's fingerprint and kept answer, if any.
pub async fn committed(
    client: &impl GenericClient,
    scope: &str,
    key: &str,
) -> Result<Option<(String, Option<String>)>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT fingerprint, response::text FROM clue.idempotency
              WHERE scope = $1 AND key = $2 AND coalesce(expires_at >= now(), true)",
            &[&scope, &key],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Deletes the expired entries; returns how many.
pub async fn purge_expired(client: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
    client
        .execute("DELETE FROM clue.idempotency WHERE expires_at < now()", &[])
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_hex_sha256() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(fingerprint(b"abc"), fingerprint(b"abd"));
    }

    #[test]
    fn keys_are_not_empty_and_at_most_200_bytes() {
        assert_eq!(check_key(""), Err(KeyError::Empty));
        assert_eq!(check_key("a"), Ok(()));
        assert_eq!(check_key(&"k".repeat(200)), Ok(()));
        assert_eq!(
            check_key(&"k".repeat(201)),
            Err(KeyError::TooLong { bytes: 201 })
        );
        // Bytes, not characters: 100 two-byte characters fit, 101 do not.
        assert_eq!(check_key(&"é".repeat(100)), Ok(()));
        assert_eq!(
            check_key(&"é".repeat(101)),
            Err(KeyError::TooLong { bytes: 202 })
        );
        assert_eq!(
            check_key("").unwrap_err().kind(),
            ErrorKind::BadInput,
            "a refused key is the client's mistake"
        );
        assert_eq!(
            KeyError::TooLong { bytes: 201 }.to_string(),
            "the key is 201 bytes long, longer than 200"
        );
    }
}
