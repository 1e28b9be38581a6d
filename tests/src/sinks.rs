//! The security team's systems, for the export tests (issue I): a real rsyslog started with a
//! config of its own (imudp + imtcp on a loopback address of the test's range, omfile into the
//! test's directory, a JSON template of the fields rsyslog parsed), and fakes of two remote
//! services that check what they receive against the public wire formats:
//! - Splunk HTTP Event Collector (`POST /services/collector/event`, HTTPS with the test PKI,
//!   `Authorization: Splunk <token>`, one or more JSON event objects per request with the keys
//!   Splunk's "Format events for HTTP Event Collector" documents, its error bodies and codes);
//! - an OTLP/HTTP logs receiver (`POST /v1/logs`, `application/json`, an
//!   `ExportLogsServiceRequest` in the protobuf JSON mapping), which can go away and come back
//!   on the same address.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::fake::TestPki;

/// A free UDP port on `ip`.
pub fn free_udp_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port")
}

/// rsyslogd in the foreground with the test's own config; nothing of the system's rsyslog is
/// read or touched. Every message rsyslog received is one JSON line (the fields it parsed) in
/// `udp.log` or `tcp.log`.
pub struct Rsyslog {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Rsyslog {
    pub fn start(ip: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-rsyslog-")
            .tempdir()
            .expect("tempdir");
        let udp: SocketAddr = format!("{ip}:{}", free_udp_port(ip)).parse().unwrap();
        let tcp: SocketAddr = format!("{ip}:{}", crate::free_port(ip)).parse().unwrap();
        let d = dir.path().display();
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="256k")
module(load="imudp")
module(load="imtcp")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="version" name="protocol-version" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="export") {{
  if $inputname == "imudp" then {{
    action(type="omfile" file="{d}/udp.log" template="fields")
  }} else {{
    action(type="omfile" file="{d}/tcp.log" template="fields")
  }}
}}
input(type="imudp" address="{uip}" port="{uport}" ruleset="export")
input(type="imtcp" address="{tip}" port="{tport}" ruleset="export")
"#,
            uip = udp.ip(),
            uport = udp.port(),
            tip = tcp.ip(),
            tport = tcp.port(),
        );
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).expect("write rsyslog.conf");
        let mut r = Self {
            udp,
            tcp,
            dir,
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("rsyslogd.stderr"))
            .expect("rsyslog log");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rsyslogd (Debian package rsyslog)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect_timeout(&self.tcp, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd does not listen on {}: {}",
                self.tcp,
                std::fs::read_to_string(d.join("rsyslogd.stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (rsyslog writes out what it has) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn lines(&self, file: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join(file))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("rsyslog line {l:?}: {e}")))
            .collect()
    }

    /// What arrived over UDP, as rsyslog parsed it.
    pub fn udp_messages(&self) -> Vec<Value> {
        self.lines("udp.log")
    }

    pub fn tcp_messages(&self) -> Vec<Value> {
        self.lines("tcp.log")
    }

    pub fn raw(&self) -> String {
        ["udp.log", "tcp.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a fake sink saw.
#[derive(Default)]
pub struct Received {
    /// The events, decoded (HEC: the whole event object; OTLP: each log record with its body
    /// decoded back into JSON under `body`).
    pub events: Vec<Value>,
    /// Every request body as received (to look for what must never be there).
    pub raw: Vec<String>,
    /// Requests refused, with the reason (shape or credential problems).
    pub refused: Vec<String>,
    pub requests: usize,
}

type Shared = Arc<Mutex<Received>>;

fn reply(status: u16, v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

/// A Splunk HEC on `addr` (HTTPS, a certificate for `addr`'s IP from `pki`).
pub struct HecFake {
    pub addr: SocketAddr,
    pub token: String,
    pub seen: Shared,
    /// While set, every request is answered 503 "Server is busy" (HEC code 9).
    pub busy: Arc<std::sync::atomic::AtomicBool>,
    _rt: tokio::runtime::Runtime,
}

const HEC_KEYS: &[&str] = &[
    "time",
    "host",
    "source",
    "sourcetype",
    "index",
    "event",
    "fields",
];

/// Splunk's checks of one event object; `Err((text, code))` as HEC answers them.
fn hec_check(v: &Value) -> Result<(), (&'static str, u16)> {
    let Some(o) = v.as_object() else {
        return Err(("Invalid data format", 6));
    };
    if o.keys().any(|k| !HEC_KEYS.contains(&k.as_str())) {
        return Err(("Invalid data format", 6));
    }
    match o.get("event") {
        None | Some(Value::Null) => return Err(("Event field is required", 12)),
        Some(Value::String(s)) if s.is_empty() => return Err(("Event field cannot be blank", 13)),
        _ => {}
    }
    if let Some(t) = o.get("time")
        && !(t.is_number() || t.as_str().is_some_and(|s| s.parse::<f64>().is_ok()))
    {
        return Err(("Invalid data format", 6));
    }
    for k in ["host", "source", "sourcetype", "index"] {
        if o.get(k).is_some_and(|v| !v.is_string()) {
            return Err(("Invalid data format", 6));
        }
    }
    Ok(())
}

impl HecFake {
    pub fn start(addr: SocketAddr, pki: &TestPki, token: &str) -> Self {
        let (rt, listener, acceptor) =
            crate::fake::tls_server("HEC fake", addr, pki, &[b"http/1.1"]);
        let addr = listener.local_addr().unwrap();
        let seen: Shared = Arc::default();
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, b, tok) = (seen.clone(), busy.clone(), token.to_string());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, s, b, tok) = (acceptor.clone(), s.clone(), b.clone(), tok.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, b, tok) = (s.clone(), b.clone(), tok.clone());
                        async move { Ok::<_, std::convert::Infallible>(hec(req, &s, &b, &tok).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            token: token.to_string(),
            seen,
            busy,
            _rt: rt,
        }
    }

    pub fn events(&self) -> Vec<Value> {
        self.seen.lock().unwrap().events.clone()
    }
}

async fn hec(
    req: Request<Incoming>,
    seen: &Shared,
    busy: &std::sync::atomic::AtomicBool,
    token: &str,
) -> Response<Full<Bytes>> {
    let refuse = |why: String, status: u16, body: Value| {
        seen.lock().unwrap().refused.push(why);
        reply(status, body)
    };
    if req.method() != hyper::Method::POST
        || !matches!(
            req.uri().path(),
            "/services/collector/event" | "/services/collector"
        )
    {
        return refuse(
            format!("{} {}", req.method(), req.uri()),
            404,
            json!({"text": "The requested URL was not found on this server.", "code": 404}),
        );
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().requests += 1;
    let Some(auth) = auth else {
        return refuse(
            "no Authorization".into(),
            401,
            json!({"text": "Token is required", "code": 2}),
        );
    };
    if auth != format!("Splunk {token}") {
        return refuse(
            "wrong token".into(),
            403,
            json!({"text": "Invalid token", "code": 4}),
        );
    }
    if busy.load(std::sync::atomic::Ordering::SeqCst) {
        return reply(503, json!({"text": "Server is busy", "code": 9}));
    }
    let mut events = Vec::new();
    for (n, v) in serde_json::Deserializer::from_slice(&body)
        .into_iter::<Value>()
        .enumerate()
    {
        let v = match v {
            Ok(v) => v,
            Err(_) => {
                return refuse(
                    "not JSON".into(),
                    400,
                    json!({"text": "Invalid data format", "code": 6, "invalid-event-number": n}),
                );
            }
        };
        if let Err((text, code)) = hec_check(&v) {
            return refuse(
                format!("event {n}: {text}"),
                400,
                json!({"text": text, "code": code, "invalid-event-number": n}),
            );
        }
        events.push(v);
    }
    if events.is_empty() {
        return refuse("no data".into(), 400, json!({"text": "No data", "code": 5}));
    }
    let mut s = seen.lock().unwrap();
    s.raw.push(String::from_utf8_lossy(&body).into_owned());
    s.events.extend(events);
    reply(200, json!({"text": "Success", "code": 0}))
}

/// An OTLP/HTTP logs receiver (plain HTTP) that can be stopped and started again on its
/// address (connections cut, port closed).
pub struct OtlpFake {
    pub addr: SocketAddr,
    pub seen: Shared,
    rt: tokio::runtime::Runtime,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl OtlpFake {
    pub fn start(addr: SocketAddr) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut f = Self {
            addr,
            seen: Arc::default(),
            rt,
            tasks: Arc::default(),
        };
        f.serve();
        f
    }

    fn serve(&mut self) {
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .unwrap_or_else(|e| panic!("OTLP fake cannot bind {}: {e}", self.addr));
        self.addr = listener.local_addr().unwrap();
        let (seen, tasks) = (self.seen.clone(), self.tasks.clone());
        let t2 = tasks.clone();
        let h = self.rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let s = seen.clone();
                let h = tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move { Ok::<_, std::convert::Infallible>(otlp(req, &s).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
                t2.lock().unwrap().push(h.abort_handle());
            }
        });
        tasks.lock().unwrap().push(h.abort_handle());
    }

    /// Gone: the port closed, open connections cut.
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        // Let the aborts land (the listener is dropped with its task).
        std::thread::sleep(Duration::from_millis(100));
    }

    pub fn start_again(&mut self) {
        self.serve();
    }

    pub fn events(&self) -> Vec<Value> {
        self.seen.lock().unwrap().events.clone()
    }
}

/// An `AnyValue` back to JSON, checking its shape (exactly one value field, 64-bit ints as
/// decimal strings).
pub fn any_value(v: &Value) -> Result<Value, String> {
    let o = v.as_object().ok_or("AnyValue is not an object")?;
    if o.is_empty() {
        return Ok(Value::Null);
    }
    if o.len() != 1 {
        return Err(format!("AnyValue with {} fields: {v}", o.len()));
    }
    let (k, x) = o.iter().next().unwrap();
    Ok(match k.as_str() {
        "stringValue" => json!(x.as_str().ok_or("stringValue not a string")?),
        "boolValue" => json!(x.as_bool().ok_or("boolValue not a bool")?),
        "intValue" => {
            let s = x.as_str().ok_or("intValue is not a decimal string")?;
            json!(
                s.parse::<i64>()
                    .map_err(|e| format!("intValue {s:?}: {e}"))?
            )
        }
        "doubleValue" => json!(x.as_f64().ok_or("doubleValue not a number")?),
        "arrayValue" => Value::Array(
            x["values"]
                .as_array()
                .ok_or("arrayValue.values missing")?
                .iter()
                .map(any_value)
                .collect::<Result<_, _>>()?,
        ),
        "kvlistValue" => Value::Object(key_values(&x["values"])?),
        k => return Err(format!("unknown AnyValue field {k}")),
    })
}

fn key_values(v: &Value) -> Result<serde_json::Map<String, Value>, String> {
    let mut m = serde_json::Map::new();
    for kv in v.as_array().ok_or("KeyValue list is not an array")? {
        let k = kv["key"].as_str().ok_or("KeyValue without key")?;
        m.insert(k.to_string(), any_value(&kv["value"])?);
    }
    Ok(m)
}

const RECORD_KEYS: &[&str] = &[
    "timeUnixNano",
    "observedTimeUnixNano",
    "severityNumber",
    "severityText",
    "body",
    "attributes",
    "droppedAttributesCount",
    "flags",
    "traceId",
    "spanId",
    "eventName",
];

/// The log records of an `ExportLogsServiceRequest`, each `{attributes, body, severityNumber,
/// timeUnixNano, resource}` decoded; `Err` names the first field that does not fit.
pub fn otlp_records(req: &Value) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let rls = req["resourceLogs"]
        .as_array()
        .ok_or("resourceLogs is not an array")?;
    for rl in rls {
        let resource = match rl.get("resource") {
            Some(r) => Value::Object(key_values(&r["attributes"])?),
            None => Value::Null,
        };
        for sl in rl["scopeLogs"]
            .as_array()
            .ok_or("scopeLogs is not an array")?
        {
            if let Some(s) = sl.get("scope")
                && !s["name"].is_string()
            {
                return Err("scope.name is not a string".into());
            }
            for r in sl["logRecords"]
                .as_array()
                .ok_or("logRecords is not an array")?
            {
                let o = r.as_object().ok_or("log record is not an object")?;
                if let Some(k) = o.keys().find(|k| !RECORD_KEYS.contains(&k.as_str())) {
                    return Err(format!("unknown log record field {k}"));
                }
                let t = r["timeUnixNano"]
                    .as_str()
                    .ok_or("timeUnixNano is not a string")?;
                t.parse::<u64>()
                    .map_err(|e| format!("timeUnixNano {t:?}: {e}"))?;
                let sev = r["severityNumber"]
                    .as_u64()
                    .ok_or("severityNumber is not a number")?;
                if sev > 24 {
                    return Err(format!("severityNumber {sev}"));
                }
                out.push(json!({
                    "timeUnixNano": t,
                    "severityNumber": sev,
                    "attributes": Value::Object(key_values(r.get("attributes").unwrap_or(&json!([])))?),
                    "body": any_value(&r["body"])?,
                    "resource": resource,
                }));
            }
        }
    }
    Ok(out)
}

async fn otlp(req: Request<Incoming>, seen: &Shared) -> Response<Full<Bytes>> {
    let refuse = |why: String, status: u16| {
        seen.lock().unwrap().refused.push(why.clone());
        reply(status, json!({"code": 3, "message": why}))
    };
    if req.method() != hyper::Method::POST || req.uri().path() != "/v1/logs" {
        return refuse(format!("{} {}", req.method(), req.uri()), 404);
    }
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !ct.starts_with("application/json") {
        return refuse(format!("content-type {ct:?}"), 415);
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().requests += 1;
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refuse(format!("not JSON: {e}"), 400),
    };
    match otlp_records(&v) {
        Ok(recs) => {
            let mut s = seen.lock().unwrap();
            s.raw.push(String::from_utf8_lossy(&body).into_owned());
            s.events.extend(recs);
            reply(200, json!({}))
        }
        Err(e) => refuse(e, 400),
    }
}

/// Wait until `f` holds (polling), or panic with `what` and `detail()`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    f: impl Fn() -> bool,
    detail: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
