//! For `gateway doctor`: will each runtime installed here trust the CA? One finding per
//! question, `ok` or a warning with the exact fix. A runtime that is not installed is one `ok`
//! line saying so.
//!
//! Variables are looked up as a new job would get them: this process's environment first
//! (the shell doctor runs in), then /etc/environment (pam_env), then our profile.d script.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::{ENVIRONMENT, PROFILE_D, bundle_has, envfile, python};

pub struct Finding {
    pub ok: bool,
    pub text: String,
}

fn ok(text: String) -> Finding {
    Finding { ok: true, text }
}

fn warn(text: String) -> Finding {
    Finding { ok: false, text }
}

/// Where a variable's value comes from.
struct Vars {
    environment: Vec<(String, String)>,
    profile: Vec<(String, String)>,
}

impl Vars {
    fn load() -> Self {
        let root = Path::new("/");
        Self {
            environment: envfile::pairs(
                &std::fs::read_to_string(root.join(ENVIRONMENT)).unwrap_or_default(),
            ),
            profile: envfile::profile_vars(
                &std::fs::read_to_string(root.join(PROFILE_D)).unwrap_or_default(),
            ),
        }
    }

    /// `(value, where from)`.
    fn get(&self, key: &str) -> Option<(String, String)> {
        if let Some(v) = std::env::var_os(key).filter(|v| !v.is_empty()) {
            return Some((v.to_string_lossy().into_owned(), "this environment".into()));
        }
        let last = |l: &[(String, String)]| {
            l.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        if let Some(v) = last(&self.environment) {
            return Some((v, "/etc/environment".into()));
        }
        last(&self.profile).map(|v| (v, format!("/{PROFILE_D}")))
    }
}

/// `cmd args...` stdout+stderr when it ran.
fn output(cmd: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    Some(s)
}

/// A directory of certificates (OpenSSL's capath) holding `pem`.
fn dir_has(dir: &Path, pem: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.path().is_file() && bundle_has(&e.path(), pem))
    })
}

/// Every runtime check, in order.
pub fn runtimes(pem: &str, system_bundle: Option<&Path>) -> Vec<Finding> {
    let vars = Vars::load();
    let system_ok = system_bundle.is_some_and(|b| bundle_has(b, pem));
    let mut out = Vec::new();
    out.push(openssl(pem, &vars));
    out.extend(pythons(pem, &vars));
    out.push(node(system_ok, pem, &vars));
    out.push(java(pem));
    out.push(go(system_ok, pem, &vars));
    out
}

fn openssl(pem: &str, vars: &Vars) -> Finding {
    let Some(bin) = python::on_path("openssl") else {
        return ok("curl/openssl: openssl not installed".into());
    };
    if let Some((file, from)) = vars.get("SSL_CERT_FILE") {
        return if bundle_has(Path::new(&file), pem) {
            ok(format!(
                "curl/openssl: SSL_CERT_FILE={file} (from {from}) trusts the CA"
            ))
        } else {
            warn(format!(
                "curl/openssl: SSL_CERT_FILE={file} (from {from}) lacks the CA: point it at the \
                 system bundle or `gateway ca install`"
            ))
        };
    }
    let dir = output(&bin, &["version", "-d"])
        .and_then(|s| s.split('"').nth(1).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/usr/lib/ssl"));
    let (file, certs) = (dir.join("cert.pem"), dir.join("certs"));
    if bundle_has(&file, pem) || dir_has(&certs, pem) {
        ok(format!(
            "curl/openssl: OpenSSL's default store ({}) trusts the CA",
            file.display()
        ))
    } else {
        warn(format!(
            "curl/openssl: OpenSSL's default store ({} , {}) lacks the CA: `gateway ca install`",
            file.display(),
            certs.display()
        ))
    }
}

fn pythons(pem: &str, vars: &Vars) -> Vec<Finding> {
    let found = python::path_pythons();
    if found.is_empty() {
        return vec![
            match python::on_path("python3").or_else(|| python::on_path("python")) {
                // E.g. a pyenv shim with no version selected.
                Some(p) => warn(format!(
                    "python: {} is on PATH but does not run: fix it (jobs will fail too)",
                    p.display()
                )),
                None => ok("python: not installed (no python3/python on PATH)".into()),
            },
        ];
    }
    let mut out = Vec::new();
    for p in found {
        let name = p.label.trim_end_matches(" on PATH");
        let who = format!("{name} {} ({})", p.version, p.executable);
        // ssl's defaults (urllib, anything with ssl.create_default_context()).
        let ssl_ok = p.ssl_cafile.as_deref().is_some_and(|f| bundle_has(f, pem))
            || p.ssl_capath.as_deref().is_some_and(|d| dir_has(d, pem));
        out.push(if ssl_ok {
            ok(format!("{who}: ssl's default store trusts the CA"))
        } else {
            warn(format!(
                "{who}: ssl's default store ({}) lacks the CA: `gateway ca install`",
                p.ssl_cafile
                    .as_deref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_else(|| "none".into())
            ))
        });
        let certifi_ok = p.certifi.as_deref().map(|c| bundle_has(c, pem));
        out.push(match (&p.certifi, certifi_ok) {
            (None, _) => ok(format!("{who}: no certifi installed")),
            (Some(c), Some(true)) => ok(format!(
                "{who}: certifi bundle {} trusts the CA",
                c.display()
            )),
            (Some(c), _) => warn(format!(
                "{who}: certifi bundle {} lacks the CA (code that reads certifi.where() itself; \
                 after `pip install -U certifi` too): `gateway ca install --certifi`",
                c.display()
            )),
        });
        // requests (and botocore): REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, else certifi.
        // httpx 0.28: SSL_CERT_FILE, else certifi. (The openai and anthropic SDKs' httpx2 reads
        // SSL_CERT_FILE, else the system store: the ssl line above.)
        for (lib, keys) in [
            (
                "requests/botocore",
                &["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"][..],
            ),
            ("httpx", &["SSL_CERT_FILE"][..]),
        ] {
            let set = keys.iter().find_map(|k| vars.get(k).map(|v| (*k, v)));
            out.push(match (set, &p.certifi, certifi_ok) {
                (Some((k, (v, from))), _, _) => {
                    if bundle_has(Path::new(&v), pem) {
                        ok(format!("{who}: {lib} trust the CA ({k}={v} from {from})"))
                    } else {
                        warn(format!(
                            "{who}: {lib}: {k}={v} (from {from}) lacks the CA: append it there \
                             or `gateway ca install`"
                        ))
                    }
                }
                (None, Some(c), Some(true)) => ok(format!(
                    "{who}: {lib} trust the CA (certifi {})",
                    c.display()
                )),
                (None, _, _) => warn(format!(
                    "{who}: {lib} do not trust the CA (no {} and certifi lacks it): \
                     `gateway ca install` (sets {} in /etc/environment and /{PROFILE_D})",
                    keys[0], keys[0]
                )),
            });
        }
    }
    out
}

fn node(system_ok: bool, pem: &str, vars: &Vars) -> Finding {
    let Some(bin) = python::on_path("node") else {
        return ok("node: not installed".into());
    };
    let version = output(&bin, &["--version"])
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "?".into());
    // `--use-openssl-ca` (any Node) / `--use-system-ca`, NODE_USE_SYSTEM_CA=1 (Node >= 23.8):
    // the system store instead of the bundled roots.
    let system_flag = vars
        .get("NODE_OPTIONS")
        .filter(|(o, _)| o.contains("--use-openssl-ca") || o.contains("--use-system-ca"))
        .or_else(|| vars.get("NODE_USE_SYSTEM_CA").filter(|(v, _)| v == "1"));
    if let Some((v, from)) = system_flag {
        return if system_ok {
            ok(format!(
                "node {version}: reads the system store ({v} from {from}), which trusts the CA"
            ))
        } else {
            warn(format!(
                "node {version}: reads the system store ({v} from {from}), which lacks the CA: \
                 `gateway ca install`"
            ))
        };
    }
    match vars.get("NODE_EXTRA_CA_CERTS") {
        Some((file, from)) if bundle_has(Path::new(&file), pem) => ok(format!(
            "node {version}: trusts the CA (NODE_EXTRA_CA_CERTS={file} from {from})"
        )),
        Some((file, from)) => warn(format!(
            "node {version}: NODE_EXTRA_CA_CERTS={file} (from {from}) lacks the CA: append the \
             CA to it or `gateway ca install`"
        )),
        None => warn(format!(
            "node {version}: uses its bundled roots, not the system store: `gateway ca install` \
             (sets NODE_EXTRA_CA_CERTS in /etc/environment and /{PROFILE_D})"
        )),
    }
}

/// `JAVA_HOME`, else the JDK the `java` on PATH belongs to.
fn java_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    let java = std::fs::canonicalize(python::on_path("java")?).ok()?;
    Some(java.parent()?.parent()?.to_path_buf())
}

fn java(pem: &str) -> Finding {
    let Some(home) = java_home() else {
        return ok("java: not installed".into());
    };
    let cacerts = home.join("lib/security/cacerts");
    let keytool = home.join("bin/keytool");
    if !cacerts.exists() || !keytool.exists() {
        return warn(format!(
            "java ({}): no cacerts/keytool there; check JAVA_HOME",
            home.display()
        ));
    }
    let fix = format!(
        "{} -importcert -noprompt -cacerts -storepass changeit -alias gateway-ca -file \
         <the CA> (Debian/Ubuntu: update-ca-certificates with ca-certificates-java)",
        keytool.display()
    );
    let listed = output(
        &keytool,
        &[
            "-list",
            "-rfc",
            "-keystore",
            &cacerts.display().to_string(),
            "-storepass",
            "changeit",
        ],
    );
    match listed {
        Some(l) if super::pem_body(&l).contains(&super::pem_body(pem)) => ok(format!(
            "java ({}): cacerts {} trusts the CA",
            home.display(),
            cacerts.display()
        )),
        Some(l) if l.contains("-----BEGIN") => warn(format!(
            "java ({}): cacerts {} lacks the CA: {fix}",
            home.display(),
            cacerts.display()
        )),
        _ => warn(format!(
            "java ({}): cannot list {} (store password not `changeit`?): {fix}",
            home.display(),
            cacerts.display()
        )),
    }
}

fn go(system_ok: bool, pem: &str, vars: &Vars) -> Finding {
    let Some(bin) = python::on_path("go") else {
        return ok("go: not installed".into());
    };
    let version = output(&bin, &["env", "GOVERSION"])
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let file = vars.get("SSL_CERT_FILE");
    let trusted = match &file {
        Some((f, _)) => bundle_has(Path::new(f), pem),
        None => system_ok,
    };
    if trusted {
        ok(format!(
            "go {version}: reads the system store, which trusts the CA"
        ))
    } else {
        warn(format!(
            "go {version}: reads the system store{}, which lacks the CA: `gateway ca install`",
            file.map(|(f, from)| format!(" (SSL_CERT_FILE={f} from {from})"))
                .unwrap_or_default()
        ))
    }
}
