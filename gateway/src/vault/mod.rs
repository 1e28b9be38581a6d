//! Vault: where the real provider keys live (DESIGN §6). A shared service of the upstream stage.
//!
//! Backends: `file` (TOML `[keys]` table, 0600, refused when group/world readable; re-read when
//! it changes, so `gateway keys set` needs no restart) and `env` (`<prefix><NAME>`, upper case,
//! `-` as `_`). Which key a request gets: the first `[[vault.select]]` rule matching the provider
//! and the caller's identity (team keys), else the provider's `key`.
//!
//! A third backend, `hashicorp`, reads a KV v2 secret from HashiCorp Vault ([`hashicorp`]).
//!
//! An entry for Vertex AI holds a Google service-account JSON key (stored as one line of
//! JSON); requests get an access token minted from it ([`gcp`], [`Vault::credential`]).
//!
//! A key is a [`Secret`]: its `Debug` and `Display` print `[redacted]`, its memory is zeroed on
//! drop, and the only way to the text is [`Secret::expose`]. An [`Entry`] is a key and the
//! account it bills (`organization`, `project`): the provider's billing headers are set from it,
//! never from the client.
//!
//! The file's entries, both forms in one `[keys]` table:
//!
//! ```toml
//! [keys]
//! openai = "sk-..."                 # the key alone
//!
//! [keys.openai-prod]                # the key and the account it bills
//! value = "sk-proj-..."
//! organization = "org-..."          # OpenAI-Organization
//! project = "proj_..."              # OpenAI-Project; Gemini: x-goog-user-project
//! ```

use std::{
    collections::BTreeMap,
    fmt,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

pub mod gcp;
pub mod hashicorp;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{provider::Provider, redirect::identity::Identity};

/// A credential. Never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One vault entry: the key, and the account it bills where the provider has headers for that
/// ([`crate::provider::adapter::Adapter::billing_headers`]).
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: Secret,
    pub organization: Option<String>,
    pub project: Option<String>,
}

impl Entry {
    pub fn new(key: Secret) -> Self {
        Self {
            key,
            organization: None,
            project: None,
        }
    }

    fn is_plain(&self) -> bool {
        self.organization.is_none() && self.project.is_none()
    }
}

/// Marks the messages [`Entry`]'s deserializer writes itself: they name the mistake and never a
/// value, so [`parse_reason`] may pass them on.
const ENTRY_ERR: &str = "gateway vault entry: ";

/// A billing field: an identifier, so visible ASCII without spaces.
fn valid_field(v: &str) -> bool {
    !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic())
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quoted key, or a table with `value`")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Entry, E> {
                Ok(Entry::new(Secret::new(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entry, A::Error> {
                let bad = |what: &str| A::Error::custom(format!("{ENTRY_ERR}{what}"));
                let (mut value, mut organization, mut project) = (None, None, None);
                while let Some(k) = m.next_key::<String>()? {
                    let (slot, field) = match k.as_str() {
                        "value" => (&mut value, "value"),
                        "organization" => (&mut organization, "organization"),
                        "project" => (&mut project, "project"),
                        _ => {
                            return Err(bad(
                                "an entry with a field other than value, organization and project",
                            ));
                        }
                    };
                    // The deserializer's own message would quote what it found.
                    let v: Zeroizing<String> =
                        m.next_value::<String>().map(Zeroizing::new).map_err(|_| {
                            bad(&format!("an entry whose `{field}` is not a quoted string"))
                        })?;
                    *slot = Some(v);
                }
                let value = value.ok_or_else(|| bad("an entry table without `value`"))?;
                // A service-account key (JSON, spaces in its PEM lines) is checked where it
                // is used ([`gcp`]); a key is one token.
                let json = value.starts_with('{') && !value.chars().any(char::is_control);
                if !json
                    && (value.is_empty()
                        || value.chars().any(|c| c.is_whitespace() || c.is_control()))
                {
                    return Err(bad(
                        "an entry whose `value` is empty or has whitespace or control characters",
                    ));
                }
                let field = |v: Option<Zeroizing<String>>, name: &str| match v {
                    Some(v) if !valid_field(&v) => Err(bad(&format!(
                        "an entry whose `{name}` is empty or not visible ASCII without spaces"
                    ))),
                    v => Ok(v.map(|v| v.to_string())),
                };
                Ok(Entry {
                    key: Secret::new(value.as_str()),
                    organization: field(organization, "organization")?,
                    project: field(project, "project")?,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// How an entry is written back: the plain form when it has no billing fields.
#[derive(Serialize)]
#[serde(untagged)]
enum EntryOut<'a> {
    Plain(&'a str),
    Table {
        value: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        organization: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        project: Option<&'a str>,
    },
}

impl<'a> From<&'a Entry> for EntryOut<'a> {
    fn from(e: &'a Entry) -> Self {
        if e.is_plain() {
            EntryOut::Plain(e.key.expose())
        } else {
            EntryOut::Table {
                value: e.key.expose(),
                organization: e.organization.as_deref(),
                project: e.project.as_deref(),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("vault file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("vault file {path} is not valid TOML with a [keys] table: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("key name `{0}` is invalid: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("the key value is empty or contains whitespace or control characters")]
    BadValue,
    #[error("the `{0}` vault backend cannot be changed from the command line")]
    ReadOnly(&'static str),
    #[error(transparent)]
    Hashicorp(#[from] hashicorp::HashicorpError),
    #[error(transparent)]
    Gcp(#[from] gcp::GcpError),
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    File,
    Env,
    Hashicorp,
}

/// Pick a key by identity: every given field must match.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Select {
    pub provider: Option<String>,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub gid: Option<u32>,
    /// A group name: the caller's primary group, or its user is a listed member (/etc/group).
    pub group: Option<String>,
    pub unit: Option<String>,
    /// cgroup path prefix (as in the journal: relative to the cgroup v2 root, starting with '/').
    pub cgroup: Option<String>,
    pub pod_uid: Option<String>,
    pub key: String,
}

impl Select {
    pub fn matches(&self, provider: &str, id: &Identity) -> bool {
        self.provider.as_deref().is_none_or(|p| p == provider)
            && self.gid.is_none_or(|g| g == id.gid)
            && self
                .group
                .as_deref()
                .is_none_or(|g| crate::policy::scan::in_group(g, id))
            && crate::redirect::identity::Match {
                uid: self.uid,
                user: self.user.as_deref(),
                unit: self.unit.as_deref(),
                cgroup: self.cgroup.as_deref(),
                pod_uid: self.pod_uid.as_deref(),
            }
            .matches(id)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    pub backend: BackendKind,
    /// File backend: the TOML file (default `<state_dir>/vault.toml`).
    pub file: Option<PathBuf>,
    /// Env backend: variable name prefix.
    pub env_prefix: String,
    #[serde(rename = "select")]
    pub selects: Vec<Select>,
    /// The `hashicorp` backend's settings.
    pub hashicorp: hashicorp::HashicorpConfig,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::File,
            file: None,
            env_prefix: "GATEWAY_KEY_".into(),
            selects: Vec::new(),
            hashicorp: hashicorp::HashicorpConfig::default(),
        }
    }
}

/// The env backend's billing fields: `<PREFIX><NAME>__ORGANIZATION`, `..__PROJECT`.
const ENV_ORGANIZATION: &str = "__ORGANIZATION";
const ENV_PROJECT: &str = "__PROJECT";

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: BTreeMap<String, Entry>,
}

#[derive(Serialize)]
struct KeysFileOut<'a> {
    keys: BTreeMap<&'a str, EntryOut<'a>>,
}

struct Cached {
    /// (mtime, inode, size): a file renamed into place is a new inode even when the
    /// file system's timestamps are too coarse to tell (ext2/3: one second).
    stamp: (Option<SystemTime>, u64, u64),
    keys: BTreeMap<String, Entry>,
}

/// What the watch thread reports: a change since the last read, or that it stopped (from then
/// on every lookup checks the file).
struct Watch {
    changed: AtomicBool,
    dead: AtomicBool,
}

pub struct Vault {
    kind: BackendKind,
    file: PathBuf,
    env_prefix: String,
    selects: Vec<Select>,
    cache: Mutex<Option<Cached>>,
    /// Set by the watcher thread ([`Vault::watch`]) when the file may have changed; without a
    /// watcher every lookup checks the file's mtime.
    watch: Option<Arc<Watch>>,
    hashicorp: Option<hashicorp::Hashicorp>,
    /// Mints access tokens from service-account entries (the daemon's; see [`Self::enable_gcp`]).
    gcp: Option<gcp::Minter>,
}

impl Vault {
    pub fn new(cfg: &VaultConfig, state_dir: &Path) -> Result<Self, VaultError> {
        let hashicorp = match cfg.backend {
            BackendKind::Hashicorp => Some(hashicorp::Hashicorp::new(cfg.hashicorp.clone())?),
            _ => None,
        };
        Ok(Self {
            kind: cfg.backend,
            file: cfg
                .file
                .clone()
                .unwrap_or_else(|| state_dir.join("vault.toml")),
            env_prefix: cfg.env_prefix.clone(),
            selects: cfg.selects.clone(),
            cache: Mutex::new(None),
            watch: None,
            hashicorp,
            gcp: None,
        })
    }

    /// For the daemon: watch the vault file's directory (inotify) from a thread, so a lookup
    /// re-reads the file only after the kernel reported a change to it instead of a `stat` per
    /// request (measured: ~4% of the CPU a proxied request costs). `gateway keys set` renames
    /// a new file into place, which the watch sees as soon as it happens. If the watch cannot
    /// be set up (no such directory yet, inotify limits), lookups keep checking the mtime.
    pub fn watch(&mut self) {
        if self.kind != BackendKind::File {
            return;
        }
        let Some(dir) = self.file.parent() else {
            return;
        };
        use nix::sys::inotify::{AddWatchFlags as F, InitFlags, Inotify};
        let ino = match Inotify::init(InitFlags::IN_CLOEXEC) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "vault: no inotify; checking the file on every request");
                return;
            }
        };
        let flags = F::IN_CLOSE_WRITE
            | F::IN_MOVED_TO
            | F::IN_MOVED_FROM
            | F::IN_DELETE
            | F::IN_DELETE_SELF
            | F::IN_MOVE_SELF
            | F::IN_CREATE
            | F::IN_ATTRIB
            | F::IN_MODIFY;
        // Any change in the file's directory counts (not only events naming the file): a
        // Kubernetes Secret volume swaps a `..data` symlink and never touches `vault.toml`
        // itself. A symlinked file is watched where it points to as well.
        let mut dirs = vec![dir.to_path_buf()];
        if let Ok(real) = std::fs::canonicalize(&self.file)
            && let Some(rd) = real.parent()
            && rd != dir
        {
            dirs.push(rd.to_path_buf());
        }
        for d in &dirs {
            if let Err(e) = ino.add_watch(d.as_path(), flags) {
                tracing::warn!(dir = %d.display(), error = %e, "vault: cannot watch the directory; checking the file on every request");
                return;
            }
        }
        let watch = Arc::new(Watch {
            changed: AtomicBool::new(true),
            dead: AtomicBool::new(false),
        });
        let w = watch.clone();
        let spawned = std::thread::Builder::new()
            .name("gw-vault-watch".into())
            .spawn(move || {
                loop {
                    match ino.read_events() {
                        Ok(events) if !events.is_empty() => {
                            w.changed.store(true, Ordering::Release);
                        }
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "vault: watch failed; checking the file on every request");
                            w.dead.store(true, Ordering::Release);
                            return;
                        }
                    }
                }
            });
        if spawned.is_ok() {
            self.watch = Some(watch);
        }
    }

    /// For the daemon: access tokens are minted from service-account entries through `minter`
    /// (which reaches the token endpoints as the upstream stage reaches providers).
    pub fn enable_gcp(&mut self, minter: gcp::Minter) {
        self.gcp = Some(minter);
    }

    /// The entry named `name` as it goes on a request to `provider`: as stored, or for Vertex
    /// AI (whose entry is a service-account key) with an access token minted from it as its
    /// key. `Ok(None)` when there is no such entry.
    pub async fn credential(
        &self,
        name: &str,
        provider: &Provider,
    ) -> Result<Option<Entry>, VaultError> {
        let Some(entry) = self.entry(name).await? else {
            return Ok(None);
        };
        if provider.api != crate::provider::Api::Vertex {
            return Ok(Some(entry));
        }
        let minter = self.gcp.as_ref().ok_or(gcp::GcpError::NoClient)?;
        let token = minter.token(name, &entry.key).await?;
        Ok(Some(Entry {
            key: token,
            organization: None,
            project: entry.project,
        }))
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Check the backend can serve (file mode and syntax); run at start so a bad vault stops
    /// the daemon before any request.
    pub fn check(&self) -> Result<(), VaultError> {
        match self.kind {
            BackendKind::File if self.file.exists() => self.load_file().map(|_| ()),
            _ => Ok(()),
        }
    }

    /// The name of the key for this provider and caller, if any is configured.
    pub fn key_name(&self, provider: &Provider, id: &Identity) -> Option<String> {
        self.selects
            .iter()
            .find(|s| s.matches(&provider.name, id))
            .map(|s| s.key.clone())
            .or_else(|| provider.key.clone())
    }

    /// The secret named `name`; `Ok(None)` when the backend has no such key.
    pub async fn get(&self, name: &str) -> Result<Option<Secret>, VaultError> {
        Ok(self.entry(name).await?.map(|e| e.key))
    }

    /// The entry named `name` (its key and billing fields); `Ok(None)` when there is none.
    pub async fn entry(&self, name: &str) -> Result<Option<Entry>, VaultError> {
        if let Some(h) = &self.hashicorp {
            return Ok(h.get(name).await?);
        }
        self.get_local(name)
    }

    fn get_local(&self, name: &str) -> Result<Option<Entry>, VaultError> {
        match self.kind {
            BackendKind::Hashicorp => Ok(None),
            BackendKind::Env => {
                // `<PREFIX><NAME>`, and the billing fields in `<PREFIX><NAME>__ORGANIZATION` and
                // `<PREFIX><NAME>__PROJECT`.
                let var = format!(
                    "{}{}",
                    self.env_prefix,
                    name.to_ascii_uppercase().replace(['-', '.'], "_")
                );
                let Some(value) = std::env::var(&var).ok().filter(|v| !v.is_empty()) else {
                    return Ok(None);
                };
                let field = |suffix: &str| {
                    std::env::var(format!("{var}{suffix}"))
                        .ok()
                        .filter(|v| valid_field(v))
                };
                Ok(Some(Entry {
                    key: Secret::new(value),
                    organization: field(ENV_ORGANIZATION),
                    project: field(ENV_PROJECT),
                }))
            }
            BackendKind::File => {
                // Watched and unchanged since the last read: the cache as it is.
                let watch = self
                    .watch
                    .as_ref()
                    .filter(|w| !w.dead.load(Ordering::Acquire));
                if let Some(w) = watch
                    && !w.changed.load(Ordering::Acquire)
                {
                    let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(c) = cache.as_ref() {
                        return Ok(c.keys.get(name).cloned());
                    }
                }
                // Cleared before the file is read: a change during the read sets it again.
                if let Some(w) = watch {
                    w.changed.store(false, Ordering::Release);
                }
                // A file that cannot be stat'ed counts as absent, as `exists()` would have it.
                let Ok(meta) = std::fs::metadata(&self.file) else {
                    *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return Ok(None);
                };
                let stamp = (
                    meta.modified().ok(),
                    std::os::unix::fs::MetadataExt::ino(&meta),
                    meta.len(),
                );
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache
                    .as_ref()
                    // Watched: here only after a reported change, so read it in any case.
                    .is_none_or(|c| watch.is_some() || c.stamp != stamp || stamp.0.is_none())
                {
                    // A file that does not load fails every request (closed) until it is fixed.
                    *cache = None;
                    let keys = self.load_file()?;
                    *cache = Some(Cached { stamp, keys });
                }
                Ok(cache.as_ref().and_then(|c| c.keys.get(name).cloned()))
            }
        }
    }

    fn load_file(&self) -> Result<BTreeMap<String, Entry>, VaultError> {
        let io = |source| VaultError::Io {
            path: self.file.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.file).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(VaultError::Permissions {
                path: self.file.clone(),
                mode,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(&self.file).map_err(io)?);
        let parsed: KeysFile = toml::from_str(&text).map_err(|e| VaultError::Parse {
            path: self.file.clone(),
            reason: parse_reason(&text, &e),
        })?;
        Ok(parsed.keys)
    }

    fn writable(&self) -> Result<(), VaultError> {
        match self.kind {
            BackendKind::File => Ok(()),
            BackendKind::Env => Err(VaultError::ReadOnly("env")),
            BackendKind::Hashicorp => Err(VaultError::ReadOnly("hashicorp")),
        }
    }

    /// Names of the stored keys (never the values).
    pub async fn list(&self) -> Result<Vec<String>, VaultError> {
        if let Some(h) = &self.hashicorp {
            return Ok(h.list().await?);
        }
        self.list_local()
    }

    fn list_local(&self) -> Result<Vec<String>, VaultError> {
        match self.kind {
            BackendKind::Hashicorp => Ok(Vec::new()),
            BackendKind::Env => Ok(std::env::vars()
                .filter_map(|(k, _)| {
                    k.strip_prefix(&self.env_prefix)
                        .filter(|n| !n.ends_with(ENV_ORGANIZATION) && !n.ends_with(ENV_PROJECT))
                        .map(str::to_ascii_lowercase)
                })
                .collect()),
            BackendKind::File if !self.file.exists() => Ok(Vec::new()),
            BackendKind::File => Ok(self.load_file()?.into_keys().collect()),
        }
    }

    pub fn set(&self, name: &str, value: &Secret) -> Result<(), VaultError> {
        self.writable()?;
        if !valid_name(name) {
            return Err(VaultError::BadName(name.into()));
        }
        let v = value.expose();
        // A JSON object is a service-account key: checked, and stored as one line.
        let normalised;
        let value = if v.trim_start().starts_with('{') {
            normalised = Secret::new(gcp::normalise(v)?.as_str());
            &normalised
        } else if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(VaultError::BadValue);
        } else {
            value
        };
        let mut keys = if self.file.exists() {
            self.load_file()?
        } else {
            BTreeMap::new()
        };
        // A new value for an entry keeps the account it bills.
        keys.entry(name.to_string())
            .and_modify(|e| e.key = value.clone())
            .or_insert_with(|| Entry::new(value.clone()));
        self.store(&keys)
    }

    /// Remove a key; returns whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool, VaultError> {
        self.writable()?;
        if !self.file.exists() {
            return Ok(false);
        }
        let mut keys = self.load_file()?;
        let had = keys.remove(name).is_some();
        if had {
            self.store(&keys)?;
        }
        Ok(had)
    }

    /// Write atomically: a 0600 temporary file in the same directory, then rename.
    fn store(&self, keys: &BTreeMap<String, Entry>) -> Result<(), VaultError> {
        let io = |source| VaultError::Io {
            path: self.file.clone(),
            source,
        };
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let plain = KeysFileOut {
            keys: keys.iter().map(|(k, v)| (k.as_str(), v.into())).collect(),
        };
        let text = Zeroizing::new(toml::to_string(&plain).map_err(|e| VaultError::Parse {
            path: self.file.clone(),
            reason: e.to_string(),
        })?);
        let tmp = self
            .file
            .with_extension(format!("tmp.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        std::fs::rename(&tmp, &self.file).map_err(io)?;
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }
}

/// Why the vault file does not parse, without a byte of its contents: toml's messages quote
/// the offending value or line ("invalid type: integer `123…`", a caret under the line), and
/// every value in this file is a key. The line number and the kind of mistake are enough.
fn parse_reason(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message();
    let what = if let Some(m) = msg.strip_prefix(ENTRY_ERR) {
        m
    } else if msg.starts_with("invalid type") {
        "a value that is not a quoted string"
    } else if msg.contains("duplicate key") {
        "a key defined twice"
    } else if msg.contains("missing field") {
        "no [keys] table"
    } else if msg.contains("unknown field") {
        "a section or key the vault file does not have"
    } else {
        "a TOML syntax error"
    };
    let at = e
        .span()
        .map(|s| {
            let upto = s.start.min(text.len());
            let line = text.as_bytes()[..upto]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            format!(" at line {line}")
        })
        .unwrap_or_default();
    format!("{what}{at} (the contents are not quoted: they hold keys)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(dir: &Path) -> Vault {
        Vault::new(&VaultConfig::default(), dir).unwrap()
    }

    fn get(v: &Vault, name: &str) -> Option<String> {
        v.get_local(name)
            .unwrap()
            .map(|s| s.key.expose().to_string())
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn set_list_get_rm_with_0600() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(d.path());
        assert_eq!(
            v.get_local("openai")
                .unwrap()
                .map(|s| s.key.expose().to_string()),
            None
        );
        v.set("openai", &Secret::new("sk-one")).unwrap();
        v.set("anthropic", &Secret::new("sk-ant-two")).unwrap();
        let mode = std::fs::metadata(v.file()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            v.list_local().unwrap(),
            vec!["anthropic".to_string(), "openai".to_string()]
        );
        assert_eq!(
            v.get_local("openai").unwrap().unwrap().key.expose(),
            "sk-one"
        );
        assert!(v.remove("openai").unwrap());
        assert!(!v.remove("openai").unwrap());
        assert!(v.get_local("openai").unwrap().is_none());
        assert!(matches!(
            v.set("bad name", &Secret::new("x")),
            Err(VaultError::BadName(_))
        ));
        assert!(matches!(
            v.set("ok", &Secret::new("has space")),
            Err(VaultError::BadValue)
        ));
        assert!(matches!(
            v.set("ok", &Secret::new("")),
            Err(VaultError::BadValue)
        ));
    }

    #[test]
    fn a_readable_file_is_refused_and_errors_hold_no_key() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(d.path());
        v.set("openai", &Secret::new("sk-secret-value")).unwrap();
        std::fs::set_permissions(v.file(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = v.check().unwrap_err().to_string();
        assert!(
            e.contains("chmod 600") && !e.contains("sk-secret-value"),
            "{e}"
        );
        // Malformed in every way a hand-edited file can be: no error quotes a value.
        for (text, want) in [
            (
                "[keys]\nopenai = sk-secret-value-unquoted\n",
                "syntax error at line 2",
            ),
            (
                "[keys]\nopenai = 4242424242424242\n",
                "not a quoted string at line 2",
            ),
            (
                "[keys]\nopenai = [\"sk-secret-value-in-a-list\"]\n",
                "not a quoted string",
            ),
            (
                "[keys]\nopenai = { v = \"sk-secret-value-inline\" }\n",
                "a field other than value, organization and project at line 2",
            ),
            (
                "[keys]\na = \"x\"\n\n[keys.openai]\norganization = \"org-sk-secret-value\"\n",
                "an entry table without `value` at line 4",
            ),
            (
                "[keys.openai]\nvalue = 4242424242424242\n",
                "`value` is not a quoted string at line 1",
            ),
            (
                "[keys.openai]\nvalue = \"sk-secret-value\"\nproject = [\"sk-secret-value-p\"]\n",
                "`project` is not a quoted string at line 1",
            ),
            (
                "[keys.openai]\nvalue = \"sk-secret-value\"\norganization = \"org sk-secret-value\"\n",
                "`organization` is empty or not visible ASCII",
            ),
            (
                "[keys.openai]\nvalue = \"sk-secret-value x\"\n",
                "`value` is empty or has whitespace",
            ),
            (
                "[keys.openai]\nvalue = \"sk-secret-value\"\nvalue = \"sk-secret-value-2\"\n",
                "defined twice",
            ),
            (
                "[keys.openai.nested]\nvalue = \"sk-secret-value\"\n",
                "a field other than value",
            ),
            (
                "[keys]\nopenai = \"sk-secret-value-1\"\nopenai = \"sk-secret-value-2\"\n",
                "defined twice",
            ),
            ("[keys]\nopenai = \"sk-secret-value-open\n", "syntax error"),
            (
                "openai = \"sk-secret-value-top\"\n",
                "a section or key the vault file does not have",
            ),
        ] {
            std::fs::write(v.file(), text).unwrap();
            std::fs::set_permissions(v.file(), std::fs::Permissions::from_mode(0o600)).unwrap();
            let e = v.check().unwrap_err().to_string();
            assert!(
                !e.contains("sk-secret-value") && !e.contains("4242") && e.contains(want),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn entries_carry_billing_fields_in_the_table_form_and_keep_them_across_set() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(d.path());
        std::fs::write(
            v.file(),
            "[keys]\nplain = \"sk-plain\"\ninline = { value = \"sk-inline\", project = \"p-1\" }\n\n\
             [keys.openai-prod]\nvalue = \"sk-prod\"\norganization = \"org-abc\"\nproject = \"proj_123\"\n",
        )
        .unwrap();
        std::fs::set_permissions(v.file(), std::fs::Permissions::from_mode(0o600)).unwrap();
        v.check().unwrap();
        let e = |name: &str| v.get_local(name).unwrap().unwrap();
        let show = |e: Entry| {
            (
                e.key.expose().to_string(),
                e.organization.clone(),
                e.project.clone(),
            )
        };
        assert_eq!(show(e("plain")), ("sk-plain".into(), None, None));
        assert_eq!(
            show(e("inline")),
            ("sk-inline".into(), None, Some("p-1".into()))
        );
        assert_eq!(
            show(e("openai-prod")),
            (
                "sk-prod".into(),
                Some("org-abc".into()),
                Some("proj_123".into())
            )
        );
        assert!(!format!("{:?}", e("openai-prod")).contains("sk-prod"));
        // A new value keeps the account it bills; the file stays in both forms.
        v.set("openai-prod", &Secret::new("sk-prod-2")).unwrap();
        v.set("new", &Secret::new("sk-new")).unwrap();
        assert_eq!(
            show(e("openai-prod")),
            (
                "sk-prod-2".into(),
                Some("org-abc".into()),
                Some("proj_123".into())
            )
        );
        assert_eq!(show(e("new")), ("sk-new".into(), None, None));
        let text = std::fs::read_to_string(v.file()).unwrap();
        assert!(text.contains("plain = \"sk-plain\""), "{text}");
        assert_eq!(
            v.list_local().unwrap(),
            vec!["inline", "new", "openai-prod", "plain"]
        );
        let reread = vault(d.path());
        assert_eq!(
            show(reread.get_local("inline").unwrap().unwrap()).2,
            Some("p-1".into())
        );
    }

    #[test]
    fn the_file_is_reread_when_it_changes() {
        let d = tempfile::tempdir().unwrap();
        let v = vault(d.path());
        v.set("openai", &Secret::new("first")).unwrap();
        assert_eq!(get(&v, "openai").as_deref(), Some("first"));
        let other = vault(d.path());
        std::thread::sleep(std::time::Duration::from_millis(20));
        other.set("openai", &Secret::new("second")).unwrap();
        assert_eq!(get(&v, "openai").as_deref(), Some("second"));
    }

    /// The watched vault (the daemon's): every kind of change is seen, shortly after it
    /// happens (the watch thread reports it).
    #[test]
    fn a_watched_file_is_reread_after_each_change_and_fails_closed_when_broken() {
        let d = tempfile::tempdir().unwrap();
        let mut v = vault(d.path());
        v.watch();
        assert!(v.watch.is_some(), "inotify watch set up");
        let eventually = |want: Option<&str>| {
            let t = std::time::Instant::now();
            loop {
                let got = v.get_local("openai").ok().flatten().map(|e| e.key);
                if got.as_ref().map(|s| s.expose()) == want {
                    return;
                }
                assert!(
                    t.elapsed() < std::time::Duration::from_secs(5),
                    "vault still says {:?}, want {want:?}",
                    got.map(|s| s.expose().to_string())
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        eventually(None);
        let other = vault(d.path());
        other.set("openai", &Secret::new("first")).unwrap();
        eventually(Some("first"));
        for _ in 0..3 {
            assert_eq!(get(&v, "openai").as_deref(), Some("first"), "cached");
        }
        other.set("openai", &Secret::new("second")).unwrap();
        eventually(Some("second"));
        // Written in place (an editor), not renamed.
        std::fs::write(other.file(), "[keys]\nopenai = \"third\"\n").unwrap();
        eventually(Some("third"));
        // Broken in place: every lookup fails until it is fixed.
        std::fs::write(other.file(), "[keys]\nopenai = third-unquoted\n").unwrap();
        let t = std::time::Instant::now();
        while v.get_local("openai").is_ok() {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(5),
                "broken file noticed"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            v.get_local("openai").is_err(),
            "still failing, not the old key"
        );
        std::fs::write(other.file(), "[keys]\nopenai = \"fourth\"\n").unwrap();
        eventually(Some("fourth"));
        std::fs::remove_file(other.file()).unwrap();
        eventually(None);
        other.set("openai", &Secret::new("fifth")).unwrap();
        eventually(Some("fifth"));
    }

    /// A Kubernetes Secret volume: `vault.toml -> ..data/vault.toml`, `..data -> ..<ts>`, an
    /// update writes a new `..<ts>` and renames a new `..data` link over the old one.
    #[test]
    fn a_watched_secret_volume_is_reread_when_its_data_link_is_swapped() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("secret");
        let write = |ts: &str, key: &str| {
            let data = dir.join(ts);
            std::fs::create_dir_all(&data).unwrap();
            let f = data.join("vault.toml");
            std::fs::write(&f, format!("[keys]\nopenai = \"{key}\"\n")).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
            let tmp = dir.join("..data_tmp");
            symlink(ts, &tmp).unwrap();
            std::fs::rename(&tmp, dir.join("..data")).unwrap();
        };
        std::fs::create_dir_all(&dir).unwrap();
        write("..2026_11_26_1", "first");
        symlink("..data/vault.toml", dir.join("vault.toml")).unwrap();
        let cfg = VaultConfig {
            file: Some(dir.join("vault.toml")),
            ..Default::default()
        };
        let mut v = Vault::new(&cfg, d.path()).unwrap();
        v.watch();
        assert_eq!(get(&v, "openai").as_deref(), Some("first"));
        write("..2026_11_26_2", "second");
        let t = std::time::Instant::now();
        while get(&v, "openai").as_deref() != Some("second") {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(5),
                "the swapped secret is read"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn selection_by_identity_then_provider_default() {
        let d = tempfile::tempdir().unwrap();
        let cfg = VaultConfig {
            selects: vec![
                Select {
                    provider: Some("openai".into()),
                    user: Some("alice".into()),
                    key: "openai-team-a".into(),
                    ..Default::default()
                },
                Select {
                    cgroup: Some("/system.slice/ci.service".into()),
                    key: "ci-key".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let v = Vault::new(&cfg, d.path()).unwrap();
        let p = Provider {
            name: "openai".into(),
            hosts: vec![],
            addrs: vec![],
            key: Some("openai".into()),
            api: crate::provider::Api::OpenAi,
            shared: true,
            addrs_shared: false,
        };
        let alice = Identity {
            user: Some("alice".into()),
            ..Default::default()
        };
        let ci = Identity {
            cgroup: Some("/system.slice/ci.service/job-1".into()),
            ..Default::default()
        };
        // A group by name: root's primary group is gid 0 on every Linux.
        let by_group = Select {
            group: Some("root".into()),
            key: "root-group-key".into(),
            ..Default::default()
        };
        assert!(by_group.matches("openai", &Identity::default()));
        assert!(!by_group.matches(
            "openai",
            &Identity {
                gid: 65534,
                ..Default::default()
            }
        ));
        let ci_lookalike = Identity {
            cgroup: Some("/system.slice/ci.service-evil".into()),
            ..Default::default()
        };
        assert_eq!(v.key_name(&p, &alice).as_deref(), Some("openai-team-a"));
        assert_eq!(v.key_name(&p, &ci).as_deref(), Some("ci-key"));
        assert_eq!(v.key_name(&p, &ci_lookalike).as_deref(), Some("openai"));
        assert_eq!(
            v.key_name(&p, &Identity::default()).as_deref(),
            Some("openai")
        );
    }

    #[test]
    fn env_backend() {
        let d = tempfile::tempdir().unwrap();
        // The crate forbids unsafe (set_var), so read a variable every process has: PATH is
        // prefix "PAT" + name "h".
        let cfg = VaultConfig {
            backend: BackendKind::Env,
            env_prefix: "PAT".into(),
            ..Default::default()
        };
        let v = Vault::new(&cfg, d.path()).unwrap();
        assert_eq!(
            v.get_local("h").unwrap().unwrap().key.expose(),
            std::env::var("PATH").unwrap()
        );
        assert!(v.get_local("nothing-here").unwrap().is_none());
        assert!(matches!(
            v.set("x", &Secret::new("y")),
            Err(VaultError::ReadOnly("env"))
        ));
    }
}
