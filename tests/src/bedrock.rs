//! A fake AWS Bedrock Runtime on loopback (real TLS, HTTP/1.1 or h2 by ALPN) speaking the real
//! wire formats: Converse (JSON), ConverseStream and InvokeModelWithResponseStream (AWS
//! event-stream messages with correct CRCs; the text split across messages as the test asks),
//! InvokeModel (the model's native JSON). Every request is recorded (method, target, headers,
//! body) so the test can check what arrived and recompute its SigV4 signature with botocore's
//! own signer ([`verify_sigv4`]).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use bytes::Bytes;
use gateway::response::eventstream::event;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::{fake::TestPki, provider::Seen};

/// The region the fake's host name is in.
pub const HOST: &str = "bedrock-runtime.us-east-1.amazonaws.com";

pub struct FakeBedrock {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _rt: tokio::runtime::Runtime,
}

/// What the fake answers with: each text is sent in these pieces, one message (or JSON
/// document) per piece.
#[derive(Clone)]
pub struct Reply {
    pub pieces: Vec<String>,
}

impl FakeBedrock {
    pub fn start(addr: SocketAddr, pki: &TestPki, reply: Reply) -> Self {
        let (rt, listener, acceptor) =
            crate::fake::tls_server("fake bedrock", addr, pki, &[b"h2", b"http/1.1"]);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = seen.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let s = s.clone();
                let reply = reply.clone();
                let local = tcp.local_addr().ok();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(String::from);
                    let svc = service_fn(move |req| {
                        let (s, reply, sni) = (s.clone(), reply.clone(), sni.clone());
                        async move { Ok::<_, Infallible>(answer(req, s, reply, local, sni).await) }
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
            _rt: rt,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    reply: Reply,
    local: Option<SocketAddr>,
    sni: Option<String>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if !headers.iter().any(|(k, _)| k == "host")
        && let Some(a) = parts.uri.authority()
    {
        headers.push(("host".into(), a.to_string()));
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        version: format!("{:?}", parts.version),
        headers,
        trailers: Vec::new(),
        body: body.to_vec(),
        local,
        sni,
        at: std::time::Instant::now(),
    });
    let path = parts.uri.path().to_string();
    let pieces = reply.pieces;
    if path.ends_with("/converse") {
        let text: String = pieces.concat();
        let v = json!({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 3, "outputTokens": 5, "totalTokens": 8},
            "metrics": {"latencyMs": 12}
        });
        return json_response(v);
    }
    if path.ends_with("/invoke") {
        let v = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": pieces.concat()}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 5}});
        return json_response(v);
    }
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let ev = |t: &str, v: Value| event(t, v.to_string().into_bytes()).to_bytes();
    if path.ends_with("/converse-stream") {
        frames.push(ev(
            "messageStart",
            json!({"role": "assistant", "p": "abcdefghijkl"}),
        ));
        for p in &pieces {
            frames.push(ev(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": p}, "p": "abcdefgh"}),
            ));
        }
        frames.push(ev(
            "contentBlockStop",
            json!({"contentBlockIndex": 0, "p": "abc"}),
        ));
        frames.push(ev(
            "messageStop",
            json!({"stopReason": "end_turn", "p": "abcdef"}),
        ));
        frames.push(ev(
            "metadata",
            json!({"usage": {"inputTokens": 3, "outputTokens": 5, "totalTokens": 8},
                   "metrics": {"latencyMs": 12}, "p": "abcd"}),
        ));
    } else if path.ends_with("/invoke-with-response-stream") {
        let mut native = vec![
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                "content": [], "model": "claude", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ];
        for p in &pieces {
            native.push(json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": p}}));
        }
        native.push(json!({"type": "content_block_stop", "index": 0}));
        native.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}));
        native.push(json!({"type": "message_stop",
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": 3, "outputTokenCount": 5}}));
        for n in native {
            let b = base64::engine::general_purpose::STANDARD.encode(n.to_string());
            frames.push(ev("chunk", json!({"bytes": b, "p": "abcdefghijklmnop"})));
        }
    } else {
        return Response::builder()
            .status(404)
            .header("content-type", "application/json")
            .header("x-amzn-errortype", "UnknownOperationException")
            .body(Full::new(Bytes::from(r#"{"message":"unknown operation"}"#)).boxed())
            .unwrap();
    }
    // One message per write, a few ms apart: the gateway sees them in separate reads.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        for f in frames {
            if tx.send(f).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let stream = futures_stream(rx);
    Response::builder()
        .status(200)
        .header("content-type", "application/vnd.amazon.eventstream")
        .header("x-amzn-requestid", "11111111-2222-3333-4444-555555555555")
        .body(http_body_util::StreamBody::new(stream).boxed())
        .unwrap()
}

fn json_response(v: Value) -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("x-amzn-requestid", "11111111-2222-3333-4444-555555555555")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

struct Rx(tokio::sync::mpsc::Receiver<Vec<u8>>);

impl futures_core::Stream for Rx {
    type Item = Result<http_body::Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|v| Ok(http_body::Frame::data(Bytes::from(v)))))
    }
}

fn futures_stream(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Rx {
    Rx(rx)
}

/// botocore's SigV4 signer over each recorded request, with the given credentials: for each,
/// whether the `Authorization` the request carried is the one botocore computes (over the
/// headers it lists as signed, the target and body as received). Fails the test when the
/// script cannot run.
pub fn verify_sigv4(
    python: &std::path::Path,
    seen: &[Seen],
    akid: &str,
    secret: &str,
    token: Option<&str>,
) -> Vec<bool> {
    let reqs: Vec<Value> = seen
        .iter()
        .map(|s| {
            json!({
                "method": s.method,
                "target": s.target,
                "headers": s.headers,
                "body_hex": s.body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            })
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("reqs.json");
    std::fs::write(&input, serde_json::to_vec(&reqs).unwrap()).unwrap();
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(VERIFY)
        .arg(&input)
        .env("V_AKID", akid)
        .env("V_SECRET", secret)
        .env("V_TOKEN", token.unwrap_or(""))
        .output()
        .expect("run the botocore verifier");
    assert!(
        out.status.success(),
        "botocore verifier failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("verifier output")
}

const VERIFY: &str = r#"
import json, os, sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
reqs = json.load(open(sys.argv[1]))
creds = Credentials(os.environ["V_AKID"], os.environ["V_SECRET"], os.environ["V_TOKEN"] or None)
out = []
for r in reqs:
    h = {}
    for k, v in r["headers"]:
        k = k.lower()
        h[k] = h[k] + "," + v if k in h else v
    auth = h.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        out.append(False)
        continue
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    host = h["host"]
    region = host.split(".")[1]
    req = AWSRequest(method=r["method"], url="https://" + host + r["target"],
                     data=bytes.fromhex(r["body_hex"]), headers={k: h[k] for k in signed})
    req.context["timestamp"] = h["x-amz-date"]
    a = SigV4Auth(creds, "bedrock", region)
    cr = a.canonical_request(req)
    sig = a.signature(a.string_to_sign(req, cr), req)
    scope = "Credential=%s/%s/%s/bedrock/aws4_request" % (creds.access_key, h["x-amz-date"][:8], region)
    tok_ok = creds.token is None or (h.get("x-amz-security-token") == creds.token and "x-amz-security-token" in signed)
    out.append(auth.endswith("Signature=" + sig) and scope in auth and tok_ok)
print(json.dumps(out))
"#;
