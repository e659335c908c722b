//! Who may do what: API key scopes, the secret's form and its hash, the
//! row conditions and rate a key carries, and the durations keys are given.
//!
//! Secrets are 192 random bits written `clue_` + 48 hex digits; only their
//! SHA-256 is stored. A slow password hash buys nothing for a secret that
//! was never guessable, and a fast one keeps every request's check cheap.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reports, queries, the dashboard, the live stream.
    Read,
    /// The event endpoints.
    Ingest,
    /// Everything, and key management, rollup operations and metrics.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Ingest => "ingest",
            Scope::Admin => "admin",
        }
    }

    /// Whether a key of this scope may do what `needed` allows: admin
    /// covers everything; read and ingest only themselves (a producer's
    /// key reads nothing).
    pub fn covers(self, needed: Scope) -> bool {
        self == Scope::Admin || self == needed
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "read" => Ok(Scope::Read),
            "ingest" => Ok(Scope::Ingest),
            "admin" => Ok(Scope::Admin),
            _ => Err(format!("{s:?} is not a scope; use read, ingest or admin")),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row condition: the key sees only rows whose `dimension` equals `value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Condition {
    pub dimension: String,
    pub value: String,
}

impl std::str::FromStr for Condition {
    type Err = String;
    /// `DIMENSION=VALUE`; the value may hold `=` and be empty.
    fn from_str(s: &str) -> Result<Condition, String> {
        let (dimension, value) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not DIMENSION=VALUE"))?;
        let dimension = dimension.trim();
        let named = !dimension.is_empty()
            && dimension.len() <= 63
            && dimension
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !named {
            return Err(format!("{dimension:?} is not a dimension name"));
        }
        if value.contains('\0') || value.len() > 1000 {
            return Err("the value must be at most 1000 bytes with no NUL".into());
        }
        Ok(Condition {
            dimension: dimension.to_owned(),
            value: value.to_owned(),
        })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.dimension, self.value)
    }
}

/// A rate in requests per second, written `N/s`, `N/min` or `N/h` (`N`
/// alone is per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(f64);

impl Rate {
    pub fn per_second(n: f64) -> Option<Rate> {
        (n.is_finite() && n > 0.0 && n <= 1_000_000.0).then_some(Rate(n))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let (n, per) = s.split_once('/').unwrap_or((s, "s"));
        let seconds = match per.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(format!("{s:?} is not a rate like 10/s, 600/min or 1000/h")),
        };
        n.trim()
            .parse::<f64>()
            .ok()
            .and_then(|n| Rate::per_second(n / seconds))
            .ok_or_else(|| {
                format!("{s:?} is not a rate like 10/s, 600/min or 1000/h (up to 1000000/s)")
            })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.0)
    }
}

/// A duration written `90s`, `30m`, `12h`, `30d` or `52w`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 30m, 12h, 90d or 52w");
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(unit) {
        // Twenty years at most: a key that never expires has no --expires.
        Some(secs) if secs > 0 && secs <= 20 * 366 * 86_400 => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "{s:?} must be more than nothing and at most twenty years"
        )),
    }
}

/// A key's secret, as the client sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// The secret's prefix.
const PREFIX: &str = "clue_";
/// Hex digits after the prefix (192 bits).
const DIGITS: usize = 48;

impl Secret {
    /// A new random secret.
    pub fn generate() -> Secret {
        use rand::RngExt;
        let bytes: [u8; DIGITS / 2] = rand::rng().random();
        Secret(format!("{PREFIX}{}", hex::encode(bytes)))
    }

    /// A secret in clue's form, or `None` (checked before any lookup, so
    /// garbage never reaches the database).
    pub fn parse(s: &str) -> Option<Secret> {
        let digits = s.strip_prefix(PREFIX)?;
        (digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Secret(s.to_ascii_lowercase()))
    }

    /// What is stored and looked up: SHA-256, in hex.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// The public id of the key: the hash's first 12 hex digits (shown in
    /// lists and logs; the secret itself never is).
    pub fn key_id(&self) -> String {
        self.hash()[..12].to_owned()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A stored key, as every request sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub key_id: String,
    pub name: String,
    pub scope: Scope,
    /// The datasets it may touch; empty means all.
    pub datasets: Vec<String>,
    /// Rows it may see, by dimension (all must hold).
    pub conditions: Vec<Condition>,
    pub rate: Option<Rate>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ApiKey {
    /// `key:ID name`, as audit entries and logs name it.
    pub fn actor(&self) -> String {
        format!("key:{} {}", self.key_id, self.name)
    }
}

/// A key's name: what a person calls it.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.trim().is_empty() && name.len() <= 100 && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err("a key's name must be 1 to 100 characters, none of them control characters".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cover_themselves_and_admin_covers_all() {
        use Scope::*;
        let covers: Vec<_> = [Read, Ingest, Admin]
            .iter()
            .flat_map(|a| [Read, Ingest, Admin].map(|b| (a.covers(b) as u8).to_string()))
            .collect();
        assert_eq!(covers.join(""), "100010111");
        assert_eq!("admin".parse::<Scope>(), Ok(Admin));
        assert!("root".parse::<Scope>().is_err());
    }

    #[test]
    fn conditions_rates_and_durations_parse() {
        let c: Condition = "region=North=East".parse().unwrap();
        assert_eq!(
            (c.dimension.as_str(), c.value.as_str()),
            ("region", "North=East")
        );
        assert_eq!("region=".parse::<Condition>().unwrap().value, "");
        for bad in ["region", "=x", "a b=c", "a;drop=1"] {
            assert!(bad.parse::<Condition>().is_err(), "{bad}");
        }
        assert_eq!("600/min".parse::<Rate>().unwrap().get(), 10.0);
        assert_eq!("5".parse::<Rate>().unwrap().get(), 5.0);
        for bad in ["0/s", "-1/s", "x/s", "5/day", "NaN", "inf"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!(parse_duration("90d").unwrap().as_secs(), 90 * 86_400);
        assert_eq!(parse_duration("30m").unwrap().as_secs(), 1800);
        for bad in [
            "",
            "0d",
            "d",
            "12",
            "3y",
            "99999999999999w",
            "1100w",
            "1.5h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_random_checked_and_hashed() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("clue_") && a.expose().len() == 53);
        assert_eq!(Secret::parse(a.expose()), Some(a.clone()));
        assert_eq!(a.hash().len(), 64);
        assert_eq!(a.key_id(), a.hash()[..12]);
        for bad in [
            "",
            "clue_",
            "clue_xyz",
            &a.expose()[..52],
            &format!("{}0", a.expose()),
        ] {
            assert_eq!(Secret::parse(bad), None, "{bad}");
        }
        assert_eq!(format!("{a:?}"), "Secret(…)");
    }
}
