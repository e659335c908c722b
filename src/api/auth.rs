//! Who is calling and whether they may: API keys (`Authorization: Bearer`),
//! the dashboard's signed session cookie, and the one table of what each
//! route needs ([`rule`]).
//!
//! Architecture Invariant: every route is in [`rule`]'s table or needs a
//! read key; a handler never checks a scope itself, it reads the
//! [`Caller`] this middleware put on the request (whose [`View`] the
//! planner applies).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use hmac::{KeyInit, Mac};

use super::AppState;
use super::problem::ApiError;
use crate::domain::access::{ApiKey, Scope, Secret};
use crate::plan::View;
use crate::serve::access::Keyring;

/// Whether requests need a key (`clue serve --auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    Off,
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "clue_session";

/// How long a dashboard session lasts.
pub const SESSION_HOURS: i64 = 12;

/// What the middleware needs: the mode, the keyring and the session key.
pub struct Auth {
    pub mode: AuthMode,
    pub keyring: Keyring,
    /// HMAC key of session cookies (from `CLUE_SECRET_KEY`).
    session_key: [u8; 32],
    /// Cookies are `Secure` (the server speaks TLS).
    pub secure_cookies: bool,
    /// Origins allowed to call from a browser (`--cors-origin`).
    cors_origins: Vec<String>,
}

impl Auth {
    pub fn new(mode: AuthMode, secret_key: &str, secure_cookies: bool) -> Auth {
        use sha2::Digest;
        Auth {
            mode,
            keyring: Keyring::default(),
            session_key: sha2::Sha256::digest(secret_key.as_bytes()).into(),
            secure_cookies,
            cors_origins: Vec::new(),
        }
    }

    /// Allows these origins' pages to call the API (with a bearer key; the
    /// session cookie stays this server's own).
    pub fn with_cors(mut self, origins: Vec<String>) -> Auth {
        self.cors_origins = origins;
        self
    }

    /// The CORS layer, when origins are allowed (off otherwise: browsers
    /// refuse other pages' calls).
    pub fn cors(&self) -> Option<tower_http::cors::CorsLayer> {
        use axum::http::{HeaderName, HeaderValue};
        use tower_http::cors::{AllowOrigin, CorsLayer};
        if self.cors_origins.is_empty() {
            return None;
        }
        let origins: Vec<HeaderValue> = self
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::IF_NONE_MATCH,
                    header::CACHE_CONTROL,
                ])
                .expose_headers([
                    header::ETAG,
                    header::RETRY_AFTER,
                    HeaderName::from_static("clue-cache"),
                    HeaderName::from_static("clue-served-from"),
                    HeaderName::from_static("ratelimit"),
                    HeaderName::from_static("ratelimit-policy"),
                ])
                .max_age(std::time::Duration::from_secs(600)),
        )
    }

    fn mac(&self, payload: &str) -> hmac::Hmac<sha2::Sha256> {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.session_key)
            .expect("HMAC takes a key of any length");
        mac.update(payload.as_bytes());
        mac
    }

    /// A session cookie's value for `key_id`, valid until `expires` (Unix
    /// seconds): `ID.EXPIRES.HMAC`.
    pub fn session_value(&self, key_id: &str, expires: i64) -> String {
        let payload = format!("{key_id}.{expires}");
        let tag = hex::encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The key id of a session value that this server signed and that has
    /// not expired.
    pub fn session_key_id(&self, value: &str, now: i64) -> Option<String> {
        let (payload, tag) = value.rsplit_once('.')?;
        let (key_id, expires) = payload.split_once('.')?;
        let tag = hex::decode(tag).ok()?;
        // Constant-time comparison.
        self.mac(payload).verify_slice(&tag).ok()?;
        (expires.parse::<i64>().ok()? > now).then(|| key_id.to_owned())
    }
}

/// The caller of a request: its key (none when keys are off and none was
/// sent), its address, and what it may see.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: Option<Arc<ApiKey>>,
    pub addr: Option<IpAddr>,
    pub view: Arc<View>,
}

impl Caller {
    /// Who did it, for the audit log: `key:ID name`, or the address.
    pub fn actor(&self) -> String {
        match (&self.key, self.addr) {
            (Some(k), _) => k.actor(),
            (None, Some(a)) => format!("anonymous:{a}"),
            (None, None) => "anonymous".into(),
        }
    }

    /// What rate limits and work bounds count against.
    pub fn identity(&self) -> Identity {
        match (&self.key, self.addr) {
            (Some(k), _) => Identity::Key(k.key_id.clone()),
            (None, a) => Identity::Address(a),
        }
    }
}

/// A rate limit's or a work bound's subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Key(String),
    Address(Option<IpAddr>),
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        // The middleware puts one on every routed request; a request that
        // somehow has none sees nothing.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("this request carries no caller".into()))
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone: health, the dashboard's files, the docs, signing in.
    Public,
    /// A key of this scope over these data.
    Needs(Scope, Data),
}

/// Which data a route touches, for keys limited to datasets and rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// Planned queries: the planner applies the caller's view (datasets
    /// and rows), whatever dataset the request names.
    Planned,
    /// These datasets, read by reports of their own: a key limited to rows
    /// may not use them (they cannot apply its conditions).
    Fixed(&'static [&'static str]),
    /// The dataset named by the path's fourth segment
    /// (`/api/v1/datasets/{name}/...`).
    InPath,
    /// No dataset's rows (key management, metrics).
    Nothing,
}

/// The one table of what each route needs, by method and route template.
pub fn rule(method: &Method, path: &str) -> Rule {
    use Data::*;
    use Scope::*;
    const SALES: &[&str] = &["sales"];
    const LEARNING: &[&str] = &["learning_log"];
    const WAREHOUSE: &[&str] = &["warehouse"];
    let post = method == Method::POST;
    match path {
        "/healthz" | "/readyz" | "/" | "/assets/{name}" | "/openapi.json" | "/api/v1/session" => {
            Rule::Public
        }
        p if p.starts_with("/docs") => Rule::Public,
        "/metrics" | "/api/v1/keys" | "/api/v1/keys/{key}" | "/api/v1/audit" => {
            Rule::Needs(Admin, Nothing)
        }
        p if p.starts_with("/api/v1/rollups") => Rule::Needs(Admin, Nothing),
        "/ingest" => Rule::Needs(Ingest, Fixed(SALES)),
        "/recordsjson" => Rule::Needs(Ingest, Fixed(LEARNING)),
        "/api/v1/datasets/{name}/events" if post => Rule::Needs(Ingest, InPath),
        // Reports and queries through the planner, which applies the
        // caller's datasets and rows to every query they run.
        "/reports/monthly-sales-summary"
        | "/reports/monthly-sales-breakdown"
        | "/reports/top-5-by-revenue"
        | "/reports/country-contribution"
        | "/reports/top-country-relationships"
        | "/reports/repeat-buyer-revenue"
        | "/reports/open-orders"
        | "/reports/top-delivery-dates"
        | "/reports/pending-items"
        | "/reports/top-customers"
        | "/users/{user_id}/summary"
        | "/api/v1/query"
        | "/api/v1/datasets"
        | "/api/v1/changes" => Rule::Needs(Read, Planned),
        "/sales" | "/sales/{id_order}" | "/feedback" => Rule::Needs(Read, Fixed(SALES)),
        p if p.starts_with("/kpis/") || p.starts_with("/warehouse/") => {
            Rule::Needs(Read, Fixed(WAREHOUSE))
        }
        // Anything else needs a read key of a caller that sees everything.
        _ => Rule::Needs(Read, Fixed(&[])),
    }
}

/// Whether `key` may use a route of `rule` (the dataset `in_path` for
/// `InPath`); the refusal says why.
pub fn permits(key: &ApiKey, rule: Rule, in_path: Option<&str>) -> Result<(), String> {
    let Rule::Needs(scope, data) = rule else {
        return Ok(());
    };
    if !key.scope.covers(scope) {
        return Err(format!(
            "key {} has scope {}; this needs {scope}",
            key.key_id, key.scope
        ));
    }
    let allowed = |d: &str| key.datasets.is_empty() || key.datasets.iter().any(|k| k == d);
    let fixed: &[&str] = match data {
        Data::Planned | Data::Nothing => return Ok(()),
        Data::Fixed(datasets) => datasets,
        Data::InPath => &[in_path.unwrap_or("")],
    };
    if let Some(d) = fixed.iter().find(|d| !allowed(d)) {
        return Err(format!("key {} may not use dataset {d}", key.key_id));
    }
    if fixed.is_empty() && !key.datasets.is_empty() {
        return Err(format!("key {} is limited to datasets", key.key_id));
    }
    if !key.conditions.is_empty() {
        return Err(format!(
            "key {} sees only some rows, and this route cannot be limited to them; use the reports, /api/v1/query or /api/v1/datasets",
            key.key_id
        ));
    }
    Ok(())
}

/// Resolves the caller and lets the request through when its rule allows.
pub(super) async fn authorize(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // The template is shared (an `Arc`), not copied, on every request.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let path = matched.as_ref().map_or("", |p| p.as_str());
    let rule = rule(req.method(), path);
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    // Public routes ignore keys (a health check with a stale key is still
    // a health check), except asking who one is.
    let key = if rule != Rule::Public || (path == "/api/v1/session" && req.method() == Method::GET)
    {
        caller_key(&state, req.headers()).await?
    } else {
        None
    };
    let needs_key = match rule {
        Rule::Public => false,
        // Keys, rollups and metrics need an admin key whatever the mode:
        // without keys on, anyone on the machine could mint one.
        Rule::Needs(Scope::Admin, _) => true,
        Rule::Needs(..) => state.auth.mode == AuthMode::Required,
    };
    if let Some(k) = &key {
        let in_path = req.uri().path().split('/').nth(4);
        permits(k, rule, in_path).map_err(ApiError::Forbidden)?;
    } else if needs_key {
        return Err(ApiError::Unauthorized(
            "this needs an API key: send `Authorization: Bearer <key>` (`clue keys create` makes one)"
                .into(),
        ));
    }
    // Callers that see everything share one view rather than each
    // allocating their own.
    static EVERYTHING: std::sync::OnceLock<Arc<View>> = std::sync::OnceLock::new();
    let view = match &key {
        Some(k) if !k.datasets.is_empty() || !k.conditions.is_empty() => Arc::new(View {
            datasets: k.datasets.clone(),
            conditions: k.conditions.clone(),
        }),
        _ => EVERYTHING
            .get_or_init(|| Arc::new(View::everything()))
            .clone(),
    };
    req.extensions_mut().insert(Caller { key, addr, view });
    Ok(next.run(req).await)
}

/// The key of a request: its bearer token, else its session cookie. A
/// token or session that is sent but does not work is refused, even where
/// none is needed (a client should learn its key is wrong).
async fn caller_key(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Arc<ApiKey>>, ApiError> {
    let unknown =
        || ApiError::Unauthorized("the API key is not valid (unknown, revoked or expired)".into());
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be `Bearer <key>`".into())
            })?;
        let secret = Secret::parse(token.trim()).ok_or_else(unknown)?;
        return match state.auth.keyring.resolve(&state.db, &secret).await? {
            Some(k) => Ok(Some(k)),
            None => Err(unknown()),
        };
    }
    let Some(session) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let now = chrono::Utc::now().timestamp();
    let expired =
        || ApiError::Unauthorized("the session has ended; sign in again with a key".into());
    let key_id = state
        .auth
        .session_key_id(session, now)
        .ok_or_else(expired)?;
    match state.auth.keyring.resolve_id(&state.db, &key_id).await? {
        Some(k) => Ok(Some(k)),
        None => Err(expired()),
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scope: Scope, datasets: &[&str], conditions: &[&str]) -> ApiKey {
        ApiKey {
            key_id: "abc".into(),
            name: "k".into(),
            scope,
            datasets: datasets.iter().map(|s| s.to_string()).collect(),
            conditions: conditions.iter().map(|c| c.parse().unwrap()).collect(),
            rate: None,
            expires_at: None,
        }
    }

    /// (method, route, key) → allowed, or the start of the refusal.
    fn check(method: Method, path: &str, in_path: Option<&str>, k: &ApiKey, expect: &str) {
        let got = match permits(k, rule(&method, path), in_path) {
            Ok(()) => "ok".to_owned(),
            Err(e) => e,
        };
        assert!(got.starts_with(expect), "{method} {path}: {got}");
    }

    #[test]
    fn routes_need_their_scope_datasets_and_rows() {
        use Scope::*;
        let reader = key(Read, &[], &[]);
        let north = key(Read, &["sales_report"], &["region=North"]);
        let producer = key(Ingest, &["sales"], &[]);
        let admin = key(Admin, &[], &[]);
        let get = Method::GET;
        check(
            get.clone(),
            "/reports/top-5-by-revenue",
            None,
            &reader,
            "ok",
        );
        check(get.clone(), "/reports/top-5-by-revenue", None, &north, "ok");
        check(Method::POST, "/api/v1/query", None, &north, "ok");
        check(get.clone(), "/reports/open-orders", None, &north, "ok");
        check(
            get.clone(),
            "/sales",
            None,
            &key(Read, &["sales"], &["CATEGORY=x"]),
            "key abc sees only some rows",
        );
        check(
            get.clone(),
            "/reports/top-5-by-revenue",
            None,
            &producer,
            "key abc has scope ingest; this needs read",
        );
        check(Method::POST, "/ingest", None, &producer, "ok");
        check(
            Method::POST,
            "/recordsjson",
            None,
            &producer,
            "key abc may not use dataset learning_log",
        );
        check(
            Method::POST,
            "/api/v1/datasets/{name}/events",
            Some("sales"),
            &producer,
            "ok",
        );
        check(
            Method::POST,
            "/api/v1/datasets/{name}/events",
            Some("country"),
            &producer,
            "key abc may not use dataset country",
        );
        check(
            Method::POST,
            "/api/v1/keys",
            None,
            &reader,
            "key abc has scope read; this needs admin",
        );
        check(Method::POST, "/api/v1/keys", None, &admin, "ok");
        check(get.clone(), "/metrics", None, &admin, "ok");
        check(
            get.clone(),
            "/kpis/customer-ytd-spending",
            None,
            &north,
            "key abc may not use dataset warehouse",
        );
        check(get.clone(), "/healthz", None, &producer, "ok");
        assert_eq!(rule(&get, "/docs/{*rest}"), Rule::Public);
        assert_eq!(
            rule(&get, "/something/new"),
            Rule::Needs(Read, Data::Fixed(&[]))
        );
        check(
            get,
            "/something/new",
            None,
            &north,
            "key abc is limited to datasets",
        );
    }

    #[test]
    fn sessions_are_signed_and_expire() {
        let auth = Auth::new(
            AuthMode::Required,
            "a secret key of at least 32 chars!",
            false,
        );
        let value = auth.session_value("abc123", 2_000);
        assert_eq!(
            auth.session_key_id(&value, 1_999).as_deref(),
            Some("abc123")
        );
        assert_eq!(auth.session_key_id(&value, 2_000), None, "expired");
        let forged = value.replace("abc123", "abc124");
        assert_eq!(auth.session_key_id(&forged, 0), None, "another key id");
        let later = value.replace(".2000.", ".9999.");
        assert_eq!(auth.session_key_id(&later, 0), None, "a longer life");
        let other = Auth::new(
            AuthMode::Required,
            "another secret key of 32 chars!!",
            false,
        );
        assert_eq!(
            other.session_key_id(&value, 0),
            None,
            "another server's key"
        );
        for junk in ["", ".", "a.b", "a.b.c", "abc.1.zz"] {
            assert_eq!(auth.session_key_id(junk, 0), None, "{junk}");
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; clue_session=x.y.z".parse().unwrap());
        h.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("x.y.z"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
