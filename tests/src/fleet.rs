//! The fleet world (issue I): one real `nats-server` (JetStream on, its store in a temp dir)
//! in a network namespace of its own, and nodes, each a gateway in a network namespace of its
//! own with its own fake OpenAI, cgroup and hosts file, joined to the server's namespace by a
//! veth pair. Used by `tests/fleet.rs` and the fleet benchmark.
//!
//! Addresses: every namespace is the test's own. The fake of node `i` listens on its own
//! namespace's loopback, `127.<net>.<i+1>.1:443`. The veth links between the namespaces carry
//! `198.18.<net>.<4i+1>` (server side) and `.<4i+2>` (node side), /30 — RFC 2544's benchmark
//! range, reachable from nowhere but these namespaces (127/8 does not route over a veth).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{CgroupGuard, Gateway, Opts, fake::TestPki, netns::TestNet, provider::FakeProvider};

/// A real nats-server in its namespace; stopped (and restarted) on purpose, killed on drop.
pub struct Nats {
    pub store: tempfile::TempDir,
    pub net: TestNet,
    child: Option<Child>,
    log: PathBuf,
    starts: usize,
}

impl Nats {
    pub fn start(net: TestNet) -> Self {
        let store = tempfile::Builder::new()
            .prefix("gw-nats-")
            .tempdir()
            .unwrap();
        let log = store.path().join("nats.log");
        let mut n = Self {
            store,
            net,
            child: None,
            log,
            starts: 0,
        };
        n.resume();
        n
    }

    /// Start the server (again, on the same store: its streams are kept).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let js = self.store.path().join("js");
        let child = self
            .net
            .command(
                "nats-server",
                &[
                    "-js",
                    "-a",
                    "0.0.0.0",
                    "-p",
                    "4222",
                    "-sd",
                    js.to_str().unwrap(),
                ],
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server (Debian package nats-server) is needed for the fleet tests");
        self.child = Some(child);
        self.starts += 1;
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.matches("Server is ready").count() >= self.starts {
                return;
            }
            assert!(Instant::now() < end, "nats-server did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the server (SIGKILL: a bus outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One node: its gateway, fake, cgroup and namespace (drop order: the gateway first).
pub struct Node {
    pub name: String,
    pub gw: Gateway,
    pub fake: FakeProvider,
    pub pki: TestPki,
    pub cg: CgroupGuard,
    pub hosts: PathBuf,
    /// The gateway's CA: what the node's clients trust.
    pub ca: PathBuf,
    /// `nats://198.18.<net>.<4i+1>:4222`, as this node reaches the server.
    pub nats_url: String,
    pub net: TestNet,
}

/// The server and the nodes.
pub struct FleetWorld {
    pub nodes: Vec<Node>,
    pub nats: Nats,
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl FleetWorld {
    /// `nodes` nodes named `node-a`, `node-b`, ...; `extra` is added to every node's config
    /// (after its `[fleet]` section: more keys for it, or other sections).
    pub fn start(prefix: &str, net: u8, nodes: usize, extra: &str) -> Self {
        crate::require_privileges();
        let u = crate::unique();
        let pid = std::process::id() % 10_000;
        let nats_net = TestNet::new(&format!("gwfn{pid}-{u}"));
        let mut made = Vec::new();
        for i in 0..nodes {
            let letter = (b'a' + i as u8) as char;
            let net_ns = TestNet::new(&format!("gwf{letter}{pid}-{u}"));
            // The veth pair, created straight into both namespaces.
            let (here, there) = (format!("fl{letter}{u}"), format!("fn{letter}{u}"));
            sh(Command::new("ip").args([
                "link",
                "add",
                "name",
                &here,
                "netns",
                &net_ns.name,
                "type",
                "veth",
                "peer",
                "name",
                &there,
                "netns",
                &nats_net.name,
            ]));
            let server_ip = format!("198.18.{net}.{}", 4 * i + 1);
            let node_ip = format!("198.18.{net}.{}", 4 * i + 2);
            nats_net.ip(&["addr", "add", &format!("{server_ip}/30"), "dev", &there]);
            nats_net.ip(&["link", "set", &there, "up"]);
            net_ns.ip(&["addr", "add", &format!("{node_ip}/30"), "dev", &here]);
            net_ns.ip(&["link", "set", &here, "up"]);
            let fake_ip = format!("127.{net}.{}.1", i + 1);
            net_ns.add_addr(&fake_ip);
            made.push((letter, net_ns, server_ip, fake_ip));
        }
        let nats = Nats::start(nats_net);
        let mut out = Vec::new();
        for (letter, net_ns, server_ip, fake_ip) in made {
            let name = format!("node-{letter}");
            let pki = TestPki::new(&["api.openai.com"]);
            let fake = net_ns
                .within(|| FakeProvider::start(format!("{fake_ip}:443").parse().unwrap(), &pki));
            let cg_name = format!("{prefix}-{letter}-{}-{u}", std::process::id());
            let cg = CgroupGuard::new(&cg_name);
            let nats_url = format!("nats://{server_ip}:4222");
            let gw = Gateway::start_opts(
                &cg_name,
                &cg.path,
                &format!("[[provider]]\nname = \"openai\"\naddrs = [\"{fake_ip}/32\"]\n"),
                &Opts {
                    netns: Some(net_ns.name.clone()),
                    extra_roots: vec![pki.ca_pem.clone()],
                    keys: vec![("openai".into(), format!("sk-real-key-of-{name}-000000"))],
                    builtin: true,
                    extra: format!("[fleet]\nnats = \"{nats_url}\"\nnode = \"{name}\"\n{extra}\n"),
                    ..Default::default()
                },
            );
            let hosts = gw.dir.path().join("hosts");
            std::fs::write(
                &hosts,
                format!("127.0.0.1 localhost\n{fake_ip} api.openai.com\n"),
            )
            .unwrap();
            let ca = gw.ca_pem();
            out.push(Node {
                name,
                gw,
                fake,
                pki,
                cg,
                hosts,
                ca,
                nats_url,
                net: net_ns,
            });
        }
        let w = Self { nodes: out, nats };
        for n in &w.nodes {
            n.wait_log(
                "fleet bus connected; streams ready",
                Duration::from_secs(30),
            );
        }
        w
    }
}

impl Node {
    /// `program args` as this node's workload: in its cgroup, with its hosts file, in its
    /// namespace (moved into the cgroup first; nsenter leaves /sys alone).
    pub fn client(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount --bind \"$0\" /etc/hosts && echo $$ > \"$1\" && n=\"$2\" && shift 3 && \
                 exec nsenter --net=\"$n\" \"$@\"",
            )
            .arg(&self.hosts)
            .arg(self.cg.path.join("cgroup.procs"))
            .arg(self.net.path())
            .arg("placeholder")
            .arg(program)
            .args(args);
        c.env("SSL_CERT_FILE", &self.ca);
        c
    }

    /// One chat completion with curl; the HTTP status.
    pub fn curl_chat(&self, text: &str) -> u16 {
        let body = serde_json::json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": text}],
        })
        .to_string();
        let out = self
            .client(
                "curl",
                &[
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "20",
                    "--cacert",
                    self.ca.to_str().unwrap(),
                    "-H",
                    "authorization: Bearer sk-dummy-of-the-workload",
                    "-H",
                    "content-type: application/json",
                    "-d",
                    &body,
                    "https://api.openai.com/v1/chat/completions",
                ],
            )
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// `gateway <args> -c <config>` run in this node's namespace (for commands that reach the
    /// bus themselves, e.g. `journal verify --fleet`).
    pub fn cli_in_ns(&self, args: &[&str]) -> std::process::Output {
        self.net
            .command(crate::gateway_bin().to_str().unwrap(), args)
            .arg("-c")
            .arg(&self.gw.config)
            .output()
            .expect("gateway cli")
    }

    /// `gateway approvals list --json` on this node.
    pub fn holds(&self) -> Vec<serde_json::Value> {
        let out = self.gw.cli(&["approvals", "list", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Poll this node's listing until `pred` holds for it.
    pub fn wait_holds(
        &self,
        timeout: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let end = Instant::now() + timeout;
        loop {
            let h = self.holds();
            if pred(&h) {
                return h;
            }
            assert!(
                Instant::now() < end,
                "{}: holds never as wanted: {h:?}\n{}",
                self.name,
                self.gw.raw_log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Every journal record id on this node.
    pub fn journal_ids(&self) -> Vec<u64> {
        let out = self.gw.cli(&["journal", "list", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    }

    pub fn wait_log(&self, msg: &str, timeout: Duration) {
        self.gw
            .wait_for(timeout, |evs| evs.iter().any(|e| crate::message(e) == msg))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no {msg:?} in the log:\n{}",
                    self.name,
                    self.gw.raw_log()
                )
            });
    }
}

/// Talk to the bus from a node's namespace (a thread that joined it, its own runtime).
pub fn on_bus<T: Send>(
    node: &Node,
    f: impl AsyncFnOnce(async_nats::jetstream::Context) -> T + Send,
) -> T {
    let url = node.nats_url.clone();
    node.net.within(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let c = async_nats::connect(url.as_str())
                .await
                .expect("connect to nats");
            f(async_nats::jetstream::new(c)).await
        })
    })
}

/// Every message of `GW_JOURNAL` on `gw.journal.<node>`: (stream sequence, `Gw-Id` header).
pub async fn journal_on_stream(js: &async_nats::jetstream::Context, node: &str) -> Vec<(u64, u64)> {
    let s = js.get_stream("GW_JOURNAL").await.expect("GW_JOURNAL");
    let mut info = s.clone();
    let state = info.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(m) = s.get_raw_message(seq).await else {
            continue;
        };
        if m.subject.as_str() != format!("gw.journal.{node}") {
            continue;
        }
        let id = m
            .headers
            .get("Gw-Id")
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(0);
        out.push((seq, id));
    }
    out
}

/// The python of the SDK venv.
pub fn python() -> PathBuf {
    crate::py_venv().join("bin/python")
}

/// A chat completion with the official openai SDK: prints {"text"} or {"error", "status"}.
pub const PY_CHAT: &str = r#"
import json, sys
from openai import OpenAI
c = OpenAI(api_key="sk-dummy-of-the-workload", max_retries=0, timeout=120)
try:
    r = c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": sys.argv[1]}])
    print(json.dumps({"text": r.choices[0].message.content}))
except Exception as e:
    print(json.dumps({"error": str(e), "status": getattr(e, "status_code", None)}))
"#;

/// Start the SDK on `node` asking `text` (its output piped).
pub fn spawn_chat(node: &Node, text: &str) -> Child {
    let py = python();
    node.client(py.to_str().unwrap(), &["-c", PY_CHAT, text])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the SDK")
}

/// The SDK's JSON line.
pub fn chat_result(c: Child) -> serde_json::Value {
    let out = c.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
