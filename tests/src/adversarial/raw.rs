//! The environment of the issue-H adversarial classes (WebSocket, Bedrock, Vertex): a child
//! cgroup, the second fake provider (`rawfake.py`: WebSocket, any Upgrade, AWS SigV4 and
//! event streams, a Google OAuth token endpoint; every byte it receives recorded as JSON
//! lines) on `127.<net>.<n>.{1..7}:443`, and a gateway with the built-in providers pointed at
//! it, holding the adversarial vault (plus AWS credentials and a service-account key when
//! asked).
//!
//! Addresses: .1 OpenAI, .2 Anthropic, .3 Gemini, .4 Bedrock (every bedrock-runtime name),
//! .5 Vertex AI (regional and global names), .7 the OAuth token endpoint (an IP literal in the
//! key's `token_uri`, with an IP SAN in the fake's certificate).

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use super::VAULT;
use crate::{CgroupGuard, Gateway, Opts, fake::TestPki};

pub const RAWFAKE: &str = include_str!("rawfake.py");

/// The vault's AWS credentials (`bedrock` entry): shaped like real ones so the AWS detectors
/// would know them too.
pub const AWS_AK: &str = "AKIAVAULTADVQWERTY23";
pub const AWS_SK: &str = "vaultadvAwsSecret0Kq2Lw9Xz4Pm7Rt1Vb8Nc3H";
/// What the fake token endpoint mints for the service account.
pub const MINTED: &str = "ya29.vaultadv-minted-Mq4Nr8Ts2Vw6Yz0Bc3Df7Gh1Jk5Lm9Pq";
pub const SA_EMAIL: &str = "adv-gateway@adv-project-140.iam.gserviceaccount.com";
pub const SA_PROJECT: &str = "adv-project-140";
pub const SA_KEY_ID: &str = "5f1c0ffee0ddba11vaultadv0000000000000001";

pub const BEDROCK_HOST: &str = "bedrock-runtime.us-east-1.amazonaws.com";
pub const BEDROCK_FIPS: &str = "bedrock-runtime-fips.us-east-1.amazonaws.com";
pub const VERTEX_HOST: &str = "us-central1-aiplatform.googleapis.com";
pub const VERTEX_GLOBAL: &str = "aiplatform.googleapis.com";
pub const VERTEX_EU: &str = "europe-west4-aiplatform.googleapis.com";

/// Which providers beyond the first three the gateway is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    Bedrock,
    Vertex,
}

pub struct RawEnv {
    pub gw: Gateway,
    pub cg: CgroupGuard,
    pub pki: TestPki,
    /// `127.<net>.<n>.`
    pub prefix: String,
    pub ca: PathBuf,
    fake: Child,
    records: PathBuf,
    _dir: tempfile::TempDir,
    /// The service-account key (JSON) given to the vault, when Vertex is on.
    pub sa_json: Option<String>,
}

impl RawEnv {
    pub fn ip(&self, host: &str) -> String {
        format!("{}{}", self.prefix, host_octet(host))
    }

    pub fn token_uri(&self) -> String {
        format!("https://{}7/token", self.prefix)
    }

    pub fn start(prefix: &str, net: u8, extras: &[Extra], scripts: Value) -> Self {
        crate::require_privileges();
        let n = crate::unique();
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let cg = CgroupGuard::new(&name);
        let ipp = format!("127.{net}.{n}.");
        let token_ip = format!("{ipp}7");
        let pki = TestPki::new(&[
            "api.openai.com",
            "api.anthropic.com",
            "generativelanguage.googleapis.com",
            BEDROCK_HOST,
            BEDROCK_FIPS,
            "bedrock-runtime.eu-west-1.amazonaws.com",
            VERTEX_HOST,
            VERTEX_GLOBAL,
            VERTEX_EU,
            "oauth2.googleapis.com",
            &token_ip,
        ]);
        let dir = tempfile::Builder::new()
            .prefix("gw-advraw-")
            .tempdir()
            .expect("tempdir");
        let records = dir.path().join("records.jsonl");
        std::fs::write(&records, "").unwrap();
        let vertex = extras.contains(&Extra::Vertex);
        let token_uri = format!("https://{token_ip}/token");
        let (sa_json, pub_pem) = if vertex {
            let (key, public) = rsa_key();
            let sa = json!({
                "type": "service_account",
                "project_id": SA_PROJECT,
                "private_key_id": SA_KEY_ID,
                "private_key": key,
                "client_email": SA_EMAIL,
                "client_id": "104000000000000000140",
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": token_uri,
                "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
                "universe_domain": "googleapis.com"
            });
            (Some(sa.to_string()), public)
        } else {
            (None, String::new())
        };
        let cfg = json!({
            "addrs": (1..=7).map(|i| format!("{ipp}{i}")).collect::<Vec<_>>(),
            "cert": pki.leaf_pem,
            "key": pki.key_pem,
            "records": records,
            "scripts": scripts,
            "aws": {"ak": AWS_AK, "sk": AWS_SK, "token": null},
            "sa": {"email": SA_EMAIL, "pub_pem": pub_pem, "token_uri": token_uri, "token": MINTED},
        });
        let cfg_path = dir.path().join("fake.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let fake_py = dir.path().join("rawfake.py");
        std::fs::write(&fake_py, RAWFAKE).unwrap();
        let py = crate::py_venv().join("bin/python");
        let mut fake = Command::new(&py)
            .arg(&fake_py)
            .arg(&cfg_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the raw fake provider");
        let mut line = String::new();
        BufReader::new(fake.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("raw fake output");
        assert_eq!(line.trim(), "ready", "the raw fake provider did not start");
        let mut providers = String::new();
        for (p, i) in [("openai", 1), ("anthropic", 2), ("gemini", 3)] {
            providers.push_str(&format!(
                "[[provider]]\nname = \"{p}\"\naddrs = [\"{ipp}{i}/32\"]\n"
            ));
        }
        let mut keys: Vec<(String, String)> = VAULT
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if extras.contains(&Extra::Bedrock) {
            providers.push_str(&format!(
                "[[provider]]\nname = \"bedrock\"\naddrs = [\"{ipp}4/32\"]\n"
            ));
            keys.push(("bedrock".into(), format!("{AWS_AK}:{AWS_SK}")));
        }
        if let Some(sa) = &sa_json {
            providers.push_str(&format!(
                "[[provider]]\nname = \"vertex\"\naddrs = [\"{ipp}5/32\"]\n"
            ));
            keys.push(("vertex".into(), sa.clone()));
        }
        let gw = Gateway::start_opts(
            &name,
            &cg.path,
            &providers,
            &Opts {
                extra_roots: vec![pki.ca_pem.clone()],
                keys,
                builtin: true,
                ..Default::default()
            },
        );
        let ca = gw.ca_pem();
        Self {
            gw,
            cg,
            pki,
            prefix: ipp,
            ca,
            fake,
            records,
            _dir: dir,
            sa_json,
        }
    }

    /// Every record the fake wrote so far.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.records)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Run a Python driver (source `driver`) over `cases` inside the cgroup; one JSON line per
    /// case, by id.
    pub fn drive(
        &self,
        driver: &str,
        cases: &[Value],
    ) -> std::collections::BTreeMap<String, Value> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cases.json");
        std::fs::write(&file, serde_json::to_vec(cases).unwrap()).unwrap();
        let results = dir.path().join("results.jsonl");
        let py = crate::py_venv().join("bin/python");
        // `ADV_DIRECT=1`: the control run. The driver runs outside the cgroup, straight to the
        // fake (trusting the fake's CA): every case that expects the gateway to act must fail.
        let direct = std::env::var_os("ADV_DIRECT").is_some();
        let ca = if direct { &self.pki.ca_pem } else { &self.ca };
        let args = [
            "-c",
            driver,
            file.to_str().unwrap(),
            ca.to_str().unwrap(),
            results.to_str().unwrap(),
        ];
        let cmd = if direct {
            let mut c = Command::new(&py);
            c.args(args);
            c
        } else {
            self.cg.command(py.to_str().unwrap(), &args)
        };
        let started = std::time::Instant::now();
        let r = crate::run(cmd, Duration::from_secs(60 + 15 * cases.len() as u64));
        super::timing(cases.len(), started, &r.stderr);
        let text = std::fs::read_to_string(&results).unwrap_or_default();
        let out: std::collections::BTreeMap<String, Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| (v["id"].as_str().unwrap_or("").to_string(), v))
            .collect();
        assert!(
            !out.is_empty() || cases.is_empty(),
            "the driver produced nothing: {r:?}"
        );
        if out.len() < cases.len() {
            eprintln!(
                "the driver answered {} of {} cases (exit {:?}); its stderr:\n{}",
                out.len(),
                cases.len(),
                r.code,
                r.stderr
            );
        }
        // Let the fake write its last records (sessions end on close or idle).
        std::thread::sleep(Duration::from_millis(1500));
        out
    }
}

impl Drop for RawEnv {
    fn drop(&mut self) {
        let _ = self.fake.kill();
        let _ = self.fake.wait();
    }
}

/// The last octet of a host's fake address.
pub fn host_octet(host: &str) -> u8 {
    match host {
        "api.openai.com" => 1,
        "api.anthropic.com" => 2,
        "generativelanguage.googleapis.com" => 3,
        h if h.starts_with("bedrock-runtime") => 4,
        h if h.ends_with("aiplatform.googleapis.com") => 5,
        _ => 7,
    }
}

/// A fresh RSA key: (PKCS#8 PEM, public PEM), from Python's `cryptography`.
fn rsa_key() -> (String, String) {
    let py = crate::py_venv().join("bin/python");
    let out = Command::new(py)
        .args([
            "-c",
            "import json\nfrom cryptography.hazmat.primitives.asymmetric import rsa\nfrom cryptography.hazmat.primitives import serialization as s\nk = rsa.generate_private_key(public_exponent=65537, key_size=2048)\nprint(json.dumps([k.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()).decode(), k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo).decode()]))",
        ])
        .output()
        .expect("python for an RSA key");
    let v: Value = serde_json::from_slice(&out.stdout).expect("RSA key JSON");
    (
        v[0].as_str().unwrap().to_string(),
        v[1].as_str().unwrap().to_string(),
    )
}
