//! The Pythons jobs actually run, asked about their trust: `python3`/`python` on PATH, the
//! virtualenvs named with `--venv`, and `.venv`/`venv` in the current directory. Each is asked
//! itself (`certifi.where()`, `ssl.get_default_verify_paths()`); nothing walks the disk for
//! every copy of certifi. Under `--root` (an image, not this host) no interpreter can be asked:
//! the image's system site-packages and the given venvs are looked at instead.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::TrustError;

/// What one interpreter said about itself.
#[derive(Debug, Clone, Default)]
pub struct Python {
    /// How it was found: `python3 on PATH`, `venv /srv/app/.venv`.
    pub label: String,
    pub executable: String,
    pub version: String,
    /// `certifi.where()`, when certifi is importable.
    pub certifi: Option<PathBuf>,
    /// ssl's default CA file and directory (after SSL_CERT_FILE / SSL_CERT_DIR).
    pub ssl_cafile: Option<PathBuf>,
    pub ssl_capath: Option<PathBuf>,
}

const PROBE: &str = r#"
import json, ssl, sys
try:
    import certifi
    where = certifi.where()
except Exception:
    where = None
p = ssl.get_default_verify_paths()
print(json.dumps({"executable": sys.executable, "version": sys.version.split()[0],
                  "certifi": where, "cafile": p.cafile, "capath": p.capath}))
"#;

/// Ask the interpreter at `exe`. None when it does not run.
pub fn probe(exe: &Path, label: String) -> Option<Python> {
    let out = Command::new(exe)
        .args(["-c", PROBE])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let path = |k: &str| v[k].as_str().map(PathBuf::from);
    Some(Python {
        label,
        executable: v["executable"].as_str().unwrap_or("?").to_string(),
        version: v["version"].as_str().unwrap_or("?").to_string(),
        certifi: path("certifi"),
        ssl_cafile: path("cafile"),
        ssl_capath: path("capath"),
    })
}

/// The first executable `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p).map(|d| d.join(name)).find(|f| {
            f.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// `python3` and `python` on PATH, one entry per distinct interpreter.
pub fn path_pythons() -> Vec<Python> {
    let mut out: Vec<Python> = Vec::new();
    for name in ["python3", "python"] {
        let Some(exe) = on_path(name) else { continue };
        let Some(p) = probe(&exe, format!("{name} on PATH")) else {
            continue;
        };
        let same = |a: &str, b: &str| {
            std::fs::canonicalize(a)
                .ok()
                .is_some_and(|x| std::fs::canonicalize(b).ok() == Some(x))
        };
        if !out
            .iter()
            .any(|o| o.executable == p.executable || same(&o.executable, &p.executable))
        {
            out.push(p);
        }
    }
    out
}

/// The virtualenvs to look at: the given ones (each must be a venv: a clear error if not) and
/// `.venv`/`venv` in `cwd` when they are venvs.
pub fn venvs(given: &[PathBuf], cwd: &Path, root: &Path) -> Result<Vec<PathBuf>, TrustError> {
    let mut out = Vec::new();
    for v in given {
        let in_root = super::under(root, v);
        if !in_root.join("pyvenv.cfg").is_file() {
            return Err(TrustError::NotAVenv(v.clone()));
        }
        out.push(v.clone());
    }
    if root == Path::new("/") {
        for name in [".venv", "venv"] {
            let d = cwd.join(name);
            if d.join("pyvenv.cfg").is_file() && !out.contains(&d) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// certifi bundles to update, with where each came from. On "/" every interpreter is asked;
/// under another root the image's site-packages are looked at.
pub fn certifi_bundles(root: &Path, venvs: &[PathBuf]) -> Vec<(String, Option<PathBuf>)> {
    let mut out: Vec<(String, Option<PathBuf>)> = Vec::new();
    if root == Path::new("/") {
        for p in path_pythons() {
            out.push((
                format!("{} ({} {})", p.label, p.executable, p.version),
                p.certifi,
            ));
        }
        for v in venvs {
            let label = format!("venv {}", v.display());
            match probe(&v.join("bin/python"), label.clone()) {
                Some(p) => out.push((format!("{label} ({})", p.version), p.certifi)),
                // A venv whose interpreter is gone: its site-packages still say.
                None => out.push((label, site_certifi(v).into_iter().next())),
            }
        }
    } else {
        for base in ["usr/lib", "usr/local/lib"] {
            for b in site_certifi(&root.join(base)) {
                out.push((
                    format!("{} in {}", strip(root, &b), root.display()),
                    Some(b),
                ));
            }
        }
        for v in venvs {
            let found = site_certifi(&super::under(root, v));
            if found.is_empty() {
                out.push((format!("venv {}", v.display()), None));
            }
            for b in found {
                out.push((format!("venv {}", v.display()), Some(b)));
            }
        }
    }
    let mut seen = Vec::new();
    out.retain(|(_, b)| match b {
        None => true,
        Some(b) => {
            let key = std::fs::canonicalize(b).unwrap_or_else(|_| b.clone());
            let new = !seen.contains(&key);
            seen.push(key);
            new
        }
    });
    out
}

fn strip(root: &Path, p: &Path) -> String {
    format!("/{}", p.strip_prefix(root).unwrap_or(p).display())
}

/// `certifi/cacert.pem` in `dir/python3*/{site,dist}-packages`, `dir/python3/dist-packages`
/// and (for a venv) `dir/lib/python3*/site-packages`.
fn site_certifi(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut bases = vec![dir.to_path_buf(), dir.join("lib")];
    bases.dedup();
    for base in bases {
        let Ok(rd) = std::fs::read_dir(&base) else {
            continue;
        };
        let mut names: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("python3"))
            })
            .collect();
        names.sort();
        for py in names {
            for sp in ["site-packages", "dist-packages"] {
                let b = py.join(sp).join("certifi/cacert.pem");
                if b.symlink_metadata().is_ok() {
                    out.push(b);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_is_searched_in_its_site_packages_and_given_venvs_only() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for p in [
            "usr/lib/python3/dist-packages/certifi",
            "usr/local/lib/python3.11/site-packages/certifi",
            "srv/app/.venv/lib/python3.12/site-packages/certifi",
            // Not a Python the image runs: left alone.
            "opt/other/lib/python3.11/site-packages/certifi",
        ] {
            std::fs::create_dir_all(r.join(p)).unwrap();
            std::fs::write(r.join(p).join("cacert.pem"), "x\n").unwrap();
        }
        std::fs::write(r.join("srv/app/.venv/pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        let venvs = venvs(&[PathBuf::from("/srv/app/.venv")], r, r).unwrap();
        let found: Vec<String> = certifi_bundles(r, &venvs)
            .into_iter()
            .map(|(_, b)| strip(r, &b.unwrap()))
            .collect();
        assert_eq!(
            found,
            vec![
                "/usr/lib/python3/dist-packages/certifi/cacert.pem",
                "/usr/local/lib/python3.11/site-packages/certifi/cacert.pem",
                "/srv/app/.venv/lib/python3.12/site-packages/certifi/cacert.pem",
            ]
        );
        let err = super::venvs(&[PathBuf::from("/opt/other")], r, r).unwrap_err();
        assert!(err.to_string().contains("/opt/other"), "{err}");
    }
}
