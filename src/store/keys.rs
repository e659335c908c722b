//! API keys in `clue.api_keys` and administrative actions in
//! `clue.audit_log`.
//!
//! Architecture Invariant: a key is created, revoked and audited in one
//! transaction, so the log names every key that ever worked.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use crate::domain::access::{ApiKey, Condition, Rate, Scope};

/// A key to create (its secret's hash and id come with it).
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key_id: String,
    pub secret_hash: String,
    pub name: String,
    pub scope: Scope,
    pub datasets: Vec<String>,
    pub conditions: Vec<Condition>,
    pub rate: Option<Rate>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key as `clue keys list` shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: ApiKey,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "key_id, name, scope, datasets, conditions, rate, expires_at";

fn key_of(row: &tokio_postgres::Row) -> ApiKey {
    let scope: String = row.get(2);
    let conditions: serde_json::Value = row.get(4);
    ApiKey {
        key_id: row.get(0),
        name: row.get(1),
        // The table's CHECK allows only the three scopes; anything else
        // is treated as the least.
        scope: scope.parse().unwrap_or(Scope::Read),
        datasets: row.get(3),
        conditions: serde_json::from_value(conditions).unwrap_or_default(),
        rate: row.get::<_, Option<f64>>(5).and_then(Rate::per_second),
        expires_at: row.get(6),
    }
}

/// Creates a key and audits it; a live key of the same name is a
/// unique violation (a conflict).
pub async fn create(
    client: &mut tokio_postgres::Client,
    key: &NewKey,
    actor: &str,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let conditions = serde_json::to_value(&key.conditions).unwrap_or_default();
    tx.execute(
        "INSERT INTO clue.api_keys (key_id, name, secret_hash, scope, datasets, conditions, rate,
                                    expires_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &key.key_id,
            &key.name,
            &key.secret_hash,
            &key.scope.as_str(),
            &key.datasets,
            &conditions,
            &key.rate.map(Rate::get),
            &key.expires_at,
            &actor,
        ],
    )
    .await?;
    let detail = serde_json::json!({
        "name": key.name,
        "scope": key.scope,
        "datasets": key.datasets,
        "conditions": key.conditions.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "rate": key.rate.map(Rate::get),
        "expires_at": key.expires_at,
    });
    audit(&tx, actor, "key.create", &key.key_id, &detail).await?;
    tx.commit().await
}

/// Revokes the live key with this id or name; the revoked key, if any.
pub async fn revoke(
    client: &mut tokio_postgres::Client,
    id_or_name: &str,
    actor: &str,
) -> Result<Option<ApiKey>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE clue.api_keys SET revoked_at = now(), revoked_by = $2
                  WHERE revoked_at IS NULL AND (key_id = $1 OR name = $1)
                 RETURNING {COLUMNS}"
            ),
            &[&id_or_name, &actor],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let key = key_of(&row);
    audit(
        &tx,
        actor,
        "key.revoke",
        &key.key_id,
        &serde_json::json!({"name": key.name}),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(key))
}

/// The live (unrevoked, unexpired) key with this secret hash.
pub async fn find(
    client: &impl GenericClient,
    secret_hash: &str,
) -> Result<Option<ApiKey>, tokio_postgres::Error> {
    live_where(client, "secret_hash = $1", secret_hash).await
}

/// The live key with this id (a session names its key by id).
pub async fn find_by_id(
    client: &impl GenericClient,
    key_id: &str,
) -> Result<Option<ApiKey>, tokio_postgres::Error> {
    live_where(client, "key_id = $1", key_id).await
}

async fn live_where(
    client: &impl GenericClient,
    condition: &str,
    value: &str,
) -> Result<Option<ApiKey>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM clue.api_keys
          WHERE {condition} AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
    );
    Ok(client
        .query_opt(&sql, &[&value])
        .await?
        .as_ref()
        .map(key_of))
}

/// Every key, newest first; revoked ones only with `all`.
pub async fn list(
    client: &impl GenericClient,
    all: bool,
) -> Result<Vec<Listed>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS}, created_at, created_by, revoked_at FROM clue.api_keys
                  WHERE $1 OR revoked_at IS NULL
                  ORDER BY created_at DESC, key_id"
            ),
            &[&all],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Listed {
            key: key_of(r),
            created_at: r.get(7),
            created_by: r.get(8),
            revoked_at: r.get(9),
        })
        .collect())
}

/// How many keys work now (a server that requires keys refuses to start
/// with none).
pub async fn live_count(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FROM clue.api_keys
              WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Records an administrative action.
pub async fn audit(
    client: &impl GenericClient,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO clue.audit_log (actor, action, subject, detail) VALUES ($1, $2, $3, $4)",
            &[&actor, &action, &subject, detail],
        )
        .await?;
    tracing::info!(target: "clue::audit", actor, action, subject, %detail, "administrative action");
    Ok(())
}

/// The latest audit entries, newest first: (at, actor, action, subject).
pub async fn recent_audit(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<(DateTime<Utc>, String, String, String)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT at, actor, action, subject FROM clue.audit_log ORDER BY entry_id DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}
