//! Intercept: decide per redirected connection whether to inspect it, pass it through, or
//! refuse it. Second stage of the data path (DESIGN §1); the decision is made once, in
//! [`decide`], for every connection. For each accepted connection: take the original
//! destination + identity from the redirect stage, admit it within the caller's bounds
//! ([`crate::limits`]), then
//! - a DNS query over TCP (port 53) → the DNS proxy (`redirect::dns`);
//! - read the TLS ClientHello (replayed later, byte for byte):
//!   - provider SNI → TLS termination and the HTTP phases (pods of an exempt namespace: splice);
//!   - another SNI, no SNI or an IP literal → refused, unless every provider claiming the
//!     address shares it with unrelated sites (a CDN front): then spliced, SNI logged;
//!   - ECH with another outer name → refused (the real server name is hidden);
//!   - no ClientHello within the timeout, not TLS, malformed TLS → refused.
//!
//! One tracing span per connection; its result is logged exactly once, on drop.

pub mod hello;
pub mod relay;
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
    provider::{Catalog, Provider},
    redirect::dns::DnsProxy,
    redirect::{
        identity::{Identity, IdentityResolver},
        origdst::{ClientAddr, ConnRecord, OrigDst, OrigDstAddr, ProxyAddr, normalize},
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
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub bypass_mark: u32,
    /// `kubernetes.exempt_namespaces`: pods there are spliced, never intercepted.
    pub exempt_namespaces: Vec<String>,
    /// Relay spliced connections in the kernel (`relay`); `None`: with splice(2).
    pub kernel_relay: Option<Arc<crate::redirect::relay::RelayMaps>>,
}

/// What terminating and re-originating provider connections needs.
pub struct Interception {
    pub terminator: Arc<Terminator>,
    pub upstreams: Arc<Upstreams>,
    pub vault: Arc<Vault>,
    pub policy: Arc<crate::policy::Policy>,
    /// `limits.max_request_body`.
    pub max_request_body: usize,
    /// `limits.streams_per_connection`.
    pub max_streams: u32,
    /// `limits.max_ws_message`.
    pub max_ws_message: usize,
    pub hold: Arc<crate::hold::HoldService>,
    pub journal: Option<Arc<crate::journal::Journal>>,
}

pub struct Intercept {
    catalog: Arc<Catalog>,
    orig_dst: Arc<dyn OrigDst>,
    identity: Arc<IdentityResolver>,
    interception: Arc<Interception>,
    cfg: InterceptConfig,
    limits: Arc<crate::limits::Limits>,
    /// DNS over TCP from the workloads; `None` when `dns.learn` is off.
    dns: Option<Arc<DnsProxy>>,
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
    /// Refused: not TLS, no ClientHello in time, malformed TLS, or a server name that is not a
    /// provider's on a provider's own address.
    Refused,
    /// Refused: the calling workload (or the gateway as a whole) is at its connection bound.
    Limited,
    /// A DNS query over TCP, answered through the DNS proxy.
    Dns,
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
            Outcome::Limited => "limited",
            Outcome::Dns => "dns",
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
    /// A spliced connection: relayed by the kernel (`kernel`) or with splice(2) (`splice`).
    relay: Option<&'static str>,
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
            relay = self.relay,
            duration_ms = self.start.elapsed().as_millis() as u64,
            error = self.error.as_deref(),
            "connection closed"
        );
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Read until the ClientHello is complete (or the bytes are clearly not one). `NotTls` with no
/// bytes at all means nothing came within `timeout` (or the client closed).
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
            // client. Either way it is refused, never spliced.
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
        limits: Arc<crate::limits::Limits>,
        dns: Option<Arc<DnsProxy>>,
    ) -> Self {
        Self {
            catalog,
            orig_dst,
            identity,
            interception,
            cfg,
            limits,
            dns,
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
            relay: None,
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
        // Bounds first: a flooding workload costs one map lookup and a close, nothing more.
        let _admitted = match self.limits.admit(rec.cgroup_id) {
            Ok(a) => a,
            Err(e) => {
                result.orig_dst = Some(rec.orig_dst);
                result.ident = Some(Identity::of_record(&rec));
                result.outcome = Outcome::Limited;
                result.error = Some(format!(
                    "open connections: {e} (limits.per_workload, limits.max_connections)"
                ));
                return;
            }
        };
        // Off the connection thread when it needs the disk (user names, cgroup walks).
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
        if rec.dns {
            return self
                .serve_dns(stream, &rec, &mut result)
                .instrument(span)
                .await;
        }
        self.serve_conn(stream, &rec, &mut result)
            .instrument(span)
            .await;
    }

    /// A workload's DNS query over TCP: through the DNS proxy (which learns provider addresses
    /// from the answers), or refused when learning is off (then nothing sent it here).
    async fn serve_dns(&self, client: TcpStream, rec: &ConnRecord, result: &mut ConnResult) {
        let Some(dns) = &self.dns else {
            result.outcome = Outcome::Refused;
            result.error = Some("DNS over TCP redirected while dns.learn is off".into());
            return;
        };
        match dns.serve_tcp(client, rec, self.cfg.connect_timeout).await {
            Ok(n) => {
                result.outcome = Outcome::Dns;
                result.requests = n;
            }
            Err(e) => {
                result.outcome = Outcome::UpstreamFailed;
                result.error = Some(e.to_string());
            }
        }
    }

    async fn serve_conn(&self, mut client: TcpStream, rec: &ConnRecord, result: &mut ConnResult) {
        let dst = rec.orig_dst;
        let _ = client.set_nodelay(true);
        let (prefix, parsed) = match read_hello(&mut client, self.cfg.client_hello_timeout).await {
            Ok(r) => r,
            Err(e) => {
                result.outcome = Outcome::Error;
                result.error = Some(format!("reading ClientHello: {e}"));
                return;
            }
        };
        if let Parsed::Hello(h) = &parsed {
            result.sni = h.sni.clone();
        }
        let ident = result.ident.as_ref().expect("set before serve_conn");
        let exempt_ns = ident
            .pod_namespace
            .as_ref()
            .is_some_and(|ns| self.cfg.exempt_namespaces.contains(ns));
        let decision = decide(
            &parsed,
            prefix.is_empty(),
            rec.shared(),
            exempt_ns,
            &self.catalog,
            self.cfg.client_hello_timeout,
        );
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
            shared = rec.shared(),
            provider = decision.provider().map(|p| p.name.as_str()),
            decision = decision.as_str(),
            "connection accepted"
        );
        result.provider = decision.provider().map(|p| p.name.clone());
        let provider = match decision {
            Decision::Intercept(p) => p,
            Decision::Refuse { why, alert } => {
                result.outcome = Outcome::Refused;
                result.error = Some(why);
                if let Some(desc) = alert {
                    // A fatal TLS alert: the client reports a clear handshake error instead of
                    // a bare reset.
                    let _ = client
                        .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, desc])
                        .await;
                    let _ = client.shutdown().await;
                }
                return;
            }
            Decision::Splice | Decision::Exempt(_) => {
                return self.splice_conn(client, prefix, dst, result).await;
            }
        };
        let sni = result
            .sni
            .clone()
            .expect("a provider decision has a server name");
        self.intercept_conn(client, prefix, sni, provider, dst, result)
            .await
    }

    /// Pass the connection through to its original destination, byte for byte.
    async fn splice_conn(
        &self,
        client: TcpStream,
        prefix: Vec<u8>,
        dst: OrigDstAddr,
        result: &mut ConnResult,
    ) {
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
        let stats = match &self.cfg.kernel_relay {
            Some(maps) => match Box::pin(relay::relay(maps, client, upstream)).await {
                Ok(stats) => {
                    result.relay = Some("kernel");
                    stats
                }
                Err(d) => {
                    info!(why = %d.why, "not relayed in the kernel: splice(2)");
                    result.bytes_up += d.forwarded;
                    result.relay = Some("splice");
                    Box::pin(splice::splice(d.client, d.upstream)).await
                }
            },
            None => {
                result.relay = Some("splice");
                Box::pin(splice::splice(client, upstream)).await
            }
        };
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
        let accept = Box::pin(icpt.terminator.accept(&sni, prefix, client));
        let tls = match tokio::time::timeout(self.cfg.handshake_timeout, accept).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                result.outcome = Outcome::TlsFailed;
                result.error = Some(e.to_string());
                return;
            }
            Err(_) => {
                result.outcome = Outcome::TlsFailed;
                result.error = Some(format!(
                    "TLS handshake not complete within {:?} (intercept.handshake_timeout)",
                    self.cfg.handshake_timeout
                ));
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
            policy: icpt.policy.clone(),
            max_request_body: icpt.max_request_body,
            max_streams: icpt.max_streams,
            max_ws_message: icpt.max_ws_message,
            hold: icpt.hold.clone(),
            journal: icpt.journal.clone(),
            requests: Default::default(),
            header_read_timeout: self.cfg.header_read_timeout,
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

/// What happens to one redirected TLS connection: decided once, here.
#[derive(Debug)]
pub enum Decision {
    /// Terminate TLS and run every request through the HTTP phases.
    Intercept(Arc<Provider>),
    /// A pod of an exempt namespace: passed through untouched (the provider, when the SNI
    /// names one).
    Exempt(Option<Arc<Provider>>),
    /// Another site on a shared (CDN) address: passed through untouched, logged with its SNI.
    Splice,
    /// Closed; `alert` is the TLS alert sent first, if any.
    Refuse { why: String, alert: Option<u8> },
}

const ALERT_ACCESS_DENIED: u8 = 49;
const ALERT_UNRECOGNIZED_NAME: u8 = 112;

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Intercept(_) => "intercept",
            Decision::Exempt(_) => "exempt",
            Decision::Splice => "splice",
            Decision::Refuse { .. } => "refuse",
        }
    }

    pub fn provider(&self) -> Option<&Arc<Provider>> {
        match self {
            Decision::Intercept(p) | Decision::Exempt(Some(p)) => Some(p),
            _ => None,
        }
    }
}

/// The decision for a connection to a provider address (every connection here is one): what the
/// client sent first (`empty`: nothing at all came), whether the address is shared with other
/// sites, and whether the caller is a pod of an exempt namespace.
pub fn decide(
    parsed: &Parsed,
    empty: bool,
    shared: bool,
    exempt_ns: bool,
    catalog: &Catalog,
    hello_timeout: Duration,
) -> Decision {
    let refuse = |why: String, alert: Option<u8>| Decision::Refuse { why, alert };
    let h = match parsed {
        Parsed::Malformed(why) => return refuse(format!("malformed TLS: {why}"), None),
        Parsed::NotTls | Parsed::Incomplete if empty => {
            return refuse(
                format!(
                    "no TLS ClientHello within {hello_timeout:?} (intercept.client_hello_timeout)"
                ),
                None,
            );
        }
        Parsed::NotTls | Parsed::Incomplete => {
            return refuse("not TLS: only TLS reaches a provider address".into(), None);
        }
        Parsed::Hello(h) => h,
    };
    // An IP literal is not a server name (RFC 6066 §3): the same as none.
    let name = h
        .sni
        .as_deref()
        .filter(|s| s.parse::<std::net::IpAddr>().is_err());
    let provider = name.and_then(|s| catalog.match_host(s));
    if exempt_ns {
        return Decision::Exempt(provider.cloned());
    }
    if let Some(p) = provider {
        return Decision::Intercept(p.clone());
    }
    if h.ech {
        return refuse(
            "Encrypted Client Hello on a provider address: the real server name is hidden".into(),
            Some(ALERT_ACCESS_DENIED),
        );
    }
    if shared {
        return Decision::Splice;
    }
    let why = match (&h.sni, name) {
        (None, _) => "no server name (SNI) on a provider's own address".to_string(),
        (Some(ip), None) => format!("IP literal `{ip}` as server name on a provider's own address"),
        (Some(_), Some(other)) => {
            format!("server name `{other}` is not a provider host, on a provider's own address")
        }
    };
    refuse(why, Some(ALERT_UNRECOGNIZED_NAME))
}

#[cfg(test)]
mod tests;
