//! API keys as a service: creating one (checked against the catalog),
//! revoking it, and the keyring that resolves a request's secret.
//!
//! The keyring remembers a key for [`KEYRING_TTL`], so a request costs a
//! hash and a map lookup, not a query; a key revoked elsewhere (another
//! server, the CLI) stops working within that time, and at once on the
//! server that revoked it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::access::{self, ApiKey, Condition, Rate, Scope, Secret};
use crate::domain::dataset::Catalog;
use crate::error::{Error, ErrorKind, PgError};
use crate::pg::database::Database;
use crate::store::keys::{self, NewKey};

/// How long a resolved key is trusted without asking the database again.
pub const KEYRING_TTL: Duration = Duration::from_secs(2);

/// The most keys remembered at once (more clear the ring).
const KEYRING_SIZE: usize = 10_000;

/// What a key may be limited to besides the catalog's datasets: the
/// warehouse's KPIs and batches.
pub const OTHER_DATA: &[&str] = &["warehouse"];

/// What `clue keys create` (or `POST /api/v1/keys`) asks for.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub name: String,
    pub scope: Scope,
    pub datasets: Vec<String>,
    pub conditions: Vec<Condition>,
    pub rate: Option<Rate>,
    pub expires_in: Option<Duration>,
}

/// A created key: the secret (shown once) and what it is.
#[derive(Debug, Clone)]
pub struct Created {
    pub secret: Secret,
    pub key: ApiKey,
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::BadInput, message.into())
}

/// Checks a request against the catalog: the datasets exist, every
/// condition's dimension belongs to a dataset the key may read, no
/// dimension is conditioned twice.
pub fn check(catalog: &Catalog, req: &KeyRequest) -> Result<(), Error> {
    access::check_name(&req.name).map_err(bad)?;
    for (i, d) in req.datasets.iter().enumerate() {
        if !OTHER_DATA.contains(&d.as_str()) {
            catalog.get(d).map_err(|e| bad(e.to_string()))?;
        }
        if req.datasets[..i].contains(d) {
            return Err(bad(format!("dataset {d} is given twice")));
        }
    }
    for (i, c) in req.conditions.iter().enumerate() {
        if req.conditions[..i]
            .iter()
            .any(|o| o.dimension == c.dimension)
        {
            return Err(bad(format!(
                "{} is conditioned twice; a key sees rows of one value per dimension",
                c.dimension
            )));
        }
        let known = catalog
            .datasets
            .iter()
            .filter(|d| req.datasets.is_empty() || req.datasets.contains(&d.name))
            .any(|d| d.dimensions.contains(&c.dimension));
        if !known {
            return Err(bad(format!(
                "{} is not a dimension of any dataset this key may read",
                c.dimension
            )));
        }
    }
    if req.scope == Scope::Admin && !req.conditions.is_empty() {
        return Err(bad(
            "an admin key manages every key and rollup: it cannot be limited to rows",
        ));
    }
    if req.scope == Scope::Ingest && !req.conditions.is_empty() {
        return Err(bad(
            "row conditions limit what a key reads, and an ingest key reads nothing",
        ));
    }
    Ok(())
}

/// Creates a key for `actor` (audited); the secret is in the answer only.
pub async fn create(
    db: &Database,
    catalog: &Catalog,
    req: KeyRequest,
    actor: &str,
) -> Result<Created, Error> {
    check(catalog, &req)?;
    let secret = Secret::generate();
    let expires_at = match req.expires_in {
        Some(d) => Some(
            chrono::Utc::now()
                + chrono::Duration::from_std(d).map_err(|_| bad("--expires is too far away"))?,
        ),
        None => None,
    };
    let new = NewKey {
        key_id: secret.key_id(),
        secret_hash: secret.hash(),
        name: req.name,
        scope: req.scope,
        datasets: req.datasets,
        conditions: req.conditions,
        rate: req.rate,
        expires_at,
    };
    let mut client = db.client().await?;
    keys::create(&mut client, &new, actor).await.map_err(|e| {
        match crate::error::classify_pg(&e) {
            ErrorKind::Conflict => Error::new(
                ErrorKind::Conflict,
                format!(
                    "a live key is already named {:?}; revoke it or pick another name",
                    new.name
                ),
            ),
            _ => PgError::from(e).into(),
        }
    })?;
    Ok(Created {
        key: ApiKey {
            key_id: new.key_id,
            name: new.name,
            scope: new.scope,
            datasets: new.datasets,
            conditions: new.conditions,
            rate: new.rate,
            expires_at: new.expires_at,
        },
        secret,
    })
}

/// Revokes the live key with this id or name (audited).
pub async fn revoke(db: &Database, id_or_name: &str, actor: &str) -> Result<ApiKey, Error> {
    let mut client = db.client().await?;
    keys::revoke(&mut client, id_or_name, actor)
        .await
        .map_err(PgError::from)?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no live key has the id or name {id_or_name:?}"),
            )
        })
}

/// Resolved keys, each remembered for [`KEYRING_TTL`]: by the secret a
/// client sent (so a request that hits costs a map lookup, not a SHA-256),
/// or by id for sessions.
#[derive(Default)]
pub struct Keyring {
    known: Mutex<HashMap<String, (Arc<ApiKey>, Instant)>>,
}

impl Keyring {
    /// The live key of `secret`, or `None` when it is no key (or revoked,
    /// or expired).
    pub async fn resolve(
        &self,
        db: &Database,
        secret: &Secret,
    ) -> Result<Option<Arc<ApiKey>>, Error> {
        if let Some(key) = self.remembered(secret.expose()) {
            return Ok(Some(key));
        }
        let client = db.client().await?;
        let key = keys::find(&**client, &secret.hash())
            .await
            .map_err(PgError::from)?
            .map(Arc::new);
        if let Some(k) = &key {
            self.remember(secret.expose().to_owned(), k.clone());
        }
        Ok(key)
    }

    /// The live key with this id (a dashboard session's).
    pub async fn resolve_id(
        &self,
        db: &Database,
        key_id: &str,
    ) -> Result<Option<Arc<ApiKey>>, Error> {
        let id = format!("id:{key_id}");
        if let Some(key) = self.remembered(&id) {
            return Ok(Some(key));
        }
        let client = db.client().await?;
        let key = keys::find_by_id(&**client, key_id)
            .await
            .map_err(PgError::from)?
            .map(Arc::new);
        if let Some(k) = &key {
            self.remember(id, k.clone());
        }
        Ok(key)
    }

    fn remembered(&self, slot: &str) -> Option<Arc<ApiKey>> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let (key, at) = known.get(slot)?;
        let fresh =
            at.elapsed() < KEYRING_TTL && key.expires_at.is_none_or(|e| e > chrono::Utc::now());
        fresh.then(|| key.clone())
    }

    fn remember(&self, slot: String, key: Arc<ApiKey>) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= KEYRING_SIZE {
            known.clear();
        }
        known.insert(slot, (key, Instant::now()));
    }

    /// Forgets a key at once (it was revoked here).
    pub fn forget(&self, key_id: &str) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|_, (k, _)| k.key_id != key_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(datasets: &[&str], conditions: &[&str], scope: Scope) -> KeyRequest {
        KeyRequest {
            name: "analyst".into(),
            scope,
            datasets: datasets.iter().map(|s| s.to_string()).collect(),
            conditions: conditions.iter().map(|c| c.parse().unwrap()).collect(),
            rate: None,
            expires_in: None,
        }
    }

    fn check_req(r: KeyRequest, expect: &str) {
        let catalog = Catalog::load(None).unwrap();
        let got = check(&catalog, &r).map_or_else(|e| e.to_string(), |()| "ok".into());
        assert_eq!(got, expect);
    }

    #[test]
    fn key_requests_are_checked_against_the_catalog() {
        use Scope::*;
        check_req(req(&["sales_report"], &["region=North"], Read), "ok");
        check_req(req(&[], &["region=North"], Read), "ok");
        check_req(
            req(&["learning_log"], &["region=North"], Read),
            "region is not a dimension of any dataset this key may read",
        );
        check_req(
            req(&["sales_report", "sales_report"], &[], Read),
            "dataset sales_report is given twice",
        );
        check_req(
            req(&[], &["region=North", "region=South"], Read),
            "region is conditioned twice; a key sees rows of one value per dimension",
        );
        check_req(
            req(&[], &["region=North"], Admin),
            "an admin key manages every key and rollup: it cannot be limited to rows",
        );
        let mut unnamed = req(&[], &[], Read);
        unnamed.name = " ".into();
        check_req(
            unnamed,
            "a key's name must be 1 to 100 characters, none of them control characters",
        );
        assert!(
            check(&Catalog::load(None).unwrap(), &req(&["nope"], &[], Read))
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
    }
}
