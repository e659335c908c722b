//! `clue keys create | list | revoke | audit`, and the secret that signs
//! dashboard sessions (`CLUE_SECRET_KEY`, or one generated in the home).

use std::path::Path;

use super::args::KeysAction;
use super::{failure, with_db};
use crate::app;
use crate::error::{Error, ErrorKind, PgError};
use crate::serve::access::{self, KeyRequest};
use crate::settings::Settings;
use crate::store::keys;

/// Who runs this CLI, for the audit log: `cli:USER`.
pub(super) fn actor() -> String {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name);
    format!("cli:{name}")
}

pub(super) async fn command(settings: &Settings, action: KeysAction) -> Result<(), Error> {
    match action {
        KeysAction::Create {
            name,
            scope,
            datasets,
            conditions,
            rate,
            expires,
        } => {
            let catalog = app::catalog(settings)?;
            let req = KeyRequest {
                name,
                scope: scope
                    .parse()
                    .map_err(|e: String| failure(ErrorKind::BadInput, e))?,
                datasets,
                conditions,
                rate,
                expires_in: expires,
            };
            // Checked before the database is opened: a typo costs nothing.
            access::check(&catalog, &req)?;
            let created = with_db(settings, async |db| {
                access::create(db, &catalog, req, &actor()).await
            })
            .await?;
            let k = &created.key;
            eprintln!(
                "Created key {} ({}, scope {}). Its secret is shown this once:",
                k.key_id, k.name, k.scope
            );
            println!("{}", created.secret.expose());
            eprintln!("Send it as `Authorization: Bearer <secret>`.");
            Ok(())
        }
        KeysAction::List { all } => {
            let listed = with_db(settings, async |db| {
                let client = db.client().await?;
                Ok(keys::list(&**client, all).await.map_err(PgError::from)?)
            })
            .await?;
            if listed.is_empty() {
                println!("No keys. Create one with `clue keys create --name NAME --scope read`.");
            }
            for l in &listed {
                let k = &l.key;
                let mut limits = Vec::new();
                if !k.datasets.is_empty() {
                    limits.push(format!("datasets {}", k.datasets.join(",")));
                }
                for c in &k.conditions {
                    limits.push(format!("where {c}"));
                }
                if let Some(r) = k.rate {
                    limits.push(format!("rate {r}"));
                }
                if let Some(at) = k.expires_at {
                    limits.push(format!("expires {}", at.format("%Y-%m-%d %H:%M UTC")));
                }
                if let Some(at) = l.revoked_at {
                    limits.push(format!("REVOKED {}", at.format("%Y-%m-%d %H:%M UTC")));
                }
                println!(
                    "{}  {:<24} {:<6} created {} by {}{}",
                    k.key_id,
                    k.name,
                    k.scope,
                    l.created_at.format("%Y-%m-%d %H:%M UTC"),
                    l.created_by,
                    if limits.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", limits.join("; "))
                    }
                );
            }
            Ok(())
        }
        KeysAction::Revoke { key } => {
            let revoked = with_db(settings, async |db| {
                access::revoke(db, &key, &actor()).await
            })
            .await?;
            println!(
                "Revoked key {} ({}); servers stop taking it within 2 seconds.",
                revoked.key_id, revoked.name
            );
            Ok(())
        }
        KeysAction::Audit { limit } => {
            let entries = with_db(settings, async |db| {
                let client = db.client().await?;
                Ok(keys::recent_audit(&**client, limit.clamp(1, 10_000))
                    .await
                    .map_err(PgError::from)?)
            })
            .await?;
            for (at, actor, action, subject) in entries {
                println!(
                    "{}  {action:<12} {subject:<14} by {actor}",
                    at.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
            Ok(())
        }
    }
}

/// The secret that signs sessions: `CLUE_SECRET_KEY`, else the one kept in
/// `<home>/secret_key` (made on first use, readable by its owner only), so
/// sessions outlive a restart.
pub(super) fn session_secret(settings: &Settings) -> Result<String, Error> {
    if let Some(k) = &settings.secret_key {
        return Ok(k.clone());
    }
    let path = settings.home.join("secret_key");
    read_or_make_secret(&path).map_err(|e| {
        failure(
            ErrorKind::Internal,
            format!(
                "cannot keep the session secret in {}: {e} (set CLUE_SECRET_KEY instead)",
                path.display()
            ),
        )
    })
}

fn read_or_make_secret(path: &Path) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let kept = |text: String| {
        let text = text.trim();
        if text.len() >= 32 {
            Ok(text.to_owned())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "it holds no usable secret; delete it to have a new one made",
            ))
        }
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return kept(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let secret = crate::domain::access::Secret::generate().hash();
    // Written whole under a temporary name, then renamed: two servers
    // starting at once keep one secret, never half of one.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            kept(std::fs::read_to_string(path)?)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_secret_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("home/secret_key");
        let first = read_or_make_secret(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(read_or_make_secret(&path).unwrap(), first);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "short").unwrap();
        assert_eq!(
            read_or_make_secret(&path).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
    }
}
