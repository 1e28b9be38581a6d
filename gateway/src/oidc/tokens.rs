//! The signed-in user's tokens: `$XDG_CONFIG_HOME/gateway/tokens.json` (or
//! `~/.config/gateway/tokens.json`), the directory 0700, the file 0600, written atomically
//! (a temporary file in the same directory, synced, renamed over). Never printed.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::OidcError;

/// What `gateway login` keeps.
#[derive(Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub issuer: String,
    pub client_id: String,
    pub id_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// The ID token's `exp`, Unix seconds.
    pub expires: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("id_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires", &self.expires)
            .finish()
    }
}

fn err(path: &Path, reason: impl std::fmt::Display) -> OidcError {
    OidcError::Tokens {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Where the tokens live for this user.
pub fn default_path() -> Result<PathBuf, OidcError> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".config"),
            None => {
                return Err(OidcError::Login(
                    "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the tokens".into(),
                ));
            }
        },
    };
    Ok(base.join("gateway").join("tokens.json"))
}

/// The tokens at `path`; `None` when nobody signed in. A file others may read is refused.
pub fn load(path: &Path) -> Result<Option<Tokens>, OidcError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(path, e)),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(err(
            path,
            format!(
                "is readable by others (mode {:o}): remove it and sign in again",
                meta.permissions().mode() & 0o777
            ),
        ));
    }
    let text = std::fs::read(path).map_err(|e| err(path, e))?;
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        err(
            path,
            format!("is not a token file ({e}): `gateway logout`, then sign in again"),
        )
    })
}

/// Write `t` to `path` atomically, 0600, its directory 0700.
pub fn save(path: &Path, t: &Tokens) -> Result<(), OidcError> {
    let dir = path
        .parent()
        .ok_or_else(|| err(path, "has no parent directory"))?;
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| err(dir, e))?;
    let tmp = dir.join(format!(".tokens.json.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(t).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(path, e)
    })
}

/// Remove the tokens; `false` when there were none.
pub fn remove(path: &Path) -> Result<bool, OidcError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(err(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_0600_in_a_0700_dir_and_loaded_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("gateway/tokens.json");
        assert!(load(&p).unwrap().is_none());
        let t = Tokens {
            issuer: "https://idp".into(),
            client_id: "c".into(),
            id_token: "header.payload.sig".into(),
            refresh_token: Some("rt".into()),
            expires: 42,
        };
        save(&p, &t).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        let back = load(&p).unwrap().unwrap();
        assert_eq!(back.id_token, t.id_token);
        assert!(
            !format!("{back:?}").contains("payload"),
            "Debug hides the tokens"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            load(&p)
                .unwrap_err()
                .to_string()
                .contains("readable by others")
        );
        assert!(remove(&p).unwrap());
        assert!(!remove(&p).unwrap());
    }
}
