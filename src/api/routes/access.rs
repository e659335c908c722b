//! Signing in and managing keys: the dashboard's session
//! (`/api/v1/session`) and key management for admin keys
//! (`/api/v1/keys`), each action audited with the key that did it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::AppState;
use crate::api::auth::{AuthMode, Caller, SESSION_COOKIE, SESSION_HOURS};
use crate::api::problem::{ApiError, Problem};
use crate::domain::access::{ApiKey, Secret, parse_duration};
use crate::error::ErrorKind;
use crate::serve::access::{self, KeyRequest};

/// A key as the API shows it (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub(in crate::api) struct KeyInfo {
    #[schema(example = "3f9a0c1b2d4e")]
    id: String,
    name: String,
    /// `read`, `ingest` or `admin`.
    scope: String,
    /// The datasets it may use; empty: all.
    datasets: Vec<String>,
    /// `DIMENSION=VALUE` conditions on every row it sees.
    #[serde(rename = "where")]
    conditions: Vec<String>,
    /// Requests per second, when it has a rate of its own.
    rate: Option<f64>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&ApiKey> for KeyInfo {
    fn from(k: &ApiKey) -> KeyInfo {
        KeyInfo {
            id: k.key_id.clone(),
            name: k.name.clone(),
            scope: k.scope.to_string(),
            datasets: k.datasets.clone(),
            conditions: k.conditions.iter().map(ToString::to_string).collect(),
            rate: k.rate.map(|r| r.get()),
            expires_at: k.expires_at,
        }
    }
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub(in crate::api) struct SessionInfo {
    /// `required` or `off`.
    auth: &'static str,
    /// The caller's key; absent without one.
    key: Option<KeyInfo>,
}

/// Who is calling, and whether this server needs a key.
#[utoipa::path(
    get,
    path = "/api/v1/session",
    tag = "access",
    responses(
        (status = 200, description = "The server's mode and the caller's key.", body = SessionInfo),
        (status = 401, description = "The key or session sent does not work.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(in crate::api) async fn whoami(
    State(state): State<AppState>,
    caller: Caller,
) -> Json<SessionInfo> {
    Json(SessionInfo {
        auth: match state.auth.mode {
            AuthMode::Required => "required",
            AuthMode::Off => "off",
        },
        key: caller.key.as_deref().map(KeyInfo::from),
    })
}

/// A key to sign in with.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::api) struct SignIn {
    /// The secret `clue keys create` printed.
    key: String,
}

/// Signs the dashboard in: the key is checked once, then a signed session
/// cookie (HttpOnly, SameSite=Strict) stands for it for 12 hours.
#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "access",
    request_body(content = SignIn, content_type = "application/json"),
    responses(
        (status = 200, description = "Signed in; the cookie is set.", body = SessionInfo),
        (status = 400, description = "The body is not `{\"key\": \"...\"}`.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The key does not work.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "An ingest key cannot read the dashboard.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(in crate::api) async fn sign_in(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let invalid = |reason: String| ApiError::InvalidParameter {
        name: "key".into(),
        reason,
    };
    let sign_in: SignIn = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("the body must be {{\"key\": \"...\"}} ({e})")))?;
    let unknown =
        || ApiError::Unauthorized("the API key is not valid (unknown, revoked or expired)".into());
    let secret = Secret::parse(sign_in.key.trim()).ok_or_else(unknown)?;
    let key = state
        .auth
        .keyring
        .resolve(&state.db, &secret)
        .await?
        .ok_or_else(unknown)?;
    if !key.scope.covers(crate::domain::access::Scope::Read) {
        return Err(ApiError::Forbidden(format!(
            "key {} has scope {}; the dashboard needs read",
            key.key_id, key.scope
        )));
    }
    let hours = SESSION_HOURS * 3600;
    let mut expires = chrono::Utc::now().timestamp() + hours;
    if let Some(at) = key.expires_at {
        expires = expires.min(at.timestamp());
    }
    let value = state.auth.session_value(&key.key_id, expires);
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        (expires - chrono::Utc::now().timestamp()).max(0),
        if state.auth.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    let mut response = Json(SessionInfo {
        auth: "required",
        key: Some(KeyInfo::from(&*key)),
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// Signs out: the session cookie is cleared.
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "access",
    responses((status = 204, description = "Signed out."))
)]
pub(in crate::api) async fn sign_out() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("clue_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    response
}

/// The live keys (admin).
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    tag = "access",
    responses(
        (status = 200, description = "Every live key, newest first (never a secret).", body = Vec<KeyInfo>),
        (status = 401, description = "No admin key was sent.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key is not an admin key.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(in crate::api) async fn list_keys(
    State(state): State<AppState>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    let client = state.db.client().await?;
    let keys = crate::store::keys::list(&**client, false)
        .await
        .map_err(crate::error::PgError::from)?;
    Ok(Json(keys.iter().map(|k| KeyInfo::from(&k.key)).collect()))
}

/// A key to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::api) struct CreateKey {
    #[schema(example = "north-analysts")]
    name: String,
    /// `read`, `ingest` or `admin`.
    #[schema(schema_with = scopes, example = "read")]
    scope: String,
    /// The datasets it may use (none: all).
    #[serde(default)]
    #[schema(inline, value_type = Vec<DatasetName>)]
    datasets: Vec<String>,
    /// `DIMENSION=VALUE` conditions on every row it sees.
    #[serde(default, rename = "where")]
    #[schema(inline, value_type = Vec<ConditionText>, example = json!(["region=North"]))]
    conditions: Vec<String>,
    /// Its own rate: `10/s`, `600/min`, `1000/h`.
    #[schema(pattern = r"^0*[1-9][0-9]{0,5}(/(s|sec|second|m|min|minute|h|hour))?$")]
    rate: Option<String>,
    /// How long it works: `30m`, `12h`, `90d`, `52w`.
    #[schema(pattern = "^0*[1-9][0-9]{0,2}(s|m|min|h|d|w)$")]
    expires: Option<String>,
}

/// A dataset's name.
#[derive(ToSchema)]
#[schema(pattern = "^[a-z_][a-z0-9_]{0,47}$")]
#[allow(dead_code)]
struct DatasetName(String);

/// `DIMENSION=VALUE`.
#[derive(ToSchema)]
#[schema(pattern = "^[A-Za-z0-9_]{1,63}=")]
#[allow(dead_code)]
struct ConditionText(String);

fn scopes() -> utoipa::openapi::Object {
    crate::api::params::one_of(&["read", "ingest", "admin"])
}

/// A created key: its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(in crate::api) struct CreatedKey {
    /// Send as `Authorization: Bearer <secret>`; it is not stored and
    /// cannot be shown again.
    secret: String,
    key: KeyInfo,
}

/// Creates a key (admin); audited with the key that did it.
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    tag = "access",
    request_body(content = CreateKey, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the secret is in this answer only.", body = CreatedKey),
        (status = 400, description = "A field is wrong; it is named.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No admin key was sent.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key is not an admin key.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A live key already has this name.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(in crate::api) async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let invalid = |name: &str, reason: String| ApiError::InvalidParameter {
        name: name.into(),
        reason,
    };
    let raw: CreateKey =
        serde_json::from_slice(&body).map_err(|e| invalid("body", e.to_string()))?;
    let req = KeyRequest {
        scope: raw.scope.parse().map_err(|e| invalid("scope", e))?,
        conditions: raw
            .conditions
            .iter()
            .map(|c| c.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("where", e))?,
        rate: raw
            .rate
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| invalid("rate", e))?,
        expires_in: raw
            .expires
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| invalid("expires", e))?,
        name: raw.name,
        datasets: raw.datasets,
    };
    access::check(&state.catalog, &req).map_err(|e| invalid("key", e.to_string()))?;
    let created = access::create(&state.db, &state.catalog, req, &caller.actor())
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::Conflict => ApiError::Conflict(e.to_string()),
            _ => ApiError::Failed(e),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            secret: created.secret.expose().to_owned(),
            key: KeyInfo::from(&created.key),
        }),
    )
        .into_response())
}

/// Revokes a key by id or name (admin); audited with the key that did it.
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{key}",
    tag = "access",
    params(("key" = String, Path, description = "The key's id or name.")),
    responses(
        (status = 200, description = "Revoked (on this server at once, on others within 2 seconds).", body = KeyInfo),
        (status = 401, description = "No admin key was sent.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key is not an admin key.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No live key has this id or name.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is the one making the request.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(in crate::api) async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    if caller
        .key
        .as_ref()
        .is_some_and(|k| k.key_id == key || k.name == key)
    {
        return Err(ApiError::Conflict(
            "this is the key making the request; revoke it with another admin key or `clue keys revoke`".into(),
        ));
    }
    let revoked = access::revoke(&state.db, &key, &caller.actor())
        .await
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => ApiError::NotFound(format!("key {key}")),
            _ => ApiError::Failed(e),
        })?;
    state.auth.keyring.forget(&revoked.key_id);
    Ok(Json(KeyInfo::from(&revoked)))
}
