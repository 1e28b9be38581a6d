//! The fleet's adversarial suite (issue I; `tests/tests/adversarial_fleet.rs`): attack cases
//! written from the protocols' public texts and the issue's contract, not from the gateway's
//! code. This module runs them: a misbehaving OpenID provider (`fleet_op.py`) the gateway is
//! configured to trust, which mints every ID-token case; held requests to approve; an HTTPS
//! admin-API client (`fleet_api.py`); the web page's attacker (`fleet_web.py`); export sinks
//! (`fleet_sink.py`) with strict RFC 5424 / CEF parsers; a raw NATS client for the bus.
//!
//! Judging never trusts what the gateway says about itself alone: a decision counts as taken
//! when the held client got its answer or the hold left `gateway approvals list --json` (run as
//! root, the ground truth), whatever the HTTP status of the attempt was.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

pub use super::fleet_tokens::{TokenCase, Verdict, token_cases};
use crate::{
    CgroupGuard, Gateway, Opts, cached_venv, fake::TestPki, free_port, provider::Providers,
};

pub const OP: &str = include_str!("fleet_op.py");
pub const API: &str = include_str!("fleet_api.py");
pub const HOLDS: &str = include_str!("fleet_holds.py");
pub const WEB: &str = include_str!("fleet_web.py");
pub const SINK: &str = include_str!("fleet_sink.py");
pub const NATS: &str = include_str!("fleet_nats.py");

/// The OIDC client the gateway is registered as at the misbehaving provider.
pub const CLIENT_ID: &str = "gw-adv-fleet";
pub const CLIENT_SECRET: &str = "adv-fleet-client-secret-7Hq2";
/// The web page's own OIDC client (confidential; its secret is [`CLIENT_SECRET`]).
pub const WEB_CLIENT_ID: &str = "gw-adv-fleet-web";
/// The env variable the gateway reads the client secret from.
pub const CLIENT_SECRET_ENV: &str = "GW_ADV_FLEET_OIDC_SECRET";
/// The word that makes a request held (`hold.keywords`).
pub const HOLD_WORD: &str = "adv-fleet-hold-now";
/// The vault's keys in the fleet environments: shaped like no detector, so only the vault's
/// own detectors (and this suite's searches) find them.
pub const VAULT: [(&str, &str); 3] = [
    ("openai", "vaultfleet-oa-Rt5Yh8Jk2Lp4Qw7Ez1Xc9Vb3Nm6As0Df"),
    (
        "anthropic",
        "vaultfleet-an-Gh4Jk7Lz2Xc5Vb8Nm1Qw3Er6Ty9Ui0Op",
    ),
    ("gemini", "vaultfleet-gm-Zx1Cv4Bn7Ma2Sd5Fg8Hj3Kl6Qw9Er0Ty"),
];

/// Python with `cryptography` (the provider's keys and signatures), our own cached venv.
pub fn venv_python() -> PathBuf {
    static V: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    V.get_or_init(|| cached_venv("adv-fleet-venv", &["cryptography"]).join("bin/python"))
        .clone()
}

/// The misbehaving OpenID provider: HTTPS on `ip:port` (issuer `https://ip:port`) and an
/// attacker's origin on `ip:attacker_port`, both with a certificate of its own test CA.
pub struct Op {
    pub issuer: String,
    pub ip: String,
    pub port: u16,
    pub attacker_port: u16,
    pub pki: TestPki,
    pub tokens: BTreeMap<String, String>,
    log: PathBuf,
    /// The ID tokens the token endpoint handed out (JSON lines `{case, token}`).
    pub minted: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Op {
    pub fn start(ip: &str, cases: &[TokenCase]) -> Self {
        let pki = TestPki::new(&[ip]);
        let dir = tempfile::Builder::new()
            .prefix("gw-advop-")
            .tempdir()
            .expect("tempdir");
        let port = free_port(ip);
        let attacker_port = free_port(ip);
        let issuer = format!("https://{ip}:{port}");
        let list: Vec<Value> = cases
            .iter()
            .map(|c| json!({"name": c.name, "spec": c.spec}))
            .collect();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("cases.json"), serde_json::to_vec(&list).unwrap()).unwrap();
        let cfg = json!({
            "issuer": issuer, "ip": ip, "port": port, "attacker_port": attacker_port,
            "cert": pki.leaf_pem, "key": pki.key_pem, "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET, "cases": p("cases.json"),
            "tokens_out": p("tokens.json"), "log": p("log.jsonl"), "minted": p("minted.jsonl"),
        });
        std::fs::write(p("cfg.json"), cfg.to_string()).unwrap();
        std::fs::write(p("op.py"), OP).unwrap();
        let mut child = Command::new(venv_python())
            .arg(p("op.py"))
            .arg(p("cfg.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the misbehaving OpenID provider");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("provider output");
        assert_eq!(
            line.trim(),
            "ready",
            "the misbehaving provider did not start"
        );
        let tokens: BTreeMap<String, String> =
            serde_json::from_slice(&std::fs::read(p("tokens.json")).expect("tokens minted"))
                .expect("tokens json");
        Self {
            issuer,
            ip: ip.to_string(),
            port,
            attacker_port,
            pki,
            tokens,
            log: p("log.jsonl"),
            minted: p("minted.jsonl"),
            child,
            _dir: dir,
        }
    }

    pub fn token(&self, case: &str) -> &str {
        self.tokens
            .get(case)
            .unwrap_or_else(|| panic!("no token minted for {case}"))
    }

    /// Every request the provider received (either port), oldest first.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Requests to the attacker's origin, or to `/attacker/...` on the issuer's: a verifier
    /// that fetched a key named by a token's header.
    pub fn attacker_hits(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| {
                r["port"] == self.attacker_port
                    || r["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/attacker"))
            })
            .map(|r| format!("{} {}", r["method"], r["path"]))
            .collect()
    }

    pub fn jwks_fetches(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["port"] == self.port && r["path"] == "/jwks")
            .count()
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which of the fleet's listeners a test turns on (each off unless configured).
#[derive(Default, Clone)]
pub struct Parts {
    pub admin_https: bool,
    pub web: bool,
    /// `[[export]]` blocks and anything else appended to the config.
    pub extra: String,
    /// Export receivers (`fleet_sink.py`) and one `[[export]]` per kind pointing at them.
    pub export: bool,
    /// `[oidc]` with the misbehaving provider as issuer, approvers `@oidc:llm-approvers`.
    pub oidc: bool,
    /// `[fleet]`: (nats URL, node name).
    pub fleet: Option<(String, String)>,
    /// An `[oidc]` section of another provider instead of the misbehaving one's.
    pub oidc_section: Option<String>,
}

/// The HEC token the gateway is given (via `token_env`).
pub const HEC_TOKEN: &str = "adv-hec-token-4b1f7e2a-93c5-4d10-a7e6-51c2f0d8b9aa";
pub const HEC_TOKEN_ENV: &str = "GW_ADV_FLEET_HEC_TOKEN";

/// Export receivers on the provider's address (its certificate serves HEC's HTTPS).
pub struct Sink {
    pub udp: u16,
    pub udp_cef: u16,
    pub tcp: u16,
    pub hec: u16,
    pub otlp: u16,
    pub ip: String,
    ca: PathBuf,
    out: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sink {
    pub fn start(ip: &str, pki: &TestPki) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-advsink-")
            .tempdir()
            .unwrap();
        let (udp, udp_cef, tcp, hec, otlp) = (
            free_port(ip),
            free_port(ip),
            free_port(ip),
            free_port(ip),
            free_port(ip),
        );
        let cfg = json!({"ip": ip, "udp": [udp, udp_cef], "tcp": tcp, "hec": hec, "otlp": otlp,
            "cert": pki.leaf_pem, "key": pki.key_pem});
        std::fs::write(dir.path().join("cfg.json"), cfg.to_string()).unwrap();
        std::fs::write(dir.path().join("sink.py"), SINK).unwrap();
        let out = dir.path().join("out.jsonl");
        let mut child = Command::new(crate::py_venv().join("bin/python"))
            .arg(dir.path().join("sink.py"))
            .arg(dir.path().join("cfg.json"))
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the export receivers");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the export receivers did not start");
        Self {
            udp,
            udp_cef,
            tcp,
            hec,
            otlp,
            ip: ip.to_string(),
            ca: pki.ca_pem.clone(),
            out,
            child,
            _dir: dir,
        }
    }

    /// The `[[export]]` blocks for every receiver.
    pub fn config(&self) -> String {
        let ip = &self.ip;
        format!(
            "[[export]]\nkind = \"syslog\"\nurl = \"udp://{ip}:{}\"\n\
             [[export]]\nkind = \"syslog\"\nurl = \"tcp://{ip}:{}\"\n\
             [[export]]\nkind = \"syslog\"\nurl = \"udp://{ip}:{}\"\nformat = \"cef\"\n\
             [[export]]\nkind = \"splunk-hec\"\nurl = \"https://{ip}:{}/services/collector/event\"\ntoken_env = \"{HEC_TOKEN_ENV}\"\nca_file = \"{}\"\n\
             [[export]]\nkind = \"otlp\"\nurl = \"http://{ip}:{}/v1/logs\"\n",
            self.udp,
            self.tcp,
            self.udp_cef,
            self.hec,
            self.ca.display(),
            self.otlp
        )
    }

    /// Everything received so far: (kind, port, conn, bytes, headers).
    pub fn records(&self) -> Vec<SinkRecord> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| SinkRecord {
                kind: v["kind"].as_str().unwrap_or("").to_string(),
                port: v["port"].as_u64().unwrap_or(0) as u16,
                conn: v["conn"].as_u64().unwrap_or(0),
                data: super::codec_unhex(v["data"].as_str().unwrap_or("")),
                headers: v["headers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| Some((h[0].as_str()?.to_string(), h[1].as_str()?.to_string())))
                    .collect(),
            })
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct SinkRecord {
    pub kind: String,
    pub port: u16,
    pub conn: u64,
    pub data: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// One gateway with the misbehaving provider as its issuer, fake LLM providers, a cgroup for
/// clients, approvers `@oidc:llm-approvers`.
pub struct FleetEnv {
    pub gw: Gateway,
    pub fakes: Providers,
    pub cg: CgroupGuard,
    pub op: Op,
    pub ca: PathBuf,
    pub hosts: PathBuf,
    pub admin: Option<SocketAddr>,
    pub web: Option<SocketAddr>,
    /// `127.<net>.<n>.0/24`: this environment's addresses.
    pub base: String,
    pub sink: Option<Sink>,
}

impl FleetEnv {
    pub fn start(prefix: &str, net: u8, parts: &Parts, cases: &[TokenCase]) -> Self {
        crate::require_privileges();
        let n = crate::unique();
        let base = format!("127.{net}.{n}");
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let cg = CgroupGuard::new(&name);
        let fakes = Providers::start(net, n);
        let op = Op::start(&format!("{base}.10"), cases);
        let admin_ip = format!("{base}.20");
        let web_ip = format!("{base}.21");
        let admin: Option<SocketAddr> = parts.admin_https.then(|| {
            format!("{admin_ip}:{}", free_port(&admin_ip))
                .parse()
                .unwrap()
        });
        let web: Option<SocketAddr> = parts
            .web
            .then(|| format!("{web_ip}:{}", free_port(&web_ip)).parse().unwrap());
        let mut extra = String::new();
        if let Some(o) = &parts.oidc_section {
            extra.push_str(o);
        } else if parts.oidc {
            extra.push_str(&format!(
                "[oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nca_file = \"{}\"\n",
                op.issuer,
                op.pki.ca_pem.display(),
            ));
        }
        extra.push_str(&format!(
            "[hold]\nkeywords = [\"{HOLD_WORD}\"]\ntimeout = \"15m\"\n{}",
            if parts.oidc {
                "approvers = [\"@oidc:llm-approvers\"]\n"
            } else {
                ""
            }
        ));
        if let Some(a) = admin {
            extra.push_str(&format!("[admin]\nhttps = \"{a}\"\n"));
        }
        if let Some(w) = web {
            extra.push_str(&format!(
                "[web]\nlisten = \"{w}\"\nclient_id = \"{WEB_CLIENT_ID}\"\n\
                 client_secret_env = \"{CLIENT_SECRET_ENV}\"\nredirect_uri = \"https://{w}/callback\"\n"
            ));
        }
        if let Some((url, node)) = &parts.fleet {
            extra.push_str(&format!("[fleet]\nnats = \"{url}\"\nnode = \"{node}\"\n"));
        }
        let sink = parts.export.then(|| Sink::start(&op.ip, &op.pki));
        if let Some(s) = &sink {
            extra.push_str(&s.config());
        }
        extra.push_str(&parts.extra);

        let gw = Gateway::start_opts(
            &name,
            &cg.path,
            &format!("{}{extra}", fakes.config()),
            &Opts {
                extra_roots: vec![fakes.pki.ca_pem.clone(), op.pki.ca_pem.clone()],
                keys: VAULT
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                builtin: true,
                env: vec![
                    (CLIENT_SECRET_ENV.into(), CLIENT_SECRET.into()),
                    (HEC_TOKEN_ENV.into(), HEC_TOKEN.into()),
                ],
                ..Default::default()
            },
        );
        let hosts = gw.dir.path().join("hosts");
        std::fs::write(&hosts, fakes.hosts()).expect("write hosts file");
        let ca = gw.ca_pem();
        Self {
            gw,
            fakes,
            cg,
            op,
            ca,
            hosts,
            admin,
            web,
            base,
            sink,
        }
    }

    /// A second node on the same bus and issuer: its own cgroup, state, pins and admin socket
    /// (the fleet's listeners are off unless configured, so nodes share one machine).
    pub fn peer(&self, prefix: &str, nats: &str, node: &str) -> Peer {
        let n = crate::unique();
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let cg = CgroupGuard::new(&name);
        let extra = format!(
            "[oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nca_file = \"{}\"\n\
             [hold]\nkeywords = [\"{HOLD_WORD}\"]\ntimeout = \"15m\"\napprovers = [\"@oidc:llm-approvers\"]\n\
             [fleet]\nnats = \"{nats}\"\nnode = \"{node}\"\n",
            self.op.issuer,
            self.op.pki.ca_pem.display()
        );
        let gw = Gateway::start_opts(
            &name,
            &cg.path,
            &format!("{}{extra}", self.fakes.config()),
            &Opts {
                extra_roots: vec![self.fakes.pki.ca_pem.clone(), self.op.pki.ca_pem.clone()],
                keys: VAULT
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                builtin: true,
                ..Default::default()
            },
        );
        Peer { gw, _cg: cg }
    }

    /// Pending holds as root sees them (`approvals list --json`).
    pub fn pending(&self) -> Vec<Value> {
        let out = self.gw.cli(&["approvals", "list", "--json"]);
        assert!(out.status.success(), "approvals list: {out:?}");
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Start one held request per marker (one Python process, one thread each) and wait until
    /// every one is pending. The holds by marker (the hold's JSON mentions its marker). A spec
    /// is `{"marker"}` plus optional `text`, `model`, `comm` (see `fleet_holds.py`).
    pub fn hold(&self, specs: &[Value]) -> (Held, BTreeMap<String, Value>) {
        let markers: Vec<String> = specs
            .iter()
            .map(|s| s["marker"].as_str().expect("marker").to_string())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("holds.py");
        std::fs::write(&script, HOLDS).unwrap();
        let out = dir.path().join("out.jsonl");
        let mut args: Vec<String> = vec![
            script.display().to_string(),
            self.ca.display().to_string(),
            HOLD_WORD.to_string(),
        ];
        args.extend(specs.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let py = crate::py_venv().join("bin/python");
        let mut cmd = self
            .cg
            .command_with_hosts(&self.hosts, py.to_str().unwrap(), &argv);
        let f = std::fs::File::create(&out).unwrap();
        cmd.stdout(f).stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn the held clients");
        let held = Held {
            child: Some(child),
            out,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            let p = self.pending();
            let mut by = BTreeMap::new();
            for h in &p {
                let text = h.to_string();
                for m in &markers {
                    if text.contains(m.as_str()) {
                        by.insert(m.clone(), h.clone());
                    }
                }
            }
            if by.len() == markers.len() {
                return (held, by);
            }
            let done = held.answers();
            assert!(
                Instant::now() < end && done.is_empty(),
                "wanted {} holds, have {} ({} answered early: {done:?})\n{}",
                markers.len(),
                by.len(),
                done.len(),
                self.gw.raw_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Send one request per spec (not held unless `"hold": true`) and wait for every answer.
    pub fn exchange(&self, specs: &[Value]) -> BTreeMap<String, Value> {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("holds.py");
        std::fs::write(&script, HOLDS).unwrap();
        let mut args: Vec<String> = vec![
            script.display().to_string(),
            self.ca.display().to_string(),
            HOLD_WORD.to_string(),
        ];
        args.extend(specs.iter().map(|s| {
            let mut s = s.clone();
            if s.get("hold").is_none() {
                s["hold"] = json!(false);
            }
            s.to_string()
        }));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let py = crate::py_venv().join("bin/python");
        let cmd = self
            .cg
            .command_with_hosts(&self.hosts, py.to_str().unwrap(), &argv);
        let r = crate::run(cmd, Duration::from_secs(120));
        r.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| (v["marker"].as_str().unwrap_or("").to_string(), v))
            .collect()
    }

    /// Every journal record (`journal list --json`).
    pub fn journal(&self) -> Vec<Value> {
        let out = self.gw.cli(&["journal", "list", "--json"]);
        assert!(out.status.success(), "journal list: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        match v {
            Value::Array(a) => a,
            _ => String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        }
    }

    /// Send `reqs` with the admin-API client, as root or (unix transport) as `uid`.
    pub fn api(&self, reqs: &[Value], uid: Option<u32>) -> BTreeMap<String, Value> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let file = dir.path().join("reqs.json");
        std::fs::write(&file, serde_json::to_vec(reqs).unwrap()).unwrap();
        let script = dir.path().join("api.py");
        std::fs::write(&script, API).unwrap();
        let results = dir.path().join("results.jsonl");
        let py = crate::py_venv().join("bin/python");
        let mut cmd = match uid {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={u}"))
                    .arg("--clear-groups")
                    .arg(&py);
                c
            }
            None => Command::new(&py),
        };
        cmd.arg(&script).arg(&file).arg(&results);
        let r = crate::run(cmd, Duration::from_secs(60 + 5 * reqs.len() as u64));
        let text = std::fs::read_to_string(&results).unwrap_or_default();
        let out: BTreeMap<String, Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| (v["id"].as_str().unwrap_or("").to_string(), v))
            .collect();
        assert!(
            out.len() == reqs.len(),
            "the admin-API client answered {} of {} requests: {r:?}",
            out.len(),
            reqs.len()
        );
        out
    }

    /// The admin socket (`<state_dir>/admin.sock`).
    pub fn admin_socket(&self) -> PathBuf {
        self.gw.dir.path().join("state/admin.sock")
    }
}

/// A second node (see [`FleetEnv::peer`]).
pub struct Peer {
    pub gw: Gateway,
    _cg: CgroupGuard,
}

impl Peer {
    /// The peer's admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.gw.dir.path().join("state/admin.sock")
    }

    pub fn pending(&self) -> Vec<Value> {
        let out = self.gw.cli(&["approvals", "list", "--json"]);
        assert!(out.status.success(), "approvals list on the peer: {out:?}");
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

/// A nats-server with JetStream (Debian's `nats-server`) on `ip:port`, and a spy subscribed
/// to every subject.
pub struct Bus {
    pub url: String,
    pub ip: String,
    pub port: u16,
    server: Child,
    spy: Option<Child>,
    spied: PathBuf,
    dir: tempfile::TempDir,
}

impl Bus {
    pub fn start(ip: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-advnats-")
            .tempdir()
            .unwrap();
        let port = free_port(ip);
        let server = Command::new("nats-server")
            .args(["-a", ip, "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path().join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian package nats-server) is needed for the bus cases");
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                ip, port
            ))
            .is_ok()),
            "nats-server did not listen on {ip}:{port}"
        );
        std::fs::write(dir.path().join("nats.py"), NATS).unwrap();
        let spied = dir.path().join("spied.jsonl");
        let spy = Command::new(crate::py_venv().join("bin/python"))
            .arg(dir.path().join("nats.py"))
            .args(["spy", ip, &port.to_string()])
            .arg(&spied)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the bus spy");
        Self {
            url: format!("nats://{ip}:{port}"),
            ip: ip.to_string(),
            port,
            server,
            spy: Some(spy),
            spied,
            dir,
        }
    }

    /// Every message seen on the bus so far: {subject, reply, headers, payload (bytes)}.
    pub fn spied(&self) -> Vec<BusMsg> {
        std::fs::read_to_string(&self.spied)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| BusMsg {
                subject: v["subject"].as_str().unwrap_or("").to_string(),
                headers: v["headers"].as_str().map(String::from),
                payload: super::codec_unhex(v["payload"].as_str().unwrap_or("")),
            })
            .collect()
    }

    /// Publish raw messages as an insider with bus access would.
    pub fn publish(&self, msgs: &[BusMsg]) {
        let list: Vec<Value> = msgs
            .iter()
            .map(|m| json!({"subject": m.subject, "headers": m.headers, "payload": super::hex(&m.payload)}))
            .collect();
        let f = self.dir.path().join("pub.json");
        std::fs::write(&f, serde_json::to_vec(&list).unwrap()).unwrap();
        let mut c = Command::new(crate::py_venv().join("bin/python"));
        c.arg(self.dir.path().join("nats.py"))
            .args(["pub", &self.ip, &self.port.to_string()])
            .arg(&f);
        let r = crate::run(c, Duration::from_secs(30));
        assert!(r.ok, "publishing on the bus failed: {r:?}");
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        if let Some(mut s) = self.spy.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[derive(Debug, Clone)]
pub struct BusMsg {
    pub subject: String,
    pub headers: Option<String>,
    pub payload: Vec<u8>,
}

/// A forged copy of a captured decision: every string equal to a key of `strings` replaced
/// (JSON payloads are walked; others replaced byte-wise), members named in `drop` removed, and
/// a fresh `Nats-Msg-Id` (JetStream's de-duplication must not be what stops a replay).
pub fn forge(m: &BusMsg, strings: &[(String, Option<String>)], tag: &str) -> BusMsg {
    fn walk(v: &mut Value, strings: &[(String, Option<String>)]) {
        match v {
            Value::Object(o) => {
                let drop: Vec<String> = o
                    .iter()
                    .filter(|(_, x)| {
                        x.as_str().is_some_and(|s| {
                            strings.iter().any(|(from, to)| to.is_none() && from == s)
                        })
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in drop {
                    o.remove(&k);
                }
                for x in o.values_mut() {
                    walk(x, strings);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, strings)),
            Value::String(s) => {
                for (from, to) in strings {
                    if let Some(to) = to
                        && s.contains(from.as_str())
                    {
                        *s = s.replace(from.as_str(), to);
                    }
                }
            }
            Value::Number(n) => {
                for (from, to) in strings {
                    if let Some(to) = to
                        && n.to_string() == *from
                        && let Ok(t) = to.parse::<u64>()
                    {
                        *v = json!(t);
                        return;
                    }
                }
            }
            _ => {}
        }
    }
    let payload = match serde_json::from_slice::<Value>(&m.payload) {
        Ok(mut v) => {
            walk(&mut v, strings);
            serde_json::to_vec(&v).unwrap()
        }
        Err(_) => {
            let mut p = String::from_utf8_lossy(&m.payload).into_owned();
            for (from, to) in strings {
                p = p.replace(from.as_str(), to.as_deref().unwrap_or(""));
            }
            p.into_bytes()
        }
    };
    let headers = m.headers.as_ref().map(|h| {
        h.lines()
            .map(|l| {
                if l.to_ascii_lowercase().starts_with("nats-msg-id:") {
                    format!("Nats-Msg-Id: adv-forged-{tag}-{}", std::process::id())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    });
    BusMsg {
        subject: m.subject.clone(),
        headers: headers.map(|h| {
            if h.ends_with("\r\n\r\n") {
                h
            } else {
                format!("{}\r\n\r\n", h.trim_end())
            }
        }),
        payload,
    }
}

/// The held clients; killed on drop (their holds withdrawn).
pub struct Held {
    child: Option<Child>,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Held {
    /// The answers that came back so far, by marker.
    pub fn answers(&self) -> BTreeMap<String, Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| (v["marker"].as_str().unwrap_or("").to_string(), v))
            .collect()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A hold's id as the admin API and the CLI take it.
pub fn hold_id(h: &Value) -> String {
    match &h["id"] {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A short, printable form of a response (never a whole token).
pub fn brief(r: &Value) -> String {
    let body: String = r["body"].as_str().unwrap_or("").chars().take(160).collect();
    match r["error"].as_str() {
        Some(e) => format!("no answer ({e})"),
        None => format!("{} {}", r["status"], body.replace('\n', " ")),
    }
}

/// Wait up to `d` for `pred` (polled every 100 ms).
pub fn wait_until(d: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + d;
    loop {
        if pred() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every token the run handed out must be absent from `text` (a log, a journal, an export).
pub fn tokens_in(op: &Op, text: &str) -> Vec<String> {
    let minted: Vec<(String, String)> = std::fs::read_to_string(&op.minted)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            Some((
                format!("minted:{}", v["case"].as_str().unwrap_or("")),
                v["token"].as_str()?.to_string(),
            ))
        })
        .collect();
    op.tokens
        .iter()
        .map(|(a, b)| (a.clone(), b.clone()))
        .chain(minted)
        .filter(|(_, t)| t.len() > 40)
        .filter(|(_, t)| {
            let t: &str = t;
            // The signature part: what makes a token usable.
            let sig = t.rsplit('.').next().unwrap_or("");
            sig.len() > 20 && text.contains(sig)
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// The admin API's routes, as the CLI uses them (seen from outside: `gateway approvals` talking
/// to a listener at the admin socket's path): listing the pending holds, and approving one
/// (`{id}`: the hold's id), with its body.
pub struct Routes {
    pub list: &'static str,
    pub approve: &'static str,
    pub approve_body: &'static str,
}

pub const ROUTES: Routes = Routes {
    list: "/v1/approvals",
    approve: "/v1/approvals/{id}/approve",
    approve_body: r#"{"reason":"adversarial"}"#,
};

/// A request for `EnvFleet::api`: over HTTPS to the admin listener, or on the Unix socket.
pub fn api_request(
    e: &FleetEnv,
    id: &str,
    unix: bool,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Value {
    let headers: Vec<[&str; 2]> = headers.iter().map(|(n, v)| [*n, *v]).collect();
    let mut r = json!({
        "id": id, "method": method, "target": target, "headers": headers, "body": body,
    });
    if unix {
        r["transport"] = json!("unix");
        r["socket"] = json!(e.admin_socket());
    } else {
        let a = e.admin.expect("the HTTPS admin API is on");
        r["transport"] = json!("https");
        r["ip"] = json!(a.ip().to_string());
        r["port"] = json!(a.port());
        // The listener's certificate is the operator's choice; what is judged here is who
        // gets in, so any certificate is taken (the certificate is not this suite's subject).
        r["insecure"] = json!(true);
    }
    r
}
