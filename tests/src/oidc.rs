//! A real OpenID provider for the tests: npm `oidc-provider` (OpenID Certified), run by node
//! with `tests/src/oidc/provider.mjs`, over **HTTPS** with a test PKI of its own (a leaf for
//! its loopback IP address: point `[oidc] ca_file` at [`OidcProvider::ca_pem`]).
//!
//! Clients: [`CLI_CLIENT`] (public, native: PKCE, device grant, refresh; redirect
//! `http://127.0.0.1/callback` on any port, RFC 8252), [`OTHER_CLIENT`] (the same, another
//! audience), and [`WEB_CLIENT`] (confidential, [`WEB_SECRET`], redirect URIs given in
//! [`Options::web_redirect_uris`]). Users: [`ALICE`] in `llm-approvers`, [`BOB`] not
//! (passwords [`password`]). The login page is one form (`login`, `password`, button
//! `#submit`); consent is granted at once.
//!
//! [`OidcProvider::browse`] and [`OidcProvider::token_for`] act as the user's browser with plain
//! HTTP form posts (`tests/src/oidc/browser.py`, Python `requests` from [`crate::py_venv`]).

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::fake::TestPki;

/// The npm package and version the tests run.
pub const OIDC_PROVIDER: &str = "oidc-provider@9.13.3";
pub const CLI_CLIENT: &str = "gateway-cli";
pub const OTHER_CLIENT: &str = "other-app";
pub const WEB_CLIENT: &str = "gateway-web";
pub const WEB_SECRET: &str = "web-secret-for-tests-only-0123456789";
pub const ALICE: &str = "alice";
pub const BOB: &str = "bob";
pub const APPROVERS_GROUP: &str = "llm-approvers";

pub fn password(user: &str) -> String {
    format!("{user}-password")
}

/// `target/oidc-provider` with the npm package installed once (cached, keyed by version).
pub fn oidc_provider_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = crate::target_dir().join("oidc-provider");
        let marker = dir.join(".gateway-version");
        if dir.join("node_modules/oidc-provider/package.json").exists()
            && fs::read_to_string(&marker).ok().as_deref() == Some(OIDC_PROVIDER)
        {
            return dir;
        }
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("package.json"),
            r#"{"name":"gw-oidc-test","private":true,"type":"module"}"#,
        )
        .unwrap();
        let out = Command::new("npm")
            .args([
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                OIDC_PROVIDER,
            ])
            .current_dir(&dir)
            .output()
            .expect("npm (Node.js) is needed to run the tests' OpenID provider");
        assert!(
            out.status.success(),
            "npm install {OIDC_PROVIDER} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(&marker, OIDC_PROVIDER).unwrap();
        dir
    })
    .clone()
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Lifetime of ID (and access) tokens, seconds.
    pub id_token_ttl: u64,
    /// Lifetime of a device code, seconds.
    pub device_code_ttl: u64,
    /// Redirect URIs of [`WEB_CLIENT`].
    pub web_redirect_uris: Vec<String>,
    /// The provider's address is `127.<net>.250.<host>`.
    pub host: u8,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            id_token_ttl: 3600,
            device_code_ttl: 600,
            web_redirect_uris: vec!["https://127.0.0.1/oidc/callback".into()],
            host: 1,
        }
    }
}

pub struct OidcProvider {
    /// `https://127.<net>.250.<host>:PORT`, exactly as tokens name it.
    pub issuer: String,
    /// The CA that signed the provider's certificate.
    pub ca_pem: PathBuf,
    pki: TestPki,
    child: Child,
    log: PathBuf,
}

/// What the browser saw last.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: String,
    pub status: u16,
    pub text: String,
}

impl OidcProvider {
    pub fn start(net: u8) -> Self {
        Self::start_with(net, Options::default())
    }

    pub fn start_with(net: u8, o: Options) -> Self {
        let dir = oidc_provider_dir();
        let ip = format!("127.{net}.250.{}", o.host);
        let port = crate::free_port(&ip);
        let issuer = format!("https://{ip}:{port}");
        let pki = TestPki::new(&[&ip]);
        let users = json!({
            ALICE: {"password": password(ALICE), "name": "Alice Approver",
                    "email": "alice@example.org", "groups": [APPROVERS_GROUP, "staff"]},
            BOB: {"password": password(BOB), "name": "Bob Builder",
                  "email": "bob@example.org", "groups": ["developers", "staff"]},
        });
        let native = |id: &str| {
            json!({
                "client_id": id,
                "application_type": "native",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token",
                                "urn:ietf:params:oauth:grant-type:device_code"],
                "response_types": ["code"],
                "redirect_uris": ["http://127.0.0.1/callback"],
            })
        };
        let cfg = json!({
            "issuer": issuer,
            "host": ip,
            "port": port,
            "cert": pki.leaf_pem,
            "key": pki.key_pem,
            "users": users,
            "ttl": {"id_token": o.id_token_ttl, "access_token": o.id_token_ttl,
                    "device_code": o.device_code_ttl},
            "clients": [
                native(CLI_CLIENT),
                native(OTHER_CLIENT),
                {
                    "client_id": WEB_CLIENT,
                    "client_secret": WEB_SECRET,
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "redirect_uris": o.web_redirect_uris,
                },
            ],
        });
        let cfg_path = pki.dir.path().join("oidc-provider.json");
        fs::write(&cfg_path, cfg.to_string()).unwrap();
        let log = pki.dir.path().join("oidc-provider.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/oidc/provider.mjs");
        // Node resolves `oidc-provider` from the script's directory upwards: link the cached
        // node_modules next to a copy of the script.
        let run_dir = pki.dir.path().join("node");
        fs::create_dir_all(&run_dir).unwrap();
        std::os::unix::fs::symlink(dir.join("node_modules"), run_dir.join("node_modules")).unwrap();
        fs::write(
            run_dir.join("package.json"),
            r#"{"name":"gw-oidc-run","private":true,"type":"module"}"#,
        )
        .unwrap();
        fs::copy(&script, run_dir.join("provider.mjs")).unwrap();
        let mut child = Command::new("node")
            .arg(run_dir.join("provider.mjs"))
            .arg(&cfg_path)
            .current_dir(&run_dir)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("node (Node.js) is needed to run the tests' OpenID provider");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Bytes, not `lines()`: a line that is not UTF-8 would end `lines()` (and with it
            // this thread, which reads as "the provider exited") although the provider runs.
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                if line.trim_ascii() == b"ready" {
                    let _ = tx.send(());
                }
            }
        });
        if let Err(why) = rx.recv_timeout(Duration::from_secs(120)) {
            // Disconnected: the provider closed its stdout (it exited) before `ready`.
            let exited = child.try_wait().ok().flatten();
            let _ = child.kill();
            panic!(
                "the OpenID provider did not start ({why:?}; exit status {exited:?}): {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Self {
            issuer,
            ca_pem: pki.ca_pem.clone(),
            pki,
            child,
            log,
        }
    }

    /// An `[oidc]` section for a gateway config trusting this provider, for `client_id`.
    pub fn config(&self, client_id: &str) -> String {
        format!(
            "[oidc]\nissuer = \"{}\"\nclient_id = \"{client_id}\"\nca_file = \"{}\"\n\
             scopes = [\"openid\", \"profile\", \"email\", \"groups\", \"offline_access\"]\n",
            self.issuer,
            self.ca_pem.display()
        )
    }

    /// The provider's log (stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    fn python(&self) -> Command {
        let mut c = Command::new(crate::py_venv().join("bin/python"));
        c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/oidc/browser.py"));
        c
    }

    /// Act as `user`'s browser: open `url`, sign in with `password` on the provider's login
    /// page, enter `user_code` on the device page when given, follow every redirect (to a
    /// loopback redirect listener too). What the last page was.
    pub fn browse(&self, url: &str, user: &str, password: &str, user_code: Option<&str>) -> Page {
        let mut c = self.python();
        c.arg(&self.ca_pem).args([url, user, password]);
        if let Some(code) = user_code {
            c.arg(code);
        }
        let out = c.output().expect("run the browser helper");
        assert!(
            out.status.success(),
            "browser helper failed: {}\nprovider log: {}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("browser helper output");
        Page {
            url: v["url"].as_str().unwrap_or_default().into(),
            status: v["status"].as_u64().unwrap_or(0) as u16,
            text: v["text"].as_str().unwrap_or_default().into(),
        }
    }

    /// The token endpoint's answer (`id_token`, `refresh_token`, …) after `user` signed in to
    /// the public client `client_id` with the authorization code flow and PKCE.
    pub fn token_for(&self, client_id: &str, user: &str) -> Value {
        let out = self
            .python()
            .args(["--token"])
            .arg(&self.ca_pem)
            .args([&self.issuer, client_id, user, &password(user)])
            .output()
            .expect("run the browser helper");
        assert!(
            out.status.success(),
            "token helper failed: {}\nprovider log: {}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "token endpoint answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// An ID token for `user`, issued to `client_id`.
    pub fn id_token(&self, client_id: &str, user: &str) -> String {
        let t = self.token_for(client_id, user);
        t["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no id_token in {t}"))
            .to_string()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
