//! The idempotency ledger (`store::ledger`) against a real server: new,
//! replay and conflict; rollback; expiry and purging; scopes; and concurrent
//! duplicates, each on its own connection, of which exactly one writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clue::error::{ErrorKind, classify_pg};
use clue::store::ledger::{self, Claim, fingerprint};
use tokio::sync::{Barrier, Mutex};

use crate::helpers::TestDb;

const HOUR: Option<Duration> = Some(Duration::from_secs(3600));

/// The two 32-connection tests take turns, so together with the rest of the
/// suite they stay well under the server's `max_connections`.
static MANY_CONNECTIONS: Mutex<()> = Mutex::const_new(());

/// Claims `(scope, key)` in a transaction of its own on `client` and commits it.
async fn claim_committed(
    client: &mut tokio_postgres::Client,
    scope: &str,
    key: &str,
    fp: &str,
    ttl: Option<Duration>,
) -> Claim {
    let tx = client.transaction().await.unwrap();
    let claim = ledger::claim(&tx, scope, key, fp, ttl).await.unwrap();
    tx.commit().await.unwrap();
    claim
}

/// The ledger's entry for `(scope, key)`: fingerprint, created_at, expires_at.
async fn entry(
    db: &TestDb,
    scope: &str,
    key: &str,
) -> Option<(String, DateTime<Utc>, Option<DateTime<Utc>>)> {
    db.client()
        .await
        .query_opt(
            "SELECT fingerprint, created_at, expires_at FROM clue.idempotency
              WHERE scope = $1 AND key = $2",
            &[&scope, &key],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

#[tokio::test]
async fn a_key_is_new_then_a_replay_then_a_conflict() {
    let db = TestDb::new().await;
    let database = db.open().await;
    let mut client = database.client().await.unwrap();
    let (a, b) = (fingerprint(b"payload a"), fingerprint(b"payload b"));

    let tx = client.transaction().await.unwrap();
    let started: DateTime<Utc> = tx.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let first = ledger::claim(&*tx, "learning_log", "req-1", &a, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(first, Claim::New);
    let (stored, created_at, expires_at) = entry(&db, "learning_log", "req-1").await.unwrap();
    assert_eq!(stored, a);
    assert_eq!(
        created_at, started,
        "created at the claiming transaction's start"
    );
    assert_eq!(expires_at, None, "no ttl: never expires");

    let tx = client.transaction().await.unwrap();
    let replay = ledger::claim(&*tx, "learning_log", "req-1", &a, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        replay,
        Claim::Replay {
            created_at: started
        }
    );

    let tx = client.transaction().await.unwrap();
    let conflict = ledger::claim(&*tx, "learning_log", "req-1", &b, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        conflict,
        Claim::Conflict {
            created_at: started
        }
    );
    assert_eq!(
        entry(&db, "learning_log", "req-1").await.unwrap().0,
        a,
        "a conflict changes nothing"
    );
    let count: i64 = db.value("SELECT count(*) FROM clue.idempotency").await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_claim_that_rolls_back_leaves_nothing() {
    let db = TestDb::new().await;
    let _database = db.open().await;
    let mut client = db.client().await;
    let fp = fingerprint(b"order 7");

    let tx = client.transaction().await.unwrap();
    let claim = ledger::claim(&tx, "sales", "7", &fp, None).await.unwrap();
    assert_eq!(claim, Claim::New);
    tx.rollback().await.unwrap();
    assert_eq!(entry(&db, "sales", "7").await, None);

    assert_eq!(
        claim_committed(&mut client, "sales", "7", &fp, None).await,
        Claim::New
    );
    assert_eq!(entry(&db, "sales", "7").await.unwrap().0, fp);
}

#[tokio::test]
async fn an_expired_entry_is_replaced_and_purged() {
    let db = TestDb::new().await;
    let _database = db.open().await;
    let mut client = db.client().await;
    let (old, new) = (fingerprint(b"old"), fingerprint(b"new"));

    assert_eq!(
        claim_committed(&mut client, "api", "k", &old, HOUR).await,
        Claim::New
    );
    let (_, created_at, expires_at) = entry(&db, "api", "k").await.unwrap();
    assert_eq!(expires_at, Some(created_at + chrono::Duration::hours(1)));
    // Not expired yet: another payload under the key is a conflict.
    assert_eq!(
        claim_committed(&mut client, "api", "k", &new, HOUR).await,
        Claim::Conflict { created_at }
    );

    client
        .execute(
            "UPDATE clue.idempotency SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        claim_committed(&mut client, "api", "k", &new, None).await,
        Claim::New,
        "an expired entry counts as absent"
    );
    let (stored, replaced_at, expires_at) = entry(&db, "api", "k").await.unwrap();
    assert_eq!(stored, new);
    assert!(replaced_at > created_at, "{replaced_at} after {created_at}");
    assert_eq!(expires_at, None, "replaced with the new claim's ttl");
    assert_eq!(
        claim_committed(&mut client, "api", "k", &new, None).await,
        Claim::Replay {
            created_at: replaced_at
        }
    );
}

#[tokio::test]
async fn purging_deletes_exactly_the_expired_entries() {
    let db = TestDb::new().await;
    let _database = db.open().await;
    let mut client = db.client().await;
    let fp = fingerprint(b"x");
    for (key, ttl) in [("a", HOUR), ("b", HOUR), ("c", HOUR), ("forever", None)] {
        assert_eq!(
            claim_committed(&mut client, "api", key, &fp, ttl).await,
            Claim::New
        );
    }
    assert_eq!(ledger::purge_expired(&client).await.unwrap(), 0);
    client
        .execute(
            "UPDATE clue.idempotency SET expires_at = now() - interval '1 second'
              WHERE key IN ('a', 'b')",
            &[],
        )
        .await
        .unwrap();

    assert_eq!(ledger::purge_expired(&client).await.unwrap(), 2);
    assert_eq!(
        db.strings("SELECT key FROM clue.idempotency ORDER BY key")
            .await,
        ["c", "forever"]
    );
    assert_eq!(ledger::purge_expired(&client).await.unwrap(), 0);
}

#[tokio::test]
async fn the_scope_separates_keys() {
    let db = TestDb::new().await;
    let _database = db.open().await;
    let mut client = db.client().await;
    let fp = fingerprint(b"same payload");
    assert_eq!(
        claim_committed(&mut client, "sales_report", "42", &fp, None).await,
        Claim::New
    );
    assert_eq!(
        claim_committed(&mut client, "learning_log", "42", &fp, None).await,
        Claim::New
    );
    assert!(matches!(
        claim_committed(&mut client, "sales_report", "42", &fp, None).await,
        Claim::Replay { .. }
    ));
    let count: i64 = db.value("SELECT count(*) FROM clue.idempotency").await;
    assert_eq!(count, 2);
}

#[tokio::test]
async fn the_table_refuses_empty_and_long_keys_as_bad_input() {
    let db = TestDb::new().await;
    let _database = db.open().await;
    let mut client = db.client().await;
    let fp = fingerprint(b"x");
    for key in [String::new(), "k".repeat(201)] {
        assert!(ledger::check_key(&key).is_err());
        let tx = client.transaction().await.unwrap();
        let e = ledger::claim(&tx, "api", &key, &fp, None)
            .await
            .expect_err("refused");
        assert_eq!(classify_pg(&e), ErrorKind::BadInput, "{e:?}");
    }
    let longest = "k".repeat(200);
    assert_eq!(ledger::check_key(&longest), Ok(()));
    assert_eq!(
        claim_committed(&mut client, "api", &longest, &fp, None).await,
        Claim::New
    );
}

/// What one of the concurrent claimers saw.
struct Outcome {
    task: usize,
    fingerprint: String,
    claim: Claim,
    committed: bool,
}

/// `tasks` claimers, each on its own connection and in its own transaction,
/// claim `("sales", "order-1")` together (a barrier); a `New` one inserts its
/// task number into `t` and commits, unless `roll_back_first` and it is the
/// first `New`, which waits a little (so the others queue behind it) and
/// rolls back. The others roll back.
async fn claim_together(
    db: &TestDb,
    tasks: usize,
    same_payload: bool,
    roll_back_first: bool,
) -> Vec<Outcome> {
    let barrier = Arc::new(Barrier::new(tasks));
    let first_new_seen = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..tasks {
        clients.push(db.client().await);
    }
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(task, mut client)| {
            let (barrier, first_new_seen) = (barrier.clone(), first_new_seen.clone());
            let fp = if same_payload {
                fingerprint(b"order-1 payload")
            } else {
                fingerprint(format!("payload of task {task}").as_bytes())
            };
            tokio::spawn(async move {
                let tx = client.transaction().await.unwrap();
                barrier.wait().await;
                let claim = ledger::claim(&tx, "sales", "order-1", &fp, None)
                    .await
                    .unwrap();
                let mut committed = false;
                if claim == Claim::New {
                    tx.execute("INSERT INTO t VALUES ($1)", &[&task.to_string()])
                        .await
                        .unwrap();
                    // Hold the claim a moment, so the others wait on it.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if roll_back_first && !first_new_seen.swap(true, Ordering::SeqCst) {
                        tx.rollback().await.unwrap();
                    } else {
                        tx.commit().await.unwrap();
                        committed = true;
                    }
                } else {
                    tx.rollback().await.unwrap();
                }
                Outcome {
                    task,
                    fingerprint: fp,
                    claim,
                    committed,
                }
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.await.unwrap());
    }
    outcomes
}

fn count(outcomes: &[Outcome], pick: impl Fn(&Claim) -> bool) -> usize {
    outcomes.iter().filter(|o| pick(&o.claim)).count()
}

#[tokio::test]
async fn of_concurrent_duplicates_exactly_one_writes() {
    let _turn = MANY_CONNECTIONS.lock().await;
    let db = TestDb::new().await;
    let _database = db.open().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE t (k text)")
        .await
        .unwrap();

    let outcomes = claim_together(&db, 32, true, false).await;

    assert_eq!(count(&outcomes, |c| *c == Claim::New), 1);
    assert_eq!(count(&outcomes, |c| matches!(c, Claim::Replay { .. })), 31);
    let winner = outcomes.iter().find(|o| o.committed).unwrap();
    assert_eq!(
        db.strings("SELECT k FROM t").await,
        [winner.task.to_string()]
    );
    let (_, created_at, _) = entry(&db, "sales", "order-1").await.unwrap();
    for o in &outcomes {
        if let Claim::Replay { created_at: seen } = o.claim {
            assert_eq!(seen, created_at, "task {}", o.task);
        }
    }
}

#[tokio::test]
async fn when_the_first_claimer_rolls_back_another_one_wins() {
    let _turn = MANY_CONNECTIONS.lock().await;
    let db = TestDb::new().await;
    let _database = db.open().await;
    db.client()
        .await
        .batch_execute("CREATE TABLE t (k text)")
        .await
        .unwrap();

    // Every task has a payload of its own: the losers see conflicts.
    let outcomes = claim_together(&db, 32, false, true).await;

    assert_eq!(
        count(&outcomes, |c| *c == Claim::New),
        2,
        "the first, rolled back, and the winner"
    );
    assert_eq!(
        count(&outcomes, |c| matches!(c, Claim::Conflict { .. })),
        30
    );
    let winners: Vec<_> = outcomes.iter().filter(|o| o.committed).collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(
        db.strings("SELECT k FROM t").await,
        [winners[0].task.to_string()]
    );
    assert_eq!(
        entry(&db, "sales", "order-1").await.unwrap().0,
        winners[0].fingerprint,
        "the ledger holds the winner's fingerprint"
    );
}
