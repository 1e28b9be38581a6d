//! A fake HashiCorp Vault on loopback (plain HTTP): AppRole login and one KV v2 secret.
//! Counts logins and reads so a test can see caching at work.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

pub const ROLE_ID: &str = "role-1234";
pub const SECRET_ID: &str = "secret-5678";
const TOKEN: &str = "s.fake-client-token";

#[derive(Default)]
struct State {
    logins: AtomicUsize,
    reads: AtomicUsize,
    keys: Mutex<Value>,
}

pub struct FakeVault {
    pub addr: SocketAddr,
    state: Arc<State>,
    _rt: tokio::runtime::Runtime,
}

impl FakeVault {
    /// Serve `keys` (a JSON object of name → value) at secret/data/gateway.
    pub fn start(keys: Value) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            keys: Mutex::new(keys),
            ..Default::default()
        });
        let st = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(answer(req, st).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            _rt: rt,
        }
    }

    pub fn logins(&self) -> usize {
        self.state.logins.load(Ordering::Relaxed)
    }

    pub fn reads(&self) -> usize {
        self.state.reads.load(Ordering::Relaxed)
    }
}

fn reply(status: u16, v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

async fn answer(req: Request<Incoming>, st: Arc<State>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let token = req
        .headers()
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    match path.as_str() {
        "/v1/auth/approle/login" => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if v["role_id"] != ROLE_ID || v["secret_id"] != SECRET_ID {
                return reply(400, json!({"errors": ["invalid role or secret ID"]}));
            }
            st.logins.fetch_add(1, Ordering::Relaxed);
            reply(
                200,
                json!({"auth": {"client_token": TOKEN, "lease_duration": 3600, "renewable": true}}),
            )
        }
        "/v1/secret/data/gateway" => {
            if token.as_deref() != Some(TOKEN) {
                return reply(403, json!({"errors": ["permission denied"]}));
            }
            st.reads.fetch_add(1, Ordering::Relaxed);
            let keys = st.keys.lock().unwrap().clone();
            reply(
                200,
                json!({"data": {"data": keys, "metadata": {"version": 1}}}),
            )
        }
        _ => reply(404, json!({"errors": []})),
    }
}
