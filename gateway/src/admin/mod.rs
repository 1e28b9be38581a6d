//! Admin API: HTTP/1.1 on a Unix socket in the state dir (DESIGN §7). The socket is open to
//! every local user. Who the caller is: the verified OIDC identity of an `Authorization:
//! Bearer ID_TOKEN` header when one is sent (the peer's credentials are still logged), else the
//! peer's credentials (SO_PEERCRED). What it may do is decided by [`crate::hold::authorize`]
//! alone: approvers list and decide holds (approving a request of their own only with
//! `hold.self_approval`); anybody may ask whether the daemon runs. What the API shows of a
//! hold is masked and printable already ([`crate::hold::HoldInfo`]).
//!
//! The CLI (`gateway approvals ...`) is the client: [`call`].

use std::{
    convert::Infallible,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::hold::{Action, Decision, HoldConfig, HoldError, Holds, Principal, authorize};

pub mod https;

pub const SOCKET: &str = "admin.sock";

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the gateway daemon is not running (nothing listens on {path}: {source}); start it with `gateway run`"
    )]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket {path}: {reason}")]
    Protocol { path: PathBuf, reason: String },
    #[error("{0}")]
    Refused(String),
    #[error("admin API over HTTPS on {addr}: {reason}")]
    Https {
        addr: std::net::SocketAddr,
        reason: String,
    },
}

pub struct Admin {
    pub holds: Arc<Holds>,
    /// `hold.approvers` and `hold.self_approval`, for [`authorize`].
    pub hold: HoldConfig,
    /// Verifies bearer ID tokens; `None` without `[oidc]` (a bearer token is then refused).
    pub verifier: Option<Arc<crate::oidc::Verifier>>,
    /// `None` when the journal is off.
    pub journal: Option<Arc<crate::journal::Journal>>,
}

/// Serve the admin API on `path` (a stale socket file is replaced).
pub async fn serve(path: PathBuf, admin: Arc<Admin>) -> Result<(), AdminError> {
    use std::os::unix::fs::PermissionsExt as _;
    // A socket somebody answers on belongs to a running daemon: never take it over.
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        return Err(AdminError::Listen {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another gateway daemon serves this state dir",
            ),
        });
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|source| AdminError::Listen {
        path: path.clone(),
        source,
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(|source| {
        AdminError::Listen {
            path: path.clone(),
            source,
        }
    })?;
    info!(socket = %path.display(), "admin API ready");
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(cred) = stream.peer_cred() else {
                continue;
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let admin = admin.clone();
                    async move {
                        Ok::<_, Infallible>(
                            handle(req, &admin, Some((cred.uid(), cred.gid()))).await,
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}

/// An answer: one JSON document, or a journal listing streamed line by line.
type AdminBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn reply(status: StatusCode, v: Value) -> Response<AdminBody> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The bearer token of `Authorization: Bearer …`, if the request has one.
pub fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let v = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who is calling: the verified identity of its bearer ID token, else the local peer (`peer`:
/// uid and gid of a Unix socket peer; `None` on a network listener, where a token is needed).
/// `Err`: the answer to send (401), logged.
pub async fn principal(
    req: &Request<Incoming>,
    admin: &Admin,
    peer: Option<(u32, u32)>,
) -> Result<Principal, Response<AdminBody>> {
    let peer_text = peer.map(|(u, g)| format!("uid {u} gid {g}"));
    let Some(token) = bearer(req) else {
        return match peer {
            Some((uid, gid)) => Ok(Principal::local(uid, gid)),
            None => Err(unauthorized(
                "sign in first: `gateway login`, then send the ID token as `Authorization: Bearer`",
            )),
        };
    };
    let Some(v) = &admin.verifier else {
        warn!(peer = ?peer_text, "bearer token refused: [oidc] is not configured");
        return Err(unauthorized(
            &crate::oidc::OidcError::NotConfigured.to_string(),
        ));
    };
    match v.verify(token).await {
        Ok(p) => {
            info!(peer = ?peer_text, principal = %p.label(), "admin caller signed in with OIDC");
            Ok(p)
        }
        Err(e) => {
            warn!(peer = ?peer_text, error = %e, "admin caller's ID token refused");
            Err(unauthorized(&format!("ID token refused: {e}")))
        }
    }
}

fn unauthorized(msg: &str) -> Response<AdminBody> {
    let mut r = reply(StatusCode::UNAUTHORIZED, json!({ "error": msg }));
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    r
}

/// One admin request; `peer`: the Unix socket peer's uid and gid (`None` on a network
/// listener).
pub async fn handle(
    req: Request<Incoming>,
    admin: &Admin,
    peer: Option<(u32, u32)>,
) -> Response<AdminBody> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    if path == "/v1/health" {
        return reply(StatusCode::OK, json!({"ok": true}));
    }
    let p = match principal(&req, admin, peer).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    // Holds on this registry are this node's own.
    let who = match authorize(&admin.hold, &p, Action::List, true) {
        Ok(who) => who,
        Err(e) => {
            warn!(principal = %p.label(), error = %e, "admin request refused");
            return reply(StatusCode::FORBIDDEN, json!({"error": e.to_string()}));
        }
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segs.as_slice()) {
        (Method::GET, ["v1", "approvals"]) => {
            reply(StatusCode::OK, json!({"holds": admin.holds.list()}))
        }
        (Method::POST, ["v1", "approvals", id, verb @ ("approve" | "deny")]) => {
            let Ok(id) = id.parse::<u64>() else {
                return reply(StatusCode::BAD_REQUEST, json!({"error": "bad hold id"}));
            };
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let reason = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["reason"].as_str().map(String::from));
            let d = if *verb == "approve" {
                Decision::Approved {
                    by: who.clone(),
                    reason,
                }
            } else {
                Decision::Denied {
                    by: who.clone(),
                    reason,
                }
            };
            let approve = *verb == "approve";
            let check = |info: &crate::hold::HoldInfo| {
                let action = if approve {
                    Action::Approve(info)
                } else {
                    Action::Deny(info)
                };
                authorize(&admin.hold, &p, action, true)
                    .map(|_| ())
                    .map_err(HoldError::from)
            };
            match admin.holds.decide(id, d, check) {
                Ok(info) => {
                    info!(hold = id, by = %who, decision = verb, "hold decided");
                    reply(
                        StatusCode::OK,
                        json!({"decided": verb, "by": who, "hold": info}),
                    )
                }
                Err(e @ HoldError::Denied(_)) => {
                    warn!(hold = id, by = %who, error = %e, "decision refused");
                    reply(StatusCode::FORBIDDEN, json!({"error": e.to_string()}))
                }
                Err(e) => reply(StatusCode::NOT_FOUND, json!({"error": e.to_string()})),
            }
        }
        (Method::GET, ["v1", "journal", rest @ ..]) => {
            let Some(j) = &admin.journal else {
                return reply(
                    StatusCode::NOT_FOUND,
                    json!({"error": "the journal is off (journal.enabled = false)"}),
                );
            };
            let query = req.uri().query().unwrap_or("").to_string();
            let store = j.store.clone();
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            if let Some(listing) = crate::journal::query::Listing::of(&rest) {
                return match crate::journal::query::check(&query) {
                    Ok(()) => journal_listing(store, listing, query),
                    Err((code, msg)) => reply(
                        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                        json!({"error": msg}),
                    ),
                };
            }
            // sled reads block: off the runtime's threads.
            let r = tokio::task::spawn_blocking(move || {
                crate::journal::query::answer(&store, &rest, &query)
            })
            .await;
            match r {
                Ok(Ok(v)) => reply(StatusCode::OK, v),
                Ok(Err((code, msg))) => reply(
                    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                    json!({"error": msg}),
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": e.to_string()}),
                ),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no route {path}")}),
        ),
    }
}

/// A journal listing as JSON Lines, streamed: a blocking thread walks the store and hands
/// each line over (at most 16 in flight), then a last line `{"end": N}` — or `{"error": …}`
/// when the walk failed — so a reader can tell a whole listing from a cut one.
fn journal_listing(
    store: Arc<crate::journal::Store>,
    listing: crate::journal::query::Listing,
    query: String,
) -> Response<AdminBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::task::spawn_blocking(move || {
        let mut line = Vec::new();
        let r = crate::journal::query::stream(&store, listing, &query, &mut |v| {
            line.clear();
            serde_json::to_writer(&mut line, &v)?;
            line.push(b'\n');
            tx.blocking_send(Bytes::copy_from_slice(&line))
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        });
        let last = match r {
            Ok(n) => json!({ "end": n }),
            Err((_, msg)) => json!({ "error": msg }),
        };
        let _ = tx.blocking_send(Bytes::from(format!("{last}\n")));
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(http_body::Frame::data(b)), rx))
    });
    let mut r = Response::new(http_body_util::StreamBody::new(frames).boxed_unsync());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// A streamed journal listing from the daemon: `line` gets every record, in order. Fails
/// when the daemon reports an error, or when the listing ends without its last line (cut).
pub fn call_lines(
    socket: &Path,
    target: &str,
    line: &mut dyn FnMut(Value) -> std::io::Result<()>,
) -> Result<u64, AdminError> {
    use std::io::BufRead as _;
    let proto = |reason: String| AdminError::Protocol {
        path: socket.to_path_buf(),
        reason,
    };
    let s = connect(socket)?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    (&s).write_all(
        format!("GET {target} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| proto(e.to_string()))?;
    let mut r = std::io::BufReader::new(s);
    let mut status = 0;
    let mut chunked = false;
    let mut length = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map_err(|e| proto(e.to_string()))? == 0 {
            return Err(proto("truncated answer".into()));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if status == 0 {
            status = h
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| proto(format!("bad status line {h:?}")))?;
        } else if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<u64>().ok();
            }
        }
    }
    let body: Box<dyn std::io::BufRead> = if chunked {
        Box::new(std::io::BufReader::new(Chunked {
            inner: r,
            left: 0,
            done: false,
        }))
    } else {
        Box::new(std::io::Read::take(r, length.unwrap_or(u64::MAX)))
    };
    if status != 200 {
        let mut text = String::new();
        let _ = { body }.read_to_string(&mut text);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        return Err(AdminError::Refused(
            v["error"].as_str().unwrap_or("refused").to_string(),
        ));
    }
    for l in body.lines() {
        let l = l.map_err(|e| proto(format!("listing cut short: {e}")))?;
        let v: Value =
            serde_json::from_str(&l).map_err(|e| proto(format!("not a JSON line: {e}")))?;
        if v.get("id").is_none() {
            if let Some(n) = v["end"].as_u64() {
                return Ok(n);
            }
            let msg = v["error"]
                .as_str()
                .unwrap_or("an unknown line in the listing");
            return Err(AdminError::Refused(msg.to_string()));
        }
        line(v).map_err(|e| proto(format!("cannot write the listing: {e}")))?;
    }
    Err(proto(
        "the listing was cut short (the daemon stopped answering before its end)".into(),
    ))
}

/// HTTP/1.1 chunked transfer coding, decoded.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: std::io::BufRead> std::io::Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{Error, ErrorKind};
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            self.inner.read_line(&mut size)?;
            let hex = size.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(hex, 16)
                .map_err(|_| Error::new(ErrorKind::UnexpectedEof, "bad or missing chunk size"))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(Error::from(ErrorKind::UnexpectedEof));
        }
        self.left -= n;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

fn connect(socket: &Path) -> Result<std::os::unix::net::UnixStream, AdminError> {
    std::os::unix::net::UnixStream::connect(socket).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            AdminError::NotRunning {
                path: socket.to_path_buf(),
                source,
            }
        }
        _ => AdminError::Protocol {
            path: socket.to_path_buf(),
            reason: format!("cannot connect: {source}"),
        },
    })
}

/// One request to the daemon's admin socket: (status, JSON body).
pub fn call(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), AdminError> {
    call_as(socket, method, target, body, None)
}

/// As [`call`], with `Authorization: Bearer ID_TOKEN` when `bearer` is given.
pub fn call_as(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&Value>,
    bearer: Option<&str>,
) -> Result<(u16, Value), AdminError> {
    let auth = match bearer {
        Some(t) if t.bytes().all(|b| b.is_ascii_graphic()) => {
            format!("authorization: Bearer {t}\r\n")
        }
        Some(_) => {
            return Err(AdminError::Refused(
                "the kept ID token is not printable ASCII: `gateway logout`, then sign in again"
                    .into(),
            ));
        }
        None => String::new(),
    };
    let mut s = connect(socket)?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: gateway\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let proto = |reason: String| AdminError::Protocol {
        path: socket.to_path_buf(),
        reason,
    };
    s.write_all(req.as_bytes())
        .map_err(|e| proto(e.to_string()))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| proto(e.to_string()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| proto("truncated answer".into()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| proto(format!("bad status line in {head:?}")))?;
    let v = serde_json::from_str(body).unwrap_or(Value::Null);
    Ok((status, v))
}
