//! Bounds a client cannot push past: a rate per key (or per address without
//! one), a bound on expensive work at once per caller and in total, and
//! the size of a request's head.
//!
//! Rates use governor's GCRA (one second's worth of burst); answers carry
//! the IETF `RateLimit-Policy` and `RateLimit` fields, and a refusal is a
//! 429 problem with `Retry-After`. Expensive work (an answer that is not
//! cached, an event batch) waits briefly for a turn, then is refused with a
//! 503, so one client cannot hold every pooled connection.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;
use super::auth::{Caller, Identity};
use super::problem::ApiError;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// How long expensive work waits for a turn before it is refused.
pub const WORK_WAIT: Duration = Duration::from_secs(2);

/// The longest request target (path and query) taken, in bytes.
pub const MAX_URI: usize = 8 * 1024;

/// The most header bytes (names and values) taken.
pub const MAX_HEADERS: usize = 32 * 1024;

/// Callers remembered at once; past it, the idle ones are forgotten.
const REMEMBERED: usize = 10_000;

/// The server's rates and work bounds (`clue serve` flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSettings {
    /// Requests per second of a key without a rate of its own (`None`: no limit).
    pub per_key: Option<f64>,
    /// Requests per second of a client address sending no key.
    pub per_address: Option<f64>,
    /// Expensive requests running at once in all.
    pub work_total: usize,
    /// Expensive requests running at once per caller.
    pub work_per_caller: usize,
}

/// Rate limiters and work bounds, by caller.
pub struct Guard {
    settings: RateSettings,
    clock: DefaultClock,
    limiters: Mutex<HashMap<Identity, (Arc<Limiter>, Instant)>>,
    total: Arc<Semaphore>,
    per_caller: Mutex<HashMap<Identity, Arc<Semaphore>>>,
}

/// A turn at expensive work; dropping it ends the turn.
pub struct Turn {
    _caller: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl Guard {
    pub fn new(settings: RateSettings) -> Guard {
        Guard {
            settings,
            clock: DefaultClock::default(),
            limiters: Mutex::default(),
            total: Arc::new(Semaphore::new(settings.work_total.max(1))),
            per_caller: Mutex::default(),
        }
    }

    /// The rate that applies to `caller`, in requests per second.
    fn rate_of(&self, caller: &Caller) -> Option<f64> {
        match &caller.key {
            Some(k) => k.rate.map(|r| r.get()).or(self.settings.per_key),
            None => self.settings.per_address,
        }
    }

    /// Takes one request from the caller's allowance: the headers to
    /// answer with, or the refusal.
    fn admit(&self, caller: &Caller) -> Result<Option<RateHeaders>, ApiError> {
        let Some(rate) = self.rate_of(caller) else {
            return Ok(None);
        };
        let limiter = self.limiter(caller.identity(), rate);
        let policy = Policy::of(rate);
        match limiter.check() {
            Ok(snapshot) => Ok(Some(RateHeaders {
                policy,
                remaining: snapshot.remaining_burst_capacity(),
            })),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                metrics::counter!("clue_http_rate_limited_total").increment(1);
                Err(ApiError::RateLimited {
                    what: match &caller.key {
                        Some(k) => format!("key {}", k.key_id),
                        None => "this address".into(),
                    },
                    limit: policy.quota,
                    window: policy.window,
                    retry_after: wait.as_secs_f64().ceil() as u64,
                })
            }
        }
    }

    fn limiter(&self, who: Identity, rate: f64) -> Arc<Limiter> {
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= REMEMBERED && !map.contains_key(&who) {
            // A caller idle this long has its whole burst back anyway.
            map.retain(|_, (_, seen)| seen.elapsed() < Duration::from_secs(60));
        }
        let policy = Policy::of(rate);
        let entry = map.entry(who).or_insert_with(|| {
            let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rate))
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(policy.quota).unwrap_or(NonZeroU32::MIN));
            (
                Arc::new(RateLimiter::direct(quota).with_middleware()),
                Instant::now(),
            )
        });
        entry.1 = Instant::now();
        entry.0.clone()
    }

    /// Waits (up to [`WORK_WAIT`]) for a turn at expensive work, first the
    /// caller's own, then the server's; refused with a 503 when none frees.
    pub async fn turn(&self, caller: &Caller) -> Result<Turn, ApiError> {
        let who = caller.identity();
        let own = {
            let mut map = self.per_caller.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= REMEMBERED && !map.contains_key(&who) {
                map.retain(|_, s| s.available_permits() < self.settings.work_per_caller.max(1));
            }
            map.entry(who)
                .or_insert_with(|| Arc::new(Semaphore::new(self.settings.work_per_caller.max(1))))
                .clone()
        };
        let busy = |what: &str| {
            metrics::counter!("clue_http_shed_total").increment(1);
            ApiError::Busy(format!(
                "{what}; retry shortly (or ask for what is cached: the same query again is cheap)"
            ))
        };
        let caller_turn = tokio::time::timeout(WORK_WAIT, own.acquire_owned())
            .await
            .map_err(|_| busy("this caller already runs as much uncached work as it may"))?
            .map_err(|_| busy("the server is closing"))?;
        let total_turn = tokio::time::timeout(WORK_WAIT, self.total.clone().acquire_owned())
            .await
            .map_err(|_| busy("the server runs as much uncached work as it may"))?
            .map_err(|_| busy("the server is closing"))?;
        Ok(Turn {
            _caller: caller_turn,
            _total: total_turn,
        })
    }
}

/// A rate as its IETF policy: `quota` requests per `window` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Policy {
    quota: u32,
    window: u32,
}

impl Policy {
    /// One second's worth of burst (at least one request, over the time
    /// it takes to earn it back).
    fn of(rate: f64) -> Policy {
        let quota = rate.ceil().clamp(1.0, u32::MAX as f64) as u32;
        let window = (quota as f64 / rate).ceil().clamp(1.0, u32::MAX as f64) as u32;
        Policy { quota, window }
    }
}

/// The rate fields of an admitted request's answer.
struct RateHeaders {
    policy: Policy,
    remaining: u32,
}

impl RateHeaders {
    fn apply(&self, response: &mut Response) {
        let h = response.headers_mut();
        let policy = format!(
            "\"default\";q={};w={}",
            self.policy.quota, self.policy.window
        );
        let now = format!("\"default\";r={};t={}", self.remaining, self.policy.window);
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", now)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
}

/// Counts the request against its caller's rate (after [`super::auth`]
/// named the caller).
pub(super) async fn rate_limit(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return next.run(req).await;
    };
    match state.guard.admit(&caller) {
        Ok(headers) => {
            let mut response = next.run(req).await;
            if let Some(h) = headers {
                h.apply(&mut response);
            }
            response
        }
        Err(refused) => {
            let mut response = refused.into_response();
            if let Some(rate) = state.guard.rate_of(&caller) {
                RateHeaders {
                    policy: Policy::of(rate),
                    remaining: 0,
                }
                .apply(&mut response);
            }
            response
        }
    }
}

/// Refuses a request whose target or headers are over the limits, as a
/// problem (hyper's own refusals, past its much larger buffer, have no body).
pub(super) async fn head_size(req: Request, next: Next) -> Result<Response, ApiError> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI {
        return Err(ApiError::HeadTooLarge(
            StatusCode::URI_TOO_LONG,
            format!("the request target is {target} bytes; at most {MAX_URI} are taken"),
        ));
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers > MAX_HEADERS {
        return Err(ApiError::HeadTooLarge(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the headers are {headers} bytes; at most {MAX_HEADERS} are taken"),
        ));
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::access::{ApiKey, Rate, Scope};
    use crate::plan::View;

    fn caller(rate: Option<f64>) -> Caller {
        Caller {
            key: Some(Arc::new(ApiKey {
                key_id: format!("k{rate:?}"),
                name: "k".into(),
                scope: Scope::Read,
                datasets: vec![],
                conditions: vec![],
                rate: rate.and_then(Rate::per_second),
                expires_at: None,
            })),
            addr: None,
            view: Arc::new(View::everything()),
        }
    }

    #[test]
    fn policies_hold_a_seconds_worth_or_one_request() {
        assert_eq!(
            Policy::of(100.0),
            Policy {
                quota: 100,
                window: 1
            }
        );
        assert_eq!(
            Policy::of(2.5),
            Policy {
                quota: 3,
                window: 2
            }
        );
        assert_eq!(
            Policy::of(1.0 / 60.0),
            Policy {
                quota: 1,
                window: 60
            }
        );
    }

    #[test]
    fn a_key_gets_its_burst_then_is_refused_with_a_wait() {
        let guard = Guard::new(RateSettings {
            per_key: Some(1000.0),
            per_address: None,
            work_total: 1,
            work_per_caller: 1,
        });
        let slow = caller(Some(3.0));
        let remaining: Vec<u32> = (0..3)
            .map(|_| guard.admit(&slow).unwrap().unwrap().remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        match guard.admit(&slow) {
            Err(ApiError::RateLimited {
                limit,
                window,
                retry_after,
                ..
            }) => {
                assert_eq!((limit, window, retry_after), (3, 1, 1));
            }
            other => panic!("{:?}", other.map(|h| h.map(|h| h.remaining))),
        }
        // Another key has its own allowance, at the server's default.
        assert_eq!(
            guard.admit(&caller(None)).unwrap().unwrap().policy.quota,
            1000
        );
        // An address without a key is not limited when no rate is set.
        let anonymous = Caller {
            key: None,
            ..caller(None)
        };
        assert!(guard.admit(&anonymous).unwrap().is_none());
    }

    #[tokio::test]
    async fn expensive_work_waits_its_turn_then_is_refused() {
        let guard = Guard::new(RateSettings {
            per_key: None,
            per_address: None,
            work_total: 2,
            work_per_caller: 1,
        });
        let (a, b, c) = (caller(Some(1.0)), caller(Some(2.0)), caller(Some(3.0)));
        let first = guard.turn(&a).await.unwrap();
        tokio::time::pause();
        // The same caller again: its own bound is full.
        assert!(
            matches!(guard.turn(&a).await, Err(ApiError::Busy(m)) if m.starts_with("this caller"))
        );
        let _second = guard.turn(&b).await.unwrap();
        // A third caller: the server's bound is full.
        assert!(
            matches!(guard.turn(&c).await, Err(ApiError::Busy(m)) if m.starts_with("the server"))
        );
        drop(first);
        assert!(guard.turn(&c).await.is_ok());
    }
}
