//! Intercept: decide per redirected connection whether to inspect it or pass it through.
//!
//! Second stage of the data path (DESIGN §1). For each accepted connection: take the original
//! destination + identity from the redirect stage, read the TLS ClientHello (replayed later,
//! byte for byte), and
//! - SNI not a provider host, no SNI, or not TLS → splice both ways to the original destination;
//! - provider SNI → the interception stage (TLS termination; until it lands: the same splice,
//!   logged as a provider connection);
//! - malformed TLS → refused (a parser disagreement must never smuggle a provider SNI past us).
//!
//! One tracing span per connection; its result is logged exactly once, on drop.

pub mod hello;
pub mod splice;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::{
    http::{self as gwhttp, ConnCtx},
    policy::scan::Scanner,
    provider::{Catalog, Provider},
    redirect::{
        identity::{Identity, IdentityResolver},
        origdst::{ClientAddr, OrigDst, OrigDstAddr, ProxyAddr, normalize},
    },
    tls::Terminator,
    upstream::{self, pool::Upstreams},
    vault::Vault,
    workers::Workers,
};

use hello::Parsed;

#[derive(Debug, Clone)]
pub struct InterceptConfig {
    pub client_hello_timeout: Duration,
    pub connect_timeout: Duration,
    pub bypass_mark: u32,
    /// `kubernetes.exempt_namespaces`: pods there are spliced, never intercepted.
    pub exempt_namespaces: Vec<String>,
}

/// What terminating and re-originating provider connections needs.
pub struct Interception {
    pub terminator: Arc<Terminator>,
    pub upstreams: Arc<Upstreams>,
    pub vault: Arc<Vault>,
    pub scanner: Arc<Scanner>,
    pub hold: Arc<crate::hold::HoldService>,
    pub journal: Option<Arc<crate::journal::Journal>>,
}

pub struct Intercept {
    catalog: Arc<Catalog>,
    orig_dst: Arc<dyn OrigDst>,
    identity: Arc<IdentityResolver>,
    interception: Arc<Interception>,
    cfg: InterceptConfig,
}

/// How a connection ended. Label-safe: a fixed set of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running (only seen if the task is cancelled).
    Open,
    /// Not a connection the redirect stage sent here: closed.
    Unknown,
    /// A non-provider connection passed through untouched.
    Spliced,
    /// A provider connection, terminated and served request by request.
    Intercepted,
    /// The client did not complete our TLS handshake (often: it does not trust the CA).
    TlsFailed,
    /// Refused: malformed TLS.
    Refused,
    /// The original destination could not be reached.
    UpstreamFailed,
    /// An I/O error mid-connection.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Open => "open",
            Outcome::Unknown => "unknown",
            Outcome::Spliced => "spliced",
            Outcome::Intercepted => "intercepted",
            Outcome::TlsFailed => "tls_failed",
            Outcome::Refused => "refused",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::Error => "error",
        }
    }
}

/// The one record of a connection, logged when dropped, whatever path ended it.
struct ConnResult {
    id: u64,
    client: SocketAddr,
    start: Instant,
    outcome: Outcome,
    orig_dst: Option<OrigDstAddr>,
    ident: Option<Identity>,
    sni: Option<String>,
    provider: Option<String>,
    bytes_up: u64,
    bytes_down: u64,
    /// The connection ended with a reset (a normal way for many clients to close).
    reset: bool,
    /// HTTP requests served on an intercepted connection.
    requests: u64,
    error: Option<String>,
}

impl Drop for ConnResult {
    fn drop(&mut self) {
        crate::metrics::inc(&crate::metrics::get().connections, self.outcome.as_str());
        let ident = self.ident.take().unwrap_or_default();
        info!(
            conn = self.id,
            outcome = self.outcome.as_str(),
            client = %self.client,
            orig_dst = self.orig_dst.map(|d| d.to_string()),
            pid = ident.tgid,
            uid = ident.uid,
            comm = %ident.comm,
            sni = self.sni.as_deref(),
            provider = self.provider.as_deref(),
            bytes_up = self.bytes_up,
            bytes_down = self.bytes_down,
            reset = self.reset,
            requests = self.requests,
            duration_ms = self.start.elapsed().as_millis() as u64,
            error = self.error.as_deref(),
            "connection closed"
        );
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Read until the ClientHello is complete (or the bytes are clearly not one).
async fn read_hello(
    stream: &mut TcpStream,
    timeout: Duration,
) -> std::io::Result<(Vec<u8>, Parsed)> {
    let mut buf = Vec::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let parsed = hello::parse(&buf);
        if parsed != Parsed::Incomplete {
            return Ok((buf, parsed));
        }
        if buf.len() >= hello::MAX_HELLO {
            return Ok((buf, Parsed::Malformed("ClientHello too large")));
        }
        // Straight into `buf`: a stack array here would sit in every connection's task for
        // its whole life (the task's size is its largest state).
        buf.reserve(4096);
        let n = match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(r) => r?,
            // Nothing (more) within the timeout: a server-speaks-first protocol, or a stalled
            // client. With no bytes at all it is not TLS; a partial hello is refused.
            Err(_) if buf.is_empty() => return Ok((buf, Parsed::NotTls)),
            Err(_) => return Ok((buf, Parsed::Malformed("ClientHello incomplete at timeout"))),
        };
        if n == 0 {
            let p = if buf.is_empty() {
                Parsed::NotTls
            } else {
                Parsed::Malformed("EOF inside ClientHello")
            };
            return Ok((buf, p));
        }
    }
}

impl Intercept {
    pub fn new(
        catalog: Arc<Catalog>,
        orig_dst: Arc<dyn OrigDst>,
        identity: Arc<IdentityResolver>,
        interception: Arc<Interception>,
        cfg: InterceptConfig,
    ) -> Self {
        Self {
            catalog,
            orig_dst,
            identity,
            interception,
            cfg,
        }
    }

    /// Accept connections until the listener fails; each is served on one of `workers`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, workers: Arc<Workers>) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    // Re-registered with the worker's own reactor (see `Workers::spawn`).
                    let std = match stream.into_std() {
                        Ok(s) => s,
                        Err(e) => {
                            warn!(error = %e, "cannot hand the connection to a worker");
                            continue;
                        }
                    };
                    let this = self.clone();
                    workers.spawn(async move {
                        match TcpStream::from_std(std) {
                            Ok(stream) => this.handle(stream, peer).await,
                            Err(e) => warn!(error = %e, "worker cannot take the connection"),
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn handle(&self, stream: TcpStream, peer: SocketAddr) {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut result = ConnResult {
            id,
            client: normalize(peer),
            start: Instant::now(),
            outcome: Outcome::Open,
            orig_dst: None,
            ident: None,
            sni: None,
            provider: None,
            bytes_up: 0,
            bytes_down: 0,
            reset: false,
            requests: 0,
            error: None,
        };
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                result.outcome = Outcome::Error;
                result.error = Some(e.to_string());
                return;
            }
        };
        let rec = match self.orig_dst.take(ClientAddr(peer), ProxyAddr(local)) {
            Ok(Some(rec)) => rec,
            Ok(None) => {
                result.outcome = Outcome::Unknown;
                result.error = Some("no redirect record for this connection".into());
                return;
            }
            Err(e) => {
                result.outcome = Outcome::Error;
                result.error = Some(e.to_string());
                return;
            }
        };
        let ident = self.identity.resolve_async(&rec).await;
        let span = info_span!(
            "conn",
            id,
            pid = ident.tgid,
            uid = ident.uid,
            comm = %ident.comm,
            dst = %rec.orig_dst
        );
        result.orig_dst = Some(rec.orig_dst);
        result.ident = Some(ident);
        self.serve_conn(stream, rec.orig_dst, &mut result)
            .instrument(span)
            .await;
    }

    async fn serve_conn(&self, mut client: TcpStream, dst: OrigDstAddr, result: &mut ConnResult) {
        let _ = client.set_nodelay(true);
        let (prefix, parsed) = match read_hello(&mut client, self.cfg.client_hello_timeout).await {
            Ok(r) => r,
            Err(e) => {
                result.outcome = Outcome::Error;
                result.error = Some(format!("reading ClientHello: {e}"));
                return;
            }
        };
        let provider = match &parsed {
            Parsed::Malformed(why) => {
                result.outcome = Outcome::Refused;
                result.error = Some((*why).to_string());
                return;
            }
            Parsed::Hello(h) => {
                result.sni = h.sni.clone();
                h.sni
                    .as_deref()
                    .and_then(|s| self.catalog.match_host(s))
                    .cloned()
            }
            Parsed::NotTls | Parsed::Incomplete => None,
        };
        let ident = result.ident.as_ref().expect("set before serve_conn");
        let exempt = provider.is_some()
            && ident
                .pod_namespace
                .as_ref()
                .is_some_and(|ns| self.cfg.exempt_namespaces.contains(ns));
        let provider = provider.filter(|_| !exempt);
        info!(
            conn = result.id,
            orig_dst = %dst,
            pid = ident.tgid,
            tid = ident.pid,
            uid = ident.uid,
            user = ident.user.as_deref(),
            gid = ident.gid,
            comm = %ident.comm,
            cgroup = ident.cgroup.as_deref(),
            unit = ident.unit.as_deref(),
            pod_uid = ident.pod_uid.as_deref(),
            pod_namespace = ident.pod_namespace.as_deref(),
            sni = result.sni.as_deref(),
            tls = matches!(parsed, Parsed::Hello(_)),
            provider = provider.as_ref().map(|p| p.name.as_str()),
            decision = if exempt {
                "exempt"
            } else if provider.is_some() {
                "intercept"
            } else {
                "splice"
            },
            "connection accepted"
        );
        result.provider = provider.as_ref().map(|p| p.name.clone());
        if let (Some(p), Some(sni)) = (provider, result.sni.clone()) {
            return self
                .intercept_conn(client, prefix, sni, p, dst, result)
                .await;
        }
        let mut upstream =
            match upstream::connect(dst, self.cfg.bypass_mark, self.cfg.connect_timeout).await {
                Ok(s) => s,
                Err(e) => {
                    result.outcome = Outcome::UpstreamFailed;
                    result.error = Some(e.to_string());
                    return;
                }
            };
        if let Err(e) = upstream.write_all(&prefix).await {
            result.outcome = Outcome::UpstreamFailed;
            result.error = Some(format!("forwarding ClientHello: {e}"));
            return;
        }
        result.bytes_up = prefix.len() as u64;
        let stats = Box::pin(splice::splice(client, upstream)).await;
        result.bytes_up += stats.up;
        result.bytes_down = stats.down;
        result.reset = stats.reset;
        match stats.error {
            None => {
                result.outcome = Outcome::Spliced;
            }
            Some(e) => {
                debug!(error = %e, "splice ended with an error");
                result.outcome = Outcome::Error;
                result.error = Some(e.to_string());
            }
        }
    }

    /// Terminate TLS with a leaf for `sni` and serve HTTP request by request.
    async fn intercept_conn(
        &self,
        client: TcpStream,
        prefix: Vec<u8>,
        sni: String,
        provider: Arc<Provider>,
        dst: OrigDstAddr,
        result: &mut ConnResult,
    ) {
        let icpt = &self.interception;
        // The handshake and the HTTP connection are boxed, each on its own: the connection's
        // task then holds only what its current stage needs (memory per held request).
        let tls = match Box::pin(icpt.terminator.accept(&sni, prefix, client)).await {
            Ok(t) => t,
            Err(e) => {
                result.outcome = Outcome::TlsFailed;
                result.error = Some(e.to_string());
                return;
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let ctx = Arc::new(ConnCtx {
            conn_id: result.id,
            provider,
            sni,
            orig_dst: dst,
            identity: Arc::new(result.ident.clone().unwrap_or_default()),
            h2,
            upstreams: icpt.upstreams.clone(),
            vault: icpt.vault.clone(),
            scanner: icpt.scanner.clone(),
            hold: icpt.hold.clone(),
            journal: icpt.journal.clone(),
            requests: Default::default(),
        });
        let served = Box::pin(gwhttp::serve(tls, ctx.clone())).await;
        result.requests = ctx.requests.load(Ordering::Relaxed);
        result.outcome = Outcome::Intercepted;
        if let Err(e) = served {
            // A client that hangs up mid-exchange is not a gateway failure; note it all the same.
            result.error = Some(e.to_string());
        }
    }
}
