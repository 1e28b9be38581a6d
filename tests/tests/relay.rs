//! The kernel relay of spliced connections (deploy/docs/kernel-relay.md) end to end: the real
//! eBPF programs, the real gateway, a Python client inside the test's cgroup sending a
//! ClientHello for another site to a provider address declared shared (so the gateway
//! splices it), and a server on loopback outside the cgroup. What must hold whatever moves the
//! bytes: every byte both ways, in order (SHA-256 on both ends of a large transfer in both
//! directions at once), a FIN passed on after the bytes before it whichever side closes first,
//! a reset passed on as a reset. The log must say the kernel relayed it (not splice(2)).
//! Addresses: 127.205.<n>.1 (this file's range).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Shutdown, TcpListener},
    sync::mpsc,
    thread,
    time::Duration,
};

use gateway_tests::{CgroupGuard, Gateway, require_privileges, run, unique};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);
const UP: usize = 48 << 20;
const DOWN: usize = 40 << 20;
const TAIL: &[u8] = b"tail after the other side's FIN";

/// The client: `MODE IP PORT UP DOWN`. Sends a ClientHello for bulk.example.org, then:
/// - `client_first`: UP random bytes (while reading), FIN; reads to EOF.
/// - `server_first`: UP random bytes (while reading); after the server's EOF the tail, FIN.
/// - `reset_client`: 1 MiB, waits for the server's "ok", then closes with RST.
/// - `reset_server`: 1 MiB, then reads until the server's RST.
/// - `streaming`: as `client_first`, without waiting for the server's first bytes.
///
/// Except when streaming, the client waits for the server's first bytes before the bulk, as a
/// TLS client waits for the ServerHello.
///
/// Prints JSON: SHA-256 of everything it sent and received, counts, whether it saw a reset.
const PY_CLIENT: &str = r#"
import hashlib, json, random, socket, struct, sys, threading
mode, ip, port, up, down = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
TAIL = b"tail after the other side's FIN"
def hello(name):
    n = name.encode()
    sn = struct.pack(">HBH", len(n) + 3, 0, len(n)) + n
    ext = struct.pack(">HH", 0, len(sn)) + sn
    body = b"\x03\x03" + b"\x07" * 32 + b"\x00\x00\x02\x13\x01\x01\x00" + struct.pack(">H", len(ext)) + ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs
s = socket.create_connection((ip, port))
sent, got = hashlib.sha256(), hashlib.sha256()
counts = {"sent_n": 0, "got_n": 0}
h = hello("bulk.example.org")
s.sendall(h); sent.update(h); counts["sent_n"] += len(h)
out = {"mode": mode, "hello": len(h)}
if mode.startswith("reset"):
    s.recv(65536)  # the server's first bytes, as a TLS client waits for the ServerHello
    block = random.Random(7).randbytes(1 << 20)
    s.sendall(block)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                out["eof"] = True
                break
            if mode == "reset_client" and b == b"ok":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                out["closed_with_rst"] = True
                break
    except ConnectionResetError:
        out["reset"] = True
    print(json.dumps(out))
    sys.exit(0)
if mode != "streaming":
    # As a TLS client waits for the ServerHello: the server's first bytes, then the bulk.
    b = s.recv(65536)
    got.update(b); counts["got_n"] += len(b)
eof = threading.Event()
def reader():
    # An error here must not pass for an early EOF: it is reported, and the counts show it.
    try:
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got.update(b); counts["got_n"] += len(b)
    except OSError as e:
        out["reader_error"] = repr(e)
    eof.set()
t = threading.Thread(target=reader); t.start()
rng = random.Random(1)
left = up
while left:
    b = rng.randbytes(min(left, 1 << 20))
    s.sendall(b); sent.update(b); counts["sent_n"] += len(b); left -= len(b)
if mode == "server_first":
    eof.wait()
    s.sendall(TAIL); sent.update(TAIL); counts["sent_n"] += len(TAIL)
s.shutdown(socket.SHUT_WR)
t.join()
out.update(counts, sent_sha=sent.hexdigest(), got_sha=got.hexdigest())
print(json.dumps(out))
"#;

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the server saw of one connection.
#[derive(Debug, Default)]
struct Seen {
    got: usize,
    got_sha: String,
    sent: usize,
    sent_sha: String,
    reset: bool,
    eof: bool,
    /// An I/O error where none was expected.
    error: Option<String>,
}

/// Deterministic bytes (xorshift), so the server needs no shared seed with the client.
fn block(state: &mut u64, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        v.extend_from_slice(&state.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Serve one connection on `l` in `mode` (see PY_CLIENT); the result comes on the channel.
fn server(l: TcpListener, mode: &'static str) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        let mut seen = Seen::default();
        if mode.starts_with("reset") {
            let mut s = s;
            s.write_all(b"server speaks first").unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0;
            let hello_and_block = 1 << 20;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        seen.eof = true;
                        break;
                    }
                    Ok(k) => {
                        n += k;
                        // The hello is well under 100 bytes: the whole block is in.
                        if n > hello_and_block && seen.sent == 0 {
                            s.write_all(b"ok").unwrap();
                            seen.sent = 2;
                            if mode == "reset_server" {
                                thread::sleep(Duration::from_millis(100));
                                socket2::SockRef::from(&s)
                                    .set_linger(Some(Duration::ZERO))
                                    .unwrap();
                                drop(s);
                                break;
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                        seen.reset = true;
                        break;
                    }
                    Err(e) => {
                        seen.error = Some(format!("read: {e}"));
                        break;
                    }
                }
            }
            seen.got = n;
            let _ = tx.send(seen);
            return;
        }
        let (eof_tx, eof_rx) = mpsc::channel::<()>();
        let mut r = s.try_clone().unwrap();
        let reader = thread::spawn(move || {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            let mut err = None;
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        ctx.update(&buf[..k]);
                        n += k;
                    }
                    Err(e) => {
                        err = Some(format!("read after {n} bytes: {e}"));
                        break;
                    }
                }
            }
            let _ = eof_tx.send(());
            (n, hex(ctx.finish().as_ref()), err)
        });
        let mut w = s;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let greeting = b"server speaks after the hello";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut left = DOWN;
        let mut write = |b: &[u8]| match w.write_all(b) {
            Ok(()) => {
                ctx.update(b);
                seen.sent += b.len();
                true
            }
            Err(e) => {
                seen.error = Some(format!("write after {} bytes: {e}", seen.sent));
                false
            }
        };
        let mut ok = write(greeting);
        while ok && left > 0 {
            let b = block(&mut state, left.min(1 << 20));
            ok = write(&b);
            left -= b.len();
        }
        if ok && (mode == "client_first" || mode == "streaming") {
            // Only after the client's FIN came through: the tail proves the half-close.
            let _ = eof_rx.recv();
            ok = write(TAIL);
        }
        if ok {
            let _ = w.shutdown(Shutdown::Write);
        }
        seen.sent_sha = hex(ctx.finish().as_ref());
        let (n, sha, err) = reader.join().unwrap();
        seen.got = n;
        seen.got_sha = sha;
        seen.error = seen.error.take().or(err);
        seen.eof = true;
        let _ = tx.send(seen);
    });
    rx
}

struct Env {
    gw: Gateway,
    cg: CgroupGuard,
    ip: String,
}

fn env(extra: &str) -> Env {
    require_privileges();
    let n = unique();
    let name = format!("gw-relay-{}-{n}", std::process::id());
    let cg = CgroupGuard::new(&name);
    let ip = format!("127.205.{n}.1");
    let providers = format!(
        "[[provider]]\nname = \"openai\"\nhosts = [\"api.openai.com\"]\naddrs = [\"{ip}/32\"]\nshared = true\n"
    );
    let gw = Gateway::start_opts(
        &name,
        &cg.path,
        &providers,
        &gateway_tests::Opts {
            intercept_extra: extra.into(),
            log_level: Some("info,gateway::intercept=debug".into()),
            ..Default::default()
        },
    );
    Env { gw, cg, ip }
}

fn client(e: &Env, mode: &str) -> Value {
    let py = run(
        e.cg.command(
            "python3",
            &[
                "-c",
                PY_CLIENT,
                mode,
                &e.ip,
                "443",
                &UP.to_string(),
                &DOWN.to_string(),
            ],
        ),
        T,
    );
    assert!(py.ok, "client failed: {py:?}\nlog:\n{}", e.gw.raw_log());
    serde_json::from_str(py.stdout.trim()).unwrap_or_else(|_| panic!("client said {py:?}"))
}

fn both_ways(mode: &'static str) {
    let e = env("kernel_relay = true");
    let rx = server(TcpListener::bind(format!("{}:443", e.ip)).unwrap(), mode);
    let out = client(&e, mode);
    let seen = rx.recv_timeout(T).expect("server done");
    assert!(
        seen.error.is_none(),
        "server: {seen:?}\nclient: {out}\nlog:\n{}",
        e.gw.raw_log()
    );
    let n = |k: &str| out[k].as_u64().unwrap_or_else(|| panic!("{k} in {out}")) as usize;
    let tail = |m: &str| if mode == m { TAIL.len() } else { 0 };
    assert_eq!(n("sent_n"), n("hello") + UP + tail("server_first"), "{out}");
    assert_eq!(
        n("sent_n"),
        seen.got,
        "the server got every client byte: {out} {seen:?}"
    );
    assert_eq!(
        out["sent_sha"],
        seen.got_sha.as_str(),
        "client → server, in order"
    );
    assert_eq!(
        seen.sent,
        29 + DOWN + tail("client_first") + tail("streaming")
    );
    assert_eq!(
        n("got_n"),
        seen.sent,
        "the client got every server byte: {out} {seen:?}\nlog:\n{}",
        e.gw.raw_log()
    );
    assert_eq!(
        out["got_sha"],
        seen.sent_sha.as_str(),
        "server → client, in order"
    );
    let (acc, closed) = e.gw.conn_to(&format!("{}:443", e.ip));
    assert_eq!(acc["decision"], "splice", "{acc}");
    assert_eq!(closed["outcome"], "spliced", "{closed}");
    assert_eq!(closed["bytes_up"].as_u64().unwrap() as usize, seen.got);
    assert_eq!(closed["bytes_down"].as_u64().unwrap() as usize, seen.sent);
    if mode == "streaming" {
        // Relayed either way; the log says which.
        assert!(
            closed["relay"] == "kernel" || closed["relay"] == "splice",
            "{closed}"
        );
        return;
    }
    assert_eq!(
        closed["relay"],
        "kernel",
        "relayed in the kernel: {closed}\n{}",
        e.gw.raw_log()
    );
}

#[test]
fn both_ways_at_once_byte_exact_and_the_client_closes_first() {
    both_ways("client_first");
}

#[test]
fn both_ways_at_once_byte_exact_and_the_server_closes_first() {
    both_ways("server_first");
}

/// A client that streams right after its ClientHello (no TLS client does, early data aside):
/// the gateway cannot start the kernel relay at a clean segment boundary, so it may hand the
/// connection to splice(2); either way every byte arrives in order.
#[test]
fn a_client_streaming_right_after_its_hello_is_byte_exact_too() {
    both_ways("streaming");
}

#[test]
fn a_reset_from_the_client_reaches_the_server_as_a_reset() {
    let e = env("kernel_relay = true");
    let rx = server(
        TcpListener::bind(format!("{}:443", e.ip)).unwrap(),
        "reset_client",
    );
    let out = client(&e, "reset_client");
    assert_eq!(out["closed_with_rst"], true, "{out}");
    let seen = rx.recv_timeout(T).expect("server done");
    assert!(
        seen.reset,
        "the server saw a reset, not a clean end: {seen:?}"
    );
    assert!(!seen.eof, "{seen:?}");
    let (_, closed) = e.gw.conn_to(&format!("{}:443", e.ip));
    assert_eq!(closed["relay"], "kernel", "{closed}");
    assert_eq!(closed["reset"], true, "{closed}");
}

/// The server resets its connection: the client sees a reset too, relayed by `relay`.
fn a_server_reset_reaches_the_client(extra: &str, relay: &str) {
    let e = env(extra);
    let rx = server(
        TcpListener::bind(format!("{}:443", e.ip)).unwrap(),
        "reset_server",
    );
    let out = client(&e, "reset_server");
    rx.recv_timeout(T).expect("server done");
    let (_, closed) = e.gw.conn_to(&format!("{}:443", e.ip));
    assert_eq!(
        out["reset"],
        true,
        "the client saw a reset: {out}\n{closed}\n{}",
        e.gw.raw_log()
    );
    assert_eq!(closed["relay"], relay, "{closed}");
    assert_eq!(closed["reset"], true, "{closed}");
}

#[test]
fn a_reset_from_the_server_reaches_the_client_as_a_reset() {
    a_server_reset_reaches_the_client("kernel_relay = true", "kernel");
}

#[test]
fn by_default_splice_2_relays_the_same_bytes() {
    let e = env("");
    let rx = server(
        TcpListener::bind(format!("{}:443", e.ip)).unwrap(),
        "client_first",
    );
    let out = client(&e, "client_first");
    let seen = rx.recv_timeout(T).expect("server done");
    assert_eq!(out["sent_sha"], seen.got_sha.as_str());
    assert_eq!(out["got_sha"], seen.sent_sha.as_str());
    let (_, closed) = e.gw.conn_to(&format!("{}:443", e.ip));
    assert_eq!(closed["relay"], "splice", "{closed}");
    assert_eq!(closed["outcome"], "spliced", "{closed}");
}

#[test]
fn by_default_a_reset_from_the_server_reaches_the_client_as_a_reset_too() {
    a_server_reset_reaches_the_client("", "splice");
}
