//! Shared helpers for the end-to-end tests: a child cgroup (scope guard), the real gateway
//! binary with its pins (scope guard), fake providers on loopback speaking real TLS with
//! certificates minted at test time, and clients run inside the cgroup.
//!
//! Privileged helpers fail loudly (panic with the reason) when they cannot run: never a skip.

pub mod adversarial;
pub mod bedrock;
pub mod browser;
pub mod dns;
pub mod fake;
pub mod fleet;
pub mod fleetca;
pub mod mediation;
pub mod netns;
pub mod oidc;
pub mod provider;
pub mod sinks;
pub mod vaultfake;
pub mod vertex;
pub mod wire;
pub mod wsfake;

use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpListener as StdTcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Panic unless we are root on a host with cgroup v2 and BTF.
pub fn require_privileges() {
    let uid = nix::unistd::geteuid();
    assert!(
        uid.is_root(),
        "these end-to-end tests attach eBPF programs: run them as root (cargo xtask test does)"
    );
    assert!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "kernel without BTF (/sys/kernel/btf/vmlinux missing): the eBPF programs cannot load"
    );
    cgroup2_root();
}

/// The cgroup v2 mount, from /proc/self/mountinfo.
pub fn cgroup2_root() -> PathBuf {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next()? == "cgroup2")
                .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap()))
        })
        .expect("no cgroup v2 mount on this host: the end-to-end tests need one")
}

static NEXT: AtomicU32 = AtomicU32::new(1);

/// A small number unique within this test process (1..=250), for addresses and names.
pub fn unique() -> u32 {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n <= 250, "too many test environments in one process");
    n
}

/// A child cgroup, removed (its processes killed first) when dropped.
pub struct CgroupGuard {
    pub path: PathBuf,
}

impl CgroupGuard {
    pub fn new(name: &str) -> Self {
        Self::at(cgroup2_root().join(name))
    }

    /// A cgroup at `path` (its missing parents created; those are the caller's to remove).
    pub fn at(path: PathBuf) -> Self {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("create cgroup {}: {e}", parent.display()));
        }
        if path.exists() {
            let _ = fs::write(path.join("cgroup.kill"), "1");
            let _ = fs::remove_dir(&path);
        }
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        Self { path }
    }

    /// `cmd` with a wrapper that moves itself into this cgroup and then execs the command, so
    /// the command's pid and comm are its own.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(self.path.join("cgroup.procs"))
            .arg(program)
            .args(args);
        c
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let _ = fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove cgroup {}", self.path.display());
    }
}

/// The gateway binary: $GATEWAY_BIN (set by `cargo xtask test`), else target/debug/gateway.
pub fn gateway_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/gateway");
    assert!(
        p.exists(),
        "gateway binary not built: run `cargo xtask test` (or cargo build -p gateway)"
    );
    p
}

/// A free TCP port on `ip` (bound and released; good enough on a test host).
pub fn free_port(ip: &str) -> u16 {
    StdTcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Extra settings for a test gateway.
#[derive(Default)]
pub struct Opts {
    /// Body of the `[dns]` section.
    pub dns: Option<String>,
    /// `upstream.extra_roots`: the fake providers' CA.
    pub extra_roots: Vec<PathBuf>,
    /// Vault keys written to `<state>/vault.toml` (0600) before start.
    pub keys: Vec<(String, String)>,
    /// Keep the built-in provider list (their hosts; DNS still goes nowhere).
    pub builtin: bool,
    /// Extra TOML appended to the config (e.g. a `[vault]` section).
    pub extra: String,
    /// Log filter instead of "info,gateway_ebpf=debug" (must keep gateway::app at info).
    pub log_level: Option<String>,
    /// `listen.addr` instead of a free loopback port (e.g. an address a network namespace the
    /// test created can reach).
    pub listen: Option<SocketAddr>,
    /// Run the daemon inside this network namespace (`nsenter --net=/run/netns/NAME`): its
    /// listeners (`listen.addr` 127.0.0.1:15001, `listen.addr6` [::1]:15001 unless `listen`
    /// says otherwise, metrics 127.0.0.1:9464) are that namespace's. The admin socket, the
    /// log and the pins are reached from the host as usual.
    pub netns: Option<String>,
    /// Extra lines inside the `[redirect]` section (e.g. `identity_root = "..."`).
    pub redirect_extra: String,
    /// Extra lines inside the `[intercept]` section (e.g. `kernel_relay = false`).
    pub intercept_extra: String,
    /// `redirect.ports` instead of `[443]`.
    pub ports: Option<Vec<u16>>,
    /// Environment variables of the daemon (e.g. an exporter's `token_env`).
    pub env: Vec<(String, String)>,
}

/// One test's gateway: its config, state dir, pins and process. Killed and detached on drop.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub pin_dir: PathBuf,
    pub listen: SocketAddr,
    pub listen6: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics: SocketAddr,
    child: Option<Child>,
    log_path: PathBuf,
    runs: u32,
    netns: Option<String>,
    env: Vec<(String, String)>,
}

impl Gateway {
    /// Write a config for `cgroup` with `providers` (TOML `[[provider]]` blocks) and start.
    pub fn start(name: &str, cgroup: &Path, providers: &str) -> Self {
        Self::start_opts(name, cgroup, providers, &Opts::default())
    }

    /// As `start`, with the body of the `[dns]` section given.
    pub fn start_with_dns(name: &str, cgroup: &Path, providers: &str, dns: &str) -> Self {
        Self::start_opts(
            name,
            cgroup,
            providers,
            &Opts {
                dns: Some(dns.to_string()),
                ..Default::default()
            },
        )
    }

    pub fn start_opts(name: &str, cgroup: &Path, providers: &str, opts: &Opts) -> Self {
        // DNS goes to a closed loopback port: no test ever sends a query off the machine.
        let dns = opts
            .dns
            .clone()
            .unwrap_or_else(|| "servers = [\"127.0.0.1:9\"]\nretry = \"1s\"".to_string());
        let roots: Vec<String> = opts
            .extra_roots
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("gw-test-")
            .tempdir()
            .expect("tempdir");
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{name}"));
        let (listen, listen6, metrics): (SocketAddr, SocketAddr, SocketAddr) =
            if opts.netns.is_some() {
                // The namespace is the test's own: fixed ports cannot collide.
                (
                    opts.listen
                        .unwrap_or_else(|| "127.0.0.1:15001".parse().unwrap()),
                    "[::1]:15001".parse().unwrap(),
                    "127.0.0.1:9464".parse().unwrap(),
                )
            } else {
                (
                    opts.listen.unwrap_or_else(|| {
                        format!("127.0.0.1:{}", free_port("127.0.0.1"))
                            .parse()
                            .unwrap()
                    }),
                    format!("[::1]:{}", free_port("::1")).parse().unwrap(),
                    format!("127.0.0.1:{}", free_port("127.0.0.1"))
                        .parse()
                        .unwrap(),
                )
            };
        let ports = opts
            .ports
            .as_ref()
            .map(|p| {
                p.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "443".to_string());
        let config = dir.path().join("gateway.toml");
        let text = format!(
            r#"state_dir = "{state}"
builtin_providers = {builtin}
{extra}
[listen]
addr = "{listen}"
addr6 = "{listen6}"
[redirect]
cgroup = "{cgroup}"
ports = [{ports}]
pin_dir = "{pin}"
{redirect_extra}
[dns]
{dns}
[intercept]
client_hello_timeout = "2s"
connect_timeout = "3s"
{intercept_extra}
[upstream]
extra_roots = [{roots}]
[log]
format = "json"
level = "{level}"
[metrics]
listen = "{metrics}"
{providers}
"#,
            state = dir.path().join("state").display(),
            cgroup = cgroup.display(),
            pin = pin_dir.display(),
            roots = roots.join(", "),
            builtin = opts.builtin,
            extra = opts.extra,
            redirect_extra = opts.redirect_extra,
            intercept_extra = opts.intercept_extra,
            level = opts
                .log_level
                .as_deref()
                .unwrap_or("info,gateway_ebpf=debug"),
        );
        fs::write(&config, text).expect("write config");
        if !opts.keys.is_empty() {
            let state = dir.path().join("state");
            fs::create_dir_all(&state).unwrap();
            let body: String = opts
                .keys
                .iter()
                .map(|(k, v)| format!("{k} = {v:?}\n"))
                .collect();
            let vault = state.join("vault.toml");
            fs::write(&vault, format!("[keys]\n{body}")).unwrap();
            fs::set_permissions(&vault, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        }
        let mut gw = Self {
            log_path: dir.path().join("gateway.log"),
            dir,
            config,
            pin_dir,
            listen,
            listen6,
            metrics,
            child: None,
            runs: 0,
            netns: opts.netns.clone(),
            env: opts.env.clone(),
        };
        gw.spawn();
        gw
    }

    /// Start (or restart) the daemon and wait for "gateway ready".
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "gateway already running");
        self.runs += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open gateway log");
        let mut cmd = match &self.netns {
            Some(ns) => {
                // nsenter execs the daemon: the child's pid is the daemon's.
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(gateway_bin());
                c
            }
            None => Command::new(gateway_bin()),
        };
        let child = cmd
            .args(["run", "-c"])
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start gateway");
        self.child = Some(child);
        let want = self.runs as usize;
        self.wait_for(Duration::from_secs(30), |evs| {
            evs.iter().filter(|e| message(e) == "gateway ready").count() >= want
        })
        .unwrap_or_else(|| panic!("gateway did not become ready; log:\n{}", self.raw_log()));
    }

    /// The gateway's CA certificate (created at first start).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("state/ca/ca.pem")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, as a service manager stops it, and wait for the exit (kill -9 after
    /// `grace`). The exit status, or `None` when it had to be killed or was not running.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// kill -9, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn raw_log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Every JSON log event so far.
    pub fn events(&self) -> Vec<Value> {
        let Ok(f) = fs::File::open(&self.log_path) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .collect()
    }

    /// Events whose message is `msg`, as their `fields` objects.
    pub fn fields(&self, msg: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| message(e) == msg)
            .map(|e| e["fields"].clone())
            .collect()
    }

    /// Poll the log until `pred` holds (Some) or `timeout` passes (None).
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Option<()> {
        let end = Instant::now() + timeout;
        loop {
            if pred(&self.events()) {
                return Some(());
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for a "connection closed" event whose orig_dst is `dst` and return the matching
    /// "connection accepted" fields (same conn id) along with the closed ones.
    pub fn conn_to(&self, dst: &str) -> (Value, Value) {
        self.wait_for(Duration::from_secs(10), |evs| {
            evs.iter()
                .any(|e| message(e) == "connection closed" && e["fields"]["orig_dst"] == dst)
        })
        .unwrap_or_else(|| panic!("no closed connection to {dst}; log:\n{}", self.raw_log()));
        let closed = self
            .fields("connection closed")
            .into_iter()
            .rfind(|f| f["orig_dst"] == dst)
            .unwrap();
        let accepted = self
            .fields("connection accepted")
            .into_iter()
            .find(|f| f["conn"] == closed["conn"])
            .unwrap_or(Value::Null);
        (accepted, closed)
    }

    /// The daemon's `/metrics` text (fetched with curl).
    pub fn metrics_text(&self) -> String {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("curl");
                c
            }
            None => Command::new("curl"),
        };
        let out = cmd
            .args(["-sS", "--max-time", "5"])
            .arg(format!("http://{}/metrics", self.metrics))
            .output()
            .expect("curl");
        assert!(out.status.success(), "fetching /metrics: {out:?}");
        String::from_utf8(out.stdout).expect("metrics are text")
    }

    /// `gateway <args> -c <config>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(gateway_bin())
            // The daemon's environment (secrets a config names by `*_env`): the CLI reads the
            // same config and checks them too.
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .output()
            .expect("run gateway cli")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
        let _ = self.cli(&["detach"]);
        if self.pin_dir.exists() {
            eprintln!("warning: pins left at {}", self.pin_dir.display());
        }
    }
}

pub fn message(e: &Value) -> &str {
    e["fields"]["message"].as_str().unwrap_or("")
}

/// What a client run produced.
#[derive(Debug)]
pub struct ClientRun {
    pub pid: u32,
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run to completion (killed after `timeout`).
pub fn run(mut cmd: Command, timeout: Duration) -> ClientRun {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let pid = child.id();
    let end = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("wait client") {
            Some(_) => break,
            None if Instant::now() > end => {
                let _ = child.kill();
                break;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let out = child.wait_with_output().expect("client output");
    ClientRun {
        pid,
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// A Python venv with the official SDKs, installed from PyPI once per machine (cached under
/// target/, keyed by the package list).
pub fn py_venv() -> PathBuf {
    static VENV: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        const PKGS: &[&str] = &[
            "openai",
            "anthropic",
            "google-genai",
            "h2",
            "boto3",
            "websockets",
            "google-auth",
            "requests",
            "httpx",
        ];
        cached_venv("py-sdk-venv", PKGS)
    })
    .clone()
}

/// A venv `target/<name>` with `pkgs` from PyPI, made once per machine and remade when the
/// package list changes (a marker file keeps the list it was made with).
pub fn cached_venv(name: &str, pkgs: &[&str]) -> PathBuf {
    let target = fs::canonicalize(target_dir()).expect("target dir");
    let dir = target.join(name);
    let marker = dir.join(".gateway-packages");
    if fs::read_to_string(&marker).ok().as_deref() == Some(&pkgs.join(" ")) {
        return dir;
    }
    let _ = fs::remove_dir_all(&dir);
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .expect("python3 -m venv");
    assert!(ok.success(), "creating the venv {name} failed");
    let out = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(pkgs)
        .output()
        .expect("pip");
    assert!(
        out.status.success(),
        "pip install {pkgs:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(&marker, pkgs.join(" ")).unwrap();
    dir
}

/// A directory with the official Node `openai` SDK installed from npm once (cached).
pub fn node_sdk() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("node-sdk");
        if dir.join("node_modules/openai/package.json").exists() {
            return dir;
        }
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("package.json"),
            r#"{"name":"gw-sdk-test","private":true,"type":"module"}"#,
        )
        .unwrap();
        let out = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "openai"])
            .current_dir(&dir)
            .output()
            .expect("npm (Node.js) is needed for the Node SDK test");
        assert!(
            out.status.success(),
            "npm install openai failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .clone()
}

/// The Codex CLI version the tests pin: its Responses WebSocket transport is on by default for
/// the built-in OpenAI provider (it falls back to HTTPS, logging "falling back to HTTP", when
/// the WebSocket cannot be had).
pub const CODEX_VERSION: &str = "0.171.0";

/// The `codex` launcher of npm's `@openai/codex` (a native binary in a platform package),
/// installed once under target/codex-cli (cached, keyed by [`CODEX_VERSION`]).
pub fn codex_cli() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let dir = target_dir().join("codex-cli");
        let bin = dir.join("node_modules/.bin/codex");
        let marker = dir.join(".gateway-version");
        if bin.exists() && fs::read_to_string(&marker).ok().as_deref() == Some(CODEX_VERSION) {
            return bin;
        }
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("package.json"),
            r#"{"name":"gw-codex-test","private":true}"#,
        )
        .unwrap();
        let out = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund"])
            .arg(format!("@openai/codex@{CODEX_VERSION}"))
            .current_dir(&dir)
            .output()
            .expect("npm (Node.js) is needed to install the Codex CLI");
        assert!(
            out.status.success() && bin.exists(),
            "npm install @openai/codex@{CODEX_VERSION} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(&marker, CODEX_VERSION).unwrap();
        bin
    })
    .clone()
}

impl CgroupGuard {
    /// `command`, but in a private mount namespace where `hosts` is bind-mounted over
    /// /etc/hosts: the client resolves provider names to the test's addresses, and the machine's
    /// own /etc/hosts is never touched.
    pub fn command_with_hosts(&self, hosts: &Path, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$0\" /etc/hosts && echo $$ > \"$1\" && shift 2 && exec \"$@\"")
            .arg(hosts)
            .arg(self.path.join("cgroup.procs"))
            .arg("placeholder")
            .arg(program)
            .args(args);
        c
    }
}

/// Python source run as `python3 -c`.
pub const PY_TLS_CLIENT: &str = r#"
import socket, ssl, sys, json
host, ip, port, cafile, family = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
fam = socket.AF_INET6 if family == "6" else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.connect((ip, port))
peer = s.getpeername()
ctx = ssl.create_default_context(cafile=cafile)
t = ctx.wrap_socket(s, server_hostname=host)
t.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n")
data = b""
while True:
    chunk = t.recv(65536)
    if not chunk:
        break
    data += chunk
print(json.dumps({"peer": [peer[0], peer[1]], "body": data.decode(errors="replace")}))
"#;

/// Sends `ECHO n` and n random bytes, checks the echo; prints {"peer":..., "same": bool}.
pub const PY_ECHO_CLIENT: &str = r#"
import socket, ssl, sys, json, os
host, ip, port, cafile, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
s = socket.create_connection((ip, port))
ctx = ssl.create_default_context(cafile=cafile)
t = ctx.wrap_socket(s, server_hostname=host)
payload = os.urandom(n)
t.sendall(b"ECHO %d\n" % n + payload)
data = b""
while len(data) < n:
    chunk = t.recv(65536)
    if not chunk:
        break
    data += chunk
print(json.dumps({"same": data == payload, "got": len(data), "cert_issuer": dict(x[0] for x in t.getpeercert()["issuer"])}))
"#;

/// Plain TCP connect with an optional SO_MARK; prints the local port.
pub const PY_CONNECT: &str = r#"
import socket, sys, json
ip, port, mark = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
if mark:
    s.setsockopt(socket.SOL_SOCKET, 36, mark)  # SO_MARK
s.settimeout(5)
s.connect((ip, port))
print(json.dumps({"local_port": s.getsockname()[1], "peer": list(s.getpeername())}))
"#;

/// promtool, unpacked by `cargo xtask test` under target/tools (Debian's prometheus package).
pub fn promtool() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/usr/bin/promtool")
}

/// A venv under target/ with PyPI's kubernetes-validate (Kubernetes JSON schemas, offline).
pub fn k8s_venv() -> PathBuf {
    static VENV: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let dir = target_dir().join("k8s-venv");
        if dir.join("bin/kubernetes-validate").exists() {
            return dir;
        }
        let _ = fs::remove_dir_all(&dir);
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .expect("python3 -m venv");
        assert!(ok.success(), "creating the kubernetes-validate venv failed");
        let out = Command::new(dir.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "kubernetes-validate",
            ])
            .output()
            .expect("pip");
        assert!(
            out.status.success(),
            "pip install kubernetes-validate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .clone()
}

/// Make pins look like another build's: zero the pinned `GW_META` entry (bpftool), so the
/// next start replaces the programs instead of adopting them.
pub fn zero_pinned_meta(pin_dir: &std::path::Path) {
    let map = pin_dir.join("maps/GW_META");
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&map)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool map dump {}: {out:?}",
        map.display()
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool json {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let entry = &v[0];
    let key_len = entry["key"].as_array().map(|a| a.len()).unwrap_or(4);
    let val_len = entry["value"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or_else(|| panic!("GW_META has no entry to zero: {v}"));
    let mut args: Vec<String> = vec!["map".into(), "update".into(), "pinned".into()];
    args.push(map.display().to_string());
    args.push("key".into());
    args.extend(std::iter::repeat_n("0".to_string(), key_len));
    args.push("value".into());
    args.extend(std::iter::repeat_n("0".to_string(), val_len));
    let out = std::process::Command::new("bpftool")
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "bpftool map update: {out:?}");
}
