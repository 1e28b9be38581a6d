//! Fakes for Google Vertex AI (issue H): a test service account whose RSA key openssl makes at
//! test time, a fake Google OAuth token endpoint that checks JWT-bearer grants the way Google's
//! does (RS256 signature with the account's public key, `iss`, `aud`, `scope`, `iat`/`exp`,
//! grant type) and counts what it mints, and a fake Vertex AI front end answering Gemini
//! (`:generateContent`, `:streamGenerateContent` as SSE or one JSON array, `:countTokens`) and
//! Anthropic-on-Vertex (`:rawPredict`, `:streamRawPredict` with typed SSE events) model calls
//! with a text the test chooses, cut into events of a few characters, recording every request.
//! Cloud token endpoints are outside the machine: these fakes speak their wire formats
//! (developers.google.com/identity/protocols/oauth2/service-account, Vertex AI REST reference,
//! Anthropic's Vertex AI page).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::{CgroupGuard, Gateway, Opts, fake::TestPki, provider::Seen};

pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A service account: its key file (as Google issues it: pretty-printed JSON) and public key.
#[derive(Clone)]
pub struct TestServiceAccount {
    pub json: String,
    pub client_email: String,
    pub key_id: String,
    /// PKCS#1 RSAPublicKey, DER.
    pub public_der: Vec<u8>,
}

impl TestServiceAccount {
    /// A new RSA key from openssl and a key file naming `token_uri`.
    pub fn new(email: &str, token_uri: &str) -> Self {
        let d = tempfile::tempdir().expect("tempdir");
        let key = d.path().join("key.pem");
        let public = d.path().join("pub.der");
        let status = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl genpkey");
        assert!(status.success(), "openssl genpkey failed");
        let status = std::process::Command::new("openssl")
            .args(["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl rsa");
        assert!(status.success(), "openssl rsa -RSAPublicKey_out failed");
        let pem = std::fs::read_to_string(&key).expect("read key");
        let key_id = format!("{:040x}", crate::unique() as u128 * 0x9e37_79b9_7f4a_7c15);
        let json = serde_json::to_string_pretty(&json!({
            "type": "service_account",
            "project_id": "proj-test",
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        }))
        .unwrap();
        Self {
            json,
            client_email: email.to_string(),
            key_id,
            public_der: std::fs::read(&public).expect("read public key"),
        }
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, ctype: &str, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap()
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Why a JWT-bearer grant is refused, or the account it asserts.
fn check_grant(form: &str, uri: &str, accounts: &[TestServiceAccount]) -> Result<String, String> {
    let mut grant = None;
    let mut assertion = None;
    for kv in form.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = v.replace("%3A", ":").replace("%3a", ":");
        match k {
            "grant_type" => grant = Some(v),
            "assertion" => assertion = Some(v),
            _ => {}
        }
    }
    if grant.as_deref() != Some(GRANT) {
        return Err(format!("unsupported grant_type {grant:?}"));
    }
    let jwt = assertion.ok_or("no assertion")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err("the assertion is not a JWS".into());
    };
    let header: Value = unb64(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("bad JWT header")?;
    let claims: Value = unb64(c)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("bad JWT claims")?;
    if header["alg"] != "RS256" || header["typ"] != "JWT" {
        return Err(format!("bad JWT header {header}"));
    }
    let iss = claims["iss"].as_str().ok_or("no iss")?;
    let sa = accounts
        .iter()
        .find(|a| a.client_email == iss)
        .ok_or("unknown account")?;
    if header["kid"] != sa.key_id.as_str() {
        return Err("the kid is not the account's key id".into());
    }
    let sig = unb64(s).ok_or("bad signature encoding")?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &sa.public_der,
    )
    .verify(format!("{h}.{c}").as_bytes(), &sig)
    .map_err(|_| "Invalid JWT Signature.".to_string())?;
    if claims["aud"] != uri {
        return Err(format!("bad aud {}", claims["aud"]));
    }
    if claims["scope"] != SCOPE {
        return Err(format!("bad scope {}", claims["scope"]));
    }
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    let (Some(iat), Some(exp)) = (iat, exp) else {
        return Err("iat and exp must be numbers".into());
    };
    let now = unix_now();
    if iat > now + 60 || iat + 300 < now || exp != iat + 3600 {
        return Err(format!("bad iat/exp {iat}/{exp} at {now}"));
    }
    Ok(iss.to_string())
}

/// A fake Google OAuth 2.0 token endpoint (`POST /token`, JWT-bearer grants).
pub struct FakeTokenEndpoint {
    pub uri: String,
    minted: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl FakeTokenEndpoint {
    /// On `addr` (HTTPS with the test PKI, which must name its IP), for `uri` (its `aud`),
    /// granting tokens to `accounts`.
    pub fn start(
        addr: SocketAddr,
        pki: &TestPki,
        uri: &str,
        accounts: Vec<TestServiceAccount>,
    ) -> Self {
        let (rt, listener, acceptor) =
            crate::fake::tls_server("fake token endpoint", addr, pki, &[b"http/1.1"]);
        let minted: Arc<Mutex<Vec<String>>> = Arc::default();
        let refused: Arc<Mutex<Vec<String>>> = Arc::default();
        let (m, r, u) = (minted.clone(), refused.clone(), uri.to_string());
        let accounts = Arc::new(accounts);
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, m, r, u, accounts) = (
                    acceptor.clone(),
                    m.clone(),
                    r.clone(),
                    u.clone(),
                    accounts.clone(),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (m, r, u, accounts) = (m.clone(), r.clone(), u.clone(), accounts.clone());
                        async move {
                            let ok_head = req.method() == http::Method::POST
                                && req.uri().path() == "/token"
                                && req
                                    .headers()
                                    .get("content-type")
                                    .and_then(|v| v.to_str().ok())
                                    .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
                            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            let form = String::from_utf8_lossy(&body);
                            let verdict = if ok_head {
                                check_grant(&form, &u, &accounts)
                            } else {
                                Err("not a form POST to /token".into())
                            };
                            Ok::<_, Infallible>(match verdict {
                                Ok(_) => {
                                    let mut m = m.lock().unwrap();
                                    let token = format!("ya29.vertex-minted-{}-{:08x}", m.len() + 1, unix_now() as u32);
                                    m.push(token.clone());
                                    full(StatusCode::OK, "application/json; charset=utf-8",
                                        json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}).to_string())
                                }
                                Err(why) => {
                                    r.lock().unwrap().push(why.clone());
                                    full(StatusCode::BAD_REQUEST, "application/json; charset=utf-8",
                                        json!({"error": "invalid_grant", "error_description": why}).to_string())
                                }
                            })
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            uri: uri.to_string(),
            minted,
            refused,
            _rt: rt,
        }
    }

    /// Every token granted so far, in order.
    pub fn minted(&self) -> Vec<String> {
        self.minted.lock().unwrap().clone()
    }

    /// Why each refused grant was refused.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

/// The answer text and how many characters each streamed event carries.
#[derive(Clone)]
struct Reply {
    text: String,
    chunk: usize,
}

/// A fake Vertex AI front end (every `*-aiplatform.googleapis.com` name the PKI carries).
pub struct FakeVertex {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    reply: Arc<Mutex<Reply>>,
    _rt: tokio::runtime::Runtime,
}

impl FakeVertex {
    pub fn start(addr: SocketAddr, pki: &TestPki) -> Self {
        let (rt, listener, acceptor) =
            crate::fake::tls_server("fake vertex", addr, pki, &[b"h2", b"http/1.1"]);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let reply = Arc::new(Mutex::new(Reply {
            text: crate::provider::REPLY.to_string(),
            chunk: 5,
        }));
        let (s, rp) = (seen.clone(), reply.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, s, rp) = (acceptor.clone(), s.clone(), rp.clone());
                let local = tcp.local_addr().ok();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(String::from);
                    let svc = service_fn(move |req| {
                        let (s, rp, sni) = (s.clone(), rp.clone(), sni.clone());
                        async move { Ok::<_, Infallible>(vertex_answer(req, s, rp, local, sni).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            reply,
            _rt: rt,
        }
    }

    /// Answer with `text`, `chunk` characters per streamed event.
    pub fn set_reply(&self, text: &str, chunk: usize) {
        *self.reply.lock().unwrap() = Reply {
            text: text.to_string(),
            chunk: chunk.max(1),
        };
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn pieces(text: &str, n: usize) -> Vec<String> {
    text.chars()
        .collect::<Vec<_>>()
        .chunks(n)
        .map(|c| c.iter().collect())
        .collect()
}

fn gemini_chunk(text: &str, last: bool) -> Value {
    let mut cand = json!({"content": {"role": "model", "parts": [{"text": text}]}, "index": 0});
    if last {
        cand["finishReason"] = json!("STOP");
    }
    json!({"candidates": [cand],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 6, "totalTokenCount": 11},
        "modelVersion": "gemini-2.0-flash-001", "createTime": "2026-12-01T17:00:00.000000Z",
        "responseId": "resp-vertex-1"})
}

fn stream(chunks: Vec<String>, ctype: &str) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        for c in chunks {
            if tx
                .send(Ok(http_body::Frame::data(Bytes::from(c))))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", ctype)
        .body(http_body_util::StreamBody::new(Receiver(rx)).boxed())
        .unwrap()
}

struct Receiver(tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, Infallible>>);

impl futures_core::Stream for Receiver {
    type Item = Result<http_body::Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

fn google_error(status: StatusCode, message: &str) -> Response<Body> {
    let st = if status == StatusCode::UNAUTHORIZED {
        "UNAUTHENTICATED"
    } else {
        "NOT_FOUND"
    };
    full(
        status,
        "application/json; charset=UTF-8",
        json!({"error": {"code": status.as_u16(), "message": message, "status": st}}).to_string(),
    )
}

async fn vertex_answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    reply: Arc<Mutex<Reply>>,
    local: Option<SocketAddr>,
    sni: Option<String>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        trailers: Vec::new(),
        body: bytes.clone(),
        local,
        sni,
        at: std::time::Instant::now(),
    });
    // Like Vertex AI: no bearer token, no answer.
    let bearer = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ya29."));
    if !bearer {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        );
    }
    let Reply { text, chunk } = reply.lock().unwrap().clone();
    let path = parts.uri.path();
    let sse = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == "alt=sse");
    let Some((_, method)) = path.rsplit_once(':') else {
        return google_error(StatusCode::NOT_FOUND, "fake vertex: no such method");
    };
    let model = path
        .rsplit_once("/models/")
        .map(|(_, m)| m.split(':').next().unwrap_or(""))
        .unwrap_or("")
        .to_string();
    let words = pieces(&text, chunk);
    match method {
        "generateContent" => full(
            StatusCode::OK,
            "application/json; charset=UTF-8",
            gemini_chunk(&text, true).to_string(),
        ),
        "streamGenerateContent" => {
            let n = words.len();
            let chunks: Vec<Value> = words
                .iter()
                .enumerate()
                .map(|(i, w)| gemini_chunk(w, i + 1 == n))
                .collect();
            if sse {
                stream(
                    chunks
                        .iter()
                        .map(|c| format!("data: {c}\r\n\r\n"))
                        .collect(),
                    "text/event-stream",
                )
            } else {
                let mut out: Vec<String> = chunks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{}{c}", if i == 0 { "[" } else { ",\r\n" }))
                    .collect();
                out.push("]".into());
                stream(out, "application/json; charset=UTF-8")
            }
        }
        "countTokens" => full(
            StatusCode::OK,
            "application/json; charset=UTF-8",
            json!({"totalTokens": 5, "totalBillableCharacters": 20}).to_string(),
        ),
        "rawPredict" => full(
            StatusCode::OK,
            "application/json",
            json!({"id": "msg_vrtx_01", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 6}})
            .to_string(),
        ),
        "streamRawPredict" => {
            let mut ev = vec![
                format!(
                    "event: message_start\ndata: {}\n\n",
                    json!({"type": "message_start", "message": {"id": "msg_vrtx_01", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1}}})
                ),
                format!("event: ping\ndata: {}\n\n", json!({"type": "ping"})),
                format!(
                    "event: content_block_start\ndata: {}\n\n",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
                ),
            ];
            for w in &words {
                ev.push(format!(
                    "event: content_block_delta\ndata: {}\n\n",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})
                ));
            }
            ev.push(format!(
                "event: content_block_stop\ndata: {}\n\n",
                json!({"type": "content_block_stop", "index": 0})
            ));
            ev.push(format!("event: message_delta\ndata: {}\n\n", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 6}})));
            ev.push(format!(
                "event: message_stop\ndata: {}\n\n",
                json!({"type": "message_stop"})
            ));
            stream(ev, "text/event-stream; charset=utf-8")
        }
        _ => google_error(StatusCode::NOT_FOUND, "fake vertex: no such method"),
    }
}

/// The host names of the fake Vertex AI front end.
pub const HOSTS: &[&str] = &[
    "aiplatform.googleapis.com",
    "us-central1-aiplatform.googleapis.com",
    "us-east5-aiplatform.googleapis.com",
];

/// A Vertex AI suite's start: a child cgroup, the fake front end on `127.<net>.<n>.1:443`, the
/// fake token endpoint on `127.<net>.<n>.4:443` (the service account's `token_uri`), and a
/// gateway with the built-in `vertex` provider pointed at the fake, trusting the fakes' CA.
/// The vault is empty: the test stores the key (`gateway keys set vertex --stdin`).
pub struct VertexEnv {
    pub gw: Gateway,
    pub vertex: FakeVertex,
    pub token: FakeTokenEndpoint,
    /// The account the token endpoint knows.
    pub sa: TestServiceAccount,
    /// Same e-mail, another key: the token endpoint refuses its signature.
    pub impostor: TestServiceAccount,
    pub cg: CgroupGuard,
    pub ip: String,
    pub ca: std::path::PathBuf,
    pub hosts: std::path::PathBuf,
    _pki: TestPki,
}

impl VertexEnv {
    pub fn start(prefix: &str, net: u8, extra_config: &str) -> Self {
        crate::require_privileges();
        let n = crate::unique();
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let cg = CgroupGuard::new(&name);
        let ip = format!("127.{net}.{n}.1");
        let token_ip = format!("127.{net}.{n}.4");
        let mut names: Vec<&str> = HOSTS.to_vec();
        names.push(&token_ip);
        let pki = TestPki::new(&names);
        let uri = format!("https://{token_ip}/token");
        let email = "gateway-e2e@proj-test.iam.gserviceaccount.com";
        let sa = TestServiceAccount::new(email, &uri);
        // The account's key id too: only the signature tells the keys apart.
        let mut impostor = TestServiceAccount::new(email, &uri);
        impostor.json = impostor.json.replace(&impostor.key_id, &sa.key_id);
        impostor.key_id = sa.key_id.clone();
        let token = FakeTokenEndpoint::start(
            format!("{token_ip}:443").parse().unwrap(),
            &pki,
            &uri,
            vec![sa.clone()],
        );
        let vertex = FakeVertex::start(format!("{ip}:443").parse().unwrap(), &pki);
        let gw = Gateway::start_opts(
            &name,
            &cg.path,
            &format!("[[provider]]\nname = \"vertex\"\naddrs = [\"{ip}/32\"]\n{extra_config}"),
            &Opts {
                extra_roots: vec![pki.ca_pem.clone()],
                builtin: true,
                ..Default::default()
            },
        );
        let hosts = gw.dir.path().join("hosts");
        let mut text = "127.0.0.1 localhost\n".to_string();
        for h in HOSTS {
            text.push_str(&format!("{ip} {h}\n"));
        }
        std::fs::write(&hosts, text).expect("write hosts file");
        let ca = gw.ca_pem();
        Self {
            gw,
            vertex,
            token,
            sa,
            impostor,
            cg,
            ip,
            ca,
            hosts,
            _pki: pki,
        }
    }

    /// `gateway keys set <name> --stdin` with `value` on its standard input.
    pub fn keys_set(&self, name: &str, value: &str) -> std::process::Output {
        use std::io::Write as _;
        let mut child = std::process::Command::new(crate::gateway_bin())
            .args(["keys", "set", name, "--stdin", "-c"])
            .arg(&self.gw.config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run gateway keys set");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(value.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("gateway keys set")
    }
}
