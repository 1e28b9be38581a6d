//! WebSocket sessions on provider hosts through the gateway, with Python `websockets` (and the
//! `h2` library for RFC 8441) inside the test cgroup, names resolved to the fake providers
//! (`gateway_tests::wsfake`) through a bind-mounted hosts file: Realtime, Responses WebSocket
//! mode and Gemini Live, keys swapped, messages masked both ways (a secret split across two
//! server events too), blocked with 1008, held until approved or denied, bounded with 1009,
//! an unrequested extension refused, and each session journaled with its timeline.

use std::time::Duration;

use gateway_tests::{ClientRun, provider::ProviderEnv, py_venv, run, wsfake::WsOptions};
use serde_json::Value;

const OPENAI_KEY: &str = "sk-proj-WsVaultKey7Qm2Lx9Rt4Yp1Zc8Vb3Nd6Hg5Jk0Aa";
const GEMINI_KEY: &str = "AIzaSyWsVaultKey7Qm2Lx9Rt4Yp1Zc8Vb3Nd6Hg";
const LIMIT: usize = 65536;

fn config() -> String {
    format!(
        r#"
[limits]
max_ws_message = {LIMIT}
[[rule]]
name = "customer"
pattern = "CUST-[0-9]{{8}}"
on = ["request", "response"]
action = "mask"
[[rule]]
name = "launch-code"
pattern = "LAUNCH-[0-9]{{6}}"
on = ["request"]
action = "block"
[hold]
keywords = ["production database"]
timeout = "30s"
self_approval = true
"#
    )
}

/// Shared by the scripts: connect with the job's dummy key, collect, print JSON.
const PRELUDE: &str = r#"
import base64, json, sys
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
OPENAI = {"Authorization": "Bearer sk-dummy-from-the-job", "OpenAI-Beta": "realtime=v1"}
def item(text):
    return json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
def realtime(sends, until="response.done", timeout=20, delay=0):
    import time
    out = {"types": [], "text": ""}
    try:
        with connect("wss://api.openai.com/v1/realtime?model=gpt-realtime", additional_headers=OPENAI, max_size=None, open_timeout=20) as ws:
            out["types"].append(json.loads(ws.recv(timeout=20))["type"])
            time.sleep(delay)
            for s in sends:
                ws.send(s)
            while True:
                e = json.loads(ws.recv(timeout=timeout))
                out["types"].append(e["type"])
                if e["type"] in ("response.text.delta", "response.output_text.delta"):
                    out["text"] += e["delta"]
                if e["type"] == until:
                    break
    except ConnectionClosed as c:
        out["close"] = [c.rcvd.code, c.rcvd.reason] if c.rcvd else None
    except InvalidStatus as s:
        out["status"] = s.response.status_code
        out["body"] = s.response.body.decode(errors="replace") if s.response.body else ""
    print(json.dumps(out))
"#;

const REALTIME: &str = r#"
audio = base64.b64encode(bytes(range(256)) * 12).decode()
realtime([json.dumps({"type": "input_audio_buffer.append", "audio": audio}), item(sys.argv[1]), json.dumps({"type": "response.create"})])
"#;

const BIG: &str = r#"
realtime([item("x" * int(sys.argv[1]))])
"#;

const BLOCK: &str = r#"
realtime([item(sys.argv[1]), json.dumps({"type": "response.create"})])
"#;

const ANSWER: &str = r#"
realtime([json.dumps({"type": "response.create"})])
"#;

const LATE: &str = r#"
realtime([json.dumps({"type": "response.create"})], delay=float(sys.argv[1]))
"#;

const HELD: &str = r#"
realtime([item(sys.argv[1]), item("second message"), json.dumps({"type": "response.create"})], timeout=60)
"#;

const RESPONSES: &str = r#"
out = {"text": "", "types": []}
h = {"Authorization": "Bearer sk-dummy-from-the-job", "OpenAI-Beta": "responses_websockets=2026-02-06"}
with connect("wss://api.openai.com/v1/responses", additional_headers=h, max_size=None, open_timeout=20) as ws:
    ws.send(json.dumps({"type": "response.create", "model": "gpt-5-codex", "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": sys.argv[1]}]}]}))
    while True:
        e = json.loads(ws.recv(timeout=20)); out["types"].append(e["type"])
        if e["type"] == "response.output_text.delta": out["text"] += e["delta"]
        if e["type"] in ("response.completed", "response.failed", "error"): break
print(json.dumps(out))
"#;

const LIVE: &str = r#"
uri = "wss://generativelanguage.googleapis.com/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent?key=AIza-dummy-from-the-job"
out = {"text": "", "binary": 0}
with connect(uri, max_size=None, open_timeout=20) as ws:
    ws.send(json.dumps({"setup": {"model": "models/gemini-live-x"}}))
    out["setup"] = json.loads(ws.recv(timeout=20))
    ws.send(json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [{"text": sys.argv[1]}]}], "turnComplete": True}}))
    while True:
        m = ws.recv(timeout=20)
        if isinstance(m, bytes): out["binary"] += 1
        v = json.loads(m)
        for p in v.get("serverContent", {}).get("modelTurn", {}).get("parts", []):
            out["text"] += p.get("text", "")
        if v.get("serverContent", {}).get("turnComplete"): break
print(json.dumps(out))
"#;

/// RFC 8441 by hand: h2 with ALPN, SETTINGS_ENABLE_CONNECT_PROTOCOL from the gateway, an
/// extended CONNECT, then masked WebSocket frames in DATA frames.
const H2: &str = r#"
import os, socket, ssl, struct
import h2.connection, h2.config, h2.events, h2.settings
ctx = ssl.create_default_context(); ctx.set_alpn_protocols(["h2"])
s = ctx.wrap_socket(socket.create_connection(("api.openai.com", 443), timeout=20), server_hostname="api.openai.com")
out = {"alpn": s.selected_alpn_protocol()}
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
c.initiate_connection(); s.sendall(c.data_to_send())
def pump():
    data = s.recv(65535)
    if not data: raise EOFError("connection closed")
    evs = c.receive_data(data); s.sendall(c.data_to_send()); return evs
got = False
while not got:
    for e in pump():
        if isinstance(e, h2.events.RemoteSettingsChanged):
            got = True
            v = e.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
            out["enable_connect_protocol"] = bool(v and v.new_value)
sid = c.get_next_available_stream_id()
c.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":path", "/v1/realtime?model=gpt-realtime"), (":authority", "api.openai.com"), ("sec-websocket-version", "13"), ("authorization", "Bearer sk-dummy-from-the-job"), ("openai-beta", "realtime=v1")])
s.sendall(c.data_to_send())
def frame(op, payload):
    mask = os.urandom(4); n = len(payload); head = bytes([0x80 | op])
    if n < 126: head += bytes([0x80 | n])
    elif n < 65536: head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else: head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
def parse(buf):
    if len(buf) < 2: return None
    op = buf[0] & 0x0f; n = buf[1] & 0x7f; i = 2
    if n == 126: n = struct.unpack(">H", buf[2:4])[0]; i = 4
    elif n == 127: n = struct.unpack(">Q", buf[2:10])[0]; i = 10
    if len(buf) < i + n: return None
    return op, buf[i:i + n], buf[i + n:]
buf = b""; msgs = []; sent = False
while not any(json.loads(m)["type"] == "response.done" for m in msgs):
    for e in pump():
        if isinstance(e, h2.events.ResponseReceived):
            out["status"] = dict(e.headers).get(":status")
        elif isinstance(e, h2.events.DataReceived):
            c.acknowledge_received_data(e.flow_controlled_length, e.stream_id); buf += e.data
        elif isinstance(e, (h2.events.StreamReset, h2.events.StreamEnded)):
            raise SystemExit("stream ended: %r %r" % (e, out))
    s.sendall(c.data_to_send())
    while True:
        p = parse(buf)
        if not p: break
        op, payload, buf = p
        if op == 1: msgs.append(payload.decode())
    if out.get("status") == "200" and msgs and not sent:
        c.send_data(sid, frame(1, json.dumps({"type": "response.create"}).encode())); s.sendall(c.data_to_send()); sent = True
out["types"] = [json.loads(m)["type"] for m in msgs]
out["text"] = "".join(json.loads(m).get("delta", "") for m in msgs if json.loads(m)["type"] == "response.text.delta")
c.send_data(sid, frame(8, struct.pack(">H", 1000))); s.sendall(c.data_to_send())
print(json.dumps(out))
"#;

struct T {
    env: ProviderEnv,
    py: std::path::PathBuf,
    /// `journal.fail_writes_while`: journal writes fail while this file exists.
    fault: std::path::PathBuf,
}

impl T {
    fn cmd(&self, script: &str, args: &[&str]) -> std::process::Command {
        let code = format!("{PRELUDE}{script}");
        let mut all = vec!["-c", code.as_str()];
        all.extend_from_slice(args);
        let mut cmd =
            self.env
                .cg
                .command_with_hosts(&self.env.hosts, self.py.to_str().unwrap(), &all);
        cmd.env("SSL_CERT_FILE", &self.env.ca);
        cmd
    }

    /// Run a script to its end; its JSON output.
    fn py(&self, script: &str, args: &[&str]) -> Value {
        let r = run(self.cmd(script, args), Duration::from_secs(90));
        self.json(&r)
    }

    fn json(&self, r: &ClientRun) -> Value {
        assert!(r.ok, "{r:?}\n{}", self.env.gw.raw_log());
        serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {r:?}\n{}", self.env.gw.raw_log()))
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.env.gw.cli(args);
        assert!(
            out.status.success(),
            "gateway {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The full records of every session with `endpoint`, oldest first.
    fn sessions(&self, endpoint: &str) -> Vec<Value> {
        let list = self.cli_json(&["journal", "list", "--json"]);
        list.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["endpoint"] == endpoint)
            .map(|r| self.cli_json(&["journal", "show", &r["id"].to_string(), "--json"]))
            .collect()
    }

    fn holds(&self) -> Vec<Value> {
        self.cli_json(&["approvals", "list", "--json"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn wait_hold(&self) -> Value {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(h) = self.holds().into_iter().next() {
                return h;
            }
            assert!(
                std::time::Instant::now() < end,
                "no hold appeared (TCP connections the fake providers accepted so far: openai \
                 {}, anthropic {}, gemini {}: whether the gateway reached the provider)\n{}",
                self.env.fakes.openai.conn_log().len(),
                self.env.fakes.anthropic.conn_log().len(),
                self.env.fakes.gemini.conn_log().len(),
                self.env.gw.raw_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn start(prefix: &str, net: u8) -> T {
    let venv = py_venv();
    let fault = std::env::temp_dir().join(format!(
        "gw-ws-fail-{net}-{}-{}",
        std::process::id(),
        gateway_tests::unique()
    ));
    let _ = std::fs::remove_file(&fault);
    let env = ProviderEnv::start(
        prefix,
        net,
        &format!(
            "{}[journal]\nfail_writes_while = {:?}\n",
            config(),
            fault.display().to_string()
        ),
        &[("openai", OPENAI_KEY), ("gemini", GEMINI_KEY)],
    );
    T {
        env,
        py: venv.join("bin/python"),
        fault,
    }
}

impl Drop for T {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.fault);
    }
}

/// Realtime: the provider sees the vault key and the masked message (the audio counted),
/// the client sees the vault key the provider echoed split across two events masked; Responses
/// WebSocket mode and Gemini Live (key in `?key=`) likewise; each session one record with its
/// timeline, replayable.
#[test]
fn sessions_swap_keys_mask_both_ways_and_are_journaled() {
    gateway_tests::require_privileges();
    let t = start("gw-ws", 170);
    let split = WsOptions {
        deltas: Some(vec![
            "key: ".into(),
            "{{CRED_A}}".into(),
            "{{CRED_B}}".into(),
            " and CUST-".into(),
            "87654321 done".into(),
        ]),
        ..Default::default()
    };
    t.env.fakes.openai.ws_options(split.clone());
    t.env.fakes.gemini.ws_options(split);

    // Realtime.
    let out = t.py(REALTIME, &["order CUST-12345678 please"]);
    let text = out["text"].as_str().unwrap();
    assert!(
        out["types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "response.done"),
        "{out}"
    );
    assert!(
        !text.contains(OPENAI_KEY),
        "the vault key reached the client: {text}"
    );
    assert!(!text.contains("87654321"), "{text}");
    assert!(
        text.starts_with("key: [MASKED") && text.contains("[MASKED:customer]"),
        "{text}"
    );
    let s = t.env.fakes.openai.wait_ws(1, Duration::from_secs(10));
    let s = s.last().unwrap();
    assert_eq!(
        s.credentials(),
        vec![format!("authorization: Bearer {OPENAI_KEY}")],
        "{s:#?}"
    );
    assert!(!format!("{s:?}").contains("dummy-from-the-job"), "{s:#?}");
    assert!(
        s.header("sec-websocket-extensions").is_empty(),
        "no extension is offered upstream"
    );
    let got: Vec<String> = s.received.iter().map(|m| format!("{m:?}")).collect();
    assert!(
        got.iter()
            .any(|m| m.contains("order [MASKED:customer] please")),
        "{got:?}"
    );
    assert!(!got.iter().any(|m| m.contains("CUST-12345678")), "{got:?}");
    assert_eq!(s.audio_bytes, 3072, "the audio went through whole");

    // Responses WebSocket mode.
    let out = t.py(RESPONSES, &["hello CUST-11112222"]);
    let text = out["text"].as_str().unwrap();
    assert!(
        text.starts_with("key: [MASKED") && !text.contains(OPENAI_KEY),
        "{out}"
    );
    let s = t.env.fakes.openai.wait_ws(2, Duration::from_secs(10));
    let s = s.last().unwrap();
    assert_eq!(s.target, "/v1/responses");
    assert_eq!(
        s.header("openai-beta"),
        vec!["responses_websockets=2026-02-06"]
    );
    assert!(format!("{:?}", s.received).contains("hello [MASKED:customer]"));

    // Gemini Live: the key in the query is removed, the vault's goes in the header.
    let out = t.py(LIVE, &["hi CUST-33334444"]);
    assert_eq!(out["setup"], serde_json::json!({"setupComplete": {}}));
    let text = out["text"].as_str().unwrap();
    assert!(
        text.starts_with("key: [MASKED") && !text.contains(GEMINI_KEY),
        "{out}"
    );
    assert!(
        out["binary"].as_u64().unwrap() > 2,
        "binary frames stay binary: {out}"
    );
    let s = t.env.fakes.gemini.wait_ws(1, Duration::from_secs(10));
    let s = s.last().unwrap();
    assert!(!s.target.contains("key="), "{}", s.target);
    assert_eq!(
        s.credentials(),
        vec![format!("x-goog-api-key: {GEMINI_KEY}")]
    );
    assert!(format!("{:?}", s.received).contains("hi [MASKED:customer]"));

    // The journal: one record per session, status 101, its timeline masked and audio-free.
    let rt = t.sessions("realtime");
    assert_eq!(rt.len(), 1, "{rt:#?}");
    let r = &rt[0];
    assert_eq!(r["status"], 101);
    assert_eq!(r["provider"], "openai");
    assert_eq!(r["model"], "gpt-realtime");
    assert_eq!(r["key"], "openai");
    let ws = &r["websocket"];
    assert_eq!(ws["transport"], "h1");
    assert_eq!(ws["audio_bytes"], 3072);
    assert_eq!(ws["client_messages"], 3);
    let msgs = ws["messages"].as_array().unwrap();
    let texts: Vec<&str> = msgs.iter().filter_map(|m| m["text"].as_str()).collect();
    assert!(
        texts.iter().any(|x| x.contains("[audio: 3072 bytes]")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|x| x.contains("order [MASKED:customer] please"))
    );
    assert!(
        msgs.iter()
            .any(|m| m["dir"] == "server" && m["action"] == "masked"),
        "{msgs:?}"
    );
    let all = r.to_string();
    for secret in [
        OPENAI_KEY,
        "CUST-12345678",
        "87654321",
        "dummy-from-the-job",
    ] {
        assert!(!all.contains(secret), "{secret} in the record");
    }
    assert!(!all.contains("AAECAwQF"), "audio kept in the journal");
    let close = &ws["close"];
    assert_eq!(close["by"], "client", "{close}");
    assert_eq!(close["code"], 1000, "{close}");
    let rules: Vec<(&str, &str)> = r["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["direction"].as_str().unwrap(),
                d["rule"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(rules.contains(&("request", "customer")), "{rules:?}");
    assert!(rules.contains(&("response", "customer")), "{rules:?}");
    assert!(
        rules
            .iter()
            .any(|(d, r)| *d == "response" && *r != "customer"),
        "the vault key's hit: {rules:?}"
    );
    assert_eq!(t.sessions("responses-ws").len(), 1);
    let live = t.sessions("live");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["model"], "models/gemini-live-x");
    assert_eq!(live[0]["stripped_params"], 1, "{:#}", live[0]);

    // `journal show` prints the timeline; `replay` plays the provider's side.
    let id = r["id"].to_string();
    let show = t.env.gw.cli(&["journal", "show", &id]);
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains("--- websocket session ---") && show.contains("<- text"),
        "{show}"
    );
    let rp = t.env.gw.cli(&["replay", &id, "--speed", "0"]);
    assert!(
        rp.status.success(),
        "{}",
        String::from_utf8_lossy(&rp.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&rp.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["type"], "session.created");
    assert_eq!(lines.last().unwrap()["type"], "response.done");
    let replayed: String = lines
        .iter()
        .filter(|v| v["type"] == "response.text.delta")
        .filter_map(|v| v["delta"].as_str())
        .collect();
    assert_eq!(replayed, text_of(&rt[0]));
    let v = t.env.gw.cli(&["journal", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

/// The text deltas a session record holds, as the client got them.
fn text_of(rec: &Value) -> String {
    rec["websocket"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["dir"] == "server")
        .filter_map(|m| serde_json::from_str::<Value>(m["text"].as_str()?).ok())
        .filter(|v| v["type"] == "response.text.delta")
        .filter_map(|v| v["delta"].as_str().map(String::from))
        .collect()
}

/// Block (1008 naming the rule, nothing sent), hold (approved: the held message and the ones
/// after it go on in order; denied: 1008), too large (1009 both ways), an extension the client
/// did not get offered (refused before the session), and h2 extended CONNECT.
#[test]
fn sessions_are_blocked_held_bounded_and_refused_fail_closed() {
    gateway_tests::require_privileges();
    let t = start("gw-wsp", 171);
    let fake = &t.env.fakes.openai;

    // Block: the client gets 1008 with the rule's name; the provider never sees the message.
    let out = t.py(BLOCK, &["launch with LAUNCH-123456 now"]);
    let close = out["close"].as_array().unwrap_or_else(|| panic!("{out}"));
    assert_eq!(close[0], 1008, "{out}");
    let reason = close[1].as_str().unwrap();
    assert!(
        reason.contains("launch-code") && !reason.contains("123456"),
        "{reason}"
    );
    let s = fake.wait_ws(1, Duration::from_secs(10));
    assert!(s[0].received.is_empty(), "{:?}", s[0].received);

    // Hold, approved: nothing reaches the provider until then; then everything, in order.
    let child = {
        let cmd = t.cmd(HELD, &["please drop the production database"]);
        std::thread::spawn(move || run(cmd, Duration::from_secs(90)))
    };
    let h = t.wait_hold();
    assert_eq!(h["endpoint"], "realtime", "{h}");
    std::thread::sleep(Duration::from_millis(300));
    let before = fake.ws_sessions();
    assert!(
        before.last().unwrap().received.is_empty(),
        "sent before approval"
    );
    let ok = t
        .env
        .gw
        .cli(&["approvals", "approve", &h["id"].to_string()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = t.json(&child.join().unwrap());
    assert!(
        out["types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "response.done"),
        "{out}"
    );
    let s = fake.wait_ws(2, Duration::from_secs(10));
    let kinds: Vec<String> = s[1].received.iter().map(|m| m.kind()).collect();
    assert_eq!(
        kinds,
        [
            "conversation.item.create",
            "conversation.item.create",
            "response.create"
        ],
        "{:?}",
        s[1].received
    );
    let order = format!("{:?}", s[1].received);
    assert!(
        order.find("production database") < order.find("second message"),
        "{order}"
    );

    // Hold, denied: 1008, and the provider got nothing.
    let child = {
        let cmd = t.cmd(HELD, &["production database again"]);
        std::thread::spawn(move || run(cmd, Duration::from_secs(90)))
    };
    let h = t.wait_hold();
    let no = t
        .env
        .gw
        .cli(&["approvals", "deny", &h["id"].to_string(), "--reason", "no"]);
    assert!(
        no.status.success(),
        "{}",
        String::from_utf8_lossy(&no.stderr)
    );
    let out = t.json(&child.join().unwrap());
    assert_eq!(out["close"][0], 1008, "{out}");
    assert!(
        out["close"][1].as_str().unwrap().contains("denied"),
        "{out}"
    );
    let s = fake.wait_ws(3, Duration::from_secs(10));
    assert!(s[2].received.is_empty(), "{:?}", s[2].received);

    // Too large, client side: 1009, and the provider never gets it.
    let out = t.py(BIG, &[&(LIMIT + 1000).to_string()]);
    assert_eq!(out["close"][0], 1009, "{out}");
    let s = fake.wait_ws(4, Duration::from_secs(10));
    assert!(s[3].received.is_empty());
    // Too large, provider side: 1009 to the client.
    fake.ws_options(WsOptions {
        oversize: Some(LIMIT + 1000),
        ..Default::default()
    });
    let out = t.py(ANSWER, &[]);
    assert_eq!(out["close"][0], 1009, "{out}");
    // An extension the gateway never offered: the session is not opened.
    fake.ws_options(WsOptions {
        force_extensions: Some("permessage-deflate".into()),
        ..Default::default()
    });
    let out = t.py(ANSWER, &[]);
    assert_eq!(out["status"], 502, "{out}");
    assert!(out["body"].as_str().unwrap().contains("extension"), "{out}");
    fake.ws_options(WsOptions::default());

    // h2 extended CONNECT (RFC 8441) from the client; HTTP/1.1 upgrade to the provider.
    let out = t.py(H2, &[]);
    assert_eq!(out["alpn"], "h2");
    assert_eq!(out["enable_connect_protocol"], true, "{out}");
    assert_eq!(out["status"], "200", "{out}");
    assert!(
        out["types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "response.done"),
        "{out}"
    );
    let s = fake.ws_sessions();
    let last = s.last().unwrap();
    assert_eq!(last.version, "HTTP/1.1");
    assert_eq!(
        last.credentials(),
        vec![format!("authorization: Bearer {OPENAI_KEY}")]
    );

    // An upgrade to anything but WebSocket is refused in the provider's shape.
    let curl = run(
        t.env.cg.command_with_hosts(
            &t.env.hosts,
            "curl",
            &[
                "-sS",
                "--http1.1",
                "--cacert",
                t.env.ca.to_str().unwrap(),
                "-H",
                "Upgrade: h2c",
                "-H",
                "Connection: Upgrade",
                "-H",
                "Authorization: Bearer sk-dummy-from-the-job",
                "-w",
                "\n%{http_code}",
                "https://api.openai.com/v1/models",
            ],
        ),
        Duration::from_secs(30),
    );
    assert!(curl.stdout.ends_with("\n400"), "{curl:?}");
    assert!(curl.stdout.contains("only WebSocket"), "{curl:?}");

    // The journal has each session with how it ended.
    let rt = t.sessions("realtime");
    let closes: Vec<(Value, Value)> = rt
        .iter()
        .map(|r| {
            (
                r["websocket"]["close"]["code"].clone(),
                r["gateway_error"].clone(),
            )
        })
        .collect();
    assert!(
        closes.contains(&(Value::from(1008), Value::from("blocked_by_policy"))),
        "{closes:?}"
    );
    assert!(
        closes.contains(&(Value::from(1009), Value::from("message_too_large"))),
        "{closes:?}"
    );
    let approved = rt
        .iter()
        .find(|r| r["approval"]["outcome"] == "approved")
        .expect("the approved session");
    assert_eq!(approved["websocket"]["close"]["code"], 1000);
    assert!(rt.iter().any(|r| r["approval"]["outcome"] == "denied"));
    assert!(rt.iter().any(|r| r["websocket"]["transport"] == "h2"));
    assert!(
        rt.iter()
            .any(|r| r["status"] == 502 && r["gateway_error"] == "upstream_unavailable")
    );

    // Fail closed on the journal: a session open while it breaks is closed (1011) at its next
    // message, nothing of it sent; a new upgrade is refused (503) before anything is sent.
    let opened = fake.ws_sessions().len();
    let late = {
        let cmd = t.cmd(LATE, &["4"]);
        std::thread::spawn(move || run(cmd, Duration::from_secs(60)))
    };
    // The late session is open (the fake has it) before the journal breaks. The wait is for
    // a Python client to start and connect (a loaded machine takes its time: up to the
    // client's own 60 s budget); a client that ended without opening one says why at once.
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while fake.ws_sessions().len() == opened {
        if late.is_finished() {
            let out = late.join().unwrap();
            panic!(
                "the late session ended before the fake saw it: {out:?}\n{}",
                t.env.gw.raw_log()
            );
        }
        assert!(
            std::time::Instant::now() < end,
            "the late session did not open\n{}",
            t.env.gw.raw_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&t.fault, "").unwrap();
    let before = opened + 1;
    let out = t.py(ANSWER, &[]);
    assert!(
        out["types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "response.done"),
        "{out}"
    );
    let out = t.json(&late.join().unwrap());
    assert_eq!(out["close"][0], 1011, "{out}");
    assert!(
        out["close"][1].as_str().unwrap().contains("journal"),
        "{out}"
    );
    let s = fake.ws_sessions();
    let late_session = &s[before - 1];
    assert!(
        late_session.received.is_empty(),
        "the late message went out: {late_session:#?}"
    );
    let out = t.py(ANSWER, &[]);
    assert_eq!(out["status"], 503, "{out}");
    assert!(
        out["body"]
            .as_str()
            .unwrap()
            .contains("journal cannot record"),
        "{out}"
    );
    assert_eq!(
        fake.ws_sessions().len(),
        before + 1,
        "a refused upgrade reached the provider"
    );
}
