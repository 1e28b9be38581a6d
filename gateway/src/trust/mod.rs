//! Trust bootstrap (DESIGN §5): `gateway ca install | uninstall` make every runtime on a host
//! (or in an image, `--root`) trust the internal CA, and [`probe`] tells `gateway doctor`
//! whether each installed runtime will.
//!
//! What install does, and why each piece:
//! - the system store (Debian and RHEL layouts): curl, OpenSSL, Python's `ssl`, Go, Java
//!   (Debian's ca-certificates-java hook), Claude Code and Codex read it;
//! - `/etc/environment` (pam_env: ssh, `su -l`, services that open a PAM session) and
//!   `/etc/profile.d/gateway-ca.sh` (login shells: GitLab's shell executor) for the runtimes
//!   that do not: `NODE_EXTRA_CA_CERTS` = the CA alone (Node adds it to its bundled roots;
//!   Node < 23.8 has no way to read the system store), `REQUESTS_CA_BUNDLE` = the system bundle
//!   (requests, botocore), `SSL_CERT_FILE` = the system bundle (httpx and so the openai,
//!   anthropic and google-genai SDKs; OpenSSL, curl and Go read it too: the same bundle they
//!   default to). An admin's own value is kept; when it names a bundle file, the CA is
//!   appended to that file (a marked block, removed by uninstall) so the admin's choice stays
//!   and still trusts the CA;
//! - `--certifi`: the certifi bundles of the Pythons jobs run ([`python`]).
//!
//! Everything written is marked (a comment above each line, a marker before each appended
//! certificate, a header in the profile.d script) so uninstall removes exactly that.

pub mod envfile;
pub mod probe;
pub mod python;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The comment line before every certificate we append to a bundle.
pub const BLOCK_MARK: &str = "# gateway internal CA";
/// The profile.d script, relative to the root.
pub const PROFILE_D: &str = "etc/profile.d/gateway-ca.sh";
pub const ENVIRONMENT: &str = "etc/environment";
/// The variables install sets, in the order it reports them.
pub const VARS: [&str; 3] = ["NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"];

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--venv {0}: not a virtualenv (no pyvenv.cfg in it)")]
    NotAVenv(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Trust-store layouts install knows.
pub struct Layout {
    pub name: &'static str,
    /// Where the anchor goes (a directory that must exist for the layout to apply).
    pub anchor_dir: &'static str,
    pub anchor_file: &'static str,
    /// The bundle the update tool regenerates (we append to it ourselves outside "/").
    pub bundle: &'static str,
    pub update: &'static [&'static str],
}

pub const LAYOUTS: [Layout; 2] = [
    Layout {
        name: "Debian",
        anchor_dir: "usr/local/share/ca-certificates",
        anchor_file: "gateway-ca.crt",
        bundle: "etc/ssl/certs/ca-certificates.crt",
        update: &["update-ca-certificates"],
    },
    Layout {
        name: "RHEL",
        anchor_dir: "etc/pki/ca-trust/source/anchors",
        anchor_file: "gateway-ca.pem",
        bundle: "etc/pki/tls/certs/ca-bundle.crt",
        update: &["update-ca-trust", "extract"],
    },
];

/// `p` (a path as the running system sees it) inside `root`.
pub fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// `p` (inside `root`) as the running system will see it.
fn runtime(root: &Path, p: &Path) -> PathBuf {
    match p.strip_prefix(root) {
        Ok(rest) if root != Path::new("/") => Path::new("/").join(rest),
        _ => p.to_path_buf(),
    }
}

/// The base64 body of every certificate in a PEM text, concatenated.
pub fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && !l.starts_with('#'))
        .map(str::trim)
        .collect::<Vec<_>>()
        .concat()
}

/// Whether the bundle at `path` holds the certificate `pem`.
pub fn bundle_has(path: &Path, pem: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|b| pem_body(&b).contains(&pem_body(pem)))
}

/// Append `pem` (with [`BLOCK_MARK`]) to `bundle` unless it is there already. Returns whether
/// it was appended.
pub fn append_once(bundle: &Path, pem: &str) -> Result<bool, TrustError> {
    let existing = match std::fs::read_to_string(bundle) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(bundle)(e)),
    };
    if pem_body(&existing).contains(&pem_body(pem)) {
        return Ok(false);
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(BLOCK_MARK);
    text.push('\n');
    text.push_str(pem.trim());
    text.push('\n');
    if let Some(d) = bundle.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    std::fs::write(bundle, text).map_err(io(bundle))?;
    Ok(true)
}

/// Remove the block [`append_once`] added. Returns whether there was one.
pub fn remove_block(bundle: &Path, pem: &str) -> Result<bool, TrustError> {
    let Ok(text) = std::fs::read_to_string(bundle) else {
        return Ok(false);
    };
    let block = format!("{BLOCK_MARK}\n{}\n", pem.trim());
    if !text.contains(&block) {
        return Ok(false);
    }
    std::fs::write(bundle, text.replacen(&block, "", 1)).map_err(io(bundle))?;
    Ok(true)
}

/// Write `text` to `path` (0644, parents created) unless it holds that already. Returns
/// whether it was written.
fn write_if_changed(path: &Path, text: &str) -> Result<bool, TrustError> {
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    let existed = path.exists();
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    std::fs::write(path, text).map_err(io(path))?;
    if !existed {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io(path))?;
    }
    Ok(true)
}

/// What install and uninstall are asked to do.
pub struct Opts<'a> {
    pub root: &'a Path,
    pub certifi: bool,
    /// `--venv` directories (paths as the running system sees them).
    pub venvs: &'a [PathBuf],
    /// Where `.venv` / `venv` are looked for (on "/").
    pub cwd: PathBuf,
}

/// The CA: its PEM and the file it lives in.
pub struct CaFile<'a> {
    pub pem: &'a str,
    pub path: &'a Path,
}

fn run_tool(cmd: &[&str]) -> Result<(), String> {
    match Command::new(cmd[0]).args(&cmd[1..]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{}` failed: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("`{}`: {e}", cmd[0])),
    }
}

/// `gateway ca install`: returns the report, line by line.
pub fn install(ca: &CaFile, o: &Opts) -> Result<Vec<String>, TrustError> {
    let venvs = python::venvs(o.venvs, &o.cwd, o.root)?;
    let root = o.root;
    let on_host = root == Path::new("/");
    let mut out = vec!["System trust store:".to_string()];
    let mut anchor_rt = None;
    let mut bundle_rt = None;
    for l in LAYOUTS {
        let dir = root.join(l.anchor_dir);
        if !dir.is_dir() {
            continue;
        }
        let anchor = dir.join(l.anchor_file);
        let wrote = write_if_changed(&anchor, ca.pem)?;
        let bundle = root.join(l.bundle);
        let tool = if on_host {
            Some(run_tool(l.update))
        } else {
            None
        };
        let how = match tool {
            Some(Ok(())) => format!("regenerated by `{}`", l.update.join(" ")),
            other => {
                let appended = append_once(&bundle, ca.pem)?;
                let why = match other {
                    Some(Err(e)) => format!(" ({e})"),
                    _ => String::new(),
                };
                if appended {
                    format!("CA appended{why}")
                } else {
                    format!("already holds the CA{why}")
                }
            }
        };
        out.push(format!(
            "  {}: anchor {} ({}), bundle {} {how}",
            l.name,
            anchor.display(),
            if wrote { "written" } else { "unchanged" },
            bundle.display(),
        ));
        anchor_rt.get_or_insert(runtime(root, &anchor));
        bundle_rt.get_or_insert(runtime(root, &bundle));
    }
    if anchor_rt.is_none() {
        out.push(format!(
            "  no known system trust store under {} (looked for {} and {}): curl, OpenSSL, Go \
             and Python's ssl will not trust the CA",
            root.display(),
            LAYOUTS[0].anchor_dir,
            LAYOUTS[1].anchor_dir
        ));
    }

    // The environment of new sessions.
    let mut want: Vec<(&str, PathBuf)> = vec![(
        "NODE_EXTRA_CA_CERTS",
        anchor_rt.clone().unwrap_or_else(|| runtime(root, ca.path)),
    )];
    if let Some(b) = &bundle_rt {
        want.push(("REQUESTS_CA_BUNDLE", b.clone()));
        want.push(("SSL_CERT_FILE", b.clone()));
    }
    let env_path = root.join(ENVIRONMENT);
    let original = match std::fs::read_to_string(&env_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(&env_path)(e)),
    };
    let mut text = original.clone();
    let mut env_lines = Vec::new();
    let mut effective: Vec<(&str, String)> = Vec::new();
    for (key, value) in &want {
        let value = value.display().to_string();
        let (next, edit) = envfile::set(&text, key, &value);
        text = next;
        let line = match edit {
            envfile::Edit::Added => format!("  {key}={value} (added)"),
            envfile::Edit::Updated { from } => format!("  {key}={value} (was {from})"),
            envfile::Edit::AlreadySet => format!("  {key}={value} (already set)"),
            envfile::Edit::Kept { theirs } => {
                let file = under(root, Path::new(&theirs));
                let note = if !file.is_file() {
                    // Not copied into the profile.d script: a broken value is not spread.
                    env_lines.push(format!(
                        "  {key}={theirs} (kept: your value; WARNING: that file does not exist, \
                         so nothing reading this variable can connect: fix or remove the line)"
                    ));
                    continue;
                } else if append_once(&file, ca.pem)? {
                    format!("the CA appended to {}", file.display())
                } else {
                    "it already trusts the CA".to_string()
                };
                effective.push((key, theirs.clone()));
                env_lines.push(format!("  {key}={theirs} (kept: your value; {note})"));
                continue;
            }
        };
        effective.push((key, value));
        env_lines.push(line);
    }
    let changed = text != original && write_if_changed(&env_path, &text)?;
    out.push(format!(
        "Environment of new sessions, {} ({}):",
        env_path.display(),
        if changed { "changed" } else { "unchanged" }
    ));
    out.extend(env_lines);
    let profile = root.join(PROFILE_D);
    let wrote = write_if_changed(&profile, &envfile::profile_script(&effective))?;
    out.push(format!(
        "Login shells, {} ({}): exports the same values unless already set",
        profile.display(),
        if wrote { "written" } else { "unchanged" }
    ));

    if o.certifi {
        out.push("certifi: the bundles of the Pythons jobs run (python3/python on PATH, --venv, ./.venv, ./venv):".into());
        let bundles = python::certifi_bundles(root, &venvs);
        if bundles.is_empty() {
            out.push("  no Python found".into());
        }
        for (label, b) in bundles {
            let Some(b) = b else {
                out.push(format!("  {label}: no certifi (nothing to do)"));
                continue;
            };
            if !on_host && b.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                out.push(format!(
                    "  {label}: {} is a link (to the image's system bundle): left alone",
                    b.display()
                ));
                continue;
            }
            let added = append_once(&b, ca.pem)?;
            out.push(format!(
                "  {label}: {} {}",
                b.display(),
                if added {
                    "CA appended"
                } else {
                    "already trusts the CA"
                }
            ));
        }
    }

    out.push("Still to do:".into());
    out.push(
        "  - Only new sessions get the variables: open a new login shell; restart runner \
         services (a systemd unit reads neither file: add EnvironmentFile=/etc/environment to \
         it, or for a GitHub Actions runner put the lines in its .env file), then restart it."
            .into(),
    );
    out.push(format!(
        "  - Java: Debian/Ubuntu's ca-certificates-java rebuilds cacerts from the system store; \
         elsewhere: keytool -importcert -noprompt -cacerts -storepass changeit -alias \
         gateway-ca -file {}",
        anchor_rt
            .clone()
            .unwrap_or_else(|| runtime(root, ca.path))
            .display()
    ));
    if !o.certifi {
        out.push(
            "  - Python code that opens certifi.where() itself: `gateway ca install --certifi` \
             (again after `pip install -U certifi`)"
                .into(),
        );
    }
    out.push("  - Check: gateway doctor".into());
    Ok(out)
}

/// `gateway ca uninstall`: removes exactly what install wrote (marked lines and blocks, our
/// anchor if it is this CA, our profile.d script).
pub fn uninstall(ca: &CaFile, o: &Opts) -> Result<Vec<String>, TrustError> {
    let venvs = python::venvs(o.venvs, &o.cwd, o.root)?;
    let root = o.root;
    let on_host = root == Path::new("/");
    let mut out = vec!["System trust store:".to_string()];
    for l in LAYOUTS {
        let dir = root.join(l.anchor_dir);
        if !dir.is_dir() {
            continue;
        }
        let anchor = dir.join(l.anchor_file);
        let note = match std::fs::read_to_string(&anchor) {
            Err(_) => "no anchor".to_string(),
            Ok(t) if t.trim() == ca.pem.trim() => {
                std::fs::remove_file(&anchor).map_err(io(&anchor))?;
                format!("anchor {} removed", anchor.display())
            }
            Ok(_) => format!(
                "anchor {} holds another certificate: left alone",
                anchor.display()
            ),
        };
        let bundle = root.join(l.bundle);
        let tool = if on_host {
            match run_tool(l.update) {
                Ok(()) => format!(", bundle regenerated by `{}`", l.update.join(" ")),
                Err(e) => format!(" ({e})"),
            }
        } else {
            String::new()
        };
        let removed = remove_block(&bundle, ca.pem)?;
        out.push(format!(
            "  {}: {note}{tool}{}",
            l.name,
            if removed {
                format!(", CA removed from {}", bundle.display())
            } else {
                String::new()
            }
        ));
    }
    let env_path = root.join(ENVIRONMENT);
    let original = std::fs::read_to_string(&env_path).unwrap_or_default();
    let mut text = original.clone();
    out.push(format!(
        "Environment of new sessions, {}:",
        env_path.display()
    ));
    for key in VARS {
        let (next, removed) = envfile::unset(&text, key);
        text = next;
        for v in removed {
            out.push(format!("  {key}={v} removed"));
        }
        // An admin's own value we appended the CA to.
        if let Some(s) = envfile::get(&text, key) {
            let file = under(root, Path::new(&s.value));
            if remove_block(&file, ca.pem)? {
                out.push(format!(
                    "  {key}={} kept (yours); the CA removed from {}",
                    s.value,
                    file.display()
                ));
            }
        }
    }
    if text != original {
        std::fs::write(&env_path, &text).map_err(io(&env_path))?;
    }
    let profile = root.join(PROFILE_D);
    match std::fs::read_to_string(&profile) {
        Ok(t) if t.starts_with(envfile::PROFILE_HEADER) => {
            std::fs::remove_file(&profile).map_err(io(&profile))?;
            out.push(format!("Login shells: {} removed", profile.display()));
        }
        Ok(_) => out.push(format!(
            "Login shells: {} was not written by gateway: left alone",
            profile.display()
        )),
        Err(_) => {}
    }
    out.push("certifi:".into());
    let mut any = false;
    for (label, b) in python::certifi_bundles(root, &venvs) {
        if let Some(b) = b
            && (on_host || !b.symlink_metadata().is_ok_and(|m| m.is_symlink()))
            && remove_block(&b, ca.pem)?
        {
            any = true;
            out.push(format!("  {label}: CA removed from {}", b.display()));
        }
    }
    if !any {
        out.push("  none held the CA block".into());
    }
    out.push("New sessions no longer get the variables; restart runner services.".into());
    Ok(out)
}
